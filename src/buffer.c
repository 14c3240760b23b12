/*
 * buffer.c — moe_buffer: a float32 tensor that lives on the context's device, so an
 * application can keep activations there across layers without a host round trip.
 */
#include "alloc.h"
#include "internal.h"

#include <stdlib.h>

moe_status moe_buffer_create(moe_context *ctx, int64_t n_elements, moe_buffer **out)
{
    if (!ctx) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context is NULL");
    moe_clear_error(ctx);
    if (!out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "out_buffer is NULL");
    size_t bytes;
    if (n_elements <= 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "n_elements must be > 0 (got %lld)",
                        (long long)n_elements);
    if (!moe_bytes_of(sizeof(float), n_elements, 1, 1, &bytes))
        return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "%lld floats overflow size_t", (long long)n_elements);
    moe_buffer *b = moe_calloc(1, sizeof *b);
    if (!b) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    moe_status st = moe_arena_alloc(&ctx->arena, bytes, MOE_BACKEND_BUFFER_USER, &b->buf);
    if (st != MOE_OK) {
        moe_free(b);
        return st;
    }
    b->ctx = ctx;
    b->n_elements = n_elements;
    *out = b;
    return MOE_OK;
}

void moe_buffer_destroy(moe_buffer *b)
{
    if (!b) return;
    moe_arena_free(&b->ctx->arena, b->buf, (size_t)b->n_elements * sizeof(float), MOE_BACKEND_BUFFER_USER);
    moe_free(b);
}

int64_t moe_buffer_elements(const moe_buffer *b)
{
    return b ? b->n_elements : 0;
}

static moe_status check_range(const moe_buffer *b, int64_t offset, int64_t n, const void *host)
{
    if (!b) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "buffer is NULL");
    moe_clear_error(b->ctx);
    if (!host) return moe_fail(b->ctx, MOE_ERROR_NULL_POINTER, "host pointer is NULL");
    if (offset < 0 || n <= 0 || offset > b->n_elements || n > b->n_elements - offset)
        return moe_fail(b->ctx, MOE_ERROR_INVALID_SIZE,
                        "range [%lld, %lld + %lld) is not inside the buffer's %lld elements",
                        (long long)offset, (long long)offset, (long long)n, (long long)b->n_elements);
    return MOE_OK;
}

moe_status moe_buffer_write(moe_buffer *b, int64_t offset, int64_t n, const float *src)
{
    moe_status st = check_range(b, offset, n, src);
    if (st != MOE_OK) return st;
    moe_backend *be = b->ctx->be;
    return be->ops->buffer_write(be, (moe_addr){b->buf, (size_t)offset * sizeof(float)}, src,
                                 (size_t)n * sizeof(float));
}

moe_status moe_buffer_read(const moe_buffer *b, int64_t offset, int64_t n, float *dst)
{
    moe_status st = check_range(b, offset, n, dst);
    if (st != MOE_OK) return st;
    moe_backend *be = b->ctx->be;
    return be->ops->buffer_read(be, (moe_addr){b->buf, (size_t)offset * sizeof(float)}, dst,
                                (size_t)n * sizeof(float));
}
