#version 450
// gemm.comp — the grouped GEMM of every matrix product in a forward: router logits, expert
// up/gate (with the gated activation fused into the epilogue), expert down, shared expert.
//
// result[r][n] = epilogue(Σ_k A[a_row(r)][k] · W[e][n][k]), W in Hugging Face layout [E][N][K]
// (gated: [E][2][N][K], gate then up), each row in the bytes of its format (WTYPE; read and
// converted to float as the tiles are loaded, shaders/weights.glsl: the dequantisation is paid
// once per element per row tile). The workgroup computes a BM×BN tile of rows × columns,
// staging BK-wide slices of A and W through shared memory; each invocation keeps a TM×TN
// block of accumulators in registers. Row tile `gl_WorkGroupID.y` belongs to one expert
// (tile_expert), so one dispatch covers every expert; unused tiles exit at once. Parameters,
// buffers and push constants: kernels/gemm.h.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "gemm.h"
#include "weights.glsl"

// USE_SHARED: stage A and W through shared memory (GPUs). Without it each invocation reads its
// TM rows and TN columns straight from memory: on CPU-type devices (lavapipe, SwiftShader)
// "shared" memory is ordinary memory, caches already give the reuse, and every barrier() is a
// context switch of the invocations, so the barrier-free form is many times faster there.
//
// One dispatch covers the experts [expert_begin, expert_end): w is bound from expert_begin's
// matrix on (w_start bytes into the binding, which starts at an aligned offset), so a layer
// whose weights exceed the device's maxStorageBufferRange runs as a few dispatches over groups
// of experts (src/vulkan/vk_steps.c).

shared float As[USE_SHARED ? BK * BM : 1];
shared float Bs[USE_SHARED ? BK * BN : 1];
shared float Us[USE_SHARED && GATED ? BK * BN : 1];

void main()
{
    const int tile = int(gl_WorkGroupID.y);
    const int expert = HAS_TILES ? tile_expert[tile] : 0;
    // Uniform for the workgroup: an unused tile, or another group's expert.
    if (expert < expert_begin || expert >= expert_end) return;
    const int lid = int(gl_LocalInvocationID.x);
    const int threads = (BM / TM) * (BN / TN); // = WG
    const int tx = lid % (BN / TN), ty = lid / (BN / TN);
    const int row0 = tile * BM, col0 = int(gl_WorkGroupID.x) * BN;
    // Byte offsets in the binding (kernels/gemm.h: all below its size, so 32 bits hold them).
    const uint row_bytes = uint(MOE_WROW_BYTES(WTYPE, K_DIM));
    const uint w_base =
        uint(w_start) + uint(expert - expert_begin) * uint(GATED ? 2 : 1) * uint(N_OUT) * row_bytes;
    const uint u_base = w_base + uint(N_OUT) * row_bytes;

    float acc[TM * TN];
    float accu[GATED ? TM * TN : 1];
    for (int i = 0; i < TM * TN; i++) acc[i] = 0.0;
    if (GATED)
        for (int i = 0; i < TM * TN; i++) accu[i] = 0.0;

    if (!USE_SHARED) {
        // Rows and columns this invocation owns; out-of-range ones read row/column 0 and are
        // discarded in the epilogue.
        uint arow[TM], wcol[TN];
        for (int m = 0; m < TM; m++) {
            const int row = row0 + ty * TM + m;
            int src = row < n_rows ? (HAS_ROWS ? row_token[row] : row) : -1;
            if (!GATHER && src >= 0) src = row;
            arow[m] = uint(max(src, 0)) * uint(K_DIM);
        }
        for (int n = 0; n < TN; n++) wcol[n] = uint(min(col0 + tx * TN + n, N_OUT - 1)) * row_bytes;
        for (int k = 0; k < K_DIM; k++) {
            float av[TM];
            for (int m = 0; m < TM; m++) av[m] = a[arow[m] + uint(k)];
            for (int n = 0; n < TN; n++) {
                const float b = w_value(w_base + wcol[n], k);
                for (int m = 0; m < TM; m++) acc[m * TN + n] = fma(av[m], b, acc[m * TN + n]);
                if (GATED) {
                    const float u = w_value(u_base + wcol[n], k);
                    for (int m = 0; m < TM; m++) accu[m * TN + n] = fma(av[m], u, accu[m * TN + n]);
                }
            }
        }
    }
    for (int k0 = 0; USE_SHARED && k0 < K_DIM; k0 += BK) {
        // Consecutive invocations read consecutive k: coalesced along the reduction.
        for (int i = lid; i < BM * BK; i += threads) {
            const int r = i / BK, kk = i % BK, row = row0 + r, k = k0 + kk;
            float v = 0.0;
            if (row < n_rows && k < K_DIM) {
                const int tok = HAS_ROWS ? row_token[row] : row;
                if (tok >= 0) v = a[uint(GATHER ? tok : row) * uint(K_DIM) + uint(k)];
            }
            As[kk * BM + r] = v;
        }
        for (int i = lid; i < BN * BK; i += threads) {
            const int n = i / BK, kk = i % BK, col = col0 + n, k = k0 + kk;
            // Outside the matrix nothing is read (a binding may end right after it).
            float b = 0.0, u = 0.0;
            if (col < N_OUT && k < K_DIM) {
                const uint at = uint(col) * row_bytes;
                b = w_value(w_base + at, k);
                if (GATED) u = w_value(u_base + at, k);
            }
            Bs[kk * BN + n] = b;
            if (GATED) Us[kk * BN + n] = u;
        }
        barrier();
        for (int kk = 0; kk < BK; kk++) {
            float av[TM];
            for (int m = 0; m < TM; m++) av[m] = As[kk * BM + ty * TM + m];
            for (int n = 0; n < TN; n++) {
                const float b = Bs[kk * BN + tx * TN + n];
                for (int m = 0; m < TM; m++) acc[m * TN + n] = fma(av[m], b, acc[m * TN + n]);
                if (GATED) {
                    const float u = Us[kk * BN + tx * TN + n];
                    for (int m = 0; m < TM; m++) accu[m * TN + n] = fma(av[m], u, accu[m * TN + n]);
                }
            }
        }
        barrier();
    }

    for (int m = 0; m < TM; m++) {
        const int row = row0 + ty * TM + m;
        if (row >= n_rows || (HAS_ROWS && row_token[row] < 0)) continue;
        for (int n = 0; n < TN; n++) {
            const int col = col0 + tx * TN + n;
            if (col >= N_OUT) continue;
            float v = acc[m * TN + n];
            const uint b = (uint(expert) * uint(GATED ? 2 : 1)) * uint(N_OUT) + uint(col); // its bias
            if (HAS_BIAS) v += bias[b];
            if (GATED) v = gated_act(ACT, v, accu[m * TN + n] + (HAS_BIAS ? bias[b + uint(N_OUT)] : 0.0), SWIGLU_ALPHA, SWIGLU_LIMIT);
            else if (ACT != ACT_NONE) v = activate(ACT, v);
            result[uint(row) * uint(N_OUT) + uint(col)] = v;
        }
    }
}
