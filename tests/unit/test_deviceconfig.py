"""The device configuration: HAMi's file loads as it is, a node's entry overrides, and a bad
value or an unknown key is refused with one line that names it."""

from __future__ import annotations

import pytest

from shared.deviceconfig import decode_device_config
from shared.errors import InvalidRequest

HAMI_FILE = b"""
nvidia:
  resourceCountName: nvidia.com/gpu
  resourceMemoryName: nvidia.com/gpumem
  resourceMemoryPercentageName: nvidia.com/gpumem-percentage
  resourceCoreName: nvidia.com/gpucores
  resourcePriorityName: nvidia.com/priority
  overwriteEnv: false
  defaultMemory: 0
  defaultCores: 0
  defaultGPUNum: 1
  preConfiguredDeviceMemory: 0
  memoryFactor: 1
  deviceSplitCount: 10
  deviceMemoryScaling: 1
  deviceCoreScaling: 1
  enableNumaTopology: false
  gpuCorePolicy: default
  libCudaLogLevel: 1
  runtimeClassName: ""
  migProfileAllowlist:
  - models: [ "A30" ]
    profiles: [ "1g.6gb", "2g.12gb", "4g.24gb" ]
cambricon:
  resourceCountName: cambricon.com/vmlu
iluvatars:
- chipName: MR-V100
  resourceCountName: iluvatar.ai/MR-V100-vgpu
vnpus:
  hamiVnpuCore: false
  configs: []
nodeconfig:
  - name: your-node-name
    operatingmode: hami-core
    devicememoryscaling: 1
    devicesplitcount: 10
    preconfigureddevicememory: 0
    enablenumatopology: false
    migstrategy: none
    filterdevices: {uuid: [], index: []}
    enablegetpreferredallocation: false
"""


def test_hamis_own_file_loads_and_says_what_it_ignores() -> None:
    config = decode_device_config(HAMI_FILE, "hami")
    assert config.nvidia.device_split_count == 10
    assert config.nvidia.resources.memory == "nvidia.com/gpumem"
    assert config.nvidia.ignored == ("lib_cuda_log_level",)


def test_a_node_entry_overrides_only_what_it_sets() -> None:
    config = decode_device_config(
        b"nvidia: {deviceSplitCount: 4, deviceCoreScaling: 2}\n"
        b"nodeconfig: [{name: n1, devicememoryscaling: 1.5, gpucorepolicy: force}]",
        "f",
    )
    n1, other = config.for_node("n1"), config.for_node("n2")
    assert (n1.device_split_count, n1.device_memory_scaling, n1.device_core_scaling) == (4, 1.5, 2)
    assert n1.gpu_core_policy == "force"
    assert other == config.nvidia


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (b"nvidia: {deviceSplitCount: -1}", "$.nvidia.deviceSplitCount"),
        (b"nvidia: {deviceSplitCount: 0}", "$.nvidia.deviceSplitCount"),
        (b"nvidia: {deviceMemoryScaling: 0}", "$.nvidia.deviceMemoryScaling"),
        (b"nvidia: {defaultCores: 101}", "$.nvidia.defaultCores"),
        (b"nvidia: {gpuCorePolicy: sometimes}", "$.nvidia.gpuCorePolicy"),
        (b"nvidia: {deviceSplitCuont: 4}", "deviceSplitCuont"),
        (b"nvidai: {}", "nvidai"),
        (b"nodeconfig: [{name: a, devicesplitcount: 0}]", "$.nodeconfig[0].devicesplitcount"),
        (b"nodeconfig: [{name: a}, {name: a}]", "appears twice"),
        (b"nodeconfig: [{devicesplitcount: 2}]", "name"),
        (b"nvidia: [", "device configuration f"),
        (b"- just a list", "device configuration f"),
    ],
)
def test_a_bad_file_is_refused_with_one_line_naming_the_key(text: bytes, named: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_device_config(text, "f")
    message = str(refused.value)
    assert named in message and "\n" not in message, message
