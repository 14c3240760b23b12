/*
 * bench_trace.h — routing traces for moe-bench: which top-k experts every token of every forward
 * picks, generated with a tunable temporal locality (--trace-reuse) or read from a file (--trace),
 * written out (--trace-out), and turned into inputs that make the layer route exactly so. An
 * expert cache is only worth measuring on routing that repeats itself the way a model's does from
 * one decode step to the next; random inputs route uniformly and independently, and the same
 * input every visit repeats perfectly. A trace sits between, by a known amount.
 *
 * The text format (bench/README.md):
 *   moe-trace 1 <n_experts> <top_k> <tokens>
 *   e,e,..;e,e,..;...        one line per forward: its tokens separated by ';', each token's
 *   ...                      top_k distinct experts (0..n_experts-1) separated by ','
 * Lines starting with '#' are comments; no blank lines, no spaces; a final newline is optional.
 */
#ifndef MOE_BENCH_TRACE_H
#define MOE_BENCH_TRACE_H

#include "bench_config.h"

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

typedef struct bench_trace {
    int64_t n_experts, top_k, tokens, forwards;
    int32_t *ids; /* [forwards][tokens][top_k], owned */
} bench_trace;

void bench_trace_free(bench_trace *t);

/* The generator: forward f, token t picks top_k distinct experts, each choice with probability
 * `reuse` uniform among the experts forward f-1 used (any token; those the token has already
 * picked excluded, and all experts when none is left), else uniform among all experts (again
 * without the token's earlier picks). Forward 0 has no previous one: uniform. Seeded; returns 0,
 * or -1 when out of memory. */
int bench_trace_generate(int64_t n_experts, int64_t top_k, int64_t tokens, int64_t forwards, double reuse,
                         uint64_t seed, bench_trace *out);

/* Parses the text format from text[0..len) (need not end in '\0'). `name` prefixes messages.
 * Returns 0, or -1 with "NAME:LINE: what was wrong" in err. */
int bench_trace_parse(const char *text, size_t len, const char *name, bench_trace *out, char *err,
                      size_t err_size);
/* Reads and parses a file; -1 with the reason in err. */
int bench_trace_load(const char *path, bench_trace *out, char *err, size_t err_size);
/* Writes a trace in the text format; -1 with the reason in err. */
int bench_trace_write(const char *path, const bench_trace *t, char *err, size_t err_size);
/* Checks a trace against the run's layer (experts, top-k) and token count; -1 with err. */
int bench_trace_check_shape(const bench_trace *t, int64_t n_experts, int64_t top_k, int64_t tokens, char *err,
                            size_t err_size);

/* What a trace's routing looks like: distinct experts per forward (mean), the share of a
 * forward's distinct experts that the previous forward also used (mean over forwards 1..F-1;
 * cyclic replay makes forward 0 follow F-1, which is not counted), and distinct experts over
 * the whole trace. */
typedef struct bench_trace_summary {
    double distinct_per_forward, reused_share;
    int64_t distinct_total;
} bench_trace_summary;
bench_trace_summary bench_trace_summarize(const bench_trace *t);

/* The inputs that route as the trace says, [forwards][tokens][d_model] (owned by the caller):
 * for each token a random row (uniform in ±1, like the bench's other inputs, seeded) plus
 * Σ_j L_j·m_{e_j}, where m_e is the row with r_i·m_e = [i = e] for every router row r_i — the
 * columns of R^T (R R^T)^-1 — so that expert e_j's logit rises by L_j and no other logit moves
 * (when n_experts > d_model that inverse does not exist: m_e = r_e/|r_e|², which moves the other
 * logits by the rows' overlaps too, and then a few sweeps of projections repair each row until
 * its chosen logits are within 1.5 of L_j and the others below 1.5). L_j = 8 − 2j/k falls from 8
 * with the slot j, so the chosen experts stand ~20 logit spreads (~1/3) above the rest. *exact
 * says which of the two was used. Returns 0 or an exit status (message on stderr). */
int bench_trace_inputs(const bench_config *cfg, const moe_layer_desc *d, const float *router,
                       const bench_trace *t, float **x, int *exact);

/* Routing figures of the trace's forwards, measured on a layer (bench_trace_verify). */
typedef struct bench_trace_routing {
    double weight_read_bytes; /* mean over the trace's forwards (bench_forward_weight_bytes) */
    double experts_active;    /* mean */
    int64_t max_expert_rows;  /* most rows of one expert in one forward */
    double dropped_rows;      /* mean */
} bench_trace_routing;

/* Runs every forward of the trace on `layer` (its inputs x from bench_trace_inputs) with the
 * top-k ids read back, and checks that each token's experts are the trace's (as sets: the
 * order within a token is not what a cache sees). Every layer of a run is uploaded from the same
 * host weights, so one layer's routing is every layer's. Fills *out with the routing figures of
 * the trace; returns 0, or an exit status with a message naming the forward and token. */
int bench_trace_verify(moe_layer *layer, moe_context *ctx, const moe_layer_desc *d, const bench_trace *t,
                       const float *x, bench_trace_routing *out);

#endif /* MOE_BENCH_TRACE_H */
