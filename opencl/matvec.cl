// matvec.cl — the decode kernel: the products of an ffn step one (token, slot) row at a time
// (kernels/matvec.h), for small T, where the grouped GEMM would compute whole row tiles around
// one valid row. A work-group computes COLS columns of one slot's row; its work-items split the
// reduction along K, one 32-bit word of each weight row per work-item and step
// (opencl/weights.cl: consecutive work-items, consecutive words), so every weight byte is read
// once per slot, in its format, and the activation values once per work-group. The same
// arithmetic as shaders/matvec.comp.
//
// USE_SUBGROUP (a program variant the host builds with -cl-std=CL2.0 where the device has
// cl_khr_subgroups): the partial sums are added with sub_group_reduce_add, then one local slot
// per subgroup; otherwise a tree in local memory. No work-item returns early: every one reaches
// the barriers (PoCL 3.1 miscompiles an early return ahead of them, see kernels/combine.h), and
// a dropped slot or another launch's expert only skips the reads and the write.
#include "common.cl"
#include "matvec.h"
#include "weights.cl"

#if USE_SUBGROUP
#pragma OPENCL EXTENSION cl_khr_subgroups : enable
#endif

#define NACC (GATED ? 2 : 1) // gate and up sums of a gated pair

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void matvec(MOE_CL_ARGS(MOE_MATVEC_BUFFERS, MOE_MATVEC_FIELDS))
{
    __local float red[NACC * COLS * WG]; // [sum][WG]; the subgroup form uses [sum][subgroup]
    MOE_CL_OFFSETS(MOE_MATVEC_BUFFERS)
    const int slot = (int)get_group_id(1), lid = (int)get_local_id(0);
    const int col0 = (int)get_group_id(0) * COLS;
#if HAS_SLOTS
    const int row = slot_row[slot], expert = slot_expert[slot];
    const int arow = GATHER ? slot / TOP_K : row;
#else
    const int row = slot, expert = 0, arow = slot;
#endif
    // Uniform for the work-group: a slot dropped by capacity, or another launch's expert.
    const bool active = row >= 0 && expert >= expert_begin && expert < expert_end;

    float acc[NACC * COLS];
    for (int i = 0; i < NACC * COLS; i++) acc[i] = 0.0f;
    if (active) {
        // Byte offsets from w (size_t: a layer's weights may exceed 4 GiB in one cl_mem).
        __global const uchar *wb = (__global const uchar *)w;
        const size_t row_bytes = MOE_WROW_BYTES(WTYPE, (size_t)K_DIM);
        const size_t base =
            (size_t)w_start + (size_t)(expert - expert_begin) * NACC * (size_t)N_OUT * row_bytes;
        size_t wrow[COLS];
        // A column past N_OUT reads the last row; its sum is never written.
        for (int c = 0; c < COLS; c++) wrow[c] = base + (size_t)min(col0 + c, N_OUT - 1) * row_bytes;
        __global const float *ar = a + (size_t)arow * K_DIM;
        for (int u = lid; u < W_UNITS; u += WG) {
            float av[8]; // the activation values of the unit's k (none read past the row)
            for (int i = 0; i < 8; i++) {
                const int k = w_unit_k(u, i);
                av[i] = i < W_UNIT && k >= 0 && k < K_DIM ? ar[k] : 0.0f;
            }
            for (int c = 0; c < COLS; c++) {
                acc[c] += w_unit_dot(wb, wrow[c], u, av);
#if GATED
                acc[COLS + c] += w_unit_dot(wb, wrow[c] + (size_t)N_OUT * row_bytes, u, av);
#endif
            }
        }
    }

#if USE_SUBGROUP
    for (int i = 0; i < NACC * COLS; i++) {
        const float s = sub_group_reduce_add(acc[i]);
        if (get_sub_group_local_id() == 0) red[i * WG + (int)get_sub_group_id()] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int n_parts = (int)get_num_sub_groups();
#else
    for (int i = 0; i < NACC * COLS; i++) red[i * WG + lid] = acc[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int half_ = WG / 2; half_ > 0; half_ /= 2) {
        if (lid < half_)
            for (int i = 0; i < NACC * COLS; i++) red[i * WG + lid] += red[i * WG + lid + half_];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int n_parts = 1;
#endif
    // The epilogue, column c by work-item c mod WG (COLS may exceed WG).
    for (int c = lid; active && c < COLS && col0 + c < N_OUT; c += WG) {
        float v = 0.0f, up = 0.0f;
        for (int p = 0; p < n_parts; p++) {
            v += red[c * WG + p];
#if GATED
            up += red[(COLS + c) * WG + p];
#endif
        }
#if HAS_BIAS
        const size_t b = (size_t)expert * NACC * N_OUT + col0 + c; // its bias
        v += bias[b];
#if GATED
        up += bias[b + N_OUT];
#endif
#endif
#if GATED
        v = gated_act(ACT, v, up, SWIGLU_ALPHA, SWIGLU_LIMIT);
#else
        if (ACT != ACT_NONE) v = activate(ACT, v);
#endif
        result[(size_t)row * N_OUT + col0 + c] = v;
    }
}
