"""One settings loader for every service, derived from its settings Struct.

Each field becomes a flag (`--field-name`, a trailing `_s` of seconds dropped) and an environment
variable (`HAMI_FIELD_NAME`); a field may name others with
`Annotated[T, msgspec.Meta(extra={"flag": "--nats", "env": "HAMI_NATS_URL"})]`. Help comes from
the field's docstring. A settings file (`--settings-file`, or `HAMI_SETTINGS_FILE`) holds any
fields as JSON or YAML with `version: v1`; unknown fields are refused. Precedence, written once
here: flags > environment > settings file > the service's own fallback layer (the node agent's
device configuration, say) > the Struct's defaults. The result is validated by msgspec against
the Struct (types, ranges, `__post_init__`); a refusal is one line naming the flag."""

from __future__ import annotations

import argparse
import functools
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from shared.errors import InvalidRequest
from shared.fielddocs import field_docs

S = TypeVar("S", bound=msgspec.Struct)
SETTINGS_VERSION = "v1"
SCALARS = (str, int, float, bool)
Fallback = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""Given the values set so far (flags, environment, file), values for fields still unset."""


class Field(msgspec.Struct, frozen=True):
    name: str
    flag: str
    env: str | None
    kind: type
    """The scalar type the flag and the variable are read as."""
    optional: bool
    choices: tuple[str, ...] | None
    help: str


def _unwrap(hint: Any) -> tuple[Any, dict[str, Any]]:
    """The type under Annotated, and the merged `extra` of its msgspec.Meta."""
    extra: dict[str, Any] = {}
    if typing.get_origin(hint) is typing.Annotated:
        base, *metadata = typing.get_args(hint)
        for meta in metadata:
            if isinstance(meta, msgspec.Meta) and meta.extra:
                extra.update(meta.extra)
        return base, extra
    return hint, extra


def _scalar(hint: Any) -> tuple[type | None, bool, tuple[str, ...] | None]:
    """(scalar type, optional, choices) of a field a flag can set; None for other shapes."""
    base, _ = _unwrap(hint)
    optional = False
    if typing.get_origin(base) in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(base) if a is not type(None)]
        optional = len(members) < len(typing.get_args(base))
        if len(members) != 1:
            return None, optional, None
        base, _ = _unwrap(members[0])
    if typing.get_origin(base) is Literal:
        values = typing.get_args(base)
        if all(isinstance(v, str) for v in values):
            return str, optional, tuple(values)
        return None, optional, None
    return (base if base in SCALARS else None), optional, None


@functools.cache  # the hints and the docstrings' source are read once per Struct
def fields_of(kind: type[msgspec.Struct]) -> tuple[Field, ...]:
    hints = typing.get_type_hints(kind, include_extras=True)
    docs = field_docs(kind)
    found = []
    for info in msgspec.structs.fields(kind):
        scalar, optional, choices = _scalar(hints[info.name])
        if scalar is None:
            continue  # nested settings: from the settings file or the fallback only
        _, extra = _unwrap(hints[info.name])
        stem = info.name.removesuffix("_s")
        env = extra.get("env", f"HAMI_{stem.upper()}")
        found.append(
            Field(
                name=info.name,
                flag=extra.get("flag", f"--{stem.replace('_', '-')}"),
                env=env,
                kind=scalar,
                optional=optional,
                choices=choices,
                help=docs.get(info.name, ""),
            )
        )
    return tuple(found)


def _parser(kind: type[msgspec.Struct], prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, argument_default=argparse.SUPPRESS
    )
    for field in fields_of(kind):
        env = f" [env {field.env}]" if field.env else ""
        if field.kind is bool:
            parser.add_argument(
                field.flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                help=field.help + env,
            )
        else:
            # Choices are checked with the rest by msgspec: one line, naming the flag.
            metavar = "{" + ",".join(field.choices) + "}" if field.choices else None
            parser.add_argument(field.flag, dest=field.name, metavar=metavar, help=field.help + env)
    parser.add_argument(
        "--settings-file",
        metavar="FILE",
        help=f"JSON or YAML with `version: {SETTINGS_VERSION}` [env HAMI_SETTINGS_FILE]",
    )
    return parser


def _from_env(kind: type[msgspec.Struct], env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in fields_of(kind):
        raw = env.get(field.env) if field.env else None
        if raw is None or (raw == "" and field.optional):
            continue  # an empty variable is "not set" for optional fields
        if field.kind is bool:
            values[field.name] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            values[field.name] = raw
    return values


def read_settings_file(path: str) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InvalidRequest(f"settings file {path}: {e.strerror}") from None
    try:
        decoded = msgspec.yaml.decode(data)
    except (msgspec.DecodeError, ValueError) as e:
        raise InvalidRequest(f"settings file {path}: {' '.join(str(e).split())}") from None
    if not isinstance(decoded, dict):
        raise InvalidRequest(f"settings file {path}: expected a mapping")
    version = decoded.pop("version", None)
    if version != SETTINGS_VERSION:
        raise InvalidRequest(
            f"settings file {path}: version {version!r}; this release reads {SETTINGS_VERSION!r}"
        )
    return decoded


def write_settings_file(path: Path, settings: msgspec.Struct) -> Path:
    """``settings`` whole, as a child's `--settings-file` (0600: it may name credentials)."""
    body = {"version": SETTINGS_VERSION, **msgspec.to_builtins(settings)}
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(body))
    os.replace(path.with_suffix(".tmp"), path)
    return path


def _flag_of(kind: type[msgspec.Struct], message: str) -> str:
    """msgspec says `- at $.node_ttl_s`; the user typed --node-ttl."""
    for field in fields_of(kind):
        at = f"`$.{field.name}`"
        if at in message:
            return message.replace(at, field.flag)
        if message == f"Object missing required field `{field.name}`":
            return f"{field.flag} is required"
    return message


def otel_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The standard OpenTelemetry variables (`OTEL_*`) tracing is configured by
    (shared/tracing.py); they are OpenTelemetry's contract, not HAMi settings."""
    return {k: v for k, v in (os.environ if env is None else env).items() if k.startswith("OTEL_")}


def load(
    kind: type[S],
    argv: Sequence[str] | None = None,
    *,
    prog: str,
    description: str = "",
    env: Mapping[str, str] | None = None,
    fallback: Fallback | None = None,
) -> S:
    """The settings, or SystemExit with one line (argparse's own usage errors aside)."""
    environ = os.environ if env is None else env
    parsed = vars(_parser(kind, prog, description).parse_args(argv))
    settings_file = parsed.pop("settings_file", None) or environ.get("HAMI_SETTINGS_FILE")
    try:
        layered = read_settings_file(settings_file) if settings_file else {}
        layered.update(_from_env(kind, environ))
        layered.update(parsed)
        values = {**(fallback(layered) if fallback is not None else {}), **layered}
        unknown = set(values) - set(kind.__struct_fields__)
        if unknown:
            raise InvalidRequest(f"unknown settings {sorted(unknown)}")
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as e:
        raise SystemExit(f"{prog}: {_flag_of(kind, str(e))}") from None
    except InvalidRequest as e:
        raise SystemExit(f"{prog}: {e}") from None
