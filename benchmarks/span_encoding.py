"""What encoding a batch of finished spans for OTLP costs: the exporter's own encoder against
shared/otlpspans.py, side by side in one run, on spans of the allocator decision's shape.

    python benchmarks/span_encoding.py [--spans 512] [--repeat 20]"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from shared.otlpspans import encode_request  # noqa: E402


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def decision_spans(count: int) -> list[ReadableSpan]:
    kept = Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "hami-allocator"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("hami")
    for i in range(count):
        with tracer.start_as_current_span(
            "allocator decide",
            attributes={
                "hami.request_id": f"default/pod-{i}",
                "hami.policy.node": "binpack",
                "hami.policy.gpu": "spread",
                "hami.nodes.considered": 1000,
            },
        ) as span:
            span.set_attributes(
                {
                    "hami.outcome": "placed",
                    "hami.node": f"node-{i % 1000:05d}",
                    "hami.allocation_id": f"{i:032x}",
                }
            )
    return kept.spans


def per_span_us(encode: Callable[[], object], spans: int, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        encode()
        out.append((time.perf_counter() - started) / spans * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=512)  # the batch processor's batch
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    batch = decision_spans(args.spans)
    assert encode_request(batch) == encode_spans(batch).SerializeToString()
    results: dict[str, list[float]] = {"exporter's encoder": [], "shared/otlpspans.py": []}
    for _ in range(3):  # interleaved, so drift hits both alike
        results["exporter's encoder"] += per_span_us(
            lambda: encode_spans(batch).SerializePartialToString(), args.spans, args.repeat
        )
        results["shared/otlpspans.py"] += per_span_us(
            lambda: encode_request(batch), args.spans, args.repeat
        )
    print(
        f"# {time.strftime('%Y-%m-%d')} on {platform.node()}, Python {platform.python_version()}; "
        f"batches of {args.spans} decision spans"
    )
    base = statistics.median(results["exporter's encoder"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<22} median {median:6.1f} us/span  ({median / base:.2f} of the exporter's)")


if __name__ == "__main__":
    main()
