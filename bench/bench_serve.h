/*
 * bench_serve.h — moe-bench's serving simulation (--serve): seeded Poisson arrivals with
 * token counts from a stated distribution, a dynamic batcher that packs queued requests up to
 * --max-batch-tokens, and --streams worker streams (one context and layer each) running real
 * forwards in real time. A request's latency runs from its arrival to the end of the forward
 * that carried it, queueing included.
 */
#ifndef MOE_BENCH_SERVE_H
#define MOE_BENCH_SERVE_H

#include "bench_runner.h"

typedef struct bench_serve_result {
    char backend[16], device[256], driver[128], isa[32];
    int device_index, threads; /* threads per stream (CPU) */
    const char *preset;
    moe_layer_desc desc;
    /* the load */
    int64_t streams, max_batch_tokens, req_tokens_mean;
    int req_dist;
    double rate, duration, slo_ms;
    uint64_t seed;
    /* what happened */
    int64_t requests, completed, unfinished, batches, tokens_offered, tokens_completed;
    double wall_s;                  /* from the start to the last result */
    double offered_tokens_per_s;    /* tokens_offered / duration */
    double throughput_tokens_per_s; /* tokens_completed / wall_s */
    double mean_batch_tokens;
    double busy_share;     /* time the streams spent in forwards / (streams · wall_s) */
    double slo_met_share;  /* of all requests; an unfinished one misses */
    bench_summary latency; /* seconds, completed requests */
    bench_summary forward; /* seconds per batch forward */
} bench_serve_result;

/* Runs the simulation on one target: creates cfg->streams contexts and layers (max_tokens =
 * --max-batch-tokens, experts stored in `dtype`), warms each up, then serves for --duration
 * seconds of arrivals and drains the queue (giving up on requests still queued 2·duration + 5 s
 * after the start). Returns 0 or an exit status. */
int bench_serve_run(const bench_config *cfg, const bench_target *target, moe_dtype dtype,
                    const bench_data *data, bench_progress *bar, bench_serve_result *out);

#endif /* MOE_BENCH_SERVE_H */
