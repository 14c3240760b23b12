// plan_scatter.cl — plan, pass 3 of 3: each block walks its (token, slot) entries in order
// and places them at offsets[e] + (its block's first position for e) + (earlier entries of
// the block for e): rows sorted by expert, stable in token order. Rows at or past the
// capacity are dropped (slot_row = -1).
#ifndef WG
#define WG 64 // work-group size, from the device's limits
#endif
#ifndef E
#define E 1
#endif
#ifndef TOP_K
#define TOP_K 1
#endif
#ifndef PLAN_BLOCK
#define PLAN_BLOCK 32
#endif
#ifndef CAPACITY
#define CAPACITY 0
#endif

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void plan_scatter(__global const int *ids, ulong i_off, __global int *block_pos, ulong bp_off,
                           __global const int *offsets, ulong o_off, __global int *slot_row, ulong s_off,
                           __global int *row_token, ulong rt_off, int n_tokens)
{
    ids += i_off;
    block_pos += bp_off;
    offsets += o_off;
    slot_row += s_off;
    row_token += rt_off;
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
