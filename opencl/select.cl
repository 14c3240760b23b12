// select.cl — routing after the router GEMM: scores (softmax or sigmoid), selection keys
// (+ selection-only bias), group-limited routing, top-k, weights (renormalised, scaled).
// One work-item per token; the same rules as the scalar reference: ties go to the lower
// index, a NaN ranks below every number, excluded groups' experts are -inf.
#include "common.cl"
#include "select.h"

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void select_topk(MOE_CL_ARGS(MOE_SELECT_BUFFERS, MOE_SELECT_FIELDS))
{
    MOE_CL_OFFSETS(MOE_SELECT_BUFFERS)
    const int t = (int)get_global_id(0);
    if (t >= n_tokens) return;
    __global const float *l = logits + (size_t)t * E;
    __global float *key = ws + (size_t)t * (E + N_GROUP);
    __global float *gkey = key + E;
    const int per = E / N_GROUP;

    float m = -INFINITY, sum = 0.0f;
    if (!SIGMOID) {
        for (int e = 0; e < E; e++) m = fmax(m, l[e]);
        for (int e = 0; e < E; e++) sum += exp(l[e] - m);
    }
    for (int e = 0; e < E; e++) {
        const float s = SIGMOID ? sigmoid(l[e]) : exp(l[e] - m) / sum;
        key[e] = s + (HAS_BIAS ? bias[e] : 0.0f);
    }

    if (N_GROUP > 1) {
        for (int g = 0; g < N_GROUP; g++) {
            __global const float *kg = key + g * per;
            int b1 = 0;
            for (int i = 1; i < per; i++)
                if (ranks_above(kg[i], kg[b1])) b1 = i;
            float s = kg[b1];
#if !GROUP_MAX
            if (per > 1) {
                int b2 = b1 == 0 ? 1 : 0;
                for (int i = 0; i < per; i++)
                    if (i != b1 && ranks_above(kg[i], kg[b2])) b2 = i;
                s += kg[b2];
            }
#endif
            gkey[g] = s;
        }
        // Kept groups are marked by turning their score into +inf.
        for (int kept = 0; kept < TOPK_GROUP; kept++) {
            int best = -1;
            for (int g = 0; g < N_GROUP; g++) {
                if (isinf(gkey[g]) && gkey[g] > 0.0f) continue;
                if (best < 0 || ranks_above(gkey[g], gkey[best])) best = g;
            }
            gkey[best] = INFINITY;
        }
        for (int e = 0; e < E; e++)
            if (!(gkey[e / per] > 0.0f && isinf(gkey[e / per]))) key[e] = -INFINITY;
    }

    __global int *id = ids + (size_t)t * TOP_K;
    __global float *wt = weights + (size_t)t * TOP_K;
    float wsum = 0.0f;
    for (int j = 0; j < TOP_K; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) taken = taken || id[i] == e;
            if (taken) continue;
            if (best < 0 || ranks_above(key[e], key[best])) best = e;
        }
        id[j] = best;
        const float lb = l[best];
        const float wv = SIGMOID ? sigmoid(lb) : exp(lb - m) / sum;
        wt[j] = wv;
        wsum += wv;
    }
    for (int j = 0; j < TOP_K; j++) {
        float wv = wt[j];
        if (RENORM) wv /= wsum + 1e-20f;
        wt[j] = wv * SCALE;
    }
}
