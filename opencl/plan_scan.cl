// plan_scan.cl — plan, pass 2 of 3, one work-group: each expert's blocks scanned in token
// order (block_counts become each block's first position), the totals, capacity, the padded
// row offsets (every expert's kept rows rounded up to ROW_TILE), the tile → expert map, and
// every row marked as padding until pass 3 fills the real ones.
#include "common.cl"
#include "plan_scan.h"

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void plan_scan(MOE_CL_ARGS(MOE_PLAN_SCAN_BUFFERS, MOE_PLAN_SCAN_FIELDS))
{
    MOE_CL_OFFSETS(MOE_PLAN_SCAN_BUFFERS)
    const int lid = (int)get_local_id(0), threads = (int)get_local_size(0);
    const int n_blocks = (n_tokens + PLAN_BLOCK - 1) / PLAN_BLOCK;
    for (int e = lid; e < E; e += threads) {
        int running = 0;
        for (int b = 0; b < n_blocks; b++) {
            const size_t at = (size_t)b * E + e;
            const int c = block_counts[at];
            block_counts[at] = running;
            running += c;
        }
        counts[e] = running;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    if (lid == 0) {
        int off = 0, dropped = 0;
        for (int e = 0; e < E; e++) {
            const int c = counts[e];
            const int kept = CAPACITY > 0 ? min(c, CAPACITY) : c;
            dropped += c - kept;
            offsets[e] = off;
            off += (kept + ROW_TILE - 1) / ROW_TILE * ROW_TILE;
        }
        offsets[E] = off;
        counts[E] = dropped;
    }
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int e = lid; e < E; e += threads)
        for (int t = offsets[e] / ROW_TILE; t < offsets[e + 1] / ROW_TILE; t++) tile_expert[t] = e;
    for (int t = offsets[E] / ROW_TILE + lid; t < n_rows / ROW_TILE; t += threads) tile_expert[t] = -1;
    for (int r = lid; r < n_rows; r += threads) row_token[r] = -1;
}
