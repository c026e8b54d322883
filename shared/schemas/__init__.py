"""Every wire schema of the project, and the registry of subjects that docs/nats-api.md shows."""

from shared.schemas import events, extender, inventory, leader, placement, usage
from shared.schemas.base import SubjectSpec

ALL_SUBJECTS: tuple[SubjectSpec, ...] = (
    *placement.SUBJECTS,
    *events.SUBJECTS,
    *inventory.SUBJECTS,
    *usage.SUBJECTS,
    *leader.SUBJECTS,
    *extender.SUBJECTS,
)
