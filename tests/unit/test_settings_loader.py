"""The one settings loader (shared/settings.py): names derived from the Struct, precedence
written once, refusals in one line that name the flag, settings files versioned and strict."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from services.allocator.settings import parse_settings as allocator_settings
from services.nodeagent.settings import parse_settings as nodeagent_settings
from services.telemetry.settings import parse_settings as telemetry_settings
from services.webhook.settings import parse_settings as webhook_settings
from shared import settings
from shared.servicesettings import AllocatorSettings, NodeAgentSettings, TelemetrySettings


def test_flags_and_variables_are_named_from_the_fields() -> None:
    fields = {f.name: f for f in settings.fields_of(AllocatorSettings)}
    assert (fields["node_ttl_s"].flag, fields["node_ttl_s"].env) == ("--node-ttl", "HAMI_NODE_TTL")
    assert (fields["nats_url"].flag, fields["nats_url"].env) == ("--nats", "HAMI_NATS_URL")
    assert fields["kubeconfig"].env == "KUBECONFIG"
    assert "resources" not in fields  # nested: a settings file or the device configuration
    agent = {f.name: f for f in settings.fields_of(NodeAgentSettings)}
    assert agent["core_policy"].env == "GPU_CORE_UTILIZATION_POLICY"
    assert agent["core_policy"].choices == ("default", "force", "disable")
    assert "may share one device" in agent["split_count"].help


def test_precedence_is_flags_then_environment_then_file_then_device_config(
    tmp_path: Path,
) -> None:
    device = tmp_path / "device.yaml"
    device.write_text("nvidia: {deviceSplitCount: 4, deviceMemoryScaling: 2, deviceCoreScaling: 3}")
    file = tmp_path / "agent.yaml"
    file.write_text("version: v1\nsplit_count: 5\nmemory_scaling: 1.5\n")
    env = {"HAMI_SPLIT_COUNT": "6"}
    argv = ["--device-config", str(device), "--settings-file", str(file), "--node", "n1"]
    loaded = settings.load(
        NodeAgentSettings,
        [*argv, "--split-count", "7"],
        prog="t",
        env=env,
        fallback=_agent_fallback,
    )
    assert loaded.split_count == 7  # the flag
    assert (
        settings.load(
            NodeAgentSettings, argv, prog="t", env=env, fallback=_agent_fallback
        ).split_count
        == 6
    )
    from_file = settings.load(NodeAgentSettings, argv, prog="t", env={}, fallback=_agent_fallback)
    assert (from_file.split_count, from_file.memory_scaling) == (5, 1.5)  # the file
    assert from_file.core_scaling == 3  # the device configuration, below all of those
    assert settings.load(NodeAgentSettings, [], prog="t", env={}).split_count == 10  # default


def _agent_fallback(values: object) -> dict[str, object]:
    from services.nodeagent.settings import _from_device_config

    return _from_device_config(values)  # type: ignore[arg-type]


def test_a_nodes_operating_mode_is_its_gpu_mode(tmp_path: Path) -> None:
    device = tmp_path / "device.yaml"
    device.write_text("nodeconfig: [{name: mig-node, operatingmode: mig}]")
    for node, mode in (("mig-node", "mig"), ("other", "hami-core")):
        argv = ["--device-config", str(device), "--node", node]
        loaded = settings.load(NodeAgentSettings, argv, prog="t", env={}, fallback=_agent_fallback)
        assert loaded.gpu_mode == mode
    device.write_text("nodeconfig: [{name: n, operatingmode: time-slicing}]")
    with pytest.raises(SystemExit, match="operatingmode"):
        settings.load(
            NodeAgentSettings,
            ["--device-config", str(device)],
            prog="t",
            env={},
            fallback=_agent_fallback,
        )


def test_booleans_from_flags_and_variables() -> None:
    assert settings.load(NodeAgentSettings, ["--device-plugin"], prog="t", env={}).device_plugin
    assert not settings.load(
        NodeAgentSettings, ["--no-device-plugin"], prog="t", env={"HAMI_DEVICE_PLUGIN": "true"}
    ).device_plugin
    for raw, expected in (("true", True), ("1", True), ("false", False), ("0", False)):
        env = {"HAMI_REQUIRE_NVML": raw}
        assert settings.load(NodeAgentSettings, [], prog="t", env=env).require_nvml is expected


def test_an_empty_variable_unsets_an_optional_field() -> None:
    loaded = settings.load(AllocatorSettings, [], prog="t", env={"HAMI_NATS_CREDENTIALS": ""})
    assert loaded.nats_credentials is None


@pytest.mark.parametrize(
    ("parse", "argv", "named"),
    [
        (allocator_settings, ["--node-ttl", "-1"], "--node-ttl"),
        (allocator_settings, ["--node-ttl", "soon"], "--node-ttl"),
        (allocator_settings, ["--node-policy", "nearest"], "--node-policy"),
        (allocator_settings, ["--nats-replicas", "9"], "--nats-replicas"),
        (allocator_settings, ["--extender-port", "70000"], "--extender-port"),
        (nodeagent_settings, ["--split-count", "0"], "--split-count"),
        (nodeagent_settings, ["--memory-scaling", "0"], "--memory-scaling"),
        (telemetry_settings, ["--metrics-port", "-3"], "--metrics-port"),
        (webhook_settings, ["--tls-secret", "no-slash"], "--tls-secret"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_its_flag(
    parse: object, argv: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse(argv)  # type: ignore[operator]
    message = str(refused.value)
    assert named in message and "\n" not in message, message


def test_a_settings_file_is_versioned_and_strict(tmp_path: Path) -> None:
    cases = {
        "no version": "node_ttl_s: 3\n",
        "another version": "version: v9\nnode_ttl_s: 3\n",
        "unknown field": "version: v1\nnode_tll_s: 3\n",
        "not a mapping": "- 1\n",
    }
    for case, text in cases.items():
        path = tmp_path / "s.yaml"
        path.write_text(text)
        with pytest.raises(SystemExit) as refused:
            allocator_settings(["--settings-file", str(path)])
        assert "\n" not in str(refused.value), case
    with pytest.raises(SystemExit, match="No such file"):
        allocator_settings(["--settings-file", str(tmp_path / "absent.yaml")])


@pytest.mark.parametrize(
    "value",
    [
        AllocatorSettings(nats_url="nats://x:1", node_ttl_s=3.5, leader_ttl_s=3.0),
        NodeAgentSettings(node="n", split_count=3, simulate="2xH200", device_plugin=True),
        TelemetrySettings(metrics_port=0, nats_credentials="/c.json"),
    ],
)
def test_a_child_gets_its_settings_whole(tmp_path: Path, value: msgspec.Struct) -> None:
    """What the local supervisor writes is what the child loads (no flag re-typed by hand)."""
    path = settings.write_settings_file(tmp_path / "child.json", value)
    assert path.stat().st_mode & 0o777 == 0o600
    assert settings.load(type(value), ["--settings-file", str(path)], prog="t", env={}) == value


def test_the_help_is_the_fields_documentation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        allocator_settings(["--help"])
    shown = capsys.readouterr().out
    assert "--leader-ttl" in shown and "standby takes over" in shown and "HAMI_LEADER_TTL" in shown


def test_the_cli_reads_its_environment_through_the_loader() -> None:
    from shared.servicesettings import CliSettings

    env = {
        "HAMI_STATE_DIR": "/s",
        "HAMI_NATS_URL": "nats://x:1",
        "HAMI_NATS_CREDENTIALS": "/c.json",
        "HAMI_LIBVGPU": "",
        "XDG_STATE_HOME": "/x",
    }
    loaded = settings.load(CliSettings, [], prog="hami", env=env)
    assert (loaded.state_dir, loaded.nats_url, loaded.nats_credentials) == (
        "/s",
        "nats://x:1",
        "/c.json",
    )
    assert loaded.libvgpu == "" and loaded.xdg_state_home == "/x"  # empty: no library
    assert settings.load(CliSettings, [], prog="hami", env={}).libvgpu == "auto"


def test_nothing_but_the_loader_reads_the_environment() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readers = []
    for path in [*root.glob("services/**/*.py"), *root.glob("shared/**/*.py")]:
        text = path.read_text()
        if path.name == "settings.py" and path.parent.name == "shared":
            continue
        # Handing the environment on to a job (`hami run`) is not reading a setting.
        for match in re.finditer(r"os\.environ(?!\s*,)|os\.getenv|getenv\(", text):
            readers.append(f"{path.relative_to(root)}:{text[: match.start()].count(chr(10)) + 1}")
    assert not readers, readers
