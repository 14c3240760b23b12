/*
 * model_internal.h — what the checkpoint loader shares between its files: a parsed tensor
 * file, safetensors (safetensors.c) or GGUF (gguf.c); a parsed config.json reduced to what a
 * MoE block needs (config.c); a GGUF file's architecture and keys read the same way
 * (gguf_arch.c); and the model object itself (model.c). The parsers work on bytes in memory so
 * the fuzz target (fuzz/) can drive them without files.
 */
#ifndef MOE_MODEL_INTERNAL_H
#define MOE_MODEL_INTERNAL_H

#include "../alloc.h"
#include "../file.h"
#include "../internal.h"
#include "../json.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- tensor files (safetensors.c, gguf.c, tensor_file.c) -------------------------------------------------
 */

#define MOE_ST_MAX_DIMS 8
/* The format's own bound on the JSON header (safetensors refuses larger ones too). */
#define MOE_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

/* One tensor of a mapped file, whichever the container. The shape is outermost first (numpy's
 * order; a GGUF tensor's ne[] reversed), so a stacked expert tensor is [n_experts, rows, cols]
 * in both formats. dtype is a weight format the library reads, or MOE_DTYPE_DEFAULT for any
 * other type the container knows (I64, F8_E4M3, Q4_K, ...), named by dtype_name. */
typedef struct moe_file_tensor {
    const char *name;       /* points into the file's name pool */
    const char *dtype_name; /* as the format spells it ("BF16", "Q4_K") */
    moe_dtype dtype;
    int n_dims;
    int64_t shape[MOE_ST_MAX_DIMS];
    const uint8_t *data; /* inside the mapped file */
    size_t bytes;
} moe_file_tensor;

/* A GGUF key/value pair: `val` points at the value's bytes in the file (for an array, at its
 * first element; for a string, at its characters). */
typedef enum moe_gguf_type {
    MOE_GGUF_UINT8 = 0,
    MOE_GGUF_INT8 = 1,
    MOE_GGUF_UINT16 = 2,
    MOE_GGUF_INT16 = 3,
    MOE_GGUF_UINT32 = 4,
    MOE_GGUF_INT32 = 5,
    MOE_GGUF_FLOAT32 = 6,
    MOE_GGUF_BOOL = 7,
    MOE_GGUF_STRING = 8,
    MOE_GGUF_ARRAY = 9,
    MOE_GGUF_UINT64 = 10,
    MOE_GGUF_INT64 = 11,
    MOE_GGUF_FLOAT64 = 12,
    MOE_GGUF_TYPE_COUNT = 13
} moe_gguf_type;

typedef struct moe_gguf_kv {
    const char *key; /* NUL-terminated, in the file's name pool */
    moe_gguf_type type;
    moe_gguf_type elem_type; /* an array's */
    uint64_t n;              /* a string's bytes or an array's elements */
    const uint8_t *val;
} moe_gguf_kv;

typedef struct moe_tensor_file {
    char *path; /* for messages */
    void *map;  /* the mapping (munmap on close), or NULL for parsed memory */
    size_t map_bytes;
    moe_file_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    char *names;      /* name pool */
    moe_gguf_kv *kvs; /* GGUF: the key/value pairs, sorted by key; NULL for safetensors */
    size_t n_kvs;
    uint32_t gguf_version;
} moe_tensor_file;

/* Parses and checks a whole safetensors file held in memory: 8-byte little-endian header
 * length, a UTF-8 JSON object of tensors, then the data; offsets in range, not overlapping,
 * sizes matching shape × dtype. Tensors point into `bytes`, which must outlive `out`.
 * MOE_ERROR_FORMAT with a message naming `path` (and the tensor) on any defect. */
moe_status moe_st_parse(moe_context *ctx, const char *path, const uint8_t *bytes, size_t size,
                        moe_tensor_file *out);
/* Maps `path` read-only and parses it; MOE_ERROR_IO if it is not a regular file or cannot be
 * opened or mapped. */
moe_status moe_st_open(moe_context *ctx, const char *path, moe_tensor_file *out);
/* Either format's file: unmaps it and frees what the parser made. */
void moe_tensor_file_close(moe_tensor_file *f);
const moe_file_tensor *moe_tensor_file_find(const moe_tensor_file *f, const char *name);

/* A tensor's bytes [begin, end) in its file's data, for the overlap check. */
typedef struct moe_file_span {
    uint64_t begin, end;
    const char *name;
} moe_file_span;

/* tensor_file.c: no two tensors' data overlap (empty ones take no room; sorts `spans`);
 * names sorted and unique (sorts `t`). MOE_ERROR_FORMAT naming `path` and the tensors. */
moe_status moe_check_spans(moe_context *ctx, const char *path, moe_file_span *spans, size_t n);
moe_status moe_sort_tensors(moe_context *ctx, const char *path, moe_file_tensor *t, size_t n);

/* A container's parser: checks the whole file in `bytes` and fills `out` (pointing into them). */
typedef moe_status (*moe_tensor_file_parser)(moe_context *ctx, const char *path, const uint8_t *bytes,
                                             size_t size, moe_tensor_file *out);
/* Maps the regular file `path` read-only (reads it where mapping is unavailable; `what` names
 * the kind of file for messages) and parses it; on success `out` owns the mapping. */
moe_status moe_tensor_file_open(moe_context *ctx, const char *path, const char *what,
                                moe_tensor_file_parser parse, moe_tensor_file *out);

/* ---- GGUF (gguf.c) ---------------------------------------------------------------------------- */

/* Parses and checks a whole GGUF v2/v3 file held in memory (little-endian): magic, version,
 * counts against the bytes there are, every key (non-empty, unique, a known type, no nested
 * arrays, string and array lengths inside the file), general.alignment (a u32 power of two),
 * every tensor (a name of at most 63 bytes, unique; 1..4 dimensions; a known ggml type whose
 * block divides ne[0]; byte size without overflow; offset aligned, inside the file, not
 * overlapping another). Tensors and values point into `bytes`. MOE_ERROR_FORMAT naming `path`. */
moe_status moe_gguf_parse(moe_context *ctx, const char *path, const uint8_t *bytes, size_t size,
                          moe_tensor_file *out);
moe_status moe_gguf_open(moe_context *ctx, const char *path, moe_tensor_file *out);
const moe_gguf_kv *moe_gguf_find(const moe_tensor_file *f, const char *key);
/* A key's value as an unsigned integer (any integer type, non-negative) / a float (FLOAT32,
 * FLOAT64 or an integer) / a bool / a string (copied, truncated to n-1 bytes). Absent: 0 and
 * *found false. MOE_ERROR_FORMAT naming the key and its type for a value of another type. */
moe_status moe_gguf_get_uint(moe_context *ctx, const moe_tensor_file *f, const char *key, uint64_t *out,
                             bool *found);
moe_status moe_gguf_get_float(moe_context *ctx, const moe_tensor_file *f, const char *key, double *out,
                              bool *found);
moe_status moe_gguf_get_bool(moe_context *ctx, const moe_tensor_file *f, const char *key, bool *out,
                             bool *found);
moe_status moe_gguf_get_string(moe_context *ctx, const moe_tensor_file *f, const char *key, char *out,
                               size_t n, bool *found);
/* "UINT32", "STRING", "ARRAY of FLOAT32"... for messages. */
const char *moe_gguf_type_name(moe_gguf_type t);

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
    MOE_HF_SWITCH,
    MOE_HF_GPT_OSS
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
    double swiglu_alpha, swiglu_limit; /* gpt-oss */
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

/* ---- the model object (model.c, gguf_arch.c) -------------------------------------------------- */

/* One tensor of the model: where it is, in which file. */
typedef struct moe_model_tensor {
    const moe_file_tensor *t;
    int file;
} moe_model_tensor;

/* What a GGUF file says about its MoE blocks (gguf_arch.c). */
typedef struct moe_gguf_arch {
    moe_layer_desc desc; /* every MoE block's, before the options (max_tokens, formats) */
    bool *moe_layer;     /* [n_layers]: has a router tensor */
} moe_gguf_arch;

struct moe_model {
    atomic_int refs;     /* moe_model_open's, and one per layer with an expert cache made from it */
    char *dir;           /* the model directory, or the (first) GGUF file */
    char *weights_label; /* "model.safetensors", the index's path, or the GGUF file's */
    bool gguf;
    moe_hf_config cfg; /* GGUF: model_type (the architecture), sizes and counts only */
    moe_gguf_arch arch;
    moe_tensor_file *files;
    int n_files;
    moe_model_tensor *tensors; /* every file's tensors, sorted by name */
    size_t n_tensors;
};

/* A matrix or vector inside a mapped file (one expert of a stacked tensor, or a whole tensor);
 * data NULL = absent. */
typedef struct moe_tensor_view {
    const uint8_t *data;
    size_t bytes;
    moe_dtype dtype;
    const uint8_t *hf_scales; /* MXFP4 as Hugging Face holds it (moe_matrix_src.hf_scales) */
    int64_t hf_row_step;
} moe_tensor_view;

/* The tensors a layer is made from, each checked; experts' arrays are n_experts long. */
typedef struct moe_layer_refs {
    moe_tensor_view router, bias, shared_gate, shared_up, shared_down, seg;
    moe_tensor_view *gate, *up, *down;
    moe_tensor_view gate_bias, up_bias, down_bias; /* [E][d_ff], [E][d_ff], [E][d_model] (gpt-oss) */
    moe_tensor_view gate_up_bias; /* [E][2·d_ff], gate's and up's interleaved (gpt-oss safetensors) */
} moe_layer_refs;

#define MOE_NAME_MAX_LEN 256

/* A tensor search of one layer: names are prefix + suffix; the first failure is kept. */
typedef struct moe_lookup {
    moe_context *ctx;
    const moe_model *m;
    char prefix[MOE_NAME_MAX_LEN];
    moe_status st;
} moe_lookup;

const moe_model_tensor *moe_model_find_tensor(const moe_model *m, const char *name);
/* Builds m->tensors from every file's tensors, sorted; a name in two files is an error. */
moe_status moe_model_index_tensors(moe_model *m);
/* Finds prefix+suffix and checks its type is one the layer reads and its shape is
 * [batch, rows, cols] (batch > 0), [rows, cols] (rows > 0), [cols] (rows == 0), or either
 * [1, cols] or [cols] (rows == -1). `why` says what it is for the message. NULL (and lk->st set)
 * if it is missing or wrong; `optional` makes a missing one NULL without an error. */
const moe_file_tensor *moe_lookup_need(moe_lookup *lk, const char *suffix, int64_t batch, int64_t rows,
                                       int64_t cols, const char *why, bool optional);
/* The whole tensor as a view / expert e of a stacked [E, rows, cols] one. */
moe_tensor_view moe_view_of(const moe_file_tensor *t);
moe_tensor_view moe_view_expert(const moe_file_tensor *t, int64_t e, int64_t n_experts);

/* GGUF: reads the architecture and its keys from the first file (model_type, sizes, the
 * template desc, which layers have an MoE block). MOE_ERROR_UNSUPPORTED for an architecture
 * this version does not run, MOE_ERROR_FORMAT for a missing or mistyped key. */
moe_status moe_gguf_read_arch(moe_context *ctx, moe_model *m);
/* GGUF: layer `layer`'s desc (from the template; its expert formats from the tensors) and, when
 * refs is set, its tensors. The layer is known to have an MoE block. */
moe_status moe_gguf_layer_lookup(moe_context *ctx, const moe_model *m, int64_t layer, moe_layer_desc *d,
                                 moe_layer_refs *refs);
/* GGUF: opens `path` and, when it is the first of a split (NAME-00001-of-0000N.gguf with
 * split.count N), the other N-1 files, each checked (split.no, split.count,
 * split.tensors.count). m->files / n_files are set. */
moe_status moe_gguf_open_files(moe_context *ctx, moe_model *m, const char *path);

#endif /* MOE_MODEL_INTERNAL_H */
