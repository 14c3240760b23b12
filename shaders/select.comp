#version 450
// select.comp — routing after the router GEMM: scores (softmax or sigmoid), selection keys
// (+ selection-only bias), group-limited routing, top-k, weights (renormalised, scaled).
// The same rules as the scalar reference: ties go to the lower index, a NaN ranks below every
// number, excluded groups' experts are -inf.
//
// One workgroup per token; invocation i takes experts i, i + WG, ... The softmax's max and sum
// and each top-k round's best expert are reductions over the workgroup in a fixed order (a
// tree over invocations), so a result is the same on every run. A round: every invocation
// offers its best expert not yet taken (its own keys, scanned in index order), the tree keeps
// the better of each pair (a tie: the lower index), invocation 0 records the winner. k rounds
// of E / WG reads and log2(WG) barrier steps each, where one invocation per token used to scan
// all E experts k times (0.33 of the 0.41 ms of a qwen3-30b-a3b decode forward on an H200).
// Shared memory: two words per invocation and one bit per expert (the taken set).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#include "select.h"

#define INF uintBitsToFloat(0x7f800000u)

shared float s_val[WG];
shared int s_idx[WG];
shared uint s_taken[(E + 31) / 32];

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

// The reductions: each invocation gives a value; the tree combines invocation lid with lid + h
// for h = 1, 2, 4, ... (any WG); every invocation gets the result. Called in uniform control.
float reduce_max(int lid, float v)
{
    s_val[lid] = v;
    barrier();
    for (int h = 1; h < WG; h *= 2) {
        if ((lid & (2 * h - 1)) == 0 && lid + h < WG && s_val[lid + h] > s_val[lid])
            s_val[lid] = s_val[lid + h];
        barrier();
    }
    const float r = s_val[0];
    barrier();
    return r;
}

float reduce_sum(int lid, float v)
{
    s_val[lid] = v;
    barrier();
    for (int h = 1; h < WG; h *= 2) {
        if ((lid & (2 * h - 1)) == 0 && lid + h < WG) s_val[lid] += s_val[lid + h];
        barrier();
    }
    const float r = s_val[0];
    barrier();
    return r;
}

int reduce_best(int lid, float v, int i)
{
    s_val[lid] = v;
    s_idx[lid] = i;
    barrier();
    for (int h = 1; h < WG; h *= 2) {
        if ((lid & (2 * h - 1)) == 0 && lid + h < WG &&
            beats(s_val[lid + h], s_idx[lid + h], s_val[lid], s_idx[lid])) {
            s_val[lid] = s_val[lid + h];
            s_idx[lid] = s_idx[lid + h];
        }
        barrier();
    }
    const int r = s_idx[0];
    barrier();
    return r;
}

void main()
{
    const int t = int(gl_WorkGroupID.x); // < n_tokens: the dispatch has one workgroup per token
    const int lid = int(gl_LocalInvocationID.x);
    const uint l0 = uint(t) * uint(E);
    const uint k0 = uint(t) * uint(E + N_GROUP), g0 = k0 + uint(E);
    const int per = E / N_GROUP;

    for (int w = lid; w < (E + 31) / 32; w += WG) s_taken[w] = 0u;
    float m = -INF, sum = 0.0;
    if (!SIGMOID) {
        float part = -INF;
        // A comparison, not max(): GLSL leaves max() with a NaN undefined, and a NaN logit is
        // skipped here as by the reference (and OpenCL's fmax).
        for (int e = lid; e < E; e += WG)
            if (logits[l0 + e] > part) part = logits[l0 + e];
        m = reduce_max(lid, part);
        part = 0.0;
        for (int e = lid; e < E; e += WG) part += exp(logits[l0 + e] - m);
        sum = reduce_sum(lid, part);
    }
    for (int e = lid; e < E; e += WG) {
        const float l = logits[l0 + e];
        const float s = SIGMOID ? sigmoid(l) : exp(l - m) / sum;
        ws[k0 + e] = s + (HAS_BIAS ? bias[e] : 0.0);
    }

    if (N_GROUP > 1) {
        // The groups' scores read every key: the keys first, from every invocation.
        memoryBarrierBuffer();
        barrier();
        for (int g = lid; g < N_GROUP; g += WG) {
            const uint b = k0 + uint(g * per);
            int b1 = 0;
            for (int i = 1; i < per; i++)
                if (ranks_above(ws[b + i], ws[b + b1])) b1 = i;
            float s = ws[b + b1];
            if (!GROUP_MAX && per > 1) {
                int b2 = b1 == 0 ? 1 : 0;
                for (int i = 0; i < per; i++)
                    if (i != b1 && ranks_above(ws[b + i], ws[b + b2])) b2 = i;
                s += ws[b + b2];
            }
            ws[g0 + g] = s;
        }
        memoryBarrierBuffer();
        barrier();
        // Group g is kept when fewer than TOPK_GROUP groups beat it (a score that ranks above its
        // own, or an equal one at a lower index): exactly the groups the reference takes one by
        // one, best first. No marks in the scores, which may be anything (+inf, NaN).
        for (int e = lid; e < E; e += WG) {
            const int g = e / per;
            int above = 0;
            for (int h = 0; h < N_GROUP; h++)
                if (beats(ws[g0 + h], h, ws[g0 + g], g)) above++;
            if (above >= TOPK_GROUP) ws[k0 + e] = -INF;
        }
    }
    barrier(); // s_taken cleared (from here each invocation reads only the keys it wrote)

    const uint o = uint(t) * uint(TOP_K);
    float wsum = 0.0;
    for (int j = 0; j < TOP_K; j++) {
        float bv = 0.0;
        int bi = -1;
        for (int e = lid; e < E; e += WG) {
            if ((s_taken[e >> 5] & (1u << uint(e & 31))) != 0u) continue;
            const float v = ws[k0 + e];
            if (bi < 0 || ranks_above(v, bv)) {
                bv = v;
                bi = e;
            }
        }
        const int best = reduce_best(lid, bv, bi);
        if (lid == 0) {
            s_taken[best >> 5] |= 1u << uint(best & 31);
            ids[o + j] = best;
            const float l = logits[l0 + best];
            const float w = SIGMOID ? sigmoid(l) : exp(l - m) / sum;
            weights[o + j] = w;
            wsum += w;
        }
        barrier(); // the winner is taken before the next round
    }
    if (lid == 0)
        for (int j = 0; j < TOP_K; j++) {
            float w = weights[o + j];
            if (RENORM) w /= wsum + 1e-20;
            weights[o + j] = w * SCALE;
        }
}
