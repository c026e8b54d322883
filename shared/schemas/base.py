"""Building blocks for wire schemas: the struct base, codecs and the subject registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import msgspec

from shared.errors import InvalidRequest

PREFIX = "hami.v1"


class WireStruct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Base of every message. Frozen and keyword-only; unknown fields are ignored so that a
    newer sender (with new, defaulted fields) does not break an older receiver."""


T = TypeVar("T", bound=WireStruct)


class Codec(Generic[T]):
    """JSON encoder and decoder for one message type, built once."""

    _encoder = msgspec.json.Encoder()

    def __init__(self, kind: type[T]) -> None:
        self.kind = kind
        self._decoder = msgspec.json.Decoder(kind)

    def encode(self, message: T) -> bytes:
        return self._encoder.encode(message)

    def decode(self, data: bytes) -> T:
        try:
            return self._decoder.decode(data)
        except msgspec.ValidationError as e:
            raise InvalidRequest(f"malformed {self.kind.__name__}: {e}") from e
        except msgspec.DecodeError as e:
            raise InvalidRequest(f"{self.kind.__name__} is not valid JSON: {e}") from e


Pattern = Literal["request/reply", "pub/sub", "jetstream stream", "jetstream kv"]


@dataclass(frozen=True, slots=True)
class SubjectSpec:
    """One subject (or KV bucket) of the API, as documented in docs/nats-api.md."""

    subject: str
    pattern: Pattern
    publisher: str
    consumers: str
    message: type[WireStruct]
    reply: type[WireStruct] | None = None
    doc: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def node_token(node: str) -> str:
    """A node name as one subject token: node names may contain '.', NATS tokens may not."""
    return node.replace(".", "_").replace("*", "_").replace(">", "_").replace(" ", "_")
