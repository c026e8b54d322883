"""The vendor-tool backends on recorded outputs (tests/fixtures/vendortools/README.md says
where each format comes from): parsing, kind and model matching, failure handling, and the
real subprocess path through a stand-in executable."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.nodeagent.core.inventory import SharingPolicy, device_info
from services.nodeagent.core.vendortools import (
    ToolOutputError,
    kind_for,
    parse_amd_smi,
    parse_cnmon,
    parse_hy_smi,
    parse_ixsmi,
    parse_npu_smi,
)
from services.nodeagent.devices import open_device_manager
from services.nodeagent.toolbackends import TOOL_BACKENDS, ToolDeviceManager
from shared.errors import Unavailable
from shared.vendorkinds import VENDOR_KINDS

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vendortools"
MIB = 1 << 20


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_npu_smi_910b3() -> None:
    parsed = parse_npu_smi(
        fixture("npu-smi-910b3.txt"), fixture("npu-smi-910b3-chips.txt"), "node-a", VENDOR_KINDS
    )
    devices = [r.device for r in parsed.readings]
    assert [d.kind for d in devices] == ["ascend910b3"] * 4
    assert {d.model for d in devices} == {"Ascend910B3"}
    assert [d.minor_number for d in devices] == [0, 1, 2, 3]
    assert [d.pci_bus_id for d in devices] == [
        "0000:C1:00.0",
        "0000:C2:00.0",
        "0000:81:00.0",
        "0000:82:00.0",
    ]
    assert {d.memory_total_bytes for d in devices} == {65536 * MIB}  # HBM, not the 0/0 DDR
    assert [d.healthy for d in devices] == [True, True, True, False]  # Warning runs, Alarm not
    usage = [r.usage for r in parsed.readings]
    assert usage[1].memory_used_bytes == 20904 * MIB and usage[1].utilization_percent == 12
    # Stable ids: the same node and bus give the same id, another node another.
    again = parse_npu_smi(
        fixture("npu-smi-910b3.txt"), fixture("npu-smi-910b3-chips.txt"), "node-a", VENDOR_KINDS
    )
    other = parse_npu_smi(fixture("npu-smi-910b3.txt"), "", "node-b", VENDOR_KINDS)
    assert [r.device.uuid for r in again.readings] == [d.uuid for d in devices]
    assert {r.device.uuid for r in other.readings}.isdisjoint(d.uuid for d in devices)
    assert len({d.uuid for d in devices}) == 4
    # The scheduler sees a partition device with the 910B3's templates.
    info = device_info(devices[0], SharingPolicy())
    assert info.isolation == "partition"
    assert [p.name for p in info.profiles] == ["vir05_1c_16g", "vir10_3c_32g"]


def test_npu_smi_310p_chip_device_layout() -> None:
    parsed = parse_npu_smi(
        fixture("npu-smi-310p.txt"), fixture("npu-smi-310p-chips.txt"), "n", VENDOR_KINDS
    )
    devices = [r.device for r in parsed.readings]
    assert [(d.kind, d.model, d.minor_number) for d in devices] == [
        ("ascend310p", "Ascend310P", 0),
        ("ascend310p", "Ascend310P", 1),
    ]
    assert {d.memory_total_bytes for d in devices} == {21527 * MIB}
    # Without `-m` the logic id beside the chip decides.
    alone = parse_npu_smi(fixture("npu-smi-310p.txt"), "", "n", VENDOR_KINDS)
    assert [r.device.minor_number for r in alone.readings] == [0, 1]


def test_npu_smi_refuses_what_it_cannot_read() -> None:
    broken = fixture("npu-smi-910b3.txt").replace("3378 / 65536", "3378 of 65536")
    broken = broken.replace("0    / 0          3378 of 65536", "n/a          3378 of 65536")
    with pytest.raises(ToolOutputError, match="npu-smi info: no memory usage"):
        parse_npu_smi(broken, "", "n", VENDOR_KINDS)


def test_npu_smi_chip_no_kind_knows_is_left_out_with_the_reason() -> None:
    text = fixture("npu-smi-910b3.txt").replace("910B3 ", "910A  ")
    parsed = parse_npu_smi(text, "", "n", VENDOR_KINDS)
    assert parsed.readings == ()
    assert len(parsed.skipped) == 4 and "Ascend910A" in parsed.skipped[0]


def test_cnmon() -> None:
    parsed = parse_cnmon(fixture("cnmon-mlu370.json"), VENDOR_KINDS)
    first, second = parsed.readings
    assert first.device.kind == "cambricon-mlu" and first.device.model == "MLU370-X8"
    assert first.device.uuid == "MLU-3D8F1A2B4C5E6F70"
    assert first.device.memory_total_bytes == 49152 * MIB
    assert first.device.pci_bus_id == "0000:3b:00.0"
    assert first.usage.memory_used_bytes == 2011 * MIB and first.usage.utilization_percent == 7
    assert second.device.index == 1
    with pytest.raises(ToolOutputError, match="cnmon: output is not JSON"):
        parse_cnmon("{", VENDOR_KINDS)
    with pytest.raises(ToolOutputError, match="no UUID"):
        parse_cnmon('{"CnmonInfo": [{"CardNum": 0, "ProductName": "MLU590"}]}', VENDOR_KINDS)


def test_hy_smi_takes_the_longest_model_and_both_use_keys() -> None:
    parsed = parse_hy_smi(fixture("hy-smi-z100l.json"), VENDOR_KINDS)
    devices = [r.device for r in parsed.readings]
    assert [d.model for d in devices] == ["Z100L", "Z100L"]  # not Z100
    assert [d.uuid for d in devices] == ["DCU-0", "DCU-1"]  # as HAMi's DCU plugin names them
    assert [r.usage.utilization_percent for r in parsed.readings] == [3.0, 0.0]
    assert devices[0].memory_total_bytes == 32752 * MIB and devices[1].pci_bus_id == "0000:2c:00.0"


def test_ixsmi_leaves_out_a_chip_no_kind_registers() -> None:
    parsed = parse_ixsmi(fixture("ixsmi-bi-v150.csv"), VENDOR_KINDS)
    assert [r.device.kind for r in parsed.readings] == ["iluvatar-bi-v150"] * 2
    assert parsed.readings[1].usage.memory_used_bytes == 20480 * MIB
    assert parsed.readings[1].usage.utilization_percent == 87
    [why] = parsed.skipped
    assert "MR-V100" in why and "GPU 2" in why
    with pytest.raises(ToolOutputError, match="expected 7 fields"):
        parse_ixsmi("0, GPU-x, Iluvatar BI-V150, 32768 MiB\n", VENDOR_KINDS)
    units = "0, GPU-x, Iluvatar BI-V150, 32768 MiB, 10 MiB, 3 %, 00000000:0E:00.0\n"
    [reading] = parse_ixsmi(units, VENDOR_KINDS).readings
    assert reading.device.memory_total_bytes == 32768 * MIB


def test_amd_smi_joins_list_static_and_metric() -> None:
    parsed = parse_amd_smi(
        fixture("amd-smi-list.json"),
        fixture("amd-smi-static.json"),
        fixture("amd-smi-metric.json"),
        VENDOR_KINDS,
    )
    devices = [r.device for r in parsed.readings]
    assert [(d.kind, d.model) for d in devices] == [("amd", "MI300X")] * 2
    assert devices[0].uuid == "GPU-c5ff74a1-0000-1000-80b9-3e2a51b4a7e3"
    assert devices[1].pci_bus_id == "0000:22:00.0"
    assert devices[0].memory_total_bytes == 196592 * MIB
    assert parsed.readings[1].usage.memory_used_bytes == 81920 * MIB
    assert parsed.readings[1].usage.utilization_percent == 64
    # Older releases: a bare list and bare numbers.
    old_metric = '[{"gpu": 1, "usage": {"gfx_activity": 5}, "mem_usage": {"used_vram": 7}}]'
    old = parse_amd_smi(
        fixture("amd-smi-list.json"), fixture("amd-smi-static.json"), old_metric, VENDOR_KINDS
    )
    assert old.readings[1].usage.memory_used_bytes == 7 * MIB
    assert old.readings[1].usage.utilization_percent == 5
    assert old.readings[0].usage.memory_used_bytes == 0


def test_kind_matching_never_puts_a_model_in_another_models_kind() -> None:
    assert kind_for(VENDOR_KINDS, "Huawei", "Ascend 910B") is None  # B2, B3 or B4: unknown
    assert kind_for(VENDOR_KINDS, "Iluvatar", "MR-V100") is None  # its kind is per chip
    found = kind_for(VENDOR_KINDS, "AMD", "AMD Instinct MI250X")  # one kind for every model
    assert found is not None and found[0].name == "amd" and found[1] == "AMD Instinct MI250X"


class Tools:
    """Answers each command with a fixture (cnmon's file written where it runs)."""

    def __init__(self) -> None:
        self.fail = False
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], cwd: Path | None) -> str:
        self.calls.append(tuple(argv))
        if self.fail:
            raise Unavailable(f"{argv[0]} exited 1: device busy")
        if argv[0] == "cnmon":
            assert cwd is not None
            (cwd / "cnmon_info.json").write_text(fixture("cnmon-mlu370.json"))
            return ""
        table = {
            ("npu-smi", "info"): "npu-smi-910b3.txt",
            ("npu-smi", "info", "-m"): "npu-smi-910b3-chips.txt",
            ("amd-smi", "list", "--json"): "amd-smi-list.json",
            ("amd-smi", "static", "--asic", "--vram", "--json"): "amd-smi-static.json",
            ("amd-smi", "metric", "--usage", "--mem-usage", "--json"): "amd-smi-metric.json",
        }
        if argv[0] == "hy-smi":
            return fixture("hy-smi-z100l.json")
        if argv[0] == "ixsmi":
            return fixture("ixsmi-bi-v150.csv")
        return fixture(table[tuple(argv)])


@pytest.mark.parametrize(
    ("tool", "kind", "count"),
    [
        ("npu-smi", "ascend910b3", 4),
        ("cnmon", "cambricon-mlu", 2),
        ("hy-smi", "hygon-dcu", 2),
        ("ixsmi", "iluvatar-bi-v150", 2),
        ("amd-smi", "amd", 2),
    ],
)
def test_each_backend_behind_the_device_manager_seam(tool: str, kind: str, count: int) -> None:
    tools = Tools()
    manager = ToolDeviceManager(TOOL_BACKENDS[tool], "node-a", VENDOR_KINDS, tools)
    devices = manager.devices()
    assert [d.kind for d in devices] == [kind] * count
    assert [u.uuid for u in manager.usage()] == [d.uuid for d in devices]
    assert manager.mig is None and tool in manager.driver().driver_version
    # The tool failing: the devices stay, unhealthy; no usage is invented.
    tools.fail = True
    failed = manager.devices()
    assert [d.uuid for d in failed] == [d.uuid for d in devices]
    assert not any(d.healthy for d in failed)
    assert manager.usage() == []
    tools.fail = False
    assert [d.healthy for d in manager.devices()] == [d.healthy for d in devices]


def test_a_tool_that_does_not_answer_at_start_is_an_error() -> None:
    tools = Tools()
    tools.fail = True
    with pytest.raises(Unavailable, match="device busy"):
        ToolDeviceManager(TOOL_BACKENDS["npu-smi"], "n", VENDOR_KINDS, tools)
    with pytest.raises(Unavailable, match="found no device"):
        ToolDeviceManager(TOOL_BACKENDS["ixsmi"], "n", VENDOR_KINDS, lambda a, c: "")


def _stand_in(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_the_real_subprocess_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    info, chips = FIXTURES / "npu-smi-910b3.txt", FIXTURES / "npu-smi-910b3-chips.txt"
    _stand_in(bin_dir, "npu-smi", f'if [ "$2" = "-m" ]; then cat {chips}; else cat {info}; fi\n')
    _stand_in(bin_dir, "cnmon", f"cp {FIXTURES / 'cnmon-mlu370.json'} cnmon_info.json\n")
    _stand_in(bin_dir, "ixsmi", "echo 'ixsmi: driver not loaded' >&2; exit 3\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ascend = open_device_manager(None, "node-a", backend="npu-smi")
    assert len(ascend.devices()) == 4
    assert len(open_device_manager(None, "node-a", backend="cnmon").devices()) == 2
    with pytest.raises(Unavailable, match="exited 3: ixsmi: driver not loaded"):
        open_device_manager(None, "node-a", backend="ixsmi")
    with pytest.raises(Unavailable, match="amd-smi is not installed"):
        open_device_manager(None, "node-a", backend="amd-smi")


def test_amd_render_nodes_come_from_sysfs(tmp_path: Path) -> None:
    (tmp_path / "0000:22:00.0" / "drm" / "renderD131").mkdir(parents=True)
    (tmp_path / "0000:22:00.0" / "drm" / "card3").mkdir()
    manager = ToolDeviceManager(TOOL_BACKENDS["amd-smi"], "n", VENDOR_KINDS, Tools(), tmp_path)
    first, second = manager.devices()
    assert (first.minor_number, second.minor_number) == (0, 3)  # renderD131; index otherwise


PARSERS = {
    "npu-smi": lambda text: parse_npu_smi(text, text, "n", VENDOR_KINDS),
    "cnmon": lambda text: parse_cnmon(text, VENDOR_KINDS),
    "hy-smi": lambda text: parse_hy_smi(text, VENDOR_KINDS),
    "ixsmi": lambda text: parse_ixsmi(text, VENDOR_KINDS),
    "amd-smi": lambda text: parse_amd_smi(text, text, text, VENDOR_KINDS),
}


def _mangled(draw: st.DrawFn) -> tuple[str, str]:
    tool = draw(st.sampled_from(sorted(PARSERS)))
    source = {
        "npu-smi": "npu-smi-910b3.txt",
        "cnmon": "cnmon-mlu370.json",
        "hy-smi": "hy-smi-z100l.json",
        "ixsmi": "ixsmi-bi-v150.csv",
        "amd-smi": "amd-smi-static.json",
    }[tool]
    text = fixture(source)
    numbers = [m.span() for m in re.finditer(r"\d+(\.\d+)?", text)]
    for _ in range(draw(st.integers(0, 3))):  # a number the tool printed, replaced
        start, end = draw(st.sampled_from(numbers))
        junk = draw(st.sampled_from(["-1", "1e999", "inf", "nan", "99999999999999999999", ""]))
        text = text[:start] + junk + text[end:]
        numbers = [m.span() for m in re.finditer(r"\d+(\.\d+)?", text)] or [(0, 0)]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 40))
        junk = draw(
            st.sampled_from(
                [
                    "",
                    "-1",
                    "1e999",
                    "inf",
                    "nan",
                    "N/A",
                    "99999999999999999999",
                    '"',
                    "{",
                    "]",
                    "|",
                    ",",
                    "/",
                    "\x00",
                    "é",
                    "-",
                ]
            )
        )
        text = text[:at] + junk + text[at + cut :]
    return tool, text


@settings(max_examples=300, deadline=None)
@given(st.composite(_mangled)())
def test_mangled_tool_output_is_read_or_refused_never_crashes(case: tuple[str, str]) -> None:
    tool, text = case
    try:
        parsed = PARSERS[tool](text)
    except ToolOutputError:
        return
    for reading in parsed.readings:
        assert 0 <= reading.device.memory_total_bytes <= 1 << 68
        assert 0 <= reading.usage.memory_used_bytes <= 1 << 68
        assert reading.device.uuid and reading.device.uuid.isprintable()
        util = reading.usage.utilization_percent
        assert util is None or 0 <= util <= 100


def test_numbers_out_of_range_are_refused() -> None:
    for total in ("inf", "1e999", "-5", "99999999999999999999"):
        row = f"0, GPU-x, Iluvatar BI-V150, {total}, 10, 3, 00000000:0E:00.0\n"
        with pytest.raises(ToolOutputError, match=r"memory\.total"):
            parse_ixsmi(row, VENDOR_KINDS)
    row = "0, GPU-x, Iluvatar BI-V150, 32768, 10, 1e999, 00000000:0E:00.0\n"
    [reading] = parse_ixsmi(row, VENDOR_KINDS).readings
    assert reading.usage.utilization_percent is None
