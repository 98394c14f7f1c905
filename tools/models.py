"""Model loading shared by every backend: once per process, locked, offline-safe.

Three ways to get a model (issue 3):
- a hub id or local directory, loaded with ``from_pretrained`` from local files only (no
  download is ever attempted; a missing model raises ``ModelNotFoundError`` saying where it
  looked and how to provide it);
- an explicit config with random weights (tiny for tests, real size for GPU timing);
- an already-built object, passed straight to the backend.

``REGISTRY.get(key, loader)`` runs ``loader`` once per key per process even when several
graph runs ask at once; ``REGISTRY.device_lock(device)`` serialises heavy work (a diffusion,
a generate call) on one accelerator. Keys are ``(model id or path, dtype, device, ...)``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TypeVar

from tools.errors import FatalToolError

__all__ = [
    "ModelNotFoundError",
    "LoadOptions",
    "ModelRegistry",
    "REGISTRY",
    "resolve_local",
    "torch_dtype",
    "pick_device",
]

T = TypeVar("T")

_DTYPES = ("float32", "float16", "bfloat16")


class ModelNotFoundError(FatalToolError):
    """The weights of a named model are not on this machine."""


@dataclass(frozen=True)
class LoadOptions:
    """How to place a model. ``dtype``: float32 | float16 | bfloat16 (None = bfloat16 on CUDA,
    float32 on CPU); ``device``: "cpu", "cuda", "cuda:N" (None = CUDA if available);
    ``cpu_offload``: diffusers' model CPU offload (saves GPU memory, costs speed)."""

    dtype: str | None = None
    device: str | None = None
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def resolved(self) -> LoadOptions:
        """Fill in device and dtype defaults (imports torch)."""
        device = self.device or pick_device()
        dtype = self.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        return LoadOptions(dtype=dtype, device=device, cpu_offload=self.cpu_offload)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class ModelRegistry:
    """Process-wide cache of loaded models and per-device locks. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[Hashable, Any] = {}
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._device_locks: dict[str, threading.RLock] = {}
        self.loads: list[Hashable] = []  # keys in load order, for tests and logs

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        """The model for ``key``, loading it with ``loader`` the first time only."""
        with self._lock:
            if key in self._models:
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one loader per key; other keys load in parallel
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = loader()
            with self._lock:
                self._models[key] = model
                self.loads.append(key)
            return model

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._models

    def evict(self, key: Hashable) -> None:
        """Forget a model (its memory is freed once nothing else holds it)."""
        with self._lock:
            self._models.pop(key, None)

    @contextmanager
    def device_lock(self, device: str) -> Iterator[None]:
        """Hold while running heavy work on ``device``; CPU work is not serialised."""
        if device == "cpu":
            yield
            return
        name = device if ":" in device else f"{device}:0"  # "cuda" and "cuda:0" are one GPU
        with self._lock:
            lock = self._device_locks.setdefault(name, threading.RLock())
        with lock:
            yield


REGISTRY = ModelRegistry()


def resolve_local(model: str | os.PathLike[str], *, what: str) -> str:
    """A local directory holding ``model``: the path itself, or the hub id's snapshot in the
    Hugging Face cache. Never downloads; raises ``ModelNotFoundError`` otherwise."""
    path = Path(os.fspath(model)).expanduser()
    if path.is_dir():
        return str(path)
    name = os.fspath(model)
    looked = [f"local directory {str(path)!r} (does not exist)"]
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE

        try:
            return snapshot_download(name, local_files_only=True)
        except Exception as exc:  # LocalEntryNotFoundError and friends: not in the cache
            looked.append(f"the Hugging Face cache {HF_HUB_CACHE!r} ({type(exc).__name__})")
    raise ModelNotFoundError(
        f"{what} model {name!r} not found; looked in: {'; '.join(looked)}. This package never "
        f"downloads weights. Provide them: download on a machine with hub access "
        f"(`hf download {name}`) and pass the local directory, or copy the Hugging Face cache "
        f"here (HF_HOME), or build the backend from a config with random weights for testing.",
        tool=what,
    )
