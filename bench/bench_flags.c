/*
 * bench_flags.c — moe-bench's command line: the defaults (the headline shape), the option
 * table handed to the table-driven parser (bench_argparse.c), the usage text, and the checks of
 * combinations the parser cannot see one option at a time. --preset NAME is applied before
 * the other flags, whatever their order, so an explicit flag always overrides the preset.
 */
#include "bench_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_OPTS = 72 };

bench_config bench_default_config(void)
{
    bench_config c = {
        .preset = -1,
        .backend = MOE_BACKEND_AUTO,
        .device = -1,
        .tokens = 512,
        .d_model = 1024,
        .d_ff = 2816,
        .experts = 8,
        .top_k = 2,
        .activation = MOE_ACTIVATION_SWIGLU,
        .score = MOE_SCORE_SOFTMAX,
        .warmup = 2,
        .min_time = 1.0,
        .seed = 42,
        .rate = 20.0,
        .duration = 5.0,
        .slo_ms = 250.0,
        .max_batch_tokens = 512,
        .streams = 1,
        .req_tokens = 16,
        .req_dist = BENCH_REQ_GEOMETRIC,
        .cache_policy = -1,   /* not given: LRU */
        .cache_min_rows = -1, /* not given: 0 */
        .trace_reuse = -1.0,  /* no generated trace */
    };
    return c;
}

const bench_choice bench_backend_choices[] = {{"auto", MOE_BACKEND_AUTO},     {"all", BENCH_BACKEND_ALL},
                                              {"cpu", MOE_BACKEND_CPU},       {"vulkan", MOE_BACKEND_VULKAN},
                                              {"opencl", MOE_BACKEND_OPENCL}, {NULL, 0}};
const bench_choice bench_activation_choices[] = {{"swiglu", MOE_ACTIVATION_SWIGLU},
                                                 {"geglu", MOE_ACTIVATION_GEGLU},
                                                 {"relu", MOE_ACTIVATION_RELU},
                                                 {"gelu", MOE_ACTIVATION_GELU},
                                                 {"swiglu-oai", MOE_ACTIVATION_SWIGLU_OAI},
                                                 {NULL, 0}};
const bench_choice bench_score_choices[] = {
    {"softmax", MOE_SCORE_SOFTMAX}, {"sigmoid", MOE_SCORE_SIGMOID}, {NULL, 0}};
const bench_choice bench_group_score_choices[] = {
    {"top2-sum", MOE_GROUP_SCORE_TOP2_SUM}, {"max", MOE_GROUP_SCORE_MAX}, {NULL, 0}};
const bench_choice bench_drop_choices[] = {
    {"zero", MOE_DROP_ZERO}, {"passthrough", MOE_DROP_PASSTHROUGH}, {NULL, 0}};
const bench_choice bench_cache_policy_choices[] = {{"lru", MOE_CACHE_LRU}, {"lfu", MOE_CACHE_LFU}, {NULL, 0}};
const bench_choice bench_home_choices[] = {{"target", BENCH_HOME_TARGET}, {"cpu", BENCH_HOME_CPU}, {NULL, 0}};
const bench_choice bench_ep_choices[] = {{"weak", BENCH_EP_WEAK}, {"strong", BENCH_EP_STRONG}, {NULL, 0}};
const bench_choice bench_req_dist_choices[] = {{"geometric", BENCH_REQ_GEOMETRIC},
                                               {"uniform", BENCH_REQ_UNIFORM},
                                               {"fixed", BENCH_REQ_FIXED},
                                               {NULL, 0}};

/* The preset names as choices, built from the preset table on first use. */
static const bench_choice *preset_choices(void)
{
    static bench_choice choices[64];
    if (!choices[0].name) {
        int n = 0;
        for (int i = 0; i < bench_n_presets && n < 63; i++)
            choices[n++] = (bench_choice){bench_presets[i].name, i};
        choices[n] = (bench_choice){NULL, 0};
    }
    return choices;
}

#define SIZE_MAX_OPT (INT64_C(1) << 40)
/* clang-format off */
#define OPT_INT(name, field, meta, lo, hi, zero, help) \
    {name, BENCH_OPT_INT64, &c->field, meta, lo, hi, 0.0, NULL, zero, help}
#define OPT_NUM(name, field, meta, gt, zero, help) \
    {name, BENCH_OPT_DOUBLE, &c->field, meta, 0, 0, gt, NULL, zero, help}
#define OPT_CHOICE(name, field, choices, help) \
    {name, BENCH_OPT_CHOICE, &c->field, NULL, 0, 0, 0.0, choices, NULL, help}
#define OPT_FLAG(name, field, help) \
    {name, BENCH_OPT_FLAG, &c->field, NULL, 0, 0, 0.0, NULL, NULL, help}
/* clang-format on */

/* The option table; its rows point into *c. Returns the number of rows. */
static size_t bench_options(bench_config *c, bench_opt opts[MAX_OPTS])
{
    const bench_opt table[] = {
        {"preset", BENCH_OPT_CHOICE, &c->preset, "NAME", 0, 0, 0.0, preset_choices(), "none",
         "a real model's layer shape and routing (--list-presets); later flags override it"},
        OPT_FLAG("list-presets", list_presets, "list the presets and exit"),
        OPT_CHOICE("backend", backend, bench_backend_choices,
                   "backend; auto tries Vulkan, OpenCL, CPU (env MOE_BACKEND overrides); all runs every "
                   "backend with a device, side by side"),
        {"device", BENCH_OPT_STRING, &c->device_arg, "N|NAME|TYPE", 0, 0, 0.0, NULL, "0 (all: every device)",
         "device: an index within the backend's list, a name substring (name:TEXT to be explicit) or a "
         "type (discrete, integrated, virtual, cpu, other; joined by '+'); with all, every matching device"},
        OPT_INT("threads", threads, "N", 0, 65536, "all cores", "CPU backend worker threads"),
        OPT_INT("tokens", tokens, "T", 1, SIZE_MAX_OPT, NULL, "tokens per forward"),
        {"sweep-tokens", BENCH_OPT_LIST, &c->sweep_tokens, "T1,T2,..", 1, SIZE_MAX_OPT, 0.0, NULL, "off",
         "run each token count in turn (decode-to-prefill curve); replaces --tokens"},
        OPT_INT("d-model", d_model, "D", 1, SIZE_MAX_OPT, NULL, "hidden size"),
        OPT_INT("d-ff", d_ff, "F", 1, SIZE_MAX_OPT, NULL, "routed expert intermediate size"),
        OPT_INT("experts", experts, "E", 1, SIZE_MAX_OPT, NULL, "routed experts"),
        OPT_INT("top-k", top_k, "K", 1, SIZE_MAX_OPT, NULL, "experts per token"),
        OPT_CHOICE("activation", activation, bench_activation_choices, "expert activation"),
        OPT_CHOICE("score", score, bench_score_choices, "router score function"),
        OPT_FLAG("no-renorm", no_renorm, "do not renormalise the chosen weights to sum 1"),
        OPT_INT("groups", groups, "N", 0, SIZE_MAX_OPT, "none",
                "group-limited routing: experts split into N groups"),
        OPT_INT("topk-group", topk_group, "M", 0, SIZE_MAX_OPT, "none",
                "groups kept per token (with --groups)"),
        OPT_CHOICE("group-score", group_score, bench_group_score_choices,
                   "a group's score: sum of its best two (DeepSeek-V3) or its best (V2)"),
        OPT_NUM("scale", scale, "S", 0.0, "1", "routed scaling factor, > 0"),
        OPT_INT("shared-ff", shared_ff, "F", 0, SIZE_MAX_OPT, "none", "shared expert width"),
        OPT_FLAG("shared-gate", shared_gate, "sigmoid gate on the shared expert (Qwen2-MoE)"),
        OPT_INT("capacity", capacity, "C", 0, SIZE_MAX_OPT, "unlimited",
                "expert capacity in rows; the rest are dropped (overrides --capacity-factor)"),
        OPT_NUM("capacity-factor", capacity_factor, "F", 0.0, "off",
                "capacity = ceil(F * T * k / E) at each token count (Switch: 1.25)"),
        OPT_CHOICE("drop-policy", drop_policy, bench_drop_choices,
                   "what a dropped row gives: 0 (GShard) or p*x (Hugging Face Switch)"),
        OPT_FLAG("selection-bias", selection_bias,
                 "add a random selection bias to the scores for choosing (DeepSeek-V3)"),
        OPT_FLAG("biases", biases, "a bias on the router's logits and on every expert projection (gpt-oss)"),
        OPT_NUM("hot-expert", hot_expert, "SHARE", 0.0, "off",
                "skew routing: this share (0..1] of tokens picks expert 0 first"),
        OPT_INT("warmup", warmup, "N", 0, 1000000, NULL,
                "untimed forwards first (the very first is always run, and reported apart)"),
        OPT_INT("iters", iters, "N", 1, 10000000, "until --min-time", "timed forwards"),
        OPT_NUM("min-time", min_time, "SEC", 0.0, NULL,
                "without --iters: time for at least this long and >= 5 forwards (>= 2 past 10x)"),
        OPT_INT("ref-tokens", ref_tokens, "N", 1, SIZE_MAX_OPT, "min(T, 16), fewer for wide layers",
                "tokens on which the scalar reference is timed"),
        OPT_FLAG("no-ref", no_ref, "skip the scalar reference (no speedup column)"),
        {"seed", BENCH_OPT_UINT64, &c->seed, "S", 0, 0, 0.0, NULL, NULL,
         "seed of the random weights, inputs and arrivals"},
        {"json", BENCH_OPT_STRING, &c->json_path, "FILE", 0, 0, 0.0, NULL, "none",
         "also write the results to FILE as a JSON array (bench/README.md)"},
        {"weights", BENCH_OPT_STRING, &c->weights_arg, "F1,F2,..", 0, 0, 0.0, NULL, "f32",
         "weight storage formats run side by side, each quantised at upload from the same float32 "
         "weights: f32, f16, bf16, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k, mxfp4 (any case)"},
        {"down-weights", BENCH_OPT_STRING, &c->down_weights_arg, "F", 0, 0, 0.0, NULL, "each run's --weights",
         "the routed and shared experts' down projections in format F for every --weights run but f32's (as "
         "GGUF files keep down in more bits: --weights q4_k --down-weights q6_k is a Q4_K_M layer); rows "
         "labelled q4_k+q6_k"},
        {"activations", BENCH_OPT_STRING, &c->activations_arg, "A1,A2", 0, 0, 0.0, NULL, "f32",
         "experts' input precision, run side by side: f32, and/or the opt-ins (moe_layer_desc."
         "activation_dtype) q8_0 (int8 activations; Q8_0/Q4_0/K-quant weights only) and bf16 (bfloat16 "
         "pairs; "
         "Q4_0/MXFP4/Q4_K weights only), so another format runs with f32 alone"},
        {"cpu-experts", BENCH_OPT_LIST, &c->cpu_experts, "N1,N2,..", 0, SIZE_MAX_OPT, 0.0, NULL, "off",
         "expert placement, run side by side: for each N the last N routed experts (E-N..E-1) live on a "
         "second context on the CPU backend and the rest on the target (moe_layer_create_placed; the target "
         "routes and combines); 0 is the plain moe_layer_create. Meant for a GPU target; with --backend cpu "
         "the experts go to a second CPU context, which times the placement path's own cost. Not with "
         "--serve, nor N > 0 with --async"},
        {"cache-slots", BENCH_OPT_LIST, &c->cache_slots, "S1,S2,..", 0, SIZE_MAX_OPT, 0.0, NULL, "off",
         "expert cache, run side by side: each run (format x activations x --cpu-experts) once more per "
         "entry, with S slots on the target for copies of the experts living on the CPU context "
         "(moe_placement.cache); without --cpu-experts every expert lives there. 0 is no cache; S is cut "
         "to the experts on the CPU context, and a run with none gets no cache entry. Not with --serve or "
         "--async"},
        {"home", BENCH_OPT_CHOICE, &c->home, NULL, 0, 0, 0.0, bench_home_choices, "target",
         "where a placed layer (--cpu-experts N > 0, --cache-slots) routes, runs its shared expert and "
         "combines: the target, or the CPU context (moe_placement.home), so that the target only runs "
         "its experts' products"},
        {"cache-policy", BENCH_OPT_CHOICE, &c->cache_policy, NULL, 0, 0, 0.0, bench_cache_policy_choices,
         "lru", "the cache's victim policy (moe_cache_policy; with --cache-slots)"},
        OPT_INT("cache-min-rows", cache_min_rows, "N", 0, SIZE_MAX_OPT, "0",
                "upload a missed expert only when a forward routes at least N rows to it, else run it "
                "where it lives (moe_expert_cache_desc.min_rows; 0 as 1; with --cache-slots)"),
        {"trace-reuse", BENCH_OPT_STRING, &c->trace_reuse_arg, "P", 0, 0, 0.0, NULL, "off",
         "route the timed forwards by a generated trace: each of a token's top-k experts is, with "
         "probability P (0..1), one the previous trace forward used, else any expert (bench/README.md)"},
        OPT_INT("trace-forwards", trace_forwards, "N", 1, BENCH_TRACE_MAX_FORWARDS, "64",
                "forwards in the generated trace; the timed forwards cycle through it"),
        {"trace", BENCH_OPT_STRING, &c->trace_path, "FILE", 0, 0, 0.0, NULL, "none",
         "route the timed forwards by a recorded trace (the moe-trace text format, bench/README.md)"},
        {"trace-out", BENCH_OPT_STRING, &c->trace_out, "FILE", 0, 0, 0.0, NULL, "none",
         "write the generated trace to FILE (replay it with --trace FILE)"},
        {"layers", BENCH_OPT_STRING, &c->layers_arg, "N|auto", 0, 0, 0.0, NULL, "1",
         "independent layers cycled through by the forwards, as a model's are, each with its own input; "
         "auto: enough that the weights read between two visits of a layer are 2x the last-level cache"},
        OPT_FLAG("async", async,
                 "also time the --layers layers as one chain through device buffers: submitted "
                 "asynchronously with one wait at the end, against a wait after each layer"),
        OPT_FLAG("kernel-times", kernel_times,
                 "also report each kernel's device time per timed forward, as the GPU backends time "
                 "their dispatches (Vulkan, OpenCL; the CPU backend times none). Not with --serve, "
                 "--ep or --cache-slots"),
        OPT_FLAG("interleave", interleave,
                 "time a target's runs (--weights x --activations) forward by forward in turn, each "
                 "with its layers made first and kept, so that a machine whose memory bandwidth "
                 "drifts from minute to minute touches every run alike. Not with --serve, --async, "
                 "--kernel-times, --cpu-experts N > 0, --cache-slots, --trace-reuse / --trace or --ep"),
        OPT_FLAG("no-bandwidth", no_bandwidth,
                 "do not measure the machine's read bandwidth (no % of it per result)"),
        {"ep", BENCH_OPT_CHOICE, &c->ep, "weak|strong", 0, 0, 0.0, bench_ep_choices, "off",
         "expert parallelism, run under mpirun (moe_mpi.h): each rank holds its range of the experts and "
         "brings its own tokens; weak: --tokens per rank, strong: --tokens in all, split over the ranks. "
         "Reports per rank and in total compute and exchange time, bytes and tokens/s (bench/README.md)"},
        OPT_FLAG("serve", serve, "serving simulation instead of the forward benchmark"),
        OPT_NUM("rate", rate, "R", 0.0, NULL, "serve: Poisson arrivals, requests per second"),
        OPT_NUM("duration", duration, "SEC", 0.0, NULL, "serve: requests arrive for this long"),
        OPT_CHOICE("req-dist", req_dist, bench_req_dist_choices, "serve: distribution of request tokens"),
        OPT_INT("req-tokens", req_tokens, "N", 1, SIZE_MAX_OPT, NULL,
                "serve: mean tokens per request (capped at --max-batch-tokens)"),
        OPT_INT("max-batch-tokens", max_batch_tokens, "N", 1, SIZE_MAX_OPT, NULL,
                "serve: the batcher's token budget per forward"),
        OPT_INT("streams", streams, "N", 1, 64, NULL, "serve: worker streams (one context each)"),
        OPT_NUM("slo-ms", slo_ms, "MS", 0.0, NULL, "serve: latency objective per request"),
        {"help", BENCH_OPT_HELP, NULL, NULL, 0, 0, 0.0, NULL, NULL, "show this help and exit"},
    };
    _Static_assert(sizeof table / sizeof table[0] <= MAX_OPTS, "raise MAX_OPTS");
    memcpy(opts, table, sizeof table);
    return sizeof table / sizeof table[0];
}

void bench_usage(FILE *out)
{
    bench_config defaults = bench_default_config();
    bench_opt opts[MAX_OPTS];
    const size_t n = bench_options(&defaults, opts);
    fprintf(out, "usage: " BENCH_PROG " [options]\n"
                 "Times one MoE layer forward (moe_layer_forward) on random weights scaled like a trained\n"
                 "layer, on one or every backend, and reports latency min/median/mean/stddev/p95/p99,\n"
                 "GFLOPS, tokens/s, weight GB/s (and its share of the measured read bandwidth), arena\n"
                 "peak and the speedup over the scalar reference, per weight format (--weights).\n"
                 "--serve runs a serving simulation instead. Without flags: the headline shape (T=512,\n"
                 "d_model=1024, d_ff=2816, 8 experts, top-2, SwiGLU) on the auto backend.\n"
                 "Exit status: 0 ok, 1 library error, 2 usage error, 3 the shape does not fit in memory.\n"
                 "\noptions:\n");
    bench_argparse_usage(out, opts, n);
}

/* The names of every format the library knows, "f32, f16, ..." (moe_dtype_name of 1, 2, ...). */
static void format_names(char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int v = 1; moe_dtype_name((moe_dtype)v) && n < size; v++) {
        const int w = snprintf(buf + n, size - n, "%s%s", v > 1 ? ", " : "", moe_dtype_name((moe_dtype)v));
        if (w < 0) break;
        n += (size_t)w;
    }
}

/* A comma-separated list of format names for `flag` (any case, no repeats). */
static int parse_dtype_list(const char *flag, const char *text, bench_dtype_list *out)
{
    bench_dtype_list list = {0};
    char names[128];
    format_names(names, sizeof names);
    for (const char *p = text;;) {
        const size_t len = strcspn(p, ",");
        char item[32];
        moe_dtype dt = MOE_DTYPE_DEFAULT;
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, BENCH_PROG ": %s expects comma-separated formats (%s), got '%s'\n", flag, names,
                    text);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (moe_dtype_from_name(item, &dt) != MOE_OK) {
            fprintf(stderr, BENCH_PROG ": %s: unknown format '%s' (expected %s)\n", flag, item, names);
            return -1;
        }
        for (size_t i = 0; i < list.n; i++)
            if (list.v[i] == dt) {
                fprintf(stderr, BENCH_PROG ": %s names %s twice ('%s')\n", flag, moe_dtype_name(dt), text);
                return -1;
            }
        if (list.n == BENCH_MAX_FORMATS) {
            fprintf(stderr, BENCH_PROG ": %s takes at most %d formats\n", flag, BENCH_MAX_FORMATS);
            return -1;
        }
        list.v[list.n++] = dt;
        if (p[len] == '\0') break;
        p += len + 1;
    }
    *out = list;
    return 0;
}

int bench_parse_weights(const char *text, bench_dtype_list *out)
{
    return parse_dtype_list("--weights", text, out);
}

/* --activations: each weight format runs once per entry that applies to it (to its gate/up or its down:
 * moe_dtype_takes_activations), formats outer, in the order given. */
static int expand_activations(const bench_config *c, const char *text, bench_dtype_list *list)
{
    bench_dtype_list acts = {0}, out = {0};
    if (parse_dtype_list("--activations", text, &acts)) return -1;
    for (size_t a = 0; a < acts.n; a++)
        if (acts.v[a] != MOE_DTYPE_F32 && acts.v[a] != MOE_DTYPE_Q8_0 && acts.v[a] != MOE_DTYPE_BF16) {
            fprintf(stderr, BENCH_PROG ": --activations takes f32, q8_0 and bf16, not %s\n",
                    moe_dtype_name(acts.v[a]));
            return -1;
        }
    for (size_t i = 0; i < list->n; i++)
        for (size_t a = 0; a < acts.n; a++) {
            if (!moe_dtype_takes_activations(list->v[i], acts.v[a]) &&
                !moe_dtype_takes_activations(bench_down_dtype(c, list->v[i]), acts.v[a]))
                continue;
            if (out.n == BENCH_MAX_FORMATS) {
                fprintf(stderr, BENCH_PROG ": --weights x --activations make more than %d runs\n",
                        BENCH_MAX_FORMATS);
                return -1;
            }
            out.v[out.n] = list->v[i];
            out.act[out.n++] = acts.v[a];
        }
    if (out.n == 0) {
        fprintf(stderr,
                BENCH_PROG ": --activations %s applies to none of the --weights formats (q8_0 needs "
                           "q8_0, q4_0 or K-quant weights, bf16 q4_0, mxfp4 or q4_k, for gate/up or down)\n",
                text);
        return -1;
    }
    *list = out;
    return 0;
}

/* A list of expert counts (--cpu-experts, --cache-slots): each at most the layer's experts
 * (`too_many` says what a larger one would mean) and each once. */
static int check_expert_counts(const bench_int_list *l, int64_t n_experts, const char *flag,
                               const char *too_many)
{
    for (size_t j = 0; j < l->n; j++) {
        if (l->v[j] > n_experts) {
            fprintf(stderr, BENCH_PROG ": %s %" PRId64 " %s (%" PRId64 ")\n", flag, l->v[j], too_many,
                    n_experts);
            return -1;
        }
        for (size_t k = 0; k < j; k++)
            if (l->v[k] == l->v[j]) {
                fprintf(stderr, BENCH_PROG ": %s names %" PRId64 " twice\n", flag, l->v[j]);
                return -1;
            }
    }
    return 0;
}

/* --cpu-experts: each run so far (format x activations) once per entry, runs outer, in the
 * order given. */
static int expand_cpu_experts(const bench_int_list *counts, int64_t n_experts, bench_dtype_list *list)
{
    bench_dtype_list out = {0};
    if (check_expert_counts(counts, n_experts, "--cpu-experts",
                            "places more experts on the CPU than the layer has"))
        return -1;
    for (size_t i = 0; i < list->n; i++)
        for (size_t j = 0; j < counts->n; j++) {
            if (out.n == BENCH_MAX_FORMATS) {
                fprintf(stderr,
                        BENCH_PROG ": --weights x --activations x --cpu-experts make more than %d runs\n",
                        BENCH_MAX_FORMATS);
                return -1;
            }
            out.v[out.n] = list->v[i];
            out.act[out.n] = list->act[i];
            out.cpu_experts[out.n++] = counts->v[j];
        }
    *list = out;
    return 0;
}

/* --cache-slots: each run so far (format x activations x cpu-experts) once per entry, runs outer,
 * in the order given. An entry is cut to the run's experts on the CPU context (the library would
 * cut it: the label and the JSON say what ran), a cut that repeats an entry of the same run is
 * dropped, and a run with no experts there gets only the 0 entry (no cache: nothing to copy). */
static int expand_cache_slots(const bench_int_list *slots, int64_t n_experts, bench_dtype_list *list)
{
    bench_dtype_list out = {0};
    if (check_expert_counts(slots, n_experts, "--cache-slots", "has more slots than the layer has experts"))
        return -1;
    for (size_t j = 0; j < slots->n; j++) {
        int applies = slots->v[j] == 0;
        for (size_t i = 0; i < list->n; i++) applies |= list->cpu_experts[i] > 0;
        if (!applies) {
            fprintf(stderr,
                    BENCH_PROG ": --cache-slots %" PRId64
                               " applies to no run: --cpu-experts leaves no expert on the CPU context "
                               "for the cache to copy\n",
                    slots->v[j]);
            return -1;
        }
    }
    for (size_t i = 0; i < list->n; i++) {
        const size_t first = out.n;
        for (size_t j = 0; j < slots->n; j++) {
            int64_t s = slots->v[j];
            if (s > list->cpu_experts[i]) s = list->cpu_experts[i];
            if (s == 0 && slots->v[j] > 0) continue; /* no experts on the CPU context */
            int seen = 0;
            for (size_t k = first; k < out.n; k++) seen |= out.cache_slots[k] == s;
            if (seen) continue;
            if (out.n == BENCH_MAX_FORMATS) {
                fprintf(stderr,
                        BENCH_PROG
                        ": --weights x --activations x --cpu-experts x --cache-slots make more than "
                        "%d runs\n",
                        BENCH_MAX_FORMATS);
                return -1;
            }
            out.v[out.n] = list->v[i];
            out.act[out.n] = list->act[i];
            out.cpu_experts[out.n] = list->cpu_experts[i];
            out.cache_slots[out.n++] = s;
        }
    }
    *list = out;
    return 0;
}

int bench_trace_active(const bench_config *c)
{
    return c->trace_reuse >= 0.0 || c->trace_path != NULL;
}

int bench_trace_check_size(const bench_config *c, int64_t forwards)
{
    const double bytes = (double)forwards * (double)bench_max_tokens(c) * (double)c->d_model * sizeof(float);
    if (bytes <= BENCH_TRACE_MAX_INPUT_BYTES) return 0;
    fprintf(stderr,
            BENCH_PROG ": refusing the trace: its steered inputs (%" PRId64 " forwards x %" PRId64
                       " tokens x d_model %" PRId64 " floats) would take %.3g GiB, more than the %.3g GiB "
                       "moe-bench allows them; use fewer --trace-forwards or tokens\n",
            forwards, bench_max_tokens(c), c->d_model, bytes / 1073741824.0,
            BENCH_TRACE_MAX_INPUT_BYTES / 1073741824.0);
    return -1;
}

/* --trace-reuse P: a probability, 0 and 1 included. */
static int parse_reuse(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !(v >= 0.0 && v <= 1.0)) {
        fprintf(stderr, BENCH_PROG ": --trace-reuse expects a probability in 0..1, got '%s'\n", text);
        return -1;
    }
    *out = v;
    return 0;
}

int bench_parse_layers(const char *text, int64_t *out)
{
    const char *a = text, *b = "auto";
    while (*a && *b && tolower((unsigned char)*a) == *b) a++, b++;
    if (!*a && !*b) {
        *out = BENCH_LAYERS_AUTO;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    const long long v = text[0] >= '0' && text[0] <= '9' ? strtoll(text, &end, 10) : 0;
    if (!end || *end != '\0' || errno == ERANGE || v < 1 || v > BENCH_MAX_LAYERS) {
        fprintf(stderr, BENCH_PROG ": --layers expects a layer count 1..%d or 'auto', got '%s'\n",
                BENCH_MAX_LAYERS, text);
        return -1;
    }
    *out = v;
    return 0;
}

static bench_parse_result fail(const char *msg)
{
    fprintf(stderr, BENCH_PROG ": %s\n", msg);
    return BENCH_PARSE_ERROR;
}

/* The trace flags together, and with the others: the trace steers every token of every timed
 * forward (bench_trace.h), at one token count. */
static bench_parse_result check_trace(const bench_config *c)
{
    if (c->trace_reuse >= 0.0 && c->trace_path)
        return fail("--trace-reuse generates a trace and --trace replays one: give one of them");
    if (c->trace_forwards > 0 && c->trace_reuse < 0.0)
        return fail("--trace-forwards sets the length of a generated trace: it needs --trace-reuse (a "
                    "--trace file has its own)");
    if (c->trace_out && c->trace_reuse < 0.0)
        return fail("--trace-out writes the generated trace: it needs --trace-reuse");
    if (!bench_trace_active(c)) return BENCH_PARSE_OK;
    if (c->serve)
        return fail("--trace-reuse / --trace and --serve do not combine (a stream batches requests)");
    if (c->sweep_tokens.n > 0)
        return fail("--trace-reuse / --trace and --sweep-tokens do not combine (a trace has one token count, "
                    "--tokens)");
    if (c->hot_expert > 0.0)
        return fail("--trace-reuse / --trace and --hot-expert do not combine (both steer the routing)");
    if (c->async)
        return fail("--trace-reuse / --trace and --async do not combine (the chains run the layers' own "
                    "inputs, not the trace)");
    if (c->groups > 1 && c->topk_group < c->groups)
        return fail("--trace-reuse / --trace and group-limited routing (--topk-group < --groups) do not "
                    "combine: a token's experts from the trace may span more groups than are kept");
    if (c->trace_reuse >= 0.0 &&
        bench_trace_check_size(c, c->trace_forwards > 0 ? c->trace_forwards : BENCH_TRACE_DEFAULT_FORWARDS))
        return BENCH_PARSE_ERROR;
    return BENCH_PARSE_OK;
}

/* Checks the parsed options together. */
static bench_parse_result check(bench_config *c)
{
    char msg[384];
    if (c->device_arg) { /* the library reads the choice; an index stays moe-bench's own */
        moe_context_desc probe = {.struct_size = sizeof probe, .device_index = -1};
        if (moe_context_desc_set_device(&probe, c->device_arg) != MOE_OK) {
            snprintf(msg, sizeof msg, "--device: %s", moe_last_error());
            return fail(msg);
        }
        if (probe.device_index >= 0)
            c->device = probe.device_index;
        else
            c->device_sel = c->device_arg;
    }
    c->weights = (bench_dtype_list){.n = 1, .v = {MOE_DTYPE_F32}};
    if (c->weights_arg && bench_parse_weights(c->weights_arg, &c->weights)) return BENCH_PARSE_ERROR;
    for (size_t i = 0; i < c->weights.n; i++) c->weights.act[i] = MOE_DTYPE_F32;
    c->down_weights = MOE_DTYPE_DEFAULT;
    if (c->down_weights_arg) {
        bench_dtype_list down = {0};
        if (parse_dtype_list("--down-weights", c->down_weights_arg, &down)) return BENCH_PARSE_ERROR;
        if (down.n != 1) {
            fprintf(stderr, BENCH_PROG ": --down-weights takes one format, got '%s'\n", c->down_weights_arg);
            return BENCH_PARSE_ERROR;
        }
        c->down_weights = down.v[0];
    }
    if (c->activations_arg && expand_activations(c, c->activations_arg, &c->weights))
        return BENCH_PARSE_ERROR;
    if (c->cpu_experts.n > 0 && expand_cpu_experts(&c->cpu_experts, c->experts, &c->weights))
        return BENCH_PARSE_ERROR;
    if (c->cache_slots.n > 0) {
        /* Without --cpu-experts every expert lives on the CPU context: the cache's whole point. */
        const bench_int_list all = {.n = 1, .v = {c->experts}};
        if (c->cpu_experts.n == 0 && expand_cpu_experts(&all, c->experts, &c->weights))
            return BENCH_PARSE_ERROR;
        if (expand_cache_slots(&c->cache_slots, c->experts, &c->weights)) return BENCH_PARSE_ERROR;
    } else if (c->cache_policy >= 0 || c->cache_min_rows >= 0) {
        return fail("--cache-policy and --cache-min-rows set the expert cache: they need --cache-slots");
    }
    if (c->home == BENCH_HOME_CPU && c->cpu_experts.n == 0 && c->cache_slots.n == 0)
        return fail("--home cpu places a layer's home: it needs --cpu-experts or --cache-slots");
    if (c->trace_reuse_arg && parse_reuse(c->trace_reuse_arg, &c->trace_reuse)) return BENCH_PARSE_ERROR;
    c->layers = 1;
    if (c->layers_arg && bench_parse_layers(c->layers_arg, &c->layers)) return BENCH_PARSE_ERROR;
    /* A block format stores each weight row (the reduction dimension: d_model for gate/up, d_ff and
     * the shared expert's width for down, in --down-weights' format where given) in whole blocks;
     * refused here, before anything is allocated. */
    for (size_t i = 0; i < c->weights.n; i++) {
        const moe_dtype in = c->weights.v[i], down = bench_down_dtype(c, in);
        const char *down_flag = down == in ? "--weights" : "--down-weights";
        const struct {
            const char *flag, *format_flag;
            moe_dtype dt;
            int64_t v;
        } dims[] = {{"--d-model", "--weights", in, c->d_model},
                    {"--d-ff", down_flag, down, c->d_ff},
                    {"--shared-ff", down_flag, down, c->shared_ff}};
        for (size_t j = 0; j < sizeof dims / sizeof dims[0]; j++) {
            const int64_t block = moe_dtype_block_size(dims[j].dt);
            if (block <= 1 || dims[j].v % block == 0) continue; /* --shared-ff 0 (none) passes */
            snprintf(msg, sizeof msg,
                     "%s %s stores each weight row in blocks of %" PRId64
                     " values, so %s must be %s of %" PRId64 ", but %s is %" PRId64,
                     dims[j].format_flag, moe_dtype_name(dims[j].dt), block,
                     j == 0 ? "d_model (gate/up's rows)" : "d_ff and the shared expert's width (down's rows)",
                     j == 0 ? "a multiple" : "multiples", block, dims[j].flag, dims[j].v);
            return fail(msg);
        }
    }
    for (size_t i = 0; c->serve && i < c->weights.n; i++)
        if (c->weights.act[i] != MOE_DTYPE_F32)
            return fail("--activations q8_0 or bf16 and --serve do not combine");
    /* A serving stream makes its own plain layer, and a placed layer has no asynchronous
     * forward (moe_layer_forward_async is MOE_ERROR_UNSUPPORTED for it). */
    if (c->serve && c->cache_slots.n > 0) return fail("--cache-slots and --serve do not combine");
    if (c->serve && c->cpu_experts.n > 0) return fail("--cpu-experts and --serve do not combine");
    for (size_t i = 0; c->async && i < c->weights.n; i++)
        if (c->weights.cache_slots[i] > 0)
            return fail("--async and --cache-slots do not combine (a layer with an expert cache is placed on "
                        "several contexts, and such a layer has no asynchronous forward)");
    for (size_t i = 0; c->async && i < c->weights.n; i++)
        if (c->weights.cpu_experts[i] > 0)
            return fail("--async and --cpu-experts N > 0 do not combine (a layer placed on several contexts "
                        "has no asynchronous forward)");
    if (c->serve && c->layers != 1)
        return fail("--layers and --serve do not combine (a stream runs one layer)");
    if (c->serve && c->async)
        return fail("--async and --serve do not combine (--async times a chain of layers)");
    /* The kernels' times arrive through a context's log, summed on moe-bench's one thread: a
     * serving stream's worker, an expert cache's upload thread and other ranks would log beside
     * it. */
    if (c->kernel_times && (c->serve || c->ep || c->cache_slots.n > 0))
        return fail("--kernel-times does not combine with --serve, --ep or --cache-slots (it times the "
                    "kernels of one context's forwards, on the calling thread)");
    if (c->interleave) {
        /* One plain layer per run, on the calling thread: a run's extra timings (chains, kernel
         * logs, another context's experts, a trace's steered inputs) would interleave too. */
        int placed = 0;
        for (size_t i = 0; i < c->weights.n; i++) placed |= c->weights.cpu_experts[i] > 0;
        const struct {
            int given;
            const char *what;
        } refused[] = {{c->serve, "--serve"},
                       {c->async, "--async"},
                       {c->kernel_times, "--kernel-times"},
                       {placed, "--cpu-experts N > 0"},
                       {c->cache_slots.n > 0, "--cache-slots"},
                       {bench_trace_active(c), "--trace-reuse / --trace"},
                       {c->ep, "--ep"}};
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
            if (refused[i].given) {
                snprintf(
                    msg, sizeof msg,
                    "%s and --interleave do not combine (--interleave times plain layers of one context, "
                    "forward by forward)",
                    refused[i].what);
                return fail(msg);
            }
    }
    if (c->ep) {
        /* One plain layer per rank and format: what a placed, cached, chained or served layer would
         * add is measured by their own modes. */
        const struct {
            int given;
            const char *what;
        } refused[] = {{c->serve, "--serve"},
                       {c->cpu_experts.n > 0, "--cpu-experts"},
                       {c->cache_slots.n > 0, "--cache-slots"},
                       {c->async, "--async"},
                       {bench_trace_active(c), "--trace-reuse / --trace"},
                       {c->backend == BENCH_BACKEND_ALL, "--backend all"}};
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
            if (refused[i].given) {
                snprintf(msg, sizeof msg,
                         "%s and --ep do not combine (--ep times one plain layer per rank on one backend)",
                         refused[i].what);
                return fail(msg);
            }
    }
    if (c->top_k > c->experts) {
        snprintf(msg, sizeof msg, "--top-k (%" PRId64 ") must not exceed --experts (%" PRId64 ")", c->top_k,
                 c->experts);
        return fail(msg);
    }
    if (c->groups > 1) {
        if (c->experts % c->groups != 0) {
            snprintf(msg, sizeof msg, "--groups (%" PRId64 ") must divide --experts (%" PRId64 ")", c->groups,
                     c->experts);
            return fail(msg);
        }
        if (c->topk_group < 1 || c->topk_group > c->groups) {
            snprintf(msg, sizeof msg, "--topk-group must be in 1..%" PRId64 " with --groups %" PRId64,
                     c->groups, c->groups);
            return fail(msg);
        }
        if (c->top_k > c->topk_group * (c->experts / c->groups))
            return fail("--top-k exceeds the experts in the kept groups (--topk-group x experts per group)");
    } else if (c->topk_group > 1) {
        return fail("--topk-group needs --groups N with N > 1");
    }
    if (c->shared_gate && c->shared_ff == 0) return fail("--shared-gate needs --shared-ff F");
    if (c->biases && c->selection_bias)
        return fail("--biases and --selection-bias do not combine (the router's bias is in its logits, "
                    "a selection bias only chooses: moe_layer_desc has one or the other)");
    if (c->hot_expert > 1.0) return fail("--hot-expert is a share of tokens: it must be in (0, 1]");
    if (c->serve && c->sweep_tokens.n > 0) return fail("--sweep-tokens and --serve do not combine");
    if (c->serve && c->req_tokens > c->max_batch_tokens) {
        snprintf(msg, sizeof msg,
                 "--req-tokens (%" PRId64 ") must not exceed --max-batch-tokens (%" PRId64 ")", c->req_tokens,
                 c->max_batch_tokens);
        return fail(msg);
    }
    const bench_parse_result tr = check_trace(c);
    if (tr != BENCH_PARSE_OK) return tr;
    const int64_t max_t = bench_max_tokens(c);
    if (c->ref_tokens > max_t) {
        snprintf(msg, sizeof msg,
                 "--ref-tokens (%" PRId64 ") must not exceed the largest token count (%" PRId64 ")",
                 c->ref_tokens, max_t);
        return fail(msg);
    }
    return BENCH_PARSE_OK;
}

bench_parse_result bench_config_parse(bench_config *cfg, int argc, char **argv)
{
    bench_opt opts[MAX_OPTS];
    /* First pass: every flag into a scratch config, which reports every bad flag and finds
     * the preset; second pass: defaults, the preset, then the flags again on top. */
    bench_config first = bench_default_config();
    size_t n = bench_options(&first, opts);
    bench_parse_result r = bench_argparse(opts, n, argc, argv, BENCH_PROG);
    if (r == BENCH_PARSE_HELP) {
        bench_usage(stdout);
        return r;
    }
    if (r != BENCH_PARSE_OK) return r;
    *cfg = bench_default_config();
    bench_preset_apply(cfg, first.preset);
    n = bench_options(cfg, opts);
    r = bench_argparse(opts, n, argc, argv, BENCH_PROG);
    if (r != BENCH_PARSE_OK) return r;
    if (cfg->list_presets) return BENCH_PARSE_OK;
    return check(cfg);
}
