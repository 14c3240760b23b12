/*
 * cl_steps.c — a forward on OpenCL: every step is one or a few kernel launches enqueued on
 * the context's in-order queue (the order is the dependency: no barrier objects, no waits),
 * `submit` flushes them to the device and `wait` completes every forward submitted since the
 * last wait. Nothing is read back until the result: every launch size comes
 * from the host-known padded row bound. Profiling events of the launches give
 * moe_forward_stats.device_ms (first kernel's start to last kernel's end; the wall time of
 * the forward where the queue has no profiling).
 */
#include "cl_internal.h"

#include "../kernel_args.h"

#include <stdio.h>
#include <string.h>

/* The build options of a launch: "-DNAME=value" for every parameter of the kernel's
 * description, in its order (the .cl files have no defaults of their own). Integers and bools
 * as decimal ints, a float as the exact bits of the host's value. False when they do not fit
 * MOE_CL_OPTIONS_MAX. */
static bool render_options(const moe_kargs *args, char *out, size_t size)
{
    size_t at = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < args->n_params; i++) {
        const moe_kparam *p = &args->params[i];
        const int n = p->kind == MOE_KPARAM_FLOAT
                          ? snprintf(out + at, size - at, "%s-D%s=as_float(0x%08xu)", i ? " " : "", p->name,
                                     (unsigned)moe_kparam_bits(p))
                          : snprintf(out + at, size - at, "%s-D%s=%d", i ? " " : "", p->name,
                                     (int)(int32_t)moe_kparam_bits(p));
        if (n < 0 || (size_t)n >= size - at) return false;
        at += (size_t)n;
    }
    return true;
}

/* One launch of kernel `id`, as src/kernel_args.c built it: the arguments of its description
 * (kernels/<kernel>.h) and its work-group counts. The program is built with the parameters as
 * -D options, the buffers are passed as (cl_mem, element offset) pairs in binding order, then
 * the fields as ints; groups_x × groups_y work-groups of WG × 1 work-items. Every integer a
 * kernel receives is an `int`: a value that does not fit fails the forward, naming it, before
 * any build is tried (a -D literal past INT_MAX would be a `long` in OpenCL C and break the
 * program's build: min(int, long) has no overload; an argument would be truncated). The core
 * validates shapes and token counts so that this does not happen (validate.c). A failure is
 * remembered and returned by submit, so the steps need no cleanup of their own. */
static moe_status launch(moe_cl_backend *b, moe_cl_kernel_id id, const moe_klaunch *l)
{
    const moe_kargs *args = &l->args;
    const int64_t groups_x = l->groups_x, groups_y = l->groups_y;
    if (b->record_status != MOE_OK) return b->record_status;
    if (strcmp(args->kernel, moe_cl_sources[id].interface) != 0)
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_INTERNAL, "opencl: arguments of kernel %s given to %s",
                            args->kernel, moe_cl_sources[id].file);
    int64_t value = 0;
    const char *too_large = moe_kargs_overflow(args, &value);
    if (too_large)
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                                           "opencl: %s = %lld does not fit the kernels' 32-bit integers",
                                           too_large, (long long)value);
    if (groups_x <= 0 || groups_y <= 0) return MOE_OK;
    const size_t local = (size_t)args->wg;
    if (local == 0 || (uint64_t)groups_x > SIZE_MAX / local || (uint64_t)groups_y > SIZE_MAX)
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                            "opencl: %s needs %lld x %lld work-groups of %zu; the global size overflows",
                            moe_cl_sources[id].kernel, (long long)groups_x, (long long)groups_y, local);
    char options[MOE_CL_OPTIONS_MAX];
    if (!render_options(args, options, sizeof options))
        return b->record_status = moe_fail(b->base.ctx, MOE_ERROR_INTERNAL,
                                           "opencl: the build options of %s exceed %d bytes",
                                           moe_cl_sources[id].file, MOE_CL_OPTIONS_MAX);
    cl_kernel k;
    moe_status st = moe_cl_kernel_get(b, id, options, &k);
    if (st != MOE_OK) return b->record_status = st;
    size_t kernel_wg = 0;
    clGetKernelWorkGroupInfo(k, b->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kernel_wg, &kernel_wg, NULL);
    if (kernel_wg && local > kernel_wg)
        return b->record_status =
                   moe_fail(b->base.ctx, MOE_ERROR_UNSUPPORTED,
                            "opencl: %s needs work-groups of %zu; the device allows %zu for it",
                            moe_cl_sources[id].kernel, local, kernel_wg);
    cl_uint at = 0;
    cl_int err = CL_SUCCESS;
    for (uint32_t i = 0; i < args->n_buffers && err == CL_SUCCESS; i++) {
        const moe_kbinding *kb = &args->buffers[i];
        const cl_mem mem = kb->buf.at.buf ? kb->buf.at.buf->mem : b->dummy;
        const cl_ulong offset = kb->buf.at.buf ? kb->buf.at.offset / kb->elem_bytes : 0;
        err = clSetKernelArg(k, at++, sizeof mem, &mem);
        if (err == CL_SUCCESS) err = clSetKernelArg(k, at++, sizeof offset, &offset);
    }
    for (uint32_t i = 0; i < args->n_fields && err == CL_SUCCESS; i++) {
        const cl_int v = (cl_int)args->fields[i].value; /* range-checked above */
        err = clSetKernelArg(k, at++, sizeof v, &v);
    }
    if (err != CL_SUCCESS) return b->record_status = moe_cl_fail(b, err, "clSetKernelArg");
    const size_t global[2] = {(size_t)groups_x * local, (size_t)groups_y}, lsize[2] = {local, 1};
    cl_event *ev = NULL;
    if (b->profiling && b->n_events < MOE_CL_MAX_EVENTS) {
        b->event_kernel[b->n_events] = id;
        ev = &b->events[b->n_events];
    }
    err = clEnqueueNDRangeKernel(b->queue, k, 2, NULL, global, lsize, 0, NULL, ev);
    if (err != CL_SUCCESS) return b->record_status = moe_cl_fail(b, err, "clEnqueueNDRangeKernel");
    if (ev) b->n_events++;
    return MOE_OK;
}

static void release_events(moe_cl_backend *b)
{
    for (int i = 0; i < b->n_events; i++) clReleaseEvent(b->events[i]);
    b->n_events = 0;
    b->forward_first_event = 0;
}

moe_status moe_cl_begin(moe_backend *be)
{
    moe_cl_backend *b = moe_clb(be);
    if (b->lost) return moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "opencl: the device was lost");
    b->recording = true;
    b->record_status = MOE_OK;
    b->outs_mark = b->outs.n;             /* the reads before are earlier forwards' */
    b->forward_first_event = b->n_events; /* the events before are earlier forwards' */
    b->wall_t0 = moe_now_ms();
    return MOE_OK;
}

static double event_ms(cl_event first, cl_event last)
{
    cl_ulong start = 0, end = 0;
    if (clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL) !=
            CL_SUCCESS ||
        clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) != CL_SUCCESS ||
        end < start)
        return -1.0;
    return (double)(end - start) * 1e-6;
}

/* The launches are on the queue already (an in-order queue: each forward runs after the one
 * before, seeing its writes); clFlush sends them to the device. A launch that failed to enqueue
 * leaves the ones before it queued: they are completed here, and the failure returned. Earlier
 * forwards of the queue complete with them, their results read now: if that fails, the context
 * is lost, so that their own wait does not report them done. */
moe_status moe_cl_submit(moe_backend *be)
{
    moe_cl_backend *b = moe_clb(be);
    b->recording = false;
    if (b->record_status != MOE_OK) {
        const moe_status st = b->record_status;
        b->outs.n = b->outs_mark; /* nothing is read back from a forward that failed */
        b->pending = true;
        if (moe_cl_wait(be) != MOE_OK) b->lost = true;
        return st;
    }
    b->pending = true;
    const cl_int err = clFlush(b->queue);
    if (err != CL_SUCCESS) {
        b->outs.n = b->outs_mark; /* the core does not count it: nothing of it is read */
        return moe_cl_fail_lost(b, err, "clFlush");
    }
    return MOE_OK;
}

moe_status moe_cl_wait(moe_backend *be)
{
    moe_cl_backend *b = moe_clb(be);
    const size_t n_outs = b->outs.n;
    b->outs.n = 0; /* done below on success, dropped on a failure */
    if (!b->pending) {
        release_events(b);
        return b->lost ? moe_fail(be->ctx, MOE_ERROR_DEVICE_LOST, "opencl: the device was lost") : MOE_OK;
    }
    b->pending = false;
    cl_int err = clFinish(b->queue);
    if (b->inject_lost) {
        b->inject_lost = 0;
        release_events(b);
        return moe_cl_fail_lost(b, CL_OUT_OF_RESOURCES, "clFinish (injected by MOE_CL_INJECT=lost)");
    }
    if (err != CL_SUCCESS) {
        release_events(b);
        return moe_cl_fail_lost(b, err, "clFinish");
    }
    for (int i = 0; i < b->n_events; i++) {
        cl_int status = CL_COMPLETE;
        clGetEventInfo(b->events[i], CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL);
        if (status < 0) {
            char call[96];
            snprintf(call, sizeof call, "kernel %s", moe_cl_sources[b->event_kernel[i]].kernel);
            release_events(b);
            return moe_cl_fail_lost(b, status, call);
        }
    }
    /* The last forward's time: its first launch's start to its last one's end (the events run
     * out on a long chain: then the wall time since its begin). */
    be->last_device_ms = moe_now_ms() - b->wall_t0;
    const int first = b->forward_first_event;
    /* Every forward this wait completed: the first one's first launch to the last one's end. */
    const double all = b->n_events > 0 ? event_ms(b->events[0], b->events[b->n_events - 1]) : -1.0;
    if (first < b->n_events) {
        const double ms = event_ms(b->events[first], b->events[b->n_events - 1]);
        if (ms >= 0.0) be->last_device_ms = ms;
        /* Per-kernel times, for whoever listens at DEBUG level. */
        for (int i = first; i < b->n_events; i++)
            moe_log(be->ctx, MOE_LOG_DEBUG, "opencl: %-12s %9.3f ms",
                    moe_cl_sources[b->event_kernel[i]].kernel, event_ms(b->events[i], b->events[i]));
    }
    be->device_ms_total += all >= 0.0 && all >= be->last_device_ms ? all : be->last_device_ms;
    release_events(b);
    for (size_t i = 0; i < n_outs; i++) {
        const moe_staged_read *r = &b->outs.v[i];
        const moe_status st = moe_cl_buffer_read(be, r->src, r->dst, r->bytes);
        if (st != MOE_OK) return st;
    }
    return MOE_OK;
}

/* ---- the steps ------------------------------------------------------------------------------- */

/* What this device chose, for the launches src/kernel_args.c builds. gemm.cl has only the form
 * that stages its tiles in local memory (it refuses USE_SHARED = 0). */
static moe_kconfig kconfig(const moe_cl_backend *b)
{
    return (moe_kconfig){.wg_small = b->wg_small,
                         .wg_big = b->wg_big,
                         .gemm_bm = b->gemm_bm,
                         .gemm_bn = b->gemm_bn,
                         .gemm_bk = b->gemm_bk,
                         .gemm_tm = b->gemm_tm,
                         .gemm_tn = b->gemm_tn,
                         .gemm_shared = true,
                         .row_tile = b->base.row_tile,
                         .matvec_wg = b->matvec_wg,
                         .matvec_cols = b->matvec_cols,
                         .matvec_max_rows = b->matvec_max_rows};
}

/* An ffn step: the grouped GEMM, or at small T the decode kernel (moe_kuse_matvec); one launch
 * covers every expert (a cl_mem has no binding-range limit, so the experts are never split into
 * groups as on Vulkan). */
moe_status moe_cl_ffn(moe_backend *be, const moe_ffn_step *s)
{
    moe_cl_backend *b = moe_clb(be);
    const moe_kconfig c = kconfig(b);
    if (moe_kuse_matvec(&c, s)) {
        const moe_klaunch l = moe_klaunch_matvec(&c, s, 0, s->n_experts, s->weights, 0);
        return launch(b, b->subgroups ? MOE_CL_K_MATVEC_SUBGROUP : MOE_CL_K_MATVEC, &l);
    }
    const moe_klaunch l = moe_klaunch_gemm(&c, s, 0, s->n_experts, s->weights, 0);
    return launch(b, MOE_CL_K_GEMM, &l);
}

moe_status moe_cl_route(moe_backend *be, const moe_route_step *s)
{
    moe_cl_backend *b = moe_clb(be);
    const moe_kconfig c = kconfig(b);
    moe_ffn_step router;
    moe_klaunch select;
    moe_klaunch_route(&c, s, &router, &select);
    const int64_t local = moe_kselect_shared_bytes(s->desc->n_experts, c.wg_small);
    if ((cl_ulong)local > b->local_mem)
        return b->record_status = moe_fail(
                   be->ctx, MOE_ERROR_UNSUPPORTED,
                   "opencl: routing over %lld experts needs %lld bytes of local memory; the device has %llu",
                   (long long)s->desc->n_experts, (long long)local, (unsigned long long)b->local_mem);
    moe_cl_ffn(be, &router);
    return launch(b, MOE_CL_K_SELECT, &select);
}

moe_status moe_cl_plan(moe_backend *be, const moe_plan_step *s)
{
    moe_cl_backend *b = moe_clb(be);
    const moe_kconfig c = kconfig(b);
    const moe_kplan plan = moe_klaunch_plan(&c, s);
    launch(b, MOE_CL_K_PLAN_COUNT, &plan.count);
    launch(b, MOE_CL_K_PLAN_SCAN, &plan.scan);
    return launch(b, MOE_CL_K_PLAN_SCATTER, &plan.scatter);
}

moe_status moe_cl_combine(moe_backend *be, const moe_combine_step *s)
{
    moe_cl_backend *b = moe_clb(be);
    const moe_kconfig c = kconfig(b);
    const moe_klaunch l = moe_klaunch_combine(&c, s);
    return launch(b, MOE_CL_K_COMBINE, &l);
}

moe_status moe_cl_stats(moe_backend *be, const moe_stats_step *s)
{
    moe_cl_backend *b = moe_clb(be);
    const moe_kconfig c = kconfig(b);
    const moe_klaunch l = moe_klaunch_stats(&c, s);
    return launch(b, MOE_CL_K_STATS, &l);
}
