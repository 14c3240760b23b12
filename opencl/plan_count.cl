// plan_count.cl — plan, pass 1 of 3: per-expert counts of each block of PLAN_BLOCK tokens.
// One work-item per block walks its (token, slot) entries in order, so the counts (and the
// later positions) are exact integers, independent of scheduling; no atomics.
#include "common.cl"
#include "plan_count.h"

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void plan_count(MOE_CL_ARGS(MOE_PLAN_COUNT_BUFFERS, MOE_PLAN_COUNT_FIELDS))
{
    MOE_CL_OFFSETS(MOE_PLAN_COUNT_BUFFERS)
    const int b = (int)get_global_id(0);
    const int n_blocks = (n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    if (b >= n_blocks) return;
    __global int *c = block_counts + (size_t)b * E;
    for (int e = 0; e < E; e++) c[e] = 0;
    const int t1 = min(n_tokens, (b + 1) * PLAN_BLOCK);
    for (int i = b * PLAN_BLOCK * TOP_K; i < t1 * TOP_K; i++) c[ids[i]] += 1;
}
