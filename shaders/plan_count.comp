#version 450
// plan_count.comp — plan, pass 1 of 3: per-expert counts of each block of PLAN_BLOCK tokens.
// One invocation per block walks its (token, slot) entries in order, so the counts (and the
// later positions) are exact integers, independent of scheduling.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#include "plan_count.h"

void main()
{
    const int b = int(gl_GlobalInvocationID.x);
    const int n_blocks = (n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    if (b >= n_blocks) return;
    const uint base = uint(b) * uint(E);
    for (int e = 0; e < E; e++) block_counts[base + e] = 0;
    const int t1 = min(n_tokens, (b + 1) * PLAN_BLOCK);
    for (int i = b * PLAN_BLOCK * TOP_K; i < t1 * TOP_K; i++) block_counts[base + ids[i]] += 1;
}
