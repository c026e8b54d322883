"""A real Jaeger (v2 all-in-one, built by build.sh) receiving OTLP on free ports, in memory,
and its HTTP query API for the tests to read traces back from."""

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

BUILD = Path(__file__).with_name("build.sh")

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def jaeger_binary() -> Path:
    out = subprocess.run(["bash", str(BUILD)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1]) / "jaeger"


@dataclass
class Jaeger:
    process: subprocess.Popen[bytes]
    otlp_http: int
    otlp_grpc: int
    query: int
    log: Path

    def environment(self, protocol: str = "http/protobuf") -> dict[str, str]:
        """The standard variables that send a process's spans here."""
        port = self.otlp_grpc if protocol == "grpc" else self.otlp_http
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

    def get(self, path: str, **query: str) -> Any:
        url = f"http://127.0.0.1:{self.query}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.loads(reply.read())

    def services(self) -> list[str]:
        return list(self.get("/api/services").get("data") or [])

    def traces(self, service: str) -> list[dict[str, Any]]:
        return list(self.get("/api/traces", service=service, limit="50").get("data") or [])

    def trace(self, trace_id: str) -> dict[str, Any]:
        [found] = self.get(f"/api/traces/{trace_id}")["data"]
        return dict(found)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_jaeger(directory: Path) -> Jaeger:
    binary = jaeger_binary()
    directory.mkdir(parents=True, exist_ok=True)
    ports = {k: free_port() for k in ("query", "query_grpc", "grpc", "http")}
    config = directory / "jaeger.yaml"
    config.write_text(CONFIG.format(**ports))
    log = directory / "jaeger.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), f"--config=file:{config}"], stdout=out, stderr=subprocess.STDOUT
        )
    jaeger = Jaeger(process, ports["http"], ports["grpc"], ports["query"], log)
    deadline = time.monotonic() + 30
    while True:
        try:
            jaeger.services()
            return jaeger
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                jaeger.stop()
                raise RuntimeError(f"jaeger did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


def spans_by_service(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each span of a Jaeger trace (its JSON) under its process's service name."""
    processes = {k: v["serviceName"] for k, v in trace["processes"].items()}
    by: dict[str, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        by.setdefault(processes[span["processID"]], []).append(span)
    return by


def parent_of(span: dict[str, Any]) -> str | None:
    for reference in span.get("references") or ():
        if reference["refType"] == "CHILD_OF":
            return str(reference["spanID"])
    return None


def tags_of(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags") or ()}
