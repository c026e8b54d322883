"""HAMi's device families as registry data (shared/devicekinds.py): resource names with
HAMi's defaults and units, selector annotations, names in HAMi's annotations, isolation model,
and known models (memory; partition profiles). Sources: `../shared/notes/vendors.md` (HAMi's
`pkg/device/<vendor>` and its documentation) and HAMi's Ascend device configuration
(`docs/ascend910b-support.md`: templates with memory and AI cores; cores here are the
template's AI cores as percent of the chip's, rounded up)."""

from __future__ import annotations

import math

from shared.devicekinds import NVIDIA, DeviceKind, KindRegistry, Model, Selectors
from shared.resources import ResourceNames
from shared.schemas.inventory import PartitionProfile


def _templates(chip_cores: int, *templates: tuple[str, int, int]) -> tuple[PartitionProfile, ...]:
    return tuple(
        PartitionProfile(name=name, memory_mib=memory, cores=math.ceil(cores * 100 / chip_cores))
        for name, memory, cores in templates
    )


def _ascend(
    common: str, memory: int, chip_cores: int, *templates: tuple[str, int, int]
) -> DeviceKind:
    return DeviceKind(
        name=common.lower(),
        annotation_type=common,
        annotation_word=common,
        vendor="Huawei",
        resources=ResourceNames(
            count=f"huawei.com/{common}",
            memory=f"huawei.com/{common}-memory",
            memory_percentage="",
            cores="",
            priority="",
        ),
        isolation="partition",
        selectors=Selectors(
            use_uuid=f"hami.io/use-{common}-uuid", nouse_uuid=f"hami.io/no-use-{common}-uuid"
        ),
        models=(Model(common, memory, _templates(chip_cores, *templates)),),
    )


ASCEND_910B2 = _ascend(
    "Ascend910B2",
    65536,
    24,
    ("vir03_1c_8g", 8192, 3),
    ("vir06_1c_16g", 16384, 6),
    ("vir12_3c_32g", 32768, 12),
)
ASCEND_910B3 = _ascend(
    "Ascend910B3", 65536, 20, ("vir05_1c_16g", 16384, 5), ("vir10_3c_32g", 32768, 10)
)
ASCEND_910B4 = _ascend(
    "Ascend910B4", 32768, 20, ("vir05_1c_8g", 8192, 5), ("vir10_3c_16g", 16384, 10)
)
ASCEND_310P = _ascend(
    "Ascend310P", 21527, 8, ("vir01", 3072, 1), ("vir02", 6144, 2), ("vir04", 12288, 4)
)

CAMBRICON_MLU = DeviceKind(
    name="cambricon-mlu",
    annotation_type="MLU",
    annotation_word="cambricon-mlu",
    vendor="Cambricon",
    resources=ResourceNames(
        count="cambricon.com/vmlu",
        memory="cambricon.com/mlu.smlu.vmemory",
        memory_percentage="",
        cores="cambricon.com/mlu.smlu.vcore",
        priority="",
    ),
    memory_unit_mib=256,
    selectors=Selectors(
        use_type="cambricon.com/use-mlutype",
        nouse_type="cambricon.com/nouse-mlutype",
        use_uuid="cambricon.com/use-gpuuuid",
        nouse_uuid="cambricon.com/nouse-gpuuuid",
    ),
    models=(Model("MLU370-X8", 49152), Model("MLU590", 81920)),
)
HYGON_DCU = DeviceKind(
    name="hygon-dcu",
    annotation_type="DCU",
    annotation_word="dcu",
    vendor="Hygon",
    resources=ResourceNames(
        count="hygon.com/dcunum",
        memory="hygon.com/dcumem",
        memory_percentage="",
        cores="hygon.com/dcucores",
        priority="",
    ),
    selectors=Selectors(
        use_type="hygon.com/use-dcutype",
        nouse_type="hygon.com/nouse-dcutype",
        use_uuid="hygon.com/use-gpuuuid",
        nouse_uuid="hygon.com/nouse-gpuuuid",
    ),
    models=(Model("Z100", 32768), Model("Z100L", 32768)),
)
ILUVATAR_BI_V150 = DeviceKind(
    name="iluvatar-bi-v150",
    annotation_type="BI-V150",
    annotation_word="BI-V150",
    vendor="Iluvatar",
    resources=ResourceNames(
        count="iluvatar.ai/BI-V150-vgpu",
        memory="iluvatar.ai/BI-V150.vMem",
        memory_percentage="",
        cores="iluvatar.ai/BI-V150.vCore",
        priority="",
    ),
    memory_unit_mib=256,
    selectors=Selectors(use_uuid="hami.io/use-BI-V150-uuid"),
    models=(Model("BI-V150", 32768),),
)
METAX_GPU = DeviceKind(
    name="metax-gpu",
    annotation_type="Metax-GPU",
    annotation_word="metax-gpu",
    vendor="MetaX",
    resources=ResourceNames(
        count="metax-tech.com/gpu", memory="", memory_percentage="", cores="", priority=""
    ),
    isolation="whole",
    selectors=Selectors(),
    models=(Model("MXC500", 65536),),
)
METAX_SGPU = DeviceKind(
    name="metax-sgpu",
    annotation_type="Metax-SGPU",
    annotation_word="metax-sgpu",
    vendor="MetaX",
    resources=ResourceNames(
        count="metax-tech.com/sgpu",
        memory="metax-tech.com/vmemory",
        memory_percentage="",
        cores="metax-tech.com/vcore",
        priority="",
    ),
    memory_unit_mib=1024,
    selectors=Selectors(),
    models=(Model("MXC500", 65536),),
)
MTHREADS = DeviceKind(
    name="mthreads",
    annotation_type="Mthreads",
    annotation_word="mthreads-vgpu",
    vendor="Moore Threads",
    resources=ResourceNames(
        count="mthreads.com/vgpu",
        memory="mthreads.com/sgpu-memory",
        memory_percentage="",
        cores="mthreads.com/sgpu-core",
        priority="",
    ),
    memory_unit_mib=512,
    memory_sizes=(2, 4, 8, 16, 32, 64, 96),
    cores_per_device=16,
    selectors=Selectors(),
    models=(Model("MTT S4000", 49152),),
)
ENFLAME_GCU = DeviceKind(
    name="enflame-gcu",
    annotation_type="GCU",
    annotation_word="enflame-gcu",
    vendor="Enflame",
    resources=ResourceNames(
        count="enflame.com/gcu", memory="", memory_percentage="", cores="", priority=""
    ),
    isolation="whole",
    selectors=Selectors(),
    models=(Model("S60", 49152),),
)
ENFLAME_DRS = DeviceKind(
    name="enflame-drs",
    annotation_type="Enflame",
    annotation_word="enflame-vgpu",
    vendor="Enflame",
    resources=ResourceNames(
        count="enflame.com/drs-gcu",
        memory="enflame.com/gcu-memory",
        memory_percentage="",
        cores="enflame.com/gcu-core",
        priority="",
    ),
    isolation="partition",
    selectors=Selectors(),
    # The node reports its DRS profiles (enflame.com/gcu-drs-capacity); these quarter and half
    # slices are the simulation's assumption, not Enflame's published table.
    models=(
        Model(
            "S60",
            49152,
            (
                PartitionProfile(name="drs-1-4", memory_mib=12288, cores=25),
                PartitionProfile(name="drs-1-2", memory_mib=24576, cores=50),
            ),
        ),
    ),
)
KUNLUNXIN_XPU = DeviceKind(
    name="kunlunxin-xpu",
    annotation_type="kunlun",
    annotation_word="kunlun",
    vendor="Kunlunxin",
    resources=ResourceNames(
        count="kunlunxin.com/xpu", memory="", memory_percentage="", cores="", priority=""
    ),
    isolation="whole",
    selectors=Selectors(),
    models=(Model("P800", 98304),),
)
KUNLUNXIN_VXPU = DeviceKind(
    name="kunlunxin-vxpu",
    annotation_type="XPU",
    annotation_word="xpu",
    vendor="Kunlunxin",
    resources=ResourceNames(
        count="kunlunxin.com/vxpu",
        memory="kunlunxin.com/vxpu-memory",
        memory_percentage="",
        cores="",
        priority="",
    ),
    isolation="partition",
    selectors=Selectors(use_uuid="hami.io/use-xpu-uuid"),
    models=(
        Model(
            "P800",
            98304,
            (  # HAMi's vXPU memory templates; compute in proportion to memory
                PartitionProfile(name="vxpu-24g", memory_mib=24576, cores=25),
                PartitionProfile(name="vxpu-48g", memory_mib=49152, cores=50),
            ),
        ),
    ),
)
AMD = DeviceKind(
    name="amd",
    annotation_type="AMD",
    annotation_word="amd",
    vendor="AMD",
    resources=ResourceNames(
        count="amd.com/gpu",
        memory="amd.com/gpumem",
        memory_percentage="",
        cores="amd.com/gpucores",
        priority="",
    ),
    selectors=Selectors(),
    models=(Model("MI300X", 196608),),
)

VENDOR_KINDS = KindRegistry(
    (
        NVIDIA,
        CAMBRICON_MLU,
        HYGON_DCU,
        ASCEND_910B2,
        ASCEND_910B3,
        ASCEND_910B4,
        ASCEND_310P,
        ILUVATAR_BI_V150,
        METAX_GPU,
        METAX_SGPU,
        MTHREADS,
        ENFLAME_GCU,
        ENFLAME_DRS,
        KUNLUNXIN_XPU,
        KUNLUNXIN_VXPU,
        AMD,
    )
)
"""Every family HAMi supports that this project models, NVIDIA first (the default kind)."""
