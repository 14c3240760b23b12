#!/usr/bin/env python3
"""Fixtures for tests/test_dtype.c: rows of float32 values and the bytes ggml's reference
quantizers give them, as implemented by the `gguf` Python package (the package llama.cpp
publishes; its quants.py mirrors ggml-quants.c's *_ref functions bit for bit).

    python3 -m venv venv && venv/bin/pip install gguf numpy
    venv/bin/python tests/data/gguf-quants/make_fixtures.py tests/data/gguf-quants

Writes, for ROWS rows of COLS values (little-endian, row after row):
    rows.f32            the input values
    <fmt>.bin           gguf.quants.quantize(rows, <fmt>) for f16, bf16, q8_0, q4_0, mxfp4
    <fmt>.deq.f32       gguf.quants.dequantize(<fmt>.bin, <fmt>) as float32
    meta.txt            "ROWS COLS" and the gguf package version that made them
The first rows are edge cases (zero blocks, ties of the rounding rules, a negative extreme,
tiny and huge scales, fp16 limits), then random rows at several scales, then (last, so the rows
before keep their bytes) MXFP4's edge cases: ties between codes, a largest value just below and
at a power of two, tiny blocks whose exponent byte wraps, the largest exponents.
"""
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

COLS = 256
RANDOM_ROWS = 48


def edge_rows() -> list:
    rows = []
    z = np.zeros(COLS, np.float32)
    rows.append(z.copy())  # every block zero: scale 0
    r = np.zeros(COLS, np.float32)
    r[:32] = np.arange(32, dtype=np.float32) * 0.5 - 8.0  # halves: ties for roundf
    r[32:64] = np.linspace(-127, 127, 32, dtype=np.float32)  # amax 127: d = 1
    r[64:96] = np.arange(32, dtype=np.float32) * 0.5 - 8.0  # Q4_0: max -8 -> d = 1
    r[96:128] = -(np.arange(32, dtype=np.float32) * 0.25)  # the extreme is negative
    r[128:160] = np.float32(1e-6) * np.arange(32, dtype=np.float32)  # fp16 scale subnormal
    r[160:192] = np.float32(3e-9) * np.arange(32, dtype=np.float32)  # scale rounds to 0
    r[192:224] = np.float32(1e6) * np.sin(np.arange(32, dtype=np.float32))  # large scale
    r[224:256] = np.float32(8.5e6) * np.cos(np.arange(32, dtype=np.float32))  # scale overflows fp16
    rows.append(r)
    h = np.zeros(COLS, np.float32)
    specials = [65504.0, 65519.0, 65520.0, -65536.0, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26,
                2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, -0.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11,
                1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.0e38, -1e-40]
    h[:len(specials)] = np.array(specials, np.float32)
    h[32:64] = np.float32(7.0)  # a block of equal values
    h[64:96] = -np.float32(7.0)
    rows.append(h)
    return rows


def mxfp4_rows() -> list:
    r = np.zeros(COLS, np.float32)
    kv = np.array([0, 1, 2, 3, 4, 6, 8, 12], np.float32)
    mids = (kv[1:] + kv[:-1]) / 2  # halfway between neighbouring codes: ties, the first code wins
    r[0:7], r[7:14], r[14:16] = mids, -mids, [12.0, -12.0]  # amax 12: e = 128, scale 1
    r[32:64] = np.float32(4.0) * np.float32(1 - 2.0 ** -24) * np.linspace(-1, 1, 32, dtype=np.float32)
    r[64:96] = np.float32(2.0 ** 20) * np.float32(1 - 2.0 ** -24) * np.sin(np.arange(32, dtype=np.float32) + 1)
    r[64] = np.float32(2.0 ** 20) * np.float32(1 - 2.0 ** -24)  # just below a power of two
    r[96:128] = np.float32(2.0 ** 20) * np.cos(np.arange(32, dtype=np.float32))
    r[96] = np.float32(2.0 ** 20)  # exactly a power of two
    r[128:160] = np.float32(2.0 ** -126) * np.arange(32, dtype=np.float32) / 31  # e would be -1: wraps
    r[160:192] = np.float32(1e-40) * np.arange(32, dtype=np.float32)  # subnormal values
    r[192:224] = np.float32(3.0e38) * np.sin(np.arange(32, dtype=np.float32) + 0.5)  # e = 252
    r[224:256] = np.float32(2.0 ** -120) * np.sin(np.arange(32, dtype=np.float32) + 0.5)  # scale 2^-125
    return [r]


def main() -> None:
    out = Path(sys.argv[1])
    rng = np.random.default_rng(20261201)
    rows = edge_rows()
    for i in range(RANDOM_ROWS):
        scale = [1e-3, 0.05, 1.0, 30.0][i % 4]
        rows.append((rng.standard_normal(COLS) * scale).astype(np.float32))
    rows += mxfp4_rows()
    data = np.stack(rows).astype(np.float32)
    data.tofile(out / "rows.f32")
    fmts = {"f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "mxfp4": Q.MXFP4}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for name, q in fmts.items():
            b = quants.quantize(data, q)
            b.tofile(out / f"{name}.bin")
            quants.dequantize(b, q).astype(np.float32).tofile(out / f"{name}.deq.f32")
    (out / "meta.txt").write_text(f"{data.shape[0]} {COLS}\ngguf {version('gguf')} numpy {np.__version__}\n")


if __name__ == "__main__":
    main()
