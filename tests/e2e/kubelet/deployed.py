"""HAMi installed as a user installs it: `kubectl apply --server-side -k` of the e2e overlay
(deploy/kustomize/overlays/e2e) on a real node (kubelet, containerd) with a control plane
that runs kube-controller-manager, so the Deployments, the DaemonSet, the StatefulSet and
the Job make their pods. The images are built without a registry
(tests/e2e/kubelet/hami_image.py) and imported into containerd.

The e2e overlay is applied through a small overlay of its own written next to a copy of
deploy/kustomize: the image tags (keys of their inputs), the API server's loopback address
(no kube-proxy serves the `kubernetes` Service here) and the kubelet's pod-resources path."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.e2e.controlplane.cluster import ControlPlane, start_control_plane
from tests.e2e.kubelet.hami_image import build_hami_image, build_scheduler_image
from tests.e2e.kubelet.node import GATEWAY, KubeletNode, unusable_reason
from tests.e2e.kubelet.stack import Unusable

REPO = Path(__file__).resolve().parents[3]
KUSTOMIZE = REPO / "deploy" / "kustomize"
NAMESPACE = "hami-system"
E2E_HOST_DIR = Path("/var/lib/hami-e2e")
"""The e2e overlay's host paths (NATS data, the library): removed at teardown."""
WORKLOADS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}


@dataclass
class Deployed:
    plane: ControlPlane
    node: KubeletNode
    run: Path
    manifests: list[dict[str, Any]]

    def kubectl(self, *args: str, stdin: str | None = None, timeout_s: float = 120) -> str:
        result = subprocess.run(
            [str(self.plane.binaries / "kubectl"), f"--kubeconfig={self.plane.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr[-3000:]}")
        return result.stdout

    def pods(self, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return self.plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]

    @property
    def overlay(self) -> Path:
        """The overlay the tests applied (over overlays/e2e)."""
        return self.run / "kustomize" / "overlays" / "test"

    def apply_device_config(self, text: str) -> Path:
        """An overlay over the applied one whose device configuration is ``text``."""
        changed = self.run / "kustomize" / "overlays" / f"device-config-{abs(hash(text)):x}"
        changed.mkdir(exist_ok=True)
        (changed / "device-config.yaml").write_text(text)
        (changed / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": ["../test"],
                    "configMapGenerator": [
                        {
                            "name": "hami-device-config",
                            "namespace": NAMESPACE,
                            "behavior": "replace",
                            "files": ["device-config.yaml"],
                        }
                    ],
                }
            )
        )
        self.kubectl("apply", "--server-side", "-k", str(changed))
        return changed

    def uids(self, prefix: str) -> set[str]:
        return {
            p["metadata"]["uid"] for p in self.pods() if p["metadata"]["name"].startswith(prefix)
        }

    def wait_replaced(self, prefix: str, old: set[str], timeout_s: float = 180) -> None:
        """A pod named ``prefix...`` that is not one of ``old`` runs with every container
        ready, and none of ``old`` is left."""
        deadline = time.monotonic() + timeout_s
        while True:
            pods = [p for p in self.pods() if p["metadata"]["name"].startswith(prefix)]
            fresh = [
                p
                for p in pods
                if p["metadata"]["uid"] not in old
                and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
                and p["status"].get("containerStatuses")
            ]
            if fresh and not any(p["metadata"]["uid"] in old for p in pods):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{prefix}* not replaced in {timeout_s:.0f}s\n{self.describe()}"
                )
            time.sleep(0.5)

    def wait_rolled_out(self, timeout_s: float = 240) -> None:
        """Every workload has all its pods ready and up to date, and the Job has completed."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = self._not_rolled_out()
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not rolled out in {timeout_s:.0f}s: {pending}\n{self.describe()}"
                )
            time.sleep(1)

    def _not_rolled_out(self) -> list[str]:
        pending = []
        for doc in self.manifests:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind in WORKLOADS:
                path = f"/apis/apps/v1/namespaces/{NAMESPACE}/{WORKLOADS[kind]}/{name}"
                status = self.plane.request("GET", path).get("status", {})
                if kind == "DaemonSet":
                    want = status.get("desiredNumberScheduled", 0)
                    ready, updated = (
                        status.get("numberReady", 0),
                        status.get("updatedNumberScheduled", 0),
                    )
                else:
                    want = doc["spec"].get("replicas", 1)
                    ready, updated = (
                        status.get("readyReplicas", 0),
                        status.get("updatedReplicas", 0),
                    )
                if want == 0 or ready < want or updated < want:
                    pending.append(f"{kind}/{name} ready {ready}/{want}")
            elif kind == "Job":
                path = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}"
                if not self.plane.request("GET", path).get("status", {}).get("succeeded"):
                    pending.append(f"Job/{name}")
        return pending

    def describe(self) -> str:
        """Each HAMi pod's phase and container states, and its log tail (for a failure)."""
        lines = []
        for pod in self.pods():
            name = pod["metadata"]["name"]
            states = [
                (c["name"], list(c.get("state", {}))[:1], c.get("restartCount"))
                for c in pod["status"].get("containerStatuses", [])
            ]
            lines.append(f"{name} {pod['status'].get('phase')} {states}")
            for container in pod["spec"]["containers"]:
                try:
                    log = self.plane.raw(
                        "GET",
                        f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log"
                        f"?container={container['name']}&tailLines=15",
                    ).decode(errors="replace")
                except (OSError, urllib.error.URLError) as e:
                    log = repr(e)
                lines.append(f"--- {name}/{container['name']}:\n{log}")
        return "\n".join(lines)


def _env_patches(manifests: list[dict[str, Any]], api_url: str) -> list[dict[str, Any]]:
    """Every HAMi container reaches the API server: on loopback from the host's network, at
    the host's bridge address from the pods' bridge."""
    port = str(urlsplit(api_url).port)
    patches = []
    for doc in manifests:
        if doc["kind"] not in (*WORKLOADS, "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        host = "127.0.0.1" if spec.get("hostNetwork") else GATEWAY
        env = [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        ]
        ops = []
        for group in ("initContainers", "containers"):
            for i, container in enumerate(spec.get(group, [])):
                if "env" in container:
                    ops += [
                        {"op": "add", "path": f"/spec/template/spec/{group}/{i}/env/-", "value": e}
                        for e in env
                    ]
                else:
                    ops.append(
                        {"op": "add", "path": f"/spec/template/spec/{group}/{i}/env", "value": env}
                    )
        patches.append(
            {
                "target": {"kind": doc["kind"], "name": doc["metadata"]["name"]},
                "patch": json.dumps(ops),
            }
        )
    return patches


def write_test_overlay(
    directory: Path, kubectl: Path, api_url: str, tags: dict[str, str], pod_resources: Path
) -> list[dict[str, Any]]:
    """A copy of deploy/kustomize with an overlay `test` on top of `e2e`; returns what the
    `e2e` overlay builds to (before the test's own patches)."""
    shutil.copytree(KUSTOMIZE, directory)
    built = subprocess.run(
        [str(kubectl), "kustomize", str(directory / "overlays" / "e2e")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    manifests = [d for d in yaml.safe_load_all(built) if d]
    patches = _env_patches(manifests, api_url)
    patches.append(
        {
            "target": {"kind": "DaemonSet", "name": "hami-nodeagent"},
            "patch": json.dumps(
                [
                    {
                        "op": "replace",
                        "path": "/spec/template/spec/volumes/1/hostPath/path",
                        "value": str(pod_resources.parent),
                    }
                ]
            ),
        }
    )
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../e2e"],
        "images": [{"name": name, "newTag": tag} for name, tag in tags.items()],
        "patches": patches,
    }
    (directory / "overlays" / "test").mkdir()
    (directory / "overlays" / "test" / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return manifests


def _wait(what: str, probe, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not in {timeout_s:.0f}s")
        time.sleep(0.5)


@contextmanager
def hami_deployed(run: Path) -> Iterator[Deployed]:
    reason = unusable_reason()
    if reason is not None:
        raise Unusable(reason)
    started = time.monotonic()
    hami = build_hami_image()
    plane = start_control_plane(run / "cp", controllers=True, also_serve_on=(GATEWAY,))
    scheduler = build_scheduler_image(plane.binaries)
    node = KubeletNode(run, plane)
    deployed = None
    try:
        node.start()
        for image in (hami, scheduler):
            node.import_image(image.archive)
        plane.request(
            "PATCH",
            f"/api/v1/nodes/{node.name}",
            {"metadata": {"labels": {"gpu": "on"}}},
            content_type="application/merge-patch+json",
        )
        images = {n.rsplit(":", 1)[0]: n.rsplit(":", 1)[1] for n in (hami.name, scheduler.name)}
        manifests = write_test_overlay(
            run / "kustomize",
            plane.binaries / "kubectl",
            plane.api_url,
            images,
            node.pod_resources_socket,
        )
        deployed = Deployed(plane, node, run, manifests)
        deployed.kubectl(
            "apply", "--server-side", "-k", str(run / "kustomize" / "overlays" / "test")
        )
        deployed.wait_rolled_out()
        _wait(
            "the default service account",
            lambda: any(
                sa["metadata"]["name"] == "default"
                for sa in plane.request("GET", "/api/v1/namespaces/default/serviceaccounts")[
                    "items"
                ]
            ),
            60,
        )
        print(f"\nHAMi deployed in {time.monotonic() - started:.1f}s; logs in {run}")
        yield deployed
    finally:
        # Controllers first, or they recreate the pods being deleted.
        controllers = plane.processes.pop("kube-controller-manager", None)
        if controllers is not None:
            controllers.terminate()
            controllers.wait(15)
        node.delete_pods(namespaces=("default", NAMESPACE))
        node.stop()
        plane.stop()
        shutil.rmtree(E2E_HOST_DIR, ignore_errors=True)
