#!/usr/bin/env python3
"""Fixtures for tests/test_dtype.c's K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): block bytes and what the `gguf`
Python package (llama.cpp's; its quants.py mirrors ggml-quants.c's dequantize_row_*) decodes them to.

    python3 -m venv venv && venv/bin/pip install gguf numpy
    venv/bin/python tests/data/gguf-quants/make_kquant_fixtures.py tests/data/gguf-quants

Writes, for ROWS rows of COLS values (2 super-blocks of QK_K = 256 a row; little-endian, row after row):
    q4_k.bin, q5_k.bin, q6_k.bin, q3_k.bin,      the block bytes (144, 176, 210, 110, 84 bytes a
    q2_k.bin                                     super-block)
    q4_k.deq.f32, ..., q2_k.deq.f32              gguf.quants.dequantize(<fmt>.bin, <fmt>) as float32
    kquants.txt                                  "ROWS COLS" and the gguf and numpy versions that made them
gguf 0.19.0 has no K-quant quantizer (gguf.quants.quantize raises NotImplementedError for them), so
the bytes are random with sane scales rather than quantised values: fp16 d and dmin finite in
1e-4..0.05 (Q6_K's d with a random sign: ggml's quantize_row_q6_K_ref writes d = -max_scale/128,
which is negative for about half of the super-blocks; Q3_K's likewise, quantize_row_q3_K_ref writing
d = 1/iscale with iscale = -32/max_scale), every other byte random (every bit pattern of the packed
6-bit scales/mins, the int8 Q6_K scales, Q3_K's hmask, Q2_K's 4-bit scale/min nibbles and the
quants is valid). Rows 0..2 (Q3_K and Q2_K: 0..3) are edge cases: d = 0, dmin = 0, negative d,
fp16-subnormal d, the largest scales with the largest quants, all-zero quants (Q2_K: also signed
zeros and the largest fp16 d and dmin). The script also decodes every fixture with its own
element-by-element decoder written from ggml's C and checks that it gives gguf's floats bit for bit.

Q3_K (moe 0.15.0) and Q2_K (0.16.0) came after the others: their blocks come from generators of
their own (SEED_Q3K, SEED_Q2K), so the files made before each, drawn from SEED and SEED_Q3K, are
byte for byte what they were.
"""
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

QK_K = 256
COLS = 512  # 2 super-blocks a row
ROWS = 12
NB = COLS // QK_K
SEED = 20261202      # Q4_K, Q5_K, Q6_K, one stream in that order
SEED_Q3K = 20270115  # Q3_K's own stream (see above)
SEED_Q2K = 20270301  # Q2_K's own stream
SIZE = {"q4_k": 144, "q5_k": 176, "q6_k": 210, "q3_k": 110, "q2_k": 84}
QTYPE = {"q4_k": Q.Q4_K, "q5_k": Q.Q5_K, "q6_k": Q.Q6_K, "q3_k": Q.Q3_K, "q2_k": Q.Q2_K}
# byte offset of the fp16 d (and dmin) in each block
D_AT = {"q4_k": 0, "q5_k": 0, "q6_k": 208, "q3_k": 108, "q2_k": 80}
DMIN_AT = {"q4_k": 2, "q5_k": 2, "q2_k": 82}


def h(v) -> np.ndarray:
    """The 2 little-endian bytes of fp16 v."""
    return np.frombuffer(np.array(v, dtype="<f2").tobytes(), np.uint8)


def random_scale(rng) -> np.float16:
    """A finite positive fp16 in 1e-4..0.05, log-uniform."""
    return np.float16(np.exp(rng.uniform(np.log(1e-4), np.log(0.05))))


def make_blocks(fmt: str, rng) -> np.ndarray:
    """(ROWS, NB, SIZE) uint8: random bytes, then d/dmin set row by row."""
    b = rng.integers(0, 256, size=(ROWS, NB, SIZE[fmt]), dtype=np.uint8)
    for r in range(ROWS):
        for j in range(NB):
            d = random_scale(rng)
            if fmt in ("q6_k", "q3_k") and rng.integers(0, 2):
                d = -d
            b[r, j, D_AT[fmt]:D_AT[fmt] + 2] = h(d)
            if fmt in DMIN_AT:
                b[r, j, DMIN_AT[fmt]:DMIN_AT[fmt] + 2] = h(random_scale(rng))
    # edge rows
    dd, dm = D_AT[fmt], DMIN_AT.get(fmt)
    if fmt in ("q4_k", "q5_k"):
        b[0, 0, dd:dd + 2] = h(0.0)                    # d = 0: values are -dmin*m
        b[0, 1, dm:dm + 2] = h(0.0)                    # dmin = 0: values are d*sc*q
        b[1, 0, 4:16] = 0xFF                           # every scale and min 63 ...
        b[1, 0, 16:] = 0xFF                            # ... every q 15 (Q5_K: 31)
        b[1, 0, dd:dd + 2] = h(0.05)
        b[1, 0, dm:dm + 2] = h(0.05)
        b[1, 1, dd:dd + 2] = h(3 * 2.0 ** -24)         # fp16 subnormal d and dmin
        b[1, 1, dm:dm + 2] = h(2.0 ** -20)
        b[2, 0, 16:] = 0                               # every q 0: values are -dmin*m
        b[2, 1, dd:dd + 2] = h(-0.0123)                # negative d and dmin (ggml never writes
        b[2, 1, dm:dm + 2] = h(-0.0045)                # them, but the format holds them)
    elif fmt == "q6_k":  # ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208
        b[0, 0, dd:dd + 2] = h(0.0)                    # d = 0
        b[0, 1, dd:dd + 2] = h(-0.0217)                # negative d
        b[1, 0, 192:208] = 127                         # largest scales ...
        b[1, 0, 0:192] = 0xFF                          # ... with q = 63 (q - 32 = 31)
        b[1, 0, dd:dd + 2] = h(0.05)
        b[1, 1, 192:208] = np.uint8(0x80)              # scale -128 ...
        b[1, 1, 0:192] = 0                             # ... with q = 0 (q - 32 = -32)
        b[1, 1, dd:dd + 2] = h(0.05)
        b[2, 0, 192:208] = np.uint8(0x80)              # scale -128, negative d
        b[2, 0, dd:dd + 2] = h(-0.0371)
        b[2, 1, dd:dd + 2] = h(5 * 2.0 ** -24)         # fp16 subnormal d
    elif fmt == "q3_k":  # hmask[32] @0, qs[64] @32, scales[12] @96, d @108; value d*(sc - 32)*(q - 4)
        b[0, 0, dd:dd + 2] = h(0.0)                    # d = 0
        b[0, 1, dd:dd + 2] = h(-0.0217)                # negative d
        b[1, 0, 0:108] = 0xFF                          # every scale 63 (sc - 32 = 31) with q = 7
        b[1, 0, dd:dd + 2] = h(0.05)                   # (third bit set, low bits 3: q - 4 = 3)
        b[1, 1, 0:108] = 0                             # every scale 0 (sc - 32 = -32) with q = 0
        b[1, 1, dd:dd + 2] = h(0.05)                   # (q - 4 = -4): the largest value, 6.4
        b[2, 0, 96:108] = 0                            # scale 0 (-32), negative d
        b[2, 0, dd:dd + 2] = h(-0.0371)
        b[2, 1, dd:dd + 2] = h(7 * 2.0 ** -24)         # fp16 subnormal d
        b[3, 0, 0:32] = 0xFF                           # every third bit set, the low bits 0: q = 4,
        b[3, 0, 32:96] = 0                             # q - 4 = 0 (signed zeros: -0 where d*(sc - 32) < 0)
        b[3, 1, 96:104] = 0                            # every scale 32 (low nibbles 0, top bits 2):
        b[3, 1, 104:108] = 0xAA                        # d*(sc - 32) = 0 whatever the quants
        b[3, 1, dd:dd + 2] = h(-0.0123)
    elif fmt == "q2_k":  # scales[16] @0 (sc low nibble, m high), qs[64] @16, d @80, dmin @82;
        # value d*sc*q - dmin*m (ggml's quantize_row_q2_K_ref writes d, dmin >= 0; the format holds any)
        b[0, 0, dd:dd + 2] = h(0.0)                    # d = 0: values are -dmin*m
        b[0, 1, dm:dm + 2] = h(0.0)                    # dmin = 0: values are d*sc*q
        b[1, 0, 0:80] = 0xFF                           # every sc and m 15, every q 3: the
        b[1, 0, dd:dd + 2] = h(0.05)                   # largest value 0.05*15*3 - 0.05*15 = 1.5
        b[1, 0, dm:dm + 2] = h(0.05)
        b[1, 1, dd:dd + 2] = h(3 * 2.0 ** -24)         # fp16 subnormal d and dmin
        b[1, 1, dm:dm + 2] = h(5 * 2.0 ** -24)
        b[2, 0, 16:80] = 0                             # every q 0: values are -dmin*m
        b[2, 1, dd:dd + 2] = h(-0.0123)                # negative d and dmin
        b[2, 1, dm:dm + 2] = h(-0.0045)
        b[3, 0, 0:16] = 0                              # every sc and m 0 with d < 0 and dmin > 0:
        b[3, 0, dd:dd + 2] = h(-0.0217)                # (-0)*q - (+0) = -0, every value (signed zeros)
        b[3, 1, 0:16] = 0xF0                           # sc 0, m 15 with fp16's largest d and dmin:
        b[3, 1, dd:dd + 2] = h(65504.0)                # the values -65504*15 = -982560, finite
        b[3, 1, dm:dm + 2] = h(65504.0)
    return b


# ---- an independent decoder, element by element, from ggml's C (dequantize_row_q{2,3,4,5,6}_K) ----
def f16(block, at) -> np.float32:
    return np.float32(np.frombuffer(bytes(block[at:at + 2]), "<f2")[0])


def scale_min_k4(j, s):
    """ggml-quants.c get_scale_min_k4: sub-block j (0..7) of the 12 packed bytes s."""
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def q3_scales(s):
    """ggml-quants.c dequantize_row_q3_K's unpacking of the 12 scale bytes s, as it does it: four
    little-endian words through kmask1 = 0x03030303 and kmask2 = 0x0f0f0f0f, read as 16 bytes
    (0..63; ggml subtracts 32)."""
    aux = [int.from_bytes(bytes(s[4 * k:4 * k + 4]), "little") for k in range(3)] + [0]
    kmask1, kmask2, tmp = 0x03030303, 0x0F0F0F0F, aux[2]
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4)
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4)
    return list(b"".join(a.to_bytes(4, "little") for a in aux))


def ref_q3_block(blk) -> np.ndarray:
    """dequantize_row_q3_K's loops as written: halves of 128 values, four shifts each, two groups
    of 16 a shift; the hmask bit m walks 1, 2, .., 128 over both halves, and a clear bit takes 4."""
    d_all = f16(bytes(blk), 108)
    hm, scales = blk[0:32], q3_scales(blk[96:108])
    y, q_at, m, is_ = [], 32, 1, 0
    for _n in range(2):
        shift = 0
        for _j in range(4):
            for half in (0, 16):
                dl = np.float32(d_all * np.float32(scales[is_] - 32))
                is_ += 1
                for l in range(16):
                    low = (blk[q_at + half + l] >> shift) & 3
                    y.append(dl * np.float32(low - (0 if hm[half + l] & m else 4)))
            shift += 2
            m <<= 1
        q_at += 32
    return np.array(y, np.float32)


def ref_q2_block(blk) -> np.ndarray:
    """dequantize_row_q2_K's loops as written: halves of 128 values (q walking 32 qs bytes a half),
    four shifts each, two groups of 16 a shift, each with the next scale byte: dl = d*(sc & 0xF),
    ml = dmin*(sc >> 4), value dl*q - ml in float32."""
    d, dmin = f16(bytes(blk), 80), f16(bytes(blk), 82)
    y, q_at, is_ = [], 16, 0
    for _n in range(2):
        for shift in (0, 2, 4, 6):
            for half in (0, 16):
                sc = blk[is_]
                is_ += 1
                dl, ml = np.float32(d * np.float32(sc & 0xF)), np.float32(dmin * np.float32(sc >> 4))
                for l in range(16):
                    y.append(np.float32(dl * np.float32((blk[q_at + half + l] >> shift) & 3)) - ml)
        q_at += 32
    return np.array(y, np.float32)


def ref_block(fmt, blk) -> np.ndarray:
    blk = [int(v) for v in blk]
    y = np.zeros(QK_K, np.float32)
    if fmt == "q3_k":
        return ref_q3_block(blk)
    if fmt == "q2_k":
        return ref_q2_block(blk)
    if fmt in ("q4_k", "q5_k"):
        d, dmin = f16(bytes(blk), 0), f16(bytes(blk), 2)
        s = blk[4:16]
        qh = blk[16:48] if fmt == "q5_k" else None
        qs = blk[48:176] if fmt == "q5_k" else blk[16:144]
        for i in range(QK_K):
            j, l = i // 32, i % 32                    # sub-block j of 32 values
            byte = qs[32 * (j // 2) + l]              # byte 32c + l: value 64c + l low, 64c + 32 + l high
            q = (byte & 0xF) if j % 2 == 0 else (byte >> 4)
            if qh is not None:
                q += 16 * ((qh[l] >> j) & 1)          # bit j of qh[l]
            sc, m = scale_min_k4(j, s)
            y[i] = np.float32(d * np.float32(sc)) * np.float32(q) - np.float32(dmin * np.float32(m))
    else:
        d = f16(bytes(blk), 208)
        ql, qh, sc = blk[0:128], blk[128:192], blk[192:208]
        for i in range(QK_K):
            n, g, l = i // 128, (i % 128) // 32, i % 32   # half n, quarter g, position l
            b = ql[64 * n + 32 * (g & 1) + l]
            lo = (b & 0xF) if g < 2 else (b >> 4)
            hi = (qh[32 * n + l] >> (2 * g)) & 3
            s = sc[i // 16] - 256 if sc[i // 16] > 127 else sc[i // 16]
            y[i] = np.float32(d * np.float32(s)) * np.float32((lo | (hi << 4)) - 32)
    return y


def main() -> None:
    out = Path(sys.argv[1])
    rng = np.random.default_rng(SEED)
    own = {"q3_k": np.random.default_rng(SEED_Q3K), "q2_k": np.random.default_rng(SEED_Q2K)}
    for fmt in ("q4_k", "q5_k", "q6_k", "q3_k", "q2_k"):
        b = make_blocks(fmt, own.get(fmt, rng))
        raw = b.reshape(ROWS, NB * SIZE[fmt])
        deq = quants.dequantize(raw, QTYPE[fmt]).astype("<f4")
        assert deq.shape == (ROWS, COLS) and np.isfinite(deq).all(), fmt
        ref = np.stack([ref_block(fmt, blk) for blk in b.reshape(-1, SIZE[fmt])]).reshape(ROWS, COLS)
        assert np.array_equal(ref.view(np.uint32), deq.view(np.uint32)), fmt
        raw.tofile(out / f"{fmt}.bin")
        deq.tofile(out / f"{fmt}.deq.f32")
    (out / "kquants.txt").write_text(f"{ROWS} {COLS}\ngguf {version('gguf')} numpy {np.__version__}\n")


if __name__ == "__main__":
    main()
