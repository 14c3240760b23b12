// plan_scatter.cl — plan, pass 3 of 3: each block walks its (token, slot) entries in order
// and places them at offsets[e] + (its block's first position for e) + (earlier entries of
// the block for e): rows sorted by expert, stable in token order. Rows at or past the
// capacity are dropped (slot_row = -1).
#include "common.cl"
#include "plan_scatter.h"

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void plan_scatter(MOE_CL_ARGS(MOE_PLAN_SCATTER_BUFFERS, MOE_PLAN_SCATTER_FIELDS))
{
    MOE_CL_OFFSETS(MOE_PLAN_SCATTER_BUFFERS)
    const int b = (int)get_global_id(0);
    const int n_blocks = (n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    if (b >= n_blocks) return;
    __global int *pos_of = block_pos + (size_t)b * E;
    const int t1 = min(n_tokens, (b + 1) * PLAN_BLOCK);
    for (int i = b * PLAN_BLOCK * TOP_K; i < t1 * TOP_K; i++) {
        const int e = ids[i];
        const int pos = pos_of[e];
        pos_of[e] = pos + 1;
#if CAPACITY > 0
        if (pos >= CAPACITY) {
            slot_row[i] = -1;
            continue;
        }
#endif
        const int row = offsets[e] + pos;
        slot_row[i] = row;
        row_token[row] = i / TOP_K;
    }
}
