/*
 * abi.c — the public structs' versions (abi.h) and the struct_size rules.
 *
 * A new field goes at the end of its struct, and its struct's table entry below gets a new
 * end (the release it comes in noted beside it); the test in tests/test_abi.c keeps a frozen
 * copy of every released layout and runs callers built against it.
 */
#include "abi.h"

#include "internal.h"

#include <string.h>

/* 0.1.0: the first milestone's layouts (tests/abi/moe_0_1_0.h). */
#define V010 "0.1.0"

const moe_abi_struct moe_abi_device_info = {
    "moe_device_info",
    sizeof(moe_device_info),
    {MOE_ABI_END(moe_device_info, fp16), MOE_ABI_END(moe_device_info, features_used) /* 0.2.0 */},
    V010};
const moe_abi_struct moe_abi_context_desc = {"moe_context_desc",
                                             sizeof(moe_context_desc),
                                             {MOE_ABI_END(moe_context_desc, log_level),
                                              MOE_ABI_END(moe_context_desc, device_types) /* 0.3.0 */,
                                              MOE_ABI_END(moe_context_desc, external_device) /* 0.4.0 */},
                                             V010};
const moe_abi_struct moe_abi_arena_stats = {
    "moe_arena_stats", sizeof(moe_arena_stats), {MOE_ABI_END(moe_arena_stats, scratch_reservations)}, V010};
const moe_abi_struct moe_abi_layer_desc = {"moe_layer_desc",
                                           sizeof(moe_layer_desc),
                                           {MOE_ABI_END(moe_layer_desc, drop_policy),
                                            MOE_ABI_END(moe_layer_desc, shared_weight_dtype) /* 0.2.0 */,
                                            MOE_ABI_END(moe_layer_desc, activation_dtype) /* 0.3.0 */,
                                            MOE_ABI_END(moe_layer_desc, shared_down_weight_dtype) /* 0.5.0 */,
                                            MOE_ABI_END(moe_layer_desc, swiglu_limit) /* 0.7.0 */},
                                           V010};
/* A version ends past the previous version's sizeof (its end rounded up to the struct's
 * alignment): a caller's struct_size equal to an older sizeof then never covers a whole newer
 * version, whose fields would be read from that caller's tail padding. (moe_layer_desc 0.3.0
 * needed reserved_0_3_0 for it.) */
#define MOE_ABI_ENDS_PAST_PADDING(type, prev_last, last)                                                     \
    _Static_assert(MOE_ABI_END(type, last) > (MOE_ABI_END(type, prev_last) + _Alignof(type) - 1) /           \
                                                 _Alignof(type) * _Alignof(type),                            \
                   #type ": the version ending at " #last " fits in the tail padding of the one before it")
MOE_ABI_ENDS_PAST_PADDING(moe_device_info, fp16, features_used);
MOE_ABI_ENDS_PAST_PADDING(moe_context_desc, log_level, device_types);
MOE_ABI_ENDS_PAST_PADDING(moe_context_desc, device_types, external_device);
MOE_ABI_ENDS_PAST_PADDING(moe_layer_desc, drop_policy, shared_weight_dtype);
MOE_ABI_ENDS_PAST_PADDING(moe_layer_desc, shared_weight_dtype, activation_dtype);
MOE_ABI_ENDS_PAST_PADDING(moe_layer_desc, activation_dtype, shared_down_weight_dtype);
MOE_ABI_ENDS_PAST_PADDING(moe_layer_desc, shared_down_weight_dtype, swiglu_limit);
MOE_ABI_ENDS_PAST_PADDING(moe_layer_weights, shared_dtype, down_bias);
MOE_ABI_ENDS_PAST_PADDING(moe_layer_weights, shared_expert_gate, shared_dtype);
MOE_ABI_ENDS_PAST_PADDING(moe_model_layer_options, decoder, shared_weight_dtype);
MOE_ABI_ENDS_PAST_PADDING(moe_model_layer_options, shared_weight_dtype, activation_dtype);

const moe_abi_struct moe_abi_layer_weights = {"moe_layer_weights",
                                              sizeof(moe_layer_weights),
                                              {MOE_ABI_END(moe_layer_weights, shared_expert_gate),
                                               MOE_ABI_END(moe_layer_weights, shared_dtype) /* 0.2.0 */,
                                               MOE_ABI_END(moe_layer_weights, down_bias) /* 0.7.0 */},
                                              V010};
const moe_abi_struct moe_abi_forward_stats = {
    "moe_forward_stats", sizeof(moe_forward_stats), {MOE_ABI_END(moe_forward_stats, device_ms)}, V010};
const moe_abi_struct moe_abi_model_tensor_info = {"moe_model_tensor_info",
                                                  sizeof(moe_model_tensor_info),
                                                  {MOE_ABI_END(moe_model_tensor_info, file)},
                                                  "0.5.0"};
const moe_abi_struct moe_abi_model_info = {
    "moe_model_info", sizeof(moe_model_info), {MOE_ABI_END(moe_model_info, n_tensors)}, V010};
const moe_abi_struct moe_abi_model_layer_options = {
    "moe_model_layer_options",
    sizeof(moe_model_layer_options),
    {MOE_ABI_END(moe_model_layer_options, decoder),
     MOE_ABI_END(moe_model_layer_options, shared_weight_dtype) /* 0.2.0 */,
     MOE_ABI_END(moe_model_layer_options, activation_dtype) /* 0.3.0 */},
    V010};
const moe_abi_struct moe_abi_placement = {
    "moe_placement",
    sizeof(moe_placement),
    {MOE_ABI_END(moe_placement, expert_order), MOE_ABI_END(moe_placement, cache) /* 0.9.0 */},
    "0.8.0"};
MOE_ABI_ENDS_PAST_PADDING(moe_placement, expert_order, cache);
const moe_abi_struct moe_abi_expert_cache_desc = {"moe_expert_cache_desc",
                                                  sizeof(moe_expert_cache_desc),
                                                  {MOE_ABI_END(moe_expert_cache_desc, halving_forwards)},
                                                  "0.9.0"};
const moe_abi_struct moe_abi_expert_cache_stats = {"moe_expert_cache_stats",
                                                   sizeof(moe_expert_cache_stats),
                                                   {MOE_ABI_END(moe_expert_cache_stats, expert_uploads)},
                                                   "0.9.0"};
const moe_abi_struct moe_abi_ep_transport = {
    "moe_ep_transport", sizeof(moe_ep_transport), {MOE_ABI_END(moe_ep_transport, describe)}, "0.10.0"};
const moe_abi_struct moe_abi_ep_stats = {
    "moe_ep_stats", sizeof(moe_ep_stats), {MOE_ABI_END(moe_ep_stats, bytes_received)}, "0.10.0"};
const moe_abi_struct moe_abi_expert_usage = {"moe_expert_usage",
                                             sizeof(moe_expert_usage),
                                             {MOE_ABI_END(moe_expert_usage, uncounted_forwards)},
                                             "0.8.0"};
const moe_abi_struct moe_abi_cache_info = {
    "moe_cache_info", sizeof(moe_cache_info), {MOE_ABI_END(moe_cache_info, limit_bytes)}, V010};

moe_status moe_abi_check(moe_context *ctx, const moe_abi_struct *s, const void *user, size_t *bytes)
{
    size_t size;
    memcpy(&size, user, sizeof size); /* struct_size, the first field of every public struct */
    if (size > s->size)
        return moe_fail(
            ctx, MOE_ERROR_INVALID_ARGUMENT,
            "%s.struct_size is %zu, larger than this library's %s (%zu bytes, moe %s): the caller "
            "was built against a newer moe.h; link it with that moe or a newer one",
            s->name, size, s->name, s->size, moe_version());
    if (size < s->ends[0])
        return moe_fail(
            ctx, MOE_ERROR_INVALID_ARGUMENT,
            "%s.struct_size is %zu, smaller than any %s moe has had (%zu bytes in moe %s): set it "
            "to sizeof(%s)",
            s->name, size, s->name, s->ends[0], s->oldest, s->name);
    size_t end = s->ends[0];
    for (size_t i = 1; i < sizeof s->ends / sizeof s->ends[0] && s->ends[i]; i++)
        if (s->ends[i] <= size) end = s->ends[i];
    *bytes = end;
    return MOE_OK;
}

moe_status moe_abi_in(moe_context *ctx, const moe_abi_struct *s, const void *user, void *local)
{
    size_t bytes = 0;
    const moe_status st = moe_abi_check(ctx, s, user, &bytes);
    if (st != MOE_OK) return st;
    /* Past struct_size: the local defaults; struct_size itself stays this library's sizeof. */
    memcpy((char *)local + sizeof(size_t), (const char *)user + sizeof(size_t), bytes - sizeof(size_t));
    return MOE_OK;
}

moe_status moe_abi_out(moe_context *ctx, const moe_abi_struct *s, void *user, const void *local)
{
    size_t bytes = 0;
    const moe_status st = moe_abi_check(ctx, s, user, &bytes);
    if (st != MOE_OK) return st;
    memcpy((char *)user + sizeof(size_t), (const char *)local + sizeof(size_t), bytes - sizeof(size_t));
    return MOE_OK;
}
