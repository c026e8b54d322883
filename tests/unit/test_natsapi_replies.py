"""A reply the NATS server would refuse (past its max_payload) is answered with an error that
says so and what to do, instead of the asker seeing the server's bare MaxPayloadError."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.allocator.natsapi import endpoint
from shared.schemas.inventory import DeviceInfo, NodeInventory
from shared.schemas.placement import STATUS, StatusReply, StatusRequest


@dataclass
class Asked:
    """What a micro Request is to the handler: the data in, one answer out."""

    data: bytes
    subject: str = STATUS.subject
    headers: dict[str, str] | None = None
    answers: list[tuple[str, object]] = field(default_factory=list)

    async def respond(self, data: bytes) -> None:
        self.answers.append(("reply", data))

    async def respond_error(self, code: str, description: str) -> None:
        self.answers.append((code, description))


def big_status(nodes: int) -> StatusReply:
    devices = tuple(
        DeviceInfo(uuid=f"GPU-{d}", index=d, model="H200", memory_mib=1, physical_memory_mib=1)
        for d in range(8)
    )
    inventory = tuple(
        NodeInventory(node=f"n{i}", agent_id="a", devices=devices) for i in range(nodes)
    )
    return StatusReply(nodes=inventory, devices=(), allocations=())


async def test_a_reply_past_max_payload_is_an_error_that_says_so() -> None:
    async def status(_: StatusRequest) -> StatusReply:
        return big_status(50)

    asked = Asked(STATUS.requests.encode(StatusRequest()))
    await endpoint(STATUS, status, lambda: 4096)(asked)  # type: ignore[arg-type]
    [(code, message)] = asked.answers
    assert code == "invalid" and "max_payload of 4,096" in str(message), message
    within = Asked(STATUS.requests.encode(StatusRequest()))
    await endpoint(STATUS, status, lambda: 1 << 24)(within)  # type: ignore[arg-type]
    assert within.answers[0][0] == "reply"
