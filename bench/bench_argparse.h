/*
 * bench_argparse.h — a small table-driven command-line parser for moe-bench.
 *
 * Each option is one row of a bench_opt table: its name (without the leading "--"), its kind
 * (flag, integer, number, choice), where the parsed value goes, the allowed range or choice
 * list, and its help text. The parser accepts "--name value" and "--name=value"; the usage
 * text is generated from the same table, with each option's default read from its target.
 * Adding an option is adding a row.
 */
#ifndef MOE_BENCH_ARGPARSE_H
#define MOE_BENCH_ARGPARSE_H

#include <stdint.h>
#include <stdio.h>

typedef enum bench_opt_kind {
    BENCH_OPT_FLAG,   /* no value; sets the int target to 1 */
    BENCH_OPT_INT64,  /* decimal integer in [min_i, max_i]; int64_t target */
    BENCH_OPT_UINT64, /* unsigned integer, decimal or 0x hex; uint64_t target */
    BENCH_OPT_DOUBLE, /* finite number > min_d; double target */
    BENCH_OPT_CHOICE, /* one of the names in choices; the int target gets its value */
    BENCH_OPT_HELP,   /* no value; parsing stops with BENCH_PARSE_HELP */
    BENCH_OPT_STRING, /* any non-empty text; const char * target (points into argv) */
    BENCH_OPT_LIST    /* comma-separated integers, each in [min_i, max_i]; bench_int_list target */
} bench_opt_kind;

enum { BENCH_LIST_MAX = 32 };

/* Target of a BENCH_OPT_LIST option: "1,8,64" gives n = 3, v = {1, 8, 64}. */
typedef struct bench_int_list {
    size_t n;
    int64_t v[BENCH_LIST_MAX];
} bench_int_list;

typedef struct bench_choice {
    const char *name;
    int value;
} bench_choice;

typedef struct bench_opt {
    const char *name; /* "tokens" for --tokens */
    bench_opt_kind kind;
    void *target;                /* int*, int64_t*, uint64_t*, double*, const char** or
                                    bench_int_list*, per kind */
    const char *metavar;         /* "T" in "--tokens T"; NULL for flags; a choice's usage shows
                                    its metavar when set, else the list of choices */
    int64_t min_i, max_i;        /* BENCH_OPT_INT64 range, inclusive */
    double min_d;                /* BENCH_OPT_DOUBLE: the value must be greater */
    const bench_choice *choices; /* BENCH_OPT_CHOICE: ends with a {NULL, 0} row */
    const char *zero_means;      /* how the usage shows an unset default: a numeric 0 or a value
                                    below min_i, a NULL string, an empty list ("auto") */
    const char *help;
} bench_opt;

typedef enum bench_parse_result {
    BENCH_PARSE_OK = 0,
    BENCH_PARSE_HELP = 1, /* --help was given */
    BENCH_PARSE_ERROR = 2 /* a message is already on stderr */
} bench_parse_result;

/* Parses argv[1..argc-1] into the table's targets. `prog` prefixes error messages. */
bench_parse_result bench_argparse(const bench_opt *opts, size_t n_opts, int argc, char **argv,
                                  const char *prog);

/* Writes one line per option, with the default taken from the target's current value. */
void bench_argparse_usage(FILE *out, const bench_opt *opts, size_t n_opts);

/* The name of a choice value, or "?" if it is not in the list. */
const char *bench_choice_name(const bench_choice *choices, int value);

#endif /* MOE_BENCH_ARGPARSE_H */
