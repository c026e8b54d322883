"""Print the include directory holding cuda.h and nvml.h from the nvidia-* PyPI wheels."""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.find_spec("nvidia")
roots = list(spec.submodule_search_locations) if spec and spec.submodule_search_locations else []
for root in roots:
    for include in sorted(Path(root).glob("*/include")):
        if (include / "cuda.h").is_file() and (include / "nvml.h").is_file():
            print(include)
            sys.exit(0)
sys.exit("cuda.h and nvml.h not found: pip install nvidia-cuda-runtime nvidia-nvml-dev")
