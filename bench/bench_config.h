/*
 * bench_config.h — what moe-bench is asked to do: the configuration the command line fills
 * (bench_flags.c), the model presets that fill it first (bench_presets.c), and the shape
 * arithmetic both the runner and the report need — the layer descriptor for a token count,
 * the FLOP count of one forward, the bytes of the weights, and the memory a run needs.
 */
#ifndef MOE_BENCH_CONFIG_H
#define MOE_BENCH_CONFIG_H

#include "bench_argparse.h"

#include "moe.h"

#include <stdint.h>
#include <stdio.h>

#define BENCH_PROG "moe-bench"

/* Exit statuses of moe-bench. */
enum {
    BENCH_EXIT_OK = 0,
    BENCH_EXIT_LIBRARY = 1, /* the library (or the host: out of memory, I/O) failed */
    BENCH_EXIT_USAGE = 2,   /* bad flags */
    BENCH_EXIT_MEMORY = 3   /* the shape does not fit in this machine's memory: refused */
};

/* --backend all: every backend moe_device_count reports devices for. */
#define BENCH_BACKEND_ALL (-1)

/* --layers: at most this many layers per format (each is its own moe_layer and arena
 * allocation, and GPU drivers bound the number of allocations), or "auto". */
enum { BENCH_MAX_LAYERS = 1024, BENCH_LAYERS_AUTO = -1 };

/* --weights f32,bf16,q4_0: the storage formats to run side by side, in the order given. */
enum { BENCH_MAX_FORMATS = 12 };
typedef struct bench_dtype_list {
    size_t n;
    moe_dtype v[BENCH_MAX_FORMATS];
    moe_dtype act[BENCH_MAX_FORMATS];       /* each run's activations (--activations): F32, or Q8_0 for
                                               a block format's int8 run */
    int64_t cpu_experts[BENCH_MAX_FORMATS]; /* each run's routed experts placed on a CPU context
                                               (--cpu-experts): the last N; 0 = none */
    int64_t cache_slots[BENCH_MAX_FORMATS]; /* each run's expert cache on the target for those
                                               experts (--cache-slots), at most cpu_experts; 0 = none */
} bench_dtype_list;

/* --ep: how the token count is read under mpirun. Weak: --tokens (each of --sweep-tokens) per
 * rank, so the total grows with the ranks; strong: the total, split over the ranks. */
enum { BENCH_EP_OFF = 0, BENCH_EP_WEAK = 1, BENCH_EP_STRONG = 2 };

/* Request token counts of the serving simulation. */
typedef enum bench_req_dist {
    BENCH_REQ_GEOMETRIC = 0, /* P(n) = p(1-p)^(n-1), p = 1/mean: many short, a long tail */
    BENCH_REQ_UNIFORM = 1,   /* uniform on 1 .. 2·mean-1 */
    BENCH_REQ_FIXED = 2      /* always mean */
} bench_req_dist;

/* Everything the command line sets. A preset fills it before the flags are applied, so an
 * explicit flag always wins over the preset. */
typedef struct bench_config {
    int preset;             /* index into the preset table, or -1 for none ("custom") */
    int backend;            /* moe_backend_kind, or BENCH_BACKEND_ALL */
    int64_t device;         /* -1: device 0 (with --backend all: every device) */
    const char *device_arg; /* --device as given: an index (into `device`), a name or a type */
    const char *device_sel; /* --device's name or type (moe_context_desc_set_device); NULL: index */
    int64_t threads;
    int64_t tokens, d_model, d_ff, experts, top_k;
    bench_int_list sweep_tokens; /* n = 0: just `tokens` */
    int activation, score, group_score, drop_policy;
    int no_renorm;
    int64_t groups, topk_group;
    double scale;
    int64_t shared_ff;
    int shared_gate;
    int64_t capacity;
    double capacity_factor; /* > 0: capacity = ceil(factor · T · k / E) at each token count */
    int selection_bias;
    int biases;        /* gpt-oss: the router's bias in the logits and biases on every expert */
    double hot_expert; /* share of tokens pushed to expert 0 as their first choice */
    int64_t warmup, iters;
    double min_time;
    int64_t ref_tokens; /* 0: min(T, 16), fewer for wide layers */
    int no_ref;
    uint64_t seed;
    const char *json_path;
    int list_presets;
    /* weight formats, layers, bandwidth */
    const char *weights_arg;      /* --weights as given; the checks parse it into `weights` */
    bench_dtype_list weights;     /* never empty after parsing: {F32} by default */
    const char *down_weights_arg; /* --down-weights F as given */
    moe_dtype down_weights;       /* the down projections' format for every non-f32 run; DEFAULT: each
                                     run's own (bench_down_dtype) */
    const char *activations_arg;  /* --activations f32,q8_0: each block format runs once per entry */
    bench_int_list cpu_experts;   /* --cpu-experts 0,32: each run once per entry (n = 0: not given) */
    bench_int_list cache_slots;   /* --cache-slots 0,8: each run once more per entry (n = 0: not given) */
    int cache_policy;             /* --cache-policy: moe_cache_policy; -1 not given (LRU) */
    int home;                     /* --home: BENCH_HOME_TARGET or BENCH_HOME_CPU, a placed layer's home */
    int64_t cache_min_rows;       /* --cache-min-rows: moe_expert_cache_desc.min_rows; -1 not given (0) */
    /* routing traces (bench_trace.h) */
    const char *trace_reuse_arg; /* --trace-reuse P as given; the checks parse it into trace_reuse */
    double trace_reuse;          /* 0..1: the generator's reuse probability; < 0: no generated trace */
    int64_t trace_forwards;      /* --trace-forwards; 0 not given (BENCH_TRACE_DEFAULT_FORWARDS). With
                                    --trace, main sets it to the file's count (the memory plan's) */
    const char *trace_path;      /* --trace FILE: replay a recorded trace */
    const char *trace_out;       /* --trace-out FILE: write the generated trace */
    const char *layers_arg;      /* --layers as given */
    int64_t layers;              /* 1..BENCH_MAX_LAYERS, or BENCH_LAYERS_AUTO */
    int no_bandwidth;            /* --no-bandwidth: skip the read-bandwidth measurement */
    int async;                   /* --async: also time the layers as one chain, one wait at the end
                                    against a wait per layer */
    int kernel_times;            /* --kernel-times: each kernel's device time per forward */
    int interleave;              /* --interleave: a target's runs timed forward by forward in turn */
    /* expert parallelism (bench_ep.h) */
    int ep; /* --ep: BENCH_EP_OFF, BENCH_EP_WEAK or BENCH_EP_STRONG */
    /* serving simulation */
    int serve;
    double rate, duration, slo_ms;
    int64_t max_batch_tokens, streams, req_tokens;
    int req_dist;
} bench_config;

/* ---- options (bench_flags.c) --------------------------------------------------------- */

/* --trace-forwards' default, and the most forwards a trace may have. */
enum { BENCH_TRACE_DEFAULT_FORWARDS = 64, BENCH_TRACE_MAX_FORWARDS = 1000000 };

/* The steered inputs of a trace are precomputed, forwards x tokens x d_model floats: at most this. */
#define BENCH_TRACE_MAX_INPUT_BYTES 1073741824.0

/* 1 when the timed forwards route by a trace (--trace-reuse or --trace). */
int bench_trace_active(const bench_config *cfg);
/* Refuses (message on stderr, -1) a trace of `forwards` forwards whose inputs exceed
 * BENCH_TRACE_MAX_INPUT_BYTES; 0 when they fit. */
int bench_trace_check_size(const bench_config *cfg, int64_t forwards);

/* The headline shape, no preset. */
bench_config bench_default_config(void);

/* Parses argv into *cfg: defaults, then the preset named by --preset, then every flag.
 * Checks the combination (top-k <= experts, groups, ...). Returns BENCH_PARSE_OK, _HELP (the
 * usage is already on stdout) or _ERROR (a message is already on stderr). */
bench_parse_result bench_config_parse(bench_config *cfg, int argc, char **argv);

/* The usage text. */
void bench_usage(FILE *out);

extern const bench_choice bench_backend_choices[];
extern const bench_choice bench_activation_choices[];
extern const bench_choice bench_score_choices[];
extern const bench_choice bench_group_score_choices[];
extern const bench_choice bench_drop_choices[];
extern const bench_choice bench_req_dist_choices[];
extern const bench_choice bench_cache_policy_choices[];
extern const bench_choice bench_ep_choices[];
enum { BENCH_HOME_TARGET, BENCH_HOME_CPU };
extern const bench_choice bench_home_choices[];

/* ---- presets (bench_presets.c) ------------------------------------------------------- */

typedef struct bench_preset {
    const char *name;  /* --preset NAME */
    const char *model; /* the Hugging Face model it is taken from */
    int64_t tokens;    /* 0: keep the default token count */
    int64_t d_model, d_ff, n_experts, top_k;
    moe_score_func score;
    int renormalize;
    int64_t n_group, topk_group;
    moe_group_score group_score;
    double scale;
    int selection_bias;
    int biases; /* router and expert biases (gpt-oss) */
    moe_activation activation;
    int64_t d_ff_shared;
    int shared_gate;
    double capacity_factor;
    moe_drop_policy drop_policy;
} bench_preset;

extern const bench_preset bench_presets[];
extern const int bench_n_presets;

/* The name of preset index i, "custom" for -1. */
const char *bench_preset_name(int i);
/* Overwrites the shape and variant fields of *cfg with preset i's. */
void bench_preset_apply(bench_config *cfg, int i);
/* Prints the preset table (name, shape, routing, model) for --list-presets. */
void bench_presets_list(FILE *out);

/* ---- shape arithmetic (bench_presets.c) ------------------------------------------------ */

/* The layer descriptor for a forward of `tokens` tokens, in a layer of `max_tokens`, storing
 * its routed and shared experts in `dtype` (the host weights are always float32, so the
 * library converts or quantises them once, at upload). */
moe_layer_desc bench_make_desc(const bench_config *cfg, int64_t tokens, int64_t max_tokens, moe_dtype dtype);
/* The format a run with weights `dtype` keeps its (routed and shared) down projections in: --down-weights
 * for every run but the float32 baseline, else dtype. */
moe_dtype bench_down_dtype(const bench_config *cfg, moe_dtype dtype);
int bench_desc_gated(const moe_layer_desc *d);

/* Parses a --weights value ("f32,BF16,q4_0": any case, no repeats) into *out. Returns 0, or
 * -1 with a message naming the flag and the bad item on stderr. */
int bench_parse_weights(const char *text, bench_dtype_list *out);
/* Parses a --layers value: "auto" (any case) gives BENCH_LAYERS_AUTO. Returns 0 or -1 (with a
 * message on stderr). */
int bench_parse_layers(const char *text, int64_t *out);

/* FLOPs of one forward (design.md): 2·T·d·E (router) + 2·T·k·d·f·m (routed experts, m = 3
 * gated, 2 otherwise) + 2·T·d·f_shared·m (shared experts) + 2·T·d (their sigmoid gate).
 * Rows dropped by capacity are still counted. */
double bench_forward_flops(const moe_layer_desc *d, int64_t tokens);

/* Bytes of a [rows][cols] matrix in `dtype` (rows × moe_dtype_row_bytes; DEFAULT = F32). */
double bench_matrix_bytes(moe_dtype dtype, int64_t rows, int64_t cols);
/* Bytes of one routed expert's weights in d->weight_dtype, and of the weights every forward
 * reads whatever the routing: the router (+ selection bias) and the shared expert's gate in
 * float32, the shared experts in d->shared_weight_dtype. */
double bench_expert_bytes(const moe_layer_desc *d);
double bench_fixed_weight_bytes(const moe_layer_desc *d);
/* Bytes of all the layer's weights, in its formats. */
double bench_all_weight_bytes(const moe_layer_desc *d);
/* Distinct experts a forward of `tokens` tokens is expected to read when each token picks
 * top_k of n_experts uniformly: E·(1 − (1 − k/E)^T), at most min(E, T·k). */
double bench_expected_experts(const moe_layer_desc *d, int64_t tokens);
/* A generous estimate of the scratch one forward of `tokens` tokens reserves. */
double bench_scratch_bytes(const moe_layer_desc *d, int64_t tokens);

/* The token counts of the run (the sweep, or the single --tokens), their maximum and minimum. */
size_t bench_token_list(const bench_config *cfg, int64_t *out, size_t cap);
int64_t bench_max_tokens(const bench_config *cfg);
int64_t bench_min_tokens(const bench_config *cfg);

#endif /* MOE_BENCH_CONFIG_H */
