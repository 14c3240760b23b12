"""ctypes declarations of moe.h: the shared library, its structs and its functions.

The structs mirror moe.h field for field (this file is the only place that spells them in
Python). Each carries struct_size, and the library reads a struct by the size it is handed (an
older, smaller one works; a larger one is refused), and python/tests/test_capi.py compiles moe.h
to compare every field's offset and every struct's size with these.
"""

from __future__ import annotations

import ctypes
import glob
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_int32,
                    c_int64, c_size_t, c_uint32, c_uint64, c_void_p)

# ---- enums (moe.h) ---------------------------------------------------------------------------

STATUS_NAMES = {
    0: "MOE_OK", -1: "MOE_ERROR_NULL_POINTER", -2: "MOE_ERROR_INVALID_SIZE",
    -3: "MOE_ERROR_INVALID_CONFIG", -4: "MOE_ERROR_SIZE_OVERFLOW", -5: "MOE_ERROR_TOKEN_BUDGET",
    -6: "MOE_ERROR_INVALID_ARGUMENT", -7: "MOE_ERROR_OUT_OF_MEMORY",
    -8: "MOE_ERROR_OUT_OF_DEVICE_MEMORY", -9: "MOE_ERROR_BACKEND_UNAVAILABLE",
    -10: "MOE_ERROR_DEVICE_LOST", -11: "MOE_ERROR_BACKEND", -12: "MOE_ERROR_UNSUPPORTED",
    -13: "MOE_ERROR_IO", -14: "MOE_ERROR_FORMAT", -15: "MOE_ERROR_INTERNAL", -16: "MOE_ERROR_BUSY",
}

BACKENDS = {"auto": 0, "cpu": 1, "vulkan": 2, "opencl": 3}
DEVICE_TYPES = {0: "other", 1: "cpu", 2: "integrated_gpu", 3: "discrete_gpu", 4: "virtual_gpu"}
SCORE_FUNCS = {"softmax": 0, "sigmoid": 1}
GROUP_SCORES = {"top2_sum": 0, "max": 1}
ACTIVATIONS = {"swiglu": 0, "geglu": 1, "relu": 2, "gelu": 3, "swiglu_oai": 4}
DROP_POLICIES = {"zero": 0, "passthrough": 1}
CACHE_POLICIES = {"lru": 0, "lfu": 1}


# ---- structs (moe.h) -------------------------------------------------------------------------

class DeviceInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("backend", c_int), ("index", c_int), ("type", c_int),
        ("name", c_char * 256), ("vendor", c_char * 128), ("driver", c_char * 128),
        ("memory_bytes", c_uint64), ("compute_units", c_int), ("api_version", c_char * 64),
        ("max_workgroup_size", c_uint64), ("shared_memory_bytes", c_uint64),
        ("subgroup_size", c_int), ("fp16", c_int), ("features", c_uint32),
        ("features_used", c_uint32),
    ]


LOG_FN = ctypes.CFUNCTYPE(None, c_int, c_char_p, c_void_p)


class ContextDesc(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("backend", c_int), ("device_index", c_int),
        ("n_threads", c_int), ("log", LOG_FN), ("log_user_data", c_void_p), ("log_level", c_int),
        ("device_name", c_char_p), ("device_types", c_uint32), ("external_device", c_void_p),
    ]


class ArenaStats(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("weights_bytes", c_size_t), ("scratch_bytes", c_size_t),
        ("scratch_peak_bytes", c_size_t), ("staging_bytes", c_size_t),
        ("buffer_bytes", c_size_t), ("allocation_count", c_uint64),
        ("scratch_reservations", c_uint64),
    ]


class LayerDesc(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("d_model", c_int64), ("d_ff", c_int64),
        ("n_experts", c_int64), ("top_k", c_int64), ("max_tokens", c_int64),
        ("score_func", c_int), ("n_group", c_int64), ("topk_group", c_int64),
        ("group_score", c_int), ("renormalize", c_int), ("routed_scaling_factor", c_float),
        ("has_selection_bias", c_int), ("activation", c_int), ("d_ff_shared", c_int64),
        ("shared_expert_gate", c_int), ("expert_capacity", c_int64), ("drop_policy", c_int),
        ("weight_dtype", c_int), ("shared_weight_dtype", c_int), ("reserved_0_3_0", c_int32),
        ("activation_dtype", c_int), ("down_weight_dtype", c_int),
        ("shared_down_weight_dtype", c_int), ("router_has_bias", c_int),
        ("expert_has_bias", c_int), ("swiglu_alpha", c_float), ("swiglu_limit", c_float),
    ]


class LayerWeights(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("router", c_void_p), ("router_bias", c_void_p),
        ("gate", c_void_p), ("up", c_void_p), ("down", c_void_p), ("shared_gate", c_void_p),
        ("shared_up", c_void_p), ("shared_down", c_void_p), ("shared_expert_gate", c_void_p),
        ("dtype", c_int), ("shared_dtype", c_int), ("gate_bias", c_void_p),
        ("up_bias", c_void_p), ("down_bias", c_void_p),
    ]


class ForwardStats(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("topk_ids", c_void_p), ("topk_weights", c_void_p),
        ("expert_counts", c_void_p), ("dropped_count", c_void_p), ("aux_loss", c_void_p),
        ("z_loss", c_void_p), ("device_ms", c_void_p),
    ]


class ModelInfo(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("model_type", c_char * 64), ("n_layers", c_int64),
        ("n_decoder_layers", c_int64), ("hidden_size", c_int64), ("n_experts", c_int64),
        ("top_k", c_int64), ("n_moe_layers", c_int64), ("first_moe_layer", c_int64),
        ("n_files", c_int), ("n_tensors", c_int64),
    ]


class ModelLayerOptions(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("max_tokens", c_int64), ("drop_policy", c_int),
        ("decoder", c_int), ("weight_dtype", c_int), ("shared_weight_dtype", c_int),
        ("activation_dtype", c_int),
    ]


class Placement(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("n_contexts", c_int), ("contexts", c_void_p), ("home", c_int),
        ("expert_context", c_void_p), ("budget_bytes", c_void_p), ("expert_order", c_void_p),
        ("cache", c_void_p),
    ]


class ExpertCacheDesc(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("context", c_int), ("slots", c_int64), ("budget_bytes", c_uint64),
        ("policy", c_int), ("min_rows", c_int64), ("halving_forwards", c_int64),
    ]


class ExpertCacheStats(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("context", c_int), ("slots", c_int64), ("bytes", c_size_t),
        ("forwards", c_int64), ("hits", c_int64), ("misses", c_int64), ("uploads", c_int64),
        ("evictions", c_int64), ("upload_bytes", c_uint64), ("upload_ms", c_double),
        ("rows_cached", c_int64), ("rows_elsewhere", c_int64), ("slot_expert", c_void_p),
        ("expert_hits", c_void_p), ("expert_misses", c_void_p), ("expert_uploads", c_void_p),
    ]


class ExpertUsage(Structure):
    _fields_ = [
        ("struct_size", c_size_t), ("routed_total", c_void_p), ("routed_window", c_void_p), ("window", c_int64),
        ("window_forwards", c_int64), ("forwards", c_int64), ("tokens", c_int64), ("uncounted_forwards", c_int64),
    ]


def new(struct_type):
    """A zeroed struct with its struct_size set, as moe.h asks."""
    s = struct_type()
    s.struct_size = ctypes.sizeof(struct_type)
    return s


# ---- the library -----------------------------------------------------------------------------

def _find_library() -> str:
    """The shared library: $MOE_LIBRARY, else the one installed beside this package."""
    env = os.environ.get("MOE_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for pattern in ("libmoe.so*", "libmoe*.dylib", "moe.dll", "libmoe.dll"):
        found = sorted(glob.glob(os.path.join(here, pattern)))
        if found:
            return found[0]
    raise ImportError(f"moe: no shared library beside {here} (build the package with pip, "
                      "or point MOE_LIBRARY at libmoe.so)")


# CDLL (not PyDLL): ctypes releases the GIL for the length of every call, forwards included.
lib = ctypes.CDLL(_find_library())
library_path = lib._name

_ptr = c_void_p
_status = c_int
_SIGNATURES = {
    "moe_status_string": (c_char_p, [c_int]),
    "moe_last_error": (c_char_p, []),
    "moe_version": (c_char_p, []),
    "moe_version_number": (c_int, []),
    "moe_feature_name": (c_char_p, [c_uint32]),
    "moe_backend_name": (c_char_p, [c_int]),
    "moe_backend_is_built": (c_int, [c_int]),
    "moe_device_count": (_status, [c_int, POINTER(c_int)]),
    "moe_device_get_info": (_status, [c_int, c_int, POINTER(DeviceInfo)]),
    "moe_context_desc_set_device": (_status, [POINTER(ContextDesc), c_char_p]),
    "moe_context_create": (_status, [POINTER(ContextDesc), POINTER(_ptr)]),
    "moe_context_destroy": (None, [_ptr]),
    "moe_context_backend": (c_int, [_ptr]),
    "moe_context_get_device_info": (_status, [_ptr, POINTER(DeviceInfo)]),
    "moe_context_error": (c_char_p, [_ptr]),
    "moe_context_get_arena_stats": (_status, [_ptr, POINTER(ArenaStats)]),
    "moe_context_wait": (_status, [_ptr]),
    "moe_dtype_name": (c_char_p, [c_int]),
    "moe_dtype_from_name": (_status, [c_char_p, POINTER(c_int)]),
    "moe_dtype_block_size": (c_int64, [c_int]),
    "moe_dtype_row_bytes": (c_size_t, [c_int, c_int64]),
    "moe_dtype_takes_activations": (c_int, [c_int, c_int]),
    "moe_convert_row": (_status, [c_int, _ptr, c_int, _ptr, c_int64]),
    "moe_layer_create": (_status, [_ptr, POINTER(LayerDesc), POINTER(LayerWeights), POINTER(_ptr)]),
    "moe_layer_destroy": (None, [_ptr]),
    "moe_layer_activation_dtype": (c_int, [_ptr]),
    "moe_layer_forward": (_status, [_ptr, c_int64, _ptr, _ptr, POINTER(ForwardStats)]),
    "moe_buffer_create": (_status, [_ptr, c_int64, POINTER(_ptr)]),
    "moe_buffer_destroy": (None, [_ptr]),
    "moe_buffer_elements": (c_int64, [_ptr]),
    "moe_buffer_write": (_status, [_ptr, c_int64, c_int64, _ptr]),
    "moe_buffer_read": (_status, [_ptr, c_int64, c_int64, _ptr]),
    "moe_layer_forward_buffers": (_status, [_ptr, c_int64, _ptr, _ptr, POINTER(ForwardStats)]),
    "moe_layer_forward_async": (_status, [_ptr, c_int64, _ptr, _ptr]),
    "moe_model_open": (_status, [c_char_p, POINTER(_ptr)]),
    "moe_model_close": (None, [_ptr]),
    "moe_model_get_info": (_status, [_ptr, POINTER(ModelInfo)]),
    "moe_model_layer_is_moe": (c_int, [_ptr, c_int64, c_int]),
    "moe_model_layer_desc": (_status, [_ptr, c_int64, POINTER(ModelLayerOptions), POINTER(LayerDesc)]),
    "moe_model_create_layer": (_status, [_ptr, _ptr, c_int64, POINTER(ModelLayerOptions), POINTER(_ptr)]),
    "moe_layer_create_placed": (_status, [POINTER(Placement), POINTER(LayerDesc), POINTER(LayerWeights),
                                          POINTER(_ptr)]),
    "moe_model_create_layer_placed": (_status, [POINTER(Placement), _ptr, c_int64, POINTER(ModelLayerOptions),
                                                POINTER(_ptr)]),
    "moe_layer_get_placement": (_status, [_ptr, _ptr]),
    "moe_layer_track_usage": (_status, [_ptr, c_int64]),
    "moe_layer_get_usage": (_status, [_ptr, POINTER(ExpertUsage)]),
    "moe_usage_expert_order": (_status, [_ptr, c_int64, _ptr]),
    "moe_usage_save": (_status, [c_char_p, _ptr, _ptr, c_int64]),
    "moe_usage_load": (_status, [c_char_p, c_int64, c_int64, _ptr]),
    "moe_layer_get_cache_stats": (_status, [_ptr, POINTER(ExpertCacheStats)]),
    "moe_layer_get_context_ms": (_status, [_ptr, c_int, _ptr]),
    "moe_reference_forward": (_status, [POINTER(LayerDesc), POINTER(LayerWeights), c_int64, _ptr, _ptr,
                                        POINTER(ForwardStats)]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    # A call an older library (MOE_LIBRARY) lacks stays unset: moe/__init__.py then refuses the
    # library by its version, with a message, rather than this loop with an AttributeError.
    _fn = getattr(lib, _name, None)
    if _fn is None:
        continue
    _fn.restype = _res
    _fn.argtypes = _args

# Unused names kept out of the module's namespace.
del _name, _res, _args, _fn
__all__ = ["lib", "library_path", "new", "DeviceInfo", "ContextDesc", "ArenaStats", "LayerDesc", "Placement", "ExpertUsage",
           "ExpertCacheDesc", "ExpertCacheStats", "LayerWeights", "ForwardStats", "ModelInfo", "ModelLayerOptions",
           "LOG_FN", "c_double"]
