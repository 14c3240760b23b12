/*
 * internal.h — what the backend-neutral core shares between its files: the context, layer
 * and buffer objects, the arena, error reporting and overflow-checked size arithmetic.
 */
#ifndef MOE_INTERNAL_H
#define MOE_INTERNAL_H

#include "abi.h"
#include "backend.h"
#include "moe.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MOE_ERROR_MAX 1024

/* printf-style checking of a function's format string. mingw-w64's "printf" archetype is the
 * Microsoft runtime's (no %zu, %lld); the library is built with its C99 stdio
 * (__USE_MINGW_ANSI_STDIO), whose archetype is gnu_printf. */
#if defined(__MINGW32__)
#define MOE_PRINTF(fmt, args) __attribute__((format(gnu_printf, fmt, args)))
#elif defined(__GNUC__)
#define MOE_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define MOE_PRINTF(fmt, args)
#endif

/* ---- errors ---------------------------------------------------------------------------- */

/* Records a failure: formats the detail into the context (if any) and this thread's last
 * error, sends it to the log callback, and returns `status` so callers can
 * `return moe_fail(...)`. */
moe_status moe_fail(moe_context *ctx, moe_status status, const char *fmt, ...) MOE_PRINTF(3, 4);
/* Clears the context's and the thread's last error at the start of a public call. */
void moe_clear_error(moe_context *ctx);
void moe_log(moe_context *ctx, moe_log_level level, const char *fmt, ...) MOE_PRINTF(3, 4);

/* Milliseconds on a monotonic clock (CLOCK_MONOTONIC where the platform has it); only
 * differences mean anything. Every backend times its steps and builds with it. */
double moe_now_ms(void);

/* ---- checked arithmetic ------------------------------------------------------------------ */

/* a*b into *out; false on overflow (operands must be non-negative). */
static inline bool moe_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool moe_add_size(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}
/* Product of up to four non-negative int64 factors as a byte count (elem_size bytes each). */
bool moe_bytes_of(size_t elem_size, int64_t a, int64_t b, int64_t c, size_t *out);

/* ---- arena --------------------------------------------------------------------------------- */

/* Bump allocator over offsets: the layout of one region, computed on the host. A failed
 * take (overflow) sticks, so a whole layout can be checked once at the end. */
typedef struct moe_bump {
    size_t offset;
    size_t alignment;
    bool overflow;
} moe_bump;

size_t moe_bump_take(moe_bump *bump, size_t bytes);

typedef struct moe_arena {
    moe_backend *be;
    moe_backend_buffer *scratch;
    size_t scratch_bytes;
    size_t scratch_peak_bytes;
    size_t weights_bytes;
    size_t staging_bytes;
    size_t buffer_bytes;
    uint64_t allocation_count;
    uint64_t scratch_reservations;
} moe_arena;

/* Makes sure the scratch region holds `bytes`; allocates only when it has to grow. */
moe_status moe_arena_reserve_scratch(moe_arena *arena, size_t bytes);
moe_status moe_arena_alloc(moe_arena *arena, size_t bytes, moe_backend_buffer_usage usage,
                           moe_backend_buffer **out);
void moe_arena_free(moe_arena *arena, moe_backend_buffer *buf, size_t bytes, moe_backend_buffer_usage usage);
void moe_arena_release(moe_arena *arena);

/* ---- objects ------------------------------------------------------------------------------- */

struct moe_context {
    moe_backend *be;
    moe_arena arena;
    /* Asynchronous forwards: each submission gets the next serial; an object whose serial is
     * above `completed` is used by a forward still in flight (moe_layer_forward_async). */
    uint64_t submitted, completed;
    /* Live layers and buffers: a context destroyed before them is only marked `destroyed`,
     * and freed with the last of them (moe_context_release_child). */
    int64_t n_layers, n_buffers;
    bool destroyed;
    moe_log_fn log;
    void *log_user_data;
    moe_log_level log_level;
    int host_threads; /* threads for a GPU context's host work (weight conversion at upload):
                         desc.n_threads, else the cores this process may use, at most 64 */
    char error[MOE_ERROR_MAX];
};

/* Where each weight tensor of a layer lives inside its weights block. */
typedef struct moe_layer_addrs {
    moe_addr router, router_bias, ffn_in, ffn_down;
    moe_addr shared_in, shared_down, shared_gate;
    moe_addr in_bias, down_bias; /* expert_has_bias: [E][gated ? 2 : 1][d_ff], [E][d_model] */
} moe_layer_addrs;

/* What a group of experts' two products run on: `in` the gate/up product (on x), `down` the down product
 * (on the intermediate). Each F32, Q8_0 (integer activations) or BF16 (bfloat16 pairs): the layer's
 * activation_dtype where the backend has its kernels and the product's format takes it
 * (moe_dtype_takes_activations), else F32. */
typedef struct moe_group_act {
    moe_dtype in, down;
} moe_group_act;
/* What moe_layer_activation_dtype reports for a group: the opt-in where either product runs it. */
static inline moe_dtype moe_group_act_reported(moe_group_act a)
{
    return a.in != MOE_DTYPE_F32 ? a.in : a.down;
}

struct moe_layer {
    moe_context *ctx;
    uint64_t serial;      /* the last submission that used it */
    int64_t pins;         /* recordings that use it (moe_vulkan_layer_record) */
    bool destroy_pending; /* destroyed while pinned: freed with the last pin */
    moe_layer_desc desc;  /* normalised: defaults filled in */
    moe_backend_buffer *weights;
    size_t weights_bytes;
    moe_layer_addrs w;
    moe_group_act routed_act, shared_act; /* what the experts' products run on */
    struct moe_placed *placed;            /* the routed experts live on other layers, maybe on other
                                             contexts (placement.c); NULL: they are in `weights` */
    struct moe_usage *usage;              /* moe_layer_track_usage (usage.c); NULL: not tracking */
    struct moe_ep *ep;                    /* one rank of an expert-parallel layer (ep.c): this layer is
                                             its home, the rank's experts another layer; NULL: not one */
};

struct moe_buffer {
    moe_context *ctx;
    uint64_t serial;      /* the last submission that used it */
    int64_t pins;         /* recordings that use it */
    bool destroy_pending; /* destroyed while pinned: freed with the last pin */
    moe_backend_buffer *buf;
    size_t offset; /* where element 0 is in buf (an application's buffer: its offset) */
    bool wrapped;  /* buf wraps an application's buffer: not the arena's, not counted in it */
    int64_t n_elements;
};

/* A moe_buffer over `buf`, a backend buffer that wraps an application's own buffer
 * (moe_opencl_buffer_wrap, moe_vulkan_buffer_wrap): n_elements floats from byte `offset`. On
 * failure `buf` is freed with the backend's buffer_free. */
moe_status moe_buffer_wrap(moe_context *ctx, moe_backend_buffer *buf, size_t offset, int64_t n_elements,
                           moe_buffer **out);
/* The address of a buffer's element 0. */
static inline moe_addr moe_buffer_addr(const moe_buffer *b)
{
    return (moe_addr){b->buf, b->offset};
}

/* ---- weight formats (dtype.c) ---------------------------------------------------------- */

/* MXFP4's codes as ggml's kvalues_mxfp4 (twice the E2M1 values) and its scale byte as the float
 * 2^(e − 128) (ggml_e8m0_to_fp32_half); a value is moe_mxfp4_values[q] · moe_e8m0_half(e). */
extern const int8_t moe_mxfp4_values[16];
float moe_e8m0_half(uint8_t e);
bool moe_dtype_is_kquant(moe_dtype dtype); /* Q2_K, Q3_K, Q4_K, Q5_K, Q6_K */
/* K-quant super-blocks (kquants.c): 256 values from / to the block's bytes, as ggml computes
 * them; the 6-bit scale and min j (0..7) of a Q4_K / Q5_K block's 12 scale bytes; and Q3_K's
 * 6-bit scale s (0..15, before ggml's − 32) of its 12. */
void moe_kq_decode(moe_dtype dtype, const unsigned char *block, float *out);
void moe_kq_encode(moe_dtype dtype, const float *in, unsigned char *block);
void moe_kq_scale_min(const unsigned char *scales, int j, uint8_t *sc, uint8_t *m);
int moe_q3k_scale(const unsigned char *scales, int s);
float moe_f16_to_f32(uint16_t h);
uint16_t moe_f32_to_f16(float f); /* round to nearest even */
/* bfloat16 is the top half of a float32. Inline: the CPU backend splits every activation of a
 * bfloat16-pair step with them (pack.c). */
static inline float moe_bf16_to_f32(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint16_t moe_f32_to_bf16(float f) /* round to nearest even; NaN stays NaN */
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays quiet NaN */
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
/* moe_convert_row without the checks: both dtypes are formats and n fits their blocks. */
void moe_convert_row_unchecked(moe_dtype src_dtype, const void *src, moe_dtype dst_dtype, void *dst,
                               int64_t n);

/* ---- validation (validate.c) ----------------------------------------------------------- */

/* Integer limits of the kernels, checked once at layer creation (and per token count by the
 * reference) so no backend ever narrows an integer on its way to a kernel:
 *  - a shape (d_model, d_ff, d_ff_shared, n_experts) reaches the kernels as a 32-bit int
 *    (Vulkan specialisation constants, OpenCL -D options) to which a tile is added; half of
 *    INT32_MAX leaves room for that;
 *  - the plan indexes (token, slot) pairs, padded rows, logits and the routing workspace with
 *    int32, so T·top_k, the padded row bound for MOE_MAX_ROW_TILE and T·(n_experts + n_group)
 *    stay at or below MOE_MAX_INDEX. */
#define MOE_MAX_DIM   (INT32_MAX / 2)
#define MOE_MAX_INDEX INT32_MAX
/* The largest rows-per-tile a backend may use: the padded row bound is validated for it. */
#define MOE_MAX_ROW_TILE 256
/* Worker threads of the CPU backend: n_threads and MOE_NUM_THREADS (moe.h). */
#define MOE_MAX_THREADS 1024

bool moe_activation_is_gated(moe_activation act);
/* Checks a layer desc (read by its struct_size, abi.h) and, if non-NULL, its weights (a full
 * struct: moe_abi_in first), and writes the normalised desc. */
moe_status moe_validate_layer(moe_context *ctx, const moe_layer_desc *desc, const moe_layer_weights *weights,
                              moe_layer_desc *normalised);
/* The formats a moe_layer_weights hands its experts and shared expert over in (DEFAULT: F32). */
moe_dtype moe_weights_dtype(const moe_layer_weights *w);
moe_dtype moe_weights_shared_dtype(const moe_layer_weights *w);
/* Checks n_tokens against the desc (and its token budget when check_budget). */
moe_status moe_validate_tokens(moe_context *ctx, const moe_layer_desc *desc, int64_t n_tokens,
                               bool check_budget);
/* Padded row bound for the grouped GEMM: T·k + min(E, T·k)·(row_tile − 1), rounded up to
 * row_tile. The host knows it without reading any count back. */
int64_t moe_plan_rows(const moe_layer_desc *desc, int64_t n_tokens, int64_t row_tile);
/* The capacity one forward of n_tokens runs with: 0 (unlimited) when the layer's capacity is
 * at or above the T·top_k rows the forward has, else the capacity, which then fits int32. */
int64_t moe_effective_capacity(const moe_layer_desc *desc, int64_t n_tokens);
/* n_threads of a context desc: 0 (default) or 1..MOE_MAX_THREADS. */
moe_status moe_validate_threads(moe_context *ctx, int n_threads);

/* ---- layers from tensors (layer.c) --------------------------------------------------------- */

/* A layer's weights as matrices that may live anywhere (one per expert) and be F16/BF16:
 * what moe_layer_create builds from its contiguous float arrays and what a checkpoint
 * loader builds from a memory-mapped file. The small vectors are float32. */
typedef struct moe_layer_tensors {
    moe_matrix_src router;                  /* [E][d_model] */
    const float *router_bias;               /* [E], or NULL */
    const moe_matrix_src *gate, *up, *down; /* [E] each; gate NULL unless gated */
    moe_matrix_src shared_gate, shared_up, shared_down;
    const float *shared_expert_gate;  /* [d_model], or NULL */
    const float *gate_bias, *up_bias; /* [E][d_ff] each (desc.expert_has_bias; gate_bias iff gated) */
    const float *down_bias;           /* [E][d_model] */
} moe_layer_tensors;

/* Creates a layer from an already validated, normalised desc. A tensor group `t` leaves out
 * (router.data NULL, up NULL: the routed experts) is not uploaded (placement.c's pieces). */
moe_status moe_layer_create_from_tensors(moe_context *ctx, const moe_layer_desc *desc,
                                         const moe_layer_tensors *t, moe_layer **out);
/* The bytes of the weights block moe_layer_create_from_tensors allocates for (d, t) on `be`;
 * SIZE_MAX when they do not fit size_t. */
size_t moe_layer_block_bytes(moe_backend *be, const moe_layer_desc *d, const moe_layer_tensors *t);
/* A layer holding only routed experts (a placement's part) as an expert cache's slots: the bytes
 * one expert takes in it (matrices and biases; MOE_ERROR_UNSUPPORTED when the backend does not
 * lay its experts out one after another), and expert e of `t` uploaded into expert `slot`. */
moe_status moe_layer_expert_bytes(const moe_layer *layer, const moe_layer_tensors *t, size_t *bytes);
moe_status moe_layer_upload_expert(moe_layer *layer, int64_t slot, const moe_layer_tensors *t, int64_t e);
/* The formats moe_layer_upload_expert streams an expert's matrices in (the gated pair / up, and
 * down): sources already in them are copied as they are, others converted row by row. */
moe_status moe_layer_expert_dtypes(const moe_layer *layer, const moe_layer_tensors *t, moe_dtype *in,
                                   moe_dtype *down);
/* moe_layer_create, and with a placement (its home context `ctx`; the struct checked and read by
 * its struct_size) moe_layer_create_placed: the checks, then the tensors of `weights`. */
moe_status moe_layer_create_on(moe_context *ctx, const moe_placement *placement, const moe_layer_desc *desc,
                               const moe_layer_weights *weights, moe_layer **out);
/* The tensors of moe_layer_weights (validated): one matrix per expert in *matrices (3·E, the
 * caller frees it with moe_free). */
moe_status moe_layer_tensors_of(moe_context *ctx, const moe_layer_desc *d, const moe_layer_weights *w,
                                moe_layer_tensors *t, moe_matrix_src **matrices);

/* ---- the forward's pieces (layer.c), which a layer split over contexts runs in turn ------- */

/* The steps of a forward, in their order: route + plan, the routed experts' two products, the
 * shared expert's, combine (+ stats). */
enum {
    MOE_STEPS_ROUTE = 1,
    MOE_STEPS_EXPERTS = 2,
    MOE_STEPS_SHARED = 4,
    MOE_STEPS_COMBINE = 8,
    MOE_STEPS_ALL = 15
};

/* Where every temporary of one forward lives in the scratch region. */
typedef struct moe_forward_layout {
    int64_t n_rows; /* the padded row bound (moe_plan_rows) */
    moe_addr x, logits, route_ws, topk_ids, topk_weights, expert_counts, expert_offsets, row_token, slot_row,
        tile_expert;
    moe_addr h, o, shared_h, shared_o, y, losses, a_q;
    size_t bytes; /* the end of the layout: an offset in the region, `base` included */
} moe_forward_layout;

/* Lays out the temporaries of `steps` for T tokens from byte `base` of a scratch region (host
 * x / y: room for them); *overflow when the sizes do not fit size_t. Offsets only: attach the
 * region with moe_layout_attach. */
void moe_layout_forward(const moe_layer *layer, int64_t T, bool host_x, bool host_y, unsigned steps,
                        size_t base, moe_forward_layout *L, bool *overflow);
void moe_layout_attach(moe_forward_layout *L, moe_backend_buffer *buf);
/* Host transfers a forward's own submission carries (the backend's stage_in / stage_out):
 * `in` written to the device before the steps (at: where, src: from), `out` read back after them
 * (at: from, dst: where), there when the context's next wait returns MOE_OK. Only for forwards the
 * caller waits for before its host memory goes. */
typedef struct moe_host_copy {
    moe_addr at;
    const void *src;
    void *dst;
    size_t bytes;
} moe_host_copy;
typedef struct moe_forward_io {
    const moe_host_copy *in;
    size_t n_in;
    const moe_host_copy *out;
    size_t n_out;
} moe_forward_io;

/* begin, io's writes, the steps asked for, io's reads, submit (io may be NULL). A layer with only
 * routed experts (a placement's part) runs MOE_STEPS_EXPERTS over T rows whose plan the caller
 * wrote (row_token, tile_expert, slot_row, topk_ids as the slots' experts; desc.top_k 1). */
moe_status moe_run_steps(moe_layer *layer, int64_t T, const moe_forward_layout *L, moe_addr x, moe_addr y,
                         unsigned steps, bool want_losses, const moe_forward_io *io);
/* MOE_ERROR_UNSUPPORTED (recorded on ctx) unless ctx's backend tiles rows by 1..MOE_MAX_ROW_TILE,
 * the bound validation checked the plan's rows for. */
moe_status moe_check_row_tile(moe_context *ctx);
/* MOE_ERROR_UNSUPPORTED naming `what` for a placed layer (moe_layer_create_placed), which only
 * runs synchronously; the embedding calls check it before they touch the application's objects. */
moe_status moe_layer_check_unplaced(const moe_layer *layer, const char *what);
/* A forward of `layer` (x, y: its buffers, or NULL) was submitted: they are in flight until the
 * context's next wait. */
void moe_layer_submitted(moe_layer *layer, const moe_buffer *xb, moe_buffer *yb);
/* What a forward the caller waits for reads back, as its submission's own reads (stage_out), so
 * that all of it lands at the one wait and none of it when anything fails: y (when host y is
 * given), a tracking layer's counts (its usage's `fetched`), and the arrays `s` asks for, the
 * losses into losses[2] (moe_forward_stats_done copies them to s after the wait). Fills `out`
 * (at most MOE_FORWARD_READS) and returns how many. */
#define MOE_FORWARD_READS 7
size_t moe_forward_reads(moe_layer *layer, int64_t T, const moe_forward_layout *L, moe_addr ya, float *y,
                         const moe_forward_stats *s, float losses[2], moe_host_copy *out);
void moe_forward_stats_done(moe_forward_stats *s, const float losses[2], double device_ms);

/* ---- expert usage (usage.c) --------------------------------------------------------------- */

/* A tracking layer's forward completed: its counts (the plan's expert_counts, E + 1 int32) came
 * back into the usage's `fetched` with the forward (moe_forward_reads), and moe_usage_commit adds
 * them once the whole call has succeeded (a failed forward counts nothing). moe_usage_uncounted:
 * a forward submitted without a wait. */
void moe_usage_commit(moe_layer *layer, int64_t n_tokens);
/* Where a tracking layer's forward reads its counts to (E + 1 int32). */
int32_t *moe_usage_fetched(moe_layer *layer);
void moe_usage_uncounted(moe_layer *layer);
void moe_usage_free(struct moe_usage *u);

/* ---- experts over several contexts (placement.c) ---------------------------------------- */

/* What keeps the memory a layer's tensors point into alive (a model's files and copies), for an
 * expert cache, which uploads from them for as long as the layer lives: release(owner) frees it. */
typedef struct moe_source_owner {
    void (*release)(void *owner);
    void *owner;
} moe_source_owner;

/* A placed layer from validated tensors: `p` a full, checked moe_placement (moe_placement_check).
 * Takes `owner` (NULL: the tensors are the application's, which keeps them): released at once
 * without a cache, on failure, or with the layer. */
moe_status moe_placed_create(const moe_placement *p, const moe_layer_desc *d, const moe_layer_tensors *t,
                             const moe_source_owner *owner, moe_layer **out);
/* Reads the caller's placement by its struct_size into *out and checks its contexts (live,
 * distinct) and home, which is *home; moe_placed_create checks the per-expert arrays. */
moe_status moe_placement_check(const moe_placement *user, moe_placement *out, moe_context **home);

/* The forward of a layer with `placed` set (moe_layer_forward, _forward_buffers; checked by
 * the caller: tokens, stats struct, x / y buffers of the home context). */
moe_status moe_placed_forward(moe_layer *layer, int64_t T, const float *x, float *y, const moe_buffer *xb,
                              moe_buffer *yb, moe_forward_stats *stats);
/* A part's share of a forward (a layer of routed experts only, desc from moe_part_desc): the
 * rows routed to its experts, grouped by expert, and their layout in its context's scratch. */
typedef struct moe_part_run {
    int64_t n;          /* rows */
    int64_t out;        /* placement: its first row in the host's expert-output rows */
    int32_t *slot;      /* placement: [n] the slot t·k + j of each, grouped by expert, tokens ascending */
    int32_t *first;     /* [n_experts + 1]: where each expert's rows start */
    int32_t *row_start; /* [n_experts]: each expert's first padded row (set by moe_part_submit) */
    moe_forward_layout L;
    bool submitted;
} moe_part_run;
/* The desc of a part holding n of d's routed experts (one expert per row, no capacity). */
moe_layer_desc moe_part_desc(const moe_layer_desc *d, int64_t n);
/* Writes the plan of r (its rows `a`, [r->n][d_model], in expert order) into the part's scratch,
 * reserved up to r->L.bytes, and submits both expert products. */
moe_status moe_part_submit(moe_layer *part, moe_part_run *r, const float *a, float *o);
/* moe_layer_get_cache_stats's counts into a full struct (its array pointers read, then filled). */
void moe_layer_cache_stats(const moe_layer *layer, moe_expert_cache_stats *s);
/* Frees the parts of a placed layer (layer_free; NULL: nothing). */
void moe_placed_free(struct moe_placed *p);
/* What every part runs its experts on (moe_layer_activation_dtype): their routed_act (reported) where
 * all parts holding experts agree on both products, else F32. */
moe_dtype moe_placed_routed_act(const struct moe_placed *p);

/* ---- expert parallelism (ep.c) ---------------------------------------------------------- */

/* moe_layer_forward of a layer with `ep` set: the collective forward (every check its own). */
moe_status moe_ep_forward(moe_layer *layer, int64_t T, const float *x, float *y, moe_forward_stats *stats);
/* The caller's transport read by its struct_size into *tr and checked; released on failure. */
moe_status moe_ep_transport_read(moe_context *ctx, const moe_ep_transport *user, moe_ep_transport *tr);
/* The collective end of a rank's creation: with st (this rank's checks so far) OK, its layer from
 * d (validated) and t (router, shared expert, small vectors; its own experts only, n_local of
 * them); then every rank's status and desc compared. Takes the transport (released with the
 * layer, or on failure). */
moe_status moe_ep_create(moe_context *ctx, const moe_ep_transport *tr, moe_status st, const moe_layer_desc *d,
                         const moe_layer_tensors *t, moe_layer **out);
/* Frees a rank's experts and releases its transport (layer_free; NULL: nothing). */
void moe_ep_free(struct moe_ep *ep);
/* What the rank's experts run on (moe_layer_activation_dtype): F32, Q8_0 or BF16. */
moe_dtype moe_ep_routed_act(const struct moe_ep *ep);

/* ---- an expert cache's bookkeeping (expert_cache.c) -------------------------------------- */

/* What a forward does with one expert (moe_xcache.fwd_kind). */
enum { XCACHE_NONE = 0, XCACHE_HIT, XCACHE_MISS, XCACHE_UPLOAD, XCACHE_EVICT };

typedef struct moe_xcache {
    int64_t n_experts, slots, min_rows, halving_forwards;
    moe_cache_policy policy;
    int32_t *slot_expert; /* [slots]: its expert, -1 empty (or being uploaded) */
    int32_t *expert_slot; /* [E]: its slot, -1 not resident */
    uint64_t *slot_used;  /* [slots]: the forward (1, 2, ...) that last used it; 0 never */
    uint32_t *freq;       /* [E]: forwards that routed it, halved every halving_forwards */
    /* Counts over committed forwards (moe_expert_cache_stats). */
    int64_t forwards, hits, misses, uploads_done, evictions, rows_cached, rows_elsewhere;
    uint64_t upload_bytes;
    double upload_ms;
    int64_t *expert_hits, *expert_misses, *expert_uploads; /* [E] */
    /* The forward being run (moe_xcache_decide): each expert's slot (-1: where it lives), its
     * rows, what happened to it, and the experts to upload, in order. */
    int32_t *fwd_slot;
    int64_t *fwd_rows;
    uint8_t *fwd_kind;
    bool *fwd_used; /* [slots] */
    int32_t *uploads;
    int64_t n_uploads;
    uint64_t fwd_upload_bytes;
    double fwd_upload_ms;
} moe_xcache;

/* NULL when out of host memory; min_rows and halving_forwards 0 take their defaults (moe.h). */
moe_xcache *moe_xcache_new(int64_t n_experts, int64_t slots, moe_cache_policy policy, int64_t min_rows,
                           int64_t halving_forwards);
void moe_xcache_free(moe_xcache *c);
/* Slot `slot` holds `expert` (the fill at creation, and an upload's end). */
void moe_xcache_fill(moe_xcache *c, int64_t slot, int32_t expert);
/* One forward's decisions from its rows per expert [E] (0: not routed) and which experts live off
 * the cache's context [E]: fwd_slot, fwd_kind and uploads (moe.h's rule and policies). */
void moe_xcache_decide(moe_xcache *c, const int64_t *rows, const bool *cacheable);
/* An upload of `expert` into its fwd_slot starts (the slot is empty from here) / has completed. */
void moe_xcache_begin_upload(moe_xcache *c, int32_t expert);
void moe_xcache_end_upload(moe_xcache *c, int32_t expert, size_t bytes, double ms);
/* The forward succeeded: recency, frequencies (and their halving) and the counts. */
void moe_xcache_commit(moe_xcache *c);

/* ---- the on-disk cache (cache.c) ------------------------------------------------------- */

/* The cache directory, created if needed; false (and "") if there is none to be had. */
bool moe_cache_dir(moe_context *ctx, char *out, size_t size);
/* A whole cache file, or NULL: missing, or ignored with a warning on ctx (not a regular file,
 * over MOE_CACHE_MAX_BYTES, unreadable). */
void *moe_cache_read(moe_context *ctx, const char *path, size_t *size);
/* head + data written to a temporary file, then renamed to `path` (atomic). */
bool moe_cache_write(moe_context *ctx, const char *path, const void *head, size_t head_size, const void *data,
                     size_t size);

/* ---- backends (context.c) ------------------------------------------------------------- */

const moe_backend_ops *moe_backend_ops_of(moe_backend_kind kind);

/* ---- asynchronous forwards and object lifetimes (context.c) ------------------------------ */

/* The embedding headers' calls (moe_vulkan.h, moe_opencl.h): `ctx` runs on `ops` (clears the
 * error first), else MOE_ERROR_NULL_POINTER / MOE_ERROR_INVALID_ARGUMENT naming `what`. */
moe_status moe_context_expect_backend(const moe_context *ctx, const moe_backend_ops *ops, const char *what);

/* The forward on buffers with the backend recording into what the caller set up (Vulkan:
 * b->record_into, an application's command buffer) instead of submitting: validated and laid
 * out as every forward, on a scratch region of its own (the caller's from then on, to free with
 * moe_arena_free(..., MOE_BACKEND_BUFFER_SCRATCH)), nothing submitted or waited for. */
moe_status moe_layer_forward_record(moe_layer *layer, int64_t n_tokens, const moe_buffer *x, moe_buffer *y,
                                    moe_backend_buffer **scratch, size_t *scratch_bytes);
/* A recording holds its layer and buffers: destroyed meanwhile, they are freed at the unpin. */
void moe_layer_unpin(moe_layer *layer);
void moe_buffer_unpin(moe_buffer *buffer);

/* True while a submission with this serial has not been waited for. */
static inline bool moe_in_flight(const moe_context *ctx, uint64_t serial)
{
    return serial > ctx->completed;
}
/* Waits for every submission (backend wait); `completed` catches up even on failure: the
 * device is done with them either way. */
moe_status moe_context_wait_all(moe_context *ctx);
/* MOE_OK, or MOE_ERROR_INVALID_ARGUMENT when `ctx` was destroyed (moe_context_destroy with
 * live layers or buffers): `what` names the call. */
moe_status moe_context_check_live(moe_context *ctx, const char *what);
/* A layer's or buffer's _destroy: waits when its `serial` is still in flight (recording
 * MOE_ERROR_BUSY naming `what`), then, after the caller freed the object, drops the count and
 * frees a destroyed context with its last child. */
void moe_context_child_destroying(moe_context *ctx, uint64_t serial, const char *what);
void moe_context_release_child(moe_context *ctx, int64_t *count);
/* A layer's or buffer's _destroy: true when it must not free now — destroyed already, or held by
 * `pins` recordings (moe_vulkan_layer_record), which marks it *pending (freed at the last unpin)
 * and records MOE_ERROR_BUSY naming `what`. */
bool moe_context_defer_destroy(moe_context *ctx, int64_t pins, bool *pending, const char *what);

#endif /* MOE_INTERNAL_H */
