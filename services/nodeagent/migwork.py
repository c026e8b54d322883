"""The MIG instances this agent made, for which container of which allocation: written to
disk (durably) before an instance is handed to a container and recorded on the pod, so a
restarted agent knows its own from the ones made by hand, and takes an instance down only
once its allocation is gone and no process runs on it.

An instance is *held* (never placed over, never taken down) unless this ledger names it and
its allocation is live; an unreadable ledger holds every instance and takes none down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pynvml

from services.nodeagent.hostfiles import write_atomically
from services.nodeagent.mig import MigDevices, MigInstance
from shared.errors import InvalidRequest, Unavailable
from shared.schemas.placement import DeviceGrant

log = logging.getLogger("hami.nodeagent.mig")
MIG_INSTANCES = "hami.io/mig-instances"
"""Pod annotation: the MIG instances its containers got (JSON list of MigEntry)."""


class MigEntry(msgspec.Struct, frozen=True, kw_only=True):
    gpu: str
    gpu_instance: int
    compute_instance: int
    uuid: str
    profile: str
    start: int
    slices: int
    allocation_id: str
    pod_uid: str
    container: str
    position: int
    """The grant's position among the container's grants."""


class MigLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.readable = True
        self._entries: dict[tuple[str, int], MigEntry] = {}
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        try:
            entries = msgspec.json.decode(raw, type=list[MigEntry])
        except msgspec.DecodeError as e:
            self.readable = False  # fail closed: nothing is ours, nothing is taken down
            log.error(
                "MIG ledger unreadable: every instance is held until it is fixed",
                extra={"path": str(path), "error": str(e)},
            )
            return
        self._entries = {(e.gpu, e.gpu_instance): e for e in entries}

    def entries(self) -> list[MigEntry]:
        return list(self._entries.values())

    def for_grant(self, allocation_id: str, container: str, position: int) -> MigEntry | None:
        return next(
            (
                e
                for e in self._entries.values()
                if (e.allocation_id, e.container, e.position)
                == (allocation_id, container, position)
            ),
            None,
        )

    def owner(self, gpu: str, gpu_instance: int) -> MigEntry | None:
        return self._entries.get((gpu, gpu_instance)) if self.readable else None

    def _save(self) -> None:
        text = msgspec.json.encode(
            sorted(self._entries.values(), key=lambda e: (e.gpu, e.gpu_instance))
        )
        write_atomically(self.path, text.decode(), 0o600, durable=True)

    def record(self, entry: MigEntry) -> None:
        if not self.readable:
            raise Unavailable(f"the MIG ledger {self.path} is unreadable; fix or remove it")
        self._entries[(entry.gpu, entry.gpu_instance)] = entry
        self._save()

    def forget(self, gpu: str, gpu_instance: int) -> None:
        if self._entries.pop((gpu, gpu_instance), None) is not None:
            self._save()

    def held(self, gpu: str, instances: list[MigInstance], live: Callable[[str], bool]) -> int:
        mask = 0
        for instance in instances:
            entry = self.owner(gpu, instance.gpu_instance)
            if entry is None or not live(entry.allocation_id):
                mask |= instance.mask
        return mask


class MigWork:
    """Making instances for containers and taking them down, on one node."""

    def __init__(
        self,
        mig: MigDevices,
        ledger: MigLedger,
        live: Callable[[str], bool],
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mig = mig
        self.ledger = ledger
        self.live = live
        self.grace_s = grace_s
        self._clock = clock
        self._gone_since: dict[tuple[str, int], float] = {}
        self._lock = asyncio.Lock()

    def held(self, gpu: str, instances: list[MigInstance]) -> int:
        return self.ledger.held(gpu, instances, self.live)

    async def instances_for(
        self, allocation_id: str, pod_uid: str, container: str, grants: tuple[DeviceGrant, ...]
    ) -> list[MigEntry]:
        """The container's instance per partition grant: the one made before (Allocate again
        after a kubelet restart), or a new one where the allocator placed it. Instances of
        ended allocations in the way are taken down first when idle; anything else in the way
        refuses the container (InvalidRequest, with what holds the slices)."""
        async with self._lock:
            made = []
            for position, grant in enumerate(grants):
                if grant.placement is None:
                    continue
                entry = self.ledger.for_grant(allocation_id, container, position)
                current = await asyncio.to_thread(self.mig.instances, grant.uuid)
                if entry is not None and any(
                    i.gpu_instance == entry.gpu_instance and i.uuid == entry.uuid for i in current
                ):
                    made.append(entry)
                    continue
                await self._clear_the_way(grant, current)
                instance = await asyncio.to_thread(
                    self.mig.create, grant.uuid, grant.profile, grant.placement
                )
                entry = MigEntry(
                    gpu=grant.uuid,
                    gpu_instance=instance.gpu_instance,
                    compute_instance=instance.compute_instances[0],
                    uuid=instance.uuid,
                    profile=grant.profile,
                    start=instance.start,
                    slices=instance.slices,
                    allocation_id=allocation_id,
                    pod_uid=pod_uid,
                    container=container,
                    position=position,
                )
                try:
                    self.ledger.record(entry)
                except (OSError, Unavailable):
                    await asyncio.to_thread(self.mig.destroy, grant.uuid, instance.gpu_instance)
                    raise
                made.append(entry)
            return made

    async def _clear_the_way(self, grant: DeviceGrant, current: list[MigInstance]) -> None:
        assert grant.placement is not None
        wanted = ((1 << grant.slices) - 1) << grant.placement
        for instance in current:
            if not instance.mask & wanted:
                continue
            entry = self.ledger.owner(grant.uuid, instance.gpu_instance)
            where = f"GPU {grant.uuid}: MIG instance {instance.gpu_instance} ({instance.profile})"
            if entry is None:
                raise InvalidRequest(f"{where} holds the slices; HAMi did not make it")
            if self.live(entry.allocation_id) or instance.in_use:
                state = "runs a process" if instance.in_use else "is still allocated"
                raise InvalidRequest(
                    f"{where} holds the slices; its allocation {entry.allocation_id} {state}"
                )
            if await asyncio.to_thread(self.mig.destroy, grant.uuid, instance.gpu_instance):
                self.ledger.forget(grant.uuid, instance.gpu_instance)

    async def reap(self) -> None:
        """Take down the instances whose allocation has been gone for the grace period (the
        allocations watch may still be catching up just after a start) and that run nothing."""
        async with self._lock:
            now = self._clock()
            for entry in self.ledger.entries():
                key = (entry.gpu, entry.gpu_instance)
                if self.live(entry.allocation_id):
                    self._gone_since.pop(key, None)
                    continue
                since = self._gone_since.setdefault(key, now)
                if now - since < self.grace_s:
                    continue
                try:
                    gone = await asyncio.to_thread(self.mig.destroy, entry.gpu, entry.gpu_instance)
                except (InvalidRequest, pynvml.NVMLError) as e:  # try again next time
                    log.warning(
                        "MIG instance not taken down", extra={"entry": entry.uuid, "error": str(e)}
                    )
                    continue
                if gone:
                    self.ledger.forget(entry.gpu, entry.gpu_instance)
                    self._gone_since.pop(key, None)
                    log.info(
                        "MIG instance of an ended allocation taken down",
                        extra={
                            "gpu": entry.gpu,
                            "gi": entry.gpu_instance,
                            "allocation": entry.allocation_id,
                        },
                    )


def with_entries(
    annotations: dict[str, str | None], current: str | None, made: list[MigEntry]
) -> dict[str, str | None]:
    """The pod's annotation patch with its MIG instances: the other containers' kept."""
    try:
        kept = msgspec.json.decode(current or "[]", type=list[MigEntry])
    except msgspec.DecodeError:
        kept = []
    mine = {(e.container, e.position) for e in made}
    entries = [e for e in kept if (e.container, e.position) not in mine] + made
    return {**annotations, MIG_INSTANCES: msgspec.json.encode(entries).decode()}
