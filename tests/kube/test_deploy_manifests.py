"""deploy/kustomize as `kubectl` builds it (the kubectl the control-plane build makes): every
overlay builds and passes a server-side dry-run apply against the real API server; the
components build on top; and every container's command line is one its service accepts,
with the ConfigMaps it mounts (the device configuration included) and the environment it gets.
A manifest that names a flag a service does not know, or a device configuration a service
refuses, fails here rather than in a crash-looping pod."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.controlplane.cluster import ControlPlane, build_binaries

KUSTOMIZE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize"
OVERLAYS = sorted(p.name for p in (KUSTOMIZE / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (KUSTOMIZE / "components").iterdir() if p.is_dir())
PARSERS: dict[str, str] = {
    "services.allocator": "services.allocator.settings:parse_settings",
    "services.nodeagent": "services.nodeagent.settings:parse_settings",
    "services.telemetry": "services.telemetry.settings:parse_settings",
    "services.webhook": "services.webhook.settings:parse_settings",
    "shared.natssecrets": "shared.natssecrets:parse_settings",
}
"""`python -m <module>` in a manifest -> the function that parses that module's flags."""
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def kubectl() -> Path:
    return build_binaries() / "kubectl"


def build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {overlay: build(KUSTOMIZE / "overlays" / overlay) for overlay in OVERLAYS}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            spec = doc["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield doc, container


def test_the_overlays_are_the_documented_ones() -> None:
    assert OVERLAYS == ["dev", "dra", "e2e", "production"]
    assert COMPONENTS == ["cert-manager", "dra", "monitoring"]


def test_every_component_builds_on_the_production_overlay(tmp_path: Path) -> None:
    copy = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE, copy)
    combined = copy / "overlays" / "combined"
    combined.mkdir()
    (combined / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../production"],
                "components": [f"../../components/{c}" for c in COMPONENTS],
            }
        )
    )
    docs = build(combined)
    kinds = {d["kind"] for d in docs}
    assert {"Certificate", "Issuer", "ServiceMonitor", "PodMonitor", "DeviceClass"} <= kinds
    agent = next(d for d in docs if d["kind"] == "DaemonSet")
    assert "--dra" in agent["spec"]["template"]["spec"]["containers"][0]["args"]
    webhook = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hami-webhook"
    )
    args = webhook["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--cert-file=/tls/tls.crt" in args and not any(
        a.startswith("--tls-secret") for a in args
    )
    check_command_lines(docs, tmp_path / "files")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_passes_a_server_side_dry_run(
    control_plane: ControlPlane, built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hami-system"}}
    try:
        control_plane.request("POST", "/api/v1/namespaces", namespace)
    except Exception as e:  # created by an earlier overlay's run
        assert "409" in str(e), e
    result = subprocess.run(
        [
            str(kubectl()),
            f"--kubeconfig={control_plane.kubeconfig}",
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=yaml.safe_dump_all(built[overlay]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("serverside-applied (server dry run)") == len(built[overlay])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_command_line_is_accepted_by_its_service(
    built: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path
) -> None:
    check_command_lines(built[overlay], tmp_path)


def check_command_lines(docs: list[dict[str, Any]], files: Path) -> None:
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    checked = 0
    for workload, container in containers(docs):
        command = container.get("command", [])
        if command[:2] != ["python", "-m"]:
            continue
        module = command[2]
        assert module in PARSERS, f"{workload['metadata']['name']}: no parser known for {module}"
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        args = [*command[3:], *container.get("args", [])]
        root = files / workload["metadata"]["name"] / container["name"]
        for mount in container.get("volumeMounts", []):
            source = volumes[mount["name"]].get("configMap")
            if source is None:
                continue
            # The ConfigMap's files where the container would see them, under a test root.
            target = root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for key, text in config_maps[source["name"]].items():
                (target / key).write_text(text)
            args = [a.replace(mount["mountPath"], str(target)) for a in args]
        env = {
            k: v
            for ref in container.get("envFrom", [])
            for k, v in config_maps[ref["configMapRef"]["name"]].items()
        }
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        parse = _parser(module)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            parse(args)
        except SystemExit as e:
            raise AssertionError(
                f"{workload['metadata']['name']}/{container['name']}: {module} refuses {args}: {e}"
            ) from None
        finally:
            os.environ.clear()
            os.environ.update(saved)
        checked += 1
    assert checked >= 5  # allocator, node agent, telemetry, webhook, credentials


def _parser(module: str) -> Callable[[list[str]], object]:
    path, function = PARSERS[module].split(":")
    return getattr(importlib.import_module(path), function)  # type: ignore[no-any-return]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_scheduler_calls_the_extender_where_the_allocator_serves_it(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = built[overlay]
    config = next(d for d in docs if d["metadata"]["name"].startswith("hami-scheduler-config"))
    extender = yaml.safe_load(config["data"]["config.yaml"])["extenders"][0]
    allocator = next(c for _, c in containers(docs) if c["name"] == "allocator")
    flags = dict(a.removeprefix("--").split("=", 1) for a in allocator["args"] if "=" in a)
    url = urlsplit(extender["urlPrefix"])
    assert (url.hostname, url.port) == (flags["extender-host"], int(flags["extender-port"]))
    assert url.hostname == "127.0.0.1"  # loopback only: no TLS needed, nothing else reaches it


def test_a_bad_device_configuration_stops_every_service_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "device-config.yaml"
    bad.write_text("nvidia:\n  deviceSplitCount: -1\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("nvidia:\n  deviceSplitCuont: 4\n")
    for module in ("services.allocator", "services.nodeagent", "services.webhook"):
        for path, key in ((bad, "deviceSplitCount"), (unknown, "deviceSplitCuont")):
            with pytest.raises(SystemExit) as refused:
                _parser(module)([f"--device-config={path}"])
            message = str(refused.value)
            assert key in message and "\n" not in message, message
