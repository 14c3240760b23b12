/*
 * test_concurrency.c — moe.h's threading contract: separate contexts may be used from
 * different threads at the same time, on every backend and every driver.
 *
 * First use: the very first thing the process does is release 8 threads together, each
 * enumerating the backend under test, asking its device info and creating a context on it
 * and on AUTO (which enumerates every GPU backend too); every thread must succeed and see
 * the same devices. A driver's first enumeration is where it builds its global state (PoCL
 * crashed or reported zero devices here), and that happens once per process, so the test
 * repeats in a few fresh child processes (this program run again with --first-use).
 *
 * Forwards: 4 threads, each with its own context and layers, run the same forwards (odd
 * d_model, T = 1 and T = 33, three layer shapes) at the same time; every output and top-k
 * id must be bit-identical to the same forwards run serially on one thread. Under
 * ThreadSanitizer (CI's tsan stage) this is also the race detector's workload.
 *
 * Out of memory at first use: the driver's process-wide state (Vulkan's instance, OpenCL's
 * platform list) failing to be created is MOE_ERROR_OUT_OF_MEMORY naming the call, not "no
 * device", and is retried by the next call; under AUTO it is a logged warning and AUTO moves
 * on (checked from the CPU suite). Every allocation point of a first context creation is
 * failed in turn; each of these checks runs in a fresh child process.
 *
 * Usage: test_concurrency <cpu|vulkan|opencl> [--first-use | --first-use-oom WHAT].
 * MOE_TEST_FIRST_USE_RUNS sets the number of first-use child processes (default 4);
 * MOE_TEST_EMULATOR the emulator they run under when cross-compiled (run_child).
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <errno.h>
#include <pthread.h> /* on Windows, mingw-w64's winpthreads */
#include <stdlib.h>
#include <string.h>
#if defined(_WIN32)
#include <process.h> /* _spawnv */
#else
#include <spawn.h>
#include <sys/wait.h>
#endif

extern char **environ;

/* AddressSanitizer builds (CI's asan stage): LLVM inside PoCL (llvm::sys::RemoveFileOnSignal)
 * installs a malloc'd alternate signal stack in whichever thread first gets there — here a
 * racing thread — and ASan's teardown of that thread then fails to munmap it (a CHECK
 * failure inside ASan, not a finding). ASan's own alternate stack stays off for this
 * program. */
#if defined(__GNUC__)
#define EXPORTED __attribute__((visibility("default"))) /* the project builds with hidden visibility */
#else
#define EXPORTED
#endif
EXPORTED const char *__asan_default_options(void);
EXPORTED const char *__asan_default_options(void)
{
    return "use_sigaltstack=0";
}

/* ---- first use -------------------------------------------------------------------------------- */

#define RACE_THREADS 8

typedef struct race_result {
    moe_status count_status, info_status, create_status, auto_status;
    int count;
    char name[256];
    char error[512];
} race_result;

typedef struct race_arg {
    moe_backend_kind kind;
    int index;
    pthread_barrier_t *barrier;
    race_result result;
} race_arg;

static void note_error(race_result *r, moe_status st)
{
    if (st != MOE_OK && !r->error[0]) snprintf(r->error, sizeof r->error, "%s", moe_last_error());
}

static moe_status create_and_destroy(moe_backend_kind kind)
{
    moe_context_desc desc = {.struct_size = sizeof desc, .backend = kind};
    moe_context *ctx = NULL;
    const moe_status st = moe_context_create(&desc, &ctx);
    moe_context_destroy(ctx);
    return st;
}

static void *race_thread(void *p)
{
    race_arg *a = p;
    race_result *r = &a->result;
    pthread_barrier_wait(a->barrier);
    /* Half the threads start with AUTO, so a backend is first touched both from its own
     * enumeration and from AUTO's walk over every backend. */
    if (a->index % 2) note_error(r, r->auto_status = create_and_destroy(MOE_BACKEND_AUTO));
    r->count = -1;
    note_error(r, r->count_status = moe_device_count(a->kind, &r->count));
    moe_device_info info = {.struct_size = sizeof info};
    r->info_status = moe_device_get_info(a->kind, 0, &info);
    if (r->count > 0) note_error(r, r->info_status);
    snprintf(r->name, sizeof r->name, "%s", r->info_status == MOE_OK ? info.name : "");
    r->create_status = create_and_destroy(a->kind);
    if (r->count > 0) note_error(r, r->create_status);
    if (a->index % 2 == 0) note_error(r, r->auto_status = create_and_destroy(MOE_BACKEND_AUTO));
    return NULL;
}

/* Runs the race; returns the device count every thread agreed on, or -1 after a failure. */
static int first_use_race(moe_backend_kind kind, const char *where)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, RACE_THREADS);
    race_arg args[RACE_THREADS];
    pthread_t threads[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        args[i] = (race_arg){.kind = kind, .index = i, .barrier = &barrier};
        if (pthread_create(&threads[i], NULL, race_thread, &args[i]) != 0) {
            fprintf(stderr, "FAIL: pthread_create\n");
            exit(1);
        }
    }
    for (int i = 0; i < RACE_THREADS; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&barrier);

    const int failures_before = h_failures;
    const race_result *r0 = &args[0].result;
    for (int i = 0; i < RACE_THREADS; i++) {
        const race_result *r = &args[i].result;
        CHECK(r->count_status == MOE_OK, "%s, thread %d: moe_device_count: %s (%s)", where, i,
              moe_status_string(r->count_status), r->error);
        CHECK(r->count == r0->count, "%s, thread %d: %d devices, thread 0 saw %d", where, i, r->count,
              r0->count);
        CHECK(r->auto_status == MOE_OK, "%s, thread %d: AUTO context: %s (%s)", where, i,
              moe_status_string(r->auto_status), r->error);
        if (r->count > 0) {
            CHECK(r->info_status == MOE_OK, "%s, thread %d: moe_device_get_info: %s (%s)", where, i,
                  moe_status_string(r->info_status), r->error);
            CHECK(strcmp(r->name, r0->name) == 0, "%s, thread %d: device '%s', thread 0 saw '%s'", where, i,
                  r->name, r0->name);
            CHECK(r->create_status == MOE_OK, "%s, thread %d: context: %s (%s)", where, i,
                  moe_status_string(r->create_status), r->error);
        } else {
            CHECK(r->create_status == MOE_ERROR_BACKEND_UNAVAILABLE,
                  "%s, thread %d: no device, yet context: %s", where, i, moe_status_string(r->create_status));
        }
    }
    if (h_failures != failures_before) return -1;
    printf("%s: %d threads agree on %d device(s) '%s'\n", where, RACE_THREADS, r0->count, r0->name);
    return r0->count;
}

/* The program's own path, for run_child under an emulator (main sets it from argv[0]). */
static const char *g_self_path = "";

/* This program again as `self backend mode [what]`, in a fresh process. Exit 0: passed;
 * 77: no device, which is right only when `count` is 0. Cross-compiled, the test runs under
 * an emulator (qemu-user) that MOE_TEST_EMULATOR names, its words separated by '|' (CMake's
 * CMAKE_CROSSCOMPILING_EMULATOR): /proc/self/exe is then the emulator's program and the host
 * kernel cannot run this one, so the child is the emulator again with this program's path. */
#if defined(_WIN32)
/* Windows: the C runtime's _spawnv, waiting (under Wine too: a Windows program's child is a
 * Windows program). _spawnv joins the arguments with spaces, which none of them has. */
static void run_child(const char *backend, const char *mode, const char *what, int count)
{
    const char *child_argv[] = {g_self_path, backend, mode, what, NULL};
    fflush(stdout); /* the child's lines after ours */
    const intptr_t code = _spawnv(_P_WAIT, g_self_path, child_argv);
    CHECK(code >= 0, "_spawnv %s: %s", g_self_path, strerror(errno));
    CHECK(code == 0 || (code == SKIP_CODE && count == 0), "child '%s %s' exited %d", mode, what ? what : "",
          (int)code);
}
#else
static void run_child(const char *backend, const char *mode, const char *what, int count)
{
    char *self = "/proc/self/exe";
    char *child_argv[16 + 5] = {self, (char *)backend, (char *)mode, (char *)what, NULL};
    char emulator[1024] = "";
    const char *env = getenv("MOE_TEST_EMULATOR");
    if (env && *env) {
        CHECK(strlen(env) < sizeof emulator, "MOE_TEST_EMULATOR is longer than %zu bytes",
              sizeof emulator - 1);
        if (strlen(env) >= sizeof emulator) return;
        strcpy(emulator, env);
        int n = 0;
        char *rest = NULL;
        for (char *word = strtok_r(emulator, "|", &rest); word; word = strtok_r(NULL, "|", &rest)) {
            CHECK(n < 16, "MOE_TEST_EMULATOR has more than 16 words");
            if (n == 16) return;
            child_argv[n++] = word;
        }
        child_argv[n] = (char *)g_self_path;
        child_argv[n + 1] = (char *)backend;
        child_argv[n + 2] = (char *)mode;
        child_argv[n + 3] = (char *)what;
        child_argv[n + 4] = NULL;
        self = child_argv[0];
    }
    fflush(stdout); /* the child's lines after ours */
    pid_t pid;
    const int err = posix_spawnp(&pid, self, NULL, NULL, child_argv, environ);
    CHECK(err == 0, "posix_spawnp %s: %s", self, strerror(err));
    if (err != 0) return;
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    if (WIFSIGNALED(status)) {
        CHECK(0, "child '%s %s' died of signal %d (%s)", mode, what ? what : "", WTERMSIG(status),
              strsignal(WTERMSIG(status)));
        return;
    }
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    CHECK(code == 0 || (code == SKIP_CODE && count == 0), "child '%s %s' exited %d", mode, what ? what : "",
          code);
}
#endif

/* ---- first use, out of memory ------------------------------------------------------------------- */

/* A driver's process-wide state (Vulkan's instance, OpenCL's platform list) is created on
 * first use; running out of memory there is an error, not "no device", and is not kept: the
 * next call tries again. Each check runs in a fresh child (the state exists only once). */

/* The calls that create that state, and the message's native error. */
static const char *first_call(moe_backend_kind kind)
{
    return kind == MOE_BACKEND_VULKAN ? "vkCreateInstance" : "clGetPlatformIDs";
}
static const char *first_oom(moe_backend_kind kind)
{
    return kind == MOE_BACKEND_VULKAN ? "VK_ERROR_OUT_OF_HOST_MEMORY" : "CL_OUT_OF_HOST_MEMORY";
}

/* moe_device_count's first point fails: MOE_ERROR_OUT_OF_MEMORY naming the call and the
 * native error, the count untouched; the next call enumerates again and finds the devices. */
static void oom_count(moe_backend_kind kind)
{
    int count = -7;
    moe_test_inject_alloc_failure(1);
    const moe_status st = moe_device_count(kind, &count);
    moe_test_inject_alloc_failure(0);
    const char *msg = moe_last_error();
    CHECK(st == MOE_ERROR_OUT_OF_MEMORY, "device count with its first point failing: %s (%s)",
          moe_status_string(st), msg);
    /* The call is vkCreateInstance or clGetPlatformIDs (with MOE_VK_VALIDATION=1 the layer
     * query before it). */
    CHECK(strstr(msg, " failed: ") && strstr(msg, first_oom(kind)), "message: %s", msg);
    CHECK(count == -7, "count written on failure (%d)", count);
    CHECK_STATUS(moe_device_count(kind, &count), MOE_OK);
    CHECK(count > 0, "the retried enumeration found %d devices", count);
}

typedef struct warnings {
    char text[4096];
} warnings;

static void keep_warnings(moe_log_level level, const char *message, void *user)
{
    warnings *w = user;
    if (level > MOE_LOG_WARNING) return;
    const size_t used = strlen(w->text);
    snprintf(w->text + used, sizeof w->text - used, "%s\n", message);
}

/* One context creation on `kind` with the n-th allocation point failing; returns the status
 * and the number of points the creation passed, and appends the error or the logged
 * warnings to `text`. */
static moe_status create_failing(moe_backend_kind kind, int64_t n, int64_t *counted, char *text, size_t size)
{
    warnings w = {{0}};
    moe_context_desc desc = {.struct_size = sizeof desc,
                             .backend = kind,
                             .log = keep_warnings,
                             .log_user_data = &w,
                             .log_level = MOE_LOG_WARNING};
    moe_context *ctx = NULL;
    moe_test_inject_alloc_failure(n);
    const moe_status st = moe_context_create(&desc, &ctx);
    *counted = moe_test_inject_alloc_failure(0);
    snprintf(text, size, "%s%s", st == MOE_OK ? "" : moe_last_error(), w.text);
    if (getenv("MOE_TEST_VERBOSE"))
        printf("  point %lld: %s: %s\n", (long long)n, moe_status_string(st), text);
    moe_context_destroy(ctx);
    return st;
}

#define MAX_POINTS 2000

/* Explicit backend. The allocation points of a first context creation fail in turn until
 * the state's creation has failed (MOE_ERROR_OUT_OF_MEMORY naming the call; every earlier
 * one an out-of-memory status too); then, the state made, every point of a creation fails in
 * turn: each an out-of-memory status or an absorbed failure (MOE_OK), and the device's (and
 * OpenCL's queue's) creation among them. */
static void oom_walk(moe_backend_kind kind)
{
    char text[8192];
    int64_t counted = 0;
    bool seen_first = false;
    for (int64_t n = 1; n <= MAX_POINTS && !seen_first; n++) {
        const moe_status st = create_failing(kind, n, &counted, text, sizeof text);
        if (counted < n) break;
        seen_first = strstr(text, first_call(kind)) != NULL;
        CHECK(st == MOE_ERROR_OUT_OF_MEMORY || st == MOE_ERROR_OUT_OF_DEVICE_MEMORY ||
                  (st == MOE_OK && !seen_first),
              "first creation, point %lld: %s (%s)", (long long)n, moe_status_string(st), text);
        if (seen_first) {
            CHECK(st == MOE_ERROR_OUT_OF_MEMORY, "%s failing: %s, not MOE_ERROR_OUT_OF_MEMORY",
                  first_call(kind), moe_status_string(st));
            CHECK(strstr(text, first_oom(kind)) != NULL, "message: %s", text);
        }
    }
    CHECK(seen_first, "no failure of %s seen: is it an allocation point?", first_call(kind));
    int count = 0; /* not kept: the next call makes the state */
    CHECK_STATUS(moe_device_count(kind, &count), MOE_OK);
    CHECK(count > 0, "the retried enumeration found %d devices", count);

    const char *wanted[2] = {"vkCreateDevice", NULL};
    if (kind == MOE_BACKEND_OPENCL) {
        wanted[0] = "clCreateContext";
        wanted[1] = "clCreateCommandQueue";
    }
    bool seen[2] = {wanted[0] == NULL, wanted[1] == NULL};
    int64_t n = 1;
    for (; n <= MAX_POINTS; n++) {
        const moe_status st = create_failing(kind, n, &counted, text, sizeof text);
        if (counted < n) {
            CHECK(st == MOE_OK, "no point failed, yet: %s (%s)", moe_status_string(st), text);
            break;
        }
        CHECK(st == MOE_OK || st == MOE_ERROR_OUT_OF_MEMORY || st == MOE_ERROR_OUT_OF_DEVICE_MEMORY,
              "point %lld: %s (%s)", (long long)n, moe_status_string(st), text);
        for (int i = 0; i < 2; i++) seen[i] = seen[i] || strstr(text, wanted[i]) != NULL;
    }
    CHECK(n <= MAX_POINTS, "more than %d allocation points in a context creation", MAX_POINTS);
    for (int i = 0; i < 2; i++)
        CHECK(seen[i], "no failure of %s seen: is it an allocation point?", wanted[i]);
    printf("first use, out of memory: %s's state failed and retried; %lld points of a creation walked\n",
           moe_backend_name(kind), (long long)counted);
}

/* AUTO: the allocation points of a first AUTO context creation fail in turn until `gpu`'s
 * state creation has failed: that run must still give a context (on the CPU, or another GPU
 * backend), with a logged warning naming the call. Earlier runs give a context or an
 * out-of-memory status. For OpenCL, Vulkan's state is made first (AUTO tries Vulkan first). */
static void oom_auto(moe_backend_kind gpu)
{
    int count = 0;
    if (gpu == MOE_BACKEND_OPENCL) (void)moe_device_count(MOE_BACKEND_VULKAN, &count);
    char text[8192];
    int64_t counted = 0;
    bool seen = false;
    for (int64_t n = 1; n <= MAX_POINTS && !seen; n++) {
        const moe_status st = create_failing(MOE_BACKEND_AUTO, n, &counted, text, sizeof text);
        if (counted < n) break;
        seen = strstr(text, first_call(gpu)) != NULL;
        CHECK(st == MOE_OK ||
                  (!seen && (st == MOE_ERROR_OUT_OF_MEMORY || st == MOE_ERROR_OUT_OF_DEVICE_MEMORY)),
              "AUTO, point %lld: %s (%s)", (long long)n, moe_status_string(st), text);
        if (seen) CHECK(strstr(text, first_oom(gpu)) != NULL, "AUTO's warning: %s", text);
    }
    count = 0;
    if (moe_device_count(gpu, &count) == MOE_OK && count > 0)
        CHECK(seen, "AUTO: no warning naming %s's failing %s", moe_backend_name(gpu), first_call(gpu));
    printf("first use, out of memory: AUTO passed by %s's failing %s (%s)\n", moe_backend_name(gpu),
           first_call(gpu), seen ? "seen" : "not built or no device");
}

/* ---- forwards ----------------------------------------------------------------------------------- */

#define WORKERS  4
#define N_SHAPES 3
#define MAX_T    33
#define ROUNDS   2

static const int64_t token_counts[] = {1, MAX_T};
#define N_T (int)(sizeof token_counts / sizeof token_counts[0])

static h_layer g_layers[N_SHAPES];
static float *g_x[N_SHAPES]; /* [MAX_T][d_model] */

typedef struct run_out {
    float *y[N_SHAPES][N_T];
    int32_t *ids[N_SHAPES][N_T];
    float *weights[N_SHAPES][N_T];
    int64_t routed[N_SHAPES][8]; /* --placed: each layer's tracked usage at the end */
    moe_status status;
    char error[512];
} run_out;

static void init_shapes(h_rng *r)
{
    const moe_layer_desc shapes[N_SHAPES] = {
        {.d_model = 37, .d_ff = 24, .n_experts = 8, .top_k = 2, .renormalize = 1},
        {.d_model = 67,
         .d_ff = 40,
         .n_experts = 6,
         .top_k = 3,
         .score_func = MOE_SCORE_SIGMOID,
         .has_selection_bias = 1,
         .activation = MOE_ACTIVATION_GEGLU,
         .d_ff_shared = 16,
         .shared_expert_gate = 1},
        {.d_model = 33,
         .d_ff = 20,
         .n_experts = 4,
         .top_k = 1,
         .activation = MOE_ACTIVATION_RELU,
         .expert_capacity = 12},
    };
    for (int s = 0; s < N_SHAPES; s++) {
        moe_layer_desc d = shapes[s];
        d.struct_size = sizeof d;
        d.max_tokens = MAX_T;
        h_layer_init(&g_layers[s], &d, r, 1.0f);
        g_x[s] = malloc(sizeof(float) * (size_t)(MAX_T * d.d_model));
        h_fill_input(&g_layers[s], MAX_T, g_x[s], r);
    }
}

static void out_alloc(run_out *o)
{
    memset(o, 0, sizeof *o);
    for (int s = 0; s < N_SHAPES; s++)
        for (int t = 0; t < N_T; t++) {
            const moe_layer_desc *d = &g_layers[s].desc;
            o->y[s][t] = calloc((size_t)(token_counts[t] * d->d_model), sizeof(float));
            o->ids[s][t] = calloc((size_t)(token_counts[t] * d->top_k), sizeof(int32_t));
            o->weights[s][t] = calloc((size_t)(token_counts[t] * d->top_k), sizeof(float));
        }
}

static void out_free(run_out *o)
{
    for (int s = 0; s < N_SHAPES; s++)
        for (int t = 0; t < N_T; t++) {
            free(o->y[s][t]);
            free(o->ids[s][t]);
            free(o->weights[s][t]);
        }
}

static moe_status out_fail(run_out *o, moe_status st, const char *what)
{
    o->status = st;
    snprintf(o->error, sizeof o->error, "%s: %s: %s", what, moe_status_string(st), moe_last_error());
    return st;
}

/* --placed: every layer's odd experts on a CPU context of the run's own (moe_layer_create_placed),
 * so each run drives two contexts at once — a GPU's part submitted while the CPU computes — with
 * an expert cache, whose uploads run on a thread of the library's own meanwhile. */
static bool g_placed;

/* Every forward of the test on one new context, in a fixed order, ROUNDS times (each round
 * overwrites the outputs, so a later round that differs from an earlier one shows too). */
static void run_all(moe_backend_kind kind, run_out *o)
{
    moe_context_desc cd = {.struct_size = sizeof cd, .backend = kind, .n_threads = 2};
    const moe_context_desc cpu_desc = {
        .struct_size = sizeof cpu_desc, .backend = MOE_BACKEND_CPU, .n_threads = 2};
    moe_context *ctx = NULL, *cpu = NULL;
    moe_layer *layers[N_SHAPES] = {NULL};
    moe_status st = moe_context_create(&cd, &ctx);
    if (st == MOE_OK && g_placed) st = moe_context_create(&cpu_desc, &cpu);
    if (st != MOE_OK) {
        out_fail(o, st, "moe_context_create");
        moe_context_destroy(ctx);
        return;
    }
    for (int s = 0; s < N_SHAPES && st == MOE_OK; s++) {
        if (g_placed) {
            moe_context *const two[2] = {ctx, cpu};
            const int32_t odd_on_cpu[8] = {0, 1, 0, 1, 0, 1, 0, 1};
            /* An expert cache of one slot on the run's context: the CPU's experts take turns in
             * it, so forwards upload (on the library's worker thread, while the CPU computes). */
            const moe_expert_cache_desc cache = {.struct_size = sizeof cache, .context = 0, .slots = 1};
            const moe_placement p = {.struct_size = sizeof p,
                                     .n_contexts = 2,
                                     .contexts = two,
                                     .expert_context = odd_on_cpu,
                                     .cache = &cache};
            st = moe_layer_create_placed(&p, &g_layers[s].desc, &g_layers[s].w, &layers[s]);
            if (st == MOE_OK) st = moe_layer_track_usage(layers[s], 4); /* usage.c under TSan too */
        } else {
            st = moe_layer_create(ctx, &g_layers[s].desc, &g_layers[s].w, &layers[s]);
        }
        if (st != MOE_OK) out_fail(o, st, "moe_layer_create");
    }
    for (int round = 0; round < ROUNDS && st == MOE_OK; round++)
        for (int s = 0; s < N_SHAPES && st == MOE_OK; s++)
            for (int t = 0; t < N_T && st == MOE_OK; t++) {
                moe_forward_stats stats = {
                    .struct_size = sizeof stats, .topk_ids = o->ids[s][t], .topk_weights = o->weights[s][t]};
                st = moe_layer_forward(layers[s], token_counts[t], g_x[s], o->y[s][t], &stats);
                if (st != MOE_OK) out_fail(o, st, "moe_layer_forward");
            }
    for (int s = 0; s < N_SHAPES && st == MOE_OK && g_placed; s++) {
        moe_expert_usage u = {.struct_size = sizeof u, .routed_total = o->routed[s]};
        st = moe_layer_get_usage(layers[s], &u);
        if (st != MOE_OK) out_fail(o, st, "moe_layer_get_usage");
    }
    for (int s = 0; s < N_SHAPES; s++) moe_layer_destroy(layers[s]);
    moe_context_destroy(ctx);
    moe_context_destroy(cpu);
}

typedef struct worker_arg {
    moe_backend_kind kind;
    pthread_barrier_t *barrier;
    run_out out;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    pthread_barrier_wait(a->barrier);
    run_all(a->kind, &a->out);
    return NULL;
}

static void concurrent_forwards(moe_backend_kind kind)
{
    h_rng rng = h_rng_seeded("test_concurrency");
    init_shapes(&rng);
    /* The serial run first: on a GPU backend it also fills the program / pipeline caches, so
     * the workers spend their time running forwards, not compiling. */
    run_out serial;
    out_alloc(&serial);
    run_all(kind, &serial);
    CHECK(serial.status == MOE_OK, "serial run: %s", serial.error);

    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, WORKERS);
    worker_arg args[WORKERS];
    pthread_t threads[WORKERS];
    for (int w = 0; w < WORKERS; w++) {
        args[w] = (worker_arg){.kind = kind, .barrier = &barrier};
        out_alloc(&args[w].out);
        if (pthread_create(&threads[w], NULL, worker, &args[w]) != 0) {
            fprintf(stderr, "FAIL: pthread_create\n");
            exit(1);
        }
    }
    for (int w = 0; w < WORKERS; w++) pthread_join(threads[w], NULL);
    pthread_barrier_destroy(&barrier);

    for (int w = 0; w < WORKERS; w++) {
        const run_out *o = &args[w].out;
        CHECK(o->status == MOE_OK, "worker %d: %s", w, o->error);
        if (o->status != MOE_OK || serial.status != MOE_OK) continue;
        for (int s = 0; s < N_SHAPES; s++)
            for (int t = 0; t < N_T; t++) {
                const moe_layer_desc *d = &g_layers[s].desc;
                const size_t ny = (size_t)(token_counts[t] * d->d_model),
                             nk = (size_t)(token_counts[t] * d->top_k);
                CHECK(memcmp(o->y[s][t], serial.y[s][t], ny * sizeof(float)) == 0,
                      "worker %d, shape %d, T=%lld: output differs from the serial run", w, s,
                      (long long)token_counts[t]);
                CHECK(memcmp(o->ids[s][t], serial.ids[s][t], nk * sizeof(int32_t)) == 0,
                      "worker %d, shape %d, T=%lld: top-k ids differ from the serial run", w, s,
                      (long long)token_counts[t]);
                CHECK(memcmp(o->weights[s][t], serial.weights[s][t], nk * sizeof(float)) == 0,
                      "worker %d, shape %d, T=%lld: top-k weights differ from the serial run", w, s,
                      (long long)token_counts[t]);
            }
        for (int s = 0; s < N_SHAPES && g_placed; s++)
            CHECK(memcmp(o->routed[s], serial.routed[s], sizeof o->routed[s]) == 0,
                  "worker %d, shape %d: expert usage differs from the serial run", w, s);
    }
    /* The serial run is itself checked against the reference, so "identical" is not
     * "identically wrong". */
    for (int s = 0; s < N_SHAPES && serial.status == MOE_OK; s++) {
        const moe_layer_desc *d = &g_layers[s].desc;
        float *ref = malloc(sizeof(float) * (size_t)(MAX_T * d->d_model));
        CHECK_STATUS(moe_reference_forward(d, &g_layers[s].w, MAX_T, g_x[s], ref, NULL), MOE_OK);
        const double err = h_rel_l2(serial.y[s][N_T - 1], ref, (size_t)(MAX_T * d->d_model));
        CHECK(err <= 1e-4, "shape %d: serial run differs from the reference (relative error %.3g)", s, err);
        free(ref);
    }
    printf("%d workers x %d rounds x %d shapes x %d token counts: compared with the serial run\n", WORKERS,
           ROUNDS, N_SHAPES, N_T);
    for (int w = 0; w < WORKERS; w++) out_free(&args[w].out);
    out_free(&serial);
    for (int s = 0; s < N_SHAPES; s++) {
        h_layer_free(&g_layers[s]);
        free(g_x[s]);
    }
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    /* The backend by name, without a moe call: the race must be the process's first. */
    const char *name = argc > 1 ? argv[1] : "cpu";
    g_self_path = argv[0];
    moe_backend_kind kind;
    if (!strcmp(name, "cpu"))
        kind = MOE_BACKEND_CPU;
    else if (!strcmp(name, "vulkan"))
        kind = MOE_BACKEND_VULKAN;
    else if (!strcmp(name, "opencl"))
        kind = MOE_BACKEND_OPENCL;
    else {
        fprintf(stderr, "unknown backend '%s'\n", name);
        return 2;
    }
    if (!moe_backend_is_built(kind)) { /* reads a table; touches no driver */
        printf("SKIP: backend not built into this library\n");
        return SKIP_CODE;
    }
    const char *mode = argc > 2 ? argv[2] : "", *what = argc > 3 ? argv[3] : "";
    if (!strcmp(mode, "--first-use-oom")) { /* a child: one check on a fresh process */
        if (!strcmp(what, "count"))
            oom_count(kind);
        else if (!strcmp(what, "create"))
            oom_walk(kind);
        else if (!strcmp(what, "auto-vulkan"))
            oom_auto(MOE_BACKEND_VULKAN);
        else if (!strcmp(what, "auto-opencl"))
            oom_auto(MOE_BACKEND_OPENCL);
        return h_finish("test_concurrency (child)");
    }
    if (!strcmp(mode, "--placed")) { /* the forwards only, each layer placed on two contexts */
        int count = 0;
        if (moe_device_count(kind, &count) != MOE_OK || count == 0) {
            printf("SKIP: backend has no device on this machine\n");
            return SKIP_CODE;
        }
        g_placed = true;
        concurrent_forwards(kind);
        return h_finish("test_concurrency --placed");
    }
    const bool child = !strcmp(mode, "--first-use");
    const int count = first_use_race(kind, child ? "first use (child)" : "first use");
    if (child) return count < 0 ? 1 : count == 0 ? SKIP_CODE : 0;

    const char *env = getenv("MOE_TEST_FIRST_USE_RUNS");
    const int runs = env ? atoi(env) : 4;
    for (int i = 0; i < runs; i++) run_child(name, "--first-use", NULL, count);
    if (kind == MOE_BACKEND_CPU) {
        run_child(name, "--first-use-oom", "auto-vulkan", count);
        run_child(name, "--first-use-oom", "auto-opencl", count);
    } else if (count > 0) {
        run_child(name, "--first-use-oom", "count", count);
        run_child(name, "--first-use-oom", "create", count);
    }
    if (count == 0 && h_failures == 0) {
        printf("SKIP: backend has no device on this machine\n");
        return SKIP_CODE;
    }
    if (count > 0) concurrent_forwards(kind);
    return h_finish("test_concurrency");
}
