#version 450
// plan_scatter.comp — plan, pass 3 of 3: each block walks its (token, slot) entries in order
// and places them at offsets[e] + (its block's first position for e) + (earlier entries of
// the block for e): rows sorted by expert, stable in token order. Rows at or past the
// capacity are dropped (slot_row = -1).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 1) const int E = 1;
layout(constant_id = 2) const int TOP_K = 1;
layout(constant_id = 3) const int PLAN_BLOCK = 32;
layout(constant_id = 4) const int CAPACITY = 0;

layout(std430, binding = 0) readonly buffer Ids { int ids[]; };
layout(std430, binding = 1) buffer BlockPos { int block_pos[]; }; // [n_blocks][E]
layout(std430, binding = 2) readonly buffer Offsets { int offsets[]; };
layout(std430, binding = 3) writeonly buffer SlotRow { int slot_row[]; };
layout(std430, binding = 4) writeonly buffer RowToken { int row_token[]; };

layout(push_constant) uniform Push { int n_tokens; } pc;

void main()
{
    const int b = int(gl_GlobalInvocationID.x);
    const int n_blocks = (pc.n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    if (b >= n_blocks) return;
    const uint base = uint(b) * uint(E);
    const int t1 = min(pc.n_tokens, (b + 1) * PLAN_BLOCK);
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
