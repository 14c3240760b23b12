/*
 * cl_steps.c — a forward on OpenCL: every step is one or a few kernel launches enqueued on
 * the context's in-order queue (the order is the dependency: no barrier objects, no waits),
 * and `finish` waits once. Nothing is read back until the result: every launch size comes
 * from the host-known padded row bound. Profiling events of the launches give
 * moe_forward_stats.device_ms (first kernel's start to last kernel's end; the wall time of
 * the forward where the queue has no profiling).
 */
#include "cl_internal.h"

#include <stdio.h>
#include <string.h>

#define PLAN_BLOCK 32

typedef struct karg {
    bool is_int;
    moe_addr addr; /* a buffer: passed as (cl_mem, element offset) */
    int64_t value; /* an `int` argument: range-checked by launch, never truncated */
} karg;

#define BUF(a) ((karg){false, (a), 0})
#define INT(v) ((karg){true, {0}, (int64_t)(v)})

static size_t ceil_div(int64_t a, int64_t b) { return (size_t)((a + b - 1) / b); }

/* A -D option's value: every one is an `int` in the kernels. A literal past INT_MAX would be
 * a `long` in OpenCL C and break the program's build (min(int, long) has no overload), so a
 * value that does not fit fails the forward, naming it, before any build is tried. The core
 * validates shapes and token counts so that this does not happen (validate.c). */
static long long opt_i32(ocl_backend *b, int64_t v, const char *what)
{
    if (v >= INT32_MIN && v <= INT32_MAX) return (long long)v;
    if (b->record_status == MOE_OK)
        b->record_status =
            moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                     "opencl: %s = %lld does not fit the kernels' 32-bit integers", what, (long long)v);
    return 0;
}

/* One launch of kernel `id` built with `options`: groups[0] × groups[1] work-groups of
 * local[0] × 1 work-items. A failure is remembered and returned by finish, so the steps
 * need no cleanup of their own. */
static moe_status launch(ocl_backend *b, ocl_kernel_id id, const char *options, const karg *args, int n_args,
                         size_t groups_x, size_t groups_y, size_t local)
{
    if (b->record_status != MOE_OK) return b->record_status;
    if (groups_x == 0 || groups_y == 0) return MOE_OK;
    if (groups_x > SIZE_MAX / local)
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                            "opencl: %s needs %zu work-groups of %zu; the global size overflows",
                            ocl_sources[id].kernel, groups_x, local);
    for (int i = 0; i < n_args; i++)
        if (args[i].is_int && (args[i].value < INT32_MIN || args[i].value > INT32_MAX))
            return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                               "opencl: %s argument %d = %lld does not fit its 32-bit int",
                                               ocl_sources[id].kernel, i, (long long)args[i].value);
    cl_kernel k;
    moe_status st = ocl_kernel_get(b, id, options, &k);
    if (st != MOE_OK) return b->record_status = st;
    size_t kernel_wg = 0;
    clGetKernelWorkGroupInfo(k, b->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kernel_wg, &kernel_wg, NULL);
    if (kernel_wg && local > kernel_wg)
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "opencl: %s needs work-groups of %zu; the device allows %zu for it",
                                           ocl_sources[id].kernel, local, kernel_wg);
    cl_uint at = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < n_args && err == CL_SUCCESS; i++) {
        if (args[i].is_int) {
            const cl_int v = (cl_int)args[i].value; /* range-checked above */
            err = clSetKernelArg(k, at++, sizeof v, &v);
            continue;
        }
        const cl_mem mem = args[i].addr.buf ? args[i].addr.buf->mem : b->dummy;
        const cl_ulong offset = args[i].addr.buf ? args[i].addr.offset / 4 : 0;
        err = clSetKernelArg(k, at++, sizeof mem, &mem);
        if (err == CL_SUCCESS) err = clSetKernelArg(k, at++, sizeof offset, &offset);
    }
    if (err != CL_SUCCESS) return b->record_status = ocl_fail(b, err, "clSetKernelArg");
    const size_t global[2] = {groups_x * local, groups_y}, lsize[2] = {local, 1};
    cl_event *ev = NULL;
    if (b->profiling && b->n_events < OCL_MAX_EVENTS) {
        b->event_kernel[b->n_events] = id;
        ev = &b->events[b->n_events];
    }
    err = clEnqueueNDRangeKernel(b->queue, k, 2, NULL, global, lsize, 0, NULL, ev);
    if (err != CL_SUCCESS) return b->record_status = ocl_fail(b, err, "clEnqueueNDRangeKernel");
    if (ev) b->n_events++;
    return MOE_OK;
}

static void release_events(ocl_backend *b)
{
    for (int i = 0; i < b->n_events; i++) clReleaseEvent(b->events[i]);
    b->n_events = 0;
}

moe_status ocl_begin(moe_backend *be)
{
    ocl_backend *b = oclb(be);
    if (b->lost) return moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "opencl: the device was lost");
    release_events(b);
    b->recording = true;
    b->record_status = MOE_OK;
    b->wall_t0 = ocl_now_ms();
    return MOE_OK;
}

static double event_ms(cl_event first, cl_event last)
{
    cl_ulong start = 0, end = 0;
    if (clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL) != CL_SUCCESS ||
        clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) != CL_SUCCESS || end < start)
        return -1.0;
    return (double)(end - start) * 1e-6;
}

moe_status ocl_finish(moe_backend *be)
{
    ocl_backend *b = oclb(be);
    if (!b->recording) return b->lost ? moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "opencl: the device was lost") : MOE_OK;
    b->recording = false;
    cl_int err = clFinish(b->queue);
    if (b->inject_lost) {
        b->inject_lost = 0;
        release_events(b);
        return ocl_fail_lost(b, CL_OUT_OF_RESOURCES, "clFinish (injected by MOE_CL_INJECT=lost)");
    }
    if (err != CL_SUCCESS) {
        release_events(b);
        return ocl_fail_lost(b, err, "clFinish");
    }
    for (int i = 0; i < b->n_events; i++) {
        cl_int status = CL_COMPLETE;
        clGetEventInfo(b->events[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL);
        if (status < 0) {
            char call[96];
            snprintf(call, sizeof call, "kernel %s", ocl_sources[b->event_kernel[i]].kernel);
            release_events(b);
            return ocl_fail_lost(b, status, call);
        }
    }
    if (b->record_status != MOE_OK) {
        release_events(b);
        return b->record_status;
    }
    be->last_device_ms = ocl_now_ms() - b->wall_t0;
    if (b->n_events > 0) {
        const double ms = event_ms(b->events[0], b->events[b->n_events - 1]);
        if (ms >= 0.0) be->last_device_ms = ms;
        /* Per-kernel times, for whoever listens at DEBUG level. */
        for (int i = 0; i < b->n_events; i++)
            moe_log(be->ctx, MOE_LOG_DEBUG, "opencl: %-12s %9.3f ms", ocl_sources[b->event_kernel[i]].kernel,
                    event_ms(b->events[i], b->events[i]));
    }
    release_events(b);
    return MOE_OK;
}

/* ---- the steps ------------------------------------------------------------------------------- */

static moe_status gemm(ocl_backend *b, int64_t n_rows, int64_t k_dim, int64_t n_out, bool gated, int act, bool gather,
                       moe_addr a, moe_addr row_token, moe_addr tile_expert, moe_addr w, moe_addr out)
{
    char options[OCL_OPTIONS_MAX];
    snprintf(
        options, sizeof options,
        "-DBM=%u -DBN=%u -DBK=%u -DTM=%u -DTN=%u -DK_DIM=%lld -DN_OUT=%lld -DGATED=%d -DACT=%d -DGATHER=%d "
        "-DHAS_ROWS=%d -DHAS_TILES=%d",
        b->gemm_bm, b->gemm_bn, b->gemm_bk, b->gemm_tm, b->gemm_tn, opt_i32(b, k_dim, "K_DIM"),
        opt_i32(b, n_out, "N_OUT"), gated, act, gather, row_token.buf != NULL, tile_expert.buf != NULL);
    const karg args[] = {BUF(a), BUF(row_token), BUF(tile_expert), BUF(w), BUF(out), INT(n_rows)};
    const size_t threads = (size_t)(b->gemm_bm / b->gemm_tm) * (b->gemm_bn / b->gemm_tn);
    return launch(b, OCL_K_GEMM, options, args, 6, ceil_div(n_out, b->gemm_bn), ceil_div(n_rows, b->gemm_bm), threads);
}

moe_status ocl_route(moe_backend *be, const moe_route_step *s)
{
    ocl_backend *b = oclb(be);
    const moe_layer_desc *d = s->desc;
    const moe_addr none = {0};
    gemm(b, s->n_tokens, d->d_model, d->n_experts, false, -1, false, s->x, none, none, s->router, s->logits);
    uint32_t scale;
    memcpy(&scale, &d->routed_scaling_factor, sizeof scale);
    char options[OCL_OPTIONS_MAX];
    snprintf(options, sizeof options,
             "-DWG=%u -DE=%lld -DTOP_K=%lld -DN_GROUP=%lld -DTOPK_GROUP=%lld -DSIGMOID=%d -DGROUP_MAX=%d "
             "-DRENORM=%d -DHAS_BIAS=%d -DSCALE=as_float(0x%08xu)",
             b->wg_small, opt_i32(b, d->n_experts, "E"), opt_i32(b, d->top_k, "TOP_K"),
             opt_i32(b, d->n_group, "N_GROUP"), opt_i32(b, d->topk_group, "TOPK_GROUP"),
             d->score_func == MOE_SCORE_SIGMOID, d->group_score == MOE_GROUP_SCORE_MAX, d->renormalize != 0,
             d->has_selection_bias != 0, (unsigned)scale);
    const karg args[] = {BUF(s->logits), BUF(s->router_bias), BUF(s->workspace), BUF(s->topk_ids),
                         BUF(s->topk_weights), INT(s->n_tokens)};
    return launch(b, OCL_K_SELECT, options, args, 6, ceil_div(s->n_tokens, b->wg_small), 1, b->wg_small);
}

moe_status ocl_plan(moe_backend *be, const moe_plan_step *s)
{
    ocl_backend *b = oclb(be);
    const moe_layer_desc *d = s->desc;
    /* The core passes this forward's capacity (moe_effective_capacity): 0 or below T·k. */
    const long long E = opt_i32(b, d->n_experts, "E"), K = opt_i32(b, d->top_k, "TOP_K");
    const long long cap = opt_i32(b, d->expert_capacity, "CAPACITY");
    const size_t blocks = ceil_div(s->n_tokens, PLAN_BLOCK);
    char options[OCL_OPTIONS_MAX];

    snprintf(options, sizeof options, "-DWG=%u -DE=%lld -DTOP_K=%lld -DPLAN_BLOCK=%d", b->wg_small, E, K, PLAN_BLOCK);
    const karg count[] = {BUF(s->topk_ids), BUF(s->workspace), INT(s->n_tokens)};
    launch(b, OCL_K_PLAN_COUNT, options, count, 3, ceil_div((int64_t)blocks, b->wg_small), 1, b->wg_small);

    snprintf(options, sizeof options, "-DWG=%u -DE=%lld -DPLAN_BLOCK=%d -DROW_TILE=%lld -DCAPACITY=%lld",
             b->wg_big, E, PLAN_BLOCK, opt_i32(b, be->row_tile, "ROW_TILE"), cap);
    const karg scan[] = {BUF(s->workspace), BUF(s->expert_counts), BUF(s->expert_offsets), BUF(s->tile_expert),
                         BUF(s->row_token), INT(s->n_tokens), INT(s->n_rows)};
    launch(b, OCL_K_PLAN_SCAN, options, scan, 7, 1, 1, b->wg_big);

    snprintf(options, sizeof options, "-DWG=%u -DE=%lld -DTOP_K=%lld -DPLAN_BLOCK=%d -DCAPACITY=%lld", b->wg_small, E, K,
             PLAN_BLOCK, cap);
    const karg scatter[] = {BUF(s->topk_ids), BUF(s->workspace), BUF(s->expert_offsets), BUF(s->slot_row),
                            BUF(s->row_token), INT(s->n_tokens)};
    return launch(b, OCL_K_PLAN_SCATTER, options, scatter, 6, ceil_div((int64_t)blocks, b->wg_small), 1, b->wg_small);
}

moe_status ocl_ffn(moe_backend *be, const moe_ffn_step *s)
{
    return gemm(oclb(be), s->n_rows, s->k_dim, s->n_out, s->gated, s->apply_activation ? (int)s->activation : -1,
                s->gather, s->a, s->row_token, s->tile_expert, s->weights, s->out);
}

moe_status ocl_combine(moe_backend *be, const moe_combine_step *s)
{
    ocl_backend *b = oclb(be);
    const moe_layer_desc *d = s->desc;
    char options[OCL_OPTIONS_MAX];
    snprintf(options, sizeof options,
             "-DWG=%u -DD=%lld -DTOP_K=%lld -DPASSTHROUGH=%d -DHAS_SHARED=%d -DHAS_SHARED_GATE=%d", b->wg_big,
             opt_i32(b, d->d_model, "D"), opt_i32(b, d->top_k, "TOP_K"),
             d->drop_policy == MOE_DROP_PASSTHROUGH, s->shared_out.buf != NULL, s->shared_gate.buf != NULL);
    const karg args[] = {BUF(s->x), BUF(s->expert_out), BUF(s->slot_row), BUF(s->topk_weights),
                         BUF(s->shared_out), BUF(s->shared_gate), BUF(s->y)};
    return launch(b, OCL_K_COMBINE, options, args, 7, (size_t)s->n_tokens, 1, b->wg_big);
}

moe_status ocl_stats(moe_backend *be, const moe_stats_step *s)
{
    ocl_backend *b = oclb(be);
    const moe_layer_desc *d = s->desc;
    char options[OCL_OPTIONS_MAX];
    snprintf(options, sizeof options, "-DWG=%u -DE=%lld -DTOP_K=%lld -DSIGMOID=%d", b->wg_big,
             opt_i32(b, d->n_experts, "E"), opt_i32(b, d->top_k, "TOP_K"),
             d->score_func == MOE_SCORE_SIGMOID);
    const karg args[] = {BUF(s->logits), BUF(s->expert_counts), BUF(s->workspace), BUF(s->losses), INT(s->n_tokens)};
    return launch(b, OCL_K_STATS, options, args, 5, 1, 1, b->wg_big);
}
