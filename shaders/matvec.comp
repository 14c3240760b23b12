#version 450
// matvec.comp — the decode kernel: the products of an ffn step one (token, slot) row at a time
// (kernels/matvec.h), for small T, where the grouped GEMM would compute whole row tiles around
// one valid row. A workgroup computes COLS columns of one slot's row; its invocations split
// the reduction along K, one 32-bit word of each weight row per invocation and step
// (shaders/weights.glsl: consecutive invocations, consecutive words), so every weight byte is
// read once per slot, in its format, and the activation values once per workgroup.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
// Built twice (src/vulkan/vulkan.cmake): plain, summing the partial sums in a shared-memory
// tree, and with USE_SUBGROUP for devices whose compute stage has subgroup arithmetic:
// subgroupAdd, then one shared slot per subgroup and a single barrier.
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#include "matvec.h"
#include "weights.glsl"

const int NACC = GATED ? 2 : 1;            // gate and up sums of a gated pair

shared float red[NACC * COLS * WG]; // [sum][WG]; the subgroup form uses [sum][subgroup]

void main()
{
    const int slot = int(gl_WorkGroupID.y);
    const int lid = int(gl_LocalInvocationID.x);
    const int col0 = int(gl_WorkGroupID.x) * COLS;
    int row = slot, expert = 0, arow = slot;
    if (HAS_SLOTS) {
        row = slot_row[slot];
        expert = slot_expert[slot];
        arow = GATHER ? slot / TOP_K : row;
    }
    // Uniform for the workgroup: a slot dropped by capacity, or another group's expert.
    if (row < 0 || expert < expert_begin || expert >= expert_end) return;

    // Byte offsets in the binding (kernels/gemm.h: all below its size, so 32 bits hold them).
    const uint row_bytes = uint(MOE_WROW_BYTES(WTYPE, K_DIM));
    const uint base =
        uint(w_start) + uint(expert - expert_begin) * uint(NACC) * uint(N_OUT) * row_bytes;
    uint wrow[COLS];
    // A column past N_OUT reads the last row (inside the binding); its sum is never written.
    for (int c = 0; c < COLS; c++) wrow[c] = base + uint(min(col0 + c, N_OUT - 1)) * row_bytes;
    const uint a0 = uint(arow) * uint(K_DIM);

    float acc[NACC * COLS];
    for (int i = 0; i < NACC * COLS; i++) acc[i] = 0.0;
    for (int u = lid; u < W_UNITS; u += WG) {
        float av[8]; // the activation values of the unit's k (none read past the row)
        for (int i = 0; i < 8; i++) {
            const int k = w_unit_k(u, i);
            av[i] = 0.0;
            if (i < W_UNIT && k >= 0 && k < K_DIM) av[i] = a[a0 + uint(k)];
        }
        for (int c = 0; c < COLS; c++) {
            acc[c] += w_unit_dot(wrow[c], u, av);
            if (GATED) acc[COLS + c] += w_unit_dot(wrow[c] + uint(N_OUT) * row_bytes, u, av);
        }
    }

#if USE_SUBGROUP
    for (int i = 0; i < NACC * COLS; i++) {
        const float s = subgroupAdd(acc[i]);
        if (subgroupElect()) red[i * WG + int(gl_SubgroupID)] = s;
    }
    barrier();
    const int n_parts = int(gl_NumSubgroups);
#else
    for (int i = 0; i < NACC * COLS; i++) red[i * WG + lid] = acc[i];
    barrier();
    for (int half_ = WG / 2; half_ > 0; half_ /= 2) {
        if (lid < half_)
            for (int i = 0; i < NACC * COLS; i++) red[i * WG + lid] += red[i * WG + lid + half_];
        barrier();
    }
    const int n_parts = 1;
#endif
    // The epilogue, column c by invocation c mod WG (COLS may exceed WG).
    for (int c = lid; c < COLS && col0 + c < N_OUT; c += WG) {
        float v = 0.0, up = 0.0;
        for (int p = 0; p < n_parts; p++) {
            v += red[c * WG + p];
            if (GATED) up += red[(COLS + c) * WG + p];
        }
        const uint b = (uint(expert) * uint(NACC)) * uint(N_OUT) + uint(col0 + c); // its bias
        if (HAS_BIAS) {
            v += bias[b];
            if (GATED) up += bias[b + uint(N_OUT)];
        }
        if (GATED) v = gated_act(ACT, v, up, SWIGLU_ALPHA, SWIGLU_LIMIT);
        else if (ACT != ACT_NONE) v = activate(ACT, v);
        result[uint(row) * uint(N_OUT) + uint(col0 + c)] = v;
    }
}
