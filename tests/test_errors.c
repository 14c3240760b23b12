/*
 * test_errors.c — bad input on the backend named in argv[1]: each mistake returns its own
 * status and a message, and leaves the caller's output untouched (guarded buffers filled
 * with a sentinel are checked bit for bit). Run on every backend, so the same bad argument
 * gives the same status everywhere. Also: non-finite input behaves as moe.h documents, and
 * an injected allocation failure at every allocation leaves everything clean.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_setaffinity */
#include <sched.h>
#endif
#include "harness.h"

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static moe_layer_desc base_desc(void)
{
    return (moe_layer_desc){.struct_size = sizeof(moe_layer_desc),
                            .d_model = 24,
                            .d_ff = 20,
                            .n_experts = 8,
                            .top_k = 2,
                            .max_tokens = 16,
                            .renormalize = 1};
}

/* moe_layer_create with a modified desc must fail with `want` and a message. */
static void expect_create(moe_context *ctx, const moe_layer_desc *d, const moe_layer_weights *w,
                          moe_status want, const char *what)
{
    moe_layer *layer = (moe_layer *)(uintptr_t)0x1; /* must stay as it is on failure */
    const moe_status st = moe_layer_create(ctx, d, w, &layer);
    CHECK(st == want, "%s: got %s, expected %s (%s)", what, moe_status_string(st), moe_status_string(want),
          moe_context_error(ctx));
    CHECK(layer == (moe_layer *)(uintptr_t)0x1, "%s: out_layer was written on failure", what);
    CHECK(moe_context_error(ctx)[0] != '\0', "%s: no detail message", what);
    CHECK(moe_last_error()[0] != '\0', "%s: no thread detail message", what);
    if (st == MOE_OK && layer != (moe_layer *)(uintptr_t)0x1) moe_layer_destroy(layer);
}

static void config_errors(moe_context *ctx, h_rng *r)
{
    moe_layer_desc d = base_desc();
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);

    expect_create(NULL, &d, &hl.w, MOE_ERROR_NULL_POINTER, "NULL context");
    expect_create(ctx, NULL, &hl.w, MOE_ERROR_NULL_POINTER, "NULL desc");
    expect_create(ctx, &d, NULL, MOE_ERROR_NULL_POINTER, "NULL weights");
    CHECK_STATUS(moe_layer_create(ctx, &d, &hl.w, NULL), MOE_ERROR_NULL_POINTER);
    moe_layer_weights w = hl.w;
    w.router = NULL;
    expect_create(ctx, &d, &w, MOE_ERROR_NULL_POINTER, "NULL router");
    w = hl.w;
    w.gate = NULL;
    expect_create(ctx, &d, &w, MOE_ERROR_NULL_POINTER, "NULL gate for SwiGLU");
    w = hl.w;
    w.struct_size = 8;
    expect_create(ctx, &d, &w, MOE_ERROR_INVALID_ARGUMENT, "weights struct_size too small");

    const struct {
        int64_t *field;
        int64_t value;
        moe_status want;
        const char *what;
    } sizes[] = {
        {&d.d_model, 0, MOE_ERROR_INVALID_SIZE, "d_model 0"},
        {&d.d_model, -5, MOE_ERROR_INVALID_SIZE, "d_model negative"},
        {&d.d_ff, 0, MOE_ERROR_INVALID_SIZE, "d_ff 0"},
        {&d.n_experts, -1, MOE_ERROR_INVALID_SIZE, "n_experts negative"},
        {&d.top_k, 0, MOE_ERROR_INVALID_SIZE, "top_k 0"},
        {&d.max_tokens, 0, MOE_ERROR_INVALID_SIZE, "max_tokens 0"},
        {&d.d_ff_shared, -3, MOE_ERROR_INVALID_SIZE, "d_ff_shared negative"},
        {&d.expert_capacity, -1, MOE_ERROR_INVALID_SIZE, "capacity negative"},
        {&d.top_k, 9, MOE_ERROR_INVALID_CONFIG, "top_k > n_experts"},
        {&d.n_group, 3, MOE_ERROR_INVALID_CONFIG, "n_group does not divide n_experts"},
        {&d.max_tokens, (int64_t)1 << 40, MOE_ERROR_SIZE_OVERFLOW, "max_tokens * d_model overflows"},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        d = base_desc();
        *sizes[i].field = sizes[i].value;
        if (sizes[i].field == &d.max_tokens && sizes[i].value > 1) d.d_model = (int64_t)1 << 29;
        expect_create(ctx, &d, &hl.w, sizes[i].want, sizes[i].what);
    }
    d = base_desc();
    d.n_group = 4;
    d.topk_group = 5;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_INVALID_CONFIG, "topk_group > n_group");
    d.topk_group = 0;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_INVALID_CONFIG, "n_group without topk_group");
    d = base_desc();
    d.activation = (moe_activation)42;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_INVALID_ARGUMENT, "unknown activation");
    d = base_desc();
    d.struct_size = 4;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_INVALID_ARGUMENT, "desc struct_size too small");
    d = base_desc();
    d.shared_expert_gate = 1;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_INVALID_CONFIG, "shared gate without shared expert");
    d = base_desc();
    d.routed_scaling_factor = NAN;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_INVALID_CONFIG, "NaN scaling factor");
    d = base_desc();
    d.has_selection_bias = 1;
    expect_create(ctx, &d, &hl.w, MOE_ERROR_NULL_POINTER, "selection bias without router_bias");

    /* The reference refuses the same input with the same statuses, and n_tokens·d_model
     * overflowing size_t (it has no token budget) is caught too. */
    float x[24] = {0}, y[24];
    d = base_desc();
    d.top_k = 9;
    CHECK_STATUS(moe_reference_forward(&d, &hl.w, 1, x, y, NULL), MOE_ERROR_INVALID_CONFIG);
    d = base_desc();
    CHECK_STATUS(moe_reference_forward(&d, &hl.w, INT64_MAX / 4, x, y, NULL), MOE_ERROR_SIZE_OVERFLOW);
    CHECK_STATUS(moe_reference_forward(&d, &hl.w, 0, x, y, NULL), MOE_ERROR_INVALID_SIZE);
    h_layer_free(&hl);
}

/* Refused by validation before the library allocates anything: the first allocation point
 * is made to fail, so a check that comes too late (or not at all) shows up as
 * MOE_ERROR_OUT_OF_MEMORY instead of the expected status, and the huge shapes below never
 * cost memory. The message must name the limit. */
static void expect_refused_early(moe_context *ctx, const moe_layer_desc *d, const moe_layer_weights *w,
                                 const char *limit, const char *what)
{
    moe_test_inject_alloc_failure(1);
    expect_create(ctx, d, w, MOE_ERROR_INVALID_SIZE, what);
    const int64_t points = moe_test_inject_alloc_failure(0);
    CHECK(points == 0, "%s: %lld allocation point(s) reached before the refusal", what, (long long)points);
    CHECK(strstr(moe_context_error(ctx), limit) != NULL, "%s: message '%s' does not name the limit %s", what,
          moe_context_error(ctx), limit);
}

/* The kernels take 32-bit integers (Vulkan specialisation and push constants, OpenCL -D
 * options and int arguments) and index the plan's rows with int32: every shape that would not
 * fit is refused at layer creation, with the same status on every backend, rather than
 * truncated on the way to a kernel (d_model 2^32 + 24 once reached a Vulkan kernel as 24). */
static void limit_errors(moe_context *ctx, h_rng *r)
{
    moe_layer_desc d = base_desc();
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);
    const int64_t dim_limit = INT32_MAX / 2; /* 1073741823 */
    const struct {
        int64_t *field;
        int64_t value;
        const char *what;
    } dims[] = {
        {&d.d_model, dim_limit + 1, "d_model 2^30"},
        {&d.d_model, ((int64_t)1 << 32) + 24, "d_model 2^32 + 24"},
        {&d.d_ff, (int64_t)INT32_MAX + 1, "d_ff 2^31"},
        {&d.d_ff_shared, (int64_t)1 << 33, "d_ff_shared 2^33"},
        {&d.n_experts, dim_limit + 1, "n_experts 2^30"},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        d = base_desc();
        d.max_tokens = 1;
        *dims[i].field = dims[i].value;
        expect_refused_early(ctx, &d, &hl.w, "1073741823", dims[i].what);
    }
    /* max_tokens·top_k (rows of the plan), the padded row bound, max_tokens·(n_experts +
     * n_group) (logits and routing workspace): each past INT32_MAX. */
    d = base_desc();
    d.max_tokens = (int64_t)1 << 30; /* ·2 = 2^31 */
    expect_refused_early(ctx, &d, &hl.w, "2147483647", "max_tokens*top_k 2^31");
    d = base_desc();
    d.top_k = 1;
    d.max_tokens = INT32_MAX - 100; /* T·k fits, the padding of 8 experts' row tiles does not */
    expect_refused_early(ctx, &d, &hl.w, "2147483647", "padded row bound past 2^31 - 1");
    d = base_desc();
    d.top_k = 1;
    d.n_experts = (int64_t)1 << 20;
    d.max_tokens = (int64_t)1 << 12; /* T·E = 2^32 */
    expect_refused_early(ctx, &d, &hl.w, "2147483647", "max_tokens*n_experts 2^32");
    /* The limit is exact: the largest budget whose logits and workspace (T·(E + 1) floats)
     * fit is accepted (scratch is only sized by a forward), one more token is not. */
    d = base_desc();
    d.max_tokens = INT32_MAX / (8 + 1);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &d, &hl.w, &layer), MOE_OK);
    moe_layer_destroy(layer);
    d.max_tokens++;
    expect_refused_early(ctx, &d, &hl.w, "2147483647", "max_tokens*(n_experts+n_group) 2^31");

    /* The reference has no token budget: it checks n_tokens against the same limits. */
    float x[24] = {0};
    h_guarded y = h_guarded_alloc(24);
    d = base_desc();
    moe_test_inject_alloc_failure(1);
    CHECK_STATUS(moe_reference_forward(&d, &hl.w, (int64_t)1 << 30, x, y.data, NULL), MOE_ERROR_INVALID_SIZE);
    const int64_t points = moe_test_inject_alloc_failure(0);
    CHECK(points == 0, "reference: %lld allocation point(s) before refusing n_tokens 2^30",
          (long long)points);
    CHECK(strstr(moe_last_error(), "2147483647") != NULL, "reference: message '%s'", moe_last_error());
    CHECK(h_untouched(&y), "a refused reference forward wrote to y");
    h_guarded_free(&y);
    h_layer_free(&hl);
}

/* Environment variable var set to value: the context is refused (INVALID_ARGUMENT), *ctx not written,
 * and the message names the variable and the value, quoted. */
static void env_refused(const moe_context_desc *desc, const char *var, const char *value)
{
    moe_context *const unset = (moe_context *)(uintptr_t)0x1;
    moe_context *ctx = unset;
    setenv(var, value, 1);
    CHECK_STATUS(moe_context_create(desc, &ctx), MOE_ERROR_INVALID_ARGUMENT);
    CHECK(ctx == unset, "%s='%s': context written on failure", var, value);
    if (ctx != unset) moe_context_destroy(ctx);
    char quoted[64];
    snprintf(quoted, sizeof quoted, "'%s'", value);
    CHECK(strstr(moe_last_error(), var) && strstr(moe_last_error(), quoted), "%s='%s': message '%s'", var,
          value, moe_last_error());
}

/* moe_context_desc.n_threads and MOE_NUM_THREADS (moe.h): 1..1024 threads, a value that is not
 * a plain decimal number in range is refused, never replaced by a guess. */
static void thread_errors(void)
{
    moe_context *const unset = (moe_context *)(uintptr_t)0x1;
    moe_context *ctx = unset;
    moe_context_desc desc = {.struct_size = sizeof desc, .backend = MOE_BACKEND_CPU};
    unsetenv("MOE_NUM_THREADS");
    const int too_many[] = {1025, 1 << 20, INT32_MAX};
    for (size_t i = 0; i < sizeof too_many / sizeof too_many[0]; i++) {
        desc.n_threads = too_many[i];
        CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_ERROR_INVALID_SIZE);
        CHECK(ctx == unset, "n_threads %d: context written on failure", too_many[i]);
        if (ctx != unset) moe_context_destroy(ctx);
        ctx = unset;
        CHECK(strstr(moe_last_error(), "n_threads") && strstr(moe_last_error(), "1024"),
              "n_threads %d: message '%s'", too_many[i], moe_last_error());
    }
    desc.n_threads = 3;
    ctx = NULL;
    CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_OK);
    moe_device_info info = {.struct_size = sizeof info};
    if (ctx) {
        CHECK_STATUS(moe_context_get_device_info(ctx, &info), MOE_OK);
        CHECK(info.compute_units == 3, "n_threads 3 gave %d threads", info.compute_units);
        moe_context_destroy(ctx);
    }

    /* A typo must not silently become 1 thread, the core count or 2^31 threads. */
    const char *bad[] = {
        "abc", "8x", "0", "-3", "+4", " 4", "4 ", "0x10", "1025", "4294967297", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        desc.n_threads = 0;
        env_refused(&desc, "MOE_NUM_THREADS", bad[i]);
        /* An explicit n_threads does not consult the variable; device info reports the cores. */
        desc.n_threads = 2;
        ctx = NULL;
        CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_OK);
        moe_context_destroy(ctx);
        CHECK_STATUS(moe_device_get_info(MOE_BACKEND_CPU, 0, &info), MOE_OK);
        CHECK(info.compute_units >= 1, "MOE_NUM_THREADS='%s': device info says %d threads", bad[i],
              info.compute_units);
    }
    setenv("MOE_NUM_THREADS", "3", 1);
    desc.n_threads = 0;
    ctx = NULL;
    CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_OK);
    if (ctx) {
        CHECK_STATUS(moe_context_get_device_info(ctx, &info), MOE_OK);
        CHECK(info.compute_units == 3, "MOE_NUM_THREADS=3 gave %d threads", info.compute_units);
        moe_context_destroy(ctx);
    }
    setenv("MOE_NUM_THREADS", "", 1); /* empty = unset: the core count */
    ctx = NULL;
    CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_OK);
    moe_context_destroy(ctx);
    unsetenv("MOE_NUM_THREADS");
#if defined(__linux__) && defined(CPU_COUNT)
    /* The default counts the cores the process may run on: bound to one (as mpirun binds a rank,
     * or taskset), one thread, not one per online core time-slicing it. */
    cpu_set_t saved, one;
    if (sched_getaffinity(0, sizeof saved, &saved) == 0) {
        CPU_ZERO(&one);
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &saved)) {
                CPU_SET(c, &one);
                break;
            }
        if (sched_setaffinity(0, sizeof one, &one) == 0) {
            ctx = NULL;
            CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_OK);
            if (ctx) {
                CHECK_STATUS(moe_context_get_device_info(ctx, &info), MOE_OK);
                CHECK(info.compute_units == 1, "bound to one core: %d threads by default",
                      info.compute_units);
                moe_context_destroy(ctx);
            }
            CHECK_STATUS(moe_device_get_info(MOE_BACKEND_CPU, 0, &info), MOE_OK);
            CHECK(info.compute_units == 1, "bound to one core: device info says %d cores",
                  info.compute_units);
            CHECK(sched_setaffinity(0, sizeof saved, &saved) == 0, "restoring the affinity mask failed");
        }
    }
#endif
}

/* MOE_CPU_PREFETCH (README): auto, on or off; anything else is refused, naming the value, not
 * taken as one of them. */
static void prefetch_errors(void)
{
    moe_context_desc desc = {.struct_size = sizeof desc, .backend = MOE_BACKEND_CPU, .n_threads = 1};
    const char *bad[] = {"yes", "ON", "1", "0", " off", "off ", "autoo"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) env_refused(&desc, "MOE_CPU_PREFETCH", bad[i]);
    const char *good[] = {"auto", "on", "off", ""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("MOE_CPU_PREFETCH", good[i], 1);
        moe_context *ctx = NULL;
        CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_OK);
        moe_context_destroy(ctx);
    }
    unsetenv("MOE_CPU_PREFETCH");
}

static void forward_errors(moe_context *ctx, h_rng *r)
{
    moe_layer_desc d = base_desc();
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &d, &hl.w, &layer), MOE_OK);
    if (!layer) return;
    const int64_t T = 16, D = d.d_model;
    float *x = malloc(sizeof(float) * (size_t)(2 * T * D));
    h_fill_input(&hl, 2 * T, x, r);
    h_guarded y = h_guarded_alloc((size_t)(2 * T * D));
    h_guarded w = h_guarded_alloc((size_t)(2 * T * d.top_k));
    moe_forward_stats stats = {.struct_size = sizeof stats, .topk_weights = w.data};

    CHECK_STATUS(moe_layer_forward(NULL, T, x, y.data, NULL), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward(layer, T, NULL, y.data, &stats), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward(layer, T, x, NULL, &stats), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward(layer, 0, x, y.data, &stats), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_layer_forward(layer, -7, x, y.data, &stats), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_layer_forward(layer, T + 1, x, y.data, &stats), MOE_ERROR_TOKEN_BUDGET);
    stats.struct_size = 3;
    CHECK_STATUS(moe_layer_forward(layer, T, x, y.data, &stats), MOE_ERROR_INVALID_ARGUMENT);
    stats.struct_size = sizeof stats;
    CHECK(h_untouched(&y) && h_untouched(&w), "a failed forward wrote to the caller's output");
    CHECK(moe_context_error(ctx)[0] != '\0', "no detail message after a failed forward");

    /* Buffers: too small, same buffer twice, out-of-range reads and writes. */
    moe_buffer *xb = NULL, *yb = NULL, *small = NULL;
    CHECK_STATUS(moe_buffer_create(ctx, T * D, &xb), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, T * D, &yb), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, D, &small), MOE_OK);
    CHECK_STATUS(moe_buffer_create(ctx, 0, &small), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_buffer_create(ctx, -1, &small), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_buffer_create(ctx, INT64_MAX, &small), MOE_ERROR_SIZE_OVERFLOW);
    CHECK_STATUS(moe_buffer_create(NULL, 4, &small), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_layer_forward_buffers(layer, T, xb, small, NULL), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_layer_forward_buffers(layer, T, xb, xb, NULL), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_layer_forward_buffers(layer, T, NULL, yb, NULL), MOE_ERROR_NULL_POINTER);
    CHECK_STATUS(moe_buffer_read(xb, T * D - 1, 2, y.data), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_buffer_read(xb, -1, 1, y.data), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_buffer_write(xb, 0, T * D + 1, x), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_buffer_read(xb, 0, 1, NULL), MOE_ERROR_NULL_POINTER);
    CHECK(h_untouched(&y), "a failed buffer read wrote to the caller's memory");
    moe_buffer_destroy(xb);
    moe_buffer_destroy(yb);
    moe_buffer_destroy(small);

    /* The context still works after all that. */
    CHECK_STATUS(moe_layer_forward(layer, T, x, y.data, NULL), MOE_OK);
    CHECK(h_guards_ok(&y), "guard zone overwritten");
    CHECK(moe_context_error(ctx)[0] == '\0', "a successful call left an error message");
    moe_layer_destroy(layer);
    h_guarded_free(&y);
    h_guarded_free(&w);
    free(x);
    h_layer_free(&hl);
}

static void backend_errors(void)
{
    moe_context *ctx = NULL;
    moe_context_desc desc = {.struct_size = sizeof desc, .backend = MOE_BACKEND_CPU, .device_index = 5};
    CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_ERROR_BACKEND_UNAVAILABLE);
    CHECK(ctx == NULL, "context written on failure");
    desc.device_index = 0;
    desc.backend = (moe_backend_kind)17;
    CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_ERROR_INVALID_ARGUMENT);
    desc.backend = MOE_BACKEND_CPU;
    desc.struct_size = 1;
    CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_context_create(NULL, NULL), MOE_ERROR_NULL_POINTER);
    const moe_backend_kind gpus[] = {MOE_BACKEND_VULKAN, MOE_BACKEND_OPENCL};
    for (size_t i = 0; i < 2; i++) {
        int count = -1;
        const moe_status st = moe_device_count(gpus[i], &count);
        CHECK(st == MOE_OK || st == MOE_ERROR_BACKEND_UNAVAILABLE, "device_count(%s): %s",
              moe_backend_name(gpus[i]), moe_status_string(st));
        if (st != MOE_OK || count == 0) {
            desc = (moe_context_desc){.struct_size = sizeof desc, .backend = gpus[i]};
            CHECK_STATUS(moe_context_create(&desc, &ctx), MOE_ERROR_BACKEND_UNAVAILABLE);
            CHECK(strlen(moe_last_error()) > 0, "no message for an unavailable backend");
            printf("  %s: %d devices; an explicit request says: %s\n", moe_backend_name(gpus[i]), count,
                   moe_last_error());
        }
    }
    /* AUTO always ends somewhere: at worst on the CPU backend. */
    CHECK_STATUS(moe_context_create(NULL, &ctx), MOE_OK);
    if (ctx) {
        printf("  auto chose %s\n", moe_backend_name(moe_context_backend(ctx)));
        moe_context_destroy(ctx);
        ctx = NULL;
    }
    moe_context_destroy(NULL);
    moe_layer_destroy(NULL);
    moe_buffer_destroy(NULL);
    CHECK(strcmp(moe_status_string(MOE_ERROR_TOKEN_BUDGET), "MOE_ERROR_TOKEN_BUDGET") == 0, "status string");
    CHECK(strcmp(moe_status_string((moe_status)-999), "MOE_ERROR_UNKNOWN") == 0, "unknown status string");
}

/* Non-finite input (moe.h): it stays in its token. */
static void nonfinite_input(moe_context *ctx, h_rng *r)
{
    moe_layer_desc d = base_desc();
    d.d_ff_shared = 12;
    h_layer hl;
    h_layer_init(&hl, &d, r, 1.0f);
    moe_layer *layer = NULL;
    CHECK_STATUS(moe_layer_create(ctx, &d, &hl.w, &layer), MOE_OK);
    const int64_t T = 9, D = d.d_model, bad_token = 4;
    float *x = malloc(sizeof(float) * (size_t)(T * D));
    float *y = malloc(sizeof(float) * (size_t)(T * D)), *yr = malloc(sizeof(float) * (size_t)(T * D));
    const float poison[] = {NAN, INFINITY, -INFINITY};
    for (size_t p = 0; p < 3 && layer; p++) {
        h_fill_input(&hl, T, x, r);
        x[bad_token * D + 3] = poison[p];
        float z = 0.0f;
        moe_forward_stats s = {.struct_size = sizeof s, .z_loss = &z};
        CHECK_STATUS(moe_layer_forward(layer, T, x, y, &s), MOE_OK);
        CHECK_STATUS(moe_reference_forward(&d, &hl.w, T, x, yr, NULL), MOE_OK);
        bool nonfinite = false;
        for (int64_t i = 0; i < D; i++) nonfinite |= !isfinite(y[bad_token * D + i]);
        CHECK(nonfinite, "poison %g: token %lld's output is all finite", (double)poison[p],
              (long long)bad_token);
        CHECK(isnan(z), "poison %g: z-loss %g is not NaN", (double)poison[p], (double)z);
        for (int64_t t = 0; t < T; t++) {
            if (t == bad_token) continue;
            const double err = h_rel_l2(y + t * D, yr + t * D, (size_t)D);
            CHECK(err <= 1e-5, "poison %g: clean token %lld differs from the reference (%.3g)",
                  (double)poison[p], (long long)t, err);
        }
    }
    moe_layer_destroy(layer);
    free(x);
    free(y);
    free(yr);
    h_layer_free(&hl);
}

/* Does `hay` contain `needle`, ASCII case-insensitively? */
static bool contains_ci(const char *hay, const char *needle)
{
    for (; *hay; hay++) {
        size_t i = 0;
        while (needle[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
        if (!needle[i]) return true;
    }
    return !*needle;
}

/* A context on `kind` from desc; the device it got (name), or "" with the failure in *st. */
static moe_status try_context(const moe_context_desc *desc, char *name, size_t size, moe_backend_kind *got)
{
    moe_context *c = NULL;
    const moe_status st = moe_context_create(desc, &c);
    name[0] = '\0';
    if (st != MOE_OK) {
        CHECK(c == NULL, "context written on failure");
        return st;
    }
    moe_device_info info = {.struct_size = sizeof info};
    CHECK_STATUS(moe_context_get_device_info(c, &info), MOE_OK);
    snprintf(name, size, "%s", info.name);
    if (got) *got = moe_context_backend(c);
    moe_context_destroy(c);
    return st;
}

/* Choosing the device by name, type and index on the backend under test, and AUTO's rules. */
static void device_choice(moe_backend_kind kind)
{
    int count = 0;
    CHECK_STATUS(moe_device_count(kind, &count), MOE_OK);
    char got[256];
    for (int i = 0; i < count; i++) {
        moe_device_info info = {.struct_size = sizeof info};
        CHECK_STATUS(moe_device_get_info(kind, i, &info), MOE_OK);
        /* By its whole name, and by a piece of it in another case: a device of that name. */
        moe_context_desc d = {.struct_size = sizeof d, .backend = kind, .device_name = info.name};
        CHECK_STATUS(try_context(&d, got, sizeof got, NULL), MOE_OK);
        CHECK(!strcmp(got, info.name), "device_name '%s' chose '%s'", info.name, got);
        char piece[8] = "";
        for (size_t j = 0; j + 1 < sizeof piece && info.name[j]; j++)
            piece[j] = (char)(isupper((unsigned char)info.name[j]) ? tolower((unsigned char)info.name[j])
                                                                   : toupper((unsigned char)info.name[j]));
        d.device_name = piece;
        CHECK_STATUS(try_context(&d, got, sizeof got, NULL), MOE_OK);
        CHECK(contains_ci(got, piece), "device_name '%s' chose '%s'", piece, got);
        /* By its type; and no device of the other types when every device has this one. */
        d.device_name = NULL;
        d.device_types = MOE_DEVICE_TYPE_BIT(info.type);
        CHECK_STATUS(try_context(&d, got, sizeof got, NULL), MOE_OK);
        d.device_types = ~MOE_DEVICE_TYPE_BIT(info.type) & 0x1fu;
        bool other_type = false;
        for (int k = 0; k < count; k++) {
            moe_device_info o = {.struct_size = sizeof o};
            CHECK_STATUS(moe_device_get_info(kind, k, &o), MOE_OK);
            other_type |= o.type != info.type;
        }
        if (!other_type) {
            CHECK_STATUS(try_context(&d, got, sizeof got, NULL), MOE_ERROR_BACKEND_UNAVAILABLE);
            CHECK(strstr(moe_last_error(), "of type") && strstr(moe_last_error(), info.name),
                  "no device of the other types: message '%s'", moe_last_error());
        }
    }
    /* No such name: refused, the message naming the filter and listing the devices. */
    moe_context_desc none = {.struct_size = sizeof none, .backend = kind, .device_name = "no-such-device-7q"};
    CHECK_STATUS(try_context(&none, got, sizeof got, NULL), MOE_ERROR_BACKEND_UNAVAILABLE);
    CHECK(strstr(moe_last_error(), "no-such-device-7q") && strstr(moe_last_error(), "device(s)"),
          "no such name: message '%s'", moe_last_error());
    /* An index counts among the devices the filters leave: one past them is refused. */
    moe_context_desc past = {.struct_size = sizeof past, .backend = kind, .device_index = count};
    CHECK_STATUS(try_context(&past, got, sizeof got, NULL), MOE_ERROR_BACKEND_UNAVAILABLE);

    /* AUTO: an index belongs to one backend's list, so AUTO refuses one; a CPU-type choice
     * passes by the GPU APIs' CPU devices to the native CPU backend. */
    moe_context_desc a = {.struct_size = sizeof a, .backend = MOE_BACKEND_AUTO, .device_index = 1};
    if (!getenv("MOE_BACKEND")) {
        CHECK_STATUS(try_context(&a, got, sizeof got, NULL), MOE_ERROR_INVALID_ARGUMENT);
        CHECK(strstr(moe_last_error(), "AUTO") != NULL, "AUTO with an index: message '%s'", moe_last_error());
        a.device_index = 0;
        a.device_types = MOE_DEVICE_TYPE_BIT(MOE_DEVICE_TYPE_CPU);
        moe_backend_kind chose = MOE_BACKEND_AUTO;
        CHECK_STATUS(try_context(&a, got, sizeof got, &chose), MOE_OK);
        CHECK(chose == MOE_BACKEND_CPU, "AUTO asked for a CPU device chose backend %s",
              moe_backend_name(chose));
    }

    /* The tools' spelling (moe_context_desc_set_device). */
    moe_context_desc p = {.struct_size = sizeof p};
    CHECK_STATUS(moe_context_desc_set_device(&p, "3"), MOE_OK);
    CHECK(p.device_index == 3 && !p.device_name && !p.device_types, "'3': index %d", p.device_index);
    CHECK_STATUS(moe_context_desc_set_device(&p, "discrete+integrated"), MOE_OK);
    CHECK(p.device_types == (MOE_DEVICE_TYPE_BIT(MOE_DEVICE_TYPE_DISCRETE_GPU) |
                             MOE_DEVICE_TYPE_BIT(MOE_DEVICE_TYPE_INTEGRATED_GPU)) &&
              !p.device_name,
          "'discrete+integrated': types %#x", p.device_types);
    const char *named = "name:cpu";
    CHECK_STATUS(moe_context_desc_set_device(&p, named), MOE_OK);
    CHECK(p.device_name == named + 5, "'name:cpu' did not name 'cpu'");
    CHECK_STATUS(moe_context_desc_set_device(&p, "RTX 4090"), MOE_OK);
    CHECK(p.device_name && !strcmp(p.device_name, "RTX 4090"), "'RTX 4090' is not a name");
    CHECK_STATUS(moe_context_desc_set_device(&p, "cpu+gpu"), MOE_OK);
    CHECK(p.device_name && !strcmp(p.device_name, "cpu+gpu"), "'cpu+gpu' (no type 'gpu') is not a name");
    CHECK_STATUS(moe_context_desc_set_device(&p, ""), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_context_desc_set_device(&p, "name:"), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_context_desc_set_device(&p, "99999999999"), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_context_desc_set_device(NULL, "0"), MOE_ERROR_NULL_POINTER);
    p.struct_size = offsetof(moe_context_desc, device_name); /* a 0.1.0 desc: no such fields */
    CHECK_STATUS(moe_context_desc_set_device(&p, "cpu"), MOE_ERROR_INVALID_ARGUMENT);
}

int main(int argc, char **argv)
{
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_errors");
    config_errors(ctx, &r);
    limit_errors(ctx, &r);
    thread_errors();
    prefetch_errors();
    forward_errors(ctx, &r);
    backend_errors();
    device_choice(kind);
    nonfinite_input(ctx, &r);
    moe_context_destroy(ctx);
    return h_finish("test_errors");
}
