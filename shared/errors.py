"""One small error tree for every service.

Each error carries a stable ``code`` and says whether a caller should retry. Protocol shells map
these to their own status (NATS service error headers, HTTP status, CLI exit code) in one place.
"""

from __future__ import annotations


class HamiError(Exception):
    """Base of all errors raised on purpose by this project."""

    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({details})"


class InvalidRequest(HamiError):
    """The input can never be accepted as it is; fix it and send it again."""

    code = "invalid"


class NoCapacity(HamiError):
    """It would fit on an empty cluster but not now; retry when something is released."""

    code = "no_capacity"
    retryable = True


class Conflict(HamiError):
    """A concurrent change won; re-read and retry."""

    code = "conflict"
    retryable = True


class NotFound(HamiError):
    """The named object does not exist (or no longer exists)."""

    code = "not_found"


class Unavailable(HamiError):
    """A collaborator (NATS, the allocator, a binary) cannot be reached now; retry later."""

    code = "unavailable"
    retryable = True


ERRORS_BY_CODE: dict[str, type[HamiError]] = {
    cls.code: cls
    for cls in (
        HamiError,
        InvalidRequest,
        NoCapacity,
        Conflict,
        NotFound,
        Unavailable,
    )
}


def error_from_code(code: str, message: str) -> HamiError:
    """Rebuild an error received over the wire; unknown codes become a plain HamiError."""
    return ERRORS_BY_CODE.get(code, HamiError)(message)
