/*
 * arena.c — the context's buffer arena.
 *
 * Three regions kept apart: weights (one backend allocation per layer, written once),
 * scratch (one allocation per context, shared by every layer, laid out anew by each
 * forward with a bump allocator and reused) and user buffers. Scratch is measured first
 * (the whole forward's layout is computed on the host), then allocated once; it grows only
 * when a forward needs more than any before it, so repeated forwards at the same or a
 * smaller token count allocate nothing.
 */
#include "internal.h"

size_t moe_bump_take(moe_bump *bump, size_t bytes)
{
    const size_t a = bump->alignment;
    const size_t start = bump->offset;
    size_t end;
    if (bump->overflow || !moe_add_size(start, bytes, &end) || !moe_add_size(end, a - 1, &end)) {
        bump->overflow = true;
        return 0;
    }
    bump->offset = end & ~(a - 1);
    return start;
}

moe_status moe_arena_alloc(moe_arena *arena, size_t bytes, moe_backend_buffer_usage usage,
                           moe_backend_buffer **out)
{
    moe_backend *be = arena->be;
    moe_status st = be->ops->buffer_alloc(be, bytes ? bytes : 1, usage, out);
    if (st != MOE_OK) return st;
    arena->allocation_count++;
    if (usage == MOE_BACKEND_BUFFER_WEIGHTS) arena->weights_bytes += bytes;
    if (usage == MOE_BACKEND_BUFFER_USER) arena->buffer_bytes += bytes;
    return MOE_OK;
}

void moe_arena_free(moe_arena *arena, moe_backend_buffer *buf, size_t bytes, moe_backend_buffer_usage usage)
{
    if (!buf) return;
    arena->be->ops->buffer_free(arena->be, buf);
    if (usage == MOE_BACKEND_BUFFER_WEIGHTS) arena->weights_bytes -= bytes;
    if (usage == MOE_BACKEND_BUFFER_USER) arena->buffer_bytes -= bytes;
}

moe_status moe_arena_reserve_scratch(moe_arena *arena, size_t bytes)
{
    if (bytes > arena->scratch_peak_bytes) arena->scratch_peak_bytes = bytes;
    if (arena->scratch && bytes <= arena->scratch_bytes) return MOE_OK;
    /* Free first: the old contents are dead, and holding both could exhaust the device. */
    moe_arena_free(arena, arena->scratch, arena->scratch_bytes, MOE_BACKEND_BUFFER_SCRATCH);
    arena->scratch = NULL;
    arena->scratch_bytes = 0;
    moe_status st = moe_arena_alloc(arena, bytes, MOE_BACKEND_BUFFER_SCRATCH, &arena->scratch);
    if (st != MOE_OK) return st;
    arena->scratch_bytes = bytes;
    arena->scratch_reservations++;
    return MOE_OK;
}

void moe_arena_release(moe_arena *arena)
{
    moe_arena_free(arena, arena->scratch, arena->scratch_bytes, MOE_BACKEND_BUFFER_SCRATCH);
    arena->scratch = NULL;
    arena->scratch_bytes = 0;
}
