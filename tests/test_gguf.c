/*
 * test_gguf.c — GGUF models (tests/data/gguf-moe, written by its make_gguf.py with the `gguf`
 * package, the way llama.cpp's converter writes them), on the backend named by argv[1]:
 *
 *  - every case of index.json opens through moe_model_open and runs: a case made from an
 *    hf-moe model must give that model's independent y_ref (‖y − y_ref‖/‖y_ref‖ ≤ 1e-4) and
 *    the very bits the same weights give through safetensors; a quantised case must give, to
 *    1e-5, what its "-deq" twin gives — the same weights dequantised by the gguf package and
 *    stored as F32 — with each projection stored as the file stores it (Q4_0 gate/up with a
 *    Q8_0 down stay so); a K-quant case (Q4_K or Q5_K gate/up with a Q6_K down, Q3_K with a
 *    Q4_K one, Q2_K with a Q3_K one, as llama.cpp's _M and Q2_K files) must give, to 1e-5, what
 *    the same layer gives with its experts dequantised at upload (to F32, by the conversion
 *    test_dtype checks against the gguf package);
 *  - what moe_model_get_info and moe_model_layer_desc say of each (architecture, counts,
 *    formats, which layers are MoE), and moe_model_get_tensor_info's listing (ggml's type 11, Q3_K,
 *    is MOE_DTYPE_Q3_K since 0.15.0, type 10, Q2_K, MOE_DTYPE_Q2_K since 0.16.0; IQ2_XXS has no
 *    moe_dtype);
 *  - every user error, each one status and one message naming the file and the cause: an
 *    unsupported tensor type (IQ2_XXS, naming the types that are read), an unknown architecture,
 *    a split opened from a later file or missing a file, a truncated file (every cut of the
 *    header, and the data), a bad magic, an unsupported version, forged counts, a missing
 *    tensor, a dense layer, a layer out of range.
 *
 *   test_gguf BACKEND DATA_DIR        (exit 77 when the backend has no device)
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include "../tools/npy.h"
#include "harness.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REF_TOL 1e-4
#define DEQ_TOL 1e-5

static const char *g_dir;

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    *n = buf ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    if (buf) buf[*n] = '\0';
    return buf;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    CHECK(fwrite(p, 1, n, f) == n, "short write of %s", path);
    fclose(f);
}

/* The layer of `path` (a GGUF file or a model directory) on ctx, run on x: y (malloc'd) or NULL. */
static float *run(moe_context *ctx, const char *path, int64_t layer, int64_t T, const float *x, int64_t D,
                  moe_dtype weights, moe_layer_desc *out_desc)
{
    moe_model *m = NULL;
    moe_status st = moe_model_open(path, &m);
    CHECK(st == MOE_OK, "moe_model_open(%s): %s: %s", path, moe_status_string(st), moe_last_error());
    if (st != MOE_OK) return NULL;
    const moe_model_layer_options o = {.struct_size = sizeof o, .max_tokens = T, .weight_dtype = weights};
    moe_layer *l = NULL;
    float *y = NULL;
    if (out_desc) {
        out_desc->struct_size = sizeof *out_desc;
        CHECK_STATUS(moe_model_layer_desc(m, layer, &o, out_desc), MOE_OK);
    }
    st = moe_model_create_layer(ctx, m, layer, &o, &l);
    CHECK(st == MOE_OK, "create_layer(%s, %lld): %s: %s", path, (long long)layer, moe_status_string(st),
          moe_context_error(ctx));
    if (st == MOE_OK) {
        y = malloc(sizeof(float) * (size_t)(T * D));
        st = moe_layer_forward(l, T, x, y, NULL);
        CHECK(st == MOE_OK, "forward(%s): %s: %s", path, moe_status_string(st), moe_context_error(ctx));
        if (st != MOE_OK) {
            free(y);
            y = NULL;
        }
    }
    moe_layer_destroy(l);
    moe_model_close(m);
    return y;
}

static moe_dtype dtype_named(const char *s)
{
    moe_dtype d = MOE_DTYPE_DEFAULT;
    return moe_dtype_from_name(s, &d) == MOE_OK ? d : MOE_DTYPE_DEFAULT;
}

static void run_case(moe_context *ctx, const cJSON *e)
{
    const char *file = cJSON_GetObjectItemCaseSensitive(e, "file")->valuestring;
    const int64_t layer = (int64_t)cJSON_GetObjectItemCaseSensitive(e, "layer")->valuedouble;
    const int64_t T = (int64_t)cJSON_GetObjectItemCaseSensitive(e, "T")->valuedouble;
    const cJSON *xj = cJSON_GetObjectItemCaseSensitive(e, "x"),
                *yj = cJSON_GetObjectItemCaseSensitive(e, "y_ref"),
                *hf = cJSON_GetObjectItemCaseSensitive(e, "hf"),
                *deq = cJSON_GetObjectItemCaseSensitive(e, "deq"),
                *wd = cJSON_GetObjectItemCaseSensitive(e, "weight_dtype"),
                *arch = cJSON_GetObjectItemCaseSensitive(e, "arch");
    char path[1024], xp[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, file);
    snprintf(xp, sizeof xp, "%s/%s", g_dir, xj->valuestring);

    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(path, &m), MOE_OK);
    if (!m) return;
    moe_model_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_model_get_info(m, &info), MOE_OK);
    CHECK(!strcmp(info.model_type, arch->valuestring), "[%s] model_type '%s', expected '%s'", file,
          info.model_type, arch->valuestring);
    CHECK(moe_model_layer_is_moe(m, layer, 0) == 1 && info.first_moe_layer == layer && info.n_moe_layers == 1,
          "[%s] layer %lld is MoE: %d; first %lld, %lld MoE layers", file, (long long)layer,
          moe_model_layer_is_moe(m, layer, 0), (long long)info.first_moe_layer, (long long)info.n_moe_layers);
    CHECK(info.n_files == (strstr(file, "-of-00003") ? 3 : 1), "[%s] %d files", file, info.n_files);
    /* Each projection is stored in its own tensor's type (stacked or the first per-expert one). */
    moe_dtype want[4];
    const char *const proj[4][2] = {{"ffn_gate_exps", "ffn_gate.0"},
                                    {"ffn_down_exps", "ffn_down.0"},
                                    {"ffn_gate_shexp", NULL},
                                    {"ffn_down_shexp", NULL}};
    for (int p = 0; p < 4; p++) {
        char a[96], b[96];
        snprintf(a, sizeof a, "blk.%lld.%s.weight", (long long)layer, proj[p][0]);
        snprintf(b, sizeof b, "blk.%lld.%s.weight", (long long)layer, proj[p][1] ? proj[p][1] : "-");
        want[p] = MOE_DTYPE_DEFAULT;
        for (int64_t i = 0; i < info.n_tensors; i++) {
            moe_model_tensor_info ti = {.struct_size = sizeof ti};
            if (moe_model_get_tensor_info(m, i, &ti) == MOE_OK &&
                (!strcmp(ti.name, a) || !strcmp(ti.name, b)))
                want[p] = ti.dtype;
        }
    }
    moe_model_close(m);

    float *x = NULL;
    int64_t xt, D;
    char err[512];
    if (npy_read_f32_matrix(xp, info.hidden_size, &x, &xt, &D, err, sizeof err)) {
        CHECK(0, "[%s] %s", file, err);
        return;
    }
    CHECK(xt == T, "[%s] x has %lld rows, index.json says %lld", file, (long long)xt, (long long)T);
    moe_layer_desc d;
    float *y = run(ctx, path, layer, T, x, D, MOE_DTYPE_DEFAULT, &d);
    CHECK(!strcmp(wd->valuestring, "mixed") || d.weight_dtype == dtype_named(wd->valuestring),
          "[%s] experts stored as %s, index.json says %s", file, moe_dtype_name(d.weight_dtype),
          wd->valuestring);
    CHECK(d.weight_dtype == want[0] && d.down_weight_dtype == want[1] &&
              (d.d_ff_shared == 0 ||
               (d.shared_weight_dtype == want[2] && d.shared_down_weight_dtype == want[3])),
          "[%s] stored as %s / down %s, shared %s / down %s; the file has %s / %s, %s / %s", file,
          moe_dtype_name(d.weight_dtype), moe_dtype_name(d.down_weight_dtype),
          moe_dtype_name(d.shared_weight_dtype), moe_dtype_name(d.shared_down_weight_dtype),
          moe_dtype_name(want[0]), moe_dtype_name(want[1]), moe_dtype_name(want[2]), moe_dtype_name(want[3]));
    if (y && cJSON_IsString(yj)) {
        float *y_ref = NULL;
        int64_t r, c;
        snprintf(xp, sizeof xp, "%s/%s", g_dir, yj->valuestring);
        if (npy_read_f32_matrix(xp, D, &y_ref, &r, &c, err, sizeof err) == 0 && r == T) {
            const double rel = h_rel_l2(y, y_ref, (size_t)(T * D));
            printf("%-40s layer %lld  vs y_ref %.3g\n", file, (long long)layer, rel);
            CHECK(rel <= REF_TOL, "[%s] relative L2 error %.3g against y_ref > %g", file, rel, REF_TOL);
        } else {
            CHECK(0, "[%s] y_ref: %s", file, err);
        }
        free(y_ref);
    }
    if (y && cJSON_IsString(hf)) { /* the same weights through safetensors: the same bits */
        snprintf(xp, sizeof xp, "%s/../hf-moe/%s", g_dir, hf->valuestring);
        float *y_hf = run(ctx, xp, layer, T, x, D, MOE_DTYPE_DEFAULT, NULL);
        CHECK(y_hf && !memcmp(y, y_hf, sizeof(float) * (size_t)(T * D)),
              "[%s] output differs from the same weights through safetensors (%s)", file, hf->valuestring);
        free(y_hf);
    }
    if (y && cJSON_IsString(deq)) { /* the gguf package's dequantised weights, stored as this file's */
        snprintf(xp, sizeof xp, "%s/%s", g_dir, deq->valuestring);
        float *y_deq = run(ctx, xp, layer, T, x, D, MOE_DTYPE_F32, NULL);
        if (y_deq) {
            const double rel = h_rel_l2(y, y_deq, (size_t)(T * D));
            printf("%-40s layer %lld  vs %s (%s) %.3g\n", file, (long long)layer, deq->valuestring,
                   moe_dtype_name(MOE_DTYPE_F32), rel);
            CHECK(rel <= DEQ_TOL, "[%s] relative L2 error %.3g against %s > %g", file, rel, deq->valuestring,
                  DEQ_TOL);
        }
        free(y_deq);
    }
    if (y && cJSON_IsNull(deq) && cJSON_IsNull(yj) && cJSON_IsNull(hf)) {
        /* No oracle file (the K-quant ones would be megabytes): the same layer with its experts
         * dequantised at upload (moe_convert_row, which test_dtype holds to the gguf package's
         * dequantisation bit for bit), so the kernels reading the file's blocks as they are
         * must agree with float32 kernels on the dequantised values. */
        float *y_f32 = run(ctx, path, layer, T, x, D, MOE_DTYPE_F32, NULL);
        if (y_f32) {
            const double rel = h_rel_l2(y, y_f32, (size_t)(T * D));
            printf("%-40s layer %lld  vs itself dequantised (f32) %.3g\n", file, (long long)layer, rel);
            CHECK(rel <= DEQ_TOL, "[%s] relative L2 error %.3g against its weights dequantised > %g", file,
                  rel, DEQ_TOL);
        }
        free(y_f32);
    }
    free(y);
    free(x);
}

/* ---- user errors ------------------------------------------------------------------------------ */

/* moe_model_open(path) fails with `want`, its message naming the file and holding `what`. */
static void open_fails(const char *path, moe_status want, const char *what)
{
    moe_model *m = NULL;
    const moe_status st = moe_model_open(path, &m);
    const char *msg = moe_last_error();
    CHECK(st == want && m == NULL, "moe_model_open(%s) = %s, expected %s (%s)", path, moe_status_string(st),
          moe_status_string(want), msg);
    const char *slash = strrchr(path, '/');
    CHECK(strstr(msg, slash ? slash + 1 : path) && strstr(msg, what),
          "message '%s' should name %s and say '%s'", msg, path, what);
    moe_model_close(m);
}

/* Layer `layer` of `path` is refused by moe_model_layer_desc and moe_model_create_layer alike. */
static void layer_fails(moe_context *ctx, const char *path, int64_t layer, moe_status want, const char *what)
{
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(path, &m), MOE_OK);
    if (!m) return;
    moe_layer_desc d = {.struct_size = sizeof d};
    moe_status st = moe_model_layer_desc(m, layer, NULL, &d);
    CHECK(st == want && strstr(moe_last_error(), what),
          "layer_desc(%s, %lld) = %s (%s); %s with '%s' expected", path, (long long)layer,
          moe_status_string(st), moe_last_error(), moe_status_string(want), what);
    moe_layer *l = NULL;
    st = moe_model_create_layer(ctx, m, layer, NULL, &l);
    CHECK(st == want && l == NULL && strstr(moe_context_error(ctx), what),
          "create_layer(%s, %lld) = %s (%s); %s with '%s' expected", path, (long long)layer,
          moe_status_string(st), moe_context_error(ctx), moe_status_string(want), what);
    moe_layer_destroy(l);
    moe_model_close(m);
}

/* The fixture `file` opened, its moe_model_info in *mi; NULL (a failed check) if it does not open. */
static moe_model *open_with_info(const char *file, moe_model_info *mi)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_dir, file);
    moe_model *m = NULL;
    CHECK_STATUS(moe_model_open(path, &m), MOE_OK);
    if (m) CHECK_STATUS(moe_model_get_info(m, mi), MOE_OK);
    return m;
}

/* A K-quant mix's expert tensors (ne [256, 256, 4]) in moe_model_get_tensor_info's listing: gate and up
 * of ggml type `gate` (moe_dtype gate_dt, gate_bytes a super-block), down of `down`. */
static void kquant_listing(const char *file, const char *gate, moe_dtype gate_dt, unsigned gate_bytes,
                           const char *down, moe_dtype down_dt, unsigned down_bytes)
{
    moe_model_info mi = {.struct_size = sizeof mi};
    moe_model *m = open_with_info(file, &mi);
    if (!m) return;
    int found = 0;
    for (int64_t i = 0; i < mi.n_tensors; i++) {
        moe_model_tensor_info ti = {.struct_size = sizeof ti};
        CHECK_STATUS(moe_model_get_tensor_info(m, i, &ti), MOE_OK);
        const bool g =
            !strcmp(ti.name, "blk.0.ffn_gate_exps.weight") || !strcmp(ti.name, "blk.0.ffn_up_exps.weight");
        if (!g && strcmp(ti.name, "blk.0.ffn_down_exps.weight")) continue;
        found++;
        CHECK(!strcmp(ti.type, g ? gate : down) && ti.dtype == (g ? gate_dt : down_dt) && ti.n_dims == 3 &&
                  ti.shape[0] == 4 && ti.shape[1] == 256 && ti.shape[2] == 256 &&
                  ti.bytes == 4 * 256 * (g ? gate_bytes : down_bytes),
              "%s: %s: %s dtype %d, %d dims [%lld, %lld, %lld], %llu bytes", file, ti.name, ti.type,
              (int)ti.dtype, ti.n_dims, (long long)ti.shape[0], (long long)ti.shape[1],
              (long long)ti.shape[2], (unsigned long long)ti.bytes);
    }
    CHECK(found == 3, "%d of %s's 3 expert tensors were listed", found, file);
    moe_model_close(m);
}

/* moe_model_get_tensor_info: the file's own description of each tensor, in name order. */
static void tensor_infos(void)
{
    moe_model_info mi = {.struct_size = sizeof mi};
    moe_model *m = open_with_info("synthetic-iq2_xxs.gguf", &mi);
    if (!m) return;
    int found = 0;
    char prev[256] = "";
    for (int64_t i = 0; i < mi.n_tensors; i++) {
        moe_model_tensor_info t = {.struct_size = sizeof t};
        CHECK_STATUS(moe_model_get_tensor_info(m, i, &t), MOE_OK);
        CHECK(strcmp(prev, t.name) < 0, "tensor %lld '%s' is not after '%s'", (long long)i, t.name, prev);
        snprintf(prev, sizeof prev, "%s", t.name);
        CHECK(t.file == 0, "%s: file %d", t.name, t.file);
        if (!strcmp(t.name, "blk.0.ffn_down_exps.weight")) { /* ne [256, 32, 2], IQ2_XXS (66 bytes / 256) */
            found++;
            CHECK(!strcmp(t.type, "IQ2_XXS") && t.dtype == MOE_DTYPE_DEFAULT && t.n_dims == 3 &&
                      t.shape[0] == 2 && t.shape[1] == 32 && t.shape[2] == 256 && t.bytes == 2 * 32 * 66,
                  "%s: %s dtype %d, %d dims [%lld, %lld, %lld], %llu bytes", t.name, t.type, (int)t.dtype,
                  t.n_dims, (long long)t.shape[0], (long long)t.shape[1], (long long)t.shape[2],
                  (unsigned long long)t.bytes);
        }
        if (!strcmp(t.name, "blk.0.ffn_gate_inp.weight")) { /* ne [32, 2], F32 */
            found++;
            CHECK(!strcmp(t.type, "F32") && t.dtype == MOE_DTYPE_F32 && t.n_dims == 2 && t.shape[0] == 2 &&
                      t.shape[1] == 32 && t.bytes == 2 * 32 * 4,
                  "%s: %s, %d dims, %llu bytes", t.name, t.type, t.n_dims, (unsigned long long)t.bytes);
        }
    }
    CHECK(found == 2, "%d of the 2 tensors looked for were listed", found);
    moe_model_tensor_info t = {.struct_size = sizeof t};
    CHECK_STATUS(moe_model_get_tensor_info(m, mi.n_tensors, &t), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_model_get_tensor_info(m, -1, &t), MOE_ERROR_INVALID_ARGUMENT);
    t.struct_size = sizeof t + 8; /* a newer moe.h's */
    CHECK_STATUS(moe_model_get_tensor_info(m, 0, &t), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_model_get_tensor_info(m, 0, NULL), MOE_ERROR_NULL_POINTER);
    moe_model_close(m);

    /* A Q3_K_M file: Q3_K experts (110 bytes a super-block) read as MOE_DTYPE_Q3_K, its down Q4_K; a
     * Q2_K file (0.16.0): Q2_K experts (84 bytes) read as MOE_DTYPE_Q2_K, its down Q3_K. */
    kquant_listing("synthetic-q3_k_m.gguf", "Q3_K", MOE_DTYPE_Q3_K, 110, "Q4_K", MOE_DTYPE_Q4_K, 144);
    kquant_listing("synthetic-q2_k.gguf", "Q2_K", MOE_DTYPE_Q2_K, 84, "Q3_K", MOE_DTYPE_Q3_K, 110);
}

/* Sets the UINT32 value of key `key` in a GGUF file's bytes; false if the key is not there. */
static bool patch_u32_key(char *b, size_t n, const char *key, uint32_t value)
{
    const size_t len = strlen(key);
    for (size_t i = 8; i + len + 8 <= n; i++) {
        uint64_t l;
        memcpy(&l, b + i - 8, 8);
        if (l == len && !memcmp(b + i, key, len)) {
            memcpy(b + i + len + 4, &value, 4); /* after the key: the type (UINT32), then the value */
            return true;
        }
    }
    return false;
}

static void errors(moe_context *ctx, const char *tmp)
{
    char path[1024], out[1100];
    snprintf(path, sizeof path, "%s/synthetic-iq2_xxs.gguf", g_dir);
    layer_fails(ctx, path, 0, MOE_ERROR_FORMAT, "tensor 'blk.0.ffn_down_exps.weight' has type IQ2_XXS");
    layer_fails(ctx, path, 0, MOE_ERROR_FORMAT,
                "F32, F16, BF16, Q8_0, Q4_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and MXFP4");
    snprintf(path, sizeof path, "%s/unknown-arch.gguf", g_dir);
    open_fails(path, MOE_ERROR_UNSUPPORTED, "architecture 'falcon'");
    snprintf(path, sizeof path, "%s/qwen2moe-split-00002-of-00003.gguf", g_dir);
    open_fails(path, MOE_ERROR_FORMAT, "open the first");
    snprintf(path, sizeof path, "%s/deepseek2.gguf", g_dir);
    layer_fails(ctx, path, 0, MOE_ERROR_INVALID_ARGUMENT, "dense layer");
    layer_fails(ctx, path, 2, MOE_ERROR_INVALID_ARGUMENT, "out of range");

    /* Keys that describe no runnable block: checked at open, naming the file. */
    {
        size_t n2;
        char *ds = read_all(path, &n2);
        char bad[1100];
        snprintf(bad, sizeof bad, "%s/keys.gguf", tmp);
        const struct {
            const char *key;
            uint32_t value;
            moe_status want;
            const char *what;
        } keys[] = {
            {"deepseek2.expert_group_count", 3, MOE_ERROR_FORMAT, "cannot be run"}, /* 16 experts */
            {"deepseek2.expert_group_used_count", 0, MOE_ERROR_FORMAT, "cannot be run"},
            {"deepseek2.expert_count", 0, MOE_ERROR_UNSUPPORTED, "a dense deepseek2 model"},
            {"deepseek2.expert_used_count", 17, MOE_ERROR_FORMAT, "expert_used_count is 17; 1 to 16"},
            {"deepseek2.expert_gating_func", 3, MOE_ERROR_UNSUPPORTED, "expert_gating_func is 3"},
        };
        for (size_t i = 0; ds && i < sizeof keys / sizeof keys[0]; i++) {
            char *c2 = malloc(n2);
            memcpy(c2, ds, n2);
            CHECK(patch_u32_key(c2, n2, keys[i].key, keys[i].value), "deepseek2.gguf has no key %s",
                  keys[i].key);
            write_all(bad, c2, n2);
            open_fails(bad, keys[i].want, keys[i].what);
            free(c2);
        }
        remove(bad);
        free(ds);
    }

    /* gpt-oss: every bias is required; a file without one (the name changed in place) is refused
     * naming the tensor. */
    {
        size_t ng;
        snprintf(path, sizeof path, "%s/gpt-oss.gguf", g_dir);
        char *g = read_all(path, &ng), bad[1100];
        snprintf(bad, sizeof bad, "%s/gpt-oss-bias.gguf", tmp);
        static const char *const biases[] = {"blk.0.ffn_gate_inp.bias", "blk.0.ffn_up_exps.bias",
                                             "blk.0.ffn_down_exps.bias"};
        for (size_t i = 0; g && i < sizeof biases / sizeof biases[0]; i++) {
            char *c2 = malloc(ng), want[96];
            memcpy(c2, g, ng);
            const size_t len = strlen(biases[i]);
            bool found = false;
            for (size_t at = 0; !found && at + len <= ng; at++)
                if (!memcmp(c2 + at, biases[i], len)) c2[at + len - 1] = '_', found = true;
            CHECK(found, "gpt-oss.gguf has no tensor %s", biases[i]);
            write_all(bad, c2, ng);
            snprintf(want, sizeof want, "tensor '%s' is missing", biases[i]);
            layer_fails(ctx, bad, 0, MOE_ERROR_FORMAT, want);
            free(c2);
        }
        remove(bad);
        free(g);
    }

    /* A desc from before 0.7.0 cannot hold a gpt-oss layer: refused, not cut short to another. */
    {
        snprintf(path, sizeof path, "%s/gpt-oss.gguf", g_dir);
        moe_model *m = NULL;
        CHECK_STATUS(moe_model_open(path, &m), MOE_OK);
        moe_layer_desc d;
        memset(&d, 0, sizeof d);
        d.struct_size = (offsetof(moe_layer_desc, shared_down_weight_dtype) + sizeof(moe_dtype) + 7) / 8 * 8;
        CHECK_STATUS(moe_model_layer_desc(m, 0, NULL, &d), MOE_ERROR_UNSUPPORTED);
        CHECK(strstr(moe_last_error(), "0.7.0") != NULL, "message: %s", moe_last_error());
        d.struct_size = sizeof d;
        CHECK_STATUS(moe_model_layer_desc(m, 0, NULL, &d), MOE_OK);
        CHECK(d.router_has_bias && d.expert_has_bias && d.activation == MOE_ACTIVATION_SWIGLU_OAI &&
                  d.weight_dtype == MOE_DTYPE_MXFP4 && d.renormalize,
              "gpt-oss.gguf's desc");
        moe_model_close(m);
    }

    /* A split missing its second file. */
    size_t n;
    snprintf(path, sizeof path, "%s/qwen2moe-split-00001-of-00003.gguf", g_dir);
    char *first = read_all(path, &n);
    CHECK(first != NULL, "cannot read %s", path);
    if (!first) return;
    snprintf(out, sizeof out, "%s/lone-00001-of-00003.gguf", tmp);
    write_all(out, first, n);
    open_fails(out, MOE_ERROR_IO, "lone-00002-of-00003.gguf");
    remove(out);
    free(first);

    /* mixtral.gguf cut short, and with defects written into its header. */
    snprintf(path, sizeof path, "%s/mixtral.gguf", g_dir);
    char *b = read_all(path, &n);
    CHECK(b != NULL, "cannot read %s", path);
    if (!b) return;
    snprintf(out, sizeof out, "%s/broken.gguf", tmp);
    /* Where the data starts: after the last tensor info, aligned; every cut before it breaks the
     * header (the message says where), every cut after it a tensor's bytes. */
    const size_t cuts[] = {0, 3, 4, 7, 8, 15, 23, 24, 31, 100, 1000, 2000, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_all(out, b, cuts[i]);
        open_fails(out, MOE_ERROR_FORMAT, cuts[i] < 4 ? "not a GGUF file" : "truncated");
    }
    char *c = malloc(n);
    memcpy(c, b, n);
    c[0] = 'X';
    write_all(out, c, n);
    open_fails(out, MOE_ERROR_FORMAT, "not a GGUF file");
    const struct {
        size_t at;
        uint8_t v[8];
        int len;
        const char *what;
    } patches[] = {
        {4, {1, 0, 0, 0}, 4, "version 1"},
        {4, {4, 0, 0, 0}, 4, "version 4"},
        {4, {0, 0, 0, 3}, 4, "big-endian"},
        {8, {0, 0, 0, 0, 0, 0, 0, 1}, 8, "more than its"},  /* n_tensors 2^56 */
        {16, {0, 0, 0, 0, 0, 0, 1, 0}, 8, "more than its"}, /* n_kv 2^48 */
    };
    for (size_t i = 0; i < sizeof patches / sizeof patches[0]; i++) {
        memcpy(c, b, n);
        memcpy(c + patches[i].at, patches[i].v, (size_t)patches[i].len);
        write_all(out, c, n);
        open_fails(out, MOE_ERROR_FORMAT, patches[i].what);
    }
    /* A tensor renamed in the header: the layer needs it and names it. */
    memcpy(c, b, n);
    const char *name = "blk.0.ffn_up_exps.weight";
    char *hit = NULL;
    for (size_t i = 0; i + strlen(name) <= n && !hit; i++)
        if (!memcmp(c + i, name, strlen(name))) hit = c + i;
    CHECK(hit != NULL, "%s has no tensor %s", path, name);
    if (hit) {
        hit[13] = 'X'; /* blk.0.ffn_up_Xxps.weight */
        write_all(out, c, n);
        /* Without ffn_up_exps the layer looks for the per-expert tensors and says neither is there. */
        layer_fails(ctx, out, 0, MOE_ERROR_FORMAT, "no experts");
    }
    remove(out);
    free(c);
    free(b);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_gguf BACKEND DATA_DIR\n");
        return 2;
    }
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    g_dir = argv[2];
    char ipath[1024];
    snprintf(ipath, sizeof ipath, "%s/index.json", g_dir);
    size_t n = 0;
    char *text = read_all(ipath, &n);
    cJSON *index = text ? cJSON_Parse(text) : NULL;
    CHECK(cJSON_IsArray(index), "%s: cannot read a JSON array", ipath);
    int cases = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, index)
    {
        run_case(ctx, e);
        cases++;
    }
    CHECK(cases >= 19, "index.json lists %d cases, 19 expected", cases);
    cJSON_Delete(index);
    free(text);
    if (kind == MOE_BACKEND_CPU) { /* the errors do not depend on the backend */
        char tmp[768];
        CHECK(h_make_temp_dir("moe-gguf-", tmp, sizeof tmp) != NULL, "mkdtemp failed");
        errors(ctx, tmp);
        rmdir(tmp);
        tensor_infos();
    }
    moe_context_destroy(ctx);
    return h_finish("gguf");
}
