/*
 * cl_memory.c — device memory for the OpenCL backend.
 *
 * Every arena allocation (a layer's weights, the scratch region, a moe_buffer) is one
 * cl_mem; a tensor inside it is (cl_mem, byte offset), and kernels take the offset as an
 * element-offset argument, so no sub-buffer (and its CL_DEVICE_MEM_BASE_ADDR_ALIGN rule) is
 * needed. The core still aligns every offset to max(16, that alignment). Host transfers are
 * blocking reads and writes on the one in-order queue (outside a forward). Weights are stored
 * in their format (F32, F16, BF16, Q8_0, Q4_0, the K-quants: the kernels read each as it is), converted row
 * by row into a host staging buffer when handed over in another, and written in chunks, so no float copy of a
 * checkpoint is ever made.
 */
#include "../alloc.h"
#include "cl_internal.h"

#include <stdlib.h>
#include <string.h>

#define STAGING_BYTES ((size_t)16 << 20)

static moe_status check_usable(moe_cl_backend *b)
{
    if (b->lost) return moe_fail(b->base.ctx, MOE_ERROR_DEVICE_LOST, "opencl: the device was lost");
    return MOE_OK;
}

static moe_status create_mem(moe_cl_backend *b, size_t bytes, cl_mem *out)
{
    cl_int err = CL_SUCCESS;
    /* Round up to 4 bytes so a kernel's last float is inside the buffer. */
    *out = MOE_CL_ALLOC_CALL(
        &err, CL_MEM_OBJECT_ALLOCATION_FAILURE,
        clCreateBuffer(b->context, CL_MEM_READ_WRITE, (bytes + 3) & ~(size_t)3, NULL, &err));
    return err == CL_SUCCESS ? MOE_OK : moe_cl_fail(b, err, "clCreateBuffer");
}

moe_status moe_cl_buffer_alloc(moe_backend *be, size_t bytes, moe_backend_buffer_usage usage,
                               moe_backend_buffer **out)
{
    (void)usage;
    moe_cl_backend *b = moe_clb(be);
    moe_status st = check_usable(b);
    if (st != MOE_OK) return st;
    if (b->inject_oom)
        return moe_cl_fail(b, CL_MEM_OBJECT_ALLOCATION_FAILURE,
                           "clCreateBuffer (injected by MOE_CL_INJECT=oom)");
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(b->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof max_alloc, &max_alloc, NULL);
    if (max_alloc && bytes > max_alloc)
        return moe_fail(be->ctx, MOE_ERROR_OUT_OF_DEVICE_MEMORY,
                        "opencl: %zu bytes exceed the device's largest allocation (%llu bytes)", bytes,
                        (unsigned long long)max_alloc);
    moe_backend_buffer *buf = moe_calloc(1, sizeof *buf);
    if (!buf) return moe_fail(be->ctx, MOE_ERROR_OUT_OF_MEMORY, "opencl: out of host memory");
    buf->bytes = bytes;
    st = create_mem(b, bytes, &buf->mem);
    if (st != MOE_OK) {
        moe_free(buf);
        return st;
    }
    *out = buf;
    return MOE_OK;
}

void moe_cl_buffer_free(moe_backend *be, moe_backend_buffer *buf)
{
    (void)be;
    if (!buf) return;
    if (buf->mem) clReleaseMemObject(buf->mem);
    moe_free(buf);
}

moe_status moe_cl_memory_init(moe_cl_backend *b)
{
    b->staging_size = STAGING_BYTES;
    b->staging = moe_malloc(STAGING_BYTES);
    if (!b->staging) return moe_fail(b->base.ctx, MOE_ERROR_OUT_OF_MEMORY, "opencl: out of host memory");
    b->base.staging_bytes = STAGING_BYTES;
    return create_mem(b, 256, &b->dummy);
}

void moe_cl_memory_release(moe_cl_backend *b)
{
    if (b->dummy) clReleaseMemObject(b->dummy);
    moe_free(b->staging);
}

/* ---- transfers ----------------------------------------------------------------------------- */

moe_status moe_cl_buffer_write(moe_backend *be, moe_addr dst, const void *src, size_t bytes)
{
    moe_cl_backend *b = moe_clb(be);
    moe_status st = check_usable(b);
    if (st != MOE_OK || bytes == 0) return st;
    const cl_int err =
        clEnqueueWriteBuffer(b->queue, dst.buf->mem, CL_TRUE, dst.offset, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? MOE_OK : moe_cl_fail(b, err, "clEnqueueWriteBuffer");
}

moe_status moe_cl_buffer_read(moe_backend *be, moe_addr src, void *dst, size_t bytes)
{
    moe_cl_backend *b = moe_clb(be);
    moe_status st = check_usable(b);
    if (st != MOE_OK || bytes == 0) return st;
    const cl_int err =
        clEnqueueReadBuffer(b->queue, src.buf->mem, CL_TRUE, src.offset, bytes, dst, 0, NULL, NULL);
    return err == CL_SUCCESS ? MOE_OK : moe_cl_fail(b, err, "clEnqueueReadBuffer");
}

/* A forward's output: read by the wait once the queue has finished (the in-order queue has the
 * forward's kernels before it either way), so that a failed forward leaves dst untouched. The
 * input side (stage_in) is buffer_write: a blocking write enqueued before any of the forward's
 * kernels waits for nothing more than the earlier forwards, as before. */
moe_status moe_cl_stage_out(moe_backend *be, moe_addr src, void *dst, size_t bytes)
{
    moe_cl_backend *b = moe_clb(be);
    const moe_status st =
        bytes ? moe_staged_reads_add(be, &b->outs, (moe_staged_read){src, SIZE_MAX, dst, bytes}) : MOE_OK;
    if (st != MOE_OK) b->record_status = st;
    return st;
}

/* ---- weights: Hugging Face layout, gated pairs as [E][gate, up][N][K] ------------------------- */

/* Each row in the bytes of the tensor's format (kernels/weight_format.h), rows back to back:
 * the device holds exactly the format's size, and the kernels read the format themselves. */
size_t moe_cl_weight_bytes(moe_backend *be, const moe_weight_src *s)
{
    (void)be;
    return moe_weight_rows_bytes(s);
}

/* Every row converted (or copied, when the source has the format already) into the staging
 * buffer by moe_weight_rows_stream (backend.h); a full staging buffer is one write. */
typedef struct cl_upload {
    moe_backend *be;
    moe_addr dst;
} cl_upload;

static moe_status cl_upload_flush(void *user, size_t offset, size_t bytes)
{
    const cl_upload *u = user;
    const moe_addr chunk = {u->dst.buf, u->dst.offset + offset};
    return moe_cl_buffer_write(u->be, chunk, moe_clb(u->be)->staging, bytes);
}

moe_status moe_cl_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *s)
{
    moe_cl_backend *b = moe_clb(be);
    cl_upload u = {be, dst};
    return moe_weight_rows_stream(be->ctx, "opencl", s, b->staging, b->staging_size, cl_upload_flush, &u);
}
