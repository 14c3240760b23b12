/*
 * bench_runner.h — the measuring half of moe-bench: the host data (weights and inputs, made
 * once per run), the list of (backend, device) targets, the timed forwards of one target at
 * one token count over one or more layers, and the scalar reference. What a measurement
 * produces is a bench_result; bench_report.h prints it. The memory guard is bench_plan.h's.
 */
#ifndef MOE_BENCH_RUNNER_H
#define MOE_BENCH_RUNNER_H

#include "bench_config.h"
#include "bench_trace.h"
#include "bench_util.h"

#include "moe.h"

#include <stddef.h>
#include <stdint.h>

/* Host copies of all weights (float32, shared by every format and layer), an input pool of
 * max-tokens rows per layer, and the output. */
typedef struct bench_data {
    float *router, *router_bias, *gate, *up, *down;
    float *gate_bias, *up_bias, *down_bias; /* --biases (gpt-oss) */
    float *shared_gate, *shared_up, *shared_down, *shared_expert_gate;
    float *x, *y;
    int64_t rows;       /* rows of y, and of each layer's input */
    int64_t layers;     /* inputs in x: layer i reads rows [i·rows, (i+1)·rows) */
    int64_t hot_tokens; /* rows of layer 0's input pushed to expert 0 by --hot-expert */
    /* --trace-reuse / --trace: the trace, and the inputs steered to route as it says,
     * [forwards][rows][d_model] (bench_trace_inputs; owned). The timed forwards read these
     * instead of x: trace forward f for every layer of the cycle, then f + 1. */
    const bench_trace *trace;
    float *trace_x;
    int trace_exact; /* the steering rows were the router's dual basis (bench_trace.h) */
} bench_data;

/* Layer i's input, rows x d_model floats (layer 0's is the one the reference runs on). */
const float *bench_data_x(const bench_data *b, int64_t layer, int64_t d_model);

/* One (backend, device) to run on. */
typedef struct bench_target {
    moe_backend_kind kind; /* AUTO only for --backend auto */
    int device;            /* with sel: the index among the devices sel leaves */
    const char *sel;       /* --device's name or type, or NULL */
} bench_target;

enum { BENCH_MAX_TARGETS = 32 };

/* The targets --backend/--device select. For `all`, a backend that is not built or has no
 * device is skipped and named in `note` (e.g. "vulkan: not built"). Returns the count; 0
 * with a message on stderr when nothing can run. */
size_t bench_targets(const bench_config *cfg, bench_target *out, size_t cap, char *note, size_t note_size);

/* Device info of a context, and the CPU ISA level read from the driver string ("avx2"),
 * "-" for a GPU backend. */
void bench_isa_from_driver(const char *driver, char *isa, size_t size);

/* Allocates and fills the data with the seed (see bench_data), with inputs for `layers`
 * layers (layer 0's are the same whatever the count). Returns 0 or an exit status. */
int bench_data_make(const bench_config *cfg, const moe_layer_desc *d, int64_t layers, bench_data *b);
void bench_data_free(bench_data *b);
moe_layer_weights bench_data_weights(const bench_data *b);

/* Reports a failed library call with its status and detail; returns BENCH_EXIT_LIBRARY. */
int bench_library_error(const char *what, moe_status st, const moe_context *ctx);

/* Creates a context on a target, with cfg's threads (or `threads` when > 0). */
int bench_context_create(const bench_target *t, int64_t threads, moe_context **out, moe_device_info *info);

/* --kernel-times: each kernel's device time, from the message the GPU backends log at DEBUG
 * level for every dispatch of a forward they timed ("vulkan: NAME  X ms"; vk_submit.c,
 * cl_steps.c), summed by name over the timed forwards. bench_kernel_times_enable, before any
 * context is made, has bench_context_create's contexts log to it. */
enum { BENCH_MAX_KERNELS = 24, BENCH_KERNEL_NAME = 24 };
typedef struct bench_kernel_times {
    int n; /* kernels seen, in the order first seen; 0: the backend logged none */
    char name[BENCH_MAX_KERNELS][BENCH_KERNEL_NAME];
    double ms[BENCH_MAX_KERNELS];    /* device ms per forward: summed over the timed forwards / their count */
    double calls[BENCH_MAX_KERNELS]; /* dispatches per forward */
} bench_kernel_times;
void bench_kernel_times_enable(void);

/* Everything measured for one (target, weight format, token count). Times are in seconds. */
typedef struct bench_result {
    char backend[16], device[256], driver[128], isa[32];
    int device_index, threads;
    int shares_host_memory; /* the device's memory is the host's: the read bandwidth bounds it */
    const char *preset;
    moe_layer_desc desc; /* d_model, d_ff, ..., the capacity at this T, weight_dtype */
    int64_t layers;      /* layers cycled through, one forward each in turn */
    int interleaved;     /* --interleave: the runs timed in turn with this one (itself included),
                            0 without; arena_weights_bytes is then this run's layers' alone */
    int layers_auto;     /* the count came from --layers auto */
    int64_t cpu_experts; /* routed experts on a CPU context (--cpu-experts), 0: all on the target */
    /* --cache-slots: the expert cache on the target (0 slots: none), and what it did over the
     * timed forwards, summed over the layers (moe_layer_get_cache_stats after minus before). */
    int64_t cache_slots, cache_min_rows;
    int cache_policy; /* moe_cache_policy */
    int home;         /* a placed layer's home: BENCH_HOME_TARGET or BENCH_HOME_CPU */
    int64_t cache_hits, cache_misses, cache_uploads, cache_evictions;
    double cache_upload_bytes, cache_upload_ms;
    size_t cache_bytes; /* what the slots take on the target, all layers */
    /* Device ms per timed forward on each context: [0] the target, [1] the CPU context
     * (moe_layer_get_context_ms after minus before, summed over the layers, over the timed
     * forwards); a plain layer's [0] is its mean device_ms and [1] 0. has_context_ms 0: none
     * (a plain layer on a backend that reports no device time). */
    int has_context_ms;
    double context_ms[2];
    /* A placed layer's context_ms forward by forward (each layer's moe_layer_get_context_ms
     * around its own forward): the median and p95 over the timed forwards, on each context, to
     * tell a context that is slow every forward from one with a tail. has_context_dist 0: not a
     * placed run. */
    int has_context_dist;
    double context_median_ms[2], context_p95_ms[2];
    /* The routing trace the timed forwards followed: trace_reuse >= 0 generated (--trace-reuse),
     * trace_file non-NULL replayed (--trace); trace_forwards its length. */
    double trace_reuse;
    const char *trace_file;
    int64_t trace_forwards;
    double hot_expert;
    int64_t tokens, warmup;
    bench_summary wall;     /* host clock around each moe_layer_forward */
    bench_summary dev_time; /* moe_forward_stats.device_ms, in seconds */
    /* The first forward of this layer at this T, timed apart from the statistics: on a cold
     * cache it compiles the kernels (pipelines, programs) and allocates scratch, which is
     * host time outside device_ms. first_device is 0 when the backend gives no device time. */
    double first_wall, first_device;
    /* Wall seconds moe_layer_create (moe_layer_create_placed) took for this run's `layers` layers
     * from the host's float32 weights: the library converting them to the format, packing them for
     * the CPU's kernels or staging them to a device. What loading such layers costs. */
    double create_seconds;
    double flops;             /* per forward */
    double weight_read_bytes; /* weight bytes a forward reads, in the layer's formats: the mean
                                 over the layers of bench_forward_weight_bytes, from one
                                 untimed forward of each */
    double experts_active;    /* experts with >= 1 row in a forward, mean over the layers */
    int64_t max_expert_rows;  /* most rows of one expert in one forward, over the layers */
    double dropped_rows;      /* rows dropped by capacity in a forward, mean over the layers */
    size_t arena_peak_bytes, arena_weights_bytes, arena_scratch_bytes; /* weights: every layer */
    double read_bw_gbs; /* the machine's measured read bandwidth (bench_machine.h), 0 = none */
    int has_ref;
    int64_t ref_tokens;
    double ref_seconds;                   /* median seconds of the reference on ref_tokens */
    double ref_scaled_seconds;            /* scaled linearly to `tokens` */
    double ref_max_abs_diff, ref_max_abs; /* on the first ref_tokens rows, at the largest T,
                                             against the reference on the float32 weights */
    double ref_rel_l2;    /* ‖y − y_ref‖/‖y_ref‖ against the reference on the format's own
                             weights: the kernels' error (NaN: the reference failed) */
    double format_rel_l2; /* the same against the float32 reference: the kernels' error plus
                             what the format rounds away (the quality it costs) */
    double act_rel_l2;    /* int8 activations: against the reference on the format's weights with
                             float32 activations (what the int8 rounding costs) */
    int ref_compared;
    /* --async: the `layers` layers as one chain of forwards through device buffers (layer i on
     * its own input, all into one output buffer), seconds per chain: a wait after every layer
     * (moe_layer_forward_buffers) and one wait at the end (moe_layer_forward_async), timed
     * alternately. n = 0 without --async. */
    bench_summary chain_waits, chain_one_wait;
    int has_kernels; /* --kernel-times */
    bench_kernel_times kernels;
} bench_result;

/* Weight bytes one forward reads, in d's storage formats: the fixed weights plus one expert's
 * weights for every expert that received at least one (token, slot) row. */
double bench_forward_weight_bytes(const moe_layer_desc *d, const int32_t *expert_counts);

/* The scalar reference on the first n tokens (at the largest token count's descriptor):
 * median seconds of a few runs, and its output in y_ref[n][d_model]. */
typedef struct bench_reference {
    int64_t tokens;
    int runs;
    double seconds;
    float *y; /* owned */
} bench_reference;

int bench_reference_run(const bench_config *cfg, const moe_layer_desc *d, const bench_data *b,
                        bench_reference *r);
/* Default reference tokens: min(T, 16), and no more than a budget of ~1 GFLOP. */
int64_t bench_default_ref_tokens(const moe_layer_desc *d, int64_t max_tokens);

/* Progress of the whole run, for bench_progress: points done of n_points. */
typedef struct bench_run_progress {
    bench_progress *bar;
    size_t point, n_points;
    char label[96];
} bench_run_progress;

/* Measures one target at one token count on existing layers (n_layers >= 1, layer i reading
 * input i of the pool), cycled in order, one forward of one layer per iteration: the first
 * forward (layer 0), warm-up, timed forwards (wall and device time), one forward of each
 * layer with per-expert counts, arena stats. y of layer 0's forward on its input is left in
 * b->y. With a trace (b->trace_x) the forwards follow it (bench_data), its routing is checked
 * on layer 0 after the warm-up, and the routing figures are the trace's. The caller sets
 * r->cpu_experts and r->cache_slots first: a placed layer's context times (and a cached one's
 * cache counts) over the timed forwards are read. Fills *r (except the device, layer-count,
 * placement and reference fields); returns 0 or an exit status. */
int bench_measure(const bench_config *cfg, moe_context *ctx, moe_layer *const *layers, int64_t n_layers,
                  const moe_layer_desc *d, int64_t tokens, bench_data *b, bench_run_progress *prog,
                  bench_result *r);

/* Called by bench_measure_interleaved as each run's figures are complete (b->y then holds its
 * layer 0's output on its input, as after bench_measure); returns 0 or an exit status. */
typedef int (*bench_result_fn)(void *user, size_t run, bench_result *r);

/* --interleave: n_runs runs of one context (plain layers: run k has layers[k][0..n_layers[k])
 * of d[k]), each warmed up as bench_measure does, then timed one forward of each in turn until
 * every run's series is done, so that a machine whose speed drifts touches each alike. Then for
 * each run in order what bench_measure does after its timed forwards, and finished(user, k,
 * &r[k]). r[k].interleaved is n_runs. Returns 0 or an exit status. */
int bench_measure_interleaved(const bench_config *cfg, moe_context *ctx, moe_layer **const *layers,
                              const int64_t *n_layers, const moe_layer_desc *d, size_t n_runs, int64_t tokens,
                              bench_data *b, bench_run_progress *prog, bench_result *r,
                              bench_result_fn finished, void *user);

#endif /* MOE_BENCH_RUNNER_H */
