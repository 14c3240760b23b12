/*
 * test_hf_models.c — the independent reference cases of tests/data/hf-moe (see its README):
 * every model listed in index.json goes through moe_model_open / moe_model_create_layer on
 * the backend named by argv[1], and its output must satisfy ‖y − y_ref‖₂/‖y_ref‖₂ ≤ 1e-4.
 *
 *   test_hf_models BACKEND DATA_DIR        the suite (exit 77 when the backend has no device)
 *   test_hf_models --compare Y.npy REF.npy TOL
 *                                          compares two .npy matrices (used by check_tools.sh)
 */
#include "../tools/npy.h"
#include "harness.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>

#define HF_TOL 1e-4

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (buf) buf[n] = '\0';
    return buf;
}

static int compare(const char *a_path, const char *b_path, double tol)
{
    float *a = NULL, *b = NULL;
    int64_t ar, ac, br, bc;
    char err[512];
    if (npy_read_f32_matrix(a_path, 0, &a, &ar, &ac, err, sizeof err) ||
        npy_read_f32_matrix(b_path, 0, &b, &br, &bc, err, sizeof err)) {
        fprintf(stderr, "FAIL: %s\n", err);
        free(a);
        return 1;
    }
    int rc = 0;
    if (ar != br || ac != bc) {
        fprintf(stderr, "FAIL: shapes (%lld, %lld) and (%lld, %lld) differ\n", (long long)ar, (long long)ac,
                (long long)br, (long long)bc);
        rc = 1;
    } else {
        const double rel = h_rel_l2(a, b, (size_t)(ar * ac));
        printf("%s vs %s: relative L2 error %.3g (tolerance %g)\n", a_path, b_path, rel, tol);
        rc = rel <= tol ? 0 : 1;
    }
    free(a);
    free(b);
    return rc;
}

static void run_model(moe_context *ctx, const char *dir, const char *name, int64_t layer, int64_t T_expected)
{
    char path[1024], xp[1100], yp[1100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(xp, sizeof xp, "%s/x.npy", path);
    snprintf(yp, sizeof yp, "%s/y_ref.npy", path);
    moe_model *model = NULL;
    moe_layer *l = NULL;
    float *x = NULL, *y_ref = NULL, *y = NULL;
    moe_status st = moe_model_open(path, &model);
    CHECK(st == MOE_OK, "[%s] moe_model_open: %s: %s", name, moe_status_string(st), moe_last_error());
    if (st != MOE_OK) return;
    moe_model_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_model_get_info(model, &info), MOE_OK);
    int64_t T, D, T2, D2;
    char err[512];
    if (npy_read_f32_matrix(xp, info.hidden_size, &x, &T, &D, err, sizeof err) ||
        npy_read_f32_matrix(yp, info.hidden_size, &y_ref, &T2, &D2, err, sizeof err)) {
        CHECK(0, "[%s] %s", name, err);
        goto done;
    }
    CHECK(T == T_expected && T2 == T, "[%s] T %lld / %lld, index.json says %lld", name, (long long)T,
          (long long)T2, (long long)T_expected);
    const moe_model_layer_options opts = {.struct_size = sizeof opts, .max_tokens = T};
    st = moe_model_create_layer(ctx, model, layer, &opts, &l);
    CHECK(st == MOE_OK, "[%s] moe_model_create_layer(%lld): %s: %s", name, (long long)layer,
          moe_status_string(st), moe_context_error(ctx));
    if (st != MOE_OK) goto done;
    y = malloc(sizeof(float) * (size_t)(T * D));
    st = moe_layer_forward(l, T, x, y, NULL);
    CHECK(st == MOE_OK, "[%s] forward: %s: %s", name, moe_status_string(st), moe_context_error(ctx));
    if (st != MOE_OK) goto done;
    const double rel = h_rel_l2(y, y_ref, (size_t)(T * D));
    printf("%-40s layer %lld  T=%-3lld relative L2 error %.3g\n", name, (long long)layer, (long long)T, rel);
    CHECK(rel <= HF_TOL, "[%s] relative L2 error %.3g > %g", name, rel, HF_TOL);
done:
    moe_layer_destroy(l);
    moe_model_close(model);
    free(x);
    free(y_ref);
    free(y);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--compare")) return compare(argv[2], argv[3], atof(argv[4]));
    if (argc != 3) {
        fprintf(stderr, "usage: test_hf_models BACKEND DATA_DIR | --compare Y.npy REF.npy TOL\n");
        return 2;
    }
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    char ipath[1024];
    snprintf(ipath, sizeof ipath, "%s/index.json", argv[2]);
    char *text = read_text(ipath);
    cJSON *index = text ? cJSON_Parse(text) : NULL;
    CHECK(cJSON_IsArray(index), "%s: cannot read a JSON array", ipath);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, index)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *layer = cJSON_GetObjectItemCaseSensitive(e, "layer");
        const cJSON *T = cJSON_GetObjectItemCaseSensitive(e, "T");
        CHECK(cJSON_IsString(name) && cJSON_IsNumber(layer) && cJSON_IsNumber(T), "%s: malformed entry",
              ipath);
        if (!cJSON_IsString(name) || !cJSON_IsNumber(layer) || !cJSON_IsNumber(T)) continue;
        run_model(ctx, argv[2], name->valuestring, (int64_t)layer->valuedouble, (int64_t)T->valuedouble);
        n++;
    }
    CHECK(n == 6, "index.json lists %d models, 6 expected", n);
    cJSON_Delete(index);
    free(text);
    moe_context_destroy(ctx);
    return h_finish("hf_models");
}
