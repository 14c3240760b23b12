/*
 * bench_trace.c — routing traces for moe-bench (see bench_trace.h): the generator with tunable
 * temporal locality, the strict reader and the writer of the moe-trace text format, the inputs
 * steered to route as a trace says, and the check that they do.
 */
#include "bench_trace.h"

#include "bench_runner.h"
#include "bench_util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRACE_MAGIC "moe-trace"
enum {
    TRACE_VERSION = 1,
    MAX_TRACE_EXPERTS = 1 << 20, /* far above any model's; keeps the header's numbers sane */
    REJECTION_TRIES = 8          /* draws before the generator walks the candidates instead */
};
#define STEER_LOGIT 8.0 /* L_0: what the first choice's logit rises by (the spread is ~1/3) */
#define STEER_FALL  2.0 /* L_j = STEER_LOGIT - STEER_FALL * j / k: the last choice still rises by > 6 */

void bench_trace_free(bench_trace *t)
{
    free(t->ids);
    memset(t, 0, sizeof *t);
}

static int32_t *trace_alloc(int64_t forwards, int64_t tokens, int64_t top_k)
{
    size_t n = 0;
    if (!bench_mul_size(forwards, tokens, top_k, &n) || n > SIZE_MAX / sizeof(int32_t)) return NULL;
    return malloc((n ? n : 1) * sizeof(int32_t));
}

/* ---- the generator ------------------------------------------------------------------------ */

/* A uniform index in [0, n). */
static int64_t draw(bench_rng *rng, int64_t n)
{
    const int64_t i = (int64_t)(bench_rng_uniform(rng) * (double)n);
    return i < n ? i : n - 1;
}

/* Uniform among cand[0..n) not yet taken by the token (taken[e] != 0); -1 when all are. A few
 * draws first (cheap while the token has taken few), then a walk over what is left — either way
 * each candidate left is equally likely. */
static int32_t pick(bench_rng *rng, const int32_t *cand, int64_t n, const unsigned char *taken)
{
    for (int i = 0; i < REJECTION_TRIES; i++) {
        const int32_t e = cand ? cand[draw(rng, n)] : (int32_t)draw(rng, n);
        if (!taken[e]) return e;
    }
    int64_t left = 0;
    for (int64_t i = 0; i < n; i++) left += !taken[cand ? cand[i] : i];
    if (left == 0) return -1;
    int64_t r = draw(rng, left);
    for (int64_t i = 0; i < n; i++) {
        const int32_t e = cand ? cand[i] : (int32_t)i;
        if (!taken[e] && r-- == 0) return e;
    }
    return -1;
}

int bench_trace_generate(int64_t n_experts, int64_t top_k, int64_t tokens, int64_t forwards, double reuse,
                         uint64_t seed, bench_trace *out)
{
    memset(out, 0, sizeof *out);
    int32_t *ids = trace_alloc(forwards, tokens, top_k);
    int32_t *prev = malloc((size_t)n_experts * sizeof *prev), *cur = malloc((size_t)n_experts * sizeof *cur);
    unsigned char *taken = calloc((size_t)n_experts, 1), *used = calloc((size_t)n_experts, 1);
    if (!ids || !prev || !cur || !taken || !used) {
        free(ids);
        free(prev);
        free(cur);
        free(taken);
        free(used);
        return -1;
    }
    bench_rng rng;
    bench_rng_seed(&rng, seed ^ 0x7472616365ull); /* its own stream: the weights stay as they were */
    int64_t n_prev = 0;
    for (int64_t f = 0; f < forwards; f++) {
        int64_t n_cur = 0;
        for (int64_t t = 0; t < tokens; t++) {
            int32_t *tok = ids + (f * tokens + t) * top_k;
            for (int64_t j = 0; j < top_k; j++) {
                int32_t e = -1;
                if (n_prev > 0 && bench_rng_uniform(&rng) < reuse) e = pick(&rng, prev, n_prev, taken);
                if (e < 0) e = pick(&rng, NULL, n_experts, taken); /* top_k <= n_experts: never -1 */
                tok[j] = e;
                taken[e] = 1;
                if (!used[e]) {
                    used[e] = 1;
                    cur[n_cur++] = e;
                }
            }
            for (int64_t j = 0; j < top_k; j++) taken[tok[j]] = 0;
        }
        /* The set this forward used is the next one's to draw from, in first-use order. */
        for (int64_t i = 0; i < n_cur; i++) used[cur[i]] = 0;
        int32_t *swap = prev;
        prev = cur;
        cur = swap;
        n_prev = n_cur;
    }
    free(prev);
    free(cur);
    free(taken);
    free(used);
    *out = (bench_trace){n_experts, top_k, tokens, forwards, ids};
    return 0;
}

/* ---- the text format ---------------------------------------------------------------------- */

typedef struct reader {
    const char *name;
    char *err;
    size_t err_size;
    int64_t line;
} reader;

static int fail_at(const reader *rd, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(rd->err, rd->err_size, "%s:%" PRId64 ": %s", rd->name, rd->line, what);
    return -1;
}

/* A character as the message shows it. */
static const char *char_text(char c, char *buf, size_t size)
{
    if (c >= 0x21 && c < 0x7f)
        snprintf(buf, size, "'%c'", c);
    else
        snprintf(buf, size, "byte 0x%02x", (unsigned)(unsigned char)c);
    return buf;
}

/* A decimal number without sign at p[0..len): its value in *v, the digits read returned (0 when
 * p does not start with a digit; -1 when it exceeds `max`). */
static int64_t read_number(const char *p, size_t len, int64_t max, int64_t *v)
{
    int64_t n = 0, i = 0;
    while ((size_t)i < len && p[i] >= '0' && p[i] <= '9') {
        if (n > (max - (p[i] - '0')) / 10) return -1;
        n = n * 10 + (p[i] - '0');
        i++;
    }
    *v = n;
    return i;
}

static int parse_header(reader *rd, const char *p, size_t len, bench_trace *t)
{
    static const char usage[] = "the first line must be 'moe-trace 1 <n_experts> <top_k> <tokens>'";
    const size_t magic = sizeof TRACE_MAGIC - 1;
    if (len < magic || memcmp(p, TRACE_MAGIC, magic) != 0 || (len > magic && p[magic] != ' '))
        return fail_at(rd, "not a moe-trace file: %s", usage);
    const char *names[] = {"version", "n_experts", "top_k", "tokens"};
    const int64_t max[] = {INT32_MAX, MAX_TRACE_EXPERTS, MAX_TRACE_EXPERTS, INT64_C(1) << 40};
    int64_t v[4];
    size_t at = magic;
    for (int i = 0; i < 4; i++) {
        if (at >= len || p[at] != ' ') return fail_at(rd, "the header has no %s: %s", names[i], usage);
        at++;
        const int64_t got = read_number(p + at, len - at, max[i], &v[i]);
        if (got < 0)
            return fail_at(rd, "the header's %s is too large (at most %" PRId64 ")", names[i], max[i]);
        if (got == 0 || (at + (size_t)got < len && p[at + (size_t)got] != ' '))
            return fail_at(rd, "the header's %s is not a whole number: %s", names[i], usage);
        at += (size_t)got;
    }
    if (at != len) return fail_at(rd, "text after the header's tokens: %s", usage);
    if (v[0] != TRACE_VERSION)
        return fail_at(rd, "version %" PRId64 ": this moe-bench reads version %d", v[0], TRACE_VERSION);
    if (v[1] < 1 || v[2] < 1 || v[3] < 1)
        return fail_at(
            rd, "n_experts, top_k and tokens must be at least 1 (got %" PRId64 ", %" PRId64 ", %" PRId64 ")",
            v[1], v[2], v[3]);
    if (v[2] > v[1])
        return fail_at(rd, "top_k %" PRId64 " exceeds n_experts %" PRId64 " (a token's experts are distinct)",
                       v[2], v[1]);
    t->n_experts = v[1];
    t->top_k = v[2];
    t->tokens = v[3];
    return 0;
}

/* One forward's line into ids[tokens][top_k]. */
static int parse_forward(reader *rd, const char *p, size_t len, const bench_trace *t, int32_t *ids,
                         unsigned char *seen)
{
    if (len == 0)
        return fail_at(rd, "an empty line (each line after the header is one forward; comments start "
                           "with '#')");
    size_t at = 0;
    char ch[16];
    for (int64_t tok = 0;; tok++) {
        if (tok == t->tokens)
            return fail_at(rd, "more than the header's %" PRId64 " tokens in this forward", t->tokens);
        int32_t *row = ids + tok * t->top_k;
        int64_t j = 0;
        for (;; j++) {
            int64_t e = 0;
            const int64_t got = read_number(p + at, len - at, INT32_MAX, &e);
            if (got < 0 || (got > 0 && e >= t->n_experts)) {
                for (int64_t i = 0; i < j; i++) seen[row[i]] = 0;
                return fail_at(rd, "token %" PRId64 ": expert %.*s is out of range 0..%" PRId64, tok,
                               (int)(got < 0 ? 10 : got), p + at, t->n_experts - 1);
            }
            if (got == 0) {
                for (int64_t i = 0; i < j; i++) seen[row[i]] = 0;
                if (at == len)
                    return fail_at(rd, "token %" PRId64 ": an expert is missing at the end of the line", tok);
                return fail_at(rd, "token %" PRId64 ": expected an expert number at column %zu, found %s",
                               tok, at + 1, char_text(p[at], ch, sizeof ch));
            }
            at += (size_t)got;
            if (j == t->top_k) {
                for (int64_t i = 0; i < j; i++) seen[row[i]] = 0;
                return fail_at(rd, "token %" PRId64 " has more than top_k = %" PRId64 " experts", tok,
                               t->top_k);
            }
            if (seen[e]) {
                for (int64_t i = 0; i < j; i++) seen[row[i]] = 0;
                return fail_at(rd,
                               "token %" PRId64 " names expert %" PRId64 " twice (a token's experts are "
                               "distinct)",
                               tok, e);
            }
            seen[e] = 1;
            row[j] = (int32_t)e;
            if (at == len || p[at] != ',') break;
            at++;
        }
        for (int64_t i = 0; i <= j; i++) seen[row[i]] = 0;
        if (j + 1 != t->top_k)
            return fail_at(rd, "token %" PRId64 " has %" PRId64 " expert%s, the header says top_k = %" PRId64,
                           tok, j + 1, j == 0 ? "" : "s", t->top_k);
        if (at == len) {
            if (tok + 1 != t->tokens)
                return fail_at(rd, "%" PRId64 " token%s in this forward, the header says %" PRId64, tok + 1,
                               tok == 0 ? "" : "s", t->tokens);
            return 0;
        }
        if (p[at] != ';')
            return fail_at(rd, "token %" PRId64 ": expected ',' or ';' at column %zu, found %s", tok, at + 1,
                           char_text(p[at], ch, sizeof ch));
        at++;
    }
}

int bench_trace_parse(const char *text, size_t len, const char *name, bench_trace *out, char *err,
                      size_t err_size)
{
    memset(out, 0, sizeof *out);
    reader rd = {name, err, err_size, 0};
    bench_trace t = {0};
    unsigned char *seen = NULL;
    int64_t cap = 0;
    size_t at = 0;
    int rc = 0;
    while (at < len && rc == 0) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len, n = end - at;
        const char *p = text + at;
        at = end + (nl != NULL);
        rd.line++;
        if (n > 0 && p[n - 1] == '\r') n--; /* a file written on Windows */
        if (memchr(p, '\0', n)) {
            rc = fail_at(&rd, "a NUL byte: not a text file");
            break;
        }
        if (rd.line == 1) {
            rc = parse_header(&rd, p, n, &t);
            if (rc == 0 && !(seen = calloc((size_t)t.n_experts, 1))) rc = fail_at(&rd, "out of memory");
            continue;
        }
        if (n > 0 && p[0] == '#') continue;
        if (t.forwards == BENCH_TRACE_MAX_FORWARDS) {
            rc = fail_at(&rd, "more than %d forwards", BENCH_TRACE_MAX_FORWARDS);
            break;
        }
        if (t.forwards == cap) {
            cap = cap ? 2 * cap : 16;
            if (cap > BENCH_TRACE_MAX_FORWARDS) cap = BENCH_TRACE_MAX_FORWARDS;
            int32_t *grown = trace_alloc(cap, t.tokens, t.top_k);
            if (!grown) {
                rc = fail_at(&rd, "out of memory for %" PRId64 " forwards of %" PRId64 " tokens", cap,
                             t.tokens);
                break;
            }
            if (t.ids) memcpy(grown, t.ids, (size_t)(t.forwards * t.tokens * t.top_k) * sizeof *grown);
            free(t.ids);
            t.ids = grown;
        }
        rc = parse_forward(&rd, p, n, &t, t.ids + t.forwards * t.tokens * t.top_k, seen);
        t.forwards += rc == 0;
    }
    if (rc == 0 && rd.line == 0) {
        rd.line = 1;
        rc = fail_at(&rd,
                     "the file is empty: the first line must be 'moe-trace 1 <n_experts> <top_k> <tokens>'");
    }
    if (rc == 0 && t.forwards == 0) rc = fail_at(&rd, "no forwards after the header");
    free(seen);
    if (rc) {
        bench_trace_free(&t);
        return -1;
    }
    *out = t;
    return 0;
}

int bench_trace_load(const char *path, bench_trace *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    const int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        snprintf(err, err_size, "cannot read %s: %s", path, buf ? "read error" : "out of memory");
        free(buf);
        return -1;
    }
    const int rc = bench_trace_parse(buf, n, path, out, err, err_size);
    free(buf);
    return rc;
}

int bench_trace_write(const char *path, const bench_trace *t, char *err, size_t err_size)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, err_size, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    int bad = fprintf(f, TRACE_MAGIC " %d %" PRId64 " %" PRId64 " %" PRId64 "\n", TRACE_VERSION, t->n_experts,
                      t->top_k, t->tokens) < 0;
    for (int64_t fw = 0; fw < t->forwards && !bad; fw++) {
        for (int64_t tok = 0; tok < t->tokens && !bad; tok++)
            for (int64_t j = 0; j < t->top_k && !bad; j++)
                bad = fprintf(f, "%s%" PRId32,
                              j     ? ","
                              : tok ? ";"
                                    : "",
                              t->ids[(fw * t->tokens + tok) * t->top_k + j]) < 0;
        bad = bad || fputc('\n', f) == EOF;
    }
    bad |= fclose(f) != 0;
    if (bad) {
        snprintf(err, err_size, "writing %s failed", path);
        return -1;
    }
    return 0;
}

int bench_trace_check_shape(const bench_trace *t, int64_t n_experts, int64_t top_k, int64_t tokens, char *err,
                            size_t err_size)
{
    if (t->n_experts != n_experts)
        snprintf(err, err_size, "the trace is of %" PRId64 " experts, the layer has %" PRId64 " (--experts)",
                 t->n_experts, n_experts);
    else if (t->top_k != top_k)
        snprintf(err, err_size,
                 "the trace's tokens pick %" PRId64 " experts, the layer's top-%" PRId64 " (--top-k)",
                 t->top_k, top_k);
    else if (t->tokens != tokens)
        snprintf(err, err_size,
                 "the trace's forwards have %" PRId64 " tokens, the run's %" PRId64 " (--tokens)", t->tokens,
                 tokens);
    else
        return 0;
    return -1;
}

bench_trace_summary bench_trace_summarize(const bench_trace *t)
{
    bench_trace_summary s = {0};
    unsigned char *prev = calloc((size_t)t->n_experts, 1), *cur = calloc((size_t)t->n_experts, 1),
                  *all = calloc((size_t)t->n_experts, 1);
    if (!prev || !cur || !all || t->forwards == 0) {
        free(prev);
        free(cur);
        free(all);
        return s;
    }
    double distinct = 0.0, reused = 0.0;
    const int64_t per = t->tokens * t->top_k;
    for (int64_t f = 0; f < t->forwards; f++) {
        memset(cur, 0, (size_t)t->n_experts);
        int64_t n = 0, again = 0;
        for (int64_t i = 0; i < per; i++) {
            const int32_t e = t->ids[f * per + i];
            if (cur[e]) continue;
            cur[e] = 1;
            n++;
            again += prev[e];
            s.distinct_total += !all[e];
            all[e] = 1;
        }
        distinct += (double)n;
        if (f > 0) reused += (double)again / (double)n;
        unsigned char *swap = prev;
        prev = cur;
        cur = swap;
    }
    s.distinct_per_forward = distinct / (double)t->forwards;
    s.reused_share = t->forwards > 1 ? reused / (double)(t->forwards - 1) : 0.0;
    free(prev);
    free(cur);
    free(all);
    return s;
}

/* ---- steering ------------------------------------------------------------------------------ */

/* In-place Cholesky factor of the symmetric n x n matrix a (lower triangle); 0, or -1 when it is
 * not (numerically) positive definite. */
static int cholesky(double *a, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        double diag = a[j * n + j];
        for (int64_t k = 0; k < j; k++) diag -= a[j * n + k] * a[j * n + k];
        if (!(diag > 1e-12 * fabs(a[j * n + j])) || !(diag > 0.0)) return -1;
        diag = sqrt(diag);
        a[j * n + j] = diag;
        for (int64_t i = j + 1; i < n; i++) {
            double v = a[i * n + j];
            for (int64_t k = 0; k < j; k++) v -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = v / diag;
        }
    }
    return 0;
}

/* m[e] = Σ_i z_i r_i with G z = unit e, G = R R^T (Cholesky-factored in l): r_i·m[e] = [i = e]. */
static void dual_rows(const float *router, int64_t n_experts, int64_t d_model, const double *l, double *z,
                      float *m)
{
    for (int64_t e = 0; e < n_experts; e++) {
        for (int64_t i = 0; i < n_experts; i++) { /* forward: L y = unit e */
            double v = i == e ? 1.0 : 0.0;
            for (int64_t k = 0; k < i; k++) v -= l[i * n_experts + k] * z[k];
            z[i] = v / l[i * n_experts + i];
        }
        for (int64_t i = n_experts - 1; i >= 0; i--) { /* back: L^T z = y */
            double v = z[i];
            for (int64_t k = i + 1; k < n_experts; k++) v -= l[k * n_experts + i] * z[k];
            z[i] = v / l[i * n_experts + i];
        }
        float *row = m + e * d_model;
        for (int64_t c = 0; c < d_model; c++) {
            double v = 0.0;
            for (int64_t i = 0; i < n_experts; i++) v += z[i] * (double)router[i * d_model + c];
            row[c] = (float)v;
        }
    }
}

/* The steering rows m[e] (bench_trace.h); 1 when exact (the dual basis of the router's rows). */
static int steering_rows(const float *router, int64_t n_experts, int64_t d_model, float *m)
{
    const int64_t n = n_experts;
    double *g = n <= d_model && n <= 4096 ? malloc((size_t)(n * n) * sizeof *g) : NULL;
    double *z = g ? malloc((size_t)n * sizeof *z) : NULL;
    int exact = 0;
    if (g && z) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j <= i; j++) {
                double v = 0.0;
                for (int64_t c = 0; c < d_model; c++)
                    v += (double)router[i * d_model + c] * (double)router[j * d_model + c];
                g[i * n + j] = g[j * n + i] = v;
            }
        if (cholesky(g, n) == 0) {
            dual_rows(router, n, d_model, g, z, m);
            exact = 1;
        }
    }
    free(g);
    free(z);
    if (exact) return 1;
    for (int64_t e = 0; e < n; e++) {
        const float *r = router + e * d_model;
        double norm2 = 0.0;
        for (int64_t c = 0; c < d_model; c++) norm2 += (double)r[c] * r[c];
        for (int64_t c = 0; c < d_model; c++) m[e * d_model + c] = norm2 > 0.0 ? (float)(r[c] / norm2) : 0.0f;
    }
    return 0;
}

/* More experts than d_model: the rows m_e = r_e/|r_e|² also move the other logits by the rows'
 * overlaps (~L/sqrt(d_model) each), enough for an unchosen expert to pass a chosen one now and
 * then. So the token's row is repaired with a few sweeps of projections (Kaczmarz on half-spaces):
 * while a chosen expert's logit is below L_j − REPAIR_SLACK, or an unchosen one's above
 * REPAIR_SLACK, the row moves along that expert's router row to put it back at L_j, or 0. Each
 * step moves one logit exactly and the others a little; when the targets can be met together
 * this settles in a few sweeps. */
enum { REPAIR_SWEEPS = 200 };
#define REPAIR_SLACK 1.5

static void repair_row(float *row, const int32_t *chosen, int64_t top_k, const float *router,
                       const double *norm2, int64_t n_experts, int64_t d_model, unsigned char *is_chosen,
                       double *target)
{
    for (int64_t e = 0; e < n_experts; e++) {
        is_chosen[e] = 0;
        target[e] = 0.0;
    }
    for (int64_t j = 0; j < top_k; j++) {
        is_chosen[chosen[j]] = 1;
        target[chosen[j]] = STEER_LOGIT - STEER_FALL * (double)j / (double)top_k;
    }
    for (int sweep = 0; sweep < REPAIR_SWEEPS; sweep++) {
        int moved = 0;
        for (int64_t e = 0; e < n_experts; e++) {
            const float *r = router + e * d_model;
            double logit = 0.0;
            for (int64_t c = 0; c < d_model; c++) logit += (double)r[c] * row[c];
            const int low = is_chosen[e] && logit < target[e] - REPAIR_SLACK;
            const int high = !is_chosen[e] && logit > REPAIR_SLACK;
            if ((!low && !high) || !(norm2[e] > 0.0)) continue;
            const double step = (target[e] - logit) / norm2[e];
            for (int64_t c = 0; c < d_model; c++) row[c] += (float)(step * r[c]);
            moved = 1;
        }
        if (!moved) return;
    }
}

int bench_trace_inputs(const bench_config *c, const moe_layer_desc *d, const float *router,
                       const bench_trace *t, float **x_out, int *exact)
{
    *x_out = NULL;
    size_t n_x = 0, n_m = 0;
    if (!bench_mul_size(t->forwards, t->tokens, d->d_model, &n_x) || n_x > SIZE_MAX / sizeof(float) ||
        !bench_mul_size(d->n_experts, d->d_model, 1, &n_m) || n_m > SIZE_MAX / sizeof(float)) {
        fprintf(stderr, BENCH_PROG ": the trace's inputs are too large\n");
        return BENCH_EXIT_MEMORY;
    }
    float *x = malloc(n_x * sizeof *x), *m = malloc(n_m * sizeof *m);
    double *norm2 = malloc((size_t)d->n_experts * sizeof *norm2),
           *target = malloc((size_t)d->n_experts * sizeof *target);
    unsigned char *is_chosen = malloc((size_t)d->n_experts);
    if (!x || !m || !norm2 || !target || !is_chosen) {
        free(x);
        free(m);
        free(norm2);
        free(target);
        free(is_chosen);
        fprintf(stderr, BENCH_PROG ": out of host memory for the trace's inputs (%.3g GiB)\n",
                (double)n_x * sizeof(float) / 1073741824.0);
        return BENCH_EXIT_MEMORY;
    }
    *exact = steering_rows(router, d->n_experts, d->d_model, m);
    for (int64_t e = 0; e < d->n_experts && !*exact; e++) {
        norm2[e] = 0.0;
        for (int64_t col = 0; col < d->d_model; col++)
            norm2[e] += (double)router[e * d->d_model + col] * router[e * d->d_model + col];
    }
    bench_rng rng;
    bench_rng_seed(&rng, c->seed ^ 0x74726163652d78ull); /* the base rows: their own stream */
    bench_fill_uniform(&rng, x, n_x, 1.0f);
    for (int64_t tok = 0; tok < t->forwards * t->tokens; tok++) {
        float *row = x + tok * d->d_model;
        const int32_t *chosen = t->ids + tok * t->top_k;
        for (int64_t j = 0; j < t->top_k; j++) {
            const float l = (float)(STEER_LOGIT - STEER_FALL * (double)j / (double)t->top_k);
            const float *mr = m + (int64_t)chosen[j] * d->d_model;
            for (int64_t col = 0; col < d->d_model; col++) row[col] += l * mr[col];
        }
        if (!*exact)
            repair_row(row, chosen, t->top_k, router, norm2, d->n_experts, d->d_model, is_chosen, target);
    }
    free(m);
    free(norm2);
    free(target);
    free(is_chosen);
    *x_out = x;
    return 0;
}

/* ---- the check ------------------------------------------------------------------------------ */

static int cmp_i32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* "3,5,7" */
static void ids_text(const int32_t *ids, int64_t k, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int64_t j = 0; j < k && n + 12 < size; j++)
        n += (size_t)snprintf(buf + n, size - n, "%s%d", j ? "," : "", ids[j]);
}

int bench_trace_verify(moe_layer *layer, moe_context *ctx, const moe_layer_desc *d, const bench_trace *t,
                       const float *x, bench_trace_routing *out)
{
    const int64_t tk = t->tokens * t->top_k;
    int32_t *ids = malloc((size_t)tk * sizeof *ids), *want = malloc((size_t)t->top_k * sizeof *want);
    int32_t *counts = malloc((size_t)d->n_experts * sizeof *counts);
    float *y = malloc((size_t)(t->tokens * d->d_model) * sizeof *y);
    int rc = 0;
    if (!ids || !want || !counts || !y) {
        fprintf(stderr, BENCH_PROG ": out of host memory checking the trace's routing\n");
        rc = BENCH_EXIT_LIBRARY;
    }
    double bytes = 0.0, active = 0.0, dropped_sum = 0.0;
    int64_t max_rows = 0;
    for (int64_t f = 0; f < t->forwards && rc == 0; f++) {
        int32_t dropped = 0;
        moe_forward_stats stats;
        memset(&stats, 0, sizeof stats);
        stats.struct_size = sizeof stats;
        stats.topk_ids = ids;
        stats.expert_counts = counts;
        stats.dropped_count = &dropped;
        const moe_status st = moe_layer_forward(layer, t->tokens, x + f * t->tokens * d->d_model, y, &stats);
        if (st != MOE_OK) {
            rc = bench_library_error("moe_layer_forward (checking the trace's routing)", st, ctx);
            break;
        }
        for (int64_t tok = 0; tok < t->tokens && rc == 0; tok++) {
            int32_t *got = ids + tok * t->top_k;
            memcpy(want, t->ids + (f * t->tokens + tok) * t->top_k, (size_t)t->top_k * sizeof *want);
            qsort(got, (size_t)t->top_k, sizeof *got, cmp_i32);
            qsort(want, (size_t)t->top_k, sizeof *want, cmp_i32);
            if (memcmp(got, want, (size_t)t->top_k * sizeof *got) == 0) continue;
            char a[256], b[256];
            ids_text(got, t->top_k, a, sizeof a);
            ids_text(want, t->top_k, b, sizeof b);
            char why[256];
            if (d->n_experts > d->d_model)
                snprintf(why, sizeof why,
                         "with more experts (%" PRId64 ") than d_model (%" PRId64
                         ") the router's rows cannot make every set of experts a token's top-k; use a wider "
                         "--d-model or fewer --experts",
                         d->n_experts, d->d_model);
            else
                snprintf(why, sizeof why, "the steering raises the chosen logits by %g..%g (bench_trace.h)",
                         STEER_LOGIT - STEER_FALL * (double)(t->top_k - 1) / (double)t->top_k, STEER_LOGIT);
            fprintf(stderr,
                    BENCH_PROG ": the inputs steered by the trace do not route as it says: forward %" PRId64
                               ", token %" PRId64 " went to experts %s, the trace says %s: %s\n",
                    f, tok, a, b, why);
            rc = BENCH_EXIT_LIBRARY;
        }
        bytes += bench_forward_weight_bytes(d, counts);
        for (int64_t e = 0; e < d->n_experts; e++) {
            active += counts[e] > 0;
            if (counts[e] > max_rows) max_rows = counts[e];
        }
        dropped_sum += dropped;
    }
    if (rc == 0) {
        out->weight_read_bytes = bytes / (double)t->forwards;
        out->experts_active = active / (double)t->forwards;
        out->max_expert_rows = max_rows;
        out->dropped_rows = dropped_sum / (double)t->forwards;
    }
    free(ids);
    free(want);
    free(counts);
    free(y);
    return rc;
}
