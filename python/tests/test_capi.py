"""python/moe/_capi.py's structs against moe.h itself: a C compiler prints every field's offset
its size and whether it is floating-point, every struct's size and the enums' values, which must
equal ctypes'. Skipped where there is no compiler or header
(an installed wheel away from the repository)."""

import ctypes
import os
import pickle
import shutil
import subprocess

import pytest

import moe
from moe import _capi
from conftest import REPO

# moe.h's enums, as _capi spells them: each name upper-cased after the prefix is moe.h's constant.
ENUMS = [(_capi.BACKENDS, "MOE_BACKEND_"), (_capi.SCORE_FUNCS, "MOE_SCORE_"), (_capi.ACTIVATIONS, "MOE_ACTIVATION_"),
         (_capi.DROP_POLICIES, "MOE_DROP_"), (_capi.GROUP_SCORES, "MOE_GROUP_SCORE_"),
         (_capi.CACHE_POLICIES, "MOE_CACHE_"),
         ({name: code for code, name in _capi.DEVICE_TYPES.items()}, "MOE_DEVICE_TYPE_")]

STRUCTS = {
    "moe_device_info": _capi.DeviceInfo, "moe_context_desc": _capi.ContextDesc,
    "moe_arena_stats": _capi.ArenaStats, "moe_layer_desc": _capi.LayerDesc,
    "moe_layer_weights": _capi.LayerWeights, "moe_forward_stats": _capi.ForwardStats,
    "moe_model_info": _capi.ModelInfo, "moe_model_layer_options": _capi.ModelLayerOptions,
    "moe_placement": _capi.Placement, "moe_expert_usage": _capi.ExpertUsage,
    "moe_expert_cache_desc": _capi.ExpertCacheDesc, "moe_expert_cache_stats": _capi.ExpertCacheStats,
}


def test_structs_match_moe_h(tmp_path):
    header = os.path.join(REPO, "include", "moe.h")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not (cc and os.path.exists(header)):
        pytest.skip("needs a C compiler and include/moe.h")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "moe.h"',
             # 1 for a floating-point field, 0 for the rest (integers, pointers, arrays)
             "#define KIND(x) _Generic((x), float: 1, double: 1, default: 0)", "int main(void) {"]
    for cname, py in STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof({cname}));')
        for field, _ in py._fields_:
            member = f"((({cname} *)0)->{field})"
            lines.append(f'printf("{cname}.{field} %zu %zu %d\\n", offsetof({cname}, {field}), '
                         f'sizeof{member}, KIND{member});')
    for table, prefix in ENUMS:
        for name in table:
            lines.append(f'printf("{prefix}{name.upper()} %d\\n", (int){prefix}{name.upper()});')
    lines.append("return 0; }")
    src = tmp_path / "offsets.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "offsets"
    subprocess.run([cc, "-I", os.path.dirname(header), str(src), "-o", str(exe)], check=True)
    got = {line.split()[0]: line.split()[1:] for line in
           subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()}
    for cname, py in STRUCTS.items():
        # equal sizes: no field of moe.h's is missing at the end (moe.h only appends fields)
        assert int(got[cname][0]) == ctypes.sizeof(py), f"sizeof({cname})"
        for field, ftype in py._fields_:
            offset, size, is_float = (int(v) for v in got[f"{cname}.{field}"])
            assert offset == getattr(py, field).offset, f"{cname}.{field}: offset"
            assert size == ctypes.sizeof(ftype), f"{cname}.{field}: size"
            assert is_float == (ftype in (ctypes.c_float, ctypes.c_double)), f"{cname}.{field}: float or not"
    for table, prefix in ENUMS:
        for name, value in table.items():
            assert int(got[f"{prefix}{name.upper()}"][0]) == value, f"{prefix}{name.upper()}"


def test_every_status_has_its_name_and_exception():
    """The library's name for each status is _capi's, and each maps to a MoeError subclass; the
    first code past the last is unknown to both (a status added to moe.h fails here)."""
    last = min(_capi.STATUS_NAMES)
    for status, name in _capi.STATUS_NAMES.items():
        assert _capi.lib.moe_status_string(status).decode() == name
        if status:
            assert issubclass(moe._ERRORS[status], moe.MoeError), name
    assert _capi.lib.moe_status_string(last - 1).decode() not in _capi.STATUS_NAMES.values()


def test_errors_pickle():
    e = moe.InvalidArgumentError(-3, "top_k must be <= n_experts")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is moe.InvalidArgumentError and back.status == -3 and back.message == e.message
