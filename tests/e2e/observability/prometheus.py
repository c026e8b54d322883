"""A real Prometheus (Debian's package, installed by build.sh) scraping the test's targets
every second, and its HTTP API for PromQL."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.controlplane.cluster import free_port
from tests.e2e.observability.jaeger import BUILD

BINARY = Path("/usr/bin/prometheus")


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as reply:
            answer = json.loads(reply.read())
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def targets_up(self) -> bool:
        return any(r["value"][1] == "1" for r in self.query("up"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_prometheus(directory: Path, targets: list[str]) -> Prometheus:
    """Scrape ``targets`` (host:port, path /metrics) every second."""
    if not BINARY.exists():
        subprocess.run(["bash", str(BUILD)], check=True, capture_output=True)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: hami\n"
        f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    port = free_port()
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(BINARY),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(process, port, log)
    deadline = time.monotonic() + 30
    while True:
        try:
            if prometheus.targets_up():
                return prometheus
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            prometheus.stop()
            raise RuntimeError(f"prometheus did not scrape: {log.read_text()[-2000:]}")
        time.sleep(0.2)
