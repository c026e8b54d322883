"""A thin cluster client over kubernetes-asyncio: what the services need, with the pitfalls
handled once (optimistic annotation patches, bindings, resumable watches, leases)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from shared.errors import Conflict, NotFound, Unavailable

log = logging.getLogger("hami.kube")
Obj = dict[str, Any]


class _RawWatch(watch.Watch):  # type: ignore[misc]
    """A watch that leaves each object as the JSON it came as: the generated client would
    build a model of every pod of the cluster (dates parsed field by field), which cost the
    allocator a third of its CPU during a burst (benchmarks/scheduling_throughput.py)."""

    def get_return_type(self, func: object) -> str:
        return ""  # no model: unmarshal_event keeps the raw object


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str
    """ADDED, MODIFIED or DELETED."""
    object: Obj


def _raise_for(e: ApiException, what: str) -> None:
    if e.status == 404:
        raise NotFound(f"{what} not found") from e
    if e.status == 409:
        raise Conflict(f"{what}: conflict ({e.reason})") from e
    if e.status is not None and (e.status >= 500 or e.status == 429):
        raise Unavailable(f"{what}: API server answered {e.status}") from e


SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def in_cluster() -> bool:
    """Inside a pod with a service account (one stat, at start)."""
    return SERVICE_ACCOUNT_TOKEN.is_file()


class KubeClient:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.resource = client.ResourceV1Api(api)
        """resource.k8s.io/v1: DRA's ResourceSlices, DeviceClasses and ResourceClaims."""

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None) -> KubeClient:
        return cls(await config.new_client_from_config(config_file=path))

    @classmethod
    async def from_config(cls, kubeconfig: str | None) -> KubeClient:
        """The kubeconfig given; else the pod's service account inside a cluster (the kubelet
        mounts its token; the library reads the API server's address itself); else the
        default kubeconfig."""
        if kubeconfig is None and in_cluster():
            config.load_incluster_config()
            return cls(client.ApiClient())
        return await cls.from_kubeconfig(kubeconfig)

    async def close(self) -> None:
        await self.api.close()
        # aiohttp closes TLS connections asynchronously (close_notify takes a few loop turns);
        # its docs ask for this grace, or a loop that ends at once leaks their sockets.
        await asyncio.sleep(0.25)

    async def _raw(self, call: Awaitable[Any]) -> Obj:
        """The JSON body of a call made with ``_preload_content=False``. That mode skips the
        generated client's status check, so do it here."""
        response = await call
        body = await response.read()
        if response.status >= 400:
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body[:200].decode(errors="replace")
            raise ApiException(status=response.status, reason=message)
        result: Obj = json.loads(body)
        return result

    async def _call(self, call: Awaitable[Any], what: str) -> Obj:
        """One call's JSON, with the API's errors mapped to ours (NotFound, Conflict, retry)."""
        try:
            return await self._raw(call)
        except ApiException as e:
            _raise_for(e, what)
            raise

    async def get_resource_claim(self, namespace: str, name: str) -> Obj:
        return await self._call(
            self.resource.read_namespaced_resource_claim(name, namespace, _preload_content=False),
            f"resource claim {namespace}/{name}",
        )

    async def get_resource_slice(self, name: str) -> Obj:
        return await self._call(
            self.resource.read_resource_slice(name, _preload_content=False),
            f"resource slice {name}",
        )

    async def put_resource_slice(self, body: Obj, resource_version: str | None) -> Obj:
        """Create the slice, or replace the one at ``resource_version`` (Conflict if it moved)."""
        name = body["metadata"]["name"]
        if resource_version is None:
            call = self.resource.create_resource_slice(body, _preload_content=False)
        else:
            body = {**body, "metadata": {**body["metadata"], "resourceVersion": resource_version}}
            call = self.resource.replace_resource_slice(name, body, _preload_content=False)
        return await self._call(call, f"resource slice {name}")

    async def delete_resource_slice(self, name: str) -> None:
        await self._call(
            self.resource.delete_resource_slice(name, _preload_content=False),
            f"resource slice {name}",
        )

    async def ensure_device_class(self, body: Obj) -> None:
        """Create the DeviceClass unless one of that name exists (it is the operator's to
        change: an existing one is left as it is)."""
        name = body["metadata"]["name"]
        try:
            await self._call(self.resource.read_device_class(name, _preload_content=False), name)
        except NotFound:
            try:
                await self._call(
                    self.resource.create_device_class(body, _preload_content=False),
                    f"device class {name}",
                )
            except Conflict:
                return  # created meanwhile

    async def ensure_claim_template(self, body: Obj) -> None:
        """Create the ResourceClaimTemplate unless it exists (same name: same shape)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._call(
                self.resource.create_namespaced_resource_claim_template(
                    namespace, body, _preload_content=False
                ),
                f"resource claim template {namespace}/{name}",
            )
        except Conflict:
            return  # there already

    async def get_pod(self, namespace: str, name: str) -> Obj:
        try:
            return await self._raw(
                self.core.read_namespaced_pod(name, namespace, _preload_content=False)
            )
        except ApiException as e:
            _raise_for(e, f"pod {namespace}/{name}")
            raise

    async def get_node(self, name: str) -> Obj:
        try:
            return await self._raw(self.core.read_node(name, _preload_content=False))
        except ApiException as e:
            _raise_for(e, f"node {name}")
            raise

    async def list_pods(
        self, *, field_selector: str = "", label_selector: str = ""
    ) -> tuple[list[Obj], str]:
        body = await self._raw(
            self.core.list_pod_for_all_namespaces(
                field_selector=field_selector, label_selector=label_selector, _preload_content=False
            )
        )
        return body["items"], body["metadata"]["resourceVersion"]

    async def list_nodes(self, *, label_selector: str = "") -> tuple[list[Obj], str]:
        body = await self._raw(
            self.core.list_node(label_selector=label_selector, _preload_content=False)
        )
        return body["items"], body["metadata"]["resourceVersion"]

    async def patch_pod_annotations(
        self,
        namespace: str,
        name: str,
        change: Callable[[Mapping[str, str]], Mapping[str, str | None]],
        *,
        attempts: int = 20,
    ) -> Obj:
        """Read the pod, compute the annotation changes from its current annotations (None
        deletes one), and patch with its resourceVersion as a precondition. On 409 someone else
        won: read again and recompute, so no concurrent change is lost."""
        for attempt in range(attempts):
            pod = await self.get_pod(namespace, name)
            metadata = pod["metadata"]
            changes = dict(change(metadata.get("annotations") or {}))
            body = {
                "metadata": {"annotations": changes, "resourceVersion": metadata["resourceVersion"]}
            }
            try:
                return await self._raw(
                    self.core.patch_namespaced_pod(
                        name,
                        namespace,
                        body,
                        _content_type="application/merge-patch+json",
                        _preload_content=False,
                    )
                )
            except ApiException as e:
                if e.status == 409 and attempt + 1 < attempts:
                    # Jittered backoff, so that many writers of one pod do not collide forever.
                    await asyncio.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
                    log.debug(
                        "annotation patch conflict, retrying",
                        extra={"pod": f"{namespace}/{name}", "attempt": attempt},
                    )
                    continue
                _raise_for(e, f"pod {namespace}/{name}")
                raise
        raise Conflict(f"pod {namespace}/{name}: annotations kept changing; gave up")

    async def annotate_node(self, name: str, annotations: Mapping[str, str]) -> None:
        """Set annotations on a node (a merge patch: last writer wins, nothing else changes)."""
        try:
            await self._raw(
                self.core.patch_node(
                    name,
                    {"metadata": {"annotations": dict(annotations)}},
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                )
            )
        except ApiException as e:
            _raise_for(e, f"node {name}")
            raise

    async def bind_pod(
        self,
        namespace: str,
        name: str,
        uid: str,
        node: str,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Bind the pod (only that uid, only if unbound); ``annotations`` are set on the pod in
        the same write (the API server copies a Binding's annotations onto the pod)."""
        # The server answers with a Status, not a Binding: read the raw body, or the generated
        # client fails after the bind succeeded.
        binding = client.V1Binding(
            metadata=client.V1ObjectMeta(
                name=name, uid=uid, annotations=dict(annotations) if annotations else None
            ),
            target=client.V1ObjectReference(kind="Node", api_version="v1", name=node),
        )
        try:
            await self._raw(
                self.core.create_namespaced_pod_binding(
                    name, namespace, binding, _preload_content=False
                )
            )
        except ApiException as e:
            _raise_for(e, f"binding pod {namespace}/{name} to {node}")
            raise

    async def get_secret(self, namespace: str, name: str) -> Obj:
        try:
            return await self._raw(
                self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            )
        except ApiException as e:
            _raise_for(e, f"secret {namespace}/{name}")
            raise

    async def create_secret(self, namespace: str, body: Obj) -> Obj:
        """Conflict when it exists already (another replica created it first)."""
        try:
            return await self._raw(
                self.core.create_namespaced_secret(namespace, body, _preload_content=False)
            )
        except ApiException as e:
            _raise_for(e, f"secret {namespace}/{body['metadata']['name']}")
            raise

    async def set_webhook_ca_bundle(self, kind: str, name: str, ca_bundle: str) -> bool:
        """Put ``ca_bundle`` (base64 PEM) into every webhook of the Mutating- or
        ValidatingWebhookConfiguration ``name``; False when it was there already."""
        api = client.AdmissionregistrationV1Api(self.api)
        read, patch = {
            "mutating": (
                api.read_mutating_webhook_configuration,
                api.patch_mutating_webhook_configuration,
            ),
            "validating": (
                api.read_validating_webhook_configuration,
                api.patch_validating_webhook_configuration,
            ),
        }[kind]
        for _ in range(5):  # a concurrent edit fails the patch's test: read again
            try:
                current = await self._raw(read(name, _preload_content=False))
                webhooks = current.get("webhooks") or []
                if all(w.get("clientConfig", {}).get("caBundle") == ca_bundle for w in webhooks):
                    return False
                # A JSON patch guarded by the version it read: nothing edited since is lost.
                version = current["metadata"]["resourceVersion"]
                ops: list[Obj] = [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": version}
                ]
                ops += [
                    {
                        "op": "add",
                        "path": f"/webhooks/{i}/clientConfig/caBundle",
                        "value": ca_bundle,
                    }
                    for i in range(len(webhooks))
                ]
                await self._raw(
                    patch(
                        name,
                        ops,
                        _content_type="application/json-patch+json",
                        _preload_content=False,
                    )
                )
                return True
            except ApiException as e:
                if e.status in (409, 422):
                    continue
                _raise_for(e, f"{kind} webhook configuration {name}")
                raise
        raise Conflict(f"{kind} webhook configuration {name} kept changing; gave up")

    async def watch(
        self,
        kind: str,
        stop: asyncio.Event,
        *,
        field_selector: str = "",
        label_selector: str = "",
        server_timeout_s: int = 300,
    ) -> AsyncIterator[WatchEvent]:
        """List, then watch from that resourceVersion; when the server ends a watch, resume
        from the last version seen. When that version is too old (410), list again and replay
        every object as ADDED: consumers must be idempotent."""
        lister = {"pods": self.core.list_pod_for_all_namespaces, "nodes": self.core.list_node}[kind]
        selectors = {"field_selector": field_selector} if kind == "pods" else {}
        selectors["label_selector"] = label_selector
        version: str | None = None
        while not stop.is_set():
            if version is None:
                body = await self._raw(lister(**selectors, _preload_content=False))
                for item in body["items"]:
                    yield WatchEvent("ADDED", item)
                version = body["metadata"]["resourceVersion"]
            try:
                async with _RawWatch().stream(
                    lister,
                    resource_version=version,
                    timeout_seconds=server_timeout_s,
                    allow_watch_bookmarks=True,
                    **selectors,
                ) as stream:
                    async for event in stream:
                        raw = event["raw_object"]
                        version = raw["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            yield WatchEvent(event["type"], raw)
                        if stop.is_set():
                            return
            except ApiException as e:
                if e.status == 410:
                    log.info("watch version expired, relisting", extra={"kind": kind})
                    version = None
                    continue
                raise

    async def lead(
        self,
        name: str,
        namespace: str,
        identity: str,
        work: Callable[[], Awaitable[None]],
        *,
        lease_s: float = 15.0,
    ) -> None:
        """Run ``work`` while holding the coordination.k8s.io Lease ``namespace/name``; it is
        cancelled when the lease is lost. Returns when leadership ends."""
        lock = LeaseLock(name, namespace, identity, self.api)

        async def started() -> None:
            await work()

        async def stopped() -> None:
            log.info("lease lost", extra={"lease": f"{namespace}/{name}", "identity": identity})

        cfg = electionconfig.Config(
            lock,
            lease_duration=lease_s,
            renew_deadline=lease_s * 2 / 3,
            retry_period=max(1.0, lease_s / 6),
            onstarted_leading=started,
            onstopped_leading=stopped,
        )
        await leaderelection.LeaderElection(cfg).run()
