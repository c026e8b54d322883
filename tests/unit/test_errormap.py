"""Each error code has a meaning in every protocol's table, and the shells use the tables."""

from __future__ import annotations

import pytest

from shared.errormap import exit_code, extender_status, grpc_status, http_status, missing_codes
from shared.errors import (
    ERRORS_BY_CODE,
    Conflict,
    HamiError,
    InvalidRequest,
    NoCapacity,
    NotFound,
    Unavailable,
)


def test_every_code_is_in_every_table() -> None:
    assert missing_codes() == {"exit code": set(), "HTTP status": set(), "gRPC status": set()}


@pytest.mark.parametrize(
    ("error", "exit", "http", "extender", "grpc"),
    [
        (InvalidRequest("x"), 2, 400, 400, "INVALID_ARGUMENT"),
        (NotFound("x"), 2, 404, 200, "NOT_FOUND"),
        (NoCapacity("x"), 75, 503, 200, "RESOURCE_EXHAUSTED"),
        (Conflict("x"), 75, 409, 200, "ABORTED"),
        (Unavailable("x"), 69, 503, 200, "UNAVAILABLE"),
        (HamiError("x"), 70, 500, 200, "INTERNAL"),
    ],
)
def test_the_tables(error: HamiError, exit: int, http: int, extender: int, grpc: str) -> None:
    assert (exit_code(error), http_status(error), extender_status(error), grpc_status(error)) == (
        exit,
        http,
        extender,
        grpc,
    )


def test_an_unknown_code_is_internal() -> None:
    class Odd(HamiError):
        code = "odd"

    assert (exit_code(Odd("x")), http_status(Odd("x"))) == (70, 500)
    assert set(ERRORS_BY_CODE) >= {"invalid", "unavailable"}
