"""Traces over OpenTelemetry, configured only by the standard `OTEL_*` environment.

Off unless an OTLP endpoint is named (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``OTEL_TRACES_EXPORTER`` asks for an exporter;
``OTEL_SDK_DISABLED=true`` and ``OTEL_TRACES_EXPORTER=none`` turn it off whatever else is set.
The SDK itself reads the rest (service name, resource attributes, sampler, headers, timeout).
Spans leave through a bounded batch queue on a thread of their own: an unreachable collector
drops spans, it never slows a placement.

One placement is one trace across processes: W3C trace context travels in HTTP headers, in
NATS message headers, and, where Kubernetes carries the request and no header reaches us
(kube-scheduler's extender calls, the kubelet's Allocate), in the pod's ``hami.io/trace-context``
annotation, which the webhook writes at admission."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

from shared.errors import InvalidRequest
from shared.resources import TRACE_ANNOTATION

log = logging.getLogger("hami.tracing")

SCOPE = "hami"
PROTOCOLS = ("http/protobuf", "grpc")
FLUSH_S = 2.0
"""How long a process at exit waits for its last spans to leave."""

_tracer: Tracer = trace.NoOpTracer()
_enabled = False
_parent_based = True
"""Whether the sampler follows the caller's decision (the default, parentbased_*)."""


def _unsampled(context: trace.SpanContext) -> bool:
    return context.is_valid and not context.trace_flags.sampled


def enabled() -> bool:
    return _enabled


def tracer() -> Tracer:
    return _tracer


def exporters_wanted(env: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the environment asks for; empty: tracing off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        wanted = tuple(n.strip() for n in named.split(",") if n.strip())
        if "none" in wanted:
            return ()
        unknown = sorted(set(wanted) - {"otlp", "console"})
        if unknown:
            raise InvalidRequest(
                f"OTEL_TRACES_EXPORTER: unknown exporter {unknown} (this build has otlp, console)"
            )
        return wanted
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return ("otlp",) if endpoint else ()


def otlp_protocol(env: Mapping[str, str], signal: str = "TRACES") -> str:
    """The OTLP protocol for ``signal`` (TRACES, METRICS): the signal's own variable first."""
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"  # the specification's default
    ).strip()
    if protocol not in PROTOCOLS:
        raise InvalidRequest(
            f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: this build speaks {', '.join(PROTOCOLS)}"
        )
    return protocol


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def sampler_of(env: Mapping[str, str]) -> Sampler:
    """OTEL_TRACES_SAMPLER (and _ARG, the ratio) as the specification names them; the default
    is parentbased_always_on. A trace sampled out costs a placement almost nothing."""
    from opentelemetry.sdk.trace import sampling

    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name not in SAMPLERS:
        raise InvalidRequest(f"OTEL_TRACES_SAMPLER {name!r}: one of {', '.join(SAMPLERS)}")
    ratio = 1.0
    if "traceidratio" in name:
        raw = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(raw)
        except ValueError:
            raise InvalidRequest(f"OTEL_TRACES_SAMPLER_ARG {raw!r}: a ratio 0-1") from None
        if not 0.0 <= ratio <= 1.0:
            raise InvalidRequest(f"OTEL_TRACES_SAMPLER_ARG {raw!r}: a ratio 0-1")
    root: Sampler = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
    }[name.removeprefix("parentbased_")]
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def batch_options(env: Mapping[str, str]) -> dict[str, int]:
    """The batch span processor's OTEL_BSP_* settings (milliseconds and span counts)."""
    options = {}
    for variable, option in (
        ("OTEL_BSP_SCHEDULE_DELAY", "schedule_delay_millis"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "export_timeout_millis"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "max_queue_size"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max_export_batch_size"),
    ):
        raw = env.get(variable)
        if raw is None:
            continue
        if not raw.strip().isdigit() or int(raw) <= 0:
            raise InvalidRequest(f"{variable} {raw!r}: a positive whole number")
        options[option] = int(raw)
    if options.get("max_export_batch_size", 0) > options.get("max_queue_size", 2048):
        raise InvalidRequest(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE must not exceed OTEL_BSP_MAX_QUEUE_SIZE"
        )
    return options


def otlp_options(env: Mapping[str, str], signal: str, protocol: str) -> dict[str, Any]:
    """The exporter's endpoint, headers and timeout from ``env`` (the signal's own variable
    first, as the specification orders them), so what was decided on is what is used."""
    options: dict[str, Any] = {}
    own = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    common = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if own:
        options["endpoint"] = own
    elif common:
        path = {"TRACES": "v1/traces", "METRICS": "v1/metrics"}[signal]
        options["endpoint"] = common if protocol == "grpc" else f"{common.rstrip('/')}/{path}"
    headers = env.get(f"OTEL_EXPORTER_OTLP_{signal}_HEADERS") or env.get(
        "OTEL_EXPORTER_OTLP_HEADERS"
    )
    if headers:
        options["headers"] = dict(
            (k.strip(), v.strip())
            for k, _, v in (h.partition("=") for h in headers.split(","))
            if k
        )
    timeout = env.get(f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT") or env.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    if timeout:
        try:
            options["timeout"] = float(timeout) / 1000  # milliseconds in the variable
        except ValueError:
            raise InvalidRequest(f"OTEL_EXPORTER_OTLP_TIMEOUT {timeout!r}: milliseconds") from None
    if protocol == "grpc" and options.get("endpoint", "").startswith("http://"):
        options["insecure"] = True
    return options


def configure(service_name: str, env: Mapping[str, str]) -> Callable[[], bool]:
    """Set this process's tracer from ``env`` (the `OTEL_*` variables); returns the shutdown
    that flushes what is queued (bounded by the exporter's timeout). ``service_name`` is the
    default ``service.name``; ``OTEL_SERVICE_NAME`` overrides it."""
    global _tracer, _enabled, _parent_based
    wanted = exporters_wanted(env)
    if not wanted:
        _tracer, _enabled = trace.NoOpTracer(), False
        return lambda: True
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource, sampler=sampler_of(env))
    for name in wanted:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif otlp_protocol(env) == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(**otlp_options(env, "TRACES", "grpc"))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpSpanExporter,
            )

            from shared.otlpspans import use_in_http_exporter

            # The same bytes at a third of the cost: the export thread competes with the
            # placements for the interpreter (shared/otlpspans.py).
            use_in_http_exporter()
            exporter = HttpSpanExporter(**otlp_options(env, "TRACES", "http/protobuf"))
        provider.add_span_processor(BatchSpanProcessor(exporter, **batch_options(env)))  # type: ignore[arg-type]
    _tracer, _enabled = provider.get_tracer(SCOPE), True
    _parent_based = (env.get("OTEL_TRACES_SAMPLER") or "parentbased_").startswith("parentbased_")
    log.info("tracing on", extra={"exporters": ",".join(wanted), "service": service_name})

    def shutdown() -> bool:
        """Flush what is queued, for at most FLUSH_S: an unreachable collector must not hold
        a process at exit (the SDK retries for up to OTEL_EXPORTER_OTLP_TIMEOUT). False:
        not everything was sent in time."""
        global _tracer, _enabled
        _tracer, _enabled = trace.NoOpTracer(), False
        flushing = threading.Thread(target=provider.shutdown, name="otel-flush", daemon=True)
        flushing.start()
        flushing.join(FLUSH_S)
        return not flushing.is_alive()

    return shutdown


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Span]:
    """A span made current for the block; exceptions are recorded and mark it an error.
    Off, it is a shared non-recording span: no work on the placement's path."""
    if not _enabled:
        return _OFF
    return _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


_OFF = nullcontext(trace.INVALID_SPAN)


@contextmanager
def decision_span(name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    """The span a decision is told on: the caller's own server span when it has one (an RPC
    that asked for the decision), else a span of its own. Each span costs the process tens of
    microseconds to make and as many to export (docs/benchmarks.md)."""
    if not _enabled:
        yield trace.INVALID_SPAN
        return
    current = trace.get_current_span()
    if _unsampled(current.get_span_context()):
        yield current  # a trace sampled out upstream: nothing to record here either
        return
    if current.is_recording() and getattr(current, "kind", None) == SpanKind.SERVER:
        current.set_attributes(attributes)
        yield current
        return
    with span(name, attributes=attributes) as own:
        yield own


def inject(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current context to ``carrier`` (HTTP or NATS headers); nothing when off."""
    if _enabled:
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> Context | None:
    """The context a peer sent in ``carrier``; None when it sent none (or tracing is off)."""
    if not _enabled or not carrier:
        return None
    return propagate.extract(carrier)


def annotation_value() -> str | None:
    """The current context as the pod annotation's value; None when there is none to send."""
    carrier = inject({})
    if "traceparent" not in carrier:
        return None
    return "|".join(f"{k}={v}" for k, v in sorted(carrier.items()))


def from_annotations(annotations: Mapping[str, Any] | None) -> Context | None:
    """The admission span's context a pod carries (see TRACE_ANNOTATION)."""
    if not _enabled or not annotations:
        return None
    value = annotations.get(TRACE_ANNOTATION)
    if not isinstance(value, str) or "traceparent=" not in value:
        return None
    carrier = dict(part.split("=", 1) for part in value.split("|") if "=" in part)
    return propagate.extract(carrier)


def of_pod(pod: Mapping[str, Any] | None) -> Context | None:
    metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
    return from_annotations(metadata.get("annotations")) if isinstance(metadata, Mapping) else None


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits); empty when there is none."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def failed(current: Span, reason: str) -> None:
    """Mark a span whose work refused or failed without raising (a reply that says why)."""
    current.set_status(Status(StatusCode.ERROR, reason))


@contextmanager
def messaging_server(
    subject: str, headers: Mapping[str, str] | None, body_size: int
) -> Iterator[Span]:
    """The span of one NATS request answered (messaging semantic conventions). A request
    whose trace was sampled out upstream records nothing (parent-based sampling, the
    default) and skips the SDK: its context is only made current."""
    if not _enabled:
        yield trace.INVALID_SPAN
        return
    parent = extract(headers)
    if parent is not None and _parent_based:
        upstream = trace.get_current_span(parent)
        if _unsampled(upstream.get_span_context()):
            with trace.use_span(upstream, end_on_exit=False):
                yield upstream
            return
    with span(
        f"process {subject}",
        kind=SpanKind.SERVER,
        parent=parent,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "process",
            "messaging.message.body.size": body_size,
        },
    ) as current:
        yield current


@contextmanager
def messaging_client(subject: str, body_size: int) -> Iterator[dict[str, str]]:
    """The span of one NATS request sent; yields the headers to send it with."""
    if not _enabled:
        yield {}
        return
    with span(
        f"send {subject}",
        kind=SpanKind.CLIENT,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
            "messaging.message.body.size": body_size,
        },
    ):
        headers: dict[str, str] = {}
        inject(headers)
        yield headers


def start(service_name: str) -> Callable[[], bool]:
    """`configure` from this process's environment, for a service's main; a bad `OTEL_*`
    value ends the start with one line."""
    from shared.settings import otel_environment

    try:
        return configure(service_name, otel_environment())
    except InvalidRequest as e:
        raise SystemExit(f"{service_name}: {e}") from None
