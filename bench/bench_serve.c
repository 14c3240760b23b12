/*
 * bench_serve.c — the serving simulation of moe-bench (see bench_serve.h). It runs in real
 * time: the request list (Poisson arrival times, token counts, input rows) is drawn up front
 * from the seed; then --streams POSIX threads, each owning one context and layer, take the
 * oldest arrived requests whenever they are free (a greedy dynamic batcher: FIFO, packed up to
 * --max-batch-tokens, never waiting for a batch to fill), gather their input rows, run one
 * forward and stamp each request with the time its result was ready. Latency = that stamp
 * minus the arrival time, so queueing, batching and the forward itself all count.
 */
#define _POSIX_C_SOURCE 200809L

#include "bench_serve.h"

#include "bench_report.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REQUESTS 10000000.0 /* rate · duration beyond this is refused */

typedef struct serve_req {
    double arrival;         /* seconds after the start */
    double done;            /* seconds after the start; < 0 while unfinished */
    int64_t tokens, offset; /* rows [offset, offset + tokens) of the input pool */
} serve_req;

typedef struct serve_state {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled on failure and when a worker ends */
    const bench_config *cfg;
    const bench_data *data;
    serve_req *reqs;
    int64_t n_reqs, next; /* requests [0, next) have been handed to a worker */
    double t0, stop_at;   /* monotonic start; no batch starts after t0 + stop_at */
    int failed, workers_left;
    int64_t batches, batch_tokens;
    double busy;
    double *fwd;
    size_t n_fwd, cap_fwd;
} serve_state;

typedef struct serve_worker {
    serve_state *s;
    moe_context *ctx;
    moe_layer *layer;
    float *x, *y;
    int rc;
    pthread_t thread;
    int started;
} serve_worker;

static struct timespec abs_time(double t)
{
#if defined(_WIN32)
    /* winpthreads' condition variables wait on CLOCK_REALTIME (it has no
     * pthread_condattr_setclock): the deadline moved onto that clock */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    t = (double)now.tv_sec + (double)now.tv_nsec * 1e-9 + (t - bench_now());
#endif
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static int64_t draw_tokens(const bench_config *c, bench_rng *rng)
{
    const int64_t mean = c->req_tokens;
    int64_t n = mean;
    const double u = bench_rng_uniform(rng);
    if (c->req_dist == BENCH_REQ_UNIFORM) {
        n = 1 + (int64_t)(u * (double)(2 * mean - 1));
    } else if (c->req_dist == BENCH_REQ_GEOMETRIC && mean > 1) {
        const double p = 1.0 / (double)mean;
        n = 1 + (int64_t)floor(log1p(-u) / log1p(-p));
    }
    if (n < 1) n = 1;
    return n > c->max_batch_tokens ? c->max_batch_tokens : n;
}

/* The whole request list, from its own seeded stream. */
static int make_requests(const bench_config *c, int64_t pool_rows, serve_req **out, int64_t *n_out)
{
    const double expected = c->rate * c->duration;
    if (expected > MAX_REQUESTS) {
        fprintf(stderr, BENCH_PROG ": --rate x --duration asks for %.0f requests; at most %.0f\n", expected,
                MAX_REQUESTS);
        return BENCH_EXIT_USAGE;
    }
    size_t cap = (size_t)(expected * 1.2) + 64, n = 0;
    serve_req *r = malloc(cap * sizeof *r);
    bench_rng rng;
    bench_rng_seed(&rng, c->seed ^ 0x5365727665ull);
    double t = 0.0;
    while (r) {
        t += -log1p(-bench_rng_uniform(&rng)) / c->rate;
        if (t >= c->duration) break;
        if (n == cap) {
            serve_req *g = realloc(r, 2 * cap * sizeof *r);
            if (!g) {
                free(r);
                r = NULL;
                break;
            }
            r = g;
            cap *= 2;
        }
        r[n].arrival = t;
        r[n].done = -1.0;
        r[n].tokens = draw_tokens(c, &rng);
        r[n].offset = (int64_t)(bench_rng_uniform(&rng) * (double)(pool_rows - r[n].tokens + 1));
        n++;
    }
    if (!r) {
        fprintf(stderr, BENCH_PROG ": out of host memory for the request list\n");
        return BENCH_EXIT_LIBRARY;
    }
    *out = r;
    *n_out = (int64_t)n;
    return 0;
}

static void *worker_main(void *arg)
{
    serve_worker *w = arg;
    serve_state *s = w->s;
    const int64_t d_model = s->cfg->d_model, max_batch = s->cfg->max_batch_tokens;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->failed || s->next >= s->n_reqs) break;
        const double now = bench_now() - s->t0;
        if (now >= s->stop_at) break;
        const double arrival = s->reqs[s->next].arrival;
        if (arrival > now) {
            const double until = arrival < s->stop_at ? arrival : s->stop_at;
            const struct timespec ts = abs_time(s->t0 + until);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            continue;
        }
        /* The batch: the oldest arrived requests, in order, while they fit. */
        const int64_t first = s->next;
        int64_t tokens = 0;
        while (s->next < s->n_reqs && s->reqs[s->next].arrival <= now &&
               tokens + s->reqs[s->next].tokens <= max_batch)
            tokens += s->reqs[s->next++].tokens;
        const int64_t last = s->next;
        pthread_mutex_unlock(&s->mu);

        const double start = bench_now();
        int64_t row = 0;
        for (int64_t i = first; i < last; i++) {
            const serve_req *q = &s->reqs[i];
            memcpy(w->x + (size_t)row * (size_t)d_model, s->data->x + (size_t)q->offset * (size_t)d_model,
                   (size_t)q->tokens * (size_t)d_model * sizeof(float));
            row += q->tokens;
        }
        const moe_status st = moe_layer_forward(w->layer, tokens, w->x, w->y, NULL);
        const double end = bench_now();

        pthread_mutex_lock(&s->mu);
        if (st != MOE_OK) {
            w->rc = bench_library_error("moe_layer_forward (serve)", st, w->ctx);
            s->failed = 1;
            pthread_cond_broadcast(&s->cv);
            break;
        }
        for (int64_t i = first; i < last; i++) s->reqs[i].done = end - s->t0;
        s->batches++;
        s->batch_tokens += tokens;
        s->busy += end - start;
        if (s->n_fwd < s->cap_fwd) s->fwd[s->n_fwd++] = end - start;
    }
    s->workers_left--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void summarize(const serve_state *s, const bench_config *c, int64_t streams, bench_serve_result *out)
{
    double *lat = malloc(((size_t)s->n_reqs + 1) * sizeof *lat);
    int64_t met = 0;
    size_t n_lat = 0;
    double last_done = 0.0;
    out->requests = s->n_reqs;
    for (int64_t i = 0; i < s->n_reqs; i++) {
        const serve_req *q = &s->reqs[i];
        out->tokens_offered += q->tokens;
        if (q->done < 0.0) continue;
        const double l = q->done - q->arrival;
        if (lat) lat[n_lat++] = l;
        met += l * 1e3 <= c->slo_ms;
        out->completed++;
        out->tokens_completed += q->tokens;
        if (q->done > last_done) last_done = q->done;
    }
    out->unfinished = out->requests - out->completed;
    out->batches = s->batches;
    out->mean_batch_tokens = s->batches ? (double)s->batch_tokens / (double)s->batches : 0.0;
    out->wall_s = last_done;
    out->offered_tokens_per_s = (double)out->tokens_offered / c->duration;
    out->throughput_tokens_per_s = last_done > 0.0 ? (double)out->tokens_completed / last_done : 0.0;
    out->busy_share = last_done > 0.0 ? s->busy / ((double)streams * last_done) : 0.0;
    out->slo_met_share = s->n_reqs ? (double)met / (double)s->n_reqs : 0.0;
    if (lat) out->latency = bench_summarize(lat, n_lat);
    free(lat);
    double *fwd = malloc((s->n_fwd + 1) * sizeof *fwd);
    if (fwd) {
        memcpy(fwd, s->fwd, s->n_fwd * sizeof *fwd);
        out->forward = bench_summarize(fwd, s->n_fwd);
        free(fwd);
    }
}

int bench_serve_run(const bench_config *c, const bench_target *target, moe_dtype dtype,
                    const bench_data *data, bench_progress *bar, bench_serve_result *out)
{
    const int64_t streams = c->streams;
    serve_worker *w = calloc((size_t)streams, sizeof *w);
    serve_state s;
    memset(&s, 0, sizeof s);
    s.cfg = c;
    s.data = data;
    int rc = w ? 0 : BENCH_EXIT_LIBRARY, mu_ok = 0, cv_ok = 0;
    if (!w) fprintf(stderr, BENCH_PROG ": out of host memory\n");
    if (!rc) rc = make_requests(c, data->rows, &s.reqs, &s.n_reqs);

    /* Threads per stream: --threads, else the cores shared out among the streams. */
    int64_t threads = c->threads;
    moe_device_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (!rc && threads == 0 && target->kind == MOE_BACKEND_CPU &&
        moe_device_get_info(MOE_BACKEND_CPU, 0, &info) == MOE_OK) {
        threads = info.compute_units / streams;
        if (threads < 1) threads = 1;
    }
    const moe_layer_desc d = bench_make_desc(c, c->max_batch_tokens, c->max_batch_tokens, dtype);
    const moe_layer_weights weights = bench_data_weights(data);
    const size_t batch_floats = (size_t)c->max_batch_tokens * (size_t)c->d_model;
    for (int64_t i = 0; !rc && i < streams; i++) {
        rc = bench_context_create(target, threads, &w[i].ctx, &info);
        if (rc) break;
        const moe_status st = moe_layer_create(w[i].ctx, &d, &weights, &w[i].layer);
        if (st != MOE_OK) {
            rc = bench_library_error("moe_layer_create", st, w[i].ctx);
            break;
        }
        w[i].x = malloc(batch_floats * sizeof(float));
        w[i].y = malloc(batch_floats * sizeof(float));
        if (!w[i].x || !w[i].y) {
            fprintf(stderr, BENCH_PROG ": out of host memory for stream buffers\n");
            rc = BENCH_EXIT_MEMORY;
            break;
        }
        memcpy(w[i].x, data->x, batch_floats * sizeof(float));
        /* Warm-up at the largest batch: the scratch is reserved before the clock starts. */
        for (int64_t k = 0; k < (c->warmup > 0 ? c->warmup : 1); k++) {
            const moe_status fs = moe_layer_forward(w[i].layer, c->max_batch_tokens, w[i].x, w[i].y, NULL);
            if (fs != MOE_OK) {
                rc = bench_library_error("moe_layer_forward (serve warm-up)", fs, w[i].ctx);
                break;
            }
        }
        w[i].s = &s;
    }
    if (!rc) {
        bench_result tmp;
        memset(&tmp, 0, sizeof tmp);
        bench_result_set_device(
            &tmp, target->kind == MOE_BACKEND_AUTO ? moe_context_backend(w[0].ctx) : target->kind, &info);
        memcpy(out->backend, tmp.backend, sizeof out->backend);
        memcpy(out->device, tmp.device, sizeof out->device);
        memcpy(out->driver, tmp.driver, sizeof out->driver);
        memcpy(out->isa, tmp.isa, sizeof out->isa);
        out->device_index = tmp.device_index;
        out->threads = tmp.threads;
        s.cap_fwd = (size_t)s.n_reqs + 16;
        s.fwd = malloc(s.cap_fwd * sizeof *s.fwd);
        if (!s.fwd) {
            fprintf(stderr, BENCH_PROG ": out of host memory\n");
            rc = BENCH_EXIT_LIBRARY;
        }
    }
    pthread_condattr_t ca;
    if (!rc) {
        mu_ok = pthread_mutex_init(&s.mu, NULL) == 0;
        if (pthread_condattr_init(&ca) == 0) {
#if defined(_WIN32)
            cv_ok = pthread_cond_init(&s.cv, &ca) == 0;
#else
            cv_ok =
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&s.cv, &ca) == 0;
#endif
            pthread_condattr_destroy(&ca);
        }
        if (!mu_ok || !cv_ok) {
            fprintf(stderr, BENCH_PROG ": cannot create the serving threads' mutex\n");
            rc = BENCH_EXIT_LIBRARY;
        }
    }
    if (!rc) {
        s.stop_at = 2.0 * c->duration + 5.0;
        s.t0 = bench_now();
        pthread_mutex_lock(&s.mu);
        for (int64_t i = 0; i < streams; i++) {
            if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
                fprintf(stderr, BENCH_PROG ": cannot start serving thread %" PRId64 "\n", i);
                s.failed = 1;
                rc = BENCH_EXIT_LIBRARY;
                break;
            }
            w[i].started = 1;
            s.workers_left++;
        }
        /* Wait for the workers, redrawing the progress bar. */
        while (s.workers_left > 0) {
            const struct timespec ts = abs_time(bench_now() + 0.1);
            pthread_cond_timedwait(&s.cv, &s.mu, &ts);
            const double frac = (bench_now() - s.t0) / c->duration;
            char label[64];
            snprintf(label, sizeof label, "serve: %" PRId64 " of %" PRId64 " requests handed out", s.next,
                     s.n_reqs);
            pthread_mutex_unlock(&s.mu);
            bench_progress_update(bar, frac > 1.0 ? 1.0 : frac, label);
            pthread_mutex_lock(&s.mu);
        }
        pthread_mutex_unlock(&s.mu);
        for (int64_t i = 0; i < streams; i++)
            if (w[i].started) pthread_join(w[i].thread, NULL);
        for (int64_t i = 0; i < streams && !rc; i++) rc = w[i].rc;
    }
    if (!rc) {
        out->preset = bench_preset_name(c->preset);
        out->desc = d;
        out->streams = streams;
        out->max_batch_tokens = c->max_batch_tokens;
        out->req_tokens_mean = c->req_tokens;
        out->req_dist = c->req_dist;
        out->rate = c->rate;
        out->duration = c->duration;
        out->slo_ms = c->slo_ms;
        out->seed = c->seed;
        summarize(&s, c, streams, out);
    }
    if (cv_ok) pthread_cond_destroy(&s.cv);
    if (mu_ok) pthread_mutex_destroy(&s.mu);
    for (int64_t i = 0; w && i < streams; i++) {
        moe_layer_destroy(w[i].layer);
        moe_context_destroy(w[i].ctx);
        free(w[i].x);
        free(w[i].y);
    }
    free(w);
    free(s.reqs);
    free(s.fwd);
    return rc;
}
