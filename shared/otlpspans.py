"""Finished spans as an OTLP `ExportTraceServiceRequest`, written straight to protobuf's wire
format: the same bytes the OpenTelemetry exporter's encoder builds (a contract test compares
them), at a fraction of its cost. Exporting shares the process with the placements (and, in
Python, their interpreter lock): the exporter's encoder built a message object per span,
attribute and value, and hashed the resource (a JSON dump of its attributes) per span; that
was half of what tracing added to a placement (docs/benchmarks.md).

Fields are written in field-number order and defaults are left out, as protobuf serializes
them (`opentelemetry/proto/trace/v1/trace.proto`, `common/v1/common.proto`)."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_FIXED32 = struct.Struct("<I")
HAS_IS_REMOTE = 0x100
IS_REMOTE = 0x200


_SMALL = [bytes((i,)) for i in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement, ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _text(field: int, value: str | None) -> bytes:
    return _delimited(field, value.encode()) if value else b""


def _any(value: Any) -> bytes:
    """An AnyValue message's payload."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _delimited(1, value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _delimited(7, value)
    if isinstance(value, Sequence):
        return _delimited(5, b"".join(_delimited(1, _any(v)) for v in value))
    if isinstance(value, Mapping):
        return _delimited(6, b"".join(_key_value(1, str(k), v) for k, v in value.items()))
    raise TypeError(f"attribute value of type {type(value).__name__}")


_KEY_VALUES: dict[tuple[int, str, type, Any], bytes] = {}
"""Encoded attributes seen before (policies, outcomes, node and subject names repeat on every
span); bounded: cleared when full."""
_KEY_VALUES_MAX = 4096


def _key_value(field: int, key: str, value: Any) -> bytes:
    cacheable = isinstance(value, (str, int, float, bool)) and (
        not isinstance(value, str) or len(value) <= 64
    )
    if cacheable:
        cached = _KEY_VALUES.get((field, key, type(value), value))
        if cached is not None:
            return cached
    encoded = _delimited(field, _text(1, key) + _delimited(2, _any(value)))
    if cacheable:
        if len(_KEY_VALUES) >= _KEY_VALUES_MAX:
            _KEY_VALUES.clear()
        _KEY_VALUES[(field, key, type(value), value)] = encoded
    return encoded


def _attributes(field: int, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        try:
            out.append(_key_value(field, key, value))
        except TypeError:  # as the exporter does: the attribute is left out, not the span
            continue
    return b"".join(out)


def _count(field: int, value: int) -> bytes:
    return _tag(field, 0) + _varint(value) if value else b""


def _flags(field: int, parent: SpanContext | None) -> bytes:
    flags = HAS_IS_REMOTE | (IS_REMOTE if parent is not None and parent.is_remote else 0)
    return _tag(field, 5) + _FIXED32.pack(flags)


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    return ",".join(f"{k}={v}" for k, v in state.items()) if state is not None else ""


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _text(3, _trace_state(context)),
    ]
    if span.parent is not None:
        parts.append(b"\x22\x08" + span.parent.span_id.to_bytes(8, "big"))
    parts += (
        _text(5, span.name),
        _count(6, span.kind.value + 1),  # OTLP's SpanKind counts UNSPECIFIED as 0
        b"\x39" + _FIXED64.pack(span.start_time or 0),
        b"\x41" + _FIXED64.pack(span.end_time or 0),
        _attributes(9, span.attributes),
        _count(10, span.dropped_attributes),
    )
    for event in span.events:
        parts.append(
            _delimited(
                11,
                b"\x09"
                + _FIXED64.pack(event.timestamp)
                + _text(2, event.name)
                + _attributes(3, event.attributes)
                + _count(4, event.dropped_attributes),
            )
        )
    parts.append(_count(12, span.dropped_events))
    for link in span.links:
        parts.append(
            _delimited(
                13,
                b"\x0a\x10"
                + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big")
                + _attributes(4, link.attributes)
                + _count(5, link.dropped_attributes)
                + _flags(6, link.context),
            )
        )
    parts.append(_count(14, span.dropped_links))
    status = span.status
    parts.append(_delimited(15, _text(2, status.description) + _count(3, status.status_code.value)))
    parts.append(_flags(16, span.parent))
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest's bytes: spans grouped by resource, then by scope, in the
    order they first appear (as the exporter groups them)."""
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource = span.resource
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scope = span.instrumentation_scope
        scopes.setdefault(id(scope), (scope, []))[1].append(_span(span))
    out = []
    for resource, scopes in groups.values():
        scope_spans = []
        for scope, encoded in scopes.values():
            scope_payload = (
                b""
                if scope is None
                else _text(1, scope.name)
                + _text(2, scope.version)
                + _attributes(3, scope.attributes)
            )
            scope_spans.append(
                _delimited(
                    2,
                    _delimited(1, scope_payload)
                    + b"".join(_delimited(2, s) for s in encoded)
                    + _text(3, scope.schema_url if scope is not None else None),
                )
            )
        body = (
            _delimited(1, _attributes(1, resource.attributes))
            + b"".join(scope_spans)
            + _text(3, resource.schema_url)
        )
        out.append(_delimited(1, body))
    return b"".join(out)


class EncodedRequest:
    """What the OTLP/HTTP exporter asks of the encoder's result: its bytes."""

    __slots__ = ("data",)

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.data = encode_request(spans)

    def SerializePartialToString(self) -> bytes:  # protobuf's name
        return self.data

    def SerializeToString(self) -> bytes:  # protobuf's name
        return self.data


def use_in_http_exporter() -> bool:
    """Have the OTLP/HTTP span exporter encode with encode_request (it looks its encoder up
    by name at each export); False where this exporter's version has no such name (its own
    encoder stays: slower, same bytes)."""
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    if not callable(getattr(trace_exporter, "encode_spans", None)):
        return False
    trace_exporter.encode_spans = EncodedRequest  # type: ignore[attr-defined,assignment]
    return True
