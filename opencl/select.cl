// select.cl — routing after the router GEMM: scores (softmax or sigmoid), selection keys
// (+ selection-only bias), group-limited routing, top-k, weights (renormalised, scaled).
// The same rules as the scalar reference: ties go to the lower index, a NaN ranks below every
// number, excluded groups' experts are -inf. One work-group per token, as shaders/select.comp
// (which says why): work-item i takes experts i, i + WG, ...; the softmax's max and sum and
// each top-k round's best expert are fixed-order tree reductions over the work-group.
#include "common.cl"
#include "select.h"

// (v, i) beats (w, j): i is an expert and j none, or v ranks above w, or neither ranks above
// the other and i is the lower index.
bool beats(float v, int i, float w, int j)
{
    if (i < 0) return false;
    if (j < 0) return true;
    if (ranks_above(v, w)) return true;
    if (ranks_above(w, v)) return false;
    return i < j;
}

// The tree: work-item lid takes in lid + h for h = 1, 2, 4, ... (any WG); every work-item gets
// the result. Called by the whole work-group.
float reduce_max(__local float *s_val, int lid, float v)
{
    s_val[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = 1; h < WG; h *= 2) {
        if ((lid & (2 * h - 1)) == 0 && lid + h < WG) s_val[lid] = fmax(s_val[lid], s_val[lid + h]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = s_val[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

float reduce_sum(__local float *s_val, int lid, float v)
{
    s_val[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = 1; h < WG; h *= 2) {
        if ((lid & (2 * h - 1)) == 0 && lid + h < WG) s_val[lid] += s_val[lid + h];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = s_val[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

int reduce_best(__local float *s_val, __local int *s_idx, int lid, float v, int i)
{
    s_val[lid] = v;
    s_idx[lid] = i;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int h = 1; h < WG; h *= 2) {
        if ((lid & (2 * h - 1)) == 0 && lid + h < WG &&
            beats(s_val[lid + h], s_idx[lid + h], s_val[lid], s_idx[lid])) {
            s_val[lid] = s_val[lid + h];
            s_idx[lid] = s_idx[lid + h];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int r = s_idx[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void select_topk(MOE_CL_ARGS(MOE_SELECT_BUFFERS, MOE_SELECT_FIELDS))
{
    MOE_CL_OFFSETS(MOE_SELECT_BUFFERS)
    __local float s_val[WG];
    __local int s_idx[WG];
    __local uint s_taken[(E + 31) / 32];
    const int t = (int)get_group_id(0); // < n_tokens: one work-group per token
    const int lid = (int)get_local_id(0);
    __global const float *l = logits + (size_t)t * E;
    __global float *key = ws + (size_t)t * (E + N_GROUP);
    __global float *gkey = key + E;
    const int per = E / N_GROUP;

    for (int w = lid; w < (E + 31) / 32; w += WG) s_taken[w] = 0u;
    float m = -INFINITY, sum = 0.0f;
    if (!SIGMOID) {
        float part = -INFINITY;
        for (int e = lid; e < E; e += WG) part = fmax(part, l[e]);
        m = reduce_max(s_val, lid, part);
        part = 0.0f;
        for (int e = lid; e < E; e += WG) part += exp(l[e] - m);
        sum = reduce_sum(s_val, lid, part);
    }
    for (int e = lid; e < E; e += WG) {
        const float s = SIGMOID ? sigmoid(l[e]) : exp(l[e] - m) / sum;
        key[e] = s + (HAS_BIAS ? bias[e] : 0.0f);
    }

    if (N_GROUP > 1) {
        // The groups' scores read every key: the keys first, from every work-item.
        barrier(CLK_GLOBAL_MEM_FENCE);
        for (int g = lid; g < N_GROUP; g += WG) {
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
        barrier(CLK_GLOBAL_MEM_FENCE);
        // Group g is kept when fewer than TOPK_GROUP groups beat it (a score that ranks above its
        // own, or an equal one at a lower index): exactly the groups the reference takes one by
        // one, best first. No marks in the scores, which may be anything (+inf, NaN).
        for (int e = lid; e < E; e += WG) {
            const int g = e / per;
            int above = 0;
            for (int h = 0; h < N_GROUP; h++)
                if (beats(gkey[h], h, gkey[g], g)) above++;
            if (above >= TOPK_GROUP) key[e] = -INFINITY;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE); // s_taken cleared (from here each work-item reads only its keys)

    __global int *id = ids + (size_t)t * TOP_K;
    __global float *wt = weights + (size_t)t * TOP_K;
    float wsum = 0.0f;
    for (int j = 0; j < TOP_K; j++) {
        float bv = 0.0f;
        int bi = -1;
        for (int e = lid; e < E; e += WG) {
            if (s_taken[e >> 5] & (1u << (e & 31))) continue;
            const float v = key[e];
            if (bi < 0 || ranks_above(v, bv)) {
                bv = v;
                bi = e;
            }
        }
        const int best = reduce_best(s_val, s_idx, lid, bv, bi);
        if (lid == 0) {
            s_taken[best >> 5] |= 1u << (best & 31);
            id[j] = best;
            const float lb = l[best];
            const float wv = SIGMOID ? sigmoid(lb) : exp(lb - m) / sum;
            wt[j] = wv;
            wsum += wv;
        }
        barrier(CLK_LOCAL_MEM_FENCE); // the winner is taken before the next round
    }
    if (lid == 0)
        for (int j = 0; j < TOP_K; j++) {
            float wv = wt[j];
            if (RENORM) wv /= wsum + 1e-20f;
            wt[j] = wv * SCALE;
        }
}
