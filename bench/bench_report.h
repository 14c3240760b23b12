/*
 * bench_report.h — what moe-bench prints and writes: the header line per target (library
 * version, git commit, backend, device, driver, CPU ISA level), the layer and definitions
 * lines, the aligned result table, the serving report, and the JSON (one object per result,
 * written with cJSON; the keys are documented in bench/README.md).
 */
#ifndef MOE_BENCH_REPORT_H
#define MOE_BENCH_REPORT_H

#include "bench_machine.h"
#include "bench_plan.h"
#include "bench_runner.h"
#include "bench_serve.h"

#include <stdio.h>

/* The git commit moe-bench was configured from ("unknown" outside a git checkout). */
const char *bench_git_commit(void);

/* Fills a result's backend/device/driver/isa/threads fields from a context's device info. */
void bench_result_set_device(bench_result *r, moe_backend_kind kind, const moe_device_info *info);

void bench_print_header(FILE *out, moe_backend_kind kind, const moe_device_info *info);
/* The machine line: the last-level cache and the measured read bandwidth (`bw` NULL or with
 * gbs 0: not measured, `why_not` says why). */
void bench_print_machine(FILE *out, const bench_plan *plan, const bench_bandwidth *bw, const char *why_not);
/* How many layers each format cycles through and why (only when that is not simply 1). */
void bench_print_plan(FILE *out, const bench_config *cfg, const bench_plan *plan);
/* The line above a (target, format)'s rows: the format, its layers, the arena's weight bytes
 * (the target's, and with --cpu-experts those of the CPU context's experts; with --cache-slots the
 * cache's policy and what its slots take of the target's, cache_bytes) and how long the layers took
 * to create from float32 (create_seconds: bench_result.create_seconds). */
void bench_print_format_header(FILE *out, const char *backend, int device_index, const bench_format_plan *f,
                               size_t arena_weights_bytes, size_t cpu_weights_bytes, const bench_config *cfg,
                               size_t cache_bytes, double create_seconds);
/* The layer's variant, the FLOPs at the largest T, and how each figure is defined. */
void bench_print_layer(FILE *out, const bench_config *cfg, const moe_layer_desc *d, int64_t hot_tokens);
/* "q4_0", "q4_0/i8" for a run on int8 activations, "q4_0/cpu32" for one with 32 routed experts
 * on a CPU context (--cpu-experts; its 0 is the plain layer, "q4_0"), "q4_0/cpu32/cache8" with an
 * expert cache of 8 slots on the target (--cache-slots; 0 is none). */
/* Room for a bench_format_label ("mxfp4+q6_k/bf16x2/cpu128/cache128" and longer). */
#define BENCH_LABEL_BYTES 64
const char *bench_format_label(moe_dtype weights, moe_dtype down, moe_dtype activations, int64_t cpu_experts,
                               int64_t cache_slots, char *buf, size_t size);
/* The result table: the column header, then one row per result; the weights column is
 * `label_width` wide (bench_label_width) so that every run's label fits. */
int bench_label_width(const bench_config *cfg);
void bench_print_table_header(FILE *out, int label_width);
void bench_print_row(FILE *out, const bench_result *r, int label_width);
/* A placed run (--cpu-experts N > 0): tokens/s, each context's device ms per forward and, with an
 * expert cache, its hit rate, hits, misses, uploads, evictions and upload MiB and ms over the
 * timed forwards (nothing for a plain run). */
void bench_print_placement(FILE *out, const bench_result *r);
/* The routing trace, before the table: where it came from and what its routing looks like. */
void bench_print_trace(FILE *out, const bench_config *cfg, const bench_trace *t, int exact);
/* --async: the chain of layers with a wait per layer and with one wait (nothing without it). */
void bench_print_async(FILE *out, const bench_result *r);
void bench_print_reference(FILE *out, const bench_result *r);
/* The first forward's time, apart from the statistics (kernel compilation shows here). */
void bench_print_first(FILE *out, const bench_result *r);
/* --kernel-times: each kernel's device ms per forward (and dispatches per forward when more than
 * one), their sum against the forward's device time; or that the backend timed none. */
void bench_print_kernels(FILE *out, const bench_result *r);
/* The weight bandwidth of a result: bytes read per forward, GB/s, its share of the measured
 * read bandwidth, and tokens/s for decode (T <= BENCH_DECODE_TOKENS). */
void bench_print_bandwidth(FILE *out, const bench_result *r);
void bench_print_serve(FILE *out, const bench_serve_result *s);

/* Token counts up to this are decode steps: their report adds tokens/s to the bandwidth line. */
enum { BENCH_DECODE_TOKENS = 16 };

/* Derived figures of a result (0 where the median is 0). */
double bench_result_gflops(const bench_result *r);
double bench_result_tokens_per_s(const bench_result *r);
double bench_result_gbps(const bench_result *r); /* weight_read_bytes / median, GB/s */
/* bench_result_gbps / the measured read bandwidth; < 0 when it does not apply (not measured,
 * or the device has memory of its own). */
double bench_result_bw_fraction(const bench_result *r);
double bench_result_speedup(const bench_result *r); /* 0 without the reference */
/* hits / (hits + misses) over the timed forwards; < 0 without a lookup. */
double bench_result_cache_hit_rate(const bench_result *r);

/* JSON objects (caller owns; NULL when out of memory). The keys are bench/README.md's. */
struct cJSON;
struct cJSON *bench_result_json(const bench_result *r);
struct cJSON *bench_serve_json(const bench_serve_result *s);
/* The pieces every JSON object is made of (bench_ep.c's too): the fields they share — who ran it
 * ("kind", backend, device, driver, ISA, threads, version, commit) and the layer (preset, tokens,
 * shape, formats, "variant") —, a summary in ms, and a key that is null when absent. */
void bench_json_common(struct cJSON *o, const char *kind, const char *backend, const char *device,
                       int device_index, const char *driver, const char *isa, int threads, const char *preset,
                       int64_t tokens, const moe_layer_desc *d);
struct cJSON *bench_json_summary_ms(const bench_summary *s);
void bench_json_add_or_null(struct cJSON *o, const char *key, struct cJSON *value, int present);
/* Writes `array` (a JSON array of result objects) to path, pretty-printed. Returns 0, or
 * BENCH_EXIT_LIBRARY with a message on stderr. */
int bench_json_write(const char *path, const struct cJSON *array);

#endif /* MOE_BENCH_REPORT_H */
