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

layout(constant_id = 1) const int D = 1;
layout(constant_id = 2) const int TOP_K = 1;
layout(constant_id = 3) const bool PASSTHROUGH = false;
layout(constant_id = 4) const bool HAS_SHARED = false;
layout(constant_id = 5) const bool HAS_SHARED_GATE = false;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer ExpertOut { float eo[]; };
layout(std430, binding = 2) readonly buffer SlotRow { int slot_row[]; };
layout(std430, binding = 3) readonly buffer Weights { float weights[]; };
layout(std430, binding = 4) readonly buffer SharedOut { float so[]; };
layout(std430, binding = 5) readonly buffer SharedGate { float wsg[]; };
layout(std430, binding = 6) writeonly buffer Y { float y[]; };

shared float partial[gl_WorkGroupSize.x];

void main()
{
    const int t = int(gl_WorkGroupID.x);
    const int lid = int(gl_LocalInvocationID.x), threads = int(gl_WorkGroupSize.x);
    const uint xt = uint(t) * uint(D);
    float g = 1.0;
    if (HAS_SHARED && HAS_SHARED_GATE) {
        float s = 0.0;
        for (int i = lid; i < D; i += threads) s = fma(x[xt + i], wsg[i], s);
#if USE_SUBGROUP
        s = subgroupAdd(s);
        if (subgroupElect()) partial[gl_SubgroupID] = s;
        barrier();
        float total = 0.0;
        for (uint i = 0; i < gl_NumSubgroups; i++) total += partial[i];
        g = 1.0 / (1.0 + exp(-total));
#else
        partial[lid] = s;
        barrier();
        for (int half_ = threads / 2; half_ > 0; half_ /= 2) {
            if (lid < half_) partial[lid] += partial[lid + half_];
            barrier();
        }
        g = 1.0 / (1.0 + exp(-partial[0]));
#endif
    }
    for (int i = lid; i < D; i += threads) {
        float acc = 0.0;
        for (int j = 0; j < TOP_K; j++) {
            const int row = slot_row[t * TOP_K + j];
            const float w = weights[t * TOP_K + j];
            if (row >= 0) acc = fma(w, eo[uint(row) * uint(D) + uint(i)], acc);
            else if (PASSTHROUGH) acc = fma(w, x[xt + i], acc);
        }
        if (HAS_SHARED) acc = fma(g, so[xt + i], acc);
        y[xt + i] = acc;
    }
}
