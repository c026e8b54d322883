"""NVIDIA MIG geometry as NVIDIA documents it (MIG user guide, "Supported MIG Profiles"): the
GPUs with 8 memory slices and 7 compute slices (A100, H100, H200, ...) offer the same six GPU
instance shapes; only their memory, and so their names, differ. On a real GPU the node agent
reads the profiles from NVML (services/nodeagent/mig.py); this table is what simulated GPUs
and the test NVML offer."""

from __future__ import annotations

from dataclasses import dataclass

from shared.schemas.inventory import PartitionProfile

MEMORY_SLICES = 8
COMPUTE_SLICES = 7


@dataclass(frozen=True, slots=True)
class MigShape:
    compute: int
    """Compute slices (the `Ng` of a profile name)."""
    memory: int
    """Memory slices."""
    placements: tuple[int, ...]
    """Memory slices it may start at."""
    nvml_profile: int
    """NVML's `NVML_GPU_INSTANCE_PROFILE_*` index for it."""


SHAPES = (
    MigShape(1, 1, (0, 1, 2, 3, 4, 5, 6), 0),  # 1g, one memory slice (PROFILE_1_SLICE)
    MigShape(1, 2, (0, 2, 4, 6), 9),  # 1g, two memory slices (PROFILE_1_SLICE_REV2)
    MigShape(2, 2, (0, 2, 4), 1),  # PROFILE_2_SLICE
    MigShape(3, 4, (0, 4), 2),  # PROFILE_3_SLICE
    MigShape(4, 4, (0,), 3),  # PROFILE_4_SLICE
    MigShape(7, 8, (0,), 4),  # PROFILE_7_SLICE
)
"""Smallest first (memory, then compute): the order a request is fitted in."""

MARKETED_GB = {
    "H200": (18, 35, 35, 71, 71, 141),
    "H100": (10, 20, 20, 40, 40, 80),
    "A100": (10, 20, 20, 40, 40, 80),
}
"""The memory in each shape's name, per product (80 GB parts for H100 and A100)."""


def cores_of(compute: int) -> int:
    """A shape's compute in percent of the GPU, rounded down so that shapes that fit the
    GPU's 7 compute slices together never add up past 100."""
    return 100 if compute == COMPUTE_SLICES else 100 * compute // COMPUTE_SLICES


def profile_name(compute: int, memory_gb: int) -> str:
    return f"{compute}g.{memory_gb}gb"


def mig_profiles(memory_mib: int, marketed_gb: tuple[int, ...]) -> tuple[PartitionProfile, ...]:
    """The GPU's profiles with their memory in MiB (its share of the slices) and geometry."""
    return tuple(
        PartitionProfile(
            name=profile_name(shape.compute, gb),
            memory_mib=memory_mib * shape.memory // MEMORY_SLICES,
            cores=cores_of(shape.compute),
            slices=shape.memory,
            placements=shape.placements,
        )
        for shape, gb in zip(SHAPES, marketed_gb, strict=True)
    )


H200_MIB = 143771
H200_PROFILES = mig_profiles(H200_MIB, MARKETED_GB["H200"])
