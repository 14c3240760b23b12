#version 450
// stats.comp — one workgroup: the load-balancing aux loss E·Σ_e f_e·P_e and the router
// z-loss mean(logsumexp²), from the logits and the counts. Per-token terms first, then
// per-expert sums over tokens in token order, then single-invocation compensated sums:
// a fixed order throughout, so the losses are the same on every run.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#include "stats.h"

float score(float l, float lse) { return SIGMOID ? sigmoid(l) : exp(l - lse); }

void main()
{
    const int lid = int(gl_LocalInvocationID.x), threads = int(gl_WorkGroupSize.x);
    const int T = n_tokens;
    for (int t = lid; t < T; t += threads) {
        const uint l0 = uint(t) * uint(E);
        float m = logits[l0];
        for (int e = 1; e < E; e++) m = max(m, logits[l0 + e]);
        float s = 0.0;
        for (int e = 0; e < E; e++) s += exp(logits[l0 + e] - m);
        const float lse = m + log(s);
        float norm = 0.0;
        for (int e = 0; e < E; e++) norm += score(logits[l0 + e], lse);
        ws[2 * t] = lse;
        ws[2 * t + 1] = norm;
    }
    memoryBarrierBuffer();
    barrier();
    for (int e = lid; e < E; e += threads) {
        float p = 0.0, c = 0.0; // Kahan
        for (int t = 0; t < T; t++) {
            const float v = score(logits[uint(t) * uint(E) + uint(e)], ws[2 * t]) / ws[2 * t + 1] - c;
            const float n = p + v;
            c = (n - p) - v;
            p = n;
        }
        ws[2 * T + e] = p / float(T);
    }
    memoryBarrierBuffer();
    barrier();
    if (lid == 0) {
        float z = 0.0, cz = 0.0, aux = 0.0, ca = 0.0;
        for (int t = 0; t < T; t++) {
            const float v = ws[2 * t] * ws[2 * t] - cz;
            const float n = z + v;
            cz = (n - z) - v;
            z = n;
        }
        for (int e = 0; e < E; e++) {
            const float v = float(counts[e]) / float(T * TOP_K) * ws[2 * T + e] - ca;
            const float n = aux + v;
            ca = (n - aux) - v;
            aux = n;
        }
        losses[0] = aux * float(E);
        losses[1] = z / float(T);
    }
}
