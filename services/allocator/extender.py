"""kube-scheduler's extender API (v1 JSON: PascalCase keys) over HTTP: filter, prioritize, bind.

The same allocator core answers it as answers the NATS placement API. Bind reserves the
devices durably, writes HAMi's pod annotations (optimistic concurrency), creates the Binding,
and releases the reservation again if any step fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from services.allocator.core.fit import Reason
from services.allocator.core.placement import (
    FitMemo,
    SchedulingSettings,
    filter_best,
    filter_nodes,
    node_scores,
)
from services.allocator.core.podspec import device_annotations
from services.allocator.core.signals import Signals
from services.allocator.core.state import ClusterState
from services.allocator.metrics import AllocatorMetrics
from shared import tracing
from shared.devicekinds import DEFAULT_KINDS, KindRegistry
from shared.errormap import extender_status
from shared.errors import HamiError, InvalidRequest
from shared.kube.client import KubeClient
from shared.podspec import PodRequest, parse_pod
from shared.resources import (
    ASSIGNED_NODE,
    ASSIGNED_TIME,
    BIND_PHASE,
    BIND_TIME,
    ResourceNames,
)
from shared.schemas.placement import Holder, PlaceReply, PlaceRequest

log = logging.getLogger("hami.extender")
MAX_PRIORITY = 10
SEEN_PODS = 4096
"""Pods remembered between filter and bind; kube-scheduler binds within seconds."""
MAX_BODY = 16 * 1024 * 1024
"""kube-scheduler sends node names only (nodeCacheCapable): 5,000 names are ~150 KiB."""
_json = msgspec.json.Encoder()
Handler = Callable[[Mapping[str, Any]], Awaitable[Any] | Any]
"""One verb's handler: the decoded ExtenderArgs to the reply's JSON value."""


def _m(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pod_of(args: Mapping[str, Any]) -> Mapping[str, Any]:
    pod = args.get("Pod")
    if not isinstance(pod, Mapping):
        raise InvalidRequest("ExtenderArgs.Pod is missing")
    return pod


def _node_names(args: Mapping[str, Any]) -> list[str]:
    names = args.get("NodeNames")
    if isinstance(names, list):
        return [str(n) for n in names]
    nodes = args.get("Nodes")
    if isinstance(nodes, Mapping) and isinstance(nodes.get("items"), list):
        return [str(n.get("metadata", {}).get("name", "")) for n in nodes["items"]]
    raise InvalidRequest("ExtenderArgs needs NodeNames (nodeCacheCapable) or Nodes")


def naming_the_resource(reason: Reason, names: ResourceNames) -> str:
    """kube-scheduler's style (`Insufficient <resource>`), so a pending pod's FailedScheduling
    event says which of its requests did not fit."""
    for code, resource in (("memory", names.memory), ("cores", names.cores)):
        if reason.about(code):
            return f"Insufficient {resource}: {reason.text}"
    return f"Insufficient {names.count}: {reason.text}"


def _resources_of(request: PodRequest, kinds: KindRegistry) -> ResourceNames:
    kind = next((c.kind for c in request.containers if c.count), kinds.kinds[0].name)
    return kinds.named(kind).resources


def place_request_for(
    pod: Mapping[str, Any], request: PodRequest, nodes: tuple[str, ...] | None
) -> PlaceRequest:
    metadata = pod.get("metadata") or {}
    uid = str(metadata.get("uid") or "")
    if not uid:
        raise InvalidRequest("pod has no metadata.uid")
    return PlaceRequest(
        request_id=f"pod/{uid}",
        containers=request.containers,
        lease_ttl_s=None,
        holder=Holder(
            kind="pod",
            namespace=str(metadata.get("namespace", "")),
            pod=str(metadata.get("name", "")),
            pod_uid=uid,
        ),
        candidate_nodes=nodes,
        node_policy=request.node_policy,
        gpu_policy=request.gpu_policy,
        priority=request.priority,
        cpu_milli=request.cpu_milli,
        memory_mib=request.memory_mib,
    )


class Allocator(Protocol):
    """What the extender needs of the allocator (services/allocator/allocator.py): its
    state to read, and placement and release to call. The HTTP verbs map to these only."""

    @property
    def state(self) -> ClusterState: ...

    @property
    def signals(self) -> Signals: ...

    scheduling: SchedulingSettings
    fits: FitMemo

    async def place_request(self, request: PlaceRequest) -> PlaceReply: ...

    async def release_allocation(self, allocation_id: str, reason: str) -> bool: ...


class Extender:
    def __init__(
        self,
        allocator: Allocator,
        kube: KubeClient | None,
        clock: Callable[[], float] = time.time,
        kinds: KindRegistry = DEFAULT_KINDS,
        best_node_only: bool = False,
        metrics: AllocatorMetrics | None = None,
    ) -> None:
        self.allocator = allocator
        self.metrics = metrics if metrics is not None else AllocatorMetrics()
        """Each call's time by verb (and, through the allocator, its decisions)."""
        self.best_node_only = best_node_only
        """Filter answers the one node the policy prefers (HAMi's way): kube-scheduler then
        needs no prioritize call, one round trip less per pod."""
        self.kinds = kinds
        """The resource names pods are read by (the device configuration's)."""
        self.kube = kube
        self.clock = clock
        self.fits = allocator.fits  # one memo: bind's decision reuses filter's answers
        self._seen: dict[str, Mapping[str, Any]] = {}
        """Pods as filter last saw them, by uid, for bind (oldest dropped first)."""
        self.verbs: dict[str, Handler] = {
            "filter": self.filter,
            "prioritize": self.prioritize,
            "bind": self.bind,
        }
        """kube-scheduler's verbs (the URL paths) to their handlers."""

    def trace_parent(self, verb: Verb, args: Mapping[str, Any]) -> Context | None:
        """The context of the pod's admission span (shared/tracing.py), when tracing is on."""
        if not tracing.enabled():
            return None
        if verb == "bind":
            return tracing.of_pod(self._seen.get(str(args.get("PodUID", ""))))
        return tracing.of_pod(_m(args.get("Pod")))

    def _remember(self, pod: Mapping[str, Any]) -> None:
        uid = str(_m(pod.get("metadata")).get("uid") or "")
        if uid:
            self._seen[uid] = pod
            while len(self._seen) > SEEN_PODS:
                self._seen.pop(next(iter(self._seen)))

    def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        pod = _pod_of(args)
        names = _node_names(args)
        request = parse_pod(pod, self.kinds)
        if request.wants_devices:
            self._remember(pod)
        if not request.wants_devices:
            return {
                "NodeNames": names,
                "FailedNodes": {},
                "FailedAndUnresolvableNodes": {},
                "Error": "",
            }
        # Best node only: the node decide would pick (as cheap as a decision); else every
        # named node's verdict, for prioritize to rank.
        passed, failed, unresolvable = (filter_best if self.best_node_only else filter_nodes)(
            self.allocator.state,
            place_request_for(pod, request, None),
            self.allocator.scheduling,
            self.clock(),
            names,
            self.fits,
            signals=self.allocator.signals,
        )
        names_of = _resources_of(request, self.kinds)
        if tracing.enabled():
            current = trace.get_current_span()
            current.set_attribute("hami.nodes.considered", len(names))
            current.set_attribute("hami.nodes.passed", len(passed))
            if not passed:
                current.set_attribute(
                    "hami.reason",
                    "; ".join(
                        sorted({r.text for r in (*failed.values(), *unresolvable.values())})[:5]
                    ),
                )
        return {
            "NodeNames": passed,
            "FailedNodes": {n: naming_the_resource(r, names_of) for n, r in failed.items()},
            "FailedAndUnresolvableNodes": {
                n: naming_the_resource(r, names_of) for n, r in unresolvable.items()
            },
            "Error": "",
        }

    def prioritize(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        pod = _pod_of(args)
        names = _node_names(args)
        request = parse_pod(pod, self.kinds)
        if not request.wants_devices:
            return [{"Host": n, "Score": 0} for n in names]
        scores = node_scores(
            self.allocator.state,
            place_request_for(pod, request, tuple(names)),
            self.allocator.scheduling,
            self.clock(),
            self.fits,
            signals=self.allocator.signals,
        )
        low, high = min(scores.values(), default=0.0), max(scores.values(), default=0.0)
        spread = high - low
        return [
            {
                "Host": n,
                "Score": 0
                if n not in scores
                else round(MAX_PRIORITY * ((scores[n] - low) / spread if spread else 1.0)),
            }
            for n in names
        ]

    async def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        namespace, name = str(args.get("PodNamespace", "")), str(args.get("PodName", ""))
        uid, node = str(args.get("PodUID", "")), str(args.get("Node", ""))
        if not (namespace and name and uid and node):
            raise InvalidRequest("ExtenderBindingArgs needs PodName, PodNamespace, PodUID, Node")
        if self.kube is None:
            raise InvalidRequest("this allocator has no Kubernetes client; it cannot bind")
        started = time.perf_counter()
        pod = self._seen.pop(uid, None)  # as filter saw it: one API call saved per bind
        if pod is None:
            pod = await self.kube.get_pod(namespace, name)
        if pod["metadata"].get("uid") != uid:
            return {"Error": f"pod {namespace}/{name} was recreated (uid changed)"}
        reply = await self.allocator.place_request(
            place_request_for(pod, parse_pod(pod, self.kinds), (node,))
        )
        if reply.outcome != "placed" or reply.allocation is None:
            return {"Error": f"no fit on {node}: {reply.reason}"}
        record = reply.allocation
        if record.node != node:  # a bind retried for another node: the pod holds devices there
            return {"Error": f"pod {namespace}/{name} already holds devices on {record.node}"}
        now = str(int(self.clock()))
        annotations = {
            ASSIGNED_NODE: node,
            ASSIGNED_TIME: now,
            **device_annotations(record.containers, self.kinds),
            BIND_PHASE: "allocating",
            BIND_TIME: now,
        }
        try:
            # One call: the API server sets the Binding's annotations on the pod as it binds it
            # (atomically, and only if this pod, by uid, is not bound yet).
            await self.kube.bind_pod(namespace, name, uid, node, annotations)
        except HamiError as e:
            await self.allocator.release_allocation(record.allocation_id, f"bind failed: {e}")
            log.warning(
                "bind failed, reservation released",
                extra={"pod": f"{namespace}/{name}", "node": node, "error": str(e)},
            )
            return {"Error": f"bind of {namespace}/{name} to {node} failed: {e}"}
        log.info(
            "bound",
            extra={
                "pod": f"{namespace}/{name}",
                "node": node,
                "allocation": record.allocation_id,
                "bind_ms": round((time.perf_counter() - started) * 1e3, 2),
            },
        )
        return {"Error": ""}


def _error(status: int, reason: str) -> tuple[int, bytes]:
    return status, _json.encode({"Error": reason})


Verb = str
"""filter, prioritize or bind."""


async def answer(extender: Extender, verb: Verb, body: bytes) -> tuple[int, bytes]:
    """One extender call, as (HTTP status, JSON body): the same answer whether kube-scheduler
    called this allocator or a standby forwarded the call (services/allocator/extenderhttp.py)."""
    handler = extender.verbs.get(verb)
    if handler is None:
        return _error(404, f"no extender verb {verb!r}")
    started = time.perf_counter()
    try:
        return await _traced(extender, handler, verb, body)
    finally:
        extender.metrics.extender.labels(verb).observe(time.perf_counter() - started)


async def _traced(
    extender: Extender, handler: Handler, verb: Verb, body: bytes
) -> tuple[int, bytes]:
    try:
        args = msgspec.json.decode(body)
        if not isinstance(args, Mapping):
            raise InvalidRequest("expected a JSON object")
    except RecursionError:
        return _error(400, "body is nested too deeply")
    except (msgspec.DecodeError, InvalidRequest) as e:
        return _error(400, str(e))
    # kube-scheduler sends no trace context: the pod's admission span parents the call.
    with tracing.span(
        f"POST /{verb}",
        kind=SpanKind.SERVER,
        parent=extender.trace_parent(verb, args),
        attributes={"http.request.method": "POST", "http.route": f"/{verb}"},
    ) as span:
        status, reply = await _answer(handler, verb, args)
        span.set_attribute("http.response.status_code", status)
        if status != 200:
            tracing.failed(span, reply.decode(errors="replace"))
        return status, reply


async def _answer(
    handler: Callable[[Mapping[str, Any]], Awaitable[Any] | Any],
    verb: Verb,
    args: Mapping[str, Any],
) -> tuple[int, bytes]:
    try:
        result = handler(args)
        if hasattr(result, "__await__"):
            result = await result
    except RecursionError:
        return _error(400, "body is nested too deeply")
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        # A shape the parsers did not expect: refuse this call, keep serving the next.
        log.exception("extender call not understood", extra={"verb": verb})
        return _error(400, f"request not understood: {type(e).__name__}")
    except HamiError as e:  # the protocol's own mapping (shared/errormap.py)
        return _error(extender_status(e), str(e))
    return 200, _json.encode(result)
