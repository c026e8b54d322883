"""What the allocator learns from watching, beside the ledger: how busy devices really are
(utilisation, quantised to heat levels: core/heat.py) and the recent mix of requests (for the
fragmentation policy: core/mix.py, core/fragmentation.py). Soft state: never written durably,
rebuilt from samples and from the restored allocations after a restart; the ledger
(core/state.py) holds only nodes, usage, allocations and their indexes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from immutables import Map

from services.allocator.core.mix import WorkloadMix
from services.allocator.core.state import NO_HEAT, ChangeLog, next_generation


@dataclass(frozen=True, slots=True)
class Signals:
    utilization: Map[str, tuple[float, float]] = field(default_factory=Map)
    """device uuid -> (smoothed utilisation percent, when): usage feedback (core/heat.py)."""
    heat: Map[str, Map[str, int]] = field(default_factory=Map)
    """node -> device uuid -> heat level (absent: 0); changes only when a level does."""
    mix: WorkloadMix = field(default_factory=WorkloadMix)
    """Recent request shapes, for the fragmentation-aware policy."""
    generation: Map[str, int] = field(default_factory=Map)
    """node -> moved on whenever the node's heat changes (decisions read it: the caches' key is
    the larger of this and the ledger's, both from one process-wide counter)."""

    changes: ChangeLog = field(default_factory=ChangeLog, compare=False, repr=False)
    """The touches behind ``generation``, in order (core/state.py: ChangeLog)."""

    def touched(self, node: str) -> Signals:
        generation = next_generation()
        return replace(
            self,
            generation=self.generation.set(node, generation),
            changes=self.changes.logged(node, generation),
        )

    def node_heat(self, node: str) -> Map[str, int]:
        return self.heat.get(node, NO_HEAT)


NO_SIGNALS = Signals()
