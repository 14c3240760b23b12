/*
 * moe-info — lists every backend this build of moe has, each device with its vendor, type,
 * driver, API version, memory and the limits the kernels depend on, and the backend and
 * device AUTO picks on this machine (by creating an AUTO context, so MOE_BACKEND is honoured
 * exactly as an application would see it), and where the on-disk kernel cache is, how large it
 * is and its bound. Per device also the features the weight formats' kernels can use (and
 * those moe uses there), and the weight formats with the variant each runs as. --json prints
 * the same as one JSON object. --model PATH instead says what a checkpoint holds (a Hugging
 * Face directory or a GGUF file): its architecture, layers and which have an MoE block, experts,
 * top-k, tensor types and bytes, and per MoE layer the format its experts have in the file and
 * are stored in (or why the layer cannot be made).
 * Uses only the public API (moe.h).
 */
#include <moe.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *type_name(moe_device_type t)
{
    switch (t) {
    case MOE_DEVICE_TYPE_CPU:
        return "cpu";
    case MOE_DEVICE_TYPE_INTEGRATED_GPU:
        return "integrated-gpu";
    case MOE_DEVICE_TYPE_DISCRETE_GPU:
        return "discrete-gpu";
    case MOE_DEVICE_TYPE_VIRTUAL_GPU:
        return "virtual-gpu";
    case MOE_DEVICE_TYPE_OTHER:
        break;
    }
    return "other";
}

/* A JSON string literal. */
static void jstr(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

/* Which features serve which weight format, as moe-info shows them: a format's variant is named
 * by the features in this list that moe uses on the device. (A format runs without any of
 * them, on plain 32-bit word / byte loads.) SUBGROUP_REDUCE belongs to no format: the GPU
 * decode kernel adds its partial sums with it whatever the format, so it shows on the
 * "features" line's "used" list only. The CPU's integer dot products (VNNI, AVX2's
 * vpmaddubsw / vpmaddwd, or Arm's sdot: "int_dot") serve Q8_0 / Q4_0 / K-quant experts on integer
 * activations, the opt-in (moe_layer_desc.activation_dtype Q8_0), and AVX512_BF16 (0.11.0) Q4_0 / MXFP4 /
 * Q4_K experts on bfloat16 pairs, the other opt-in (BF16; BF16 weights are widened with shifts, so they use
 * none): the lines say so. */
static uint32_t format_features(moe_dtype dt)
{
    switch (dt) {
    case MOE_DTYPE_F16:
        return MOE_FEATURE_F16C | MOE_FEATURE_STORAGE_16BIT | MOE_FEATURE_FLOAT16;
    case MOE_DTYPE_BF16:
        return MOE_FEATURE_STORAGE_16BIT;
    case MOE_DTYPE_Q4_0:
        return MOE_FEATURE_AVX512_BF16 | MOE_FEATURE_AVX512_VNNI | MOE_FEATURE_AVX_VNNI |
               MOE_FEATURE_STORAGE_8BIT | MOE_FEATURE_STORAGE_16BIT | MOE_FEATURE_INT_DOT |
               MOE_FEATURE_FLOAT16;
    case MOE_DTYPE_Q8_0:
        return MOE_FEATURE_AVX512_VNNI | MOE_FEATURE_AVX_VNNI | MOE_FEATURE_STORAGE_8BIT |
               MOE_FEATURE_STORAGE_16BIT | MOE_FEATURE_INT_DOT | MOE_FEATURE_FLOAT16;
    case MOE_DTYPE_Q4_K: /* the CPU's integer and bfloat16-pair paths (the GPU kernels use none of these) */
        return MOE_FEATURE_AVX512_BF16 | MOE_FEATURE_AVX512_VNNI | MOE_FEATURE_AVX_VNNI | MOE_FEATURE_INT_DOT;
    case MOE_DTYPE_Q5_K: /* the CPU's integer path (0.13.0; Q3_K 0.15.0, Q2_K 0.16.0) */
    case MOE_DTYPE_Q6_K:
    case MOE_DTYPE_Q3_K:
    case MOE_DTYPE_Q2_K:
        return MOE_FEATURE_AVX512_VNNI | MOE_FEATURE_AVX_VNNI | MOE_FEATURE_INT_DOT;
    case MOE_DTYPE_MXFP4: /* the CPU's bfloat16-pair path */
        return MOE_FEATURE_AVX512_BF16;
    default:
        break;
    }
    return 0;
}

/* Feature names of the bits in `mask`, space-separated (upper case for a format's variant);
 * "none" when there are none. */
static void feature_list(uint32_t mask, int upper, const char *sep, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int b = 0; b < 32 && n + 1 < size; b++) {
        const char *name = (mask >> b) & 1u ? moe_feature_name((moe_feature)(1u << b)) : NULL;
        if (!name) continue;
        const int w = snprintf(buf + n, size - n, "%s%s", n ? sep : "", name);
        if (w < 0 || (size_t)w >= size - n) break;
        if (upper)
            for (size_t i = n; buf[i]; i++) buf[i] = (char)toupper((unsigned char)buf[i]);
        n += (size_t)w;
    }
    if (!n) snprintf(buf, size, "none");
}

/* A JSON array of the feature names in `mask`. */
static void json_features(uint32_t mask)
{
    int first = 1;
    putchar('[');
    for (int b = 0; b < 32; b++) {
        const char *name = (mask >> b) & 1u ? moe_feature_name((moe_feature)(1u << b)) : NULL;
        if (!name) continue;
        printf("%s\"%s\"", first ? "" : ", ", name);
        first = 0;
    }
    putchar(']');
}

/* The weight formats: text "f32 f16 (F16C) bf16 q8_0 q4_0", or a JSON array of
 * {"dtype": .., "uses": [..]}. Every format runs on every backend. */
static void print_weights(const moe_device_info *d, int json)
{
    if (json) printf(", \"weights\": [");
    for (int v = 1; moe_dtype_name((moe_dtype)v); v++) {
        const uint32_t uses = d->features_used & format_features((moe_dtype)v);
        if (json) {
            printf("%s{\"dtype\": \"%s\", \"uses\": ", v > 1 ? ", " : "", moe_dtype_name((moe_dtype)v));
            json_features(uses);
            putchar('}');
            continue;
        }
        printf(" %s", moe_dtype_name((moe_dtype)v));
        if (uses) {
            char names[256];
            feature_list(uses, 1, "+", names, sizeof names);
            printf(" (%s)", names);
        }
    }
    if (!json && d->type == MOE_DEVICE_TYPE_CPU && (d->features_used & MOE_FEATURE_INT_DOT))
        printf(
            "\n                      (INT_DOT: Q8_0 / Q4_0 / K-quant experts on integer activations, asked "
            "for with activation_dtype q8_0)");
    if (!json && d->type == MOE_DEVICE_TYPE_CPU && (d->features_used & MOE_FEATURE_AVX512_BF16))
        printf("\n                      (AVX512_BF16: Q4_0 / MXFP4 / Q4_K experts on bfloat16-pair "
               "activations, asked for "
               "with activation_dtype bf16)");
    printf(json ? "]" : "\n");
}

static void print_device(const moe_device_info *d, int json, int first)
{
    if (json) {
        printf("%s\n      {\"index\": %d, \"name\": ", first ? "" : ",", d->index);
        jstr(d->name);
        printf(", \"vendor\": ");
        jstr(d->vendor);
        printf(", \"type\": \"%s\", \"driver\": ", type_name(d->type));
        jstr(d->driver);
        printf(", \"api_version\": ");
        jstr(d->api_version);
        printf(", \"memory_bytes\": %llu, \"compute_units\": %d, \"max_workgroup_size\": %llu, "
               "\"shared_memory_bytes\": %llu, \"subgroup_size\": %d, \"fp16\": %s",
               (unsigned long long)d->memory_bytes, d->compute_units,
               (unsigned long long)d->max_workgroup_size, (unsigned long long)d->shared_memory_bytes,
               d->subgroup_size, d->fp16 ? "true" : "false");
        printf(", \"features\": ");
        json_features(d->features);
        printf(", \"features_used\": ");
        json_features(d->features_used);
        print_weights(d, 1);
        putchar('}');
        return;
    }
    printf("  device %d: %s\n", d->index, d->name);
    printf("    vendor:           %s\n", d->vendor);
    printf("    type:             %s\n", type_name(d->type));
    printf("    driver:           %s\n", d->driver);
    printf("    api version:      %s\n", d->api_version[0] ? d->api_version : "-");
    printf("    memory:           %.1f GiB\n", (double)d->memory_bytes / (1024.0 * 1024.0 * 1024.0));
    if (d->compute_units)
        printf("    compute units:    %d\n", d->compute_units);
    else
        printf("    compute units:    unknown\n");
    if (d->max_workgroup_size)
        printf("    max workgroup:    %llu invocations\n", (unsigned long long)d->max_workgroup_size);
    else
        printf("    max workgroup:    n/a\n");
    if (d->shared_memory_bytes)
        printf("    shared memory:    %llu bytes\n", (unsigned long long)d->shared_memory_bytes);
    else
        printf("    shared memory:    n/a\n");
    printf("    subgroup size:    %d\n", d->subgroup_size);
    printf("    fp16:             %s\n", d->fp16 ? "yes" : "no");
    char has[512], used[512];
    feature_list(d->features, 0, " ", has, sizeof has);
    feature_list(d->features_used, 0, " ", used, sizeof used);
    printf("    features:         %s (used: %s)\n", has, used);
    printf("    weights:         ");
    print_weights(d, 0);
}

/* ---- --model ---------------------------------------------------------------------------------- */

#define MAX_TYPES 32

typedef struct type_sum {
    char type[16];
    int64_t tensors;
    uint64_t bytes;
} type_sum;

static void add_type(type_sum *t, int *n, const moe_model_tensor_info *ti)
{
    int i = 0;
    while (i < *n && strcmp(t[i].type, ti->type)) i++;
    if (i == *n) {
        if (*n == MAX_TYPES) return;
        snprintf(t[i].type, sizeof t[i].type, "%s", ti->type);
        t[i].tensors = 0, t[i].bytes = 0;
        (*n)++;
    }
    t[i].tensors++;
    t[i].bytes += ti->bytes;
}

static void print_types(const type_sum *t, int n, int json)
{
    for (int i = 0; i < n; i++) {
        if (json) {
            printf("%s", i ? ", " : "");
            jstr(t[i].type);
            printf(": {\"tensors\": %lld, \"bytes\": %llu}", (long long)t[i].tensors,
                   (unsigned long long)t[i].bytes);
        } else {
            printf("%s%s ×%lld (%.2f MiB)", i ? ", " : "", t[i].type, (long long)t[i].tensors,
                   (double)t[i].bytes / 1048576.0);
        }
    }
}

/* Whether tensor `name` belongs to layer `l`: GGUF's blk.N., Hugging Face's layers.N. or
 * encoder.block.N. (Switch), wherever it starts. */
static int in_layer(const char *name, int64_t l)
{
    static const char *const pats[] = {"blk.%lld.", "layers.%lld.", "encoder.block.%lld."};
    for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
        char p[48];
        snprintf(p, sizeof p, pats[i], (long long)l);
        const char *hit = strstr(name, p);
        if (hit && (hit == name || hit[-1] == '.')) return 1;
    }
    return 0;
}

static int print_model(const char *path, int json)
{
    moe_model *m = NULL;
    moe_status st = moe_model_open(path, &m);
    if (st != MOE_OK) {
        fprintf(stderr, "moe-info: %s (%s)\n", moe_last_error(), moe_status_string(st));
        return 1;
    }
    moe_model_info mi = {.struct_size = sizeof mi};
    moe_model_get_info(m, &mi);
    moe_model_tensor_info *ti = calloc(mi.n_tensors ? (size_t)mi.n_tensors : 1, sizeof *ti);
    if (!ti) {
        fprintf(stderr, "moe-info: out of memory\n");
        moe_model_close(m);
        return 1;
    }
    type_sum all[MAX_TYPES];
    int n_all = 0;
    uint64_t bytes = 0;
    for (int64_t i = 0; i < mi.n_tensors; i++) {
        ti[i].struct_size = sizeof ti[i];
        moe_model_get_tensor_info(m, i, &ti[i]);
        add_type(all, &n_all, &ti[i]);
        bytes += ti[i].bytes;
    }
    if (json) {
        printf("{\"model\": ");
        jstr(path);
        printf(", \"model_type\": ");
        jstr(mi.model_type);
        printf(", \"n_layers\": %lld, \"hidden_size\": %lld, \"n_experts\": %lld, \"top_k\": %lld, "
               "\"n_moe_layers\": %lld, \"n_files\": %d, \"n_tensors\": %lld, \"bytes\": %llu, \"types\": {",
               (long long)mi.n_layers, (long long)mi.hidden_size, (long long)mi.n_experts,
               (long long)mi.top_k, (long long)mi.n_moe_layers, mi.n_files, (long long)mi.n_tensors,
               (unsigned long long)bytes);
        print_types(all, n_all, 1);
        printf("}, \"layers\": [");
    } else {
        printf("model %s: %d file%s, %lld tensors, %.2f MiB\n", path, mi.n_files, mi.n_files == 1 ? "" : "s",
               (long long)mi.n_tensors, (double)bytes / 1048576.0);
        printf("  architecture %s: %lld layer%s, %lld with an MoE block; hidden size %lld; %lld experts, "
               "top-%lld\n",
               mi.model_type, (long long)mi.n_layers, mi.n_layers == 1 ? "" : "s", (long long)mi.n_moe_layers,
               (long long)mi.hidden_size, (long long)mi.n_experts, (long long)mi.top_k);
        printf("  tensor types: ");
        print_types(all, n_all, 0);
        printf("\n");
    }
    int rc = 0, first = 1;
    for (int64_t l = 0; l < mi.n_layers; l++) {
        if (!moe_model_layer_is_moe(m, l, 0)) continue;
        type_sum t[MAX_TYPES];
        int n = 0;
        uint64_t lb = 0;
        for (int64_t i = 0; i < mi.n_tensors; i++)
            if (in_layer(ti[i].name, l)) add_type(t, &n, &ti[i]), lb += ti[i].bytes;
        moe_layer_desc d = {.struct_size = sizeof d};
        st = moe_model_layer_desc(m, l, NULL, &d);
        if (json) {
            printf("%s\n  {\"layer\": %lld, \"bytes\": %llu, \"types\": {", first ? "" : ",", (long long)l,
                   (unsigned long long)lb);
            print_types(t, n, 1);
            printf("}, ");
            if (st == MOE_OK) {
                printf(
                    "\"d_ff\": %lld, \"d_ff_shared\": %lld, \"weight_dtype\": \"%s\", \"down_weight_dtype\": "
                    "\"%s\", \"shared_weight_dtype\": \"%s\", \"shared_down_weight_dtype\": \"%s\"}",
                    (long long)d.d_ff, (long long)d.d_ff_shared, moe_dtype_name(d.weight_dtype),
                    moe_dtype_name(d.down_weight_dtype),
                    d.d_ff_shared ? moe_dtype_name(d.shared_weight_dtype) : "",
                    d.d_ff_shared ? moe_dtype_name(d.shared_down_weight_dtype) : "");
            } else {
                printf("\"error\": ");
                jstr(moe_last_error());
                printf("}");
            }
        } else {
            printf("  layer %lld: ", (long long)l);
            print_types(t, n, 0);
            if (st == MOE_OK) {
                char down[32] = "", sdown[32] = "";
                if (d.down_weight_dtype != d.weight_dtype)
                    snprintf(down, sizeof down, " (down %s)", moe_dtype_name(d.down_weight_dtype));
                if (d.shared_down_weight_dtype != d.shared_weight_dtype)
                    snprintf(sdown, sizeof sdown, " (down %s)", moe_dtype_name(d.shared_down_weight_dtype));
                printf("; experts d_ff %lld stored as %s%s%s%s%s%s\n", (long long)d.d_ff,
                       moe_dtype_name(d.weight_dtype), down, d.d_ff_shared ? ", shared expert(s) as " : "",
                       d.d_ff_shared ? moe_dtype_name(d.shared_weight_dtype) : "", d.d_ff_shared ? sdown : "",
                       d.n_group > 1 ? ", group-limited routing" : "");
            } else
                printf("\n    cannot be run: %s\n", moe_last_error());
        }
        if (st != MOE_OK) rc = 1;
        first = 0;
    }
    if (json) printf("%s]}\n", first ? "" : "\n");
    free(ti);
    moe_model_close(m);
    return rc;
}

int main(int argc, char **argv)
{
    const char *model = NULL;
    int json = 0;
    moe_context_desc desc = {.struct_size = sizeof desc, .backend = MOE_BACKEND_AUTO};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            if (moe_context_desc_set_device(&desc, argv[++i]) != MOE_OK) {
                fprintf(stderr, "moe-info: --device: %s\n", moe_last_error());
                return 2;
            }
        } else {
            /* Asked-for help goes to stdout (exit 0); a wrong flag gets it on stderr (exit 2). */
            const int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr,
                    "usage: moe-info [--json] [--device N|NAME|TYPE] | [--json] --model PATH\n"
                    "Lists moe's backends, their devices and limits, and what AUTO picks. --device\n"
                    "narrows AUTO's choice as moe_context_desc_set_device reads it: a name substring\n"
                    "(\"name:TEXT\" to be explicit) or a type (discrete, integrated, virtual, cpu, other;\n"
                    "joined by '+'); an index needs a backend, so AUTO refuses one. --model says what\n"
                    "a checkpoint (a Hugging Face directory or a GGUF file) holds: architecture, layers\n"
                    "and which have an MoE block, experts, top-k, tensor types and bytes, and per MoE\n"
                    "layer the experts' format (or why it cannot be run; exit status 1).\n");
            return help ? 0 : 2;
        }
    }
    if (model) return print_model(model, json);
    static const moe_backend_kind kinds[] = {MOE_BACKEND_CPU, MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL};
    int rc = 0;
    if (json)
        printf("{\"version\": \"%s\", \"backends\": [", moe_version());
    else
        printf("moe %s\n", moe_version());
    for (size_t b = 0; b < sizeof kinds / sizeof kinds[0]; b++) {
        const char *name = moe_backend_name(kinds[b]);
        const int built = moe_backend_is_built(kinds[b]);
        int count = 0;
        const moe_status st = built ? moe_device_count(kinds[b], &count) : MOE_OK;
        if (json) {
            printf("%s\n  {\"name\": \"%s\", \"built\": %s, \"devices\": [", b ? "," : "", name,
                   built ? "true" : "false");
        } else {
            printf("\nbackend %s: %s", name, !built ? "not built into this library\n" : "");
            if (built && st != MOE_OK)
                printf("error: %s (%s)\n", moe_status_string(st), moe_last_error());
            else if (built)
                printf("%d device%s\n", count, count == 1 ? "" : "s");
        }
        for (int i = 0; st == MOE_OK && i < count; i++) {
            moe_device_info d = {.struct_size = sizeof d};
            const moe_status ds = moe_device_get_info(kinds[b], i, &d);
            if (ds != MOE_OK) {
                fprintf(stderr, "moe-info: %s device %d: %s (%s)\n", name, i, moe_status_string(ds),
                        moe_last_error());
                rc = 1;
                continue;
            }
            print_device(&d, json, i == 0);
        }
        if (json) printf("%s]}", count ? "\n    " : "");
    }
    moe_context *ctx = NULL;
    const moe_status st = moe_context_create(&desc, &ctx);
    char why[512]; /* the next calls clear moe_last_error */
    snprintf(why, sizeof why, "%s", st == MOE_OK ? "" : moe_last_error());
    moe_device_info d = {.struct_size = sizeof d};
    if (st == MOE_OK) moe_context_get_device_info(ctx, &d);
    moe_cache_info cache = {.struct_size = sizeof cache};
    if (moe_get_cache_info(&cache) != MOE_OK) rc = 1;
    if (json) {
        printf("\n], \"auto\": ");
        if (st == MOE_OK) {
            printf("{\"backend\": \"%s\", \"device\": %d, \"name\": ",
                   moe_backend_name(moe_context_backend(ctx)), d.index);
            jstr(d.name);
            printf("}");
        } else {
            printf("null, \"auto_error\": ");
            jstr(why);
        }
        printf(", \"cache\": {\"path\": ");
        jstr(cache.path);
        printf(", \"files\": %llu, \"bytes\": %llu, \"limit_bytes\": %llu}}\n",
               (unsigned long long)cache.files, (unsigned long long)cache.bytes,
               (unsigned long long)cache.limit_bytes);
    } else {
        if (st == MOE_OK)
            printf("\nAUTO picks: %s device %d (%s)\n", moe_backend_name(moe_context_backend(ctx)), d.index,
                   d.name);
        else
            printf("\nAUTO picks nothing: %s (%s)\n", moe_status_string(st), why);
        printf("cache: %s, %llu file%s, %.1f MiB (bounded at %.0f MiB, MOE_CACHE_SIZE_MB)\n",
               cache.path[0] ? cache.path : "(none)", (unsigned long long)cache.files,
               cache.files == 1 ? "" : "s", (double)cache.bytes / 1048576.0,
               (double)cache.limit_bytes / 1048576.0);
    }
    moe_context_destroy(ctx);
    return st == MOE_OK ? rc : 1;
}
