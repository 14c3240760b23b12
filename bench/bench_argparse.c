/*
 * bench_argparse.c — the table-driven command-line parser of moe-bench (see bench_argparse.h):
 * option lookup, strict number parsing with range checks, and usage text generated from the
 * option table. Every error names the option and the bad value, on stderr.
 */
#include "bench_argparse.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bench_choice_name(const bench_choice *choices, int value)
{
    for (const bench_choice *c = choices; c && c->name; c++)
        if (c->value == value) return c->name;
    return "?";
}

static const bench_opt *find_opt(const bench_opt *opts, size_t n_opts, const char *name, size_t name_len)
{
    for (size_t i = 0; i < n_opts; i++)
        if (strlen(opts[i].name) == name_len && strncmp(opts[i].name, name, name_len) == 0) return &opts[i];
    return NULL;
}

/* Strict integer: optional sign, digits only, no trailing text, no overflow. */
static int parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s) return 0;
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (*p < '0' || *p > '9') return 0;
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0') return 0;
    *out = (int64_t)v;
    return 1;
}

/* Unsigned: decimal or 0x hex, no sign. */
static int parse_uint64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return 0;
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 0);
    if (errno == ERANGE || *end != '\0') return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_double(const char *s, double *out)
{
    if (!s || !*s || *s == ' ' || *s == '\t') return 0;
    char *end = NULL;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno == ERANGE || *end != '\0' || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static void choice_list(FILE *out, const bench_choice *choices)
{
    for (const bench_choice *c = choices; c && c->name; c++)
        fprintf(out, "%s%s", c == choices ? "" : "|", c->name);
}

/* "1,8,64": every item a strict integer in range, no empty item, at most BENCH_LIST_MAX. */
static bench_parse_result set_list(const bench_opt *o, const char *value, const char *prog)
{
    bench_int_list list = {0};
    const char *p = value;
    for (;;) {
        const size_t len = strcspn(p, ",");
        char item[32];
        int64_t v;
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr, "%s: --%s expects comma-separated integers, got '%s'\n", prog, o->name, value);
            return BENCH_PARSE_ERROR;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (!parse_int64(item, &v)) {
            fprintf(stderr, "%s: --%s: '%s' is not an integer (in '%s')\n", prog, o->name, item, value);
            return BENCH_PARSE_ERROR;
        }
        if (v < o->min_i || v > o->max_i) {
            fprintf(stderr, "%s: --%s: each value must be in %" PRId64 "..%" PRId64 ", got %" PRId64 "\n",
                    prog, o->name, o->min_i, o->max_i, v);
            return BENCH_PARSE_ERROR;
        }
        if (list.n == BENCH_LIST_MAX) {
            fprintf(stderr, "%s: --%s takes at most %d values\n", prog, o->name, BENCH_LIST_MAX);
            return BENCH_PARSE_ERROR;
        }
        list.v[list.n++] = v;
        if (p[len] == '\0') break;
        p += len + 1;
    }
    *(bench_int_list *)o->target = list;
    return BENCH_PARSE_OK;
}

static bench_parse_result set_value(const bench_opt *o, const char *value, const char *prog)
{
    switch (o->kind) {
    case BENCH_OPT_INT64: {
        int64_t v;
        if (!parse_int64(value, &v)) {
            fprintf(stderr, "%s: --%s expects an integer, got '%s'\n", prog, o->name, value);
            return BENCH_PARSE_ERROR;
        }
        if (v < o->min_i || v > o->max_i) {
            fprintf(stderr, "%s: --%s must be in %" PRId64 "..%" PRId64 ", got %" PRId64 "\n", prog, o->name,
                    o->min_i, o->max_i, v);
            return BENCH_PARSE_ERROR;
        }
        *(int64_t *)o->target = v;
        return BENCH_PARSE_OK;
    }
    case BENCH_OPT_UINT64: {
        uint64_t v;
        if (!parse_uint64(value, &v)) {
            fprintf(stderr, "%s: --%s expects an unsigned integer, got '%s'\n", prog, o->name, value);
            return BENCH_PARSE_ERROR;
        }
        *(uint64_t *)o->target = v;
        return BENCH_PARSE_OK;
    }
    case BENCH_OPT_DOUBLE: {
        double v;
        if (!parse_double(value, &v)) {
            fprintf(stderr, "%s: --%s expects a finite number, got '%s'\n", prog, o->name, value);
            return BENCH_PARSE_ERROR;
        }
        if (!(v > o->min_d)) {
            fprintf(stderr, "%s: --%s must be > %g, got %g\n", prog, o->name, o->min_d, v);
            return BENCH_PARSE_ERROR;
        }
        *(double *)o->target = v;
        return BENCH_PARSE_OK;
    }
    case BENCH_OPT_CHOICE:
        for (const bench_choice *c = o->choices; c && c->name; c++) {
            if (strcmp(c->name, value) == 0) {
                *(int *)o->target = c->value;
                return BENCH_PARSE_OK;
            }
        }
        fprintf(stderr, "%s: --%s: unknown value '%s' (expected ", prog, o->name, value);
        choice_list(stderr, o->choices);
        fprintf(stderr, ")\n");
        return BENCH_PARSE_ERROR;
    case BENCH_OPT_STRING:
        if (!*value) {
            fprintf(stderr, "%s: --%s needs a non-empty value\n", prog, o->name);
            return BENCH_PARSE_ERROR;
        }
        *(const char **)o->target = value;
        return BENCH_PARSE_OK;
    case BENCH_OPT_LIST:
        return set_list(o, value, prog);
    case BENCH_OPT_FLAG:
    case BENCH_OPT_HELP:
        break;
    }
    fprintf(stderr, "%s: --%s: internal error: bad option kind\n", prog, o->name);
    return BENCH_PARSE_ERROR;
}

bench_parse_result bench_argparse(const bench_opt *opts, size_t n_opts, int argc, char **argv,
                                  const char *prog)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            fprintf(stderr, "%s: unexpected argument '%s' (options start with --)\n", prog, arg);
            return BENCH_PARSE_ERROR;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        const size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const bench_opt *o = find_opt(opts, n_opts, name, name_len);
        if (!o) {
            fprintf(stderr, "%s: unknown option '--%.*s'\n", prog, (int)name_len, name);
            return BENCH_PARSE_ERROR;
        }
        if (o->kind == BENCH_OPT_FLAG || o->kind == BENCH_OPT_HELP) {
            if (eq) {
                fprintf(stderr, "%s: --%s takes no value\n", prog, o->name);
                return BENCH_PARSE_ERROR;
            }
            if (o->kind == BENCH_OPT_HELP) return BENCH_PARSE_HELP;
            *(int *)o->target = 1;
            continue;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                fprintf(stderr, "%s: --%s needs a value (%s)\n", prog, o->name,
                        o->metavar ? o->metavar : "VALUE");
                return BENCH_PARSE_ERROR;
            }
            value = argv[++i];
        }
        const bench_parse_result r = set_value(o, value, prog);
        if (r != BENCH_PARSE_OK) return r;
    }
    return BENCH_PARSE_OK;
}

/* The default of an option as text, from its target's current value. */
static void default_text(const bench_opt *o, char *buf, size_t size)
{
    buf[0] = '\0';
    switch (o->kind) {
    case BENCH_OPT_INT64: {
        const int64_t v = *(const int64_t *)o->target;
        if ((v == 0 || v < o->min_i) && o->zero_means)
            snprintf(buf, size, "%s", o->zero_means);
        else
            snprintf(buf, size, "%" PRId64, v);
        break;
    }
    case BENCH_OPT_UINT64:
        snprintf(buf, size, "%" PRIu64, *(const uint64_t *)o->target);
        break;
    case BENCH_OPT_DOUBLE: {
        const double v = *(const double *)o->target;
        if (v == 0.0 && o->zero_means)
            snprintf(buf, size, "%s", o->zero_means);
        else
            snprintf(buf, size, "%g", v);
        break;
    }
    case BENCH_OPT_CHOICE: {
        /* A value outside the choices (a preset of -1: none) shows zero_means, or no default. */
        const char *name = bench_choice_name(o->choices, *(const int *)o->target);
        snprintf(buf, size, "%s", strcmp(name, "?") ? name : o->zero_means ? o->zero_means : "");
        break;
    }
    case BENCH_OPT_STRING: {
        const char *v = *(const char *const *)o->target;
        snprintf(buf, size, "%s", v ? v : o->zero_means ? o->zero_means : "");
        break;
    }
    case BENCH_OPT_LIST: {
        const bench_int_list *l = (const bench_int_list *)o->target;
        size_t n = 0;
        if (l->n == 0 && o->zero_means) snprintf(buf, size, "%s", o->zero_means);
        for (size_t i = 0; i < l->n; i++) {
            const int w = snprintf(buf + n, size - n, "%s%" PRId64, i ? "," : "", l->v[i]);
            if (w < 0 || (size_t)w >= size - n) break;
            n += (size_t)w;
        }
        break;
    }
    case BENCH_OPT_FLAG:
    case BENCH_OPT_HELP:
        break;
    }
}

void bench_argparse_usage(FILE *out, const bench_opt *opts, size_t n_opts)
{
    for (size_t i = 0; i < n_opts; i++) {
        const bench_opt *o = &opts[i];
        char left[96], meta[64], def[64];
        if (o->kind == BENCH_OPT_CHOICE && !o->metavar) {
            size_t n = 0;
            meta[0] = '\0';
            for (const bench_choice *c = o->choices; c && c->name; c++) {
                const int w =
                    snprintf(meta + n, sizeof meta - n, "%s%s", c == o->choices ? "" : "|", c->name);
                if (w < 0 || (size_t)w >= sizeof meta - n) break;
                n += (size_t)w;
            }
        } else {
            snprintf(meta, sizeof meta, "%s", o->metavar ? o->metavar : "");
        }
        snprintf(left, sizeof left, "--%s%s%s", o->name, meta[0] ? " " : "", meta);
        default_text(o, def, sizeof def);
        if (strlen(left) > 30)
            fprintf(out, "  %s\n  %-30s  %s", left, "", o->help);
        else
            fprintf(out, "  %-30s  %s", left, o->help);
        if (def[0]) fprintf(out, " (default %s)", def);
        fputc('\n', out);
    }
}
