/*
 * abi.h — how the public structs' struct_size is read (moe.h, "Extensible structs").
 *
 * Every public struct only grows, at its end; each release's layout is a prefix of the next.
 * A struct is described by the ends of its versions (offsetof(last field) + its size, not
 * sizeof: a caller's tail padding may overlap the next version's first field, so only whole
 * versions are copied). A caller's struct_size is accepted from the oldest version's end up to
 * this library's sizeof; the fields of the newest version within it are read (input) or written
 * (output), the others keep their defaults (input) or their bytes (output). A struct_size
 * larger than this library's sizeof comes from a caller built against a newer moe.h and is
 * refused: its fields past ours would be silently ignored.
 */
#ifndef MOE_ABI_H
#define MOE_ABI_H

#include "moe.h"

#include <stddef.h>

#define MOE_ABI_END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

typedef struct moe_abi_struct {
    const char *name;   /* "moe_layer_desc" */
    size_t size;        /* this library's sizeof */
    size_t ends[6];     /* each version's end, oldest first; 0 past the last */
    const char *oldest; /* the moe version of ends[0] */
} moe_abi_struct;

extern const moe_abi_struct moe_abi_device_info, moe_abi_context_desc, moe_abi_arena_stats,
    moe_abi_layer_desc, moe_abi_layer_weights, moe_abi_forward_stats, moe_abi_model_info,
    moe_abi_model_layer_options, moe_abi_cache_info, moe_abi_model_tensor_info, moe_abi_placement,
    moe_abi_expert_usage, moe_abi_expert_cache_desc, moe_abi_expert_cache_stats, moe_abi_ep_transport,
    moe_abi_ep_stats;

/* Checks user->struct_size (the first field of every public struct) against s; on success
 * *bytes is what to copy: the end of the newest version it holds. Refusals name the struct,
 * the size and the reason. */
moe_status moe_abi_check(moe_context *ctx, const moe_abi_struct *s, const void *user, size_t *bytes);
/* Input: `local` holds this library's defaults (struct_size = sizeof); the caller's fields of
 * the versions it has are copied over them. */
moe_status moe_abi_in(moe_context *ctx, const moe_abi_struct *s, const void *user, void *local);
/* Output: `local` (a full struct) is written into `user` up to the caller's newest version;
 * the caller's struct_size and any bytes past that version are left as they were. */
moe_status moe_abi_out(moe_context *ctx, const moe_abi_struct *s, void *user, const void *local);

#endif /* MOE_ABI_H */
