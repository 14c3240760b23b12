// combine.cl — one work-group per token: y[t] = Σ_j w[t][j]·o[slot_row[t][j]] in slot order
// (a dropped slot adds 0, or w·x with PASSTHROUGH), then + g·shared[t], g = sigmoid(x·w_sg)
// when the shared expert is gated. A gather with a fixed order: no float atomics, so the
// result is the same on every run. The gate's dot product is a fixed-shape tree reduction.
#ifndef WG
#define WG 256
#endif
#ifndef D
#define D 1
#endif
#ifndef TOP_K
#define TOP_K 1
#endif
#ifndef PASSTHROUGH
#define PASSTHROUGH 0
#endif
#ifndef HAS_SHARED
#define HAS_SHARED 0
#endif
#ifndef HAS_SHARED_GATE
#define HAS_SHARED_GATE 0
#endif

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void combine(__global const float *x, ulong x_off, __global const float *eo, ulong eo_off,
             __global const int *slot_row, ulong sr_off, __global const float *weights, ulong w_off,
             __global const float *so, ulong so_off, __global const float *wsg, ulong g_off,
             __global float *y, ulong y_off)
{
    __local float partial[WG];
    x += x_off;
    eo += eo_off;
    slot_row += sr_off;
    weights += w_off;
    so += so_off;
    wsg += g_off;
    y += y_off;
    const int t = (int)get_group_id(0);
    const int lid = (int)get_local_id(0);
    const size_t xt = (size_t)t * D;
    float g = 1.0f;
#if HAS_SHARED && HAS_SHARED_GATE
    {
        float s = 0.0f;
        for (int i = lid; i < D; i += WG) s = FMA(x[xt + i], wsg[i], s);
        partial[lid] = s;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int half_ = WG / 2; half_ > 0; half_ /= 2) {
            if (lid < half_) partial[lid] += partial[lid + half_];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        g = 1.0f / (1.0f + exp(-partial[0]));
    }
#endif
    for (int i = lid; i < D; i += WG) {
        float acc = 0.0f;
        for (int j = 0; j < TOP_K; j++) {
            const int row = slot_row[t * TOP_K + j];
            const float wv = weights[t * TOP_K + j];
            if (row >= 0) acc = FMA(wv, eo[(size_t)row * D + i], acc);
            else if (PASSTHROUGH) acc = FMA(wv, x[xt + i], acc);
        }
        if (HAS_SHARED) acc = FMA(g, so[xt + i], acc);
        y[xt + i] = acc;
    }
}
