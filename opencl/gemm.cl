// gemm.cl — the grouped GEMM of every matrix product of a forward: router logits, expert
// up/gate with the gated activation fused into the epilogue, expert down, shared expert.
//
// result[r][n] = epilogue(Σ_k A[a_row(r)][k] · W[e][n][k]), W in Hugging Face layout [E][N][K]
// (gated: [E][2][N][K], gate then up), each row in the bytes of its format (WTYPE; read and
// converted to float as the tiles are loaded, opencl/weights.cl). A work-group computes a
// BM×BN tile of rows × columns, staging BK-wide slices of A and W through local memory; each
// work-item keeps a TM×TN block of accumulators in registers. Row tile get_group_id(1) belongs
// to one expert (tile_expert), so one launch covers every expert; unused tiles leave at once
// (the whole work-group, before any barrier). Tile sizes, shapes and flags are -D options (the
// interface is kernels/gemm.h), checked by the host against the device's local memory and
// work-group size.
#include "common.cl"
#include "gemm.h"
#include "weights.cl"

#if WG != (BM / TM) * (BN / TN)
#error "WG must be (BM / TM) * (BN / TN)"
#endif
#if !USE_SHARED
#error "gemm.cl always stages its tiles through local memory (USE_SHARED = 1)"
#endif

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemm(MOE_CL_ARGS(MOE_GEMM_BUFFERS, MOE_GEMM_FIELDS))
{
    __local float As[BK * BM];
    __local float Bs[BK * BN];
    __local float Us[GATED ? BK * BN : 1];
    MOE_CL_OFFSETS(MOE_GEMM_BUFFERS)

    const int tile = (int)get_group_id(1);
    const int expert = HAS_TILES ? tile_expert[tile] : 0;
    // Uniform for the work-group: an unused tile, or an expert outside this launch.
    if (expert < expert_begin || expert >= expert_end) return;
    const int lid = (int)get_local_id(0);
    const int tx = lid % (BN / TN), ty = lid / (BN / TN);
    const int row0 = tile * BM, col0 = (int)get_group_id(0) * BN;
    // Byte offsets from w (size_t: a layer's weights may exceed 4 GiB in one cl_mem).
    __global const uchar *wb = (__global const uchar *)w;
    const size_t row_bytes = MOE_WROW_BYTES(WTYPE, (size_t)K_DIM);
    const size_t wg =
        (size_t)w_start + (size_t)(expert - expert_begin) * (GATED ? 2 : 1) * (size_t)N_OUT * row_bytes;
    const size_t wu = wg + (size_t)N_OUT * row_bytes;

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
        for (int i = lid; i < BM * BK; i += WG) {
            const int r = i / BK, kk = i % BK, row = row0 + r, k = k0 + kk;
            float v = 0.0f;
            if (row < n_rows && k < K_DIM) {
                const int tok = HAS_ROWS ? row_token[row] : row;
                if (tok >= 0) v = a[(size_t)(GATHER ? tok : row) * K_DIM + k];
            }
            As[kk * BM + r] = v;
        }
        for (int i = lid; i < BN * BK; i += WG) {
            const int n = i / BK, kk = i % BK, col = col0 + n, k = k0 + kk;
            // Outside the matrix nothing is read.
            float b = 0.0f, u = 0.0f;
            if (col < N_OUT && k < K_DIM) {
                const size_t at = (size_t)col * row_bytes;
                b = w_value(wb, wg + at, k);
#if GATED
                u = w_value(wb, wu + at, k);
#endif
            }
            Bs[kk * BN + n] = b;
#if GATED
            Us[kk * BN + n] = u;
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
#if HAS_BIAS
            const size_t b = (size_t)expert * (GATED ? 2 : 1) * N_OUT + col; // its bias
            v += bias[b];
#endif
#if GATED
            float u = accu[m * TN + n];
#if HAS_BIAS
            u += bias[b + N_OUT];
#endif
            v = gated_act(ACT, v, u, SWIGLU_ALPHA, SWIGLU_LIMIT);
#else
            if (ACT != ACT_NONE) v = activate(ACT, v);
#endif
            result[(size_t)row * N_OUT + col] = v;
        }
    }
}
