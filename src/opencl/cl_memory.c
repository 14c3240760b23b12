/*
 * cl_memory.c — device memory for the OpenCL backend.
 *
 * Every arena allocation (a layer's weights, the scratch region, a moe_buffer) is one
 * cl_mem; a tensor inside it is (cl_mem, byte offset), and kernels take the offset as an
 * element-offset argument, so no sub-buffer (and its CL_DEVICE_MEM_BASE_ADDR_ALIGN rule) is
 * needed. The core still aligns every offset to max(16, that alignment). Host transfers are
 * blocking reads and writes on the one in-order queue (outside a forward). Weights are
 * converted from F16/BF16 row by row into a host staging buffer and written in chunks, so no
 * float copy of a checkpoint is ever made.
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
    b->staging_floats = STAGING_BYTES / sizeof(float);
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

/* ---- weights: Hugging Face layout, gated pairs as [E][gate, up][N][K] ------------------------- */

size_t moe_cl_weight_bytes(moe_backend *be, const moe_weight_src *s)
{
    (void)be;
    return sizeof(float) * (size_t)s->batch * (s->second ? 2u : 1u) * (size_t)s->rows * (size_t)s->cols;
}

moe_status moe_cl_weight_upload(moe_backend *be, moe_addr dst, const moe_weight_src *s)
{
    moe_cl_backend *b = moe_clb(be);
    const size_t cols = (size_t)s->cols;
    if (cols > b->staging_floats)
        return moe_fail(be->ctx, MOE_ERROR_UNSUPPORTED,
                        "opencl: a weight row of %zu floats exceeds the staging buffer", cols);
    const int64_t rows_per_chunk = (int64_t)(b->staging_floats / cols);
    size_t at = dst.offset;
    for (int64_t e = 0; e < s->batch; e++) {
        for (int half = 0; half < (s->second ? 2 : 1); half++) {
            const moe_matrix_src *m = half ? &s->second[e] : &s->first[e];
            for (int64_t r0 = 0; r0 < s->rows; r0 += rows_per_chunk) {
                const int64_t n = s->rows - r0 < rows_per_chunk ? s->rows - r0 : rows_per_chunk;
                for (int64_t r = 0; r < n; r++)
                    moe_matrix_row(m, s->cols, r0 + r, b->staging + (size_t)r * cols);
                const moe_addr chunk = {dst.buf, at};
                moe_status st = moe_cl_buffer_write(be, chunk, b->staging, (size_t)n * cols * sizeof(float));
                if (st != MOE_OK) return st;
                at += (size_t)n * cols * sizeof(float);
            }
        }
    }
    return MOE_OK;
}
