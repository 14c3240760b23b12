// stats.cl — one work-group: the load-balancing aux loss E·Σ_e f_e·P_e and the router z-loss
// mean(logsumexp²), from the logits and the counts. Per-token terms first, then per-expert
// sums over tokens in token order, then single-work-item compensated sums: a fixed order
// throughout, so the losses are the same on every run.
#include "common.cl"
#include "stats.h"

float score_of(float l, float lse) { return SIGMOID ? sigmoid(l) : exp(l - lse); }

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void stats(MOE_CL_ARGS(MOE_STATS_BUFFERS, MOE_STATS_FIELDS))
{
    MOE_CL_OFFSETS(MOE_STATS_BUFFERS)
    const int lid = (int)get_local_id(0), threads = (int)get_local_size(0);
    const int T = n_tokens;
    for (int t = lid; t < T; t += threads) {
        __global const float *l = logits + (size_t)t * E;
        float m = l[0];
        for (int e = 1; e < E; e++) m = fmax(m, l[e]);
        float s = 0.0f;
        for (int e = 0; e < E; e++) s += exp(l[e] - m);
        const float lse = m + log(s);
        float norm = 0.0f;
        for (int e = 0; e < E; e++) norm += score_of(l[e], lse);
        ws[2 * t] = lse;
        ws[2 * t + 1] = norm;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int e = lid; e < E; e += threads) {
        float p = 0.0f, c = 0.0f; // Kahan
        for (int t = 0; t < T; t++) {
            const float v = score_of(logits[(size_t)t * E + e], ws[2 * t]) / ws[2 * t + 1] - c;
            const float n = p + v;
            c = (n - p) - v;
            p = n;
        }
        ws[2 * T + e] = p / (float)T;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    if (lid == 0) {
        float z = 0.0f, cz = 0.0f, aux = 0.0f, ca = 0.0f;
        for (int t = 0; t < T; t++) {
            const float v = ws[2 * t] * ws[2 * t] - cz;
            const float n = z + v;
            cz = (n - z) - v;
            z = n;
        }
        for (int e = 0; e < E; e++) {
            const float v = (float)counts[e] / (float)(T * TOP_K) * ws[2 * T + e] - ca;
            const float n = aux + v;
            ca = (n - aux) - v;
            aux = n;
        }
        losses[0] = aux * (float)E;
        losses[1] = z / (float)T;
    }
}
