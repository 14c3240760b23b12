/*
 * model_internal.h — what the Hugging Face checkpoint loader shares between its files: a
 * parsed safetensors file (safetensors.c), a parsed config.json reduced to what a MoE block
 * needs (config.c), and the model object itself (model.c). The parsers work on bytes in
 * memory so the fuzz target (fuzz/) can drive them without files.
 */
#ifndef MOE_MODEL_INTERNAL_H
#define MOE_MODEL_INTERNAL_H

#include "../alloc.h"
#include "../file.h"
#include "../internal.h"
#include "../json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- safetensors (safetensors.c) ----------------------------------------------------------- */

#define MOE_ST_MAX_DIMS 8
/* The format's own bound on the JSON header (safetensors refuses larger ones too). */
#define MOE_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef enum moe_st_dtype {
    MOE_ST_F32,
    MOE_ST_F16,
    MOE_ST_BF16, /* the ones a layer accepts */
    MOE_ST_OTHER /* any other dtype the format knows (I64, F8_E4M3, ...) */
} moe_st_dtype;

typedef struct moe_st_tensor {
    const char *name;       /* points into the file's name pool */
    const char *dtype_name; /* as the header spells it */
    moe_st_dtype dtype;
    int n_dims;
    int64_t shape[MOE_ST_MAX_DIMS];
    const uint8_t *data; /* inside the mapped file */
    size_t bytes;
} moe_st_tensor;

typedef struct moe_st_file {
    char *path; /* for messages */
    void *map;  /* the mapping (munmap on close), or NULL for parsed memory */
    size_t map_bytes;
    moe_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    char *names; /* name pool */
} moe_st_file;

/* Parses and checks a whole safetensors file held in memory: 8-byte little-endian header
 * length, a UTF-8 JSON object of tensors, then the data; offsets in range, not overlapping,
 * sizes matching shape × dtype. Tensors point into `bytes`, which must outlive `out`.
 * MOE_ERROR_FORMAT with a message naming `path` (and the tensor) on any defect. */
moe_status moe_st_parse(moe_context *ctx, const char *path, const uint8_t *bytes, size_t size,
                        moe_st_file *out);
/* Maps `path` read-only and parses it; MOE_ERROR_IO if it is not a regular file or cannot be
 * opened or mapped. */
moe_status moe_st_open(moe_context *ctx, const char *path, moe_st_file *out);
void moe_st_close(moe_st_file *f);
const moe_st_tensor *moe_st_find(const moe_st_file *f, const char *name);

/* ---- files and JSON (safetensors.c) ---------------------------------------------------------- */

/* The largest config.json read: real ones are a few KiB (the largest, with label maps or
 * quantisation settings, a few hundred), and cJSON may take ~40 times a text's size in nodes. */
#define MOE_CONFIG_MAX_BYTES ((uint64_t)8 << 20)
/* The largest model.safetensors.index.json read: DeepSeek-V3's (91k tensors, FP8 scales
 * included) is 8.9 MB; this leaves room for models several times its size. */
#define MOE_INDEX_MAX_BYTES ((uint64_t)64 << 20)

/* Reads a whole regular file of at most `limit` bytes through the bounded reader (file.h)
 * into moe_malloc'd memory, NUL-terminated (moe_free it). `what` names the kind of file for a
 * size message. MOE_ERROR_IO (cannot open, not a regular file, read error), MOE_ERROR_FORMAT
 * (over the limit) or MOE_ERROR_OUT_OF_MEMORY, with a message naming `path`. */
moe_status moe_read_file(moe_context *ctx, const char *path, uint64_t limit, const char *what, uint8_t **out,
                         size_t *size);
/* The status of a bounded-reader error. */
moe_status moe_file_status(moe_file_error e);

/* ---- config.json (config.c) ------------------------------------------------------------------ */

typedef enum moe_hf_family {
    MOE_HF_MIXTRAL,
    MOE_HF_OLMOE,
    MOE_HF_QWEN2_MOE,
    MOE_HF_QWEN3_MOE,
    MOE_HF_DEEPSEEK_V2,
    MOE_HF_DEEPSEEK_V3,
    MOE_HF_SWITCH
} moe_hf_family;

typedef enum moe_hf_topk_method {
    MOE_HF_TOPK_GREEDY,        /* plain top-k */
    MOE_HF_TOPK_GROUP_LIMITED, /* DeepSeek-V2 group_limited_greedy: group max */
    MOE_HF_TOPK_NOAUX_TC       /* DeepSeek-V3: bias for choosing, group = sum of best two */
} moe_hf_topk_method;

#define MOE_HF_MAX_MLP_ONLY 256

typedef struct moe_hf_config {
    char model_type[64];
    moe_hf_family family;
    int64_t hidden_size;
    int64_t n_layers, n_decoder_layers;
    int64_t n_experts, top_k;
    int64_t d_ff;        /* each routed expert's width */
    int64_t d_ff_shared; /* all shared experts together; 0 = none */
    int64_t n_group, topk_group;
    moe_hf_topk_method topk_method;
    moe_score_func score_func;
    int norm_topk_prob;
    double routed_scaling_factor;
    moe_activation activation;
    int64_t expert_capacity;                          /* Switch */
    int64_t encoder_sparse_step, decoder_sparse_step; /* Switch; Qwen uses decoder_sparse_step */
    int64_t first_k_dense_replace, moe_layer_freq;    /* DeepSeek */
    int64_t mlp_only_layers[MOE_HF_MAX_MLP_ONLY];     /* Qwen */
    int n_mlp_only_layers;
} moe_hf_config;

/* Parses config.json's text (`path` for messages). MOE_ERROR_FORMAT for malformed JSON or a
 * missing / mistyped key, MOE_ERROR_UNSUPPORTED for a model_type, activation or routing
 * method this version does not run. */
moe_status moe_hf_config_parse(moe_context *ctx, const char *path, const char *text, size_t len,
                               moe_hf_config *out);
/* Whether layer `layer` (a decoder block when `decoder`) has an MoE block; -1 = out of range. */
int moe_hf_layer_is_moe(const moe_hf_config *c, int64_t layer, bool decoder);
/* The plan-time desc of a MoE block of this config (max_tokens and drop policy left 0). */
void moe_hf_config_desc(const moe_hf_config *c, moe_layer_desc *out);

#endif /* MOE_MODEL_INTERNAL_H */
