// gemm.cl — the grouped GEMM of every matrix product of a forward: router logits, expert
// up/gate with the gated activation fused into the epilogue, expert down, shared expert.
//
// out[r][n] = epilogue(Σ_k A[a_row(r)][k] · W[e][n][k]), W in Hugging Face layout [E][N][K]
// (gated: [E][2][N][K], gate then up). A work-group computes a BM×BN tile of rows ×
// columns, staging BK-wide slices of A and W through local memory; each work-item keeps a
// TM×TN block of accumulators in registers. Row tile get_group_id(1) belongs to one expert
// (tile_expert), so one launch covers every expert; unused tiles leave at once (the whole
// work-group, before any barrier). Tile sizes, shapes and flags are -D options, checked by
// the host against the device's local memory and work-group size.
#ifndef BM
#define BM 64
#endif
#ifndef BN
#define BN 64
#endif
#ifndef BK
#define BK 16
#endif
#ifndef TM
#define TM 4
#endif
#ifndef TN
#define TN 4
#endif
#ifndef K_DIM
#define K_DIM 1
#endif
#ifndef N_OUT
#define N_OUT 1
#endif
#ifndef GATED
#define GATED 0
#endif
#ifndef ACT
#define ACT ACT_NONE
#endif
#ifndef GATHER
#define GATHER 0
#endif
#ifndef HAS_ROWS
#define HAS_ROWS 0
#endif
#ifndef HAS_TILES
#define HAS_TILES 0
#endif
#define THREADS ((BM / TM) * (BN / TN))

__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void gemm(__global const float *a, ulong a_off, __global const int *row_token, ulong rt_off,
          __global const int *tile_expert, ulong te_off, __global const float *w, ulong w_off,
          __global float *o, ulong o_off, int n_rows)
{
    __local float As[BK * BM];
    __local float Bs[BK * BN];
    __local float Us[GATED ? BK * BN : 1];
    a += a_off;
    row_token += rt_off;
    tile_expert += te_off;
    w += w_off;
    o += o_off;

    const int tile = (int)get_group_id(1);
    const int expert = HAS_TILES ? tile_expert[tile] : 0;
    if (expert < 0) return; // uniform for the work-group: an unused tile
    const int lid = (int)get_local_id(0);
    const int tx = lid % (BN / TN), ty = lid / (BN / TN);
    const int row0 = tile * BM, col0 = (int)get_group_id(0) * BN;
    __global const float *wg = w + (size_t)expert * (GATED ? 2 : 1) * (size_t)N_OUT * K_DIM;
    __global const float *wu = wg + (size_t)N_OUT * K_DIM;

    float acc[TM * TN];
#if GATED
    float accu[TM * TN];
#endif
    for (int i = 0; i < TM * TN; i++) {
        acc[i] = 0.0f;
#if GATED
        accu[i] = 0.0f;
#endif
    }

    for (int k0 = 0; k0 < K_DIM; k0 += BK) {
        // Consecutive work-items read consecutive k: coalesced along the reduction.
        for (int i = lid; i < BM * BK; i += THREADS) {
            const int r = i / BK, kk = i % BK, row = row0 + r, k = k0 + kk;
            float v = 0.0f;
            if (row < n_rows && k < K_DIM) {
                const int tok = HAS_ROWS ? row_token[row] : row;
                if (tok >= 0) v = a[(size_t)(GATHER ? tok : row) * K_DIM + k];
            }
            As[kk * BM + r] = v;
        }
        for (int i = lid; i < BN * BK; i += THREADS) {
            const int n = i / BK, kk = i % BK, col = col0 + n, k = k0 + kk;
            const bool inside = col < N_OUT && k < K_DIM;
            const size_t at = (size_t)col * K_DIM + k;
            Bs[kk * BN + n] = inside ? wg[at] : 0.0f;
#if GATED
            Us[kk * BN + n] = inside ? wu[at] : 0.0f;
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < BK; kk++) {
            float av[TM];
            for (int m = 0; m < TM; m++) av[m] = As[kk * BM + ty * TM + m];
            for (int n = 0; n < TN; n++) {
                const float b = Bs[kk * BN + tx * TN + n];
                for (int m = 0; m < TM; m++) acc[m * TN + n] = FMA(av[m], b, acc[m * TN + n]);
#if GATED
                const float u = Us[kk * BN + tx * TN + n];
                for (int m = 0; m < TM; m++) accu[m * TN + n] = FMA(av[m], u, accu[m * TN + n]);
#endif
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (int m = 0; m < TM; m++) {
        const int row = row0 + ty * TM + m;
        if (row >= n_rows) continue;
#if HAS_ROWS
        if (row_token[row] < 0) continue; // padding: never written
#endif
        for (int n = 0; n < TN; n++) {
            const int col = col0 + tx * TN + n;
            if (col >= N_OUT) continue;
            float v = acc[m * TN + n];
#if GATED
            v = activate(ACT, v) * accu[m * TN + n];
#else
            if (ACT != ACT_NONE) v = activate(ACT, v);
#endif
            o[(size_t)row * N_OUT + col] = v;
        }
    }
}
