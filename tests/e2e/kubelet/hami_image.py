"""The project's image without a registry or a container builder: the same layout as the
`Containerfile` at the root (Debian bookworm with Python 3.11, the package in a venv at
/opt/hami, libvgpu.so at /usr/local/vgpu, user 10001, no compiler, no pip), built from Debian's
packages with mmdebstrap, the project installed with pip inside a chroot, packed as an OCI
archive that `ctr images import` reads. Also a kube-scheduler image of the binary the control
plane build made. Needs root (chroot, mounts).

Cached under ~/.cache/hami-image by a key of every input (the source tree, pyproject.toml,
libvgpu.so, this file, the Debian suite and packages): rebuilt when one changes.
`python -m tests.e2e.kubelet.hami_image` builds and prints the archives' paths."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.kubelet.images import TAR_LAYER, file_digest, write_archive

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hami-image"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
SOURCES = ("pyproject.toml", "README.md", "shared", "services")
LIBVGPU = REPO / "native" / "build" / "libvgpu.so"
USER = "10001"
PATH = "/opt/hami/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HAMI = "localhost/hami"
SCHEDULER = "localhost/hami-kube-scheduler"


@dataclass(frozen=True)
class Image:
    archive: Path
    name: str
    """`localhost/<repository>:<tag>`, the tag a key of the inputs."""


def _mirror() -> str:
    """The Debian mirror apt itself uses on this machine."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _files(root: Path) -> Iterator[Path]:
    for name in SOURCES:
        path = root / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and "__pycache__" not in found.parts and found.suffix != ".pyc":
                yield found


def input_key() -> str:
    digest = hashlib.sha256()
    for path in (*_files(REPO), LIBVGPU, Path(__file__)):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes())
    digest.update(f"{SUITE} {PACKAGES}".encode())
    return digest.hexdigest()[:16]


def _run(argv: list[str], **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _base_rootfs() -> Path:
    """Debian with Python, cached by suite and package list (it does not change with the code)."""
    key = hashlib.sha256(f"{SUITE} {PACKAGES}".encode()).hexdigest()[:12]
    base = CACHE / f"base-{SUITE}-{key}.tar"
    if base.is_file():
        return base
    if shutil.which("mmdebstrap") is None:
        _run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = base.with_suffix(".partial.tar")
    _run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=apt",
            f"--include={','.join(PACKAGES)}",
            "--components=main",
            SUITE,
            str(partial),
            _mirror(),
        ]
    )
    partial.replace(base)
    return base


@contextlib.contextmanager
def _chroot_mounts(rootfs: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for source, target, kind in (("/dev", "dev", "bind"), ("proc", "proc", "proc")):
            path = rootfs / target
            path.mkdir(exist_ok=True)
            argv = (
                ["mount", "--bind", source, str(path)]
                if kind == "bind"
                else ["mount", "-t", "proc", "proc", str(path)]
            )
            _run(argv)
            mounted.append(path)
        yield
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)


def _install_project(rootfs: Path, work: Path) -> None:
    wheels = rootfs / "tmp" / "wheels"
    wheels.mkdir(parents=True)
    # From a copy of exactly the inputs the key covers: a build/ left in the checkout by an
    # earlier build would otherwise lend the wheel stale modules.
    source = work / "source"
    for path in _files(REPO):
        target = source / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    # The host's pip resolves and downloads (CPython 3.11 wheels, as the image's Python is).
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        cwd=work,
    )
    with _chroot_mounts(rootfs):
        _run(["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", "/opt/hami"])
        _run(
            [
                "chroot",
                str(rootfs),
                "/opt/hami/bin/pip",
                "install",
                "--quiet",
                "--no-index",
                "--disable-pip-version-check",
                "--find-links",
                "/tmp/wheels",
                "hami-py",
            ]
        )
        # No installer in the final image, as in the Containerfile's last stage.
        _run(
            [
                "chroot",
                str(rootfs),
                "/opt/hami/bin/python",
                "-m",
                "pip",
                "uninstall",
                "--quiet",
                "-y",
                "pip",
            ]
        )
    shutil.rmtree(wheels)


def _finish_rootfs(rootfs: Path) -> None:
    vgpu = rootfs / "usr" / "local" / "vgpu"
    vgpu.mkdir(parents=True, exist_ok=True)
    shutil.copy2(LIBVGPU, vgpu / "libvgpu.so")
    with (rootfs / "etc" / "passwd").open("a") as f:
        f.write(f"hami:x:{USER}:{USER}:HAMi:/nonexistent:/usr/sbin/nologin\n")
    with (rootfs / "etc" / "group").open("a") as f:
        f.write(f"hami:x:{USER}:\n")
    for cache in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()


def _pack(rootfs: Path, layer: Path) -> None:
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(layer), "."])


def build_hami_image() -> Image:
    if not LIBVGPU.is_file():
        raise RuntimeError(f"{LIBVGPU} is not built (make -C native)")
    key = input_key()
    image = Image(CACHE / f"hami-{key}.oci.tar", f"{HAMI}:{key}")
    if image.archive.is_file():
        return image
    base = _base_rootfs()
    with tempfile.TemporaryDirectory(prefix="hami-image-", dir=CACHE) as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        rootfs.mkdir()
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-xf", str(base)])
        _install_project(rootfs, work)
        _finish_rootfs(rootfs)
        layer = work / "layer.tar"
        _pack(rootfs, layer)
        config = {
            "Env": [f"PATH={PATH}", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
            "User": f"{USER}:{USER}",
            "WorkingDir": "/",
            "Cmd": ["hami", "--help"],
        }
        write_archive(image.archive, image.name, [(layer, file_digest(layer), TAR_LAYER)], config)
    for stale in CACHE.glob("hami-*.oci.tar"):  # one project image kept: the current one
        if stale != image.archive:
            stale.unlink()
    return image


def build_scheduler_image(binaries: Path) -> Image:
    """kube-scheduler alone at /usr/local/bin, as the official image has it on PATH."""
    binary = binaries / "kube-scheduler"
    key = file_digest(binary)[7:23]
    image = Image(CACHE / f"kube-scheduler-{key}.oci.tar", f"{SCHEDULER}:{key}")
    if image.archive.is_file():
        return image
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kube-scheduler-", dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        (rootfs / "usr" / "local" / "bin").mkdir(parents=True)
        for name in ("tmp", "var/run/kubernetes", "etc"):
            (rootfs / name).mkdir(parents=True, exist_ok=True)
        (rootfs / "tmp").chmod(0o1777)
        shutil.copy2(binary, rootfs / "usr" / "local" / "bin" / "kube-scheduler")
        layer = Path(tmp) / "layer.tar"
        _pack(rootfs, layer)
        config = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "User": USER}
        write_archive(image.archive, image.name, [(layer, file_digest(layer), TAR_LAYER)], config)
    return image


if __name__ == "__main__":
    from tests.e2e.controlplane.cluster import build_binaries

    for built in (build_hami_image(), build_scheduler_image(build_binaries())):
        print(built.name, built.archive)
