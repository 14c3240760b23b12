/*
 * backend.h — the one interface every backend (CPU, Vulkan, OpenCL) implements.
 *
 * The forward's orchestration lives once in the core (layer.c): it lays out the scratch
 * region, then calls the steps below in order. A backend only supplies buffers, weight
 * upload in whatever layout its kernels like, and the kernel steps. GPU backends record the
 * steps into one submission, hand it to the device at `submit` and complete it at `wait`
 * (several forwards may be submitted before one wait: the device runs them in submission order,
 * each seeing the previous one's writes); the CPU backend runs each step when called. Every slot is required
 * (the core calls them without checking); a backend that cannot do what a step asks returns
 * MOE_ERROR_UNSUPPORTED from it, with the reason.
 */
#ifndef MOE_BACKEND_H
#define MOE_BACKEND_H

#include "moe.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct moe_backend_buffer moe_backend_buffer; /* a backend allocation; the backend defines it */
typedef struct moe_backend moe_backend;

/* A tensor's address: an allocation and a byte offset into it. buf == NULL means absent. */
typedef struct moe_addr {
    moe_backend_buffer *buf;
    size_t offset;
} moe_addr;

typedef enum moe_backend_buffer_usage {
    MOE_BACKEND_BUFFER_WEIGHTS = 0, /* written once at layer creation, read by kernels */
    MOE_BACKEND_BUFFER_SCRATCH = 1, /* temporaries of a forward */
    MOE_BACKEND_BUFFER_USER = 2     /* a moe_buffer: written and read by the application */
} moe_backend_buffer_usage;

/* One host matrix [rows][cols], row-major, of `dtype` (moe.h; never DEFAULT here) — possibly
 * inside a memory-mapped file, so a checkpoint's weights go to the backend without a float
 * copy of every expert. Rows are moe_dtype_row_bytes(dtype, cols) bytes apart.
 * Or, with `hf_scales` set, MXFP4 as Hugging Face's gpt-oss checkpoints hold it: data is the
 * blocks [source rows][cols / 32][16] (value 2i in byte i's low nibble, 2i + 1 in its high) and
 * hf_scales the E8M0 bytes [source rows][cols / 32] apart; row r is source row r · hf_row_step
 * (gate_up_proj interleaves gate's rows and up's: step 2). Its rows read as ggml's MXFP4
 * blocks (the same scale byte; the nibbles reordered, moe_matrix_row_as). */
typedef struct moe_matrix_src {
    const void *data;
    moe_dtype dtype;
    const unsigned char *hf_scales;
    int64_t hf_row_step;
} moe_matrix_src;

/* Row r of a matrix with `cols` columns, as floats (dequantised). */
void moe_matrix_row(const moe_matrix_src *m, int64_t cols, int64_t r, float *out);
/* Row r in the format `dtype`: its bytes when the source has that format, else converted
 * (dtype.c, as moe_convert_row). `out` holds moe_dtype_row_bytes(dtype, cols) bytes. */
void moe_matrix_row_as(const moe_matrix_src *m, int64_t cols, int64_t r, moe_dtype dtype, void *out);

/* A weight tensor to upload: `batch` matrices of [rows][cols] (HF [out][in]), to be stored in
 * `dtype` (F32 for the router; the layer's storage format for the experts). When `second` is
 * set the tensor is the fused gated pair: `first` holds W_gate and `second` W_up; the backend
 * may interleave them as it likes. A block format's rows (cols) are a multiple of 32. */
typedef struct moe_weight_src {
    const moe_matrix_src *first;  /* [batch] */
    const moe_matrix_src *second; /* [batch], or NULL */
    int64_t batch, rows, cols;
    moe_dtype dtype;
    bool int_dot; /* the tensor will be read with integer activations (moe_ffn_step.act_quant;
                     only on a backend with moe_backend.int_dot, only for Q8_0 / Q4_0 / K-quants): the
                     backend may lay it out for that and only that */
} moe_weight_src;

/* The GPU backends' weight layout: every row of every matrix in its storage format, back to
 * back, in storage order (matrix by matrix: expert e's first, then its second when the tensor
 * is a gated pair). moe_weight_rows_bytes is the size; moe_weight_rows_stream converts the
 * rows into `staging` (staging_size bytes; the rows of one staging buffer split over the
 * context's host_threads, each row converted alone, so the bytes are the same however many)
 * and hands each full staging buffer, and the last part, to flush(user, offset into the
 * tensor, bytes): the conversion streams through the staging buffer, never a float copy of an
 * expert. Returns flush's first failure;
 * MOE_ERROR_UNSUPPORTED (message prefixed with `who`) when one row does not fit the staging. */
typedef moe_status (*moe_weight_flush_fn)(void *user, size_t offset, size_t bytes);
size_t moe_weight_rows_bytes(const moe_weight_src *s);
moe_status moe_weight_rows_stream(moe_context *ctx, const char *who, const moe_weight_src *s, void *staging,
                                  size_t staging_size, moe_weight_flush_fn flush, void *user);

/* Integer activations (moe_layer_desc.activation_dtype Q8_0, on a backend with
 * moe_backend.int_dot, for Q8_0 / Q4_0 / K-quant weights): an ffn step's input rows quantised per group
 * of MOE_ACT_GROUP values, d = max|a| / qmax, q = round(a / d) (half away from zero; 0 where
 * d is 0, and d = 0 where 1/d overflows float; a group holding a NaN or an infinity gets d = NaN and quants
 * 0), qmax 127 (INT8) or 32767 (INT16). A layer quantises its input x to INT8 and the intermediate
 * act(gate)·up to INT16: after the activation the intermediate is heavy-tailed, and int8 there cost as much
 * again as int8 on x (docs/ARCHITECTURE.md). Groups of 16, half a weight block: the kernels
 * keep the halves' sums apart anyway, and 16 rather than 32 takes ~15% off the error. */
/* bfloat16 pairs (activation_dtype BF16, on a backend with moe_backend.bf16_dot, for Q4_0, MXFP4 and Q4_K
 * weights): each
 * input value a as hi + lo, hi = a rounded to bfloat16 (to nearest, ties to even), lo = a − hi rounded
 * the same way: 16 significant bits, where int8 keeps 7. Both the input x and the intermediate. */
typedef enum moe_act_quant {
    MOE_ACT_FLOAT = 0,
    MOE_ACT_INT8 = 8,
    MOE_ACT_INT16 = 16,
    MOE_ACT_BF16X2 = 32
} moe_act_quant;
#define MOE_ACT_GROUP 16
/* Bytes of one prepared row of k values (k a multiple of 32). Integer: the k quants (1 or 2 bytes, in
 * the backend's order), then k/16 float scales, then k/16 int32 sums of each group's quants. bfloat16
 * pairs: the k values' two parts, 4 bytes a value, in the backend's order, then k/32 float sums of
 * hi + lo. */
static inline size_t moe_act_row_bytes(moe_act_quant q, int64_t k)
{
    if (q == MOE_ACT_BF16X2) return (size_t)k * 4 + (size_t)(k / 32) * sizeof(float);
    return (size_t)k * (q == MOE_ACT_INT16 ? 2 : 1) +
           (size_t)(k / MOE_ACT_GROUP) * (sizeof(float) + sizeof(int32_t));
}

/* route: logits = x·routerᵀ, scores, selection, weights. */
typedef struct moe_route_step {
    const moe_layer_desc *desc;
    int64_t n_tokens;
    moe_addr x;            /* float [T][d_model] */
    moe_addr router;       /* uploaded [E][d_model] */
    moe_addr router_bias;  /* float [E] (raw copy), or absent: the selection bias
                              (desc->has_selection_bias) or the router's own, added to the
                              logits (desc->router_has_bias: the router ffn step's bias) */
    moe_addr logits;       /* out float [T][E] */
    moe_addr workspace;    /* float [T][E + n_group], the backend's to use */
    moe_addr topk_ids;     /* out int32 [T][k] */
    moe_addr topk_weights; /* out float [T][k] */
} moe_route_step;

/* plan: histogram, capacity, expert-sorted row list padded to row_tile per expert. */
typedef struct moe_plan_step {
    const moe_layer_desc *desc;
    int64_t n_tokens;
    int64_t n_rows;          /* padded row bound (moe_plan_rows) */
    moe_addr topk_ids;       /* int32 [T][k] */
    moe_addr workspace;      /* at least T·E int32, the backend's to use */
    moe_addr expert_counts;  /* out int32 [E + 1]: routed rows per expert, then dropped rows */
    moe_addr expert_offsets; /* out int32 [E + 1]: first padded row of each expert, then the end */
    moe_addr row_token;      /* out int32 [n_rows]: token of each row, -1 for padding */
    moe_addr slot_row;       /* out int32 [T][k]: row of each (token, slot), -1 if dropped */
    moe_addr tile_expert;    /* out int32 [n_rows / row_tile]: expert of each tile, -1 unused */
} moe_plan_step;

/* One grouped GEMM over row tiles: out[r] = epilogue(a[r] · W[tile_expert]ᵀ).
 * Rows whose row_token is -1 are padding: never read, never written. */
typedef struct moe_ffn_step {
    int64_t n_rows;          /* rows (a multiple of row_tile when tile_expert is set) */
    int64_t k_dim;           /* reduction length (d_model for up, d_ff for down) */
    int64_t n_out;           /* output columns */
    moe_addr a;              /* float rows of k_dim elements (stride k_dim) */
    int64_t a_rows;          /* rows in a (tokens when gathering, else n_rows) */
    bool gather;             /* true: row r reads a[row_token[r]]; false: a[r] */
    moe_addr row_token;      /* int32 [n_rows], or absent: every row valid, identity */
    moe_addr tile_expert;    /* int32 [n_rows / row_tile], or absent: all rows expert 0 */
    moe_addr weights;        /* uploaded tensor (batch = experts) */
    moe_dtype weight_dtype;  /* the format it was uploaded in (moe_weight_src.dtype) */
    moe_act_quant act_quant; /* not FLOAT: prepare the rows of a so (INT8 / INT16: weights uploaded
                                with int_dot, integer dot products; BF16X2: bfloat16 products) */
    moe_addr a_q;            /* then: scratch of a_rows · moe_act_row_bytes(act_quant, k_dim)
                                bytes for the quantised rows */
    int64_t n_experts;
    bool gated; /* weights are a gated pair: out = act(gate) * up */
    moe_activation activation;
    bool apply_activation;            /* false for the down projection */
    float swiglu_alpha, swiglu_limit; /* SWIGLU_OAI's constants (the desc's, normalised) */
    moe_addr bias; /* float [n_experts][gated ? 2 : 1][n_out], added to the products before the
                      activation (gated: the gate's n_out, then the up's), or absent */
    moe_addr out;  /* float [n_rows][n_out] */
    /* The same rows by (token, slot), for a backend whose small-T (decode) kernel runs over
     * the T·k routed rows instead of the padded row tiles: slot i of token i / top_k has its
     * row at slot_row[i] (-1: dropped by capacity, nothing to compute) and its expert at
     * slot_expert[i]. Absent (buf NULL) for the dense products (router, shared expert),
     * where slot i is row i, token i, expert 0, and n_slots = n_rows. */
    int64_t n_slots;
    int64_t top_k;        /* slots per token (1 for the dense products) */
    moe_addr slot_row;    /* int32 [n_slots], or absent */
    moe_addr slot_expert; /* int32 [n_slots] (the plan's topk_ids), or absent */
} moe_ffn_step;

/* combine: y[t] = Σ_j w[t][j]·o[slot_row[t][j]] (dropped: 0 or w·x) + gate_t·shared[t]. */
typedef struct moe_combine_step {
    const moe_layer_desc *desc;
    int64_t n_tokens;
    int64_t n_rows;        /* rows of expert_out (the padded row bound) */
    moe_addr x;            /* float [T][d] */
    moe_addr expert_out;   /* float [n_rows][d] */
    moe_addr slot_row;     /* int32 [T][k] */
    moe_addr topk_weights; /* float [T][k] */
    moe_addr shared_out;   /* float [T][d], or absent */
    moe_addr shared_gate;  /* raw float [d] copy of w_shared_gate, or absent */
    moe_addr y;            /* out float [T][d] */
} moe_combine_step;

/* stats: aux loss and z-loss from the logits and the counts. */
typedef struct moe_stats_step {
    const moe_layer_desc *desc;
    int64_t n_tokens;
    moe_addr logits;        /* float [T][E] */
    moe_addr expert_counts; /* int32 [E + 1] */
    moe_addr workspace;     /* at least E doubles, the backend's to use */
    moe_addr losses;        /* out float [2]: aux loss, z-loss */
} moe_stats_step;

typedef struct moe_backend_ops {
    moe_backend_kind kind;
    const char *name;

    /* Devices: never an error for "no driver" — that is count 0. */
    moe_status (*device_count)(int *count);
    moe_status (*device_info)(int index, moe_device_info *info);

    moe_status (*create)(moe_context *ctx, const moe_context_desc *desc, moe_backend **out);
    void (*destroy)(moe_backend *be);

    /* Memory. Offsets the core hands out are multiples of `alignment` (a power of two). */
    moe_status (*buffer_alloc)(moe_backend *be, size_t bytes, moe_backend_buffer_usage usage,
                               moe_backend_buffer **out);
    void (*buffer_free)(moe_backend *be, moe_backend_buffer *buf);
    moe_status (*buffer_write)(moe_backend *be, moe_addr dst, const void *src, size_t bytes);
    moe_status (*buffer_read)(moe_backend *be, moe_addr src, void *dst, size_t bytes);

    /* A forward's own host transfers, carried by its submission instead of a write or a read of
     * their own: on a GPU each of those is a submit and a wait (~70 us on an H200, against ~80
     * us of kernels in a decode forward). stage_in, between begin and the first step: src's
     * bytes are taken at the call (src may be reused at once) and are in dst before the steps
     * run. stage_out, after the last step and before submit: dst receives src's bytes as the
     * forward leaves them by the time the next wait returns MOE_OK, and is not written when
     * the submit fails or the forward's steps do. The core calls them only for forwards it
     * waits for before it returns (dst stays valid until then); what does not fit the
     * backend's staging memory goes through buffer_write at once and buffer_read at the wait
     * (so src must not be written by a later submission before that wait: the core gives each
     * submission between two waits its own scratch), those reads first: only the device lost
     * while they read (OpenCL reads them all so) can leave destinations written in part. */
    moe_status (*stage_in)(moe_backend *be, moe_addr dst, const void *src, size_t bytes);
    moe_status (*stage_out)(moe_backend *be, moe_addr src, void *dst, size_t bytes);

    /* Weights, in the backend's own layout. */
    size_t (*weight_bytes)(moe_backend *be, const moe_weight_src *src);
    moe_status (*weight_upload)(moe_backend *be, moe_addr dst, const moe_weight_src *src);

    /* Forward steps, called in this order between begin and submit. */
    moe_status (*begin)(moe_backend *be);
    moe_status (*route)(moe_backend *be, const moe_route_step *step);
    moe_status (*plan)(moe_backend *be, const moe_plan_step *step);
    moe_status (*ffn)(moe_backend *be, const moe_ffn_step *step);
    moe_status (*combine)(moe_backend *be, const moe_combine_step *step);
    moe_status (*stats)(moe_backend *be, const moe_stats_step *step);
    /* Ends the forward begun at `begin` and hands it to the device, without waiting; a step's
     * failure while recording is returned here, and nothing is submitted then. */
    moe_status (*submit)(moe_backend *be);
    /* Waits until every submitted forward has completed; the first failure of any (execution
     * errors, a lost device). Sets last_device_ms from the last one. */
    moe_status (*wait)(moe_backend *be);
} moe_backend_ops;

/* The common head of every backend instance. */
struct moe_backend {
    const moe_backend_ops *ops;
    moe_context *ctx;       /* for error reporting */
    size_t alignment;       /* buffer offset alignment, a power of two */
    double last_device_ms;  /* set by wait: device time of the last forward's steps */
    double device_ms_total; /* every forward's device time added up as the waits find it (the CPU's
                               at its submit): the difference over a span times all its forwards,
                               where last_device_ms sees only the last one a wait completed */
    size_t staging_bytes;   /* host-visible transfer memory the backend holds */
    int64_t row_tile;       /* rows per GEMM tile: each expert's rows are padded to it */
    bool int_dot;           /* runs Q8_0 / Q4_0 / K-quant experts on integer activations when a layer asks */
    bool bf16_dot; /* runs Q4_0 / MXFP4 / Q4_K experts on bfloat16-pair activations when a layer asks */
    moe_device_info info;
};

/* The reads a GPU backend's stage_out leaves for its next wait: from its staging memory at
 * `staged_at`, or (SIZE_MAX) from `src` on the device, read at the wait. The wait copies them all
 * once every submission has completed, or drops them all when one failed. */
typedef struct moe_staged_read {
    moe_addr src;
    size_t staged_at;
    void *dst;
    size_t bytes;
} moe_staged_read;
typedef struct moe_staged_reads {
    moe_staged_read *v;
    size_t n, cap;
} moe_staged_reads;
moe_status moe_staged_reads_add(moe_backend *be, moe_staged_reads *l, moe_staged_read r);
void moe_staged_reads_free(moe_staged_reads *l);

/* The backends compiled into this library (NULL where not built). */
extern const moe_backend_ops moe_cpu_backend_ops;
#if MOE_HAVE_VULKAN
extern const moe_backend_ops moe_vulkan_backend_ops;
#endif
#if MOE_HAVE_OPENCL
extern const moe_backend_ops moe_opencl_backend_ops;
#endif

#endif /* MOE_BACKEND_H */
