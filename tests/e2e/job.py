"""A job for the end-to-end tests: records its environment, then waits for a file to appear."""

import json
import os
import sys
import time
from pathlib import Path

out, go, code = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
env = {
    k: v
    for k, v in os.environ.items()
    if k.startswith(("CUDA_", "HAMI_", "NVIDIA_")) or k == "TRACEPARENT"
}
env["pid"] = str(os.getpid())
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(env))
tmp.rename(out)
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(code)
