/*
 * model.c — the public moe_model API: open a Hugging Face model directory (config.json, and
 * model.safetensors or the shards model.safetensors.index.json lists) or a GGUF file
 * (gguf.c, gguf_arch.c), find the tensors of one layer's MoE block by the family's names,
 * check their shapes and types against the config, and create a layer whose expert matrices
 * are read in place from the mapped files (moe_layer_create_from_tensors converts or
 * quantises row by row during the backend upload when the storage format differs).
 */
#if !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L
#endif

#include "model_internal.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_TOKENS 1024

static char *join(const char *dir, const char *name)
{
    const size_t n = strlen(dir) + strlen(name) + 2;
    char *p = moe_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Whether the directory has an entry of that name, of any type: one that is not a regular
 * file (a directory, a FIFO, a dangling link) is then refused by the reader for what it is,
 * not reported as missing. */
static bool entry_exists(const char *path)
{
    const char *kind;
    return moe_file_path_type(path, false, &kind, NULL, 0) != MOE_PATH_NONE;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const moe_model_tensor *)a)->t->name, ((const moe_model_tensor *)b)->t->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const moe_model_tensor *moe_model_find_tensor(const moe_model *m, const char *name)
{
    const moe_file_tensor key = {.name = name};
    const moe_model_tensor k = {&key, 0};
    return m->n_tensors ? bsearch(&k, m->tensors, m->n_tensors, sizeof k, cmp_tensor) : NULL;
}

/* A shard name from the index must name a file in the model directory, nothing else. */
static bool plain_file_name(const char *s)
{
    return s[0] && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/') && !strchr(s, '\\');
}

/* Reads model.safetensors.index.json: the distinct shard names its weight_map uses (sorted),
 * and the parsed JSON to check the map against the shards afterwards. */
static moe_status read_index(const char *path, cJSON **out_root, const char ***out_names, int *out_n)
{
    uint8_t *text = NULL;
    size_t len = 0;
    moe_status st =
        moe_read_file(NULL, path, MOE_INDEX_MAX_BYTES, "a model.safetensors.index.json", &text, &len);
    if (st != MOE_OK) return st;
    cJSON *root = NULL;
    st = moe_json_parse(NULL, path, (const char *)text, len, &root);
    moe_free(text);
    if (st != MOE_OK) return st;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return moe_fail(NULL, MOE_ERROR_FORMAT, "%s: has no \"weight_map\" object", path);
    }
    const int n_entries = cJSON_GetArraySize(map);
    const char **names = moe_calloc(n_entries > 0 ? (size_t)n_entries : 1, sizeof *names);
    if (!names) {
        cJSON_Delete(root);
        return moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    int n = 0;
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !plain_file_name(e->valuestring)) {
            st = moe_fail(NULL, MOE_ERROR_FORMAT,
                          "%s: weight_map entry '%s' does not name a file in the directory", path, e->string);
            moe_free(names);
            cJSON_Delete(root);
            return st;
        }
        names[n++] = e->valuestring;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || strcmp(names[u - 1], names[i])) names[u++] = names[i];
    if (u == 0) {
        moe_free(names);
        cJSON_Delete(root);
        return moe_fail(NULL, MOE_ERROR_FORMAT, "%s: weight_map lists no tensors", path);
    }
    *out_root = root;
    *out_names = names;
    *out_n = u;
    return MOE_OK;
}

/* Builds the sorted tensor table of every file; a name in two files is an error. */
moe_status moe_model_index_tensors(moe_model *m)
{
    size_t total = 0;
    for (int f = 0; f < m->n_files; f++) total += m->files[f].n_tensors;
    m->tensors = moe_calloc(total ? total : 1, sizeof *m->tensors);
    if (!m->tensors) return moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    for (int f = 0; f < m->n_files; f++)
        for (size_t i = 0; i < m->files[f].n_tensors; i++)
            m->tensors[m->n_tensors++] = (moe_model_tensor){&m->files[f].tensors[i], f};
    qsort(m->tensors, m->n_tensors, sizeof *m->tensors, cmp_tensor);
    for (size_t i = 1; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].t->name, m->tensors[i - 1].t->name))
            return moe_fail(NULL, MOE_ERROR_FORMAT, "tensor '%s' is in both %s and %s", m->tensors[i].t->name,
                            m->files[m->tensors[i - 1].file].path, m->files[m->tensors[i].file].path);
    return MOE_OK;
}

static moe_status open_weights(moe_model *m)
{
    char *single = join(m->dir, "model.safetensors");
    char *index = join(m->dir, "model.safetensors.index.json");
    moe_status st = MOE_OK;
    cJSON *root = NULL;
    const char **names = NULL;
    int n = 1;
    if (!single || !index) {
        st = moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    } else if (entry_exists(single)) {
        m->weights_label = single;
        single = NULL;
    } else if (entry_exists(index)) {
        st = read_index(index, &root, &names, &n);
        if (st == MOE_OK) {
            m->weights_label = index;
            index = NULL;
        }
    } else {
        st = moe_fail(NULL, MOE_ERROR_IO,
                      "%s: neither model.safetensors nor model.safetensors.index.json exists", m->dir);
    }
    if (st == MOE_OK) {
        m->files = moe_calloc((size_t)n, sizeof *m->files);
        if (!m->files) st = moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    for (int f = 0; f < n && st == MOE_OK; f++) {
        char *path = names ? join(m->dir, names[f]) : NULL;
        if (names && !path) {
            st = moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
            break;
        }
        st = moe_st_open(NULL, names ? path : m->weights_label, &m->files[f]);
        if (st == MOE_OK) m->n_files++;
        moe_free(path);
    }
    if (st == MOE_OK) st = moe_model_index_tensors(m);
    if (st == MOE_OK && root) { /* every tensor the index maps must be in the shard it names */
        const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
        for (const cJSON *e = map->child; e && st == MOE_OK; e = e->next) {
            const moe_model_tensor *t = moe_model_find_tensor(m, e->string);
            const char *slash = t ? strrchr(m->files[t->file].path, '/') : NULL;
            if (!t || strcmp(slash ? slash + 1 : "", e->valuestring))
                st = moe_fail(NULL, MOE_ERROR_FORMAT,
                              "%s: weight_map puts tensor '%s' in %s, which does not hold it",
                              m->weights_label, e->string, e->valuestring);
        }
    }
    moe_free(names);
    cJSON_Delete(root);
    moe_free(single);
    moe_free(index);
    return st;
}

/* A GGUF model: the file (and its split siblings), then its architecture. */
static moe_status open_gguf(moe_model *m, const char *path)
{
    moe_status st = moe_gguf_open_files(NULL, m, path);
    if (st == MOE_OK) st = moe_model_index_tensors(m);
    if (st == MOE_OK) st = moe_gguf_read_arch(NULL, m);
    return st;
}

moe_status moe_model_open(const char *path, moe_model **out)
{
    moe_clear_error(NULL);
    if (!path) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "path is NULL");
    if (!out) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "out_model is NULL");
    const char *kind;
    char why[256];
    const moe_path_type type = moe_file_path_type(path, true, &kind, why, sizeof why);
    if (type == MOE_PATH_NONE)
        return moe_fail(NULL, MOE_ERROR_IO, "%s: cannot open the model: %s", path, why);
    const bool dir = type == MOE_PATH_DIRECTORY;
    if (!dir && type != MOE_PATH_REGULAR)
        return moe_fail(NULL, MOE_ERROR_IO, "%s: is %s; a model is a Hugging Face directory or a GGUF file",
                        path, kind);

    moe_model *m = moe_calloc(1, sizeof *m);
    if (m) atomic_init(&m->refs, 1);
    char *cfg_path = dir ? join(path, "config.json") : NULL;
    if (!m || (dir && !cfg_path) || !(m->dir = moe_malloc(strlen(path) + 1))) {
        moe_free(cfg_path);
        moe_model_close(m);
        return moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    strcpy(m->dir, path);
    moe_status st = MOE_OK;
    if (dir) {
        uint8_t *text = NULL;
        size_t len = 0;
        st = moe_read_file(NULL, cfg_path, MOE_CONFIG_MAX_BYTES, "a config.json", &text, &len);
        if (st == MOE_OK) st = moe_hf_config_parse(NULL, cfg_path, (const char *)text, len, &m->cfg);
        moe_free(text);
        if (st == MOE_OK) st = open_weights(m);
    } else {
        m->gguf = true;
        st = open_gguf(m, path);
    }
    moe_free(cfg_path);
    if (st != MOE_OK) {
        moe_model_close(m);
        return st;
    }
    *out = m;
    return MOE_OK;
}

void moe_model_close(moe_model *m)
{
    /* The last reference frees: a layer with an expert cache keeps the files it uploads from. */
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    for (int f = 0; f < m->n_files; f++) moe_tensor_file_close(&m->files[f]);
    moe_free(m->files);
    moe_free(m->tensors);
    moe_free(m->arch.moe_layer);
    moe_free(m->weights_label);
    moe_free(m->dir);
    moe_free(m);
}

/* 1 / 0 as moe_hf_layer_is_moe, -1 out of range; a GGUF layer has a block when it has a router. */
static int layer_is_moe(const moe_model *m, int64_t layer, bool decoder)
{
    if (!m->gguf) return moe_hf_layer_is_moe(&m->cfg, layer, decoder);
    if (decoder || layer < 0 || layer >= m->cfg.n_layers) return -1;
    return m->arch.moe_layer[layer];
}

moe_status moe_model_get_info(const moe_model *m, moe_model_info *info)
{
    moe_clear_error(NULL);
    if (!m || !info) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "%s is NULL", m ? "info" : "model");
    size_t bytes;
    const moe_status ast = moe_abi_check(NULL, &moe_abi_model_info, info, &bytes);
    if (ast != MOE_OK) return ast;
    moe_model_info i = {.struct_size = sizeof i};
    snprintf(i.model_type, sizeof i.model_type, "%s", m->cfg.model_type);
    i.n_layers = m->cfg.n_layers;
    i.n_decoder_layers = m->cfg.family == MOE_HF_SWITCH && !m->gguf ? m->cfg.n_decoder_layers : 0;
    i.hidden_size = m->cfg.hidden_size;
    i.n_experts = m->cfg.n_experts;
    i.top_k = m->cfg.top_k;
    i.first_moe_layer = -1;
    for (int64_t l = 0; l < m->cfg.n_layers; l++)
        if (layer_is_moe(m, l, false) == 1) {
            if (i.first_moe_layer < 0) i.first_moe_layer = l;
            i.n_moe_layers++;
        }
    i.n_files = m->n_files;
    i.n_tensors = (int64_t)m->n_tensors;
    return moe_abi_out(NULL, &moe_abi_model_info, info, &i);
}

moe_status moe_model_get_tensor_info(const moe_model *m, int64_t index, moe_model_tensor_info *info)
{
    moe_clear_error(NULL);
    if (!m || !info) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "%s is NULL", m ? "info" : "model");
    size_t bytes;
    const moe_status ast = moe_abi_check(NULL, &moe_abi_model_tensor_info, info, &bytes);
    if (ast != MOE_OK) return ast;
    if (index < 0 || (uint64_t)index >= m->n_tensors)
        return moe_fail(NULL, MOE_ERROR_INVALID_ARGUMENT,
                        "tensor index %lld is out of range: the model has %zu", (long long)index,
                        m->n_tensors);
    const moe_model_tensor *mt = &m->tensors[index];
    const moe_file_tensor *t = mt->t;
    moe_model_tensor_info i = {
        .struct_size = sizeof i, .dtype = t->dtype, .n_dims = t->n_dims, .bytes = t->bytes, .file = mt->file};
    snprintf(i.name, sizeof i.name, "%s", t->name);
    snprintf(i.type, sizeof i.type, "%s", t->dtype_name);
    for (int d = 0; d < t->n_dims && d < MOE_MODEL_TENSOR_MAX_DIMS; d++) i.shape[d] = t->shape[d];
    return moe_abi_out(NULL, &moe_abi_model_tensor_info, info, &i);
}

int moe_model_layer_is_moe(const moe_model *m, int64_t layer, int decoder)
{
    return m && layer_is_moe(m, layer, decoder != 0) == 1;
}

/* ---- one layer's tensors ------------------------------------------------------------------- */

static void fmt_shape(char *buf, size_t n, const int64_t *shape, int n_dims)
{
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < n_dims && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

const moe_file_tensor *moe_lookup_need(moe_lookup *lk, const char *suffix, int64_t batch, int64_t rows,
                                       int64_t cols, const char *why, bool optional)
{
    if (lk->st != MOE_OK) return NULL;
    char name[2 * MOE_NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s%s", lk->prefix, suffix);
    const moe_model_tensor *mt = moe_model_find_tensor(lk->m, name);
    if (!mt) {
        if (!optional)
            lk->st = moe_fail(lk->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' is missing (%s)",
                              lk->m->weights_label, name, why);
        return NULL;
    }
    const moe_file_tensor *t = mt->t;
    const char *file = lk->m->files[mt->file].path;
    if (t->dtype == MOE_DTYPE_DEFAULT) {
        lk->st = moe_fail(
            lk->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has type %s, which this version does not read (%s)",
            file, name, t->dtype_name,
            lk->m->gguf ? "it reads F32, F16, BF16, Q8_0, Q4_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and MXFP4"
                        : "F32, F16 or BF16 expected");
        return NULL;
    }
    const int64_t want3[3] = {batch, rows, cols}, want2[2] = {rows < 0 ? 1 : rows, cols}, want1[1] = {cols};
    bool ok;
    if (batch > 0)
        ok = t->n_dims == 3 && !memcmp(t->shape, want3, sizeof want3);
    else if (rows != 0 && t->n_dims == 2)
        ok = !memcmp(t->shape, want2, sizeof want2);
    else
        ok = rows <= 0 && t->n_dims == 1 && t->shape[0] == cols;
    if (!ok) {
        char got[160], want[96];
        fmt_shape(got, sizeof got, t->shape, t->n_dims);
        if (batch > 0)
            fmt_shape(want, sizeof want, want3, 3);
        else if (rows == 0)
            fmt_shape(want, sizeof want, want1, 1);
        else
            fmt_shape(want, sizeof want, want2, 2);
        lk->st = moe_fail(lk->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' has shape %s; %s expected (%s)", file,
                          name, got, want, why);
        return NULL;
    }
    return t;
}

moe_tensor_view moe_view_of(const moe_file_tensor *t)
{
    return t ? (moe_tensor_view){t->data, t->bytes, t->dtype, NULL, 0}
             : (moe_tensor_view){NULL, 0, MOE_DTYPE_F32, NULL, 0};
}

moe_tensor_view moe_view_expert(const moe_file_tensor *t, int64_t e, int64_t n_experts)
{
    const size_t each = t->bytes / (size_t)n_experts;
    return (moe_tensor_view){t->data + (size_t)e * each, each, t->dtype, NULL, 0};
}

/* A U8 tensor of exactly `shape` (gpt-oss's MXFP4 blocks and scales), or NULL and lk->st. */
static const moe_file_tensor *u8_need(moe_lookup *lk, const char *suffix, const int64_t *shape, int n_dims,
                                      const char *why)
{
    if (lk->st != MOE_OK) return NULL;
    char name[2 * MOE_NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s%s", lk->prefix, suffix);
    const moe_model_tensor *mt = moe_model_find_tensor(lk->m, name);
    if (!mt) {
        lk->st = moe_fail(lk->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' is missing (%s)", lk->m->weights_label,
                          name, why);
        return NULL;
    }
    const moe_file_tensor *t = mt->t;
    if (strcmp(t->dtype_name, "U8") || t->n_dims != n_dims ||
        memcmp(t->shape, shape, sizeof(int64_t) * (size_t)n_dims)) {
        char got[160], want[96];
        fmt_shape(got, sizeof got, t->shape, t->n_dims);
        fmt_shape(want, sizeof want, shape, n_dims);
        lk->st = moe_fail(lk->ctx, MOE_ERROR_FORMAT, "%s: tensor '%s' is %s %s; U8 %s expected (%s)",
                          lk->m->files[mt->file].path, name, t->dtype_name, got, want, why);
        return NULL;
    }
    return t;
}

/* gpt-oss as transformers' GptOssMLP holds it (the released checkpoints): router.{weight,bias};
 * the experts in MXFP4, gate_up_proj_{blocks,scales} [E, 2·d_ff, hidden/32, (16)] with gate's and
 * up's rows interleaved (even: gate, odd: up), down_proj_{blocks,scales} [E, hidden, d_ff/32,
 * (16)], and the biases gate_up_proj_bias [E, 2·d_ff] (interleaved the same way), down_proj_bias
 * [E, hidden]. A checkpoint whose experts are dequantised (gate_up_proj [E, hidden, 2·d_ff], the
 * transpose of the other projections' layout) is refused by name. */
static moe_status gpt_oss_lookup(moe_lookup *lk, moe_layer_desc *d, moe_layer_refs *refs)
{
    const int64_t D = d->d_model, F = d->d_ff, E = d->n_experts;
    char why[160];
    snprintf(why, sizeof why, "router: [n_experts=%lld, hidden=%lld]", (long long)E, (long long)D);
    const moe_file_tensor *router = moe_lookup_need(lk, "router.weight", 0, E, D, why, false);
    const moe_file_tensor *rb =
        moe_lookup_need(lk, "router.bias", 0, 0, E, "router bias: [n_experts]", false);
    if (lk->st == MOE_OK && (D % MOE_BLOCK_SIZE || F % MOE_BLOCK_SIZE))
        lk->st = moe_fail(lk->ctx, MOE_ERROR_FORMAT,
                          "%s: hidden_size (%lld) and intermediate_size (%lld) must be multiples of 32 for "
                          "MXFP4 experts",
                          lk->m->weights_label, (long long)D, (long long)F);
    char name[2 * MOE_NAME_MAX_LEN];
    snprintf(name, sizeof name, "%sexperts.gate_up_proj", lk->prefix);
    if (lk->st == MOE_OK && moe_model_find_tensor(lk->m, name))
        lk->st =
            moe_fail(lk->ctx, MOE_ERROR_UNSUPPORTED,
                     "%s: layer's experts are dequantised ('%s', [E, hidden, 2*d_ff]); this version reads "
                     "gpt-oss's experts as released, MXFP4 (experts.gate_up_proj_blocks / _scales)",
                     lk->m->weights_label, name);
    snprintf(why, sizeof why,
             "MXFP4 experts: [E=%lld, 2*d_ff=%lld, hidden/32=%lld, 16] (down: [E, hidden, d_ff/32, 16])",
             (long long)E, (long long)(2 * F), (long long)(D / 32));
    const int64_t gub[4] = {E, 2 * F, D / 32, 16}, dnb[4] = {E, D, F / 32, 16};
    const moe_file_tensor *gu = u8_need(lk, "experts.gate_up_proj_blocks", gub, 4, why);
    const moe_file_tensor *gus = u8_need(lk, "experts.gate_up_proj_scales", gub, 3, why);
    const moe_file_tensor *dn = u8_need(lk, "experts.down_proj_blocks", dnb, 4, why);
    const moe_file_tensor *dns = u8_need(lk, "experts.down_proj_scales", dnb, 3, why);
    snprintf(why, sizeof why, "expert biases: [E=%lld, 2*d_ff=%lld] (down: [E, hidden=%lld])", (long long)E,
             (long long)(2 * F), (long long)D);
    const moe_file_tensor *gub_b = moe_lookup_need(lk, "experts.gate_up_proj_bias", 0, E, 2 * F, why, false);
    const moe_file_tensor *dn_b = moe_lookup_need(lk, "experts.down_proj_bias", 0, E, D, why, false);
    if (lk->st != MOE_OK) return lk->st;
    d->weight_dtype = d->down_weight_dtype = MOE_DTYPE_MXFP4;
    if (!refs) return MOE_OK;
    refs->router = moe_view_of(router);
    refs->bias = moe_view_of(rb);
    refs->gate_up_bias = moe_view_of(gub_b);
    refs->down_bias = moe_view_of(dn_b);
    const size_t row_q = (size_t)(D / 32) * 16, row_s = (size_t)(D / 32); /* a gate_up row's bytes */
    const size_t drow_q = (size_t)(F / 32) * 16, drow_s = (size_t)(F / 32);
    for (int64_t e = 0; e < E; e++) {
        const size_t gu_row0 = (size_t)(e * 2 * F), dn_row0 = (size_t)(e * D);
        for (int h = 0; h < 2; h++) /* gate: the even rows, up: the odd */
            (h ? refs->up : refs->gate)[e] =
                (moe_tensor_view){gu->data + (gu_row0 + (size_t)h) * row_q, (size_t)F * (row_q + row_s),
                                  MOE_DTYPE_MXFP4, gus->data + (gu_row0 + (size_t)h) * row_s, 2};
        refs->down[e] = (moe_tensor_view){dn->data + dn_row0 * drow_q, (size_t)D * (drow_q + drow_s),
                                          MOE_DTYPE_MXFP4, dns->data + dn_row0 * drow_s, 1};
    }
    return MOE_OK;
}

/* A Hugging Face layer's tensors by the family's names. */
static moe_status hf_lookup(moe_context *ctx, const moe_model *m, int64_t layer, bool dec,
                            moe_layer_desc *out, moe_layer_refs *refs)
{
    const moe_hf_config *c = &m->cfg;
    moe_layer_desc d;
    moe_hf_config_desc(c, &d);
    const int64_t D = d.d_model, F = d.d_ff, E = d.n_experts, FS = d.d_ff_shared;
    moe_lookup lk = {.ctx = ctx, .m = m};
    const char *block, *g, *u, *dn, *ex, *shared = "shared_experts.";
    switch (c->family) {
    case MOE_HF_MIXTRAL:
        block = "block_sparse_moe", ex = "experts.%lld.", g = "w1", u = "w3", dn = "w2";
        break;
    case MOE_HF_SWITCH:
        block = NULL, ex = "experts.expert_%lld.", g = NULL, u = "wi", dn = "wo";
        break;
    default:
        block = "mlp", ex = "experts.%lld.", g = "gate_proj", u = "up_proj", dn = "down_proj";
        break;
    }
    if (c->family == MOE_HF_QWEN2_MOE) shared = "shared_expert.";
    if (c->family == MOE_HF_GPT_OSS) {
        snprintf(lk.prefix, sizeof lk.prefix, "model.layers.%lld.mlp.", (long long)layer);
        const moe_status st = gpt_oss_lookup(&lk, &d, refs);
        *out = d;
        return st;
    }
    if (block)
        snprintf(lk.prefix, sizeof lk.prefix, "model.layers.%lld.%s.", (long long)layer, block);
    else
        snprintf(lk.prefix, sizeof lk.prefix, "%s.block.%lld.layer.%d.mlp.", dec ? "decoder" : "encoder",
                 (long long)layer, dec ? 2 : 1);
    char why[128];
    snprintf(why, sizeof why, "router: [n_experts=%lld, hidden=%lld]", (long long)E, (long long)D);
    const moe_file_tensor *router = moe_lookup_need(
        &lk, c->family == MOE_HF_SWITCH ? "router.classifier.weight" : "gate.weight", 0, E, D, why, false);
    const moe_file_tensor *bias = NULL;
    if (d.has_selection_bias)
        bias = moe_lookup_need(&lk, "gate.e_score_correction_bias", 0, 0, E, "selection bias: [n_experts]",
                               false);
    if (refs) {
        refs->router = moe_view_of(router);
        refs->bias = moe_view_of(bias);
    }
    for (int64_t e = 0; e < E && lk.st == MOE_OK; e++) {
        char base[64], name[128];
        snprintf(base, sizeof base, ex, (long long)e);
        snprintf(why, sizeof why, "expert %lld of %lld: d_ff=%lld, hidden=%lld", (long long)e, (long long)E,
                 (long long)F, (long long)D);
        const moe_file_tensor *tg = NULL, *tu, *td;
        if (g) {
            snprintf(name, sizeof name, "%s%s.weight", base, g);
            tg = moe_lookup_need(&lk, name, 0, F, D, why, false);
        }
        snprintf(name, sizeof name, "%s%s.weight", base, u);
        tu = moe_lookup_need(&lk, name, 0, F, D, why, false);
        if (e == 0 && tu) d.weight_dtype = tu->dtype; /* the checkpoint's own format */
        snprintf(name, sizeof name, "%s%s.weight", base, dn);
        td = moe_lookup_need(&lk, name, 0, D, F, why, false);
        if (refs) {
            if (refs->gate) refs->gate[e] = moe_view_of(tg);
            refs->up[e] = moe_view_of(tu), refs->down[e] = moe_view_of(td);
        }
    }
    if (FS > 0) {
        char name[64];
        snprintf(why, sizeof why, "shared experts: d_ff_shared=%lld, hidden=%lld", (long long)FS,
                 (long long)D);
        snprintf(name, sizeof name, "%sgate_proj.weight", shared);
        const moe_file_tensor *sg = moe_lookup_need(&lk, name, 0, FS, D, why, false);
        snprintf(name, sizeof name, "%sup_proj.weight", shared);
        const moe_file_tensor *su = moe_lookup_need(&lk, name, 0, FS, D, why, false);
        if (su) d.shared_weight_dtype = su->dtype;
        snprintf(name, sizeof name, "%sdown_proj.weight", shared);
        const moe_file_tensor *sd = moe_lookup_need(&lk, name, 0, D, FS, why, false);
        const moe_file_tensor *seg = d.shared_expert_gate
                                         ? moe_lookup_need(&lk, "shared_expert_gate.weight", 0, -1, D,
                                                           "shared expert gate: [1, hidden]", false)
                                         : NULL;
        if (refs)
            refs->shared_gate = moe_view_of(sg), refs->shared_up = moe_view_of(su),
            refs->shared_down = moe_view_of(sd), refs->seg = moe_view_of(seg);
    }
    *out = d;
    return lk.st;
}

static moe_status layer_lookup(moe_context *ctx, const moe_model *m, int64_t layer,
                               const moe_model_layer_options *opts_in, moe_layer_desc *out_desc,
                               moe_layer_refs *refs)
{
    if (!m) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "model is NULL");
    moe_model_layer_options o = {.struct_size = sizeof o};
    if (opts_in) {
        const moe_status ast = moe_abi_in(ctx, &moe_abi_model_layer_options, opts_in, &o);
        if (ast != MOE_OK) return ast;
    }
    const moe_hf_config *c = &m->cfg;
    if (o.max_tokens < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_SIZE, "max_tokens must be >= 0 (got %lld)",
                        (long long)o.max_tokens);
    if (o.decoder && (m->gguf || c->family != MOE_HF_SWITCH))
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "%s: only switch_transformers has decoder blocks, not %s", m->dir, c->model_type);
    const bool dec = o.decoder != 0;
    const int is_moe = layer_is_moe(m, layer, dec);
    if (is_moe < 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT, "%s: layer %lld is out of range: the %s has %lld %s",
                        m->dir, (long long)layer, dec ? "decoder" : "model",
                        (long long)(dec ? c->n_decoder_layers : c->n_layers),
                        c->family == MOE_HF_SWITCH && !m->gguf ? "blocks" : "layers");
    if (is_moe == 0)
        return moe_fail(ctx, MOE_ERROR_INVALID_ARGUMENT,
                        "%s: layer %lld of this %s model has no MoE block (it is a dense layer)", m->dir,
                        (long long)layer, c->model_type);

    moe_layer_desc d;
    moe_status st =
        m->gguf ? moe_gguf_layer_lookup(ctx, m, layer, &d, refs) : hf_lookup(ctx, m, layer, dec, &d, refs);
    if (st != MOE_OK) return st;
    d.max_tokens = o.max_tokens ? o.max_tokens : DEFAULT_MAX_TOKENS;
    d.drop_policy = o.drop_policy;
    /* A format asked for is every projection's (a file's own may differ between them). */
    if (o.weight_dtype != MOE_DTYPE_DEFAULT) d.weight_dtype = d.down_weight_dtype = o.weight_dtype;
    if (o.shared_weight_dtype != MOE_DTYPE_DEFAULT)
        d.shared_weight_dtype = d.shared_down_weight_dtype = o.shared_weight_dtype;
    d.activation_dtype = o.activation_dtype;
    moe_layer_desc norm;
    st = moe_validate_layer(ctx, &d, NULL, &norm);
    if (st != MOE_OK) return st;
    *out_desc = norm;
    return MOE_OK;
}

moe_status moe_model_layer_desc(const moe_model *m, int64_t layer, const moe_model_layer_options *options,
                                moe_layer_desc *out_desc)
{
    moe_clear_error(NULL);
    if (!m || !out_desc)
        return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "%s is NULL", m ? "out_desc" : "model");
    size_t bytes;
    moe_status st = moe_abi_check(NULL, &moe_abi_layer_desc, out_desc, &bytes);
    if (st != MOE_OK) return st;
    moe_layer_desc full;
    st = layer_lookup(NULL, m, layer, options, &full, NULL);
    if (st != MOE_OK) return st;
    /* A caller's desc from before 0.7.0 would lose the fields a gpt-oss layer is made of and
     * describe another layer (no biases), which moe_layer_create would accept: refused. */
    if (bytes < MOE_ABI_END(moe_layer_desc, swiglu_limit) &&
        (full.router_has_bias || full.expert_has_bias || full.activation == MOE_ACTIVATION_SWIGLU_OAI))
        return moe_fail(NULL, MOE_ERROR_UNSUPPORTED,
                        "%s: layer %lld is a %s block, which needs moe_layer_desc 0.7.0's fields "
                        "(router_has_bias, expert_has_bias, swiglu_*); out_desc's struct_size %zu is older",
                        m->dir, (long long)layer, m->cfg.model_type, out_desc->struct_size);
    return moe_abi_out(NULL, &moe_abi_layer_desc, out_desc, &full);
}

/* ---- creating the layer -------------------------------------------------------------------- */

/* Host copies a layer needs only while it is created: the small float vectors, and any
 * tensor whose bytes are not aligned to its element size in the file. */
typedef struct temps {
    void **p;
    size_t n, cap;
} temps;

static void *temp_alloc(temps *t, size_t bytes)
{
    if (t->n == t->cap) {
        const size_t cap = t->cap ? 2 * t->cap : 16;
        void **p = moe_realloc(t->p, cap * sizeof *p);
        if (!p) return NULL;
        t->p = p, t->cap = cap;
    }
    void *b = moe_malloc(bytes ? bytes : 1);
    if (b) t->p[t->n++] = b;
    return b;
}

static void temps_free(temps *t)
{
    for (size_t i = 0; i < t->n; i++) moe_free(t->p[i]);
    moe_free(t->p);
}

/* The view as a matrix source: in place, or an aligned copy when the file's offset is not a
 * multiple of the element size (safetensors does not promise alignment, nor does a GGUF file
 * with general.alignment 1). NULL data = OOM. */
static moe_matrix_src src_of(const moe_tensor_view *v, temps *tmp)
{
    if (!v->data) return (moe_matrix_src){NULL, MOE_DTYPE_F32, NULL, 0};
    if (v->hf_scales) return (moe_matrix_src){v->data, v->dtype, v->hf_scales, v->hf_row_step}; /* bytes */
    /* MXFP4's 17-byte blocks put every other expert at an odd offset; its rows are read byte by
     * byte (dtype.c), so no copy for it. */
    const size_t align = v->dtype == MOE_DTYPE_F32 ? 4 : v->dtype == MOE_DTYPE_MXFP4 ? 1 : 2;
    if ((uintptr_t)v->data % align == 0) return (moe_matrix_src){v->data, v->dtype, NULL, 0};
    void *copy = temp_alloc(tmp, v->bytes);
    if (copy) memcpy(copy, v->data, v->bytes);
    return (moe_matrix_src){copy, v->dtype, NULL, 0};
}

/* A small vector converted to float32. */
static const float *floats_of(const moe_tensor_view *t, int64_t n, temps *tmp, bool *oom)
{
    if (!t->data) return NULL;
    const moe_matrix_src s = src_of(t, tmp);
    float *v = s.data ? temp_alloc(tmp, sizeof(float) * (size_t)n) : NULL;
    if (!v) {
        *oom = true;
        return NULL;
    }
    moe_matrix_row(&s, n, 0, v);
    return v;
}

/* A placed layer's sources (moe_source_owner): the model, one reference more, and the copies
 * made for its tensors, kept while an expert cache may upload from them. */
typedef struct kept_sources {
    moe_model *m;
    temps tmp;
} kept_sources;

static void release_sources(void *p)
{
    kept_sources *k = p;
    temps_free(&k->tmp);
    moe_model_close(k->m);
    moe_free(k);
}

/* moe_model_create_layer, with a placement (checked; its home is ctx) _placed, and with a
 * transport (read; *collective set once moe_ep_create, which takes it, has run) _ep: then only
 * the rank's experts are read from the files. */
static moe_status create_layer(moe_context *ctx, const moe_placement *placement, const moe_ep_transport *ep,
                               bool *collective, const moe_model *m, int64_t layer,
                               const moe_model_layer_options *options, moe_layer **out)
{
    if (!ctx) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "context is NULL");
    if (!out) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "out_layer is NULL");
    if (!m) return moe_fail(ctx, MOE_ERROR_NULL_POINTER, "model is NULL");
    moe_status st = moe_context_check_live(ctx, "moe_model_create_layer");
    if (st != MOE_OK) return st;
    /* Check everything first, so a bad config fails before any allocation sized by it. */
    moe_layer_desc d;
    st = layer_lookup(ctx, m, layer, options, &d, NULL);
    if (st != MOE_OK) return st;
    const size_t E = (size_t)d.n_experts;
    moe_tensor_view *per = moe_calloc(3 * (E ? E : 1), sizeof *per);
    moe_matrix_src *mats = moe_calloc(3 * (E ? E : 1), sizeof *mats);
    if (!per || !mats) {
        moe_free(per);
        moe_free(mats);
        return moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory");
    }
    const bool gated = moe_activation_is_gated(d.activation);
    moe_layer_refs r = {.gate = gated ? per : NULL, .up = per + E, .down = per + 2 * E};
    temps tmp = {0};
    st = layer_lookup(ctx, m, layer, options, &d, &r);
    /* An expert-parallel rank's experts: [first, first + n); every expert otherwise. */
    int64_t first = 0, n_own = d.n_experts;
    if (st == MOE_OK && ep) st = moe_ep_partition(d.n_experts, ep->n_ranks, ep->rank, &first, &n_own);
    if (st == MOE_OK) {
        bool oom = false;
        for (size_t i = gated ? 0 : E; i < 3 * E; i++) {
            if ((int64_t)(i % E) < first || (int64_t)(i % E) >= first + n_own) continue;
            mats[i] = src_of(&per[i], &tmp);
            oom = oom || !mats[i].data;
        }
        /* gpt-oss safetensors: gate's and up's biases interleaved in one [E][2·d_ff] tensor. */
        const float *gate_bias = floats_of(&r.gate_bias, d.n_experts * d.d_ff, &tmp, &oom);
        const float *up_bias = floats_of(&r.up_bias, d.n_experts * d.d_ff, &tmp, &oom);
        const float *gu = floats_of(&r.gate_up_bias, 2 * d.n_experts * d.d_ff, &tmp, &oom);
        if (gu) {
            const size_t n = E * (size_t)d.d_ff;
            float *g = temp_alloc(&tmp, sizeof(float) * n), *u = temp_alloc(&tmp, sizeof(float) * n);
            oom = oom || !g || !u;
            for (size_t i = 0; g && u && i < n; i++) g[i] = gu[2 * i], u[i] = gu[2 * i + 1];
            gate_bias = g, up_bias = u;
        }
        const moe_layer_tensors t = {
            .router = src_of(&r.router, &tmp),
            .router_bias = floats_of(&r.bias, d.n_experts, &tmp, &oom),
            .gate = gated ? mats : NULL,
            .up = mats + E,
            .down = mats + 2 * E,
            .shared_gate = src_of(&r.shared_gate, &tmp),
            .shared_up = src_of(&r.shared_up, &tmp),
            .shared_down = src_of(&r.shared_down, &tmp),
            .shared_expert_gate = floats_of(&r.seg, d.d_model, &tmp, &oom),
            .gate_bias = gate_bias,
            .up_bias = up_bias,
            .down_bias = floats_of(&r.down_bias, d.n_experts * d.d_model, &tmp, &oom),
        };
        oom = oom || !t.router.data || (r.shared_up.data && (!t.shared_up.data || !t.shared_down.data)) ||
              (r.shared_gate.data && !t.shared_gate.data);
        if (ep) { /* the rank's own experts only: its slices of every expert tensor */
            const moe_layer_tensors local = {
                .router = t.router,
                .router_bias = t.router_bias,
                .gate = gated ? mats + first : NULL,
                .up = mats + E + first,
                .down = mats + 2 * E + first,
                .shared_gate = t.shared_gate,
                .shared_up = t.shared_up,
                .shared_down = t.shared_down,
                .shared_expert_gate = t.shared_expert_gate,
                .gate_bias = t.gate_bias ? t.gate_bias + first * d.d_ff : NULL,
                .up_bias = t.up_bias ? t.up_bias + first * d.d_ff : NULL,
                .down_bias = t.down_bias ? t.down_bias + first * d.d_model : NULL,
            };
            *collective = true;
            st = moe_ep_create(ctx, ep,
                               oom ? moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory") : MOE_OK,
                               &d, &local, out);
            temps_free(&tmp);
            moe_free(per);
            moe_free(mats);
            return st;
        }
        kept_sources *kept = placement && !oom ? moe_malloc(sizeof *kept) : NULL;
        oom = oom || (placement && !kept);
        if (kept) { /* the layer owns the copies from here, and a reference to the model */
            kept->m = (moe_model *)m;
            kept->tmp = tmp;
            tmp = (temps){0};
            atomic_fetch_add(&kept->m->refs, 1);
        }
        const moe_source_owner owner = {release_sources, kept};
        st = oom         ? moe_fail(ctx, MOE_ERROR_OUT_OF_MEMORY, "out of host memory")
             : placement ? moe_placed_create(placement, &d, &t, &owner, out)
                         : moe_layer_create_from_tensors(ctx, &d, &t, out);
    }
    temps_free(&tmp);
    moe_free(per);
    moe_free(mats);
    return st;
}

moe_status moe_model_create_layer(moe_context *ctx, const moe_model *m, int64_t layer,
                                  const moe_model_layer_options *options, moe_layer **out)
{
    moe_clear_error(ctx);
    return create_layer(ctx, NULL, NULL, NULL, m, layer, options, out);
}

moe_status moe_model_create_layer_ep(moe_context *ctx, const moe_ep_transport *transport, const moe_model *m,
                                     int64_t layer, const moe_model_layer_options *options, moe_layer **out)
{
    moe_clear_error(ctx);
    moe_ep_transport tr = {.struct_size = sizeof tr};
    moe_status st = moe_ep_transport_read(ctx, transport, &tr);
    if (st != MOE_OK) return st;
    bool collective = false;
    st = create_layer(ctx, NULL, &tr, &collective, m, layer, options, out);
    /* Failed before the collective part: it still runs, so that every rank fails together. */
    if (!collective) {
        const moe_layer_desc none = {.struct_size = sizeof none};
        const moe_layer_tensors nothing = {0};
        st = moe_ep_create(ctx, &tr, st != MOE_OK ? st : MOE_ERROR_INTERNAL, &none, &nothing, out);
    }
    return st;
}

moe_status moe_model_create_layer_placed(const moe_placement *placement, const moe_model *m, int64_t layer,
                                         const moe_model_layer_options *options, moe_layer **out)
{
    moe_clear_error(NULL);
    moe_placement p;
    moe_context *home = NULL;
    const moe_status st = moe_placement_check(placement, &p, &home);
    return st != MOE_OK ? st : create_layer(home, &p, NULL, NULL, m, layer, options, out);
}
