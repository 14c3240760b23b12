/*
 * test_bench_trace.c — moe-bench's routing traces (bench_trace.h): the generator (every token's
 * experts distinct and in range, reproducible from the seed, reuse 0 and 1 at their extremes, the
 * share of reused experts rising with P), the writer and the strict reader round trip, every
 * malformed file refused with its line and what was wrong, the trace checked against the run's
 * shape, and the steered inputs routing as the trace says through a real CPU layer (the dual
 * basis of the router where d_model >= experts, and the fallback where it is not).
 * Messages of refused files go to stderr and are expected.
 */
#include "bench_check.h"
#include "bench_runner.h"
#include "bench_trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int failures;

/* Every token's experts distinct and in range. */
static int well_formed(const bench_trace *t)
{
    for (int64_t i = 0; i < t->forwards * t->tokens; i++) {
        const int32_t *tok = t->ids + i * t->top_k;
        for (int64_t j = 0; j < t->top_k; j++) {
            if (tok[j] < 0 || tok[j] >= t->n_experts) return 0;
            for (int64_t k = 0; k < j; k++)
                if (tok[k] == tok[j]) return 0;
        }
    }
    return 1;
}

static void test_generator(void)
{
    bench_trace a, b;
    CHECK(bench_trace_generate(16, 4, 3, 50, 0.7, 42, &a) == 0);
    CHECK(a.n_experts == 16 && a.top_k == 4 && a.tokens == 3 && a.forwards == 50 && well_formed(&a));
    CHECK(bench_trace_generate(16, 4, 3, 50, 0.7, 42, &b) == 0);
    CHECK(memcmp(a.ids, b.ids, (size_t)(50 * 3 * 4) * sizeof(int32_t)) == 0); /* the seed fixes it */
    bench_trace_free(&b);
    CHECK(bench_trace_generate(16, 4, 3, 50, 0.7, 43, &b) == 0);
    CHECK(memcmp(a.ids, b.ids, (size_t)(50 * 3 * 4) * sizeof(int32_t)) != 0);
    bench_trace_free(&b);
    bench_trace_free(&a);
    CHECK(a.ids == NULL && a.forwards == 0);

    /* P = 1 at one token: the token keeps forward 0's experts for ever (it must pick k distinct
     * experts from the k the forward before used). */
    CHECK(bench_trace_generate(32, 4, 1, 20, 1.0, 7, &a) == 0);
    CHECK(well_formed(&a));
    int same = 1;
    for (int64_t f = 1; f < 20; f++) {
        int32_t x[4], y[4];
        memcpy(x, a.ids, sizeof x);
        memcpy(y, a.ids + f * 4, sizeof y);
        for (int i = 0; i < 4; i++) {
            int found = 0;
            for (int j = 0; j < 4; j++) found |= x[i] == y[j];
            same &= found;
        }
    }
    CHECK(same);
    bench_trace_summary s = bench_trace_summarize(&a);
    CHECK(s.distinct_per_forward == 4.0 && s.reused_share == 1.0 && s.distinct_total == 4);
    bench_trace_free(&a);

    /* The reused share rises with P: about 1/8 by chance at P = 0 (4 of 32 experts), most at 0.9. */
    double share[3];
    const double ps[3] = {0.0, 0.5, 0.9};
    for (int i = 0; i < 3; i++) {
        CHECK(bench_trace_generate(32, 4, 1, 2000, ps[i], 1, &a) == 0 && well_formed(&a));
        share[i] = bench_trace_summarize(&a).reused_share;
        bench_trace_free(&a);
    }
    CHECK(share[0] > 0.08 && share[0] < 0.18);
    CHECK(share[1] > share[0] + 0.2 && share[2] > share[1] + 0.2 && share[2] < 1.0);

    /* k = E: every token takes every expert, whatever P. */
    CHECK(bench_trace_generate(5, 5, 2, 3, 0.5, 3, &a) == 0 && well_formed(&a));
    bench_trace_free(&a);
}

/* Parses text; returns the parser's result and leaves the message in err. */
static int parse_text(const char *text, bench_trace *t, char *err, size_t size)
{
    err[0] = '\0';
    return bench_trace_parse(text, strlen(text), "t.trace", t, err, size);
}

static void test_parser(void)
{
    char err[512];
    bench_trace t;
    CHECK(parse_text("moe-trace 1 8 2 3\n0,1;2,3;7,6\n# a comment\n5,4;4,5;0,7\n", &t, err, sizeof err) == 0);
    CHECK(t.n_experts == 8 && t.top_k == 2 && t.tokens == 3 && t.forwards == 2);
    CHECK(t.ids[0] == 0 && t.ids[1] == 1 && t.ids[5] == 6 && t.ids[6] == 5 && t.ids[11] == 7);
    bench_trace_free(&t);
    /* No final newline; Windows line ends. */
    CHECK(parse_text("moe-trace 1 4 1 1\r\n3\r\n2", &t, err, sizeof err) == 0 && t.forwards == 2 &&
          t.ids[0] == 3 && t.ids[1] == 2);
    bench_trace_free(&t);

    static const struct {
        const char *text, *expect; /* the message must contain `expect` */
    } bad[] = {
        {"", "t.trace:1: the file is empty"},
        {"moe-trace 1 8 2 1\n", "t.trace:1: no forwards after the header"},
        {"moe-trace 1 8 2 1\n# only a comment\n", "no forwards after the header"},
        {"moe-trace 2 8 2 1\n0,1\n", "t.trace:1: version 2: this moe-bench reads version 1"},
        {"moe-trace 1 8 2\n0,1\n", "t.trace:1: the header has no tokens"},
        {"moe-trace 1 8 2 1 9\n0,1\n", "t.trace:1: text after the header's tokens"},
        {"moe-trace 1 8 x 1\n0,1\n", "t.trace:1: the header's top_k is not a whole number"},
        {"moe-trace 1 8 -2 1\n0,1\n", "the header's top_k is not a whole number"},
        {"moe-trace 1 0 1 1\n0\n", "n_experts, top_k and tokens must be at least 1"},
        {"moe-trace 1 8 9 1\n0\n", "top_k 9 exceeds n_experts 8"},
        {"moe-trace 1 99999999999 2 1\n0,1\n", "the header's n_experts is too large"},
        {"moe-trace  1 8 2 1\n0,1\n", "the header's version is not a whole number"},
        {"moe-trace\n0,1\n", "the header has no version"},
        {"moe-traces 1 8 2 1\n0,1\n", "t.trace:1: not a moe-trace file"},
        {"# comment first\nmoe-trace 1 8 2 1\n0,1\n", "t.trace:1: not a moe-trace file"},
        {"moe-trace 1 8 2 2\n0,1;2,8\n", "t.trace:2: token 1: expert 8 is out of range 0..7"},
        {"moe-trace 1 8 2 2\n0,1;2,99999999999999\n",
         "t.trace:2: token 1: expert 9999999999 is out of range"},
        {"moe-trace 1 8 2 2\n0,1;2,2\n", "t.trace:2: token 1 names expert 2 twice"},
        {"moe-trace 1 8 2 2\n0,1;2\n", "t.trace:2: token 1 has 1 expert, the header says top_k = 2"},
        {"moe-trace 1 8 2 2\n0,1;2,3,4\n", "t.trace:2: token 1 has more than top_k = 2 experts"},
        {"moe-trace 1 8 2 2\n0,1\n", "t.trace:2: 1 token in this forward, the header says 2"},
        {"moe-trace 1 8 2 2\n0,1;2,3;4,5\n", "t.trace:2: more than the header's 2 tokens"},
        {"moe-trace 1 8 2 2\n0,1;2,3\n\n", "t.trace:3: an empty line"},
        {"moe-trace 1 8 2 2\n0,1;2,3\n0,1;\n",
         "t.trace:3: token 1: an expert is missing at the end of the line"},
        {"moe-trace 1 8 2 2\n0,1;2,3;\n", "t.trace:2: more than the header's 2 tokens"},
        {"moe-trace 1 8 2 2\n0,1;2,\n", "t.trace:2: token 1: an expert is missing at the end of the line"},
        {"moe-trace 1 8 2 2\n0, 1;2,3\n",
         "t.trace:2: token 0: expected an expert number at column 3, found byte 0x20"},
        {"moe-trace 1 8 2 2\n0,1:2,3\n", "t.trace:2: token 0: expected ',' or ';' at column 4, found ':'"},
        {"moe-trace 1 8 2 2\n-1,1;2,3\n",
         "t.trace:2: token 0: expected an expert number at column 1, found '-'"},
        {"moe-trace 1 8 2 2\n0,1;2,3\n0,1;2,3\n0,1;2,3x\n",
         "t.trace:4: token 1: expected ',' or ';' at column 8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const int rc = parse_text(bad[i].text, &t, err, sizeof err);
        if (rc != -1 || !strstr(err, bad[i].expect)) {
            fprintf(stderr, "malformed trace #%zu: rc %d, message '%s', expected '%s'\n", i, rc, err,
                    bad[i].expect);
            failures++;
        }
        CHECK(t.ids == NULL);
    }
    /* A NUL byte: not text. */
    static const char nul[] = "moe-trace 1 8 2 1\n0\0001\n";
    CHECK(bench_trace_parse(nul, sizeof nul - 1, "t.trace", &t, err, sizeof err) == -1 && strstr(err, "NUL"));

    /* The run's shape. */
    CHECK(parse_text("moe-trace 1 8 2 3\n0,1;2,3;7,6\n", &t, err, sizeof err) == 0);
    CHECK(bench_trace_check_shape(&t, 8, 2, 3, err, sizeof err) == 0);
    CHECK(bench_trace_check_shape(&t, 16, 2, 3, err, sizeof err) == -1 &&
          strstr(err, "8 experts, the layer has 16"));
    CHECK(bench_trace_check_shape(&t, 8, 1, 3, err, sizeof err) == -1 && strstr(err, "(--top-k)"));
    CHECK(bench_trace_check_shape(&t, 8, 2, 4, err, sizeof err) == -1 &&
          strstr(err, "3 tokens, the run's 4 (--tokens)"));
    bench_trace_free(&t);
}

static void test_files(const char *dir)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/test_bench_trace.trace", dir);
    bench_trace a, b;
    CHECK(bench_trace_generate(12, 3, 5, 17, 0.6, 9, &a) == 0);
    CHECK(bench_trace_write(path, &a, err, sizeof err) == 0);
    CHECK(bench_trace_load(path, &b, err, sizeof err) == 0);
    CHECK(b.n_experts == 12 && b.top_k == 3 && b.tokens == 5 && b.forwards == 17);
    CHECK(b.ids && memcmp(a.ids, b.ids, (size_t)(17 * 5 * 3) * sizeof(int32_t)) == 0);
    bench_trace_free(&b);
    remove(path);
    CHECK(bench_trace_load(path, &b, err, sizeof err) == -1 && strstr(err, "cannot open"));
    CHECK(bench_trace_write("/nonexistent-dir/x.trace", &a, err, sizeof err) == -1 &&
          strstr(err, "cannot write"));
    bench_trace_free(&a);
}

/* The steered inputs route as the trace says, through a real layer on the CPU backend. */
static void test_steering(int64_t d_model, int64_t n_experts, int64_t top_k, int expect_exact)
{
    bench_config c = bench_default_config();
    c.backend = MOE_BACKEND_CPU;
    c.tokens = 5;
    c.d_model = d_model;
    c.d_ff = 32;
    c.experts = n_experts;
    c.top_k = top_k;
    c.trace_reuse = 0.5;
    const moe_layer_desc d = bench_make_desc(&c, c.tokens, c.tokens, MOE_DTYPE_F32);
    bench_data b;
    memset(&b, 0, sizeof b);
    CHECK(bench_data_make(&c, &d, 1, &b) == 0);
    bench_trace t;
    CHECK(bench_trace_generate(n_experts, top_k, c.tokens, 12, c.trace_reuse, c.seed, &t) == 0);
    int exact = -1;
    CHECK(bench_trace_inputs(&c, &d, b.router, &t, &b.trace_x, &exact) == 0);
    CHECK(exact == expect_exact);
    const bench_target cpu = {.kind = MOE_BACKEND_CPU};
    moe_context *ctx = NULL;
    moe_device_info info;
    moe_layer *layer = NULL;
    const moe_layer_weights w = bench_data_weights(&b);
    CHECK(bench_context_create(&cpu, 1, &ctx, &info) == 0);
    CHECK(ctx && moe_layer_create(ctx, &d, &w, &layer) == MOE_OK);
    bench_trace_routing routing = {0};
    if (layer) {
        CHECK(bench_trace_verify(layer, ctx, &d, &t, b.trace_x, &routing) == 0);
        const bench_trace_summary s = bench_trace_summarize(&t);
        CHECK(routing.experts_active == s.distinct_per_forward && routing.max_expert_rows >= 1);
        CHECK(routing.weight_read_bytes > bench_fixed_weight_bytes(&d));
        /* A trace the inputs were not steered by is caught (an expected message follows). */
        int32_t *tok = t.ids + 3 * top_k, other = 0;
        for (int64_t j = 0; j < top_k; j++)
            if (tok[j] == other) other++, j = -1; /* the lowest expert the token does not use */
        tok[0] = other;
        fprintf(stderr, "(an expected error follows)\n");
        CHECK(bench_trace_verify(layer, ctx, &d, &t, b.trace_x, &routing) == BENCH_EXIT_LIBRARY);
    }
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    bench_trace_free(&t);
    bench_data_free(&b);
}

int main(int argc, char **argv)
{
    test_generator();
    test_parser();
    test_files(argc > 1 ? argv[1] : ".");
    test_steering(64, 8, 2, 1);   /* the dual basis: only the chosen logits move */
    test_steering(256, 64, 8, 1); /* a preset's routing at a smaller width */
    test_steering(96, 128, 4, 0); /* more experts than d_model: each expert's own row */
    if (failures) {
        fprintf(stderr, "test_bench_trace: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_bench_trace: all checks passed\n");
    return 0;
}
