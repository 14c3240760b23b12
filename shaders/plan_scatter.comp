#version 450
// plan_scatter.comp — plan, pass 3 of 3: each block walks its (token, slot) entries in order
// and places them at offsets[e] + (its block's first position for e) + (earlier entries of
// the block for e): rows sorted by expert, stable in token order. Rows at or past the
// capacity are dropped (slot_row = -1).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#include "plan_scatter.h"

void main()
{
    const int b = int(gl_GlobalInvocationID.x);
    const int n_blocks = (n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    if (b >= n_blocks) return;
    const uint base = uint(b) * uint(E);
    const int t1 = min(n_tokens, (b + 1) * PLAN_BLOCK);
    for (int i = b * PLAN_BLOCK * TOP_K; i < t1 * TOP_K; i++) {
        const int e = ids[i];
        const int pos = block_pos[base + e];
        block_pos[base + e] = pos + 1;
        if (CAPACITY > 0 && pos >= CAPACITY) {
            slot_row[i] = -1;
        } else {
            const int row = offsets[e] + pos;
            slot_row[i] = row;
            row_token[row] = i / TOP_K;
        }
    }
}
