/*
 * cl_embed.c — moe_opencl.h: an OpenCL context's objects for the application, the
 * application's cl_mem as a moe_buffer, and a forward ordered among the application's events.
 * (Borrowing the application's cl_context, device and queue is context creation's:
 * cl_device.c.)
 */
#include "cl_internal.h"

#include <string.h>

const moe_abi_struct moe_abi_opencl_device = {
    "moe_opencl_device", sizeof(moe_opencl_device), {MOE_ABI_END(moe_opencl_device, queue)}, "0.4.0"};

/* The OpenCL backend of a context into *out, or the failure (recorded). */
static moe_status opencl_of(const moe_context *ctx, const char *what, moe_cl_backend **out)
{
    const moe_status st = moe_context_expect_backend(ctx, &moe_opencl_backend_ops, what);
    if (st == MOE_OK) *out = moe_clb(ctx->be);
    return st;
}

moe_status moe_opencl_context_get_device(const moe_context *ctx, moe_opencl_device *out)
{
    moe_cl_backend *b = NULL;
    moe_status st = opencl_of(ctx, "moe_opencl_context_get_device", &b);
    if (st != MOE_OK) return st;
    if (!out) return moe_fail((moe_context *)ctx, MOE_ERROR_NULL_POINTER, "out is NULL");
    const moe_opencl_device full = {.struct_size = sizeof full,
                                    .backend = MOE_BACKEND_OPENCL,
                                    .context = b->context,
                                    .device = b->device,
                                    .queue = b->queue};
    return moe_abi_out((moe_context *)ctx, &moe_abi_opencl_device, out, &full);
}

moe_status moe_opencl_buffer_wrap(moe_context *ctx, cl_mem mem, size_t offset, int64_t n_elements,
                                  moe_buffer **out)
{
    moe_cl_backend *b = NULL;
    moe_status st = opencl_of(ctx, "moe_opencl_buffer_wrap", &b);
    if (st != MOE_OK) return st;
    if (!out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "out_buffer is NULL");
    if (!mem) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "mem is NULL");
    st = moe_context_check_live(ctx, "moe_opencl_buffer_wrap");
    if (st != MOE_OK) return st;
    if (n_elements <= 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "n_elements must be > 0 (got %lld)",
                        (long long)n_elements);
    if (offset % sizeof(float) != 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "offset %zu is not a multiple of 4 (the kernels address floats)", offset);
    cl_context owner = NULL;
    cl_mem_object_type type = 0;
    size_t bytes = 0;
    cl_int err = clGetMemObjectInfo(mem, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS) err = clGetMemObjectInfo(mem, CL_MEM_TYPE, sizeof type, &type, NULL);
    if (err == CL_SUCCESS) err = clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof bytes, &bytes, NULL);
    if (err != CL_SUCCESS)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "mem: clGetMemObjectInfo failed: %s",
                        moe_cl_error_name(err));
    if (owner != b->context)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "mem belongs to another cl_context than the moe context's");
    if (type != CL_MEM_OBJECT_BUFFER)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "mem is an image or a pipe, not a buffer");
    size_t need;
    if (!moe_bytes_of(sizeof(float), n_elements, 1, 1, &need) || !moe_add_size(need, offset, &need) ||
        need > bytes)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "%lld floats from byte %zu do not fit mem's %zu bytes",
                        (long long)n_elements, offset, bytes);
    moe_backend_buffer *buf = moe_calloc(1, sizeof *buf);
    if (!buf) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "opencl: out of host memory");
    clRetainMemObject(mem); /* released by moe_cl_buffer_free when the moe_buffer goes */
    *buf = (moe_backend_buffer){.mem = mem, .bytes = bytes};
    return moe_buffer_wrap(ctx, buf, offset, n_elements, out);
}

moe_status moe_opencl_layer_forward(moe_layer *layer, int64_t n_tokens, const moe_buffer *x, moe_buffer *y,
                                    cl_uint num_events, const cl_event *wait_list, cl_event *event)
{
    if (!layer) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "layer is NULL");
    moe_context *ctx = layer->ctx;
    moe_cl_backend *b = NULL;
    moe_status st = opencl_of(ctx, "moe_opencl_layer_forward", &b);
    if (st == MOE_OK) st = moe_layer_check_unplaced(layer, "moe_opencl_layer_forward");
    if (st != MOE_OK) return st;
    if ((num_events == 0) != (wait_list == NULL))
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "num_events_in_wait_list is %u and event_wait_list %s: both or neither", num_events,
                        wait_list ? "is set" : "is NULL");
    /* The events gate everything after them on the in-order queue: the forward's kernels. */
    if (num_events > 0) {
        const cl_int err = clEnqueueBarrierWithWaitList(b->queue, num_events, wait_list, NULL);
        if (err != CL_SUCCESS) return moe_cl_fail(b, err, "clEnqueueBarrierWithWaitList");
    }
    st = moe_layer_forward_async(layer, n_tokens, x, y);
    if (st != MOE_OK || !event) return st;
    cl_event done = NULL;
    const cl_int err = clEnqueueMarkerWithWaitList(b->queue, 0, NULL, &done);
    if (err != CL_SUCCESS) return moe_cl_fail(b, err, "clEnqueueMarkerWithWaitList");
    clFlush(b->queue);
    *event = done;
    return MOE_OK;
}
