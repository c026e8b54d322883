"""Generate the reference part of docs/nats-api.md from the subject registry and the Structs.

``python -m shared.apidoc`` rewrites the part between the markers; a test fails when the file
and the code disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from shared.fielddocs import field_docs
from shared.schemas import ALL_SUBJECTS
from shared.schemas.base import WireStruct

BEGIN = "<!-- BEGIN GENERATED: python -m shared.apidoc -->"
END = "<!-- END GENERATED -->"
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "nats-api.md"


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    if field.default is not msgspec.NODEFAULT:
        return f"`{msgspec.json.encode(field.default).decode()}`"
    return "`[]`"


def _structs_reachable(kinds: list[type[WireStruct]]) -> list[type[WireStruct]]:
    seen: dict[type[WireStruct], None] = {}
    stack = list(kinds)
    while stack:
        kind = stack.pop(0)
        if kind in seen:
            continue
        seen[kind] = None
        for field in msgspec.structs.fields(kind):
            for name in _names_in(str(kind.__annotations__.get(field.name, ""))):
                nested = getattr(sys.modules[kind.__module__], name, None)
                if isinstance(nested, type) and issubclass(nested, WireStruct):
                    stack.append(nested)
    return list(seen)


def _names_in(annotation: str) -> list[str]:
    return [
        tok
        for tok in annotation.replace("[", " ")
        .replace("]", " ")
        .replace(",", " ")
        .replace("|", " ")
        .split()
        if tok[:1].isupper()
    ]


def render() -> str:
    lines = [
        BEGIN,
        "",
        "## Subjects",
        "",
        "| subject | pattern | from | to | message | reply |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    roots: list[type[WireStruct]] = []
    for spec in ALL_SUBJECTS:
        reply = f"`{spec.reply.__name__}`" if spec.reply else "-"
        subject = spec.subject.replace("|", "\\|")
        lines.append(
            f"| `{subject}` | {spec.pattern} | {spec.publisher} | {spec.consumers} "
            f"| `{spec.message.__name__}` | {reply} |"
        )
        roots.append(spec.message)
        if spec.reply:
            roots.append(spec.reply)
    lines += ["", "### What each subject is for", ""]
    lines += [f"- `{spec.subject}`: {spec.doc}" for spec in ALL_SUBJECTS]
    lines += [
        "",
        "## Schemas",
        "",
        "JSON objects (msgspec); unknown fields are ignored, new fields always get defaults.",
        "",
    ]
    for kind in _structs_reachable(roots):
        docs = field_docs(kind)
        lines += [f"### `{kind.__name__}`", ""]
        if kind.__doc__:
            lines += [" ".join(kind.__doc__.split()), ""]
        lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        for field in msgspec.structs.fields(kind):
            annotation = str(kind.__annotations__[field.name]).replace("|", "\\|")
            lines.append(
                f"| `{field.name}` | `{annotation}` | {_default(field)} "
                f"| {docs.get(field.name, '')} |"
            )
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def splice(document: str, generated: str) -> str:
    head, sep, rest = document.partition(BEGIN)
    if not sep:
        raise ValueError(f"{DOC_PATH} lacks the marker {BEGIN!r}")
    _, sep, tail = rest.partition(END)
    if not sep:
        raise ValueError(f"{DOC_PATH} lacks the marker {END!r}")
    return head + generated + tail


def main() -> None:
    DOC_PATH.write_text(splice(DOC_PATH.read_text(), render()))


if __name__ == "__main__":
    main()
