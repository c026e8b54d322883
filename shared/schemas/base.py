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


Req = TypeVar("Req", bound=WireStruct)
Rep = TypeVar("Rep", bound=WireStruct)


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep]):
    """One request/reply subject of an API with its two message types: the server, the client
    and the API reference all derive from it (the codecs are built once, here)."""

    subject: str
    request: type[Req]
    reply: type[Rep]
    publisher: str
    consumers: str
    doc: str
    requests: Codec[Req] = field(init=False, repr=False, compare=False)
    replies: Codec[Rep] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "requests", Codec(self.request))
        object.__setattr__(self, "replies", Codec(self.reply))

    @property
    def name(self) -> str:
        """The last token of the subject: the endpoint's name in the NATS micro service."""
        return self.subject.rsplit(".", 1)[1]

    @property
    def spec(self) -> SubjectSpec:
        return SubjectSpec(
            subject=self.subject,
            pattern="request/reply",
            publisher=self.publisher,
            consumers=self.consumers,
            message=self.request,
            reply=self.reply,
            doc=self.doc,
        )


def node_token(node: str) -> str:
    """A node name as one subject token: node names may contain '.', NATS tokens may not."""
    return node.replace(".", "_").replace("*", "_").replace(">", "_").replace(" ", "_")
