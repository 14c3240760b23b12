#version 450
// select.comp — routing after the router GEMM: scores (softmax or sigmoid), selection keys
// (+ selection-only bias), group-limited routing, top-k, weights (renormalised, scaled).
// One invocation per token; the same rules as the scalar reference: ties go to the lower
// index, a NaN ranks below every number, excluded groups' experts are -inf.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#include "select.h"

#define INF uintBitsToFloat(0x7f800000u)

void main()
{
    const int t = int(gl_GlobalInvocationID.x);
    if (t >= n_tokens) return;
    const uint l0 = uint(t) * uint(E);
    const uint k0 = uint(t) * uint(E + N_GROUP), g0 = k0 + uint(E);
    const int per = E / N_GROUP;

    float m = -INF, sum = 0.0;
    if (!SIGMOID) {
        for (int e = 0; e < E; e++) m = max(m, logits[l0 + e]);
        for (int e = 0; e < E; e++) sum += exp(logits[l0 + e] - m);
    }
    for (int e = 0; e < E; e++) {
        const float l = logits[l0 + e];
        const float s = SIGMOID ? sigmoid(l) : exp(l - m) / sum;
        ws[k0 + e] = s + (HAS_BIAS ? bias[e] : 0.0);
    }

    if (N_GROUP > 1) {
        for (int g = 0; g < N_GROUP; g++) {
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
        // Kept groups are marked by turning their score into +inf.
        for (int kept = 0; kept < TOPK_GROUP; kept++) {
            int best = -1;
            for (int g = 0; g < N_GROUP; g++) {
                if (isinf(ws[g0 + g]) && ws[g0 + g] > 0.0) continue;
                if (best < 0 || ranks_above(ws[g0 + g], ws[g0 + best])) best = g;
            }
            ws[g0 + best] = INF;
        }
        for (int e = 0; e < E; e++)
            if (!(ws[g0 + e / per] > 0.0 && isinf(ws[g0 + e / per]))) ws[k0 + e] = -INF;
    }

    const uint o = uint(t) * uint(TOP_K);
    float wsum = 0.0;
    for (int j = 0; j < TOP_K; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            bool taken = false;
            for (int i = 0; i < j; i++) taken = taken || ids[o + i] == e;
            if (taken) continue;
            if (best < 0 || ranks_above(ws[k0 + e], ws[k0 + best])) best = e;
        }
        ids[o + j] = best;
        const float l = logits[l0 + best];
        const float w = SIGMOID ? sigmoid(l) : exp(l - m) / sum;
        weights[o + j] = w;
        wsum += w;
    }
    for (int j = 0; j < TOP_K; j++) {
        float w = weights[o + j];
        if (RENORM) w /= wsum + 1e-20;
        weights[o + j] = w * SCALE;
    }
}
