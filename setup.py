"""`pip install` builds the isolation library too: native/ with the C compiler alone, the CUDA
and NVML headers coming from the nvidia-* wheels in [build-system].requires. An editable install
leaves it in native/build/ (where the checkout looks); a wheel carries it as shared/lib/. Without
a C compiler the install still succeeds and says so: `hami up` and `hami run` then report the
library missing (and `hami run --require-isolation` refuses)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithNative(build_py):
    def run(self) -> None:
        super().run()
        built = ROOT / "native" / "build" / "libvgpu.so"
        make = [
            "make",
            "-C",
            str(ROOT / "native"),
            "-s",
            f"PYTHON={sys.executable}",
            "build/libvgpu.so",
        ]
        try:
            result = subprocess.run(make, capture_output=True, text=True, check=False)
        except OSError as e:
            print(f"hami: libvgpu.so not built ({e}); jobs will run without it", file=sys.stderr)
            return
        if result.returncode != 0:
            print(
                f"hami: libvgpu.so not built; jobs will run without it:\n{result.stderr}",
                file=sys.stderr,
            )
            return
        if not getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "shared" / "lib"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(built, target / "libvgpu.so")


setup(cmdclass={"build_py": BuildWithNative})
