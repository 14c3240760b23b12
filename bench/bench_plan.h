/*
 * bench_plan.h — what a forward run will allocate, decided before anything is: for each
 * weight format (--weights), how many layers it cycles through (--layers N, or auto from
 * the last-level cache), and the memory guard that refuses a format or layer count that
 * does not fit — in the format's own bytes, since each format's layers are destroyed
 * before the next format's are made, while the float32 host weights are made once.
 */
#ifndef MOE_BENCH_PLAN_H
#define MOE_BENCH_PLAN_H

#include "bench_config.h"

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bench_format_plan {
    moe_dtype dtype;
    moe_dtype down;          /* the down projections' format (bench_down_dtype) */
    moe_dtype act;           /* the activations asked for (--activations) */
    int64_t cpu_experts;     /* the last N routed experts live on a CPU context (--cpu-experts) */
    int64_t cache_slots;     /* an expert cache of this many slots on the target (--cache-slots) */
    int64_t layers;          /* layers made for this format */
    int auto_layers;         /* from --layers auto */
    int64_t wanted;          /* auto: the cache rule's count, before a cap */
    char capped[128];        /* auto: why fewer than `wanted` ("" when not capped) */
    int64_t auto_tokens;     /* auto: the token count the rule used (the run's smallest) */
    double expected_experts; /* auto: distinct experts one forward is expected to read there */
    double forward_bytes;    /* auto: the weight bytes one forward is expected to read there */
    double layer_bytes;      /* all weights of one layer in this format */
    double expert_bytes;     /* one routed expert's weights in this format */
} bench_format_plan;

typedef struct bench_plan {
    bench_format_plan f[BENCH_MAX_FORMATS];
    size_t n;
    int64_t max_layers;     /* most layers of any format: the size of the input pool */
    uint64_t llc_bytes;     /* last-level cache the auto rule used */
    const char *llc_source; /* where that size came from (bench_llc_bytes) */
} bench_plan;

/* 1 when the device's memory is the host's (the CPU backend, lavapipe, PoCL, integrated GPUs). */
int bench_shares_host_memory(const moe_device_info *info);

/* The cache rule of --layers auto: the smallest N with (N − 1) · forward_bytes ≥ 2 · llc_bytes,
 * so that between two forwards of one layer the others read at least twice the cache and its
 * weights come from memory, as in a model. At least 2, uncapped (the caller caps it at
 * BENCH_MAX_LAYERS); forward_bytes <= 0 gives a count past any cap. */
int64_t bench_auto_layers(double forward_bytes, uint64_t llc_bytes);

/* Fills *plan for cfg on the given targets' devices, with `llc_bytes` from bench_llc_bytes.
 * Checks that the host weights (float32, once), the input pool and, per format, its layers'
 * copy (in the format's bytes) and scratch fit in the host's available memory (95% of it)
 * and in each discrete device's memory (the experts of --cpu-experts in the host's, the slots of
 * --cache-slots in the target's; a trace's steered inputs in the host's). An
 * explicit --layers N or a format that does not fit is refused: a message naming the format on
 * stderr and BENCH_EXIT_MEMORY. --layers auto is capped to what fits instead (plan->f[i].capped
 * says so). Returns 0 when it all fits. */
int bench_plan_make(const bench_config *cfg, const moe_device_info *infos, size_t n_infos, uint64_t llc_bytes,
                    const char *llc_source, bench_plan *plan);

/* With --interleave, whether the runs take one another's weights out of the last-level cache:
 * every run's layers alone (layers × layer_bytes) fit plan->llc_bytes, all runs' together do
 * not. Timed alone, each would then read its weights from the cache; timed in turn, every one
 * reads them from memory. *together: all runs' layers' bytes; *largest: one run's most. */
int bench_plan_interleave_evicts(const bench_plan *plan, double *together, double *largest);

/* Checks the plan against what the backend really stores: called once the first layer of a
 * format exists, with its arena weight bytes on the target (without f->cpu_experts' experts, with
 * f->cache_slots' slots). A
 * backend may keep a format in more bytes than the format's own (while a format's kernels are
 * missing, say, it may widen the weights at upload); then the other f->layers − 1 layers are
 * checked against the memory available now
 * (the host's, or `info`'s for a discrete device). --layers auto is capped to what fits
 * (f->capped says why); an explicit count that does not fit is refused with a message and
 * BENCH_EXIT_MEMORY. Returns 0 otherwise. */
int bench_plan_refit(const bench_config *cfg, const moe_device_info *info, double layer_bytes_stored,
                     bench_format_plan *f);

#endif /* MOE_BENCH_PLAN_H */
