/*
 * kernels.c — the CPU backend's SIMD kernels, written once against simd.h and compiled once
 * per ISA level (CMake builds this file several times with different MOE_CPU_LEVEL and
 * target flags; each copy exports its own moe_cpu_kernels table).
 *
 * The GEMM micro-kernel computes n rows (1..MR) × one pair of 16-column panels over the whole
 * reduction, reading the pair in its storage format (cpu.h) and widening each k step's 32
 * weights to float32 in registers; the accumulation is float32 FMA on float32 activations.
 * Each row count is its own compile-time specialised copy (an always-inline body called with
 * a constant), so a tile with n valid rows does n rows of work: with one row (decode) a pair
 * is streamed once and the kernel is bound by memory, not by MR× the FLOPs. MR is chosen per
 * level and format so the accumulators, the weight vectors and a broadcast fit the register
 * file (16 SSE/AVX2 registers, 32 for AVX-512): the more rows share one widening of the
 * weights, the less it costs per FMA. With more rows than one tile (prefill), a pair is taken in
 * chunks of k that the first row tile widens into a buffer of floats as it goes and the others
 * read from there (gemm_rows, "prefill" below): the widening is then paid once per 32 rows.
 *
 * Block formats (Q8_0, Q4_0, MXFP4) accumulate Σ a·q over each block of 32 k in registers, then add
 * d·(that sum) to the row's total, kept in the output tile: the per-column scale costs one
 * FMA per block instead of one multiply per weight, and the totals need no registers. The
 * K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: kq_rows) do the same per sub-block of 32 (16) k, with d·sc as
 * the scale and, for Q2_K / Q4_K / Q5_K, dmin·m times the sub-block's activation sum subtracted.
 *
 * Each level is two objects of this file: its prefill tiles (MOE_CPU_KERNELS_PREFILL=1: the
 * widening and widened ones, "prefill" below) and the rest (=0). The tiles' row-count copies are
 * most of the build, and in two objects the build's jobs share them: the SIMDe-emulated simde512
 * level, at -O2, was one object of 5 minutes for the aarch64 cross gcc (89 s for x86 gcc over
 * SSE2), the rest of that build 17 s; its prefill tiles are a third of it (CMakeLists.txt has
 * how it is built now). The tiles are called through pointers, so nothing is inlined across the
 * two objects either way.
 */
#include "cpu.h"
#include "simd.h"

#ifndef MOE_CPU_INT8
#define MOE_CPU_INT8 0
#endif
#ifndef MOE_CPU_BF16 /* the level's bfloat16-pair tiles (moe_cpu_kernels.bf16_dot, kernels_bf16.c) */
#define MOE_CPU_BF16 0
#endif

#include <math.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define ALWAYS_INLINE static __forceinline
#else
#define ALWAYS_INLINE static inline
#endif

#define VPP  (MOE_CPU_PANEL / MOE_VLEN) /* vectors per panel */
#define NV   (2 * VPP)                  /* vectors per pair */
#define PAIR (2 * MOE_CPU_PANEL)        /* columns per pair */

/* Rows per micro-kernel call: per level, per format (F32; F16 and BF16; Q8_0; Q4_0 and MXFP4; the K-quants,
 * whose two sums a row take MR_KQ·4 registers at 512 bits, and their prefill tiles that read the widened
 * chunk, MR_KQ_WIDENED; below 512 bits those of every block format take MR_SPLIT: SPLIT_WIDENED). At 512
 * bits the accumulators take MR·2 of the 32 registers (Q8_0, Q4_0: MR·4 up to BLOCK_ONE_PASS
 * rows, see block_rows). */
#if MOE_CPU_LEVEL == 2
#define MR_F32        8
#define MR_F16        12
#define MR_Q8         12
#define MR_Q4         12
#define MR_KQ         6
#define MR_KQ_WIDENED MR_KQ
#define MR_MAX        12
#elif MOE_CPU_LEVEL == 1
#define MR_F32        3
#define MR_F16        3
#define MR_Q8         2
#define MR_Q4         2
#define MR_KQ         2
#define MR_SPLIT      4 /* prefill's widened tiles, SPLIT_NV vectors of the pair at a time */
#define MR_KQ_WIDENED MR_SPLIT
#define MR_MAX        4
#else
#define MR_F32        2
#define MR_F16        2
#define MR_Q8         2
#define MR_Q4         2
#define MR_KQ         2
#define MR_SPLIT      4
#define MR_KQ_WIDENED MR_SPLIT
#define MR_MAX        4
#endif

/* Block formats at 512 bits keep two sums per output vector, one per half of each 32-k block
 * (Q8_0: the even and the odd k; Q4_0: the first and the second 16 k, the low and the high
 * nibbles of one byte): four independent FMA chains per row instead of two, so a decode row is
 * not bound by FMA latency (4 cycles a step). Narrower levels have two or four vectors per pair
 * already, and not the registers for twice as many sums. */
#define BLOCK_SPLIT    (MOE_CPU_LEVEL == 2)
#define BLOCK_ONE_PASS 6 /* rows up to which a block is read once (4 sums a row in registers) */

/* Software prefetch, MOE_CPU_PREFETCH_DIST bytes ahead of the weights being read, one line at a
 * time as the kernel reaches it, into L2 (hint 2 = prefetcht1). A decode row spends few cycles
 * per byte, and the hardware prefetcher alone left it at 60-70% of the core's read bandwidth
 * (Q4_0 at 60%); a pair's stream continues into the next pair, so reading past a pair's end
 * fetches what comes next. Measured on a 2-core Xeon VM (olmoe decode, every format): 4, 8 and
 * 16 KiB ahead into L2, and 8 KiB into L1, within the machine's run-to-run noise of each other.
 * Compile-time constants; -DMOE_CPU_PREFETCH_DIST=... / _HINT=... to try others (DIST 0: none). The
 * compiler's builtin, not simde_mm_prefetch: SIMDe 0.7 passes its own hint numbering to the native
 * _mm_prefetch, so its T0 becomes prefetcht2. The dense formats' packed tiles also come without it
 * (the *_hw tiles, moe_cpu_gemm.prefetch_dense): on Zen 4 at 512 bits F32, F16 and BF16 decode
 * streamed 4-24% faster with the hardware prefetcher alone (isa.c: moe_cpu_dense_prefetch). */
#ifndef MOE_CPU_PREFETCH_DIST
#define MOE_CPU_PREFETCH_DIST 8192
#endif
#ifndef MOE_CPU_PREFETCH_HINT
#define MOE_CPU_PREFETCH_HINT 2
#endif
/* The integer K-quant kernel's hint: L1 (3) on the 256-bit levels, where Zen 1 waited on L2 (see
 * prefetch_line_l1); L2 (2) at 512 bits, where the wider kernel's L1 prefetches held back the
 * stream (moe-bench --preset qwen3-30b-a3b --tokens 1 --weights q4_k --activations q8_0 --layers
 * auto, 2 threads, Xeon with AVX512_VNNI: median 0.952 / 0.949 ms with L1, 0.877 with L2, in
 * one script; 4 and 16 KiB ahead changed nothing). */
#ifndef MOE_CPU_PREFETCH_L1_HINT
#define MOE_CPU_PREFETCH_L1_HINT (MOE_CPU_LEVEL == 2 ? 2 : 3)
#endif
#if (defined(__GNUC__) || defined(__clang__)) && MOE_CPU_PREFETCH_DIST > 0
#define prefetch_line(p)                                                                                     \
    __builtin_prefetch((const unsigned char *)(p) + MOE_CPU_PREFETCH_DIST, 0, MOE_CPU_PREFETCH_HINT)
/* The same distance into L1 (prefetcht0; L2 at 512 bits, above), for the integer K-quant kernel: it reads a
 * super-block 1 KiB chunk at a time, each chunk's lines by columns and going back to the super-block's head
 * for the scales, and from L2 it waited on its loads (moe-bench --preset qwen3-30b-a3b
 * --tokens 1 --weights q4_k --activations q8_0 --threads 1, median ms on a Zen 1 EPYC: 6.2 with
 * L2 at 8 KiB, 3.5 with L1; L1 at 2, 4.6 and 16 KiB ahead: 4.2, 3.9, 3.6). */
#define prefetch_line_l1(p)                                                                                  \
    __builtin_prefetch((const unsigned char *)(p) + MOE_CPU_PREFETCH_DIST, 0, MOE_CPU_PREFETCH_L1_HINT)
#else
#define prefetch_line(p)    ((void)(p))
#define prefetch_line_l1(p) ((void)(p))
#endif

/* ---- micro-kernels -------------------------------------------------------------------------- */

/* Where a tile's weights come from (`src`, a constant in each specialised copy): the packed pair
 * (its sums start at zero); the packed pair, also storing each widened step into `widened`; or
 * `widened` (gemm_rows' prefill: the first row tile of a chunk widens it, the others read it). The
 * last two add to the sums already in out: a chunk continues the k before it. */
enum { FROM_PACKED, WIDENING, FROM_WIDENED };

/* The pair's k step k as NV float vectors (panel 0's VPP, then panel 1's): F32, F16 or BF16. */
ALWAYS_INLINE void load_dense(moe_dtype dt, const unsigned char *b, int64_t k, moe_vec w[NV])
{
    const int64_t i = k * PAIR;
    for (int v = 0; v < VPP; v++) {
        if (dt == MOE_DTYPE_BF16) { /* (panel 0, panel 1) in each 32-bit word */
            vec_load_bf16x2((const uint16_t *)(const void *)b + i + 2 * v * MOE_VLEN, &w[v], &w[VPP + v]);
        } else if (dt == MOE_DTYPE_F16) {
            w[v] = vec_load_f16((const uint16_t *)(const void *)b + i + v * MOE_VLEN);
            w[VPP + v] = vec_load_f16((const uint16_t *)(const void *)b + i + MOE_CPU_PANEL + v * MOE_VLEN);
        } else {
            w[v] = vec_load((const float *)(const void *)b + i + v * MOE_VLEN);
            w[VPP + v] = vec_load((const float *)(const void *)b + i + MOE_CPU_PANEL + v * MOE_VLEN);
        }
    }
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in F32, F16 or BF16. With src
 * WIDENING (gemm_rows) the steps read from the pair are also stored into `widened`, with
 * FROM_WIDENED they come from there, and in both out[r] holds the sums of the k before them: the
 * same FMAs in the same order as one pass over the whole k. prefetch: the pair is prefetched in
 * software (prefetch_line) as it is read; false leaves it to the hardware (moe_cpu_gemm.
 * prefetch_dense). */
ALWAYS_INLINE void dense_rows(const int nr, const moe_dtype dt, int64_t k_dim, const float *const *a,
                              const unsigned char *b, float *restrict out, float *widened, const int src,
                              const bool prefetch)
{
    moe_vec acc[MR_MAX][NV];
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = src == FROM_PACKED ? vec_zero() : vec_load(out + r * PAIR + v * MOE_VLEN);
    for (int64_t k = 0; k < k_dim; k++) {
        moe_vec w[NV];
        const int64_t step = dt == MOE_DTYPE_F32 ? 4 * PAIR : 2 * PAIR; /* bytes of a k step */
        if (src == FROM_WIDENED) {
            load_dense(MOE_DTYPE_F32, (const unsigned char *)(const void *)widened, k, w);
        } else {
            if (prefetch)
                for (int64_t l = 0; l < step; l += 64) prefetch_line(b + k * step + l);
            load_dense(dt, b, k, w);
            if (src == WIDENING)
                for (int v = 0; v < NV; v++) vec_store(widened + k * PAIR + v * MOE_VLEN, w[v]);
        }
        for (int r = 0; r < nr; r++) {
            const moe_vec x = vec_set1(a[r][k]);
            for (int v = 0; v < NV; v++) acc[r][v] = vec_fmadd(x, w[v], acc[r][v]);
        }
    }
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < NV; v++) vec_store(out + r * PAIR + v * MOE_VLEN, acc[r][v]);
}

/* End of a block: out[r] += d · acc[r], d the pair's 32 scales at the block's head: fp16
 * (Q8_0, Q4_0), or MXFP4's 2^(e − 128) as bfloat16 (exact: a power of two, e = 0 and 1 the
 * subnormals), the top half of a float. */
ALWAYS_INLINE void block_end(const int nr, const moe_dtype dt, const unsigned char *p,
                             moe_vec acc[MR_MAX][NV], float *restrict out, const int v0, const int nvs)
{
    for (int v = 0; v < nvs; v++) { /* acc[·][v]: the pair's vector v0 + v */
        const int c = (v0 + v) * MOE_VLEN;
        const uint16_t *d16 = (const uint16_t *)(const void *)p + c;
        const moe_vec d =
            dt == MOE_DTYPE_MXFP4 ? vec_from_bits(ivec_slli(ivec_load_u16(d16), 16)) : vec_load_f16(d16);
        for (int r = 0; r < nr; r++) {
            float *o = out + r * PAIR + c;
            vec_store(o, vec_fmadd(d, acc[r][v], vec_load(o)));
        }
    }
}

ALWAYS_INLINE void zero_rows(const int nr, float *out)
{
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < NV; v++) vec_store(out + r * PAIR + v * MOE_VLEN, vec_zero());
}

/* Half h of step s of a Q8_0 / Q4_0 / MXFP4 pair block's quants q, as NV float vectors. A block
 * is 16 steps; step s of half h is k = 2s + h for Q8_0 (one 32-byte k step each) and k = s + 16h
 * for Q4_0 and MXFP4 (one 32-byte row of bytes gives both: its low nibbles and its high ones). */
#define HALF_K(dt, s, h) ((dt) == MOE_DTYPE_Q8_0 ? 2 * (s) + (h) : (s) + 16 * (h))
/* Q4_0, MXFP4 and Q4_K keep a column's nibbles in 32-bit words at 512 bits (cpu.h; moe_cpu_kernels.
 * nibble_words), read with a shift and a table lookup a value (vec_nibble); their step loops are
 * unrolled so that each shift is a constant. Narrower levels read bytes, widened with vpmovzxbd:
 * with the words, 4 (8) vectors a pair and a shift, a mask, an or and a subtraction a value, the
 * avx2 level ran out of its 16 registers (Q4_0 decode 2.4 → 2.8 ms on one Zen 4 core). */
#define MOE_CPU_NIBBLE_WORDS (MOE_CPU_LEVEL == 2)
#if MOE_CPU_NIBBLE_WORDS
#define MOE_UNROLL_4  _Pragma("GCC unroll 4")
#define MOE_UNROLL_8  _Pragma("GCC unroll 8")
#define MOE_UNROLL_16 _Pragma("GCC unroll 16")
#else
#define MOE_UNROLL_4
#define MOE_UNROLL_8
#define MOE_UNROLL_16
#endif
/* Vector v of a row of 32-bit words, one a column (the 4-bit formats' nibbles, cpu.h). */
ALWAYS_INLINE moe_ivec ivec_load_words(const unsigned char *row, int v)
{
    return vec_bits(vec_load((const float *)(const void *)row + v * MOE_VLEN));
}
#if MOE_CPU_NIBBLE_WORDS
/* The value of each 4-bit code, for vec_nibble: Q4_0's q − 8, MXFP4's kv[q] (moe.h: twice the
 * E2M1 values), Q4_K's q (its min is subtracted per sub-block); for vec_pair, Q2_K's 2-bit q. */
ALWAYS_INLINE moe_vec nibble_table(const moe_dtype dt)
{
    static const float q4_0[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
    static const float mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    static const float plain[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    static const float pairs[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    return vec_load(dt == MOE_DTYPE_Q4_0    ? q4_0
                    : dt == MOE_DTYPE_MXFP4 ? mxfp4
                    : dt == MOE_DTYPE_Q2_K  ? pairs
                                            : plain);
}
#endif
/* The low (w0) and high (w1) nibbles' values of step s of a Q4_0 / MXFP4 pair block; Q4_0 in
 * codes (Q4_CODES) gives the low nibbles and the whole bytes (vec_load_q4). */
ALWAYS_INLINE void load_nibbles(const moe_dtype dt, const unsigned char *q, int s, moe_vec w0[NV],
                                moe_vec w1[NV])
{
#if MOE_CPU_NIBBLE_WORDS /* words (cpu.h): step s is byte s % 4 of group s / 4 */
    const moe_vec table = nibble_table(dt);
    for (int v = 0; v < NV; v++) {
        const moe_ivec x = ivec_load_words(q + (s / 4) * 4 * PAIR, v);
        w0[v] = vec_nibble(x, 2 * (s % 4), table);
        w1[v] = vec_nibble(x, 2 * (s % 4) + 1, table);
    }
#else
    for (int v = 0; v < NV; v++) {
        if (dt == MOE_DTYPE_MXFP4)
            vec_load_mxfp4(q + s * PAIR + v * MOE_VLEN, &w0[v], &w1[v]);
        else
            vec_load_q4(q + s * PAIR + v * MOE_VLEN, &w0[v], &w1[v]);
    }
#endif
}
ALWAYS_INLINE void load_half(const moe_dtype dt, const unsigned char *q, int s, int h, moe_vec w[NV])
{
    if (dt == MOE_DTYPE_Q8_0) {
        for (int v = 0; v < NV; v++)
            w[v] = vec_load_i8((const int8_t *)(const void *)q + HALF_K(dt, s, h) * PAIR + v * MOE_VLEN);
        return;
    }
    moe_vec other[NV]; /* the half not asked for: dead code once inlined */
    if (h)
        load_nibbles(dt, q, s, other, w);
    else
        load_nibbles(dt, q, s, w, other);
}
/* Both halves of step s (Q4_0, MXFP4: one widening of the bytes for both). */
ALWAYS_INLINE void load_both(const moe_dtype dt, const unsigned char *q, int s, moe_vec w0[NV],
                             moe_vec w1[NV])
{
    if (dt == MOE_DTYPE_Q8_0) {
        load_half(dt, q, s, 0, w0);
        load_half(dt, q, s, 1, w1);
    } else {
        load_nibbles(dt, q, s, w0, w1);
    }
}
/* acc[r] += a_r[k] · w for r < nr. */
ALWAYS_INLINE void fma_rows(const int nr, const float *const *a, int64_t k, const moe_vec w[NV],
                            moe_vec acc[MR_MAX][NV])
{
    for (int r = 0; r < nr; r++) {
        const moe_vec x = vec_set1(a[r][k]);
        for (int v = 0; v < NV; v++) acc[r][v] = vec_fmadd(x, w[v], acc[r][v]);
    }
}
/* Step t of a widened block or super-block (gemm_rows: [step][2 values][PAIR] floats, the
 * vectors load_both / kq_load give, in the order they give them). */
ALWAYS_INLINE void load_widened(const float *widened, int t, moe_vec w0[NV], moe_vec w1[NV])
{
    for (int v = 0; v < NV; v++) {
        w0[v] = vec_load(widened + (2 * t) * PAIR + v * MOE_VLEN);
        w1[v] = vec_load(widened + (2 * t + 1) * PAIR + v * MOE_VLEN);
    }
}
ALWAYS_INLINE void store_widened(float *widened, int t, const moe_vec w0[NV], const moe_vec w1[NV])
{
    for (int v = 0; v < NV; v++) {
        vec_store(widened + (2 * t) * PAIR + v * MOE_VLEN, w0[v]);
        vec_store(widened + (2 * t + 1) * PAIR + v * MOE_VLEN, w1[v]);
    }
}
/* The sum of a vector's lanes. */
static inline float vec_hsum(moe_vec v)
{
#if MOE_CPU_LEVEL >= 1
#if MOE_CPU_LEVEL == 2 /* the two 256-bit halves (SIMDe 0.7 has no 512-bit reduce) */
    const simde__m256 h =
        simde_mm256_add_ps(simde_mm512_castps512_ps256(v),
                           simde_mm256_castpd_ps(simde_mm512_extractf64x4_pd(simde_mm512_castps_pd(v), 1)));
#else
    const simde__m256 h = v;
#endif
    simde__m128 q = simde_mm_add_ps(simde_mm256_castps256_ps128(h), simde_mm256_extractf128_ps(h, 1));
#else
    simde__m128 q = v;
#endif
    q = simde_mm_add_ps(q, simde_mm_movehl_ps(q, q));
    q = simde_mm_add_ss(q, simde_mm_shuffle_ps(q, q, 1));
    return simde_mm_cvtss_f32(q);
}

/* Q4_0 in the byte layout (below 512 bits): vec_load_q4 gives the low nibbles q_lo and the whole
 * bytes q_lo + 16·q_hi, and the activations come rearranged to match (moe_cpu_kernels.
 * nibble_words false: the backend's q4_byte_acts, once per GEMM call, a'[t] = a[t] − a[t + 16]/16
 * and a'[t + 16] = a[t + 16]/16 in each block, as a[t]·q_lo + a[t + 16]·q_hi = a'[t]·q_lo +
 * a'[t + 16]·(q_lo + 16·q_hi)); that saves the shift a vector of high nibbles took, which beside
 * the widening shuffle and the conversions bounded avx2 Q4_0 decode. A block's sum Σ a·(q − 8) is
 * taken as Σ a·q − 8·Σ a, Σ a from the caller's table (block_sums, once per row and GEMM call) or
 * summed here; in words (512 bits) the table lookup gives q − 8 for free. */
#define Q4_CODES (!MOE_CPU_NIBBLE_WORDS)
/* k per activation sum: the k one min (Q4_K / Q5_K: a sub-block of 32; Q2_K: of 16) or Q4_0's 8
 * multiplies. */
#define ASUM_K(dt) ((dt) == MOE_DTYPE_Q2_K ? 16 : 32)
/* out[j] = Σ a[nj .. nj + n − 1] for j < k / n, n = ASUM_K(dt): the activation sums that the K-quants'
 * mins and Q4_0's 8 (Q4_CODES) multiply. Q4_0's and Q4_K's rows in codes are a' (above; Q4_K:
 * KQ_PAIRED): Σ a = Σ a'[lo] + 17·Σ a'[hi]. */
static void block_sums(const float *a, int64_t k, moe_dtype dt, float *out)
{
    const int n = ASUM_K(dt);
    const moe_vec high = vec_set1((dt == MOE_DTYPE_Q4_0 || dt == MOE_DTYPE_Q4_K) && Q4_CODES ? 17.0f : 1.0f);
    for (int64_t j = 0; j < k / n; j++) {
        moe_vec s = vec_load(a + n * j);
        for (int i = MOE_VLEN; i < n; i += MOE_VLEN) /* fmadd(1, x, s) is s + x, to the bit */
            s = i < 16 ? vec_add(s, vec_load(a + n * j + i)) : vec_fmadd(high, vec_load(a + n * j + i), s);
        out[j] = vec_hsum(s);
    }
}
/* The quants' bytes of one step (both halves): prefetched a line at a time, two steps at once. */
#define STEP_BYTES(dt) ((dt) == MOE_DTYPE_Q8_0 ? 2 * PAIR : PAIR)

/* Prefill's widened tiles below 512 bits (SPLIT_WIDENED: the block formats and the K-quants) take a
 * pair's NV vectors SPLIT_NV at a time, for up to MR_SPLIT rows: 4 rows by 2 vectors are 8 sums,
 * and a step loads 2 widened vectors and 4 activations for 8 FMAs. The whole pair (4 vectors at
 * 256 bits) leaves room for the sums of only 2 rows, whose 8 FMAs a step took 8 vector loads (the
 * weights as memory operands, once per row) and 2 broadcasts: more than the two 256-bit loads a
 * cycle a Zen 3 core issues, so the FMAs waited on them (perf: 79% of Q4_K's widened tile in
 * those loops), and each block's or sub-block's scales were loaded and converted for 2 rows, not
 * 4. 6 rows (12 sums) spilled two sums in gcc's schedule, and 3 rows, even with the K-quants'
 * totals held in registers, were slower than 4. Taking fewer columns at once changes no output's
 * FMAs or their order (a column's sums are its own), so results are bit for bit those of the
 * whole-pair tiles, and of decode. */
#define SPLIT_WIDENED(src) (MOE_CPU_LEVEL != 2 && (src) == FROM_WIDENED)
#define SPLIT_NV           2

/* Q4_0 in codes (Q4_CODES): −8 · Σ a over block k0 of row r (Σ a·(q − 8) = Σ a·q − 8·Σ a), from
 * the caller's block sums, or summed here where it has none. */
ALWAYS_INLINE float q4_offset(const float *ak, const float *const *asum, int r, int64_t k0)
{
    float own = 0;
    if (!asum) block_sums(ak, MOE_CPU_BLOCK, MOE_DTYPE_Q4_0, &own);
    return -8.0f * (asum ? asum[r][k0 / MOE_CPU_BLOCK] : own);
}

/* block_rows' widened tiles below 512 bits (SPLIT_WIDENED): per block and SPLIT_NV vectors, the
 * FMAs of block_rows' one pass in its order, then its −8·Σ a (Q4_CODES) and its scaling. */
ALWAYS_INLINE void block_rows_split(const int nr, const moe_dtype dt, int64_t k_dim, const float *const *a,
                                    const float *const *asum, float *restrict out, const unsigned char *b,
                                    const float *widened)
{
    const size_t block_bytes = dt == MOE_DTYPE_Q8_0 ? MOE_CPU_Q8_PAIR_BLOCK : MOE_CPU_Q4_PAIR_BLOCK;
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_CPU_BLOCK) {
        const unsigned char *p = b + (size_t)(k0 / MOE_CPU_BLOCK) * block_bytes;
        const float *ak[MR_MAX];
        for (int r = 0; r < nr; r++) ak[r] = a[r] + k0;
        for (int v0 = 0; v0 < NV; v0 += SPLIT_NV) {
            const float *w = widened + k0 * PAIR + v0 * MOE_VLEN;
            moe_vec s[MR_MAX][NV];
            for (int r = 0; r < nr; r++)
                for (int v = 0; v < SPLIT_NV; v++) s[r][v] = vec_zero();
            MOE_UNROLL_8
            for (int t = 0; t < MOE_CPU_BLOCK / 2; t++)
                for (int h = 0; h < 2; h++) { /* the step's two values (load_both's w0, w1) */
                    moe_vec wv[SPLIT_NV];
                    for (int v = 0; v < SPLIT_NV; v++)
                        wv[v] = vec_load(w + (2 * t + h) * PAIR + v * MOE_VLEN);
                    for (int r = 0; r < nr; r++) {
                        const moe_vec x = vec_set1(ak[r][HALF_K(dt, t, h)]);
                        for (int v = 0; v < SPLIT_NV; v++) s[r][v] = vec_fmadd(x, wv[v], s[r][v]);
                    }
                }
            if (dt == MOE_DTYPE_Q4_0 && Q4_CODES)
                for (int r = 0; r < nr; r++) {
                    const moe_vec off = vec_set1(q4_offset(ak[r], asum, r, k0));
                    for (int v = 0; v < SPLIT_NV; v++) s[r][v] = vec_add(s[r][v], off);
                }
            block_end(nr, dt, p, s, out, v0, SPLIT_NV);
        }
    }
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in Q8_0, Q4_0 or MXFP4: per block, Σ a·q
 * in registers, then · d into out. With BLOCK_SPLIT the block's sum is (Σ over half 0) +
 * (Σ over half 1), each in k order: up to BLOCK_ONE_PASS rows keep both sums in registers and
 * read the block once (decode: four FMA chains per row); more rows would need 4·nr registers, so
 * the block is read twice from L1, half 0 then half 1, with half 0's sums parked in h0_sums.
 * Either way the arithmetic is the same, so a row's result does not depend on how many rows
 * share its tile. Without the split, one sum per vector in k order (Q4_0: k, then k + 16). With src
 * WIDENING (gemm_rows) each step read is also stored widened (store_widened), with FROM_WIDENED
 * the quants come widened from there (load_widened), and in both out[r] holds the rows' totals of
 * the blocks before: the same arithmetic again. */
ALWAYS_INLINE void block_rows(const int nr, const moe_dtype dt, int64_t k_dim, const float *const *a,
                              const float *const *asum, const unsigned char *b, float *restrict out,
                              float *widened, const int src)
{
    if (SPLIT_WIDENED(src)) {
        block_rows_split(nr, dt, k_dim, a, asum, out, b, widened);
        return;
    }
    const size_t block_bytes = dt == MOE_DTYPE_Q8_0 ? MOE_CPU_Q8_PAIR_BLOCK : MOE_CPU_Q4_PAIR_BLOCK;
    const bool one_pass = !BLOCK_SPLIT || nr <= BLOCK_ONE_PASS;
    float h0_sums[MR_MAX * PAIR];
    if (src == FROM_PACKED) zero_rows(nr, out);
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_CPU_BLOCK) {
        const unsigned char *p = b + (size_t)(k0 / MOE_CPU_BLOCK) * block_bytes;
        const unsigned char *q = p + MOE_CPU_SCALES;
        const float *ak[MR_MAX];
        for (int r = 0; r < nr; r++) ak[r] = a[r] + k0;
        if (src != FROM_WIDENED) prefetch_line(p); /* the scales */
        float *wk = src == FROM_PACKED ? NULL : widened + (k0 / MOE_CPU_BLOCK) * MOE_CPU_BLOCK * PAIR;
        moe_vec s0[MR_MAX][NV], s1[MR_MAX][NV];
        for (int r = 0; r < nr; r++)
            for (int v = 0; v < NV; v++) s0[r][v] = s1[r][v] = vec_zero();
        if (one_pass) {
            MOE_UNROLL_8
            for (int s = 0; s < MOE_CPU_BLOCK / 2; s += 2) {
                if (src != FROM_WIDENED)
                    for (int l = 0; l < 2 * STEP_BYTES(dt); l += 64)
                        prefetch_line(q + s * STEP_BYTES(dt) + l);
                for (int t = s; t < s + 2; t++) {
                    moe_vec w0[NV], w1[NV];
                    if (src == FROM_WIDENED)
                        load_widened(wk, t, w0, w1);
                    else
                        load_both(dt, q, t, w0, w1);
                    if (src == WIDENING) store_widened(wk, t, w0, w1);
                    fma_rows(nr, ak, HALF_K(dt, t, 0), w0, s0);
                    fma_rows(nr, ak, HALF_K(dt, t, 1), w1, BLOCK_SPLIT ? s1 : s0);
                }
            }
            if (BLOCK_SPLIT)
                for (int r = 0; r < nr; r++)
                    for (int v = 0; v < NV; v++) s0[r][v] = vec_add(s0[r][v], s1[r][v]);
        } else {
            MOE_UNROLL_8
            for (int s = 0; s < MOE_CPU_BLOCK / 2; s += 2) {
                for (int l = 0; l < 2 * STEP_BYTES(dt); l += 64) prefetch_line(q + s * STEP_BYTES(dt) + l);
                for (int t = s; t < s + 2; t++) {
                    moe_vec w[NV];
                    load_half(dt, q, t, 0, w);
                    fma_rows(nr, ak, HALF_K(dt, t, 0), w, s0);
                }
            }
            for (int r = 0; r < nr; r++)
                for (int v = 0; v < NV; v++) {
                    vec_store(h0_sums + r * PAIR + v * MOE_VLEN, s0[r][v]);
                    s0[r][v] = vec_zero();
                }
            MOE_UNROLL_16
            for (int s = 0; s < MOE_CPU_BLOCK / 2; s++) {
                moe_vec w[NV];
                load_half(dt, q, s, 1, w);
                fma_rows(nr, ak, HALF_K(dt, s, 1), w, s0);
            }
            for (int r = 0; r < nr; r++)
                for (int v = 0; v < NV; v++)
                    s0[r][v] = vec_add(vec_load(h0_sums + r * PAIR + v * MOE_VLEN), s0[r][v]);
        }
        if (dt == MOE_DTYPE_Q4_0 && Q4_CODES)
            for (int r = 0; r < nr; r++) {
                const moe_vec off = vec_set1(q4_offset(ak[r], asum, r, k0));
                for (int v = 0; v < NV; v++) s0[r][v] = vec_add(s0[r][v], off);
            }
        block_end(nr, dt, p, s0, out, 0, NV);
    }
}

/* ---- K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) -------------------------------------------------- */

/* Q3_K is read as Q6_K with fewer bits (cpu.h): the same byte rows t = 64n + 32g + l (values
 * 128n + 32g + l and + 64), sub-blocks of 16 and int8 scales, so every kernel below serves both
 * and only the values' assembly differs. Byte row t's 2-bit pairs are qs row KQ_QS_ROW(t) at bits 2g
 * (low) and 2g + 4 (high); the third bits, hmask row l's bits 4n + g and 4n + g + 2. Q2_K's byte rows
 * are Q3_K's pairs alone (no third bit, no zero point), its scales and mins Q4_K's per 16 values. */
#define KQ_QS_ROW(dt, t) (MOE_CPU_KQ_PAIRS(dt) ? 32 * ((t) / 64) + (t) % 32 : (t))

/* Q5_K's and Q6_K's (and Q3_K's) values put together a byte row at a time (KQ_BYTES: at 256 and 512 bits):
 * the low nibbles and the high ones with their fifth bit (Q5_K) or two high bits and the −32 (Q6_K), 32
 * columns a 256-bit operation, stored to the caller's buffer and widened from there (kq_load_vec). Put
 * together in 32-bit lanes, 8 (16) values an operation, the high bits took 9 (Q5_K) or 11 (Q6_K)
 * more operations per 16 values beside Q4_K's 7, and bounded their decode: at 512 bits (2-core Zen 4,
 * qwen3-30b-a3b decode, the experts in the L3) Q5_K took 1.69 ms, Q6_K 1.89, now 1.04 and 1.11
 * (Q4_K's nibble words 0.75). Two byte rows a 512-bit operation were slower again (1.34, 1.39): the
 * two rows' halves then take a shuffle each to their places in the buffer. Q2_K's values are a shift and
 * a mask each, as Q4_K's nibbles: widened in registers. */
#define KQ_BYTES(dt) (MOE_CPU_LEVEL >= 1 && (dt) != MOE_DTYPE_Q4_K && (dt) != MOE_DTYPE_Q2_K)
#if MOE_CPU_LEVEL >= 1
_Static_assert(MOE_CPU_KQ_COLS == 32 && PAIR == 32, "kq_bytes takes a byte row in one 256-bit load");
/* b shifted left by s bits (right by −s) in 16-bit lanes: byte lanes once masked to the bits
 * that stay inside their byte. */
static inline simde__m256i bytes_shift(simde__m256i b, int s)
{
#if defined(__clang__) && defined(SIMDE_ARM_NEON_A64V8_NATIVE) /* simd.h: ivec_slli says why */
    const simde__m128i n = simde_mm_cvtsi32_si128(s > 0 ? s : -s);
    return s > 0 ? simde_mm256_sll_epi16(b, n) : s < 0 ? simde_mm256_srl_epi16(b, n) : b;
#else
    return s > 0 ? simde_mm256_slli_epi16(b, s) : s < 0 ? simde_mm256_srli_epi16(b, -s) : b;
#endif
}
/* Byte row t of a Q3_K / Q5_K / Q6_K super-block (cpu.h) as values: out[0 .. PAIR) the low ones',
 * out[PAIR .. 2·PAIR) the high ones' (Q3_K −4..3 and Q6_K −32..31 as int8, Q5_K 0..31). */
ALWAYS_INLINE void kq_bytes(const moe_dtype dt, const unsigned char *p, int t, unsigned char *out)
{
    const simde__m256i nib = simde_mm256_set1_epi8(15);
    const simde__m256i x =
        simde_mm256_loadu_si256(p + MOE_CPU_KQ_NIB(dt) + KQ_QS_ROW(dt, t) * MOE_CPU_KQ_COLS);
    simde__m256i lo = simde_mm256_and_si256(x, nib),
                 hi = simde_mm256_and_si256(simde_mm256_srli_epi16(x, 4), nib);
    if (dt == MOE_DTYPE_Q3_K) { /* qs bits 2g and 2g + 4; hmask byte l, bits 4n + g and + 2 to bit 2 */
        const int n = t / 64, g = (t / 32) & 1;
        const simde__m256i b = simde_mm256_loadu_si256(p + MOE_CPU_KQ_QH(dt) + (t % 32) * MOE_CPU_KQ_COLS);
        /* four: the third bit's mask (bit 2) and the zero point subtracted */
        const simde__m256i two = simde_mm256_set1_epi8(3), four = simde_mm256_set1_epi8(4);
        lo = simde_mm256_sub_epi8(
            simde_mm256_or_si256(simde_mm256_and_si256(bytes_shift(x, -2 * g), two),
                                 simde_mm256_and_si256(bytes_shift(b, 2 - 4 * n - g), four)),
            four);
        hi = simde_mm256_sub_epi8(
            simde_mm256_or_si256(simde_mm256_and_si256(bytes_shift(x, -2 * g - 4), two),
                                 simde_mm256_and_si256(bytes_shift(b, -4 * n - g), four)),
            four);
    } else if (dt == MOE_DTYPE_Q5_K) { /* qh byte l = t % 32, bits 2c and 2c + 1 (c = t / 32) to bit 4 */
        const int c = t / 32;
        const simde__m256i b = simde_mm256_loadu_si256(p + MOE_CPU_KQ_QH(dt) + (t % 32) * MOE_CPU_KQ_COLS);
        const simde__m256i bit4 = simde_mm256_set1_epi8(16);
        lo = simde_mm256_or_si256(lo, simde_mm256_and_si256(bytes_shift(b, 4 - 2 * c), bit4));
        hi = simde_mm256_or_si256(hi, simde_mm256_and_si256(bytes_shift(b, 3 - 2 * c), bit4));
    } else { /* Q6_K: t = 64n + 32g + l: qh byte 32n + l, bits 2g and 2g + 4 (two each) to bits 4-5 */
        const int n = t / 64, g = (t / 32) & 1;
        const simde__m256i b =
            simde_mm256_loadu_si256(p + MOE_CPU_KQ_QH(dt) + (32 * n + t % 32) * MOE_CPU_KQ_COLS);
        const simde__m256i bits45 = simde_mm256_set1_epi8(0x30), m32 = simde_mm256_set1_epi8(32);
        lo = simde_mm256_sub_epi8(
            simde_mm256_or_si256(lo, simde_mm256_and_si256(bytes_shift(b, 4 - 2 * g), bits45)), m32);
        hi = simde_mm256_sub_epi8(
            simde_mm256_or_si256(hi, simde_mm256_and_si256(bytes_shift(b, -2 * g), bits45)), m32);
    }
    simde_mm256_storeu_si256(out, lo);
    simde_mm256_storeu_si256(out + PAIR, hi);
}
#endif

/* Q4_K below 512 bits keeps in each byte two values of one sub-block, 16 k apart (cpu.h: byte row
 * 16j + i holds values 32j + i and 32j + i + 16), and is read in codes as Q4_0 is (Q4_CODES): the
 * low nibble and the whole byte, the activations a'. In ggml's layout a byte's two values are in
 * two sub-blocks, of two scales, and the high nibble took a shift: beside the widening and the
 * conversions, what bounded avx2 Q4_K decode. */
#define KQ_PAIRED(dt) ((dt) == MOE_DTYPE_Q4_K && Q4_CODES)

/* Vector v of byte row t of a K-quant super-block in the byte layout (cpu.h): the low nibbles'
 * values (lo) and the high ones' (hi; KQ_PAIRED: the whole bytes), with the fifth bit (Q5_K) or the two high
 * bits and the −32 (Q6_K) put in, or Q3_K's pairs with their third bits and the −4, or Q2_K's pairs; where
 * KQ_BYTES, widened from `row`, which kq_bytes filled. */
ALWAYS_INLINE void kq_load_vec(const moe_dtype dt, const unsigned char *p, const unsigned char *row, int t,
                               int v, moe_vec *lo, moe_vec *hi)
{
    if (KQ_BYTES(dt)) {
        const unsigned char *b = row + v * MOE_VLEN;
        *lo = MOE_CPU_KQ_SIGNED(dt) ? vec_load_i8((const int8_t *)(const void *)b)
                                    : vec_from_int(ivec_load_u8(b));
        *hi = MOE_CPU_KQ_SIGNED(dt) ? vec_load_i8((const int8_t *)(const void *)(b + PAIR))
                                    : vec_from_int(ivec_load_u8(b + PAIR));
        return;
    }
    (void)row;
    const moe_ivec x =
        ivec_load_u8(p + MOE_CPU_KQ_NIB(dt) + KQ_QS_ROW(dt, t) * MOE_CPU_KQ_COLS + v * MOE_VLEN);
    moe_ivec l = ivec_and(x, ivec_set1(15)), h = KQ_PAIRED(dt) ? x : ivec_srli(x, 4);
    if (dt == MOE_DTYPE_Q2_K) { /* qs bits 2g and 2g + 4 */
        const int g = (t / 32) & 1;
        l = ivec_and(ivec_srli(x, 2 * g), ivec_set1(3));
        h = ivec_and(ivec_srli(x, 2 * g + 4), ivec_set1(3));
    } else if (dt == MOE_DTYPE_Q3_K) { /* qs bits 2g and 2g + 4; hmask byte l, bits 4n + g and 4n + g + 2 */
        const int n = t / 64, g = (t / 32) & 1;
        const moe_ivec b = ivec_load_u8(p + MOE_CPU_KQ_QH(dt) + (t % 32) * MOE_CPU_KQ_COLS + v * MOE_VLEN);
        l = ivec_sub(ivec_or(ivec_and(ivec_srli(x, 2 * g), ivec_set1(3)),
                             ivec_slli(ivec_and(ivec_srli(b, 4 * n + g), ivec_set1(1)), 2)),
                     ivec_set1(4));
        h = ivec_sub(ivec_or(ivec_and(ivec_srli(x, 2 * g + 4), ivec_set1(3)),
                             ivec_slli(ivec_and(ivec_srli(b, 4 * n + g + 2), ivec_set1(1)), 2)),
                     ivec_set1(4));
    } else if (dt == MOE_DTYPE_Q5_K) { /* qh byte l = t % 32, bits 2c and 2c + 1 (c = t / 32) */
        const int c = t / 32;
        const moe_ivec b = ivec_load_u8(p + MOE_CPU_KQ_QH(dt) + (t % 32) * MOE_CPU_KQ_COLS + v * MOE_VLEN);
        l = ivec_or(l, ivec_slli(ivec_and(ivec_srli(b, 2 * c), ivec_set1(1)), 4));
        h = ivec_or(h, ivec_slli(ivec_and(ivec_srli(b, 2 * c + 1), ivec_set1(1)), 4));
    } else if (dt == MOE_DTYPE_Q6_K) { /* t = 64n + 32g + l: qh byte 32n + l, bits 2g, 2g + 4 */
        const int n = t / 64, g = (t / 32) & 1;
        const moe_ivec b =
            ivec_load_u8(p + MOE_CPU_KQ_QH(dt) + (32 * n + t % 32) * MOE_CPU_KQ_COLS + v * MOE_VLEN);
        l = ivec_sub(ivec_or(l, ivec_slli(ivec_and(ivec_srli(b, 2 * g), ivec_set1(3)), 4)), ivec_set1(32));
        h = ivec_sub(ivec_or(h, ivec_slli(ivec_and(ivec_srli(b, 2 * g + 4), ivec_set1(3)), 4)),
                     ivec_set1(32));
    }
    /* A conversion each (one operation where the CPU has it), not the mantissa trick (an or
     * and a float subtraction): fewer operations a value, where decode widens in registers. */
    *lo = vec_from_int(l);
    *hi = vec_from_int(h);
}
/* Room for a byte row's values (kq_bytes), where KQ_BYTES. */
#define KQ_ROW_BYTES (KQ_BYTES(MOE_DTYPE_Q6_K) ? 2 * PAIR : 1)
/* kq_bytes where KQ_BYTES (the row kq_load_vec then reads). */
ALWAYS_INLINE const unsigned char *kq_row(const moe_dtype dt, const unsigned char *p, int t,
                                          unsigned char *buf)
{
#if MOE_CPU_LEVEL >= 1
    if (KQ_BYTES(dt)) {
        kq_bytes(dt, p, t, buf);
        return buf;
    }
#endif
    (void)dt, (void)p, (void)t;
    return buf;
}

/* Byte row t of a K-quant super-block's nibbles (cpu.h) for the pair's NV vectors (kq_load_vec;
 * at 512 bits Q4_K and Q2_K are in words). */
ALWAYS_INLINE void kq_load(const moe_dtype dt, const unsigned char *p, int t, moe_vec lo[NV], moe_vec hi[NV])
{
#if MOE_CPU_NIBBLE_WORDS
    /* Q2_K: qs row r = KQ_QS_ROW(t) is byte r % 4 of group r / 4, its values bits 2g and 2g + 4 of it:
     * a shift and a lookup a vector, where the byte layout took a widening load, a shift, a mask and a
     * conversion (2-core Zen 4, qwen3-30b-a3b decode, the experts in the L3: 1.16 ms a forward, Q3_K's
     * time, against Q4_K's 0.74 from its words). */
    if (dt == MOE_DTYPE_Q2_K) {
        const moe_vec table = nibble_table(dt);
        const int r = KQ_QS_ROW(dt, t), s = 8 * (r % 4) + 2 * ((t / 32) % 2);
        for (int v = 0; v < NV; v++) {
            const moe_ivec x = ivec_load_words(p + MOE_CPU_KQ_NIB(dt) + (r / 4) * 4 * MOE_CPU_KQ_COLS, v);
            lo[v] = vec_pair(x, s, table);
            hi[v] = vec_pair(x, s + 4, table);
        }
        return;
    }
    if (dt == MOE_DTYPE_Q4_K) { /* words (cpu.h): byte row t is byte t % 4 of group t / 4 */
        const moe_vec table = nibble_table(dt);
        for (int v = 0; v < NV; v++) {
            const moe_ivec x = ivec_load_words(p + MOE_CPU_KQ_NIB(dt) + (t / 4) * 4 * MOE_CPU_KQ_COLS, v);
            lo[v] = vec_nibble(x, 2 * (t % 4), table);
            hi[v] = vec_nibble(x, 2 * (t % 4) + 1, table);
        }
        return;
    }
#endif
    unsigned char buf[KQ_ROW_BYTES];
    const unsigned char *row = kq_row(dt, p, t, buf);
    for (int v = 0; v < NV; v++) kq_load_vec(dt, p, row, t, v, &lo[v], &hi[v]);
}

/* A group: the KQ_GROUP(dt) byte rows from t0, whose low values are one sub-block's (j_lo) and high
 * ones another's (j_hi), or paired (KQ_PAIRED) the same sub-block's: then its sum is taken as two,
 * the low values' and the high ones' (two FMA chains a vector in decode, as two sub-blocks give),
 * each in k order, added before the scaling, in every tile alike. The k (within the super-block)
 * of byte row t's low-nibble value; the high one's is + KQ_HI. */
#define KQ_LO_K(dt, t)                                                                                       \
    (MOE_CPU_KQ_SUB16(dt) ? 128 * ((t) / 64) + (t) % 64                                                      \
     : KQ_PAIRED(dt)      ? 32 * ((t) / 16) + (t) % 16                                                       \
                          : 64 * ((t) / 32) + (t) % 32)
#define KQ_HI(dt)    (MOE_CPU_KQ_SUB16(dt) ? 64 : KQ_PAIRED(dt) ? 16 : 32)
#define KQ_SUB(dt)   (MOE_CPU_KQ_SUB16(dt) ? 16 : 32) /* values per sub-block (one scale) */
#define KQ_GROUP(dt) (MOE_CPU_KQ_SUB16(dt) || KQ_PAIRED(dt) ? 16 : 32)

/* Q2_K's d·sc and dmin·m for a vector of columns, from ggml's scale bytes at sc (the scale's nibble low,
 * the min's high): kq_scale's and int_kq16_rows'. */
ALWAYS_INLINE void q2k_scale_min(moe_vec d, moe_vec dmin, const unsigned char *sc, moe_vec *scale,
                                 moe_vec *min)
{
    const moe_ivec x = ivec_load_u8(sc);
    *scale = vec_mul(d, vec_from_int(ivec_and(x, ivec_set1(15))));
    *min = vec_mul(dmin, vec_from_int(ivec_srli(x, 4)));
}

/* End of sub-block j of super-block p: tot[r] += d·sc[j]·sums[r] (− dmin·m[j]·asum[r][j], for
 * Q2_K / Q4_K / Q5_K: the min is the same for every value of the sub-block, so it multiplies Σ a_r over
 * the sub-block, which asum[r] holds from the super-block's first sub-block). tot: the rows'
 * totals, in registers (kq_rows' chunk tiles) or loaded from out and stored back (kq_end). */
ALWAYS_INLINE void kq_scale(const int nr, const moe_dtype dt, const unsigned char *p, int j,
                            const float *const *asum, moe_vec sums[MR_MAX][NV], moe_vec tot[MR_MAX][NV],
                            const int v0, const int nvs)
{
    for (int v = 0; v < nvs; v++) { /* sums[·][v], tot[·][v]: the pair's vector v0 + v */
        const int c = (v0 + v) * MOE_VLEN;
        const moe_vec d = vec_load_f16((const uint16_t *)(const void *)p + c);
        const unsigned char *sc = p + MOE_CPU_KQ_SC(dt) + j * MOE_CPU_KQ_COLS + c;
        moe_vec scale, min = vec_zero();
        if (MOE_CPU_KQ_SIGNED(dt)) {
            scale = vec_mul(d, vec_load_i8((const int8_t *)(const void *)sc));
        } else {
            const moe_vec dmin = vec_load_f16((const uint16_t *)(const void *)(p + MOE_CPU_KQ_DMIN) + c);
            if (dt == MOE_DTYPE_Q2_K) {
                q2k_scale_min(d, dmin, sc, &scale, &min);
            } else {
                scale = vec_mul(d, vec_from_int(ivec_load_u8(sc)));
                min = vec_mul(dmin, vec_from_int(ivec_load_u8(p + MOE_CPU_KQ_M + j * MOE_CPU_KQ_COLS + c)));
            }
        }
        for (int r = 0; r < nr; r++) {
            tot[r][v] = vec_fmadd(scale, sums[r][v], tot[r][v]);
            if (!MOE_CPU_KQ_SIGNED(dt)) tot[r][v] = vec_fmadd(min, vec_set1(-asum[r][j]), tot[r][v]);
        }
    }
}
ALWAYS_INLINE void kq_end(const int nr, const moe_dtype dt, const unsigned char *p, int j,
                          const float *const *asum, moe_vec sums[MR_MAX][NV], float *restrict out,
                          const int v0, const int nvs)
{
    moe_vec tot[MR_MAX][NV];
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nvs; v++) tot[r][v] = vec_load(out + r * PAIR + (v0 + v) * MOE_VLEN);
    kq_scale(nr, dt, p, j, asum, sums, tot, v0, nvs);
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nvs; v++) vec_store(out + r * PAIR + (v0 + v) * MOE_VLEN, tot[r][v]);
}

/* At 512 bits a byte row's two values (two sub-blocks) keep a sum each in registers (4 FMA chains
 * a decode row), and so does a single row at 256 bits (KQ_FUSED); otherwise a group's bytes are
 * read twice from L1, low nibbles then high. */
#define KQ_ONE_PASS(nr, src) (MOE_CPU_LEVEL == 2 || KQ_FUSED(nr, src))
/* A single row at 256 bits (decode) reading the packed pair: its 8 sums leave 8 of the 16
 * registers, so each vector's two values go into their FMAs as soon as they are widened
 * (kq_load_vec). Widening the whole byte row first (kq_load: 8 vectors live) spilled two sums to
 * the stack, and their store-to-load round trips, not the operations, bounded Q4_K decode.
 * Prefill's one-row chunk tiles (src WIDENING / FROM_WIDENED) keep two passes. */
#define KQ_FUSED(nr, src) (MOE_CPU_LEVEL == 1 && (nr) == 1 && (src) == FROM_PACKED)
/* At 512 bits the chunk tiles (gemm_rows: src WIDENING / FROM_WIDENED) keep the rows' totals in
 * registers through the chunk, out read and written once a chunk rather than once a sub-block (for
 * Q6_K every 16 k: a load, an FMA and a store a row and vector beside 32 FMAs), and take each group
 * in two passes, low values then high (from the widened buffer), for the registers: 2 sums and 2
 * totals a row and vector, 24 at MR_KQ rows. The sub-blocks' sums and the order they are scaled
 * into the totals are as in one pass, so the result is too, bit for bit. */
#define KQ_HOLD(src) (MOE_CPU_LEVEL == 2 && (src) != FROM_PACKED)

/* A KQ_PAIRED sub-block's low values' sums (nvs vectors a row) kept in memory while the high ones'
 * are taken, then added to them. */
ALWAYS_INLINE void park_sums(const int nr, moe_vec s[MR_MAX][NV], float *parked, const int nvs)
{
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nvs; v++) vec_store(parked + r * PAIR + v * MOE_VLEN, s[r][v]);
}
ALWAYS_INLINE void add_parked(const int nr, moe_vec s[MR_MAX][NV], const float *parked, const int nvs)
{
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nvs; v++) s[r][v] = vec_add(vec_load(parked + r * PAIR + v * MOE_VLEN), s[r][v]);
}

/* s[r][·] = Σ over half h (0: the low values, 1: the high ones) of a group (KQ_GROUP rows of the
 * widened chunk from w, SPLIT_NV vectors) of ag_r[KQ_HI·h + t] · value, in k order. */
ALWAYS_INLINE void kq_split_half(const int nr, const moe_dtype dt, const float *w, const float *const *ag,
                                 const int h, moe_vec s[MR_MAX][NV])
{
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < SPLIT_NV; v++) s[r][v] = vec_zero();
    for (int t4 = 0; t4 < KQ_GROUP(dt); t4 += 4) {
        MOE_UNROLL_4
        for (int t = t4; t < t4 + 4; t++) {
            moe_vec wv[SPLIT_NV];
            for (int v = 0; v < SPLIT_NV; v++) wv[v] = vec_load(w + (2 * t + h) * PAIR + v * MOE_VLEN);
            for (int r = 0; r < nr; r++) {
                const moe_vec x = vec_set1(ag[r][h * KQ_HI(dt) + t]);
                for (int v = 0; v < SPLIT_NV; v++) s[r][v] = vec_fmadd(x, wv[v], s[r][v]);
            }
        }
    }
}

/* kq_rows' widened tiles below 512 bits (SPLIT_WIDENED, above block_rows_split): per group the
 * halves' FMAs, each half scaled as it ends, or KQ_PAIRED the low values' sums parked until the
 * high ones' are added to them. */
ALWAYS_INLINE void kq_rows_split(const int nr, const moe_dtype dt, int64_t k_dim, const float *const *a,
                                 const float *const *asum, const unsigned char *b, float *restrict out,
                                 const float *widened)
{
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_SUPER_BLOCK_SIZE) {
        const unsigned char *p = b + (size_t)(k0 / MOE_SUPER_BLOCK_SIZE) * MOE_CPU_KQ_PAIR_SUPER(dt);
        const float *as[MR_MAX];
        float own[MR_MAX][16]; /* the super-block's sums where the caller has none (asum NULL) */
        for (int r = 0; r < nr; r++) {
            as[r] = NULL;
            if (MOE_CPU_KQ_SIGNED(dt)) continue;
            if (!asum) block_sums(a[r] + k0, MOE_SUPER_BLOCK_SIZE, dt, own[r]);
            as[r] = asum ? asum[r] + k0 / ASUM_K(dt) : own[r];
        }
        for (int v0 = 0; v0 < NV; v0 += SPLIT_NV)
            for (int t0 = 0; t0 < 128; t0 += KQ_GROUP(dt)) {
                const int j_lo = KQ_LO_K(dt, t0) / KQ_SUB(dt),
                          j_hi = (KQ_LO_K(dt, t0) + KQ_HI(dt)) / KQ_SUB(dt);
                const float *ag[MR_MAX];
                for (int r = 0; r < nr; r++) ag[r] = a[r] + k0 + KQ_LO_K(dt, t0);
                const float *w = widened + k0 * PAIR + 2 * t0 * PAIR + v0 * MOE_VLEN;
                moe_vec s[MR_MAX][NV];
                kq_split_half(nr, dt, w, ag, 0, s);
                if (KQ_PAIRED(dt)) {
                    float parked[MR_MAX * PAIR];
                    park_sums(nr, s, parked, SPLIT_NV);
                    kq_split_half(nr, dt, w, ag, 1, s);
                    add_parked(nr, s, parked, SPLIT_NV);
                } else {
                    kq_end(nr, dt, p, j_lo, as, s, out, v0, SPLIT_NV);
                    kq_split_half(nr, dt, w, ag, 1, s);
                }
                kq_end(nr, dt, p, j_hi, as, s, out, v0, SPLIT_NV);
            }
    }
}

/* out[r][0..32) = Σ_k a_r[k] · pair[k][·] for r < nr, the pair in a K-quant layout (cpu.h): per
 * sub-block, Σ a·q in registers, then scaled into the total by kq_end / kq_scale. asum[r] (Q2_K / Q4_K /
 * Q5_K): Σ a_r over each sub-block (block_sums). */
ALWAYS_INLINE void kq_rows(const int nr, const moe_dtype dt, int64_t k_dim, const float *const *a,
                           const float *const *asum, const unsigned char *b, float *restrict out,
                           float *widened, const int src)
{
    const size_t super_bytes = MOE_CPU_KQ_PAIR_SUPER(dt);
    const int G = KQ_GROUP(dt);
    if (SPLIT_WIDENED(src)) {
        kq_rows_split(nr, dt, k_dim, a, asum, b, out, widened);
        return;
    }
    const bool hold = KQ_HOLD(src), one_pass = KQ_ONE_PASS(nr, src) && !hold;
    moe_vec tot[MR_MAX][NV];
    if (src == FROM_PACKED) zero_rows(nr, out);
    if (hold)
        for (int r = 0; r < nr; r++)
            for (int v = 0; v < NV; v++) tot[r][v] = vec_load(out + r * PAIR + v * MOE_VLEN);
    for (int64_t k0 = 0; k0 < k_dim; k0 += MOE_SUPER_BLOCK_SIZE) {
        const unsigned char *p = b + (size_t)(k0 / MOE_SUPER_BLOCK_SIZE) * super_bytes;
        const float *ak[MR_MAX], *as[MR_MAX];
        float own[MR_MAX][16]; /* the super-block's sums where the caller has none (asum NULL) */
        for (int r = 0; r < nr; r++) {
            ak[r] = a[r] + k0;
            as[r] = NULL;
            if (MOE_CPU_KQ_SIGNED(dt)) continue;
            if (!asum) block_sums(ak[r], MOE_SUPER_BLOCK_SIZE, dt, own[r]);
            as[r] = asum ? asum[r] + k0 / ASUM_K(dt) : own[r];
        }
        if (src != FROM_WIDENED)
            for (size_t l = 0; l < MOE_CPU_KQ_NIB(dt); l += 64) prefetch_line(p + l);
        float *wk =
            src == FROM_PACKED ? NULL : widened + (k0 / MOE_SUPER_BLOCK_SIZE) * MOE_SUPER_BLOCK_SIZE * PAIR;
        for (int t0 = 0; t0 < 128; t0 += G) {
            const int j_lo = KQ_LO_K(dt, t0) / KQ_SUB(dt), j_hi = (KQ_LO_K(dt, t0) + KQ_HI(dt)) / KQ_SUB(dt);
            /* The group's activations: byte row t's low value is at ag[r][t − t0] (KQ_LO_K is
             * linear within a group), its high one KQ_HI after. Indexing from the group's start lets the
             * compiler step a pointer rather than recompute KQ_LO_K's divisions for every byte row and row.
             */
            const float *ag[MR_MAX];
            for (int r = 0; r < nr; r++) ag[r] = ak[r] + KQ_LO_K(dt, t0);
            moe_vec s0[MR_MAX][NV], s1[MR_MAX][NV];
            for (int r = 0; r < nr; r++)
                for (int v = 0; v < NV; v++) s0[r][v] = s1[r][v] = vec_zero();
            /* Byte rows in fours, each four unrolled: Q4_K's word holds four rows' bytes (cpu.h),
             * and the nibble's shift is then a constant. */
            for (int t4 = t0; t4 < t0 + G; t4 += 4) {
                MOE_UNROLL_4
                for (int t = t4; t < t4 + 4; t++) {
                    if (t % 2 == 0 && src != FROM_WIDENED) {
                        prefetch_line(p + MOE_CPU_KQ_NIB(dt) + KQ_QS_ROW(dt, t) * MOE_CPU_KQ_COLS);
                        if (t < MOE_CPU_KQ_QH_ROWS(dt))
                            prefetch_line(p + MOE_CPU_KQ_QH(dt) + t * MOE_CPU_KQ_COLS);
                    }
                    if (KQ_FUSED(nr, src)) {
                        const moe_vec a_lo = vec_set1(ag[0][t - t0]);
                        const moe_vec a_hi = vec_set1(ag[0][t - t0 + KQ_HI(dt)]);
                        unsigned char buf[KQ_ROW_BYTES];
                        const unsigned char *row = kq_row(dt, p, t, buf);
                        for (int v = 0; v < NV; v++) {
                            moe_vec lo, hi;
                            kq_load_vec(dt, p, row, t, v, &lo, &hi);
                            s0[0][v] = vec_fmadd(a_lo, lo, s0[0][v]);
                            s1[0][v] = vec_fmadd(a_hi, hi, s1[0][v]);
                        }
                        continue;
                    }
                    moe_vec lo[NV], hi[NV];
                    if (src == FROM_WIDENED)
                        load_widened(wk, t, lo, hi);
                    else
                        kq_load(dt, p, t, lo, hi);
                    if (src == WIDENING) store_widened(wk, t, lo, hi); /* (both: one pass or two) */
                    fma_rows(nr, ag, t - t0, lo, s0);
                    if (one_pass) fma_rows(nr, ag, t - t0 + KQ_HI(dt), hi, s1);
                }
            }
            float parked[MR_MAX * PAIR]; /* KQ_PAIRED, two passes: the low values' sums */
            if (KQ_PAIRED(dt)) {         /* one sub-block: the low values' sums wait for the high ones' */
                if (!one_pass) park_sums(nr, s0, parked, NV);
            } else if (hold)
                kq_scale(nr, dt, p, j_lo, as, s0, tot, 0, NV);
            else
                kq_end(nr, dt, p, j_lo, as, s0, out, 0, NV);
            if (!one_pass) {
                for (int t4 = t0; t4 < t0 + G; t4 += 4) {
                    MOE_UNROLL_4
                    for (int t = t4; t < t4 + 4; t++) {
                        moe_vec lo[NV], hi[NV];
                        if (src != FROM_PACKED) /* (the widening tile stored both in its first pass) */
                            load_widened(wk, t, lo, hi);
                        else
                            kq_load(dt, p, t, lo, hi);
                        fma_rows(nr, ag, t - t0 + KQ_HI(dt), hi, s1);
                    }
                }
            }
            if (KQ_PAIRED(dt) && !one_pass)
                add_parked(nr, s1, parked, NV);
            else if (KQ_PAIRED(dt)) /* (one pass: both in registers) */
                for (int r = 0; r < nr; r++)
                    for (int v = 0; v < NV; v++) s1[r][v] = vec_add(s0[r][v], s1[r][v]);
            if (hold)
                kq_scale(nr, dt, p, j_hi, as, s1, tot, 0, NV);
            else
                kq_end(nr, dt, p, j_hi, as, s1, out, 0, NV);
        }
    }
    if (hold)
        for (int r = 0; r < nr; r++)
            for (int v = 0; v < NV; v++) vec_store(out + r * PAIR + v * MOE_VLEN, tot[r][v]);
}

/* clang-format off */
#define ROWS_1(X, d)  X(1, d)
#define ROWS_2(X, d)  ROWS_1(X, d) X(2, d)
#define ROWS_3(X, d)  ROWS_2(X, d) X(3, d)
#define ROWS_4(X, d)  ROWS_3(X, d) X(4, d)
#define ROWS_5(X, d)  ROWS_4(X, d) X(5, d)
#define ROWS_6(X, d)  ROWS_5(X, d) X(6, d)
#define ROWS_7(X, d)  ROWS_6(X, d) X(7, d)
#define ROWS_8(X, d)  ROWS_7(X, d) X(8, d)
#define ROWS_9(X, d)  ROWS_8(X, d) X(9, d)
#define ROWS_10(X, d) ROWS_9(X, d) X(10, d)
#define ROWS_11(X, d) ROWS_10(X, d) X(11, d)
#define ROWS_12(X, d) ROWS_11(X, d) X(12, d)
/* clang-format on */
#define ROWS_(n, X, d) ROWS_##n(X, d)
#define ROWS(n, X, d)  ROWS_(n, X, d) /* X(r, d) for r = 1..n: each row count its own copy */

/* One format's rows: the kernel of its family (dead branches once inlined with a constant dt).
 * prefetch: dense_rows'. */
ALWAYS_INLINE void rows_of(const int nr, const moe_dtype dt, int64_t k_dim, const float *const *a,
                           const float *const *asum, const unsigned char *b, float *restrict out,
                           float *widened, const int src, const bool prefetch)
{
    if (dt == MOE_DTYPE_Q2_K || dt == MOE_DTYPE_Q3_K || dt == MOE_DTYPE_Q4_K || dt == MOE_DTYPE_Q5_K ||
        dt == MOE_DTYPE_Q6_K)
        kq_rows(nr, dt, k_dim, a, asum, b, out, widened, src);
    else if (dt == MOE_DTYPE_Q8_0 || dt == MOE_DTYPE_Q4_0 || dt == MOE_DTYPE_MXFP4)
        block_rows(nr, dt, k_dim, a, asum, b, out, widened, src);
    else
        dense_rows(nr, dt, k_dim, a, b, out, widened, src, prefetch);
}

/* A tile: n rows (1..its MR) of one pair, a switch over n whose cases are specialised copies.
 * asum: each row's activation sums per ASUM_K k (block_sums) for Q2_K, Q4_K, Q5_K and Q4_0 in codes
 * (Q4_CODES); NULL for the other formats, and where the kernel sums a block or super-block at a time.
 * widened: the chunk's widened steps, which the widening_* tiles write and the widened_* ones read
 * (gemm_rows); NULL for the packed tiles. */
typedef void (*tile_fn)(int n, int64_t k_dim, const float *const *a, const float *const *asum,
                        const unsigned char *b, float *out, float *widened);
#define CASE_PACKED(r, dt)                                                                                   \
    case r:                                                                                                  \
        rows_of(r, dt, k_dim, a, asum, b, out, NULL, FROM_PACKED, true);                                     \
        return;
#define CASE_PACKED_HW(r, dt) /* the dense formats without software prefetch */                              \
    case r:                                                                                                  \
        rows_of(r, dt, k_dim, a, asum, b, out, NULL, FROM_PACKED, false);                                    \
        return;
#define CASE_WIDENING(r, dt)                                                                                 \
    case r:                                                                                                  \
        rows_of(r, dt, k_dim, a, asum, b, out, widened, WIDENING, true);                                     \
        return;
#define CASE_WIDENED(r, dt)                                                                                  \
    case r:                                                                                                  \
        rows_of(r, dt, k_dim, a, asum, b, out, widened, FROM_WIDENED, true);                                 \
        return;
#define TILE(name, mr, dt, CASE)                                                                             \
    static void name(int n, int64_t k_dim, const float *const *a, const float *const *asum,                  \
                     const unsigned char *b, float *out, float *widened)                                     \
    {                                                                                                        \
        (void)asum;                                                                                          \
        (void)widened;                                                                                       \
        switch (n) {                                                                                         \
            ROWS(mr, CASE, dt)                                                                               \
        }                                                                                                    \
    }
/* The prefill object's one symbol (moe_cpu_kernels_<level>_prefill_tiles): format dt's widening
 * and widened tiles; NULLs for F32, whose packed tile reads it as it is. A level whose float code
 * is another's (avx2vnni: avx2's; neondot, simdedot: the baseline's) has no prefill object and
 * calls that level's (MOE_CPU_PREFILL_SYMBOL, CMakeLists.txt). */
#ifndef MOE_CPU_KERNELS_PREFILL
#error "kernels.c is built by CMake, twice per level (MOE_CPU_KERNELS_PREFILL 0 and 1)"
#endif
typedef struct prefill_tiles {
    tile_fn widening, widened;
} prefill_tiles;
#define KERNELS_CAT_(a, b) a##b
#define KERNELS_CAT(a, b)  KERNELS_CAT_(a, b)
#ifndef MOE_CPU_PREFILL_SYMBOL
#define MOE_CPU_PREFILL_SYMBOL MOE_CPU_KERNELS_SYMBOL
#endif
#define PREFILL_TILES KERNELS_CAT(MOE_CPU_PREFILL_SYMBOL, _prefill_tiles)
prefill_tiles PREFILL_TILES(moe_dtype dt);

#if !MOE_CPU_KERNELS_PREFILL
TILE(tile_f32, MR_F32, MOE_DTYPE_F32, CASE_PACKED)
TILE(tile_f16, MR_F16, MOE_DTYPE_F16, CASE_PACKED)
TILE(tile_bf16, MR_F16, MOE_DTYPE_BF16, CASE_PACKED)
TILE(tile_f32_hw, MR_F32, MOE_DTYPE_F32, CASE_PACKED_HW)
TILE(tile_f16_hw, MR_F16, MOE_DTYPE_F16, CASE_PACKED_HW)
TILE(tile_bf16_hw, MR_F16, MOE_DTYPE_BF16, CASE_PACKED_HW)
TILE(tile_q8, MR_Q8, MOE_DTYPE_Q8_0, CASE_PACKED)
TILE(tile_q4, MR_Q4, MOE_DTYPE_Q4_0, CASE_PACKED)
TILE(tile_mxfp4, MR_Q4, MOE_DTYPE_MXFP4, CASE_PACKED)
TILE(tile_q4k, MR_KQ, MOE_DTYPE_Q4_K, CASE_PACKED)
TILE(tile_q5k, MR_KQ, MOE_DTYPE_Q5_K, CASE_PACKED)
TILE(tile_q6k, MR_KQ, MOE_DTYPE_Q6_K, CASE_PACKED)
TILE(tile_q3k, MR_KQ, MOE_DTYPE_Q3_K, CASE_PACKED)
TILE(tile_q2k, MR_KQ, MOE_DTYPE_Q2_K, CASE_PACKED)
#endif

/* ---- prefill: a chunk of a pair widened once for all of a task's rows ------------------------- */

/* A row tile reading the packed weights widens them beside its FMAs, once per tile: at 512 bits a
 * 4-bit value costs a shift and a vpermps, Q8_0 a sign extension and a conversion, shared by MR
 * rows' FMAs, and Zen 4 runs the shift and the conversion on the FMA pipes. With more rows than
 * one tile (prefill) gemm_rows goes through the pair WIDENED_K k at a time: the chunk's first row
 * tile reads it packed, as a tile always does (its FMAs hide the memory it waits on; a separate
 * widening pass stalled on it), and also stores each step it widens; the chunk's other tiles read
 * those floats. The rows' sums wait in memory from chunk to chunk. A row's sums are the same FMAs
 * in the same order as in one packed tile over the whole k, so its result is bit for bit the
 * same: it does not depend on how many rows its expert has (test_forward's batch_invariance).
 * The buffer holds WIDENED_K k of one pair (32 KiB), never the tensor: the weights are still read
 * from memory once, in their format. F16 and BF16 are float32 once widened, so their widened tiles
 * are F32's kernel, 8 rows a tile at 512 bits; there the block formats take up to BLOCK_ONE_PASS
 * rows, so every tile reads a block once, and the K-quants' chunk tiles keep their totals in
 * registers through the chunk (KQ_HOLD); narrower, the widened tiles of both take SPLIT_NV vectors
 * of the pair at a time for MR_SPLIT rows (SPLIT_WIDENED). */
#define WIDENED_K    256 /* a multiple of the blocks' 32 k and the super-blocks' 256 */
#define WIDENED_ROWS 32  /* rows sharing one widening (cpu_backend.c's row tile) */
#if BLOCK_SPLIT
#define MR_WIDENING_BLOCK BLOCK_ONE_PASS
#define MR_WIDENED_BLOCK  BLOCK_ONE_PASS
#else
#define MR_WIDENING_BLOCK MR_Q4
#define MR_WIDENED_BLOCK  MR_SPLIT /* (block_rows_split) */
#endif
#if MOE_CPU_KERNELS_PREFILL
TILE(widening_f16, MR_F32, MOE_DTYPE_F16, CASE_WIDENING)
TILE(widening_bf16, MR_F32, MOE_DTYPE_BF16, CASE_WIDENING)
TILE(widening_q8, MR_WIDENING_BLOCK, MOE_DTYPE_Q8_0, CASE_WIDENING)
TILE(widening_q4, MR_WIDENING_BLOCK, MOE_DTYPE_Q4_0, CASE_WIDENING)
TILE(widening_mxfp4, MR_WIDENING_BLOCK, MOE_DTYPE_MXFP4, CASE_WIDENING)
TILE(widening_q4k, MR_KQ, MOE_DTYPE_Q4_K, CASE_WIDENING)
TILE(widening_q5k, MR_KQ, MOE_DTYPE_Q5_K, CASE_WIDENING)
TILE(widening_q6k, MR_KQ, MOE_DTYPE_Q6_K, CASE_WIDENING)
TILE(widening_q3k, MR_KQ, MOE_DTYPE_Q3_K, CASE_WIDENING)
TILE(widening_q2k, MR_KQ, MOE_DTYPE_Q2_K, CASE_WIDENING)
TILE(widened_dense, MR_F32, MOE_DTYPE_F32, CASE_WIDENED)
TILE(widened_q8, MR_WIDENED_BLOCK, MOE_DTYPE_Q8_0, CASE_WIDENED)
TILE(widened_q4, MR_WIDENED_BLOCK, MOE_DTYPE_Q4_0, CASE_WIDENED)
TILE(widened_mxfp4, MR_WIDENED_BLOCK, MOE_DTYPE_MXFP4, CASE_WIDENED)
TILE(widened_q4k, MR_KQ_WIDENED, MOE_DTYPE_Q4_K, CASE_WIDENED)
TILE(widened_q5k, MR_KQ_WIDENED, MOE_DTYPE_Q5_K, CASE_WIDENED)
TILE(widened_q6k, MR_KQ_WIDENED, MOE_DTYPE_Q6_K, CASE_WIDENED)
TILE(widened_q3k, MR_KQ_WIDENED, MOE_DTYPE_Q3_K, CASE_WIDENED)
TILE(widened_q2k, MR_KQ_WIDENED, MOE_DTYPE_Q2_K, CASE_WIDENED)

prefill_tiles PREFILL_TILES(moe_dtype dt)
{
    switch (dt) {
    case MOE_DTYPE_F16:
        return (prefill_tiles){widening_f16, widened_dense};
    case MOE_DTYPE_BF16:
        return (prefill_tiles){widening_bf16, widened_dense};
    case MOE_DTYPE_Q8_0:
        return (prefill_tiles){widening_q8, widened_q8};
    case MOE_DTYPE_Q4_0:
        return (prefill_tiles){widening_q4, widened_q4};
    case MOE_DTYPE_MXFP4:
        return (prefill_tiles){widening_mxfp4, widened_mxfp4};
    case MOE_DTYPE_Q4_K:
        return (prefill_tiles){widening_q4k, widened_q4k};
    case MOE_DTYPE_Q5_K:
        return (prefill_tiles){widening_q5k, widened_q5k};
    case MOE_DTYPE_Q6_K:
        return (prefill_tiles){widening_q6k, widened_q6k};
    case MOE_DTYPE_Q3_K:
        return (prefill_tiles){widening_q3k, widened_q3k};
    case MOE_DTYPE_Q2_K:
        return (prefill_tiles){widening_q2k, widened_q2k};
    default:
        return (prefill_tiles){NULL, NULL};
    }
}
#else /* the rest of the level: the packed tiles above, the integer ones, the GEMM */

/* ---- integer activations: kernels_int.h (a part of this file) --------------------------------- */

#include "kernels_int.h"

/* ---- epilogue ------------------------------------------------------------------------------- */

/* GELU, erf form (GeGLU and GELU). */
static float gelu(float v)
{
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

/* The activation on one vector: SiLU and ReLU vectorised; GELU's erf per lane (no SIMD erf
 * is at hand, and GELU experts are rare among MoE models). */
static moe_vec activate_vec(int act, moe_vec v)
{
    if (act == MOE_ACTIVATION_SWIGLU)
        return vec_div(v, vec_add(vec_set1(1.0f), vec_exp(vec_sub(vec_zero(), v))));
    if (act == MOE_ACTIVATION_RELU) return vec_max(v, vec_zero());
    float lanes[MOE_VLEN];
    vec_store(lanes, v);
    for (int i = 0; i < MOE_VLEN; i++) lanes[i] = gelu(lanes[i]);
    return vec_load(lanes);
}

/* gpt-oss's clamped SwiGLU (moe.h, MOE_ACTIVATION_SWIGLU_OAI) on gate g and up u. The limit is
 * the first operand of min / max, which return the second when either is NaN: a NaN stays one,
 * as in the reference. */
static moe_vec swiglu_oai_vec(const moe_cpu_gemm *g, moe_vec gate, moe_vec up)
{
    const moe_vec limit = vec_set1(g->swiglu_limit), one = vec_set1(1.0f);
    gate = vec_min(limit, gate);
    up = vec_max(vec_set1(-g->swiglu_limit), vec_min(limit, up));
    const moe_vec glu = vec_div(gate, vec_add(one, vec_exp(vec_mul(vec_set1(-g->swiglu_alpha), gate))));
    return vec_mul(glu, vec_add(up, one));
}

/* Applies the epilogue to rows [0, n_rows) of tmp in place, then writes their valid columns
 * of pair q. The bias first (this expert's, zero past n_out), then gated: act(gate) · up into
 * the first 16 columns. */
static void epilogue(const moe_cpu_gemm *g, float *tmp, int64_t row0, int n_rows, int64_t q)
{
    const int64_t per_pair = g->gated ? MOE_CPU_PANEL : 2 * MOE_CPU_PANEL;
    const int64_t col0 = q * per_pair;
    const int64_t n_cols = g->n_out - col0 < per_pair ? g->n_out - col0 : per_pair;
    float bias[PAIR] = {0}; /* the pair's bias in its column order */
    if (g->bias)
        for (int64_t c = 0; c < n_cols; c++) {
            bias[c] = g->bias[col0 + c];
            if (g->gated) bias[MOE_CPU_PANEL + c] = g->bias[g->n_out + col0 + c];
        }
    for (int r = 0; r < n_rows; r++) {
        float *t = tmp + r * PAIR;
        if (g->bias)
            for (int v = 0; v < NV; v++)
                vec_store(t + v * MOE_VLEN,
                          vec_add(vec_load(t + v * MOE_VLEN), vec_load(bias + v * MOE_VLEN)));
        if (g->gated) {
            for (int v = 0; v < VPP; v++) {
                const moe_vec gate = vec_load(t + v * MOE_VLEN),
                              up = vec_load(t + MOE_CPU_PANEL + v * MOE_VLEN);
                vec_store(t + v * MOE_VLEN, g->activation == MOE_ACTIVATION_SWIGLU_OAI
                                                ? swiglu_oai_vec(g, gate, up)
                                                : vec_mul(activate_vec(g->activation, gate), up));
            }
        } else if (g->activation >= 0) {
            for (int v = 0; v < NV; v++)
                vec_store(t + v * MOE_VLEN, activate_vec(g->activation, vec_load(t + v * MOE_VLEN)));
        }
        memcpy(g->out + (row0 + r) * g->n_out + col0, t, sizeof(float) * (size_t)n_cols);
    }
}

/* ---- the GEMM -------------------------------------------------------------------------------- */

#if MOE_CPU_INT8
/* The GEMM on integer activations: the same walk as gemm's, rows of a_q instead of a. */
static void gemm_int(const moe_cpu_gemm *g, int64_t r0, int64_t r1, int64_t p0, int64_t p1)
{
    const bool wide = g->act_quant == MOE_ACT_INT16;
    const int_tile_fn tile = g->dtype == MOE_DTYPE_Q4_K ? (wide ? tile_i16_q4k : tile_i8_q4k)
                             : g->dtype == MOE_DTYPE_Q6_K ? (wide ? tile_i16_q6k : tile_i8_q6k)
                             : g->dtype == MOE_DTYPE_Q3_K ? (wide ? tile_i16_q3k : tile_i8_q3k)
                             : g->dtype == MOE_DTYPE_Q2_K ? (wide ? tile_i16_q2k : tile_i8_q2k)
                             : g->dtype == MOE_DTYPE_Q5_K ? (wide ? tile_i16_q5k : tile_i8_q5k)
                             : g->dtype == MOE_DTYPE_Q4_0 ? (wide ? tile_i16_q4 : tile_i8_q4)
                                                          : (wide ? tile_i16_q8 : tile_i8_q8);
    const int64_t K = g->k_dim, ng = K / MOE_ACT_GROUP;
    const size_t pair_bytes = moe_cpu_pair_bytes(g->dtype, K), quants = (size_t)K * (wide ? 2 : 1);
    float tmp[MR_INT * PAIR];
    for (int64_t q = p0; q < p1; q++) {
        const unsigned char *b = g->b + (size_t)q * pair_bytes;
        for (int64_t r = r0; r < r1; r += MR_INT) {
            const int n = r1 - r < MR_INT ? (int)(r1 - r) : MR_INT;
            qrow arow[MR_INT];
            for (int i = 0; i < n; i++) {
                const int64_t src = g->row_token ? (int64_t)g->row_token[r + i] : r + i;
                const unsigned char *row = g->a_q + (size_t)src * g->a_q_stride;
                arow[i] = (qrow){row, (const float *)(const void *)(row + quants),
                                 (const int32_t *)(const void *)(row + quants) + ng};
            }
            tile(n, K, arow, b, tmp);
            epilogue(g, tmp, r, n, q);
        }
    }
}
#endif

#if MOE_CPU_BF16
#define BF16_TILE KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_tile)
#define BF16_ROW  KERNELS_CAT(MOE_CPU_KERNELS_SYMBOL, _bf16_row)
void BF16_TILE(int n, moe_dtype dt, int64_t k_dim, const uint32_t *const *a, const unsigned char *b,
               float *out);
void BF16_ROW(const float *a, int64_t k_dim, moe_dtype dt, uint32_t *out);
/* The GEMM on bfloat16-pair activations (Q4_0, MXFP4, Q4_K): the same walk as gemm_int's, kernels_bf16.c's
 * tiles. */
static void gemm_bf16(const moe_cpu_gemm *g, int64_t r0, int64_t r1, int64_t p0, int64_t p1)
{
    const size_t pair_bytes = moe_cpu_pair_bytes(g->dtype, g->k_dim);
    float tmp[MOE_CPU_BF16_MR * PAIR];
    for (int64_t q = p0; q < p1; q++) {
        const unsigned char *b = g->b + (size_t)q * pair_bytes;
        for (int64_t r = r0; r < r1; r += MOE_CPU_BF16_MR) {
            const int n = r1 - r < MOE_CPU_BF16_MR ? (int)(r1 - r) : MOE_CPU_BF16_MR;
            const uint32_t *arow[MOE_CPU_BF16_MR];
            for (int i = 0; i < n; i++) {
                const int64_t src = g->row_token ? (int64_t)g->row_token[r + i] : r + i;
                arow[i] = (const uint32_t *)(const void *)(g->a_q + (size_t)src * g->a_q_stride);
            }
            BF16_TILE(n, g->dtype, g->k_dim, arow, b, tmp);
            epilogue(g, tmp, r, n, q);
        }
    }
}
#endif

/* A format's tiles: the packed one and its rows a call; where the format is not float32, the
 * widening and widened ones (above) and their rows (below 512 bits the block formats' widened
 * tiles take more rows than their widening one: SPLIT_WIDENED). */
typedef struct format_kernels {
    tile_fn packed, widening, widened; /* widening NULL: F32, read as it is */
    int mr, mr_widening, mr_widened;
} format_kernels;

/* prefetch_dense: moe_cpu_gemm's, which packed tiles F32, F16 and BF16 take (with or without software
 * prefetch): every F32 GEMM, the router's included, and F16 / BF16 up to a tile's rows (decode); their
 * widening tiles (prefill) keep it. */
static format_kernels kernels_of(moe_dtype dt, bool prefetch_dense)
{
    const prefill_tiles p = PREFILL_TILES(dt);
    switch (dt) {
    case MOE_DTYPE_F16:
        return (format_kernels){
            prefetch_dense ? tile_f16 : tile_f16_hw, p.widening, p.widened, MR_F16, MR_F32, MR_F32};
    case MOE_DTYPE_BF16:
        return (format_kernels){
            prefetch_dense ? tile_bf16 : tile_bf16_hw, p.widening, p.widened, MR_F16, MR_F32, MR_F32};
    case MOE_DTYPE_Q8_0:
        return (format_kernels){tile_q8, p.widening, p.widened, MR_Q8, MR_WIDENING_BLOCK, MR_WIDENED_BLOCK};
    case MOE_DTYPE_Q4_0:
        return (format_kernels){tile_q4, p.widening, p.widened, MR_Q4, MR_WIDENING_BLOCK, MR_WIDENED_BLOCK};
    case MOE_DTYPE_MXFP4:
        return (format_kernels){tile_mxfp4, p.widening,        p.widened,
                                MR_Q4,      MR_WIDENING_BLOCK, MR_WIDENED_BLOCK};
    case MOE_DTYPE_Q4_K:
        return (format_kernels){tile_q4k, p.widening, p.widened, MR_KQ, MR_KQ, MR_KQ_WIDENED};
    case MOE_DTYPE_Q5_K:
        return (format_kernels){tile_q5k, p.widening, p.widened, MR_KQ, MR_KQ, MR_KQ_WIDENED};
    case MOE_DTYPE_Q6_K:
        return (format_kernels){tile_q6k, p.widening, p.widened, MR_KQ, MR_KQ, MR_KQ_WIDENED};
    case MOE_DTYPE_Q3_K:
        return (format_kernels){tile_q3k, p.widening, p.widened, MR_KQ, MR_KQ, MR_KQ_WIDENED};
    case MOE_DTYPE_Q2_K:
        return (format_kernels){tile_q2k, p.widening, p.widened, MR_KQ, MR_KQ, MR_KQ_WIDENED};
    default:
        return (format_kernels){prefetch_dense ? tile_f32 : tile_f32_hw, NULL, NULL, MR_F32, 0, 0};
    }
}

/* Rows [r0, r1) of pairs [p0, p1), pair-outer: a pair is read from memory once and stays in cache
 * for the rows. sums: the rows' sums per ASUM_K k, nsub a row (Q2_K, Q4_K, Q5_K, Q4_CODES; else NULL). Rows
 * in groups of WIDENED_ROWS; a group with more rows than one packed tile takes widens each pair's chunks once
 * (the widening tiles, above), a smaller one (decode) reads the packed weights. */
static void gemm_rows(const moe_cpu_gemm *g, const format_kernels *fk, int64_t r0, int64_t r1, int64_t p0,
                      int64_t p1, const float *sums, int64_t nsub)
{
    const int64_t K = g->k_dim;
    const size_t pair_bytes = moe_cpu_pair_bytes(g->dtype, K);
    const float *arow[WIDENED_ROWS], *srow[WIDENED_ROWS];
    float acc[WIDENED_ROWS * PAIR], widened[WIDENED_K * PAIR];
    for (int64_t rc = r0; rc < r1; rc += WIDENED_ROWS) {
        const int nrows = r1 - rc < WIDENED_ROWS ? (int)(r1 - rc) : WIDENED_ROWS;
        for (int i = 0; i < nrows; i++) {
            arow[i] = g->a + (g->row_token ? (int64_t)g->row_token[rc + i] : rc + i) * K;
            srow[i] = sums ? sums + (rc - r0 + i) * nsub : NULL;
        }
        const bool use_widened = fk->widening && nrows > fk->mr;
        for (int64_t q = p0; q < p1; q++) {
            const unsigned char *b = g->b + (size_t)q * pair_bytes;
            if (!use_widened) {
                for (int r = 0; r < nrows; r += fk->mr)
                    fk->packed(nrows - r < fk->mr ? nrows - r : fk->mr, K, arow + r, sums ? srow + r : NULL,
                               b, acc + r * PAIR, NULL);
            } else {
                memset(acc, 0, sizeof(float) * PAIR * (size_t)nrows);
                for (int64_t kc = 0; kc < K; kc += WIDENED_K) {
                    const int64_t kn = K - kc < WIDENED_K ? K - kc : WIDENED_K;
                    const unsigned char *bc = b + moe_cpu_pair_bytes(g->dtype, kc);
                    for (int r = 0, mr = fk->mr_widening; r < nrows; r += mr, mr = fk->mr_widened) {
                        const int n = nrows - r < mr ? nrows - r : mr;
                        const float *ak[MR_MAX], *sk[MR_MAX];
                        for (int i = 0; i < n; i++) {
                            ak[i] = arow[r + i] + kc;
                            sk[i] = sums ? srow[r + i] + kc / ASUM_K(g->dtype) : NULL;
                        }
                        (r ? fk->widened : fk->widening)(n, kn, ak, sums ? sk : NULL, bc, acc + r * PAIR,
                                                         widened);
                    }
                }
            }
            epilogue(g, acc, rc, nrows, q);
        }
    }
}

/* Q4_K's, Q5_K's, Q2_K's and Q4_0's (Q4_CODES) rows in chunks whose sums (per ASUM_K k) fit KQ_SUMS floats
 * on the stack (64 KiB: a chunk of 36 rows of 14336, 256 of 2048; Q2_K half as many), computed once per
 * chunk rather than once per pair (a chunk smaller than the task's rows streams the pairs once per chunk).
 * Rows longer than KQ_SUMS sub-blocks (K > 524288; Q2_K 262144) leave the sums to the kernel, a super-block
 * (Q4_0: a block) at a time. The simde512 test level keeps 12 (CMake), so the tests run chunks of one row
 * (K = 256) and the kernel's own sums (K = 512; Q2_K at every K). */
#ifndef MOE_CPU_KQ_SUMS
#define MOE_CPU_KQ_SUMS 16384
#endif
#define KQ_SUMS MOE_CPU_KQ_SUMS
static void gemm(const moe_cpu_gemm *g, int64_t r0, int64_t r1, int64_t p0, int64_t p1)
{
#if MOE_CPU_BF16
    if (g->a_q && g->act_quant == MOE_ACT_BF16X2) {
        gemm_bf16(g, r0, r1, p0, p1);
        return;
    }
#endif
#if MOE_CPU_INT8
    if (g->a_q) {
        gemm_int(g, r0, r1, p0, p1);
        return;
    }
#endif
    const format_kernels fk = kernels_of(g->dtype, g->prefetch_dense);
    if (g->dtype != MOE_DTYPE_Q4_K && g->dtype != MOE_DTYPE_Q5_K && g->dtype != MOE_DTYPE_Q2_K &&
        !(g->dtype == MOE_DTYPE_Q4_0 && Q4_CODES)) {
        gemm_rows(g, &fk, r0, r1, p0, p1, NULL, 0);
        return;
    }
    const int64_t K = g->k_dim, nsub = K / ASUM_K(g->dtype);
    if (nsub > KQ_SUMS) {
        gemm_rows(g, &fk, r0, r1, p0, p1, NULL, 0);
        return;
    }
    const int64_t chunk = KQ_SUMS / nsub;
    float sums[KQ_SUMS];
    for (int64_t rc = r0; rc < r1; rc += chunk) {
        const int64_t re = r1 - rc < chunk ? r1 : rc + chunk;
        for (int64_t r = rc; r < re; r++)
            block_sums(g->a + (g->row_token ? (int64_t)g->row_token[r] : r) * K, K, g->dtype,
                       sums + (r - rc) * nsub);
        gemm_rows(g, &fk, rc, re, p0, p1, sums, nsub);
    }
}

static void axpy(int64_t n, float a, const float *x, float *y)
{
    const moe_vec av = vec_set1(a);
    int64_t i = 0;
    for (; i + MOE_VLEN <= n; i += MOE_VLEN)
        vec_store(y + i, vec_fmadd(av, vec_load(x + i), vec_load(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

#if defined(SIMDE_X86_F16C_NATIVE)
#define FEATURES_F16C MOE_FEATURE_F16C
#else
#define FEATURES_F16C 0u
#endif
#if MOE_CPU_BF16 == 2
#define FEATURES_BF16 MOE_FEATURE_AVX512_BF16
#else
#define FEATURES_BF16 0u
#endif
#if defined(SIMDE_X86_AVX512VNNI_NATIVE)
#define FEATURES_USED (FEATURES_F16C | FEATURES_BF16 | MOE_FEATURE_AVX512_VNNI | MOE_FEATURE_INT_DOT)
#elif MOE_CPU_INT8 && defined(__AVXVNNI__)
#define FEATURES_USED (FEATURES_F16C | MOE_FEATURE_AVX_VNNI | MOE_FEATURE_INT_DOT)
#elif MOE_CPU_INT8 && (MOE_CPU_LEVEL == 1 || defined(__ARM_FEATURE_DOTPROD))
#define FEATURES_USED (FEATURES_F16C | MOE_FEATURE_INT_DOT)
#else
#define FEATURES_USED FEATURES_F16C
#endif

const moe_cpu_kernels MOE_CPU_KERNELS_SYMBOL = {
    .name = MOE_CPU_KERNELS_NAME,
    .features_used = FEATURES_USED,
    .int_dot = MOE_CPU_INT8,
    .bf16_dot = MOE_CPU_BF16,
#if MOE_CPU_BF16
    .bf16x2_row = BF16_ROW,
#endif
    .nibble_words = MOE_CPU_NIBBLE_WORDS,
    .vector_bits = 32 * MOE_VLEN,
    .gemm = gemm,
    .axpy = axpy,
};
#endif /* !MOE_CPU_KERNELS_PREFILL */
