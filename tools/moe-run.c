/*
 * moe-run — runs the MoE block of one layer of a checkpoint (a Hugging Face directory or a
 * GGUF file) on a float32 .npy input [T, hidden_size] and writes the float32 .npy output
 * [T, hidden_size]. Uses only the public API (moe.h). Every failure prints one message naming
 * the file (and tensor) and exits non-zero, and leaves nothing at the output path. The output
 * is written atomically, through a symbolic link to its target, and only ever to a regular
 * file (tools/npy.c).
 */
#include "npy.h"

#include <moe.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moe-run --model DIR|FILE.gguf --layer N --input X.npy --output Y.npy\n"
            "               [--backend auto|cpu|vulkan|opencl] [--device N|NAME|TYPE] [--drop-policy "
            "zero|passthrough]\n"
            "               [--weights f32|f16|bf16|q8_0|q4_0|q2_k|q3_k|q4_k|q5_k|q6_k|mxfp4]\n"
            "               [--activations f32|q8_0|bf16] "
            "[--decoder]\n"
            "               [--expert-budget-mib N] [--cache-slots N [--cache-policy lru|lfu]\n"
            "               [--cache-min-rows N]] [--usage-in U.json] [--usage-out U.json] [--batch N] "
            "[--stats]\n"
            "Runs the MoE block of layer N of the Hugging Face model in DIR (config.json +\n"
            "model.safetensors or sharded) or of the GGUF file (the first of a split) on X.npy\n"
            "(float32, [T, hidden_size], C order) and writes\n"
            "Y.npy. --weights stores the experts (routed and shared) in that format, converted or\n"
            "quantised once at load (default: the checkpoint's own dtype; q8_0 and q4_0 need the\n"
            "hidden and intermediate sizes to be multiples of 32, the K-quants multiples of 256).\n"
            "--activations q8_0 lets Q8_0 / Q4_0 / K-quant experts run on integer activations\n"
            "(opt-in: faster decode where the CPU has AVX2 or VNNI, or Arm's dot products;\n"
            "~0.5%% off the float result; moe.h, activation_dtype); --activations bf16 lets Q4_0 / MXFP4 /\n"
            "Q4_K experts run on bfloat16 pairs (opt-in: faster where the CPU has AVX512_BF16, ~4e-6 off).\n"
            "--decoder takes a\n"
            "switch_transformers decoder block; --stats prints the backend, the weights' storage\n"
            "format, the per-expert token counts, the aux loss and the z-loss. Y.npy is replaced\n"
            "atomically (a symbolic link is written through to its target); a directory, FIFO or\n"
            "device there is refused. --device picks the device: an index within --backend's list,\n"
            "a name substring (\"name:TEXT\" to be explicit) or a type (discrete, integrated,\n"
            "virtual, cpu, other; several joined by '+').\n"
            "--expert-budget-mib N keeps at most N MiB of routed experts on the chosen device (the\n"
            "first experts in index order) and the rest on the CPU, for a layer larger than the\n"
            "device's memory (moe_model_create_layer_placed); --stats then says where each went.\n"
            "--usage-out U.json saves how many rows each expert received (moe_usage_save, as layer N);\n"
            "--usage-in U.json reads such a file and fills the budget (and the cache) with the most used\n"
            "experts first. --cache-slots N adds an expert cache of N slots on the device for the experts\n"
            "on the CPU (all of them without --expert-budget-mib): a routed expert found there runs there,\n"
            "a miss is uploaded into a slot (LRU, or --cache-policy lfu; only with at least\n"
            "--cache-min-rows rows) or runs on the CPU; --stats then prints the hits, misses, uploads and\n"
            "each device's time. --batch N runs the tokens N at a time, one forward each, in order (decode:\n"
            "--batch 1), into the same Y; refused for a layer with an expert capacity, which depends on\n"
            "each forward's tokens.\n");
}

static int parse_int(const char *s, long long *out)
{
    char *end;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

typedef struct run_args {
    const char *model, *input, *output;
    long long layer;
    const char *device; /* --device: an index, a name substring or a type; NULL: the first */
    moe_backend_kind backend;
    moe_drop_policy drop;
    moe_dtype weights;     /* DEFAULT: the checkpoint's own dtype */
    moe_dtype activations; /* DEFAULT (F32), Q8_0 or BF16 */
    int decoder, stats, policy_given;
    long long budget_mib; /* --expert-budget-mib; -1: every expert on the device */
    const char *usage_in, *usage_out;
    long long cache_slots;    /* --cache-slots; 0: no expert cache */
    moe_cache_policy policy;  /* --cache-policy */
    long long cache_min_rows; /* --cache-min-rows; -1: not given */
    long long batch;          /* --batch; 0: every token in one forward */
} run_args;

/* "f32, f16, ..., q3_k or q2_k": every format the library names, in moe_dtype's order. */
static void format_names(char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    int count = 0;
    while (moe_dtype_name((moe_dtype)(count + 1))) count++;
    for (int v = 1; v <= count && n < size; v++) {
        const int w = snprintf(buf + n, size - n, "%s%s",
                               v == 1       ? ""
                               : v == count ? " or "
                                            : ", ",
                               moe_dtype_name((moe_dtype)v));
        if (w < 0) break;
        n += (size_t)w;
    }
}

static int parse_args(int argc, char **argv, run_args *a)
{
    int have_layer = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(o, "--stats")) {
            a->stats = 1;
        } else if (!strcmp(o, "--decoder")) {
            a->decoder = 1;
        } else if (!v) {
            fprintf(stderr, "moe-run: %s needs a value\n", o);
            return -1;
        } else if (!strcmp(o, "--model")) {
            a->model = v, i++;
        } else if (!strcmp(o, "--input")) {
            a->input = v, i++;
        } else if (!strcmp(o, "--output")) {
            a->output = v, i++;
        } else if (!strcmp(o, "--layer")) {
            if (parse_int(v, &a->layer) || a->layer < 0) {
                fprintf(stderr, "moe-run: --layer wants a layer index >= 0, not '%s'\n", v);
                return -1;
            }
            have_layer = 1, i++;
        } else if (!strcmp(o, "--device")) {
            moe_context_desc probe = {.struct_size = sizeof probe};
            if (moe_context_desc_set_device(&probe, v) != MOE_OK) {
                fprintf(stderr, "moe-run: --device: %s\n", moe_last_error());
                return -1;
            }
            a->device = v;
            i++;
        } else if (!strcmp(o, "--backend")) {
            const moe_backend_kind kinds[] = {MOE_BACKEND_AUTO, MOE_BACKEND_CPU, MOE_BACKEND_VULKAN,
                                              MOE_BACKEND_OPENCL};
            size_t k = 0;
            while (k < 4 && strcmp(v, moe_backend_name(kinds[k]))) k++;
            if (k == 4) {
                fprintf(stderr, "moe-run: --backend wants auto, cpu, vulkan or opencl, not '%s'\n", v);
                return -1;
            }
            a->backend = kinds[k], i++;
        } else if (!strcmp(o, "--expert-budget-mib")) {
            if (parse_int(v, &a->budget_mib) || a->budget_mib < 0 || a->budget_mib > (1LL << 40)) {
                fprintf(stderr, "moe-run: --expert-budget-mib wants a number of MiB (0 or more), not '%s'\n",
                        v);
                return -1;
            }
            i++;
        } else if (!strcmp(o, "--cache-slots")) {
            if (parse_int(v, &a->cache_slots) || a->cache_slots < 1 || a->cache_slots > INT32_MAX) {
                fprintf(stderr,
                        "moe-run: --cache-slots wants a number of expert slots (1 or more), not '%s'\n",
                        v ? v : "");
                return -1;
            }
            i++;
        } else if (!strcmp(o, "--cache-policy")) {
            if (!v || (strcmp(v, "lru") && strcmp(v, "lfu"))) {
                fprintf(stderr, "moe-run: --cache-policy wants lru or lfu, not '%s'\n", v ? v : "");
                return -1;
            }
            a->policy = strcmp(v, "lfu") ? MOE_CACHE_LRU : MOE_CACHE_LFU;
            a->policy_given = 1, i++;
        } else if (!strcmp(o, "--cache-min-rows")) {
            if (parse_int(v, &a->cache_min_rows) || a->cache_min_rows < 0 || a->cache_min_rows > INT32_MAX) {
                fprintf(stderr, "moe-run: --cache-min-rows wants a number of rows (0 or more), not '%s'\n",
                        v ? v : "");
                return -1;
            }
            i++;
        } else if (!strcmp(o, "--batch")) {
            if (parse_int(v, &a->batch) || a->batch < 1) {
                fprintf(stderr,
                        "moe-run: --batch wants a number of tokens per forward (1 or more), not '%s'\n",
                        v ? v : "");
                return -1;
            }
            i++;
        } else if (!strcmp(o, "--usage-in")) {
            a->usage_in = v, i++;
        } else if (!strcmp(o, "--usage-out")) {
            a->usage_out = v, i++;
        } else if (!strcmp(o, "--weights")) {
            if (moe_dtype_from_name(v, &a->weights) != MOE_OK) {
                char names[96];
                format_names(names, sizeof names);
                fprintf(stderr, "moe-run: --weights wants %s, not '%s'\n", names, v);
                return -1;
            }
            i++;
        } else if (!strcmp(o, "--activations")) {
            if (moe_dtype_from_name(v, &a->activations) != MOE_OK ||
                (a->activations != MOE_DTYPE_F32 && a->activations != MOE_DTYPE_Q8_0 &&
                 a->activations != MOE_DTYPE_BF16)) {
                fprintf(stderr, "moe-run: --activations wants f32, q8_0 or bf16, not '%s'\n", v);
                return -1;
            }
            i++;
        } else if (!strcmp(o, "--drop-policy")) {
            if (!strcmp(v, "zero"))
                a->drop = MOE_DROP_ZERO;
            else if (!strcmp(v, "passthrough"))
                a->drop = MOE_DROP_PASSTHROUGH;
            else {
                fprintf(stderr, "moe-run: --drop-policy wants zero or passthrough, not '%s'\n", v);
                return -1;
            }
            i++;
        } else {
            fprintf(stderr, "moe-run: unknown option '%s' (see --help)\n", o);
            return -1;
        }
    }
    if ((a->policy_given || a->cache_min_rows >= 0) && a->cache_slots == 0) {
        fprintf(stderr, "moe-run: --cache-policy and --cache-min-rows set up --cache-slots; give it too\n");
        return -1;
    }
    if (a->usage_in && a->budget_mib < 0 && a->cache_slots == 0) {
        fprintf(
            stderr,
            "moe-run: --usage-in orders the experts for --expert-budget-mib or --cache-slots; give both\n");
        return -1;
    }
    if (!a->model || !a->input || !a->output || !have_layer) {
        fprintf(stderr, "moe-run: --model, --layer, --input and --output are required (see --help)\n");
        return -1;
    }
    return 0;
}

/* Prints the failing call's status and detail and returns the exit code. */
static int fail_api(const char *what, moe_status st, const char *detail)
{
    fprintf(stderr, "moe-run: %s: %s (%s)\n", what, detail && detail[0] ? detail : "failed",
            moe_status_string(st));
    return 1;
}

/* --stats with --cache-slots: what the expert cache did over the forwards. */
static void print_cache(const moe_layer *layer, moe_context *ctx)
{
    moe_expert_cache_stats c = {.struct_size = sizeof c};
    if (moe_layer_get_cache_stats(layer, &c) != MOE_OK) return;
    const int64_t lookups = c.hits + c.misses;
    printf("cache: %lld slots on %s (%.2f MiB): %lld hits, %lld misses (hit rate %.1f%%), %lld uploads "
           "(%.2f MiB, %.3f ms), %lld evictions; rows: %lld in slots, %lld on the CPU\n",
           (long long)c.slots, moe_backend_name(moe_context_backend(ctx)), (double)c.bytes / 1048576.0,
           (long long)c.hits, (long long)c.misses, lookups ? 100.0 * (double)c.hits / (double)lookups : 0.0,
           (long long)c.uploads, (double)c.upload_bytes / 1048576.0, c.upload_ms, (long long)c.evictions,
           (long long)c.rows_cached, (long long)c.rows_elsewhere);
}

int main(int argc, char **argv)
{
    run_args a = {.backend = MOE_BACKEND_AUTO, .budget_mib = -1, .cache_min_rows = -1};
    if (parse_args(argc, argv, &a)) return 2;
    /* A bad output path fails before any work; it is resolved again when written. */
    char err[512], target[NPY_PATH_MAX];
    int exists = 0;
    if (npy_output_target(a.output, target, sizeof target, &exists, err, sizeof err)) {
        fprintf(stderr, "moe-run: %s\n", err);
        return 1;
    }

    int rc = 1;
    moe_model *model = NULL;
    moe_context *ctx = NULL, *cpu = NULL;
    moe_layer *layer = NULL;
    float *x = NULL, *y = NULL;
    int32_t *counts = NULL, *fwd_counts = NULL, *where = NULL, *order = NULL;
    int64_t *routed = NULL;
    moe_status st = moe_model_open(a.model, &model);
    if (st != MOE_OK) return fail_api("cannot open the model", st, moe_last_error());
    moe_model_info info = {.struct_size = sizeof info};
    moe_model_get_info(model, &info);

    int64_t T = 0, D = 0;
    if (npy_read_f32_matrix(a.input, info.hidden_size, &x, &T, &D, err, sizeof err)) {
        fprintf(stderr, "moe-run: %s\n", err);
        goto done;
    }
    moe_context_desc cdesc = {.struct_size = sizeof cdesc, .backend = a.backend};
    if (a.device && moe_context_desc_set_device(&cdesc, a.device) != MOE_OK) {
        fprintf(stderr, "moe-run: --device: %s\n", moe_last_error());
        rc = 2;
        goto done;
    }
    st = moe_context_create(&cdesc, &ctx);
    if (st != MOE_OK) {
        rc = fail_api("cannot create a context", st, moe_last_error());
        goto done;
    }
    /* --batch: forwards of B tokens (the last may have fewer). */
    const int64_t B = a.batch > 0 && a.batch < T ? a.batch : T;
    const moe_model_layer_options opts = {.struct_size = sizeof opts,
                                          .max_tokens = B,
                                          .drop_policy = a.drop,
                                          .decoder = a.decoder,
                                          .weight_dtype = a.weights,
                                          .shared_weight_dtype = a.weights,
                                          .activation_dtype = a.activations};
    /* The layer's shape first, in the checkpoint's own dtype: a block format the model's sizes
     * do not divide is refused here, naming the flag (exit 2, a usage error for this model),
     * rather than in the library's field names. */
    moe_model_layer_options own = opts;
    own.weight_dtype = own.shared_weight_dtype = MOE_DTYPE_DEFAULT;
    moe_layer_desc ld = {.struct_size = sizeof ld};
    st = moe_model_layer_desc(model, a.layer, &own, &ld);
    if (st != MOE_OK) {
        rc = fail_api("cannot create the layer", st, moe_last_error());
        goto done;
    }
    if (moe_dtype_block_size(a.weights) > 1) {
        const int64_t block = moe_dtype_block_size(a.weights);
        const struct {
            const char *what;
            int64_t v;
        } dims[] = {{"hidden_size", ld.d_model},
                    {"the experts' intermediate size", ld.d_ff},
                    {"the shared expert's intermediate size", ld.d_ff_shared}};
        for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
            if (dims[i].v % block == 0) continue;
            fprintf(
                stderr,
                "moe-run: --weights %s stores each weight row in blocks of %lld values, but %s of %s layer "
                "%lld is %lld, not a multiple of %lld (f32, f16 and bf16 take any size)\n",
                moe_dtype_name(a.weights), (long long)block, dims[i].what, a.model, a.layer,
                (long long)dims[i].v, (long long)block);
            rc = 2;
            goto done;
        }
    }
    if (B < T && ld.expert_capacity > 0) {
        fprintf(
            stderr,
            "moe-run: --batch %lld: layer %lld has an expert capacity (%lld rows an expert), which a forward "
            "applies to its own tokens; forwards of fewer tokens would drop other rows\n",
            a.batch, a.layer, (long long)ld.expert_capacity);
        rc = 2;
        goto done;
    }
    if (a.budget_mib >= 0 || a.cache_slots > 0) {
        /* The device's experts up to the budget (none: 0), the rest on a CPU context, and the
         * cache's slots on the device. */
        const moe_context_desc cpu_desc = {.struct_size = sizeof cpu_desc, .backend = MOE_BACKEND_CPU};
        st = moe_context_create(&cpu_desc, &cpu);
        if (st != MOE_OK) {
            rc = fail_api("cannot create the CPU context for --expert-budget-mib", st, moe_last_error());
            goto done;
        }
        moe_context *const both[2] = {ctx, cpu};
        const uint64_t budget[2] = {a.budget_mib >= 0 ? (uint64_t)a.budget_mib << 20 : 0, UINT64_MAX};
        const moe_expert_cache_desc cache = {.struct_size = sizeof cache,
                                             .context = 0,
                                             .slots = a.cache_slots,
                                             .policy = a.policy,
                                             .min_rows = a.cache_min_rows > 0 ? a.cache_min_rows : 0};
        moe_placement place = {.struct_size = sizeof place,
                               .n_contexts = 2,
                               .contexts = both,
                               .budget_bytes = budget,
                               .cache = a.cache_slots > 0 ? &cache : NULL};
        if (a.usage_in) { /* a previous run's counts: its most used experts fill the budget first */
            routed = malloc(sizeof *routed * (size_t)ld.n_experts);
            order = malloc(sizeof *order * (size_t)ld.n_experts);
            if (!routed || !order) {
                fprintf(stderr, "moe-run: out of memory\n");
                goto done;
            }
            st = moe_usage_load(a.usage_in, a.layer, ld.n_experts, routed);
            if (st == MOE_OK) st = moe_usage_expert_order(routed, ld.n_experts, order);
            if (st != MOE_OK) {
                rc = fail_api("--usage-in", st, moe_last_error());
                goto done;
            }
            place.expert_order = order;
        }
        st = moe_model_create_layer_placed(&place, model, a.layer, &opts, &layer);
    } else {
        st = moe_model_create_layer(ctx, model, a.layer, &opts, &layer);
    }
    if (st != MOE_OK) {
        rc = fail_api("cannot create the layer", st, moe_context_error(ctx));
        goto done;
    }
    y = malloc(sizeof(float) * (size_t)(T * D));
    counts = calloc((size_t)info.n_experts, sizeof *counts);
    if (!y || !counts) {
        fprintf(stderr, "moe-run: out of memory\n");
        goto done;
    }
    fwd_counts = calloc((size_t)info.n_experts, sizeof *fwd_counts);
    if (!fwd_counts) {
        fprintf(stderr, "moe-run: out of memory\n");
        goto done;
    }
    /* Each forward's stats, summed over the forwards (the losses averaged). */
    int32_t dropped = 0, fwd_dropped = 0;
    float aux = 0.0f, z = 0.0f;
    double ms = 0.0, aux_sum = 0.0, z_sum = 0.0, ms_sum = 0.0;
    moe_forward_stats stats = {.struct_size = sizeof stats,
                               .expert_counts = fwd_counts,
                               .dropped_count = &fwd_dropped,
                               .aux_loss = &aux,
                               .z_loss = &z,
                               .device_ms = &ms};
    const int64_t n_forwards = (T + B - 1) / B;
    if (a.usage_out &&
        (st = moe_layer_track_usage(layer, n_forwards < 65536 ? n_forwards : 65536)) != MOE_OK) {
        rc = fail_api("cannot track the experts' usage", st, moe_context_error(ctx));
        goto done;
    }
    for (int64_t t0 = 0; t0 < T; t0 += B) {
        const int64_t n = T - t0 < B ? T - t0 : B;
        st = moe_layer_forward(layer, n, x + t0 * D, y + t0 * D, a.stats ? &stats : NULL);
        if (st != MOE_OK) {
            rc = fail_api("forward failed", st, moe_context_error(ctx));
            goto done;
        }
        for (int64_t e = 0; a.stats && e < info.n_experts; e++) counts[e] += fwd_counts[e];
        dropped += fwd_dropped, aux_sum += aux, z_sum += z, ms_sum += ms;
    }
    /* The usage first: a failure there leaves nothing at the output path. */
    if (a.usage_out) {
        const moe_layer *const saved[1] = {layer};
        const int64_t index = a.layer;
        st = moe_usage_save(a.usage_out, saved, &index, 1);
        if (st != MOE_OK) {
            rc = fail_api("--usage-out", st, moe_last_error());
            goto done;
        }
    }
    if (npy_write_f32_matrix(a.output, y, T, D, err, sizeof err)) {
        fprintf(stderr, "moe-run: %s\n", err);
        goto done;
    }

    if (a.stats) {
        moe_device_info dev = {.struct_size = sizeof dev};
        moe_context_get_device_info(ctx, &dev);
        printf("model: %s (%s), layer %lld%s, %lld tokens, hidden %lld, %lld experts, top-%lld\n", a.model,
               info.model_type, a.layer, a.decoder ? " (decoder)" : "", (long long)T, (long long)D,
               (long long)info.n_experts, (long long)info.top_k);
        printf("backend: %s, device %d: %s (%s)\n", moe_backend_name(moe_context_backend(ctx)), dev.index,
               dev.name, dev.driver);
        const int own_dtype = a.weights == MOE_DTYPE_DEFAULT;
        printf("weights: %s", moe_dtype_name(own_dtype ? ld.weight_dtype : a.weights));
        if (own_dtype && ld.down_weight_dtype != ld.weight_dtype)
            printf(" (down: %s)", moe_dtype_name(ld.down_weight_dtype));
        if (ld.d_ff_shared > 0)
            printf(" (shared expert: %s%s%s)", moe_dtype_name(own_dtype ? ld.shared_weight_dtype : a.weights),
                   own_dtype && ld.shared_down_weight_dtype != ld.shared_weight_dtype ? ", down: " : "",
                   own_dtype && ld.shared_down_weight_dtype != ld.shared_weight_dtype
                       ? moe_dtype_name(ld.shared_down_weight_dtype)
                       : "");
        printf("%s\n", a.weights == MOE_DTYPE_DEFAULT ? " (the checkpoint's own)" : "");
        const moe_dtype ran = moe_layer_activation_dtype(layer);
        printf("activations: %s%s", moe_dtype_name(ran),
               a.activations == MOE_DTYPE_Q8_0 && ran != MOE_DTYPE_Q8_0
                   ? " (q8_0 asked for: no integer path here for these weights)"
               : a.activations == MOE_DTYPE_BF16 && ran != MOE_DTYPE_BF16
                   ? " (bf16 asked for: no bfloat16-pair path here for these weights; it needs Q4_0, "
                     "MXFP4 or Q4_K and a CPU with AVX512_BF16)"
                   : "");
        /* An opt-in runs on each product whose format takes it: say which of the routed experts' did not. */
        const moe_dtype in_fmt = own_dtype ? ld.weight_dtype : a.weights,
                        down_fmt = own_dtype ? ld.down_weight_dtype : a.weights;
        if (ran != MOE_DTYPE_F32)
            for (int p = 0; p < 2; p++) {
                const moe_dtype f = p ? down_fmt : in_fmt;
                if (!moe_dtype_takes_activations(f, ran))
                    printf(" (the routed experts' %s, %s, on f32: no %s path for it)", p ? "down" : "gate/up",
                           moe_dtype_name(f), moe_dtype_name(ran));
            }
        printf("\n");
        where = calloc((size_t)info.n_experts, sizeof *where);
        if (cpu && where && moe_layer_get_placement(layer, where) == MOE_OK) {
            int64_t on_cpu = 0;
            for (int64_t e = 0; e < info.n_experts; e++) on_cpu += where[e] == 1;
            printf("placement: %lld experts on %s (budget %lld MiB), %lld on the CPU:",
                   (long long)(info.n_experts - on_cpu), moe_backend_name(moe_context_backend(ctx)),
                   a.budget_mib > 0 ? a.budget_mib : 0, (long long)on_cpu);
            for (int64_t e = 0; e < info.n_experts; e++) printf(" %s", where[e] == 1 ? "c" : "d");
            printf("\n");
        }
        if (a.cache_slots > 0) print_cache(layer, ctx);
        if (cpu) {
            double per[2] = {0.0, 0.0};
            if (moe_layer_get_context_ms(layer, 2, per) == MOE_OK)
                printf("device time: %s %.3f ms (routing, combine, its experts and slots), the CPU's experts "
                       "%.3f ms\n",
                       moe_backend_name(moe_context_backend(ctx)), per[0], per[1]);
        }
        if (n_forwards > 1)
            printf("forwards: %lld of up to %lld tokens\n", (long long)n_forwards, (long long)B);
        printf("expert tokens:");
        for (int64_t e = 0; e < info.n_experts; e++) printf(" %d", counts[e]);
        printf("\ndropped: %d\naux_loss: %.6g%s\nz_loss: %.6g%s\ndevice_ms: %.3f\n", dropped,
               aux_sum / (double)n_forwards, n_forwards > 1 ? " (mean over the forwards)" : "",
               z_sum / (double)n_forwards, n_forwards > 1 ? " (mean over the forwards)" : "", ms_sum);
    }
    rc = 0;

done:
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    moe_context_destroy(cpu);
    moe_model_close(model);
    free(x);
    free(y);
    free(counts);
    free(fwd_counts);
    free(where);
    free(order);
    free(routed);
    return rc;
}
