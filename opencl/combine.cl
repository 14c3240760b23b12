// combine.cl — one work-group per token: y[t] = Σ_j w[t][j]·o[slot_row[t][j]] in slot order
// (a dropped slot adds 0, or w·x with PASSTHROUGH), then + g·shared[t], g = sigmoid(x·w_sg)
// when the shared expert is gated. A gather with a fixed order: no float atomics, so the
// result is the same on every run. The gate's dot product is a fixed-shape tree reduction.
#include "common.cl"
#include "combine.h"

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void combine(MOE_CL_ARGS(MOE_COMBINE_BUFFERS, MOE_COMBINE_FIELDS))
{
    __local float partial[WG];
    MOE_CL_OFFSETS(MOE_COMBINE_BUFFERS)
    const int t = (int)get_group_id(0); // < n_tokens: the launch has one work-group per token
    const int lid = (int)get_local_id(0);
    const size_t xt = (size_t)t * D;
    float g = 1.0f;
#if HAS_SHARED && HAS_SHARED_GATE
    {
        float s = 0.0f;
        for (int i = lid; i < D; i += WG) s = FMA(x[xt + i], shared_gate[i], s);
        partial[lid] = s;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int half_ = WG / 2; half_ > 0; half_ /= 2) {
            if (lid < half_) partial[lid] += partial[lid + half_];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        g = sigmoid(partial[0]);
    }
#endif
    for (int i = lid; i < D; i += WG) {
        float acc = 0.0f;
        for (int j = 0; j < TOP_K; j++) {
            const int row = slot_row[t * TOP_K + j];
            const float wv = weights[t * TOP_K + j];
            if (row >= 0) acc = FMA(wv, expert_out[(size_t)row * D + i], acc);
            else if (PASSTHROUGH) acc = FMA(wv, x[xt + i], acc);
        }
        if (HAS_SHARED) acc = FMA(g, shared_out[xt + i], acc);
        y[xt + i] = acc;
    }
}
