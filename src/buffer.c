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
    moe_status st = moe_context_check_live(ctx, "moe_buffer_create");
    if (st != MOE_OK) return st;
    size_t bytes;
    if (n_elements <= 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "n_elements must be > 0 (got %lld)",
                        (long long)n_elements);
    if (!moe_bytes_of(sizeof(float), n_elements, 1, 1, &bytes))
        return moe_fail(ctx, MOE_ERROR_SIZE_OVERFLOW, "%lld floats overflow size_t", (long long)n_elements);
    moe_buffer *b = moe_calloc(1, sizeof *b);
    if (!b) return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    st = moe_arena_alloc(&ctx->arena, bytes, MOE_BACKEND_BUFFER_USER, &b->buf);
    if (st != MOE_OK) {
        moe_free(b);
        return st;
    }
    b->ctx = ctx;
    b->n_elements = n_elements;
    ctx->n_buffers++;
    *out = b;
    return MOE_OK;
}

moe_status moe_buffer_wrap(moe_context *ctx, moe_backend_buffer *buf, size_t offset, int64_t n_elements,
                           moe_buffer **out)
{
    moe_buffer *b = moe_calloc(1, sizeof *b);
    if (!b) {
        ctx->be->ops->buffer_free(ctx->be, buf);
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    *b = (moe_buffer){.ctx = ctx, .buf = buf, .offset = offset, .wrapped = true, .n_elements = n_elements};
    ctx->n_buffers++;
    *out = b;
    return MOE_OK;
}

static void buffer_free(moe_buffer *b);

void moe_buffer_destroy(moe_buffer *b)
{
    if (!b || moe_context_defer_destroy(b->ctx, b->pins, &b->destroy_pending, "moe_buffer_destroy")) return;
    buffer_free(b);
}

void moe_buffer_unpin(moe_buffer *b)
{
    if (--b->pins == 0 && b->destroy_pending) buffer_free(b);
}

static void buffer_free(moe_buffer *b)
{
    moe_context *ctx = b->ctx;
    moe_context_child_destroying(ctx, b->serial, "moe_buffer_destroy");
    if (b->wrapped)
        ctx->be->ops->buffer_free(ctx->be, b->buf); /* lets go of the application's buffer */
    else
        moe_arena_free(&ctx->arena, b->buf, (size_t)b->n_elements * sizeof(float), MOE_BACKEND_BUFFER_USER);
    moe_free(b);
    moe_context_release_child(ctx, &ctx->n_buffers);
}

int64_t moe_buffer_elements(const moe_buffer *b)
{
    return b ? b->n_elements : 0;
}

/* `what` is the call, for the messages. */
static moe_status check_range(const moe_buffer *b, int64_t offset, int64_t n, const void *host,
                              const char *what)
{
    if (!b) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "buffer is NULL");
    moe_clear_error(b->ctx);
    if (!host) return moe_fail(b->ctx, MOE_ERROR_NULL_POINTER, "host pointer is NULL");
    moe_status st = moe_context_check_live(b->ctx, what);
    if (st != MOE_OK) return st;
    if (moe_in_flight(b->ctx, b->serial))
        return moe_fail(
            b->ctx, MOE_ERROR_BUSY,
            "%s: the buffer is the x or y of a forward still in flight (moe_layer_forward_async); "
            "call moe_context_wait first",
            what);
    if (offset < 0 || n <= 0 || offset > b->n_elements || n > b->n_elements - offset)
        return moe_fail(b->ctx, MOE_ERROR_INVALID_SIZE,
                        "range [%lld, %lld + %lld) is not inside the buffer's %lld elements",
                        (long long)offset, (long long)offset, (long long)n, (long long)b->n_elements);
    return MOE_OK;
}

moe_status moe_buffer_write(moe_buffer *b, int64_t offset, int64_t n, const float *src)
{
    moe_status st = check_range(b, offset, n, src, "moe_buffer_write");
    if (st != MOE_OK) return st;
    moe_backend *be = b->ctx->be;
    return be->ops->buffer_write(be, (moe_addr){b->buf, b->offset + (size_t)offset * sizeof(float)}, src,
                                 (size_t)n * sizeof(float));
}

moe_status moe_buffer_read(const moe_buffer *b, int64_t offset, int64_t n, float *dst)
{
    moe_status st = check_range(b, offset, n, dst, "moe_buffer_read");
    if (st != MOE_OK) return st;
    moe_backend *be = b->ctx->be;
    return be->ops->buffer_read(be, (moe_addr){b->buf, b->offset + (size_t)offset * sizeof(float)}, dst,
                                (size_t)n * sizeof(float));
}

moe_status moe_staged_reads_add(moe_backend *be, moe_staged_reads *l, moe_staged_read r)
{
    if (l->n == l->cap) {
        const size_t cap = l->cap ? 2 * l->cap : 16;
        moe_staged_read *v = moe_realloc(l->v, cap * sizeof *v);
        if (!v) return moe_fail(be->ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = r;
    return MOE_OK;
}

void moe_staged_reads_free(moe_staged_reads *l)
{
    moe_free(l->v);
    *l = (moe_staged_reads){0};
}
