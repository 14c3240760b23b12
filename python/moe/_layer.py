"""Layers, device buffers and checkpoints (moe_layer, moe_buffer, moe_model)."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import sys
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _capi
from . import Context, _Handle, _as_numpy, _check, _dtype, _enum, _float_array, _is_torch
from ._cache import CacheStats, ExpertCache, _cache_stats
from ._capi import lib, new

# moe_layer_desc's fields as keyword arguments: name -> kind ("int", "bool", "float", or an
# enum table / "dtype").
_DESC_FIELDS: Dict[str, Any] = {
    "d_model": "int", "d_ff": "int", "n_experts": "int", "top_k": "int", "max_tokens": "int",
    "score_func": _capi.SCORE_FUNCS, "n_group": "int", "topk_group": "int",
    "group_score": _capi.GROUP_SCORES, "renormalize": "bool", "routed_scaling_factor": "float",
    "has_selection_bias": "bool", "activation": _capi.ACTIVATIONS, "d_ff_shared": "int",
    "shared_expert_gate": "bool", "expert_capacity": "int", "drop_policy": _capi.DROP_POLICIES,
    "weight_dtype": "dtype", "shared_weight_dtype": "dtype", "activation_dtype": "dtype",
    "down_weight_dtype": "dtype", "shared_down_weight_dtype": "dtype", "router_has_bias": "bool",
    "expert_has_bias": "bool", "swiglu_alpha": "float", "swiglu_limit": "float",
}
# moe_layer_weights' arrays (which a config needs, the library says).
_WEIGHT_NAMES = ("router", "router_bias", "gate", "up", "down", "shared_gate", "shared_up", "shared_down",
                 "shared_expert_gate", "gate_bias", "up_bias", "down_bias")


def _desc_from_kwargs(config: Mapping[str, Any]) -> _capi.LayerDesc:
    desc = new(_capi.LayerDesc)
    for key, value in config.items():
        kind = _DESC_FIELDS.get(key)
        if kind is None:
            raise TypeError(f"unknown layer setting {key!r} (settings: {', '.join(_DESC_FIELDS)})")
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{key} must be an int, not {value!r}")
            value = int(value)
        elif kind == "bool":
            value = 1 if value else 0
        elif kind == "float":
            value = float(value)
        elif kind == "dtype":
            value = _dtype(value, key)
        else:
            value = _enum(kind, value, key)
        setattr(desc, key, value)
    return desc


def _desc_to_dict(desc: _capi.LayerDesc) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, kind in _DESC_FIELDS.items():
        value = getattr(desc, key)
        if kind == "bool":
            value = bool(value)
        elif kind == "dtype":
            value = lib.moe_dtype_name(value).decode()
        elif isinstance(kind, dict):
            value = next((name for name, code in kind.items() if code == value), value)
        out[key] = value
    return out


def _input_format(array: Any, given: Optional[str], what: str) -> str:
    """The format an expert array is in: `given`, else from its dtype (float32, float16,
    torch.bfloat16)."""
    if given is not None:
        return given
    if _is_torch(array) and str(array.dtype) == "torch.bfloat16":
        return "bf16"
    dt = _as_numpy(array, what).dtype
    if dt == np.float32:
        return "f32"
    if dt == np.float16:
        return "f16"
    raise TypeError(f"{what}: dtype {dt}; for bf16 or a block format pass input_dtype= "
                    "(the arrays then hold the rows' bytes)")


@dataclasses.dataclass
class Routing:
    """What a forward decided (moe_forward_stats)."""
    topk_ids: np.ndarray        # int32 [tokens, top_k], best first
    topk_weights: np.ndarray    # float32 [tokens, top_k], the combine weights
    expert_counts: np.ndarray   # int32 [n_experts], rows routed to each (before capacity)
    dropped: int                # rows dropped by capacity
    aux_loss: float             # load-balancing loss
    z_loss: float               # router z-loss
    device_ms: float            # the forward's time on the device


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a layer's routed experts live (moe_placement): on several contexts, e.g. a GPU and
    the CPU, so the experts that do not fit in GPU memory stay in host RAM and still run.

    contexts: each a different Context; home: the index of the one that routes, runs the shared
    expert and combines (the layer's context). Then either expert_context, the index in contexts
    of each expert's context, or budget_bytes, one per context (None: no limit), filled with the
    experts in expert_order (most used first; default 0, 1, ...), each going to the first context
    whose budget still holds it. cache: an ExpertCache, slots on one context (a GPU) for copies
    of the experts living on the others, refilled as the routing moves. Pass it where a Context
    goes: Layer(placement, weights, ...), Model.layer(placement, index).
    """
    contexts: Sequence[Context]
    home: int = 0
    expert_context: Optional[Sequence[int]] = None
    budget_bytes: Optional[Sequence[Optional[int]]] = None
    expert_order: Optional[Sequence[int]] = None
    cache: Optional[ExpertCache] = None

    def __post_init__(self) -> None:
        for c in self.contexts:
            if not isinstance(c, Context):
                raise TypeError(f"Placement.contexts holds a {type(c).__name__}, not a moe.Context")
        if self.cache is not None and not isinstance(self.cache, ExpertCache):
            raise TypeError(f"Placement.cache is a {type(self.cache).__name__}, not a moe.ExpertCache")

    def _struct(self) -> Tuple[_capi.Placement, List[Any]]:
        """The C struct and the arrays it points into (keep them alive during the call)."""
        ps = new(_capi.Placement)
        keep: List[Any] = []

        def array(ctype: Any, values: Sequence[Any]) -> int:
            a = (ctype * max(len(values), 1))(*values)
            keep.append(a)
            return ctypes.addressof(a)

        ps.n_contexts = len(self.contexts)
        ps.contexts = array(ctypes.c_void_p, [c._h() for c in self.contexts])
        ps.home = int(self.home)
        if self.expert_context is not None:
            ps.expert_context = array(ctypes.c_int32, [int(v) for v in self.expert_context])
        if self.budget_bytes is not None:
            ps.budget_bytes = array(ctypes.c_uint64, [2**64 - 1 if v is None else int(v) for v in self.budget_bytes])
        if self.expert_order is not None:
            ps.expert_order = array(ctypes.c_int32, [int(v) for v in self.expert_order])
        if self.cache is not None:
            cd = self.cache._struct()
            keep.append(cd)
            ps.cache = ctypes.addressof(cd)
        return ps, keep

    def _home(self) -> Context:
        if not 0 <= self.home < len(self.contexts):
            raise ValueError(f"Placement.home is {self.home}; there are {len(self.contexts)} contexts")
        return self.contexts[self.home]

    def _lock(self) -> "_Locks":
        return _Locks(self.contexts)


@dataclasses.dataclass(frozen=True)
class Usage:
    """A layer's expert usage (moe_expert_usage): rows routed to each expert (before capacity)."""
    routed_total: np.ndarray   # int64 [n_experts], since tracking began
    routed_window: np.ndarray  # int64 [n_experts], over the last window_forwards forwards
    window: int
    window_forwards: int
    forwards: int
    tokens: int
    uncounted_forwards: int


def usage_expert_order(routed: Any) -> List[int]:
    """The experts by their counts, most first, ties to the lower index: a Placement's expert_order."""
    r = np.ascontiguousarray(routed, dtype=np.int64)
    order = np.zeros(max(len(r), 1), np.int32)
    _check(lib.moe_usage_expert_order(r.ctypes.data, len(r), order.ctypes.data))
    return [int(v) for v in order[: len(r)]]


def usage_save(path: Union[str, os.PathLike], layers: Sequence["Layer"], indices: Optional[Sequence[int]] = None) -> None:
    """Writes the tracking layers' usage to a JSON file (indices: their layer numbers in the model)."""
    handles = (ctypes.c_void_p * max(len(layers), 1))(*[layer._h() for layer in layers])
    idx = None if indices is None else (ctypes.c_int64 * max(len(indices), 1))(*[int(i) for i in indices])
    if idx is not None and len(indices) != len(layers):
        raise ValueError(f"{len(indices)} indices for {len(layers)} layers")
    with _Locks([layer._ctx for layer in layers]):
        _check(lib.moe_usage_save(os.fsencode(path), ctypes.addressof(handles),
                                  None if idx is None else ctypes.addressof(idx), len(layers)))


def usage_load(path: Union[str, os.PathLike], layer_index: int, n_experts: int) -> np.ndarray:
    """routed_total [n_experts] of layer `layer_index` from a file usage_save wrote."""
    out = np.zeros(max(int(n_experts), 1), np.int64)
    _check(lib.moe_usage_load(os.fsencode(path), int(layer_index), int(n_experts), out.ctypes.data))
    return out[: int(n_experts)]


class _Locks:
    """The locks of several contexts, taken in one global order (no two threads can deadlock): a
    placed layer's calls use every context it spans."""

    def __init__(self, contexts: Sequence[Context]):
        self._locks = [c._lock for c in sorted(set(contexts), key=id)]

    def __enter__(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        for lock in reversed(self._locks):
            lock.release()


class Layer(_Handle):
    """One MoE layer on a context (moe_layer).

    weights: a mapping with "router" [E, d_model] (float32), "up" and "down" (and "gate" for the
    gated activations) [E, d_ff, d_model] / [E, d_model, d_ff], and as the config needs them
    "router_bias", "shared_gate", "shared_up", "shared_down", "shared_expert_gate", "gate_bias",
    "up_bias", "down_bias" — NumPy arrays or CPU PyTorch tensors, copied into the layer (they may
    be freed after). Experts in float32 / float16 / bfloat16 tensors are read as such; rows
    already in a block format are uint8 arrays of their bytes with input_dtype="q4_0" (etc.).
    config: moe_layer_desc's fields by name (d_model, d_ff, n_experts, top_k, max_tokens,
    score_func="softmax"|"sigmoid", activation="swiglu"|"geglu"|"relu"|"gelu"|"swiglu_oai",
    weight_dtype="bf16" to store another format, ...).

    Except with a Placement whose cache is set: the expert cache's uploads read gate, up and down
    again, so the layer keeps them referenced, and they must stay unchanged while it lives.
    """

    def __init__(self, context: Union[Context, Placement], weights: Mapping[str, Any], *,
                 input_dtype: Optional[str] = None, shared_input_dtype: Optional[str] = None, **config: Any):
        placement = context if isinstance(context, Placement) else None
        if placement is not None:  # experts on several contexts, the layer on the home's
            context = placement._home()
            self._ctx, self._lock, self._contexts = context, placement._lock(), tuple(placement.contexts)
        else:
            self._ctx, self._lock = context, context._lock  # the layer lives in the context's arena
        desc = _desc_from_kwargs(config)
        unknown = set(weights) - set(_WEIGHT_NAMES)
        if unknown:
            raise TypeError(f"unknown weight(s) {sorted(unknown)}")
        w = new(_capi.LayerWeights)
        keep = []  # the arrays handed over, alive until moe_layer_create returns
        experts = []  # gate, up and down: what an expert cache's uploads read again
        E, D, F, S = desc.n_experts, desc.d_model, desc.d_ff, desc.d_ff_shared
        fmt = _input_format(weights.get("up"), input_dtype, "up") if "up" in weights else "f32"
        sfmt = (_input_format(weights.get("shared_up"), shared_input_dtype, "shared_up")
                if "shared_up" in weights else "f32")
        w.dtype, w.shared_dtype = _dtype(fmt, "input_dtype"), _dtype(sfmt, "shared_input_dtype")

        def matrix(name: str, rows: int, cols: int, form: str, lead: Tuple[int, ...], origin: str) -> None:
            a = _as_numpy(weights[name], name)
            # Every matrix of a group in the group's format (its bytes, for bf16 and the blocks).
            want_dtype = {"f32": (np.float32,), "f16": (np.float16,), "bf16": (np.uint16,)}.get(form, (np.uint8,))
            if a.dtype not in want_dtype or a.dtype.byteorder == ">":
                kind = weights[name].dtype if _is_torch(weights[name]) else a.dtype
                raise TypeError(f"{name}: dtype {kind}, but the group's format is {form} (from "
                                f"{origin}): expected "
                                + {"f32": "float32", "f16": "float16", "bf16": "torch.bfloat16 / uint16 bits"}
                                .get(form, "uint8 bytes of its rows"))
            if form in ("f32", "f16", "bf16") and a.shape != lead + (rows, cols):
                raise ValueError(f"{name}: shape {a.shape}, expected {lead + (rows, cols)}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{name}: not C-contiguous (use np.ascontiguousarray)")
            row = lib.moe_dtype_row_bytes(_dtype(form, name), cols)
            if row == 0:
                raise ValueError(f"{name}: rows of {cols} values do not fit {form}'s blocks")
            want = int(np.prod(lead, dtype=np.int64)) * rows * row
            if a.nbytes != want:
                raise ValueError(f"{name}: {a.nbytes} bytes, expected {want} ({form}, {lead + (rows, cols)})")
            keep.append(a)
            if lead:
                experts.append(a)
            setattr(w, name, a.ctypes.data)

        def vector(name: str, shape: Tuple[int, ...]) -> None:
            a = _float_array(weights[name], name, shape)
            keep.append(a)
            setattr(w, name, a.ctypes.data)

        if "router" in weights:
            vector("router", (E, D))
        if "router_bias" in weights:
            vector("router_bias", (E,))
        for name, rows, cols in (("gate", F, D), ("up", F, D), ("down", D, F)):
            if name in weights:
                matrix(name, rows, cols, fmt, (E,), "input_dtype" if input_dtype else "up's dtype")
        for name, rows, cols in (("shared_gate", S, D), ("shared_up", S, D), ("shared_down", D, S)):
            if name in weights:
                matrix(name, rows, cols, sfmt, (), "shared_input_dtype" if shared_input_dtype else "shared_up's dtype")
        if "shared_expert_gate" in weights:
            vector("shared_expert_gate", (D,))
        for name, width in (("gate_bias", F), ("up_bias", F), ("down_bias", D)):
            if name in weights:
                vector(name, (E, width))
        handle = ctypes.c_void_p()
        if placement is not None:
            ps, ps_arrays = placement._struct()  # its arrays, alive until the call returns
            with self._lock:
                _check(lib.moe_layer_create_placed(ctypes.byref(ps), ctypes.byref(desc), ctypes.byref(w),
                                                   ctypes.byref(handle)), context._handle)
        else:
            context._call(lib.moe_layer_create, ctypes.byref(desc), ctypes.byref(w), ctypes.byref(handle))
        self._handle = handle.value
        self._desc = desc
        if placement is not None and placement.cache is not None:
            self._sources = tuple(experts)  # the library keeps pointers into them for the uploads

    _contexts: Tuple[Context, ...] = ()  # a placed layer's contexts, kept alive with it
    _sources: Tuple[np.ndarray, ...] = ()  # the arrays a cached layer uploads from

    @classmethod
    def _adopt(cls, context: Context, handle: int, desc: _capi.LayerDesc,
               placement: Optional[Placement] = None) -> "Layer":
        layer = cls.__new__(cls)
        layer._ctx, layer._lock, layer._handle, layer._desc = context, context._lock, handle, desc
        if placement is not None:
            layer._lock, layer._contexts = placement._lock(), tuple(placement.contexts)
        return layer

    @property
    def placement(self) -> List[int]:
        """Each routed expert's context: its index in the Placement's contexts (all 0 for a
        layer on one context)."""
        where = (ctypes.c_int32 * max(self._desc.n_experts, 1))()
        self._call(lib.moe_layer_get_placement, ctypes.addressof(where))
        return list(where[: self._desc.n_experts])

    def track_usage(self, window: int = 64) -> None:
        """Counts the rows each routed expert receives, in total and over the last `window`
        forwards (0 stops); forward(..) and forward_buffers(..) are counted, forward_async is not
        (usage().uncounted_forwards says how many were not)."""
        self._call(lib.moe_layer_track_usage, int(window))

    def usage(self) -> "Usage":
        """The counts so far (moe_layer_get_usage)."""
        E = self._desc.n_experts
        total, window = np.zeros(E, np.int64), np.zeros(E, np.int64)
        u = new(_capi.ExpertUsage)
        u.routed_total, u.routed_window = total.ctypes.data, window.ctypes.data
        self._call(lib.moe_layer_get_usage, ctypes.byref(u))
        return Usage(total, window, u.window, u.window_forwards, u.forwards, u.tokens, u.uncounted_forwards)

    def cache_stats(self) -> CacheStats:
        """What the layer's expert cache has done so far (moe_layer_get_cache_stats); slots 0 and
        zeros for a layer without one."""
        return _cache_stats(lambda s: self._call(lib.moe_layer_get_cache_stats, ctypes.byref(s)),
                            self._desc.n_experts)

    def context_ms(self) -> np.ndarray:
        """float64 [contexts]: the device time the forwards that succeeded spent on each of a
        placed layer's contexts, in the Placement's order (the home's is its routing, shared
        expert and combine); InvalidArgumentError for a layer on one context."""
        n = max(len(self._contexts), 1)  # a layer on one context: the library refuses it, saying why
        ms = np.zeros(n, np.float64)
        self._call(lib.moe_layer_get_context_ms, n, ms.ctypes.data)
        return ms

    _kind = "layer"

    def _release(self, handle: int) -> None:
        lib.moe_layer_destroy(handle)

    @property
    def config(self) -> Dict[str, Any]:
        """The layer's settings (moe_layer_desc) by name."""
        return _desc_to_dict(self._desc)

    @property
    def context(self) -> Context:
        return self._ctx

    @property
    def activation_dtype(self) -> str:
        """What the experts' inputs are rounded to: "q8_0" when the integer opt-in runs, "bf16" when the
        bfloat16-pair one does (0.11.0), else "f32". (0.12.0) Each product (gate/up, down) runs it where
        its format takes it; a layer says so when any of its routed experts' products does."""
        with self._lock:
            return lib.moe_dtype_name(lib.moe_layer_activation_dtype(self._h())).decode()

    def _x(self, x: Any) -> np.ndarray:
        if _is_torch(x) and x.requires_grad and sys.modules["torch"].is_grad_enabled():
            raise TypeError("x requires grad: moe computes no gradients (inference only); call it "
                            "under torch.no_grad() or pass x.detach()")
        a = _as_numpy(x, "x")
        if a.ndim == 0 or a.shape[-1] != self._desc.d_model:
            raise ValueError(f"x: shape {a.shape}, expected (..., {self._desc.d_model}): "
                             "tokens, or batch and sequence, by d_model")
        return _float_array(x, "x", a.shape)

    def _stats(self, T: int) -> Tuple[_capi.ForwardStats, Routing]:
        k, E = self._desc.top_k, self._desc.n_experts
        r = Routing(np.empty((T, k), np.int32), np.empty((T, k), np.float32), np.empty(E, np.int32),
                    0, 0.0, 0.0, 0.0)
        scalars = (np.zeros(1, np.int32), np.zeros(2, np.float32), np.zeros(1, np.float64))
        s = new(_capi.ForwardStats)
        s.topk_ids, s.topk_weights = r.topk_ids.ctypes.data, r.topk_weights.ctypes.data
        s.expert_counts, s.dropped_count = r.expert_counts.ctypes.data, scalars[0].ctypes.data
        s.aux_loss, s.z_loss = scalars[1].ctypes.data, scalars[1].ctypes.data + 4
        s.device_ms = scalars[2].ctypes.data
        s._scalars = scalars  # type: ignore[attr-defined]
        return s, r

    @staticmethod
    def _finish(s: _capi.ForwardStats, r: Routing) -> Routing:
        dropped, losses, ms = s._scalars  # type: ignore[attr-defined]
        r.dropped, r.aux_loss, r.z_loss, r.device_ms = int(dropped[0]), float(losses[0]), float(losses[1]), float(ms[0])
        return r

    def forward(self, x: Any, *, out: Any = None, routing: bool = False) -> Any:
        """y = layer(x) for x float32 [..., d_model]: [tokens, d_model], or [batch, seq, d_model]
        as a PyTorch block takes it (its rows are the tokens, at most max_tokens). With
        routing=True returns (y, Routing), the Routing's arrays per row in order.

        x may be a NumPy array, a CPU PyTorch tensor or any DLPack / buffer-protocol array, read
        in place. y is a new array (a torch.Tensor when x is one, else NumPy), or `out` itself
        when given (float32, x's shape, C-contiguous, writable; written in place). Inference
        only: no gradients. The GIL is released while the library runs (calls on one context
        take turns: moe.h allows one thread in a context at a time)."""
        a = self._x(x)
        T = math.prod(a.shape[:-1])  # the leading axes are tokens, in order (not np.prod: 7 us a call)
        if out is None:
            y = np.empty_like(a)
            result = __import__("torch").from_numpy(y) if _is_torch(x) else y
        else:
            y, result = _float_array(out, "out", a.shape, writable=True), out
        stats, r = self._stats(T) if routing else (None, None)
        self._call(lib.moe_layer_forward, T, a.ctypes.data, y.ctypes.data,
                   ctypes.byref(stats) if stats is not None else None)
        return (result, self._finish(stats, r)) if routing else result

    __call__ = forward

    def forward_buffers(self, n_tokens: int, x: "Buffer", y: "Buffer", *, routing: bool = False) -> Optional[Routing]:
        """A forward on device buffers (no host round trip of the activations)."""
        stats, r = self._stats(int(n_tokens)) if routing else (None, None)
        self._call(lib.moe_layer_forward_buffers, int(n_tokens), x._h(), y._h(),
                   ctypes.byref(stats) if stats is not None else None)
        return self._finish(stats, r) if routing else None

    def forward_async(self, n_tokens: int, x: "Buffer", y: "Buffer") -> None:
        """Submits a forward on device buffers and returns; Context.wait completes it."""
        self._call(lib.moe_layer_forward_async, int(n_tokens), x._h(), y._h())

    def __repr__(self) -> str:
        d = self._desc
        where = self._ctx.backend if self._handle and self._ctx._handle else "a closed context" if self._handle else None
        return (f"<moe.Layer d_model={d.d_model} d_ff={d.d_ff} experts={d.n_experts} top_k={d.top_k}"
                + (f" on {where}>" if where else " closed>"))


class Buffer(_Handle):
    """A float32 tensor on the context's device (moe_buffer)."""

    def __init__(self, context: Context, n_elements: int):
        self._ctx, self._lock = context, context._lock
        handle = ctypes.c_void_p()
        context._call(lib.moe_buffer_create, int(n_elements), ctypes.byref(handle))
        self._handle = handle.value

    _kind = "buffer"

    def _release(self, handle: int) -> None:
        lib.moe_buffer_destroy(handle)

    def __len__(self) -> int:
        with self._lock:
            return int(lib.moe_buffer_elements(self._h()))

    def write(self, data: Any, offset: int = 0) -> None:
        a = _as_numpy(data, "data")
        a = _float_array(a, "data", a.shape)
        self._call(lib.moe_buffer_write, int(offset), a.size, a.ctypes.data)

    def read(self, n_elements: Optional[int] = None, offset: int = 0) -> np.ndarray:
        n = len(self) - int(offset) if n_elements is None else int(n_elements)
        out = np.empty(max(n, 0), np.float32)
        self._call(lib.moe_buffer_read, int(offset), n, out.ctypes.data)
        return out



class Model(_Handle):
    """A checkpoint: a Hugging Face model directory (config.json + safetensors) or a GGUF file."""

    def __init__(self, path: Union[str, os.PathLike]):
        self._lock = threading.RLock()
        handle = ctypes.c_void_p()
        _check(lib.moe_model_open(os.fsencode(path), ctypes.byref(handle)))
        self._handle = handle.value
        info = new(_capi.ModelInfo)
        self._call(lib.moe_model_get_info, ctypes.byref(info))
        self.model_type: str = info.model_type.decode()
        self.n_layers: int = info.n_layers
        self.n_decoder_layers: int = info.n_decoder_layers
        self.hidden_size: int = info.hidden_size
        self.n_experts: int = info.n_experts
        self.top_k: int = info.top_k
        self.n_files: int = info.n_files
        self.n_tensors: int = info.n_tensors

    _kind = "model"

    def _release(self, handle: int) -> None:
        lib.moe_model_close(handle)  # closes the files; layers made from the model stay valid

    def moe_layers(self, decoder: bool = False) -> list:
        """The indices of the layers with an MoE block."""
        n = self.n_decoder_layers if decoder else self.n_layers
        with self._lock:
            return [i for i in range(n) if lib.moe_model_layer_is_moe(self._h(), i, int(decoder))]

    @staticmethod
    def _options(max_tokens: int, weight_dtype: Optional[str], shared_weight_dtype: Optional[str],
                 activation_dtype: Optional[str], decoder: bool, drop_policy: str) -> _capi.ModelLayerOptions:
        o = new(_capi.ModelLayerOptions)
        o.max_tokens = int(max_tokens)
        o.weight_dtype = _dtype(weight_dtype, "weight_dtype")
        o.shared_weight_dtype = _dtype(shared_weight_dtype, "shared_weight_dtype")
        o.activation_dtype = _dtype(activation_dtype, "activation_dtype")
        o.decoder = int(bool(decoder))
        o.drop_policy = _enum(_capi.DROP_POLICIES, drop_policy, "drop_policy")
        return o

    def config(self, index: int, *, max_tokens: int = 0, weight_dtype: Optional[str] = None,
               shared_weight_dtype: Optional[str] = None, activation_dtype: Optional[str] = None,
               decoder: bool = False, drop_policy: str = "zero") -> Dict[str, Any]:
        """The settings of layer `index`'s MoE block, after checking its tensors."""
        o = self._options(max_tokens, weight_dtype, shared_weight_dtype, activation_dtype, decoder, drop_policy)
        desc = new(_capi.LayerDesc)
        self._call(lib.moe_model_layer_desc, int(index), ctypes.byref(o), ctypes.byref(desc))
        return _desc_to_dict(desc)

    def layer(self, context: Union[Context, Placement], index: int, *, max_tokens: int = 0,
              weight_dtype: Optional[str] = None, shared_weight_dtype: Optional[str] = None,
              activation_dtype: Optional[str] = None,
              decoder: bool = False, drop_policy: str = "zero") -> Layer:
        """A layer on `context` from layer `index`'s MoE block (max_tokens 0: 1024; the experts
        keep the checkpoint's format unless weight_dtype names another). With a Placement the
        routed experts are spread over its contexts (moe_model_create_layer_placed)."""
        o = self._options(max_tokens, weight_dtype, shared_weight_dtype, activation_dtype, decoder, drop_policy)
        desc = new(_capi.LayerDesc)
        self._call(lib.moe_model_layer_desc, int(index), ctypes.byref(o), ctypes.byref(desc))
        handle = ctypes.c_void_p()
        if isinstance(context, Placement):
            placement, home = context, context._home()
            ps, ps_arrays = placement._struct()  # its arrays, alive until the call returns
            with placement._lock(), self._lock:
                _check(lib.moe_model_create_layer_placed(ctypes.byref(ps), self._h(), int(index), ctypes.byref(o),
                                                         ctypes.byref(handle)), home._handle)
            return Layer._adopt(home, handle.value, desc, placement)
        with context._lock, self._lock:
            _check(lib.moe_model_create_layer(context._h(), self._h(), int(index), ctypes.byref(o),
                                              ctypes.byref(handle)), context._handle)
        return Layer._adopt(context, handle.value, desc)

    def __repr__(self) -> str:
        return f"<moe.Model {self.model_type}: {self.n_layers} layers, {self.n_experts} experts, top-{self.top_k}>"
