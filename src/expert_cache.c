/*
 * expert_cache.c — the bookkeeping of a placed layer's expert cache (moe.h, moe_expert_cache_desc):
 * which expert each slot holds, the upload rule, the LRU and frequency-weighted victims, and the
 * counts moe_layer_get_cache_stats reports. Host state only: placement.c moves the weights and
 * runs the rows where this decides. Kept apart from the devices so the policy is one readable
 * function (moe_xcache_decide) that the tests' scripted traces can hold to account.
 *
 * A forward goes: decide (hits, then misses most rows first: each gets a slot or runs where it
 * lives) → for each upload, moe_xcache_begin_upload (the slot is empty from here) and, once the
 * expert is in place, moe_xcache_end_upload (it holds the expert) → moe_xcache_commit when the
 * whole forward succeeded (recency, frequencies, counts). A failed forward commits nothing; a
 * failed upload leaves its slot empty.
 */
#include "alloc.h"
#include "internal.h"

#include <string.h>

void moe_xcache_free(moe_xcache *c)
{
    if (!c) return;
    moe_free(c->slot_expert);
    moe_free(c->expert_slot);
    moe_free(c->slot_used);
    moe_free(c->freq);
    moe_free(c->expert_hits);
    moe_free(c->expert_misses);
    moe_free(c->expert_uploads);
    moe_free(c->fwd_slot);
    moe_free(c->fwd_rows);
    moe_free(c->fwd_kind);
    moe_free(c->uploads);
    moe_free(c->fwd_used);
    moe_free(c);
}

moe_xcache *moe_xcache_new(int64_t n_experts, int64_t slots, moe_cache_policy policy, int64_t min_rows,
                           int64_t halving_forwards)
{
    moe_xcache *c = moe_calloc(1, sizeof *c);
    if (!c) return NULL;
    const size_t E = (size_t)n_experts, S = (size_t)slots;
    c->n_experts = n_experts;
    c->slots = slots;
    c->policy = policy;
    c->min_rows = min_rows > 0 ? min_rows : 1;
    c->halving_forwards = halving_forwards > 0 ? halving_forwards : 64;
    c->slot_expert = moe_malloc(sizeof(int32_t) * S);
    c->expert_slot = moe_malloc(sizeof(int32_t) * E);
    c->slot_used = moe_calloc(S, sizeof(uint64_t));
    c->freq = moe_calloc(E, sizeof(uint32_t));
    c->expert_hits = moe_calloc(E, sizeof(int64_t));
    c->expert_misses = moe_calloc(E, sizeof(int64_t));
    c->expert_uploads = moe_calloc(E, sizeof(int64_t));
    c->fwd_slot = moe_malloc(sizeof(int32_t) * E);
    c->fwd_rows = moe_calloc(E, sizeof(int64_t));
    c->fwd_kind = moe_calloc(E, sizeof(uint8_t));
    c->uploads = moe_malloc(sizeof(int32_t) * S);
    c->fwd_used = moe_calloc(S, sizeof(bool));
    if (!c->slot_expert || !c->expert_slot || !c->slot_used || !c->freq || !c->expert_hits ||
        !c->expert_misses || !c->expert_uploads || !c->fwd_slot || !c->fwd_rows || !c->fwd_kind ||
        !c->uploads || !c->fwd_used) {
        moe_xcache_free(c);
        return NULL;
    }
    for (size_t s = 0; s < S; s++) c->slot_expert[s] = -1;
    for (size_t e = 0; e < E; e++) c->expert_slot[e] = -1;
    return c;
}

void moe_xcache_fill(moe_xcache *c, int64_t slot, int32_t expert)
{
    c->slot_expert[slot] = expert;
    c->expert_slot[expert] = (int32_t)slot;
}

/* The count this forward gives e: its count, plus one when routed now. */
static uint32_t freq_now(const moe_xcache *c, int32_t e)
{
    return c->freq[e] + (c->fwd_rows[e] > 0 ? 1u : 0u);
}

/* The slot a miss may take among those this forward does not use: an empty one (the lowest),
 * else the policy's victim; -1 when every slot serves this forward. */
static int64_t victim(const moe_xcache *c)
{
    int64_t best = -1;
    for (int64_t s = 0; s < c->slots; s++) {
        if (c->fwd_used[s]) continue;
        if (c->slot_expert[s] < 0) return s;
        if (best < 0) {
            best = s;
            continue;
        }
        if (c->policy == MOE_CACHE_LFU) {
            const uint32_t f = freq_now(c, c->slot_expert[s]), bf = freq_now(c, c->slot_expert[best]);
            if (f != bf) {
                if (f < bf) best = s;
                continue;
            }
        }
        if (c->slot_used[s] < c->slot_used[best]) best = s;
    }
    return best;
}

void moe_xcache_decide(moe_xcache *c, const int64_t *rows, const bool *cacheable)
{
    const int64_t E = c->n_experts;
    memcpy(c->fwd_rows, rows, sizeof(int64_t) * (size_t)E);
    memset(c->fwd_used, 0, sizeof(bool) * (size_t)c->slots);
    memset(c->fwd_kind, XCACHE_NONE, sizeof(uint8_t) * (size_t)E);
    c->n_uploads = 0;
    c->fwd_upload_bytes = 0;
    c->fwd_upload_ms = 0.0;
    for (int64_t e = 0; e < E; e++) c->fwd_slot[e] = -1;
    /* Hits first: their slots serve this forward and are no one's victim. */
    for (int64_t e = 0; e < E; e++) {
        if (rows[e] <= 0 || !cacheable[e] || c->expert_slot[e] < 0) continue;
        c->fwd_slot[e] = c->expert_slot[e];
        c->fwd_used[c->expert_slot[e]] = true;
        c->fwd_kind[e] = XCACHE_HIT;
    }
    /* Then the misses, most rows first (ties to the lower index): one selection pass per miss,
     * as a forward has at most T·top_k of them. */
    for (;;) {
        int64_t e = -1;
        for (int64_t i = 0; i < E; i++)
            if (rows[i] > 0 && cacheable[i] && c->fwd_kind[i] == XCACHE_NONE && (e < 0 || rows[i] > rows[e]))
                e = i;
        if (e < 0) break;
        c->fwd_kind[e] = XCACHE_MISS;
        const int64_t s = rows[e] >= c->min_rows ? victim(c) : -1;
        if (s < 0) continue;
        const int32_t old = c->slot_expert[s];
        if (old >= 0 && c->policy == MOE_CACHE_LFU && freq_now(c, (int32_t)e) < freq_now(c, old)) continue;
        c->fwd_kind[e] = old >= 0 ? XCACHE_EVICT : XCACHE_UPLOAD;
        c->fwd_slot[e] = (int32_t)s;
        c->fwd_used[s] = true;
        c->uploads[c->n_uploads++] = (int32_t)e;
    }
}

void moe_xcache_begin_upload(moe_xcache *c, int32_t expert)
{
    const int32_t s = c->fwd_slot[expert], old = c->slot_expert[s];
    if (old >= 0) c->expert_slot[old] = -1;
    c->slot_expert[s] = -1;
}

void moe_xcache_end_upload(moe_xcache *c, int32_t expert, size_t bytes, double ms)
{
    moe_xcache_fill(c, c->fwd_slot[expert], expert);
    c->fwd_upload_bytes += bytes;
    c->fwd_upload_ms += ms;
}

void moe_xcache_commit(moe_xcache *c)
{
    c->forwards++;
    for (int64_t e = 0; e < c->n_experts; e++) {
        if (c->fwd_rows[e] <= 0) continue;
        c->freq[e]++;
        if (c->fwd_slot[e] >= 0) c->slot_used[c->fwd_slot[e]] = (uint64_t)c->forwards;
        switch (c->fwd_kind[e]) {
        case XCACHE_HIT:
            c->hits++;
            c->expert_hits[e]++;
            c->rows_cached += c->fwd_rows[e];
            break;
        case XCACHE_EVICT: /* an upload that replaced a resident expert */
        case XCACHE_UPLOAD:
            if (c->fwd_kind[e] == XCACHE_EVICT) c->evictions++;
            c->misses++;
            c->expert_misses[e]++;
            c->uploads_done++;
            c->expert_uploads[e]++;
            c->rows_cached += c->fwd_rows[e];
            break;
        case XCACHE_MISS:
            c->misses++;
            c->expert_misses[e]++;
            c->rows_elsewhere += c->fwd_rows[e];
            break;
        default:
            break;
        }
    }
    c->upload_bytes += c->fwd_upload_bytes;
    c->upload_ms += c->fwd_upload_ms;
    if (c->forwards % c->halving_forwards == 0)
        for (int64_t e = 0; e < c->n_experts; e++) c->freq[e] >>= 1;
}
