/*
 * cpu.h — what the CPU backend's files share: the packed weight layouts, the per-ISA kernel
 * table, ISA detection and the thread pool.
 *
 * Packed layout. A weight matrix W[N][K] (HF [out][in]) is stored in its own format (moe.h,
 * moe_dtype: as many bytes as the format takes, never widened; Q4_K / Q5_K's 6-bit scales a
 * byte each, below) as panels of 16 output
 * columns, zero-padded past N. Panels go in pairs and the micro-kernel computes a pair (32
 * output columns) at a time: for a gated (SwiGLU, GeGLU, gpt-oss's) tensor a pair is (gate panel q, up
 * panel q), so the activation fuses into the GEMM's epilogue; for a plain tensor it is
 * (panel 2q, panel 2q + 1). A pair is one contiguous stream, K-major, its two panels side by
 * side at each step, so a decode row reads each weight byte once, front to back:
 *
 *   F32, F16        [pair][k][panel 0, panel 1][16 columns] of 4 / 2-byte values: one k step
 *                   of a pair is 128 / 64 bytes.
 *   BF16            [pair][k][16 columns] of 32-bit words, each panel 0's value of the column in
 *                   its low half and panel 1's in its high half (64 bytes a k step): a bfloat16
 *                   is the top of a float, so one load gives both panels (a shift, a mask).
 *   Q8_0            [pair][block of 32 k] of 1088 bytes: the 32 columns' fp16 scales (panel 0's
 *                   16, then panel 1's: 64 bytes), then [32 k][panel 0, panel 1][16] int8 quants.
 *   Q4_0            [pair][block of 32 k] of 576 bytes: the 32 fp16 scales (64 bytes), then
 *                   [16 kk][panel 0, panel 1][16] bytes: byte c of (kk, panel) holds column c's
 *                   q[kk] in its low nibble and q[kk + 16] in its high nibble: the layout of
 *                   the 128- and 256-bit levels. At 512 bits (moe_cpu_kernels.nibble_words)
 *                   Q4_0 takes the word layout below for the float kernels too, one plain load
 *                   for 8 values of 16 columns, where this one needs vpmovzxbd per 2 values:
 *                   on Zen 4, 2 cores, qwen3-30b-a3b decode 0.88 -> 0.75 ms (an earlier try, with
 *                   the nibble shifts in a loop rather than unrolled to constants, was slower).
 *   MXFP4           Q4_0's 576-byte pair blocks, with each column's scale byte e stored as the
 *                   bfloat16 2^(e − 128) (exact at every e: a power of two from 2^-128, a
 *                   subnormal, to 2^127) where Q4_0 has its fp16 scale, and the very bytes of
 *                   ggml's codes: 18 bytes a column and block where ggml has 17 (the 64-byte
 *                   multiple every pair keeps), the nibbles looked up in a table (simd.h). At
 *                   512 bits it takes Q4_0's word layout below, as Q4_0 does.
 *
 * Word layouts: a Q8_0 / Q4_0 tensor uploaded for integer activations (moe_weight_src.
 * int_dot, only where the kernel set has moe_cpu_kernels.int_dot), and any Q4_0 or MXFP4 tensor
 * where the kernel set has nibble_words, keeps the same pair blocks, of the same sizes, with the
 * quants regrouped so that each column's 32-bit word holds 4 consecutive k: after the 64 bytes
 * of scales, [group g][32 columns][4 bytes], panel 0's 16 columns (one 64-byte vector) then
 * panel 1's.
 *   Q8_0            8 groups: column c's bytes of group g are q[4g .. 4g + 3] + 128, unsigned.
 *   Q4_0, MXFP4     4 groups: column c's bytes of group g are its ggml bytes 4g .. 4g + 3 (low
 *                   nibbles q[4g + j], high nibbles q[4g + j + 16]).
 * The weights enter the products unsigned (vpdpbusd multiplies unsigned bytes by signed ones;
 * vpdpwssd takes them as 16-bit values 0..255), and the kernel subtracts the zero point, 128
 * or 8, times the sum of the activations' quants. Int8 activations are read 4 at a time
 * (vpdpbusd: one column's 4 bytes by the 4 activations); int16 ones in pairs (vpdpwssd): a
 * word's bytes (0, 2) and (1, 3) are two pairs, so the quantised row stores each 4 values as
 * a[0], a[2], a[1], a[3] (moe_cpu_quantize_row). A Q8_0 tensor in words is read only by the
 * integer kernels; Q4_0's words are the same for both kinds of kernel. A Q4_K tensor for integer
 * activations, or where the kernel set has nibble_words, keeps its K-quant layout below, of the
 * same size, but for the nibbles: [group t / 4][32 columns][4 bytes] — column c's word of group G holds
 * its ggml bytes 4G .. 4G + 3, i.e. 4 consecutive k of one sub-block in the low nibbles and the
 * same 4 of the next sub-block in the high ones. So does Q2_K's qs (below) in the same two cases. A
 * Q2_K, Q3_K, Q5_K or Q6_K tensor for integer activations
 * (only then: no float kernel reads these) keeps its layout below with both the nibbles (Q3_K: the
 * 2-bit pairs) and the high-bit bytes in such words, ggml's bytes 4G .. 4G + 3 of each field a
 * column's word (Q5_K: the nibbles as Q4_K's words, and 4 consecutive l of the fifth bits; Q6_K: 4
 * consecutive k of the nibbles, and the 4 qh bytes that complete them; Q3_K: 4 consecutive l of its
 * qs bytes and of its hmask bytes; Q2_K: 4 consecutive l of its qs bytes). The integer kernels put the values
 * together in 32-bit lanes.
 *
 * K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): [pair][super-block of 256 k], each ggml's 32 columns' super-blocks
 * side by side, field by field, every field [row of the field][32 columns] (panel 0's 16, then
 * panel 1's), so one vector load gives a field's bytes for 16 columns:
 *   Q4_K  4736 bytes: d (32 fp16), dmin (32 fp16), sc [8 sub-blocks][32] and m [8][32] bytes —
 *         the 6-bit scales and mins unpacked from ggml's 12 bytes (148 bytes a column, not 144),
 *         then the 128 bytes of nibbles [128 t][32], ggml's nibbles paired within sub-blocks:
 *         byte t = 16j + l holds value 32j + l (low) and 32j + l + 16 (high), both of
 *         sub-block j, the nibbles of ggml's bytes 32(j / 2) + l and 32(j / 2) + l + 16. The
 *         float kernels below 512 bits read each byte as its low nibble and the whole byte
 *         (kernels.c: KQ_PAIRED). In the word layout above, ggml's bytes as they are: byte
 *         t = 32c + l holds value 64c + l (low) and 64c + 32 + l (high).
 *   Q5_K  5760 bytes: as Q4_K in ggml's bytes, then ggml's 32 bytes of fifth bits [32 l][32].
 *   Q6_K  6720 bytes: d (32 fp16), the int8 scales [16][32], the nibbles [128 t][32] (byte
 *         t = 64n + 32h + l: value 128n + 32h + l low, + 64 high), then the 2-bit highs [64][32]
 *         (byte 32n + l: bits 2h, 2h + 1 of value 128n + 32h + l and bits 2h + 4, 2h + 5 of
 *         value 128n + 32h + l + 64): 210 bytes a column, as ggml's.
 *   Q3_K  3648 bytes: d (32 fp16), the scales less 32 as int8 [16][32] (unpacked from ggml's 12
 *         bytes: 114 bytes a column, not 110), ggml's 2-bit pairs qs [64][32] (byte 32n + l:
 *         bits 2j of value 128n + 32j + l), then its third bits hmask [32 l][32] (bit 4n + j).
 *         The kernels read it as Q6_K's layout with fewer bits: byte row t = 64n + 32g + l of
 *         its values is qs row 32n + l at bits 2g (low) and 2g + 4 (high, value + 64).
 *   Q2_K  2688 bytes: d (32 fp16), dmin (32 fp16), ggml's scale bytes [16][32] (sub-block j's
 *         scale in the low nibble, its min in the high one, left packed: 84 bytes a column, as
 *         ggml's, for the format whose decode is most bound by the bytes it reads), then its qs
 *         [64][32] as Q3_K's. Read as Q3_K's values without the third bits, unsigned (0..3), with
 *         Q4_K's min per sub-block of 16.
 *
 * The Q8_0 / Q4_0 blocks are ggml's blocks rearranged, nothing recomputed: the same fp16 scale
 * and the same quants (a Q4_0 byte is the very byte of ggml's block: low nibble value j, high
 * nibble value j + 16), only transposed so 16 columns sit side by side. Padding columns have
 * scale 0 and quants 0. 16 floats are one AVX-512, two AVX2 or four SSE/NEON vectors, so one
 * layout serves every ISA. Every pair, and so every expert, is a multiple of 64 bytes.
 */
#ifndef MOE_CPU_H
#define MOE_CPU_H

#include "../backend.h"
#include "moe.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MOE_CPU_PANEL 16
#define MOE_CPU_BLOCK 32 /* k per Q8_0 / Q4_0 / MXFP4 block (MOE_BLOCK_SIZE) */
/* Bytes of one pair's block: the 32 scales, then the quants. */
#define MOE_CPU_Q8_PAIR_BLOCK (2 * 2 * MOE_CPU_PANEL + 2 * MOE_CPU_PANEL * MOE_CPU_BLOCK)
#define MOE_CPU_Q4_PAIR_BLOCK (2 * 2 * MOE_CPU_PANEL + MOE_CPU_PANEL * MOE_CPU_BLOCK)
#define MOE_CPU_SCALES        (2 * 2 * MOE_CPU_PANEL) /* bytes of a pair block's scales */
/* A K-quant pair super-block: its fields' byte offsets (fp16 d first, at 0) and size. */
#define MOE_CPU_KQ_COLS (2 * MOE_CPU_PANEL)
#define MOE_CPU_KQ_DMIN (2 * MOE_CPU_KQ_COLS)
/* Q3_K and Q6_K: signed values, an int8 scale per sub-block of 16, no min (the rest: Q2_K, Q4_K, Q5_K,
 * unsigned values less a min). */
#define MOE_CPU_KQ_SIGNED(dt) ((dt) == MOE_DTYPE_Q6_K || (dt) == MOE_DTYPE_Q3_K)
/* Q2_K, Q3_K and Q6_K: sub-blocks of 16 values, a byte row t = 64n + 32g + l holding values 128n + 32g + l
 * and + 64 (Q4_K, Q5_K: sub-blocks of 32). */
#define MOE_CPU_KQ_SUB16(dt) (MOE_CPU_KQ_SIGNED(dt) || (dt) == MOE_DTYPE_Q2_K)
/* Q2_K and Q3_K: 2-bit pairs, 64 byte rows (the others: 128 rows of nibbles). */
#define MOE_CPU_KQ_PAIRS(dt) ((dt) == MOE_DTYPE_Q2_K || (dt) == MOE_DTYPE_Q3_K)
#define MOE_CPU_KQ_SC(dt)    (MOE_CPU_KQ_SIGNED(dt) ? 2 * MOE_CPU_KQ_COLS : 4 * MOE_CPU_KQ_COLS)
#define MOE_CPU_KQ_M         (MOE_CPU_KQ_SC(MOE_DTYPE_Q4_K) + 8 * MOE_CPU_KQ_COLS)
#define MOE_CPU_KQ_NIB(dt)                                                                                   \
    (MOE_CPU_KQ_SUB16(dt) ? MOE_CPU_KQ_SC(dt) + 16 * MOE_CPU_KQ_COLS : MOE_CPU_KQ_M + 8 * MOE_CPU_KQ_COLS)
#define MOE_CPU_KQ_QH(dt) (MOE_CPU_KQ_NIB(dt) + (MOE_CPU_KQ_PAIRS(dt) ? 64 : 128) * MOE_CPU_KQ_COLS)
/* Byte rows of the high-bit field last in the super-block: Q6_K's high pairs, Q5_K's fifth bits, Q3_K's
 * third bits; none for Q2_K and Q4_K. */
#define MOE_CPU_KQ_QH_ROWS(dt)                                                                               \
    ((dt) == MOE_DTYPE_Q6_K ? 64 : (dt) == MOE_DTYPE_Q5_K || (dt) == MOE_DTYPE_Q3_K ? 32 : 0)
#define MOE_CPU_KQ_PAIR_SUPER(dt) (MOE_CPU_KQ_QH(dt) + MOE_CPU_KQ_QH_ROWS(dt) * MOE_CPU_KQ_COLS)

/* Pairs in a packed tensor of n_out columns, and output columns per pair. */
static inline int64_t moe_cpu_pairs(int64_t n_out, bool gated)
{
    const int64_t per_pair = gated ? MOE_CPU_PANEL : 2 * MOE_CPU_PANEL;
    return (n_out + per_pair - 1) / per_pair;
}
/* Bytes of one packed pair over a reduction of k_dim (a multiple of 32 for Q8_0 / Q4_0 / MXFP4, of 256
 * for the K-quants). */
static inline size_t moe_cpu_pair_bytes(moe_dtype dtype, int64_t k_dim)
{
    const size_t k = (size_t)k_dim, cols = 2 * MOE_CPU_PANEL;
    switch (dtype) {
    case MOE_DTYPE_F16:
    case MOE_DTYPE_BF16:
        return k * cols * 2;
    case MOE_DTYPE_Q8_0:
        return k / MOE_CPU_BLOCK * MOE_CPU_Q8_PAIR_BLOCK;
    case MOE_DTYPE_Q4_0:
    case MOE_DTYPE_MXFP4:
        return k / MOE_CPU_BLOCK * MOE_CPU_Q4_PAIR_BLOCK;
    case MOE_DTYPE_Q2_K:
    case MOE_DTYPE_Q3_K:
    case MOE_DTYPE_Q4_K:
    case MOE_DTYPE_Q5_K:
    case MOE_DTYPE_Q6_K:
        return k / MOE_SUPER_BLOCK_SIZE * (size_t)MOE_CPU_KQ_PAIR_SUPER(dtype);
    default:
        return k * cols * 4;
    }
}
/* Bytes of one packed matrix (one expert). */
static inline size_t moe_cpu_packed_bytes(moe_dtype dtype, int64_t n_out, int64_t k_dim, bool gated)
{
    return (size_t)moe_cpu_pairs(n_out, gated) * moe_cpu_pair_bytes(dtype, k_dim);
}

/* One grouped-GEMM call on rows [r0, r1) — all valid — and pairs [p0, p1). */
typedef struct moe_cpu_gemm {
    int64_t k_dim, n_out;
    const float *a;           /* A rows, stride k_dim */
    const int32_t *row_token; /* gather: row r reads A row row_token[r]; NULL: row r */
    const unsigned char *b;   /* this expert's packed tensor */
    moe_dtype dtype;          /* its format */
    bool gated;
    int activation;                   /* a moe_activation, or -1 for none */
    float swiglu_alpha, swiglu_limit; /* SWIGLU_OAI's constants */
    const float *bias;                /* this expert's [gated ? 2 : 1][n_out] floats added before the
                                         activation, or NULL */
    float *out;                       /* rows of n_out floats */
    /* Integer activations: the rows of a quantised to act_quant (moe_cpu_quantize_row, stride
     * a_q_stride bytes, indexed as a's rows), b in its integer layout; NULL: float ones. */
    const unsigned char *a_q;
    size_t a_q_stride;
    moe_act_quant act_quant;
    /* F32 / F16 / BF16 weights read with software prefetch ahead of the kernel (the block formats
     * always are): moe_cpu_dense_prefetch. */
    bool prefetch_dense;
} moe_cpu_gemm;

typedef struct moe_cpu_kernels {
    const char *name;       /* "baseline", "avx2", "avx2vnni", "avx512", "avx512vnni", "neondot", "simde512",
                               "simdedot" */
    uint32_t features_used; /* MOE_FEATURE_* bits the kernels use (F16C at avx2 and avx512) */
    bool int_dot;           /* gemm runs integer activations (moe_cpu_gemm.a_q) on Q8_0 / Q4_0 / K-quants */
    int bf16_dot;           /* gemm runs bfloat16-pair activations (MOE_ACT_BF16X2) on Q4_0, MXFP4 and Q4_K
                               (kernels_bf16.c):
                               0 no, 1 emulated (simde512: on any CPU), 2 with AVX512_BF16's instructions
                               (only where the CPU reports them) */
    /* With bf16_dot: one row of k activations as bfloat16 pairs (MOE_ACT_BF16X2, moe_act_row_bytes) in
       the order of the 512-bit word layout of `weights` (kernels_bf16.c) */
    void (*bf16x2_row)(const float *a, int64_t k, moe_dtype weights, uint32_t *out);
    bool nibble_words; /* the float kernels read Q4_0 / MXFP4 / Q4_K / Q2_K in the word layouts (above);
                          false: Q4_0's float activations come rearranged (cpu_backend.c:
                          q4_byte_acts) */
    int vector_bits;   /* 128, 256 or 512 (simde512: 512, emulated) */
    void (*gemm)(const moe_cpu_gemm *g, int64_t r0, int64_t r1, int64_t p0, int64_t p1);
    /* y[i] += a * x[i] */
    void (*axpy)(int64_t n, float a, const float *x, float *y);
} moe_cpu_kernels;

extern const moe_cpu_kernels moe_cpu_kernels_baseline;
#if MOE_CPU_SIMDE512
extern const moe_cpu_kernels moe_cpu_kernels_simde512; /* a test level (built with the tests) */
#endif
#if MOE_CPU_SIMDEDOT
extern const moe_cpu_kernels moe_cpu_kernels_simdedot; /* neondot's, SIMDe's sdot: a test level (x86-64) */
#endif
#if MOE_CPU_ARM64
extern const moe_cpu_kernels moe_cpu_kernels_neondot; /* the baseline's, plus the integer path on sdot */
#endif
#if MOE_CPU_X86
extern const moe_cpu_kernels moe_cpu_kernels_avx2; /* with the integer path (vpmaddubsw / vpmaddwd) */
extern const moe_cpu_kernels moe_cpu_kernels_avx512;
extern const moe_cpu_kernels moe_cpu_kernels_avx512vnni; /* avx512's, plus the integer path */
extern const moe_cpu_kernels moe_cpu_kernels_avx2vnni;   /* avx2's, the integer path on AVX-VNNI */
#endif

/* Rows a bfloat16-pair tile takes (kernels_bf16.c: 8 sums a row in registers). */
#define MOE_CPU_BF16_MR 3

/* Weight packing (pack.c): the bytes a tensor takes, and its packing into dst, pair by pair:
 * units [u0, u1) of moe_cpu_pack_units (a unit is one pair of one matrix; units are
 * independent, so they may be packed in parallel). row_buf holds one source row in the storage
 * format (moe_dtype_row_bytes(src->dtype, src->cols) bytes). */
size_t moe_cpu_weight_bytes(const moe_weight_src *src);
int64_t moe_cpu_pack_units(const moe_weight_src *src);
void moe_cpu_pack(unsigned char *dst, const moe_weight_src *src, bool nibble_words, int64_t u0, int64_t u1,
                  unsigned char *row_buf);

/* One row of k activations quantised to integers as moe_act_quant q says (backend.h: INT8 or INT16), its
 * int16 quants in the order the integer kernels read them (a[0], a[2], a[1], a[3] of every 4). Bfloat16
 * pairs are the kernel set's (moe_cpu_kernels.bf16x2_row). */
void moe_cpu_quantize_row(moe_act_quant q, const float *a, int64_t k, void *out);

/* MOE_FEATURE_* bits of the running CPU: F16C, AVX512_BF16, AVX512_VNNI, AVX_VNNI, INT_DOT (AVX2;
 * x86). */
uint32_t moe_cpu_features(void);

/* Whether the F32 / F16 / BF16 kernels of k prefetch their weights in software (moe_cpu_gemm.
 * prefetch_dense): MOE_CPU_PREFETCH=on|off, else (unset, empty or auto) off where k is a 512-bit
 * level on an AMD CPU, on elsewhere (isa.c says why). -1 where MOE_CPU_PREFETCH is none of these;
 * *value is then its text. */
int moe_cpu_dense_prefetch(const moe_cpu_kernels *k, const char **value);

/* The best kernel set this CPU runs, or the one MOE_CPU_ISA names; NULL if MOE_CPU_ISA names
 * one the CPU cannot run (or an unknown one). */
const moe_cpu_kernels *moe_cpu_select_kernels(const char **why);

/* ---- thread pool ------------------------------------------------------------------------ */

typedef struct moe_pool moe_pool;
typedef void (*moe_task_fn)(void *arg, int64_t task);

/* n_threads includes the calling thread. NULL if a thread could not be started. */
moe_pool *moe_pool_create(int n_threads);
void moe_pool_destroy(moe_pool *pool);
int moe_pool_threads(const moe_pool *pool);
/* Runs fn(arg, i) for i in [0, n_tasks) over all threads; returns when all are done. Tasks
 * are handed out dynamically, so results must not depend on which thread runs what. */
void moe_pool_run(moe_pool *pool, int64_t n_tasks, moe_task_fn fn, void *arg);

#endif /* MOE_CPU_H */
