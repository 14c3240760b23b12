/*
 * bench_report.h — what moe-bench prints and writes: the header line per target (library
 * version, git commit, backend, device, driver, CPU ISA level), the layer and definitions
 * lines, the aligned result table, the serving report, and the JSON (one object per result,
 * written with cJSON; the keys are documented in bench/README.md).
 */
#ifndef MOE_BENCH_REPORT_H
#define MOE_BENCH_REPORT_H

#include "bench_runner.h"
#include "bench_serve.h"

#include <stdio.h>

/* The git commit moe-bench was configured from ("unknown" outside a git checkout). */
const char *bench_git_commit(void);

/* Fills a result's backend/device/driver/isa/threads fields from a context's device info. */
void bench_result_set_device(bench_result *r, moe_backend_kind kind, const moe_device_info *info);

void bench_print_header(FILE *out, moe_backend_kind kind, const moe_device_info *info);
/* The layer's variant, the FLOPs at the largest T, and how each figure is defined. */
void bench_print_layer(FILE *out, const bench_config *cfg, const moe_layer_desc *d, int64_t hot_tokens);
/* The result table: the column header, then one row per result. */
void bench_print_table_header(FILE *out);
void bench_print_row(FILE *out, const bench_result *r);
void bench_print_reference(FILE *out, const bench_result *r);
/* The first forward's time, apart from the statistics (kernel compilation shows here). */
void bench_print_first(FILE *out, const bench_result *r);
void bench_print_serve(FILE *out, const bench_serve_result *s);

/* Derived figures of a result (0 where the median is 0). */
double bench_result_gflops(const bench_result *r);
double bench_result_tokens_per_s(const bench_result *r);
double bench_result_gbps(const bench_result *r);
double bench_result_speedup(const bench_result *r); /* 0 without the reference */

/* JSON objects (caller owns; NULL when out of memory). The keys are bench/README.md's. */
struct cJSON;
struct cJSON *bench_result_json(const bench_result *r);
struct cJSON *bench_serve_json(const bench_serve_result *s);
/* Writes `array` (a JSON array of result objects) to path, pretty-printed. Returns 0, or
 * BENCH_EXIT_LIBRARY with a message on stderr. */
int bench_json_write(const char *path, const struct cJSON *array);

#endif /* MOE_BENCH_REPORT_H */
