"""Attribute docstrings of a class (a string literal right after a field), read from its
source: the API reference (shared/apidoc.py) and the settings' help (shared/settings.py)."""

from __future__ import annotations

import ast
import inspect
import itertools


def field_docs(kind: type) -> dict[str, str]:
    tree = ast.parse(inspect.getsource(kind))
    body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs
