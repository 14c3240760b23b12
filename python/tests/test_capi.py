"""python/moe/_capi.py's structs against moe.h itself: a C compiler prints every field's offset
and every struct's size, which must equal ctypes'. Skipped where there is no compiler or header
(an installed wheel away from the repository)."""

import ctypes
import os
import shutil
import subprocess

import pytest

from moe import _capi
from conftest import REPO

STRUCTS = {
    "moe_device_info": _capi.DeviceInfo, "moe_context_desc": _capi.ContextDesc,
    "moe_arena_stats": _capi.ArenaStats, "moe_layer_desc": _capi.LayerDesc,
    "moe_layer_weights": _capi.LayerWeights, "moe_forward_stats": _capi.ForwardStats,
    "moe_model_info": _capi.ModelInfo, "moe_model_layer_options": _capi.ModelLayerOptions,
}


def test_structs_match_moe_h(tmp_path):
    header = os.path.join(REPO, "include", "moe.h")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not (cc and os.path.exists(header)):
        pytest.skip("needs a C compiler and include/moe.h")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "moe.h"', "int main(void) {"]
    for cname, py in STRUCTS.items():
        lines.append(f'printf("{cname} %zu\\n", sizeof({cname}));')
        for field, _ in py._fields_:
            lines.append(f'printf("{cname}.{field} %zu\\n", offsetof({cname}, {field}));')
    lines.append("return 0; }")
    src = tmp_path / "offsets.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "offsets"
    subprocess.run([cc, "-I", os.path.dirname(header), str(src), "-o", str(exe)], check=True)
    got = dict(line.split() for line in subprocess.run([str(exe)], check=True, capture_output=True,
                                                       text=True).stdout.splitlines())
    for cname, py in STRUCTS.items():
        # equal sizes: no field of moe.h's is missing at the end (moe.h only appends fields)
        assert int(got[cname]) == ctypes.sizeof(py), f"sizeof({cname})"
        for field, _ in py._fields_:
            assert int(got[f"{cname}.{field}"]) == getattr(py, field).offset, f"{cname}.{field}"
