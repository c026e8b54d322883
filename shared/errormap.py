"""What each error code means in each protocol, one table per protocol, so that no shell maps
errors by hand: exit codes (sysexits.h), HTTP status, gRPC status names. NATS carries the code
itself (the `Nats-Service-Error-Code` header) and shared.errors.error_from_code rebuilds it."""

from __future__ import annotations

from shared.errors import ERRORS_BY_CODE, HamiError

EXIT_CODE: dict[str, int] = {
    "invalid": 2,  # usage: fix the input
    "not_found": 2,
    "no_capacity": 75,  # EX_TEMPFAIL: try again later
    "conflict": 75,
    "unavailable": 69,  # EX_UNAVAILABLE: a collaborator is missing
    "internal": 70,  # EX_SOFTWARE
}
HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "not_found": 404,
    "conflict": 409,
    "no_capacity": 503,
    "unavailable": 503,
    "internal": 500,
}
GRPC_STATUS: dict[str, str] = {
    "invalid": "INVALID_ARGUMENT",
    "not_found": "NOT_FOUND",
    "conflict": "ABORTED",
    "no_capacity": "RESOURCE_EXHAUSTED",
    "unavailable": "UNAVAILABLE",
    "internal": "INTERNAL",
}
TABLES: dict[str, dict[str, int] | dict[str, str]] = {
    "exit code": EXIT_CODE,
    "HTTP status": HTTP_STATUS,
    "gRPC status": GRPC_STATUS,
}


def exit_code(error: HamiError) -> int:
    return EXIT_CODE.get(error.code, EXIT_CODE["internal"])


def http_status(error: HamiError) -> int:
    return HTTP_STATUS.get(error.code, HTTP_STATUS["internal"])


def extender_status(error: HamiError) -> int:
    """kube-scheduler's extender protocol: a request that is not one (malformed) is refused
    with 400; any other trouble goes in the verb's own `Error` field with 200, which
    kube-scheduler reports on the pod and retries."""
    return http_status(error) if error.code == "invalid" else 200


def grpc_status(error: HamiError) -> str:
    """The name of a `grpc.StatusCode` (shared imports no gRPC)."""
    return GRPC_STATUS.get(error.code, GRPC_STATUS["internal"])


def missing_codes() -> dict[str, set[str]]:
    """Codes of the error tree a table does not cover (a test keeps this empty)."""
    return {name: set(ERRORS_BY_CODE) - set(table) for name, table in TABLES.items()}
