"""moe: Mixture-of-Experts layers on any GPU (Vulkan, OpenCL) or CPU, from Python.

A thin layer over the C library (moe.h), which this package carries::

    import numpy as np, moe
    ctx = moe.Context("cpu")                      # or "vulkan", "opencl", "auto"
    layer = ctx.layer(weights, d_model=64, d_ff=128, n_experts=8, top_k=2, max_tokens=32,
                      renormalize=True)
    y = layer(x)                                  # x: float32 [tokens, d_model]
    y, routing = layer.forward(x, routing=True)   # plus top-k ids/weights, counts, losses

Arrays are read where they lie when they are C-contiguous and of the right dtype (no copy);
anything else raises TypeError or ValueError naming the argument. Every failure of the library
raises a MoeError subclass carrying its status and message. Forwards release the GIL.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import sys
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypeVar, Union

import numpy as np

from . import _capi
from ._capi import lib, new

__all__ = [
    "__version__", "version", "backends", "devices", "DeviceInfo", "Context", "Layer", "Buffer",
    "Model", "Routing", "Placement", "ExpertCache", "CacheStats", "Usage", "usage_expert_order",
    "usage_save", "usage_load", "ArenaStats", "dtypes", "row_bytes", "takes_activations", "convert_row",
    "MoeError",
    "InvalidArgumentError", "OutOfMemoryError", "BackendUnavailableError", "DeviceLostError",
    "BackendError", "UnsupportedError", "FileError", "FileFormatError", "BusyError", "InternalError",
    "library_path",
]

__version__: str = lib.moe_version().decode()
# The structs and calls in _capi.py are 0.9.0's (moe_placement.cache): an older library
# (MOE_LIBRARY) lacks the calls or would refuse the structs per call.
if lib.moe_version_number() < 900:
    raise ImportError(f"moe: {_capi.library_path} is version {__version__}; this package needs 0.9.0 or newer")
library_path: str = _capi.library_path


def version() -> str:
    """The C library's version, "MAJOR.MINOR.PATCH" (the package's own)."""
    return __version__


# ---- errors ----------------------------------------------------------------------------------

class MoeError(Exception):
    """A call into the library failed: `status` (negative), `status_name` and the message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.status_name = _capi.STATUS_NAMES.get(status, f"status {status}")
        self.message = message
        super().__init__(f"{self.status_name}: {message}" if message else self.status_name)

    def __reduce__(self) -> Tuple[Any, Tuple[int, str]]:  # picklable (multiprocessing, futures)
        return (type(self), (self.status, self.message))


class InvalidArgumentError(MoeError, ValueError):
    """A bad size, config, token count or argument (NULL_POINTER, INVALID_*, SIZE_OVERFLOW, TOKEN_BUDGET)."""


class OutOfMemoryError(MoeError, MemoryError):
    """Host or device memory ran out (OUT_OF_MEMORY, OUT_OF_DEVICE_MEMORY)."""


class BackendUnavailableError(MoeError, RuntimeError):
    """The backend is not built in, or has no device matching the request."""


class DeviceLostError(MoeError, RuntimeError):
    """The device stopped answering; the context is unusable."""


class BackendError(MoeError, RuntimeError):
    """A native (Vulkan / OpenCL) call failed; the message names it."""


class UnsupportedError(MoeError, RuntimeError):
    """A valid request the backend, device or this version cannot do."""


class FileFormatError(MoeError, ValueError):
    """A checkpoint file's contents are malformed (MOE_ERROR_FORMAT)."""


class BusyError(MoeError, RuntimeError):
    """The object is in use by a forward still in flight."""


class InternalError(MoeError, RuntimeError):
    """A bug in moe: please report it."""


class FileError(MoeError, OSError):
    """A file could not be opened, read or written (MOE_ERROR_IO)."""


_ERRORS = {-1: InvalidArgumentError, -2: InvalidArgumentError, -3: InvalidArgumentError,
           -4: InvalidArgumentError, -5: InvalidArgumentError, -6: InvalidArgumentError,
           -7: OutOfMemoryError, -8: OutOfMemoryError, -9: BackendUnavailableError,
           -10: DeviceLostError, -11: BackendError, -12: UnsupportedError, -13: FileError,
           -14: FileFormatError, -15: InternalError, -16: BusyError}


def _check(status: int, context: Optional[int] = None) -> None:
    if status == 0:
        return
    msg = lib.moe_last_error()  # this thread's last failure: every failing call writes it
    if not msg and context:
        msg = lib.moe_context_error(context)
    raise _ERRORS.get(status, MoeError)(status, (msg or b"").decode(errors="replace"))


# ---- names -----------------------------------------------------------------------------------

def dtypes() -> List[str]:
    """The weight formats' names, in the library's order: "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", ...,
    "mxfp4", "q3_k" (library 0.15.0), "q2_k" (library 0.16.0)."""
    out, i = [], 1
    while True:
        name = lib.moe_dtype_name(i)
        if not name:
            return out
        out.append(name.decode())
        i += 1


def _dtype(name: Union[str, None], what: str) -> int:
    if name is None or name == "default":
        return 0
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a format name such as 'bf16' or 'q4_0', not {name!r}")
    code = ctypes.c_int(0)
    if lib.moe_dtype_from_name(name.encode(), ctypes.byref(code)) != 0:
        raise ValueError(f"{what}={name!r} is not a weight format (one of {', '.join(dtypes())})")
    return code.value


def _enum(table: Mapping[str, int], value: Union[str, int], what: str) -> int:
    if isinstance(value, str) and value.lower() in table:
        return table[value.lower()]
    raise ValueError(f"{what}={value!r}: expected one of {', '.join(table)}")


def takes_activations(weights: str, activations: str) -> bool:
    """Whether a matrix product of weights stored in `weights` can run on `activations`: "f32" for
    every format, the opt-ins "q8_0" (integer) for q8_0, q4_0 and the K-quants (q5_k and q6_k since
    library 0.13.0, q3_k since 0.15.0, q2_k since 0.16.0), "bf16" (bfloat16 pairs) for q4_0, mxfp4
    and q4_k (library 0.12.0). Each product of a layer decides for itself; whether a layer
    then runs it also takes a backend and CPU with the path (Layer.activation_dtype)."""
    w, a = _dtype(weights, "weights"), _dtype(activations, "activations")
    fn = getattr(lib, "moe_dtype_takes_activations", None)
    if fn is None:
        raise UnsupportedError(f"takes_activations needs the C library 0.12.0 or newer, not {__version__}")
    return bool(fn(w, a))


def row_bytes(dtype: str, n: int) -> int:
    """Bytes of one row of n values in a format (0 when n does not fit its blocks)."""
    return int(lib.moe_dtype_row_bytes(_dtype(dtype, "dtype"), int(n)))


def convert_row(src: Any, src_dtype: str, dst_dtype: str, n: Optional[int] = None) -> np.ndarray:
    """One row converted between formats (as ggml's reference quantizers do). `src` is a
    C-contiguous float32 array for "f32", float16 for "f16", else the row's bytes (uint8; for
    "bf16" also uint16); n, the row's values, is needed for those. Returns float32 values for
    "f32", float16 for "f16", else the row's bytes as uint8."""
    a = _as_numpy(src, "src")
    sd, dd = _dtype(src_dtype, "src_dtype"), _dtype(dst_dtype, "dst_dtype")
    src_name, dst_name = lib.moe_dtype_name(sd).decode(), lib.moe_dtype_name(dd).decode()
    values = {"f32": np.float32, "f16": np.float16}
    if src_name in values and a.dtype != values[src_name]:
        raise TypeError(f"src: dtype {a.dtype}, expected {np.dtype(values[src_name])} for src_dtype={src_name!r}")
    if src_name not in values and a.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"src: dtype {a.dtype}; a {src_name} row is handed over as its bytes (uint8)")
    if not a.flags.c_contiguous:
        raise ValueError("src: not C-contiguous")
    if n is None:
        if src_name not in values:
            raise ValueError(f"n (the row's values) is needed for a {src_name} row given as bytes")
        n = a.size
    need = lib.moe_dtype_row_bytes(sd, int(n))
    if need == 0 or a.nbytes != need:
        raise ValueError(f"src: {a.nbytes} bytes, but {n} values of {src_name} take "
                         + (f"{need}" if need else "whole blocks"))
    size = lib.moe_dtype_row_bytes(dd, int(n))
    if size == 0:
        raise ValueError(f"{n} values do not fit {dst_name}'s blocks")
    out = np.empty(size, dtype=np.uint8)
    _check(lib.moe_convert_row(sd, a.ctypes.data, dd, out.ctypes.data, int(n)))
    return out.view(values[dst_name]) if dst_name in values else out


# ---- devices ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """What moe knows of one device (moe_device_info)."""
    backend: str
    index: int
    type: str
    name: str
    vendor: str
    driver: str
    memory_bytes: int
    compute_units: int
    api_version: str
    subgroup_size: int
    features: Tuple[str, ...]
    features_used: Tuple[str, ...]


def _features(bits: int) -> Tuple[str, ...]:
    out = []
    for i in range(32):
        if bits & (1 << i):
            name = lib.moe_feature_name(1 << i)
            out.append(name.decode() if name else f"bit{i}")
    return tuple(out)


def _device_info(info: _capi.DeviceInfo) -> DeviceInfo:
    return DeviceInfo(
        backend=lib.moe_backend_name(info.backend).decode(), index=info.index,
        type=_capi.DEVICE_TYPES.get(info.type, "other"), name=info.name.decode(errors="replace"),
        vendor=info.vendor.decode(errors="replace"), driver=info.driver.decode(errors="replace"),
        memory_bytes=info.memory_bytes, compute_units=info.compute_units,
        api_version=info.api_version.decode(errors="replace"), subgroup_size=info.subgroup_size,
        features=_features(info.features), features_used=_features(info.features_used))


def backends() -> List[str]:
    """The backends this build of the library contains ("cpu", "vulkan", "opencl")."""
    return [name for name, code in _capi.BACKENDS.items() if code and lib.moe_backend_is_built(code)]


def devices(backend: Optional[str] = None) -> List[DeviceInfo]:
    """The devices of one backend, or of every backend built in (a backend whose driver is
    absent has none)."""
    names = backends() if backend is None else [backend]
    out = []
    for name in names:
        code = _enum({k: v for k, v in _capi.BACKENDS.items() if v}, name, "backend")
        count = ctypes.c_int(0)
        _check(lib.moe_device_count(code, ctypes.byref(count)))
        for i in range(count.value):
            info = new(_capi.DeviceInfo)
            _check(lib.moe_device_get_info(code, i, ctypes.byref(info)))
            out.append(_device_info(info))
    return out


# ---- arrays ----------------------------------------------------------------------------------

def _is_torch(array: Any) -> bool:
    torch = sys.modules.get("torch")  # imported by whoever made the tensor; never by moe itself
    return torch is not None and isinstance(array, torch.Tensor)


def _as_numpy(array: Any, what: str) -> np.ndarray:
    """A NumPy view (no copy) of an ndarray, a CPU PyTorch tensor, an object exporting DLPack
    on the CPU, or one with the buffer protocol; otherwise TypeError."""
    if isinstance(array, np.ndarray):
        return array
    if _is_torch(array):
        torch = sys.modules["torch"]
        if array.device.type != "cpu":
            raise TypeError(f"{what}: a tensor on {array.device}; moe reads host (CPU) tensors "
                            "(move it with .cpu(), or keep activations on the device in moe.Buffer)")
        if array.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits as uint16
            return array.detach().view(dtype=torch.int16).numpy().view(np.uint16)
        return array.detach().numpy()
    if hasattr(array, "__dlpack__"):
        try:
            return np.from_dlpack(array)
        except (TypeError, ValueError, BufferError, RuntimeError) as e:
            raise TypeError(f"{what}: NumPy cannot view its DLPack export ({e}); float32 on the CPU "
                            "is what moe reads") from e
    try:
        return np.asarray(memoryview(array))
    except TypeError:
        pass
    raise TypeError(f"{what}: expected a numpy.ndarray, a CPU torch.Tensor, a DLPack or buffer-protocol "
                    f"array, not {type(array).__name__}")


def _float_array(array: Any, what: str, shape: Optional[Tuple[int, ...]] = None, *,
                 writable: bool = False) -> np.ndarray:
    """A float32 C-contiguous view of `array` (of `shape`, if given), or TypeError / ValueError
    that says what to change."""
    a = _as_numpy(array, what)
    torch = _is_torch(array)
    if a.dtype != np.float32:
        if torch and str(array.dtype) == "torch.bfloat16":
            raise TypeError(f"{what}: a torch.bfloat16 tensor; moe reads float32 here (use .float())")
        raise TypeError(f"{what}: dtype {array.dtype if torch else a.dtype}, expected float32")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{what}: shape {a.shape}, expected {shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: not C-contiguous (use {'.contiguous()' if torch else 'np.ascontiguousarray'})")
    if writable and not a.flags.writeable:
        raise ValueError(f"{what}: read-only")
    return a


# ---- handles ---------------------------------------------------------------------------------

_Self = TypeVar("_Self", bound="_Handle")


class _Handle:
    """A library object (context, layer, buffer, model): close() releases it once, as do `with`
    and garbage collection; a call on a closed one raises ValueError."""

    # Class defaults, so that __del__ is safe when __init__ failed early.
    _handle: Optional[int] = None
    _kind = "object"
    # moe.h lets one thread at a time call into a context (and into a model). ctypes releases
    # the GIL during each call, so Python threads could overlap there: every call on a context or
    # its layers and buffers, their release by the garbage collector included, holds the
    # context's lock (re-entrant: a collection may run inside a locked block of the same thread).
    _lock: Any = contextlib.nullcontext()
    _ctx: Any = None

    def _release(self, handle: int) -> None:
        raise NotImplementedError

    def _h(self) -> int:
        if not self._handle:
            raise ValueError(f"the {self._kind} is closed")
        return self._handle

    def _call(self, fn: Any, *args: Any) -> None:
        """fn(handle, *args) under the lock; a failure raises with the library's message."""
        with self._lock:
            status = fn(self._h(), *args)
            if status != 0:
                _check(status, self._ctx._handle if self._ctx is not None else None)

    def close(self) -> None:
        """Releases the object (again: nothing)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if handle:
                self._release(handle)

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# ---- context ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ArenaStats:
    """The context's buffer arena (moe_arena_stats)."""
    weights_bytes: int
    scratch_bytes: int
    scratch_peak_bytes: int
    staging_bytes: int
    buffer_bytes: int
    allocation_count: int
    scratch_reservations: int


class Context(_Handle):
    """One backend, one device, one buffer arena (moe_context).

    backend: "auto" (Vulkan, then OpenCL, then the CPU), "cpu", "vulkan" or "opencl".
    device: an index among the backend's devices, or a text as moe-run's --device reads it
    ("discrete", "name:4090"). threads: CPU worker threads (0: every core).
    """

    def __init__(self, backend: str = "auto", device: Union[int, str, None] = None, threads: int = 0):
        self._ctx, self._lock = self, threading.RLock()
        desc = new(_capi.ContextDesc)
        desc.backend = _enum(_capi.BACKENDS, backend, "backend")
        desc.n_threads = int(threads)
        self._device_text = None
        if isinstance(device, int):
            desc.device_index = device
        elif isinstance(device, str):
            self._device_text = device.encode()  # must outlive moe_context_create
            _check(lib.moe_context_desc_set_device(ctypes.byref(desc), self._device_text))
        elif device is not None:
            raise TypeError(f"device must be an int or a str, not {type(device).__name__}")
        handle = ctypes.c_void_p()
        _check(lib.moe_context_create(ctypes.byref(desc), ctypes.byref(handle)))
        self._handle = handle.value

    @property
    def backend(self) -> str:
        """The backend the context runs on (what "auto" chose)."""
        with self._lock:
            return lib.moe_backend_name(lib.moe_context_backend(self._h())).decode()

    @property
    def device(self) -> DeviceInfo:
        info = new(_capi.DeviceInfo)
        self._call(lib.moe_context_get_device_info, ctypes.byref(info))
        return _device_info(info)

    def arena_stats(self) -> ArenaStats:
        s = new(_capi.ArenaStats)
        self._call(lib.moe_context_get_arena_stats, ctypes.byref(s))
        return ArenaStats(s.weights_bytes, s.scratch_bytes, s.scratch_peak_bytes, s.staging_bytes,
                          s.buffer_bytes, s.allocation_count, s.scratch_reservations)

    def layer(self, weights: Mapping[str, Any], **config: Any) -> "Layer":
        """A layer from host arrays; see Layer."""
        return Layer(self, weights, **config)

    def layer_from_model(self, model: "Model", index: int, **options: Any) -> "Layer":
        """The MoE block of layer `index` of a checkpoint; see Model.layer."""
        return model.layer(self, index, **options)

    def buffer(self, n_elements: int) -> "Buffer":
        """A float32 buffer on the device."""
        return Buffer(self, n_elements)

    def wait(self) -> None:
        """Waits for every forward submitted with Layer.forward_async."""
        self._call(lib.moe_context_wait)

    _kind = "context"

    def _release(self, handle: int) -> None:
        # Layers and buffers still alive keep the context until they go (the library defers
        # the release; their Python objects hold this one).
        lib.moe_context_destroy(handle)

    def __repr__(self) -> str:
        if not self._handle:
            return "<moe.Context closed>"
        return f"<moe.Context {self.backend}: {self.device.name}>"


from ._layer import (  # noqa: E402  (they use the names above)
    Buffer, CacheStats, ExpertCache, Layer, Model, Placement, Routing, Usage, usage_expert_order, usage_load,
    usage_save)
