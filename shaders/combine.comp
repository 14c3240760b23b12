#version 450
// combine.comp — one workgroup per token: y[t] = Σ_j w[t][j]·o[slot_row[t][j]] in slot order
// (a dropped slot adds 0, or w·x with PASSTHROUGH), then + g·shared[t], g = sigmoid(x·w_sg)
// when the shared expert is gated. A gather with a fixed order: no float atomics, so the
// result is the same on every run. The gate's dot product is a fixed-shape tree reduction.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
// Built twice (src/vulkan/vulkan.cmake): plain, and with USE_SUBGROUP for Vulkan 1.1 devices
// whose compute stage has subgroup arithmetic; then the gate's dot product is summed with
// subgroupAdd and one shared slot per subgroup instead of a barrier per tree level.
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

#include "combine.h"

shared float partial[WG];

void main()
{
    const int t = int(gl_WorkGroupID.x); // < n_tokens: the dispatch has one workgroup per token
    const int lid = int(gl_LocalInvocationID.x), threads = WG;
    const uint xt = uint(t) * uint(D);
    float g = 1.0;
    if (HAS_SHARED && HAS_SHARED_GATE) {
        float s = 0.0;
        for (int i = lid; i < D; i += threads) s = fma(x[xt + i], shared_gate[i], s);
#if USE_SUBGROUP
        s = subgroupAdd(s);
        if (subgroupElect()) partial[gl_SubgroupID] = s;
        barrier();
        float total = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; i++) total += partial[i];
        g = sigmoid(total);
#else
        partial[lid] = s;
        barrier();
        for (int half_ = threads / 2; half_ > 0; half_ /= 2) {
            if (lid < half_) partial[lid] += partial[lid + half_];
            barrier();
        }
        g = sigmoid(partial[0]);
#endif
    }
    for (int i = lid; i < D; i += threads) {
        float acc = 0.0;
        for (int j = 0; j < TOP_K; j++) {
            const int row = slot_row[t * TOP_K + j];
            const float w = weights[t * TOP_K + j];
            if (row >= 0) acc = fma(w, expert_out[uint(row) * uint(D) + uint(i)], acc);
            else if (PASSTHROUGH) acc = fma(w, x[xt + i], acc);
        }
        if (HAS_SHARED) acc = fma(g, shared_out[xt + i], acc);
        y[xt + i] = acc;
    }
}
