"""An NVML stand-in that answers from a recorded reading (``../shared/fixtures/nvml-h200.json``).

It exposes the subset of pynvml's functions the node agent calls, and raises pynvml's own error
classes where the recording says the real call failed, so the NVML code path runs unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

NVMLError = pynvml.NVMLError


def _error_for(text: str) -> pynvml.NVMLError:
    # "ERR NVMLError_NotSupported: Not Supported" -> pynvml.NVMLError_NotSupported()
    name = text.removeprefix("ERR ").split(":", 1)[0].strip()
    cls = getattr(pynvml, name, None)
    if isinstance(cls, type) and issubclass(cls, pynvml.NVMLError):
        return cls()
    return pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)


def _answer(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("ERR "):
        raise _error_for(value)
    return value


class RecordedNvml:
    def __init__(self, recording: dict[str, Any]) -> None:
        self._rec = recording
        self._initialised = False

    @classmethod
    def from_file(cls, path: Path) -> RecordedNvml:
        return cls(json.loads(path.read_text()))

    def _device(self, handle: int) -> dict[str, Any]:
        if not self._initialised:
            raise pynvml.NVMLError_Uninitialized()
        devices: list[dict[str, Any]] = self._rec["devices"]
        return devices[handle]

    def nvmlInit(self) -> None:
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self._initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self._rec["driver"])

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return int(self._rec["cuda_driver"])

    def nvmlDeviceGetCount(self) -> int:
        if not self._initialised:
            raise pynvml.NVMLError_Uninitialized()
        return len(self._rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < self.nvmlDeviceGetCount():
            raise pynvml.NVMLError_InvalidArgument()
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return str(self._device(handle)["uuid"])

    def nvmlDeviceGetName(self, handle: int) -> str:
        return str(self._device(handle)["name"])

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> SimpleNamespace:
        return SimpleNamespace(**_answer(self._device(handle)["memory"]))

    def nvmlDeviceGetPciInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(**_answer(self._device(handle)["pci"]))

    def nvmlDeviceGetMinorNumber(self, handle: int) -> int:
        return int(_answer(self._device(handle)["minor"]))

    def nvmlDeviceGetNumaNodeId(self, handle: int) -> int:
        return int(_answer(self._device(handle)["numa"]))

    def nvmlDeviceGetMigMode(self, handle: int) -> list[int]:
        return [int(m) for m in _answer(self._device(handle).get("mig_mode", [0, 0]))]

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(**_answer(self._device(handle)["util"]))

    NVMLError: type[Exception] = pynvml.NVMLError
