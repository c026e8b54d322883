"""User-facing quantities (memory sizes, percentages), shared by CLI, webhook and allocator.

Errors name the flag or field and the allowed range, so a caller can show them as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from shared.errors import InvalidRequest

_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?)[bB]?\s*$")
_MIB_PER_UNIT = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024, "": 1}
_PERCENT = re.compile(r"^\s*(\d+)\s*%\s*$")

MAX_MEMORY_MIB = 64 * 1024 * 1024  # 64 TiB: anything above is a typo, not a GPU


@dataclass(frozen=True, slots=True)
class MemoryAmount:
    """A memory request: either an absolute size in MiB or a percent of the device."""

    mib: int | None = None
    percent: int | None = None


def parse_memory(text: str, *, field: str = "--gpumem") -> MemoryAmount:
    """``3000`` (MiB), ``3000m``, ``3g``, ``3Gi`` or ``50%``; zero and negatives are refused."""
    percent = _PERCENT.match(text)
    if percent:
        value = int(percent.group(1))
        if not 1 <= value <= 100:
            raise InvalidRequest(f"{field} {text!r}: a percentage must be between 1% and 100%")
        return MemoryAmount(percent=value)
    size = _SIZE.match(text)
    if not size:
        raise InvalidRequest(
            f"{field} {text!r}: expected MiB (3000), a size (3000m, 3g, 3Gi) or a percent (50%)"
        )
    mib = int(int(size.group(1)) * _MIB_PER_UNIT[size.group(2).lower()])
    if not 1 <= mib <= MAX_MEMORY_MIB:
        raise InvalidRequest(f"{field} {text!r}: must be between 1 MiB and {MAX_MEMORY_MIB} MiB")
    return MemoryAmount(mib=mib)


def parse_cores(text: str | int, *, field: str = "--gpucores") -> int:
    """Percent of one device's compute, 0..100 (100 means the whole device, exclusively)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InvalidRequest(f"{field} {text!r}: must be an integer from 0 to 100") from None
    if not 0 <= value <= 100:
        raise InvalidRequest(f"{field} {text!r}: must be an integer from 0 to 100")
    return value


def parse_count(text: str | int, *, field: str = "--gpus", maximum: int = 64) -> int:
    """A device count, 1..maximum."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InvalidRequest(f"{field} {text!r}: must be an integer from 1 to {maximum}") from None
    if not 1 <= value <= maximum:
        raise InvalidRequest(f"{field} {text!r}: must be an integer from 1 to {maximum}")
    return value


def format_mib(mib: int) -> str:
    """Human-readable MiB for tables: 143776 -> '140.4 GiB'."""
    if mib >= 1024:
        return f"{mib / 1024:.1f} GiB"
    return f"{mib} MiB"


_K8S_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[mkMGTPE])?$"
)
_K8S_SUFFIX: dict[str, int | Fraction] = {
    "": 1,
    "m": Fraction(1, 1000),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_k8s_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity (``2000``, ``2k``, ``1.5``, ``100m``, ``3Gi``, ``1e3``) as
    an exact number. The API server rewrites quantities into canonical form (2000 -> 2k), so
    anything reading pod specs must accept every form."""
    match = _K8S_QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        exponent = int(suffix[1:])
        if abs(exponent) > 36:  # past any resource's range; and 1e999999999 would never end
            raise ValueError(f"{text!r} is out of range")
        return number * Fraction(10) ** exponent
    return number * _K8S_SUFFIX[suffix]
