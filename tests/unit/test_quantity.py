from fractions import Fraction

import pytest

from shared.errors import InvalidRequest
from shared.quantity import (
    MemoryAmount,
    parse_cores,
    parse_count,
    parse_k8s_quantity,
    parse_memory,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3000", MemoryAmount(mib=3000)),
        ("3000m", MemoryAmount(mib=3000)),
        ("3000Mi", MemoryAmount(mib=3000)),
        ("3g", MemoryAmount(mib=3072)),
        ("3G", MemoryAmount(mib=3072)),
        ("3Gi", MemoryAmount(mib=3072)),
        ("1t", MemoryAmount(mib=1024 * 1024)),
        ("50%", MemoryAmount(percent=50)),
        ("100%", MemoryAmount(percent=100)),
        (" 7 % ", MemoryAmount(percent=7)),
    ],
)
def test_memory_accepts(text: str, expected: MemoryAmount) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["-1", "3x", "0", "0%", "101%", "", "g", "1.5g", "512k"])
def test_memory_refuses_with_flag_name(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_memory(text)
    assert "--gpumem" in str(info.value)


@pytest.mark.parametrize("text", ["150", "-1", "abc", "101"])
def test_cores_refuses(text: str) -> None:
    with pytest.raises(InvalidRequest, match=r"--gpucores .* 0 to 100"):
        parse_cores(text)


def test_cores_and_count_accept_bounds() -> None:
    assert parse_cores("0") == 0
    assert parse_cores("100") == 100
    assert parse_count("1") == 1
    with pytest.raises(InvalidRequest, match="--gpus"):
        parse_count("0")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2000", 2000),
        ("2k", 2000),
        ("1.5", Fraction(3, 2)),
        ("100m", Fraction(1, 10)),
        ("3Gi", 3 * 2**30),
        ("1e3", 1000),
        ("1E3", 1000),
        ("2E", 2 * 10**18),
        ("-1", -1),
    ],
)
def test_k8s_quantities(text: str, value: Fraction) -> None:
    assert parse_k8s_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "3GB", "k"])
def test_k8s_quantity_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_k8s_quantity(text)
