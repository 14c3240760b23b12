// plan_count.cl — plan, pass 1 of 3: per-expert counts of each block of PLAN_BLOCK tokens.
// One work-item per block walks its (token, slot) entries in order, so the counts (and the
// later positions) are exact integers, independent of scheduling; no atomics.
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

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void plan_count(__global const int *ids, ulong i_off, __global int *block_counts, ulong c_off, int n_tokens)
{
    ids += i_off;
    block_counts += c_off;
    const int b = (int)get_global_id(0);
    const int n_blocks = (n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    if (b >= n_blocks) return;
    __global int *c = block_counts + (size_t)b * E;
    for (int e = 0; e < E; e++) c[e] = 0;
    const int t1 = min(n_tokens, (b + 1) * PLAN_BLOCK);
    for (int i = b * PLAN_BLOCK * TOP_K; i < t1 * TOP_K; i++) c[ids[i]] += 1;
}
