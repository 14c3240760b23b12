/*
 * moe-run — runs the MoE block of one layer of a Hugging Face checkpoint on a float32 .npy
 * input [T, hidden_size] and writes the float32 .npy output [T, hidden_size]. Uses only the
 * public API (moe.h). Every failure prints one message naming the file (and tensor) and exits
 * non-zero, and leaves nothing at the output path. The output is written atomically, through
 * a symbolic link to its target, and only ever to a regular file (tools/npy.c).
 */
#include "npy.h"

#include <moe.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(
        f, "usage: moe-run --model DIR --layer N --input X.npy --output Y.npy\n"
           "               [--backend auto|cpu|vulkan|opencl] [--device I] [--drop-policy zero|passthrough]\n"
           "               [--decoder] [--stats]\n"
           "Runs the MoE block of layer N of the Hugging Face model in DIR (config.json +\n"
           "model.safetensors or sharded) on X.npy (float32, [T, hidden_size], C order) and writes\n"
           "Y.npy. --decoder takes a switch_transformers decoder block; --stats prints the backend,\n"
           "the per-expert token counts, the aux loss and the z-loss. Y.npy is replaced atomically\n"
           "(a symbolic link is written through to its target); a directory, FIFO or device there\n"
           "is refused.\n");
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
    long long layer, device;
    moe_backend_kind backend;
    moe_drop_policy drop;
    int decoder, stats;
} run_args;

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
            if (parse_int(v, &a->device) || a->device < 0 || a->device > 1 << 20) {
                fprintf(stderr, "moe-run: --device wants a device index >= 0, not '%s'\n", v);
                return -1;
            }
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

int main(int argc, char **argv)
{
    run_args a = {.backend = MOE_BACKEND_AUTO};
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
    moe_context *ctx = NULL;
    moe_layer *layer = NULL;
    float *x = NULL, *y = NULL;
    int32_t *counts = NULL;
    moe_status st = moe_model_open(a.model, &model);
    if (st != MOE_OK) return fail_api("cannot open the model", st, moe_last_error());
    moe_model_info info = {.struct_size = sizeof info};
    moe_model_get_info(model, &info);

    int64_t T = 0, D = 0;
    if (npy_read_f32_matrix(a.input, info.hidden_size, &x, &T, &D, err, sizeof err)) {
        fprintf(stderr, "moe-run: %s\n", err);
        goto done;
    }
    moe_context_desc cdesc = {
        .struct_size = sizeof cdesc, .backend = a.backend, .device_index = (int)a.device};
    st = moe_context_create(&cdesc, &ctx);
    if (st != MOE_OK) {
        rc = fail_api("cannot create a context", st, moe_last_error());
        goto done;
    }
    const moe_model_layer_options opts = {
        .struct_size = sizeof opts, .max_tokens = T, .drop_policy = a.drop, .decoder = a.decoder};
    st = moe_model_create_layer(ctx, model, a.layer, &opts, &layer);
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
    int32_t dropped = 0;
    float aux = 0.0f, z = 0.0f;
    double ms = 0.0;
    moe_forward_stats stats = {.struct_size = sizeof stats,
                               .expert_counts = counts,
                               .dropped_count = &dropped,
                               .aux_loss = &aux,
                               .z_loss = &z,
                               .device_ms = &ms};
    st = moe_layer_forward(layer, T, x, y, a.stats ? &stats : NULL);
    if (st != MOE_OK) {
        rc = fail_api("forward failed", st, moe_context_error(ctx));
        goto done;
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
        printf("expert tokens:");
        for (int64_t e = 0; e < info.n_experts; e++) printf(" %d", counts[e]);
        printf("\ndropped: %d\naux_loss: %.6g\nz_loss: %.6g\ndevice_ms: %.3f\n", dropped, aux, z, ms);
    }
    rc = 0;

done:
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    moe_model_close(model);
    free(x);
    free(y);
    free(counts);
    return rc;
}
