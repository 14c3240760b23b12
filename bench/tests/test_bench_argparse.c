/*
 * test_bench_argparse.c — moe-bench's argument parsing: the table-driven parser (every option
 * kind, "--x v" and "--x=v", ranges, bad numbers, unknown options, missing values) and the
 * configuration on top of it (presets applied before the flags, so flags override them; the
 * checks of option combinations; the shape arithmetic of the presets). Error messages go to
 * stderr and are expected; the test checks return values and parsed fields.
 */
#include "bench_argparse.h"
#include "bench_check.h"
#include "bench_config.h"
#include "bench_machine.h"
#include "bench_plan.h"
#include "bench_report.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int failures;

enum { MAX_ARGS = 32 };

/* Parses a NULL-terminated list of arguments with bench_config_parse. */
static bench_parse_result parse(bench_config *c, const char *a0, ...);

#include <stdarg.h>
static bench_parse_result parse(bench_config *c, const char *a0, ...)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = (char *)"moe-bench";
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && argc < MAX_ARGS; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return bench_config_parse(c, argc, argv);
}

/* The low-level parser on its own table. */
static void test_parser(void)
{
    int64_t n = 7;
    uint64_t u = 0;
    double x = 1.0;
    int flag = 0, choice = 0;
    const char *text = NULL;
    bench_int_list list = {0};
    static const bench_choice choices[] = {{"red", 1}, {"green", 2}, {NULL, 0}};
    const bench_opt opts[] = {
        {"n", BENCH_OPT_INT64, &n, "N", 1, 100, 0.0, NULL, NULL, "an int"},
        {"u", BENCH_OPT_UINT64, &u, "U", 0, 0, 0.0, NULL, NULL, "unsigned"},
        {"x", BENCH_OPT_DOUBLE, &x, "X", 0, 0, 0.0, NULL, NULL, "a number > 0"},
        {"flag", BENCH_OPT_FLAG, &flag, NULL, 0, 0, 0.0, NULL, NULL, "a flag"},
        {"color", BENCH_OPT_CHOICE, &choice, NULL, 0, 0, 0.0, choices, NULL, "a choice"},
        {"file", BENCH_OPT_STRING, &text, "FILE", 0, 0, 0.0, NULL, "none", "a string"},
        {"list", BENCH_OPT_LIST, &list, "A,B", 1, 1000, 0.0, NULL, "off", "a list"},
        {"help", BENCH_OPT_HELP, NULL, NULL, 0, 0, 0.0, NULL, NULL, "help"},
    };
    const size_t n_opts = sizeof opts / sizeof opts[0];
    char *ok[] = {"p",      "--n",           "42",     "--u=0x10", "--x",    "2.5",
                  "--flag", "--color=green", "--file", "out.json", "--list", "1,8,64"};
    CHECK(bench_argparse(opts, n_opts, 12, ok, "t") == BENCH_PARSE_OK);
    CHECK(n == 42 && u == 16 && x == 2.5 && flag == 1 && choice == 2);
    CHECK(text && strcmp(text, "out.json") == 0);
    CHECK(list.n == 3 && list.v[0] == 1 && list.v[1] == 8 && list.v[2] == 64);

    static char *bad[][3] = {
        {"p", "--n", "0"},                         /* below range */
        {"p", "--n", "101"},                       /* above range */
        {"p", "--n", "12abc"},                     /* trailing text */
        {"p", "--n", "1.5"},                       /* not an integer */
        {"p", "--n", ""},                          /* empty */
        {"p", "--x", "0"},                         /* must be > 0 */
        {"p", "--x", "nan"},                       /* not finite */
        {"p", "--x", "inf"},                       /* not finite */
        {"p", "--u", "-1"},                        /* signed */
        {"p", "--color", "blue"},                  /* not a choice */
        {"p", "--file", ""},                       /* empty string */
        {"p", "--list", "1,,2"},                   /* empty item */
        {"p", "--list", "1,x"},                    /* not an integer */
        {"p", "--list", "0,4"},                    /* out of range */
        {"p", "--list", "4,"},                     /* trailing comma */
        {"p", "--nope", "1"},                      /* unknown option */
        {"p", "-n", "1"},                          /* single dash */
        {"p", "stray", "1"},                       /* not an option */
        {"p", "--flag=1", "x"},                    /* a flag takes no value */
        {"p", "--n=99999999999999999999999", "x"}, /* overflow */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const int argc = strchr(bad[i][1], '=') ? 2 : 3;
        if (bench_argparse(opts, n_opts, argc, bad[i], "t") != BENCH_PARSE_ERROR) {
            fprintf(stderr, "accepted bad arguments #%zu: %s %s\n", i, bad[i][1], bad[i][2]);
            failures++;
        }
    }
    char *missing[] = {"p", "--n"};
    CHECK(bench_argparse(opts, n_opts, 2, missing, "t") == BENCH_PARSE_ERROR);
    char *missing2[] = {"p", "--n", "--flag"};
    CHECK(bench_argparse(opts, n_opts, 3, missing2, "t") == BENCH_PARSE_ERROR);
    char *neg[] = {"p", "--x", "-3"}; /* a negative value is a value, and then out of range */
    CHECK(bench_argparse(opts, n_opts, 3, neg, "t") == BENCH_PARSE_ERROR);
    char *help[] = {"p", "--help"};
    CHECK(bench_argparse(opts, n_opts, 2, help, "t") == BENCH_PARSE_HELP);
    char long_list[200] = "1";
    for (int i = 0; i < BENCH_LIST_MAX; i++) strcat(long_list, ",2");
    char *too_many[] = {"p", "--list", long_list};
    CHECK(bench_argparse(opts, n_opts, 3, too_many, "t") == BENCH_PARSE_ERROR);
    CHECK(strcmp(bench_choice_name(choices, 2), "green") == 0 &&
          strcmp(bench_choice_name(choices, 9), "?") == 0);

    /* The usage text comes from the same table, with the defaults. */
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (f) {
        bench_argparse_usage(f, opts, n_opts);
        char buf[4096];
        rewind(f);
        const size_t got = fread(buf, 1, sizeof buf - 1, f);
        buf[got] = '\0';
        CHECK(strstr(buf, "--n N") && strstr(buf, "--color red|green") && strstr(buf, "(default 42)"));
        fclose(f);
    }
}

static void test_config(void)
{
    bench_config c;
    /* No flags: the headline shape. */
    CHECK(parse(&c, NULL) == BENCH_PARSE_OK);
    CHECK(c.tokens == 512 && c.d_model == 1024 && c.d_ff == 2816 && c.experts == 8 && c.top_k == 2);
    CHECK(c.backend == MOE_BACKEND_AUTO && c.activation == MOE_ACTIVATION_SWIGLU && !c.no_renorm);
    CHECK(c.preset == -1 && c.device == -1 && !c.serve);

    /* The bench_smoke flags keep working. */
    CHECK(parse(&c, "--backend", "cpu", "--tokens", "9", "--d-model", "33", "--d-ff", "20", "--experts", "6",
                "--top-k", "2", "--iters", "3", "--warmup", "1", NULL) == BENCH_PARSE_OK);
    CHECK(c.backend == MOE_BACKEND_CPU && c.tokens == 9 && c.d_model == 33 && c.iters == 3 && c.warmup == 1);

    /* A preset, and flags before or after it override it. */
    CHECK(parse(&c, "--preset", "qwen1.5-moe-a2.7b", NULL) == BENCH_PARSE_OK);
    CHECK(c.d_model == 2048 && c.d_ff == 1408 && c.experts == 60 && c.top_k == 4 && c.shared_ff == 5632 &&
          c.shared_gate && c.no_renorm && c.tokens == 512);
    CHECK(strcmp(bench_preset_name(c.preset), "qwen1.5-moe-a2.7b") == 0);
    CHECK(parse(&c, "--tokens", "64", "--preset=olmoe-1b-7b", "--top-k", "4", NULL) == BENCH_PARSE_OK);
    CHECK(c.tokens == 64 && c.experts == 64 && c.top_k == 4 && c.no_renorm);
    CHECK(parse(&c, "--preset", "relu-2048x8192-e8-top2", NULL) == BENCH_PARSE_OK);
    CHECK(c.tokens == 16384 && c.d_model == 2048 && c.d_ff == 8192 && c.experts == 8 && c.top_k == 2 &&
          c.activation == MOE_ACTIVATION_RELU);
    CHECK(parse(&c, "--preset", "deepseek-v3", NULL) == BENCH_PARSE_OK);
    CHECK(c.score == MOE_SCORE_SIGMOID && c.selection_bias && c.groups == 8 && c.topk_group == 4 &&
          c.scale == 2.5 && c.shared_ff == 2048 && !c.no_renorm && c.experts == 256 && c.top_k == 8);
    CHECK(parse(&c, "--preset", "deepseek-v2-lite", NULL) == BENCH_PARSE_OK);
    CHECK(c.shared_ff == 2 * 1408 && c.top_k == 6 && c.experts == 64);
    CHECK(parse(&c, "--preset", "switch-base-8", "--tokens", "100", NULL) == BENCH_PARSE_OK);
    CHECK(c.top_k == 1 && c.activation == MOE_ACTIVATION_RELU && c.capacity_factor == 1.25 &&
          c.drop_policy == MOE_DROP_PASSTHROUGH);
    moe_layer_desc d = bench_make_desc(&c, 100, 100, MOE_DTYPE_F32);
    CHECK(d.expert_capacity == 16); /* ceil(1.25 * 100 * 1 / 8) */
    d = bench_make_desc(&c, 1, 100, MOE_DTYPE_F32);
    CHECK(d.expert_capacity == 1);
    CHECK(parse(&c, "--preset", "mixtral-8x7b", NULL) == BENCH_PARSE_OK);
    d = bench_make_desc(&c, 1, 1, MOE_DTYPE_F32);
    CHECK(fabs(bench_forward_flops(&d, 1) - (2.0 * 4096 * 8 + 2.0 * 2 * 4096 * 14336 * 3)) < 1.0);
    CHECK(fabs(bench_all_weight_bytes(&d) - (8.0 * 3 * 4096 * 14336 * 4 + 8.0 * 4096 * 4)) < 1.0);
    for (int i = 0; i < bench_n_presets; i++) {
        bench_config p = bench_default_config();
        bench_preset_apply(&p, i);
        CHECK(p.top_k <= p.experts && p.d_model > 0 && p.d_ff > 0);
    }

    /* Backends, sweeps, serve, JSON. */
    CHECK(parse(&c, "--backend", "all", "--device", "1", "--threads", "2", NULL) == BENCH_PARSE_OK);
    CHECK(c.backend == BENCH_BACKEND_ALL && c.device == 1 && c.threads == 2);
    CHECK(parse(&c, "--sweep-tokens", "1,8,64,512,4096", NULL) == BENCH_PARSE_OK);
    int64_t list[BENCH_LIST_MAX];
    CHECK(bench_token_list(&c, list, BENCH_LIST_MAX) == 5 && list[4] == 4096 && bench_max_tokens(&c) == 4096);
    CHECK(parse(&c, "--serve", "--rate", "50", "--duration", "0.5", "--max-batch-tokens", "256", "--streams",
                "2", "--slo-ms", "20", "--req-dist", "uniform", "--req-tokens", "8", NULL) == BENCH_PARSE_OK);
    CHECK(c.serve && c.rate == 50.0 && c.duration == 0.5 && c.max_batch_tokens == 256 && c.streams == 2 &&
          c.slo_ms == 20.0 && c.req_dist == BENCH_REQ_UNIFORM && c.req_tokens == 8 &&
          bench_max_tokens(&c) == 256);
    CHECK(parse(&c, "--json", "out.json", "--hot-expert", "0.5", NULL) == BENCH_PARSE_OK);
    CHECK(c.json_path && strcmp(c.json_path, "out.json") == 0 && c.hot_expert == 0.5);
    CHECK(parse(&c, "--list-presets", NULL) == BENCH_PARSE_OK && c.list_presets);

    /* Bad flags and combinations. */
    CHECK(parse(&c, "--preset", "no-such-model", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--backend", "cuda", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--tokens", "0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--tokens", "-5", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--top-k", "9", NULL) == BENCH_PARSE_ERROR); /* > 8 experts */
    CHECK(parse(&c, "--groups", "3", "--topk-group", "1", NULL) ==
          BENCH_PARSE_ERROR);                                     /* 3 does not divide 8 */
    CHECK(parse(&c, "--groups", "4", NULL) == BENCH_PARSE_ERROR); /* no --topk-group */
    CHECK(parse(&c, "--groups", "4", "--topk-group", "5", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--topk-group", "2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--shared-gate", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--hot-expert", "1.5", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--serve", "--sweep-tokens", "1,2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--serve", "--req-tokens", "600", NULL) == BENCH_PARSE_ERROR); /* > 512 per batch */
    CHECK(parse(&c, "--tokens", "8", "--ref-tokens", "9", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--streams", "0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--rate", "0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--json", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--sweep-tokens", "1,0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--help", NULL) == BENCH_PARSE_HELP);

    /* moe-bench's own usage text: every default is a value (no preset is "none", not "?"). */
    FILE *f = tmpfile();
    CHECK(f != NULL);
    if (f) {
        bench_usage(f);
        static char buf[16384];
        rewind(f);
        const size_t got = fread(buf, 1, sizeof buf - 1, f);
        buf[got] = '\0';
        CHECK(strstr(buf, "(default ?)") == NULL && strstr(buf, "(default none)") != NULL);
        fclose(f);
    }
}

/* --weights and --layers: parsing, defaults and every refusal. */
/* A --down-weights mix as parsed into c: the layer --weights w makes has down (routed and shared) in
 * `down`, and its run on activations act is labelled `label`. */
static void check_mix(const bench_config *c, moe_dtype w, moe_dtype down, moe_dtype act, const char *label)
{
    const moe_layer_desc d = bench_make_desc(c, 1, 1, w);
    char lbl[32];
    CHECK(d.weight_dtype == w && d.down_weight_dtype == down && d.shared_down_weight_dtype == down);
    CHECK(
        !strcmp(bench_format_label(d.weight_dtype, d.down_weight_dtype, act, 0, 0, lbl, sizeof lbl), label));
}

static void test_formats_and_layers(void)
{
    bench_config c;
    CHECK(parse(&c, NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 1 && c.weights.v[0] == MOE_DTYPE_F32 && c.layers == 1 && !c.no_bandwidth);
    CHECK(parse(&c, "--weights", "f32,BF16,q4_0", "--layers", "4", "--no-bandwidth", NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 3 && c.weights.v[0] == MOE_DTYPE_F32 && c.weights.v[1] == MOE_DTYPE_BF16 &&
          c.weights.v[2] == MOE_DTYPE_Q4_0 && c.layers == 4 && c.no_bandwidth);
    CHECK(parse(&c, "--weights=Q8_0,f16", "--layers=AUTO", NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 2 && c.weights.v[0] == MOE_DTYPE_Q8_0 && c.weights.v[1] == MOE_DTYPE_F16 &&
          c.layers == BENCH_LAYERS_AUTO);
    /* Every name the library has is accepted, alone and all together. */
    char all[128] = "";
    for (int v = 1; moe_dtype_name((moe_dtype)v); v++) {
        CHECK(parse(&c, "--weights", moe_dtype_name((moe_dtype)v), NULL) == BENCH_PARSE_OK);
        CHECK(c.weights.n == 1 && c.weights.v[0] == (moe_dtype)v);
        snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", v > 1 ? "," : "",
                 moe_dtype_name((moe_dtype)v));
    }
    CHECK(parse(&c, "--weights", all, NULL) == BENCH_PARSE_OK && c.weights.n == 11);
    CHECK(parse(&c, "--weights", "Q3_K", NULL) == BENCH_PARSE_OK && c.weights.v[0] == MOE_DTYPE_Q3_K);
    CHECK(parse(&c, "--weights", "Q2_K", NULL) == BENCH_PARSE_OK && c.weights.v[0] == MOE_DTYPE_Q2_K);
    /* gpt-oss-20b's 2880 is whole MXFP4 blocks of 32, not K-quant super-blocks of 256. */
    CHECK(parse(&c, "--preset", "gpt-oss-20b", "--weights", "f32,mxfp4", NULL) == BENCH_PARSE_OK);
    CHECK(c.d_model == 2880 && c.d_ff == 2880 && c.experts == 32 && c.top_k == 4 && !c.no_renorm);
    CHECK(c.biases && c.activation == MOE_ACTIVATION_SWIGLU_OAI);
    CHECK(parse(&c, "--preset", "gpt-oss-20b", "--weights", "q4_k", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--biases", "--selection-bias", "--score", "sigmoid", NULL) == BENCH_PARSE_ERROR);
    /* The K-quants need whole super-blocks of 256: deepseek-v2-lite's d_ff of 1408 is not. */
    CHECK(parse(&c, "--preset", "qwen3-30b-a3b", "--weights", "q4_k,q6_k", NULL) == BENCH_PARSE_OK);
    CHECK(parse(&c, "--preset", "deepseek-v2-lite", "--weights", "q4_k", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--preset", "qwen3-30b-a3b", "--weights", "q3_k", NULL) == BENCH_PARSE_OK);
    CHECK(parse(&c, "--preset", "deepseek-v2-lite", "--weights", "q3_k", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--preset", "qwen3-30b-a3b", "--weights", "q2_k", NULL) == BENCH_PARSE_OK);
    CHECK(parse(&c, "--preset", "deepseek-v2-lite", "--weights", "q2_k", NULL) == BENCH_PARSE_ERROR);
    /* The preset's dimensions are whole blocks; a block format passes with them. */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--weights", "q4_0,q8_0", NULL) == BENCH_PARSE_OK);
    CHECK(parse(&c, "--preset", "qwen1.5-moe-a2.7b", "--weights", "q4_0", NULL) == BENCH_PARSE_OK);
    /* A block format needs d_model, d_ff and the shared width to be multiples of 32; the
     * 16-bit formats do not. */
    CHECK(parse(&c, "--weights", "q4_0", "--d-ff", "40", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "f32,q8_0", "--d-model", "48", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q8_0", "--shared-ff", "40", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "bf16,f16", "--d-ff", "40", "--d-model", "33", NULL) == BENCH_PARSE_OK);
    /* --down-weights: down's rows (d_ff, --shared-ff) in its blocks, gate/up's (d_model) in --weights'. */
    CHECK(parse(&c, "--weights", "q4_0", "--down-weights", "q6_k", "--d-model", "64", "--d-ff", "1408",
                NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q4_0", "--down-weights", "q6_k", "--d-model", "64", "--d-ff", "512",
                "--shared-ff", "96", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q4_k", "--down-weights", "q8_0", "--d-model", "256", "--d-ff", "1408",
                NULL) == BENCH_PARSE_OK);
    CHECK(parse(&c, "--weights", "f32,q4_k", "--down-weights", "q4_0", "--d-model", "256", "--d-ff", "96",
                NULL) == BENCH_PARSE_OK);
    CHECK(parse(&c, "--weights", "q8_0", "--d-ff", "64", "--d-model", "96", "--shared-ff", "32", NULL) ==
          BENCH_PARSE_OK);
    static const char *const bad_weights[] = {"bogus",   "f32,,bf16", "f32,", ",f32", "f32,F32",
                                              "default", "q4_1",      "f32 ", "",     "f32;bf16"};
    for (size_t i = 0; i < sizeof bad_weights / sizeof bad_weights[0]; i++)
        if (parse(&c, "--weights", bad_weights[i], NULL) != BENCH_PARSE_ERROR) {
            fprintf(stderr, "accepted --weights '%s'\n", bad_weights[i]);
            failures++;
        }
    CHECK(parse(&c, "--weights", NULL) == BENCH_PARSE_ERROR);
    static const char *const bad_layers[] = {"0", "-1",    "1025", "3x",
                                             "",  "auto2", "1.5",  "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_layers / sizeof bad_layers[0]; i++)
        if (parse(&c, "--layers", bad_layers[i], NULL) != BENCH_PARSE_ERROR) {
            fprintf(stderr, "accepted --layers '%s'\n", bad_layers[i]);
            failures++;
        }
    CHECK(parse(&c, "--layers", "1024", NULL) == BENCH_PARSE_OK && c.layers == BENCH_MAX_LAYERS);
    CHECK(parse(&c, "--serve", "--layers", "2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--serve", "--layers", "auto", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--serve", "--async", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--layers", "4", "--async", NULL) == BENCH_PARSE_OK && c.async && c.layers == 4);
    CHECK(parse(&c, "--serve", "--weights", "f32,bf16", NULL) == BENCH_PARSE_OK);

    /* --device: an index stays moe-bench's; a name or a type goes to the library as given. */
    CHECK(parse(&c, "--device", "2", NULL) == BENCH_PARSE_OK && c.device == 2 && !c.device_sel);
    CHECK(parse(&c, "--device", "discrete+integrated", NULL) == BENCH_PARSE_OK && c.device == -1 &&
          c.device_sel && !strcmp(c.device_sel, "discrete+integrated"));
    CHECK(parse(&c, "--device", "name:RTX", NULL) == BENCH_PARSE_OK && c.device_sel &&
          !strcmp(c.device_sel, "name:RTX"));
    CHECK(parse(&c, "--device", "", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--device", "99999999999", NULL) == BENCH_PARSE_ERROR);

    /* --activations: each format once per entry that applies to it, formats outer. */
    CHECK(parse(&c, "--weights", "f32,q8_0,q4_0", NULL) == BENCH_PARSE_OK && c.weights.n == 3 &&
          c.weights.act[0] == MOE_DTYPE_F32 && c.weights.act[2] == MOE_DTYPE_F32);
    CHECK(parse(&c, "--weights", "f32,q8_0,q4_0", "--activations", "f32,Q8_0", NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 5 && c.weights.v[0] == MOE_DTYPE_F32 && c.weights.act[0] == MOE_DTYPE_F32 &&
          c.weights.v[1] == MOE_DTYPE_Q8_0 && c.weights.act[1] == MOE_DTYPE_F32 &&
          c.weights.v[2] == MOE_DTYPE_Q8_0 && c.weights.act[2] == MOE_DTYPE_Q8_0 &&
          c.weights.v[3] == MOE_DTYPE_Q4_0 && c.weights.act[3] == MOE_DTYPE_F32 &&
          c.weights.v[4] == MOE_DTYPE_Q4_0 && c.weights.act[4] == MOE_DTYPE_Q8_0);
    CHECK(parse(&c, "--weights", "bf16,q4_0", "--activations", "q8_0", NULL) == BENCH_PARSE_OK &&
          c.weights.n == 1 && c.weights.v[0] == MOE_DTYPE_Q4_0 && c.weights.act[0] == MOE_DTYPE_Q8_0);
    CHECK(parse(&c, "--weights", "f32,bf16", "--activations", "q8_0", NULL) == BENCH_PARSE_ERROR);
    /* bf16 (bfloat16 pairs) applies to Q4_0, MXFP4 and Q4_K; f16 is no activation format. */
    CHECK(parse(&c, "--weights", "f32,q8_0,q4_0", "--activations", "f32,bf16", NULL) == BENCH_PARSE_OK &&
          c.weights.n == 4 && c.weights.v[2] == MOE_DTYPE_Q4_0 && c.weights.act[2] == MOE_DTYPE_F32 &&
          c.weights.v[3] == MOE_DTYPE_Q4_0 && c.weights.act[3] == MOE_DTYPE_BF16);
    CHECK(parse(&c, "--weights", "q8_0,mxfp4,q4_k", "--activations", "bf16", NULL) == BENCH_PARSE_OK &&
          c.weights.n == 2 && c.weights.v[0] == MOE_DTYPE_MXFP4 && c.weights.act[1] == MOE_DTYPE_BF16);
    CHECK(parse(&c, "--weights", "q8_0,f16", "--activations", "bf16", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q4_0", "--activations", "f16", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q4_0", "--activations", "q8_0,q8_0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--serve", "--weights", "q4_0", "--activations", "q8_0", NULL) == BENCH_PARSE_ERROR);
    /* --down-weights: every run's down but f32's; an opt-in applies where gate/up or down takes it. */
    CHECK(parse(&c, "--weights", "f32,q4_k", NULL) == BENCH_PARSE_OK && c.down_weights == MOE_DTYPE_DEFAULT &&
          bench_down_dtype(&c, MOE_DTYPE_Q4_K) == MOE_DTYPE_Q4_K);
    CHECK(parse(&c, "--weights", "f32,q4_k", "--down-weights", "Q6_K", NULL) == BENCH_PARSE_OK &&
          c.down_weights == MOE_DTYPE_Q6_K && bench_down_dtype(&c, MOE_DTYPE_Q4_K) == MOE_DTYPE_Q6_K &&
          bench_down_dtype(&c, MOE_DTYPE_F32) == MOE_DTYPE_F32);
    check_mix(&c, MOE_DTYPE_Q4_K, MOE_DTYPE_Q6_K, MOE_DTYPE_BF16, "q4_k+q6_k/bf16x2");
    CHECK(parse(&c, "--weights", "q6_k,f16", "--down-weights", "q4_0", "--activations", "q8_0", NULL) ==
              BENCH_PARSE_OK &&
          c.weights.n == 2 && c.weights.v[0] == MOE_DTYPE_Q6_K && c.weights.act[1] == MOE_DTYPE_Q8_0);
    CHECK(parse(&c, "--weights", "q6_k", "--down-weights", "q6_k", "--activations", "q8_0", NULL) ==
              BENCH_PARSE_OK &&
          c.weights.n == 1 && c.weights.act[0] == MOE_DTYPE_Q8_0); /* 0.13.0: Q6_K takes them */
    /* Q3_K (0.15.0) takes int8 activations, not bfloat16 pairs: a Q3_K run gets bfloat16 pairs only
     * through a down that takes them (a Q3_K_M layer's Q4_K), labelled q3_k+q4_k. */
    CHECK(parse(&c, "--weights", "f32,q3_k", "--activations", "f32,q8_0", NULL) == BENCH_PARSE_OK &&
          c.weights.n == 3 && c.weights.v[1] == MOE_DTYPE_Q3_K && c.weights.act[1] == MOE_DTYPE_F32 &&
          c.weights.v[2] == MOE_DTYPE_Q3_K && c.weights.act[2] == MOE_DTYPE_Q8_0);
    CHECK(parse(&c, "--weights", "q3_k", "--activations", "bf16", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q3_k", "--down-weights", "q3_k", "--activations", "bf16", NULL) ==
          BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q3_k", "--down-weights", "q4_k", "--activations", "f32,q8_0,bf16", NULL) ==
              BENCH_PARSE_OK &&
          c.weights.n == 3 && c.weights.v[2] == MOE_DTYPE_Q3_K && c.weights.act[1] == MOE_DTYPE_Q8_0 &&
          c.weights.act[2] == MOE_DTYPE_BF16 && bench_down_dtype(&c, MOE_DTYPE_Q3_K) == MOE_DTYPE_Q4_K);
    check_mix(&c, MOE_DTYPE_Q3_K, MOE_DTYPE_Q4_K, MOE_DTYPE_Q8_0, "q3_k+q4_k/i8");
    /* Q2_K (0.16.0) likewise: int8, not bfloat16 pairs; llama.cpp's Q2_K mix (a Q3_K down) takes them on
     * neither product, so bf16 is refused there, and runs them only through a down that does (Q4_K). */
    CHECK(parse(&c, "--weights", "f32,q2_k", "--activations", "f32,q8_0", NULL) == BENCH_PARSE_OK &&
          c.weights.n == 3 && c.weights.v[1] == MOE_DTYPE_Q2_K && c.weights.act[1] == MOE_DTYPE_F32 &&
          c.weights.v[2] == MOE_DTYPE_Q2_K && c.weights.act[2] == MOE_DTYPE_Q8_0);
    CHECK(parse(&c, "--weights", "q2_k", "--activations", "bf16", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q2_k", "--down-weights", "q3_k", "--activations", "bf16", NULL) ==
          BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q2_k", "--down-weights", "q3_k", "--activations", "f32,q8_0", NULL) ==
              BENCH_PARSE_OK &&
          c.weights.n == 2 && c.weights.v[1] == MOE_DTYPE_Q2_K && c.weights.act[0] == MOE_DTYPE_F32 &&
          c.weights.act[1] == MOE_DTYPE_Q8_0 && bench_down_dtype(&c, MOE_DTYPE_Q2_K) == MOE_DTYPE_Q3_K);
    check_mix(&c, MOE_DTYPE_Q2_K, MOE_DTYPE_Q3_K, MOE_DTYPE_Q8_0, "q2_k+q3_k/i8");
    CHECK(parse(&c, "--weights", "q2_k", "--down-weights", "q4_k", "--activations", "bf16", NULL) ==
              BENCH_PARSE_OK &&
          c.weights.n == 1 && c.weights.act[0] == MOE_DTYPE_BF16);
    check_mix(&c, MOE_DTYPE_Q2_K, MOE_DTYPE_Q4_K, MOE_DTYPE_BF16, "q2_k+q4_k/bf16x2");
    CHECK(parse(&c, "--weights", "mxfp4", "--down-weights", "f16", "--activations", "q8_0", NULL) ==
          BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q4_k", "--down-weights", "q6_k,q8_0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "q4_k", "--down-weights", "q7", NULL) == BENCH_PARSE_ERROR);

    /* --cpu-experts: each run once per entry, runs outer; at most the layer's experts. */
    CHECK(parse(&c, "--experts", "8", NULL) == BENCH_PARSE_OK && c.cpu_experts.n == 0 &&
          c.weights.cpu_experts[0] == 0);
    CHECK(parse(&c, "--experts", "8", "--weights", "f32,q8_0", "--activations", "f32,q8_0", "--cpu-experts",
                "0,8,3", NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 9 && c.weights.v[0] == MOE_DTYPE_F32 && c.weights.cpu_experts[0] == 0 &&
          c.weights.cpu_experts[1] == 8 && c.weights.cpu_experts[2] == 3 &&
          c.weights.v[3] == MOE_DTYPE_Q8_0 && c.weights.act[3] == MOE_DTYPE_F32 &&
          c.weights.cpu_experts[5] == 3 && c.weights.act[6] == MOE_DTYPE_Q8_0 &&
          c.weights.cpu_experts[6] == 0 && c.weights.cpu_experts[8] == 3);
    CHECK(parse(&c, "--experts", "8", "--cpu-experts", "9", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--cpu-experts", "2,2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--cpu-experts", "-1", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--weights", "f32,bf16,f16,q8_0,q4_0", "--cpu-experts", "0,1,2", NULL) ==
          BENCH_PARSE_ERROR); /* 15 runs */
    CHECK(parse(&c, "--serve", "--cpu-experts", "0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--async", "--cpu-experts", "0,2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--async", "--cpu-experts", "0", NULL) == BENCH_PARSE_OK);
}

/* --cache-slots, --cache-policy, --cache-min-rows: each run once more per entry, cut to the run's
 * experts on the CPU context; and every refusal. */
static void test_cache(void)
{
    bench_config c;
    /* Without --cpu-experts every expert lives on the CPU context; the defaults. */
    CHECK(parse(&c, "--experts", "8", "--cache-slots", "0,3", NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 2 && c.weights.cpu_experts[0] == 8 && c.weights.cache_slots[0] == 0 &&
          c.weights.cpu_experts[1] == 8 && c.weights.cache_slots[1] == 3);
    CHECK(c.cache_policy == -1 && c.cache_min_rows == -1); /* not given: LRU, 0 */
    CHECK(parse(&c, "--experts", "8", "--cache-slots", "4", "--cache-policy", "lfu", "--cache-min-rows", "2",
                NULL) == BENCH_PARSE_OK);
    CHECK(c.weights.n == 1 && c.weights.cache_slots[0] == 4 && c.cache_policy == MOE_CACHE_LFU &&
          c.cache_min_rows == 2);
    CHECK(parse(&c, "--cache-slots", "2", "--cache-policy=lru", "--cache-min-rows=0", NULL) ==
              BENCH_PARSE_OK &&
          c.cache_policy == MOE_CACHE_LRU && c.cache_min_rows == 0);
    /* Runs outer, slots inner; cpu 0 gets only the plain entry; a slot count above the run's CPU
     * experts is cut to them, and a cut that repeats an entry of the run is dropped. */
    CHECK(parse(&c, "--experts", "8", "--weights", "f32,bf16", "--cpu-experts", "0,2,8", "--cache-slots",
                "0,4", NULL) == BENCH_PARSE_OK);
    static const int64_t cpu[] = {0, 2, 2, 8, 8}, slots[] = {0, 0, 2, 0, 4};
    CHECK(c.weights.n == 10);
    for (size_t i = 0; i < 10; i++)
        CHECK(c.weights.cpu_experts[i] == cpu[i % 5] && c.weights.cache_slots[i] == slots[i % 5] &&
              c.weights.v[i] == (i < 5 ? MOE_DTYPE_F32 : MOE_DTYPE_BF16));
    CHECK(parse(&c, "--experts", "8", "--cpu-experts", "2", "--cache-slots", "2,4,0", NULL) ==
          BENCH_PARSE_OK);
    CHECK(c.weights.n == 2 && c.weights.cache_slots[0] == 2 && c.weights.cache_slots[1] == 0);
    /* Refusals. */
    static const char *const bad_slots[] = {"-1", "9", "2,2", "1,,2", "x", "", "3,"};
    for (size_t i = 0; i < sizeof bad_slots / sizeof bad_slots[0]; i++)
        if (parse(&c, "--experts", "8", "--cache-slots", bad_slots[i], NULL) != BENCH_PARSE_ERROR) {
            fprintf(stderr, "accepted --cache-slots '%s'\n", bad_slots[i]);
            failures++;
        }
    CHECK(parse(&c, "--cpu-experts", "0", "--cache-slots", "4", NULL) ==
          BENCH_PARSE_ERROR); /* nothing to copy */
    CHECK(parse(&c, "--cpu-experts", "0", "--cache-slots", "0", NULL) == BENCH_PARSE_OK && c.weights.n == 1);
    CHECK(parse(&c, "--weights", "f32,bf16,f16,q8_0", "--cache-slots", "0,1,2,4", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--cache-policy", "mru", "--cache-slots", "2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--cache-min-rows", "-1", "--cache-slots", "2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--cache-min-rows", "x", "--cache-slots", "2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--cache-policy", "lfu", NULL) == BENCH_PARSE_ERROR); /* without --cache-slots */
    CHECK(parse(&c, "--cache-min-rows", "1", NULL) == BENCH_PARSE_ERROR); /* without --cache-slots */
    CHECK(parse(&c, "--serve", "--cache-slots", "0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--async", "--cache-slots", "0,2", NULL) == BENCH_PARSE_ERROR);
}

/* --trace-reuse, --trace-forwards, --trace, --trace-out: values, defaults and combinations. */
static void test_trace_flags(void)
{
    bench_config c;
    CHECK(parse(&c, NULL) == BENCH_PARSE_OK && !bench_trace_active(&c) && c.trace_reuse < 0 &&
          c.trace_forwards == 0 && !c.trace_path && !c.trace_out);
    CHECK(parse(&c, "--trace-reuse", "0.8", NULL) == BENCH_PARSE_OK && bench_trace_active(&c) &&
          c.trace_reuse == 0.8 && c.trace_forwards == 0);
    CHECK(parse(&c, "--trace-reuse", "0", NULL) == BENCH_PARSE_OK && bench_trace_active(&c) &&
          c.trace_reuse == 0.0);
    CHECK(parse(&c, "--trace-reuse=1", "--trace-forwards", "10", "--trace-out", "t.trace", NULL) ==
              BENCH_PARSE_OK &&
          c.trace_reuse == 1.0 && c.trace_forwards == 10 && !strcmp(c.trace_out, "t.trace"));
    CHECK(parse(&c, "--trace", "rec.trace", "--cache-slots", "0,2", NULL) == BENCH_PARSE_OK &&
          bench_trace_active(&c) && !strcmp(c.trace_path, "rec.trace") && c.trace_reuse < 0);
    static const char *const bad_reuse[] = {"-0.1", "1.5", "x", "", "0.5x", "nan", "inf", "1e999"};
    for (size_t i = 0; i < sizeof bad_reuse / sizeof bad_reuse[0]; i++)
        if (parse(&c, "--trace-reuse", bad_reuse[i], NULL) != BENCH_PARSE_ERROR) {
            fprintf(stderr, "accepted --trace-reuse '%s'\n", bad_reuse[i]);
            failures++;
        }
    CHECK(parse(&c, "--trace-reuse", "0.5", "--trace-forwards", "0", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--trace-forwards", "1000001", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace", "", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--trace-out", "", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--trace", "x.trace", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-forwards", "8", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace", "x.trace", "--trace-forwards", "8", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-out", "x.trace", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace", "x.trace", "--trace-out", "y.trace", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--serve", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--sweep-tokens", "1,2", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--hot-expert", "0.5", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--async", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace", "x.trace", "--preset", "deepseek-v3", NULL) == BENCH_PARSE_ERROR); /* groups */
    CHECK(parse(&c, "--trace-reuse", "0.5", "--groups", "4", "--topk-group", "4", NULL) == BENCH_PARSE_OK);
    /* The steered inputs are capped: 64 forwards x 512 tokens x d_model 16384 floats = 2 GiB. */
    CHECK(parse(&c, "--trace-reuse", "0.5", "--d-model", "16384", NULL) == BENCH_PARSE_ERROR);
    CHECK(parse(&c, "--trace-reuse", "0.5", "--d-model", "16384", "--tokens", "1", NULL) == BENCH_PARSE_OK);
    CHECK(bench_trace_check_size(&c, 16384) == 0 && bench_trace_check_size(&c, 16385) == -1);
}

/* Bytes per format, expected experts, the --layers auto rule, cache sizes. */
static void test_arithmetic(void)
{
    CHECK(bench_matrix_bytes(MOE_DTYPE_F32, 2, 3) == 24.0 &&
          bench_matrix_bytes(MOE_DTYPE_DEFAULT, 2, 3) == 24.0);
    CHECK(bench_matrix_bytes(MOE_DTYPE_BF16, 2, 3) == 12.0 &&
          bench_matrix_bytes(MOE_DTYPE_F16, 1, 5) == 10.0);
    CHECK(bench_matrix_bytes(MOE_DTYPE_Q8_0, 1, 32) == 34.0 &&
          bench_matrix_bytes(MOE_DTYPE_Q4_0, 10, 64) == 360.0);

    bench_config c;
    CHECK(parse(&c, "--preset", "mixtral-8x7b", NULL) == BENCH_PARSE_OK);
    const moe_layer_desc f32 = bench_make_desc(&c, 1, 1, MOE_DTYPE_F32);
    const moe_layer_desc q4 = bench_make_desc(&c, 1, 1, MOE_DTYPE_Q4_0);
    CHECK(q4.weight_dtype == MOE_DTYPE_Q4_0 && q4.shared_weight_dtype == MOE_DTYPE_Q4_0);
    CHECK(bench_expert_bytes(&f32) == 3.0 * 14336 * 4096 * 4);
    CHECK(bench_expert_bytes(&q4) == 3.0 * 14336 * (4096 / 32 * 18)); /* down: 4096 rows of 14336 */
    CHECK(bench_fixed_weight_bytes(&q4) == 8.0 * 4096 * 4);           /* the router stays float32 */
    CHECK(fabs(bench_all_weight_bytes(&q4) - (8.0 * 3 * 14336 * 2304 + 8.0 * 4096 * 4)) < 1.0);
    /* A shared expert is stored in the format too; its sigmoid gate is float32. */
    CHECK(parse(&c, "--preset", "qwen1.5-moe-a2.7b", NULL) == BENCH_PARSE_OK);
    const moe_layer_desc qs = bench_make_desc(&c, 1, 1, MOE_DTYPE_Q8_0);
    CHECK(bench_fixed_weight_bytes(&qs) == 60.0 * 2048 * 4 + 3.0 * 5632 * (2048 / 32 * 34) + 2048 * 4);

    /* Expected distinct experts: k at T = 1, E for a long prefill, the uniform mean between. */
    CHECK(parse(&c, "--preset", "qwen3-30b-a3b", NULL) == BENCH_PARSE_OK);
    const moe_layer_desc qw = bench_make_desc(&c, 16, 16, MOE_DTYPE_F32);
    CHECK(fabs(bench_expected_experts(&qw, 1) - 8.0) < 1e-9);
    CHECK(fabs(bench_expected_experts(&qw, 16) - 128.0 * (1.0 - pow(120.0 / 128.0, 16))) < 1e-9);
    CHECK(fabs(bench_expected_experts(&qw, 100000) - 128.0) < 1e-9);
    CHECK(parse(&c, "--experts", "4", "--top-k", "4", NULL) == BENCH_PARSE_OK); /* k = E */
    const moe_layer_desc ke = bench_make_desc(&c, 3, 3, MOE_DTYPE_F32);
    CHECK(fabs(bench_expected_experts(&ke, 3) - 4.0) < 1e-9);

    /* The cache rule: the smallest N with (N - 1) x bytes >= 2 x LLC. */
    CHECK(bench_auto_layers(100e6, 272629760) == 7); /* ceil(5.45) = 6 others */
    CHECK(bench_auto_layers(64.0 * 1048576, 32u << 20) == 2);
    CHECK(bench_auto_layers(1e12, 32u << 20) == 2);
    CHECK(bench_auto_layers(1048576, 1u << 20) == 3);
    CHECK(bench_auto_layers(1e3, 1u << 30) == 2147484 + 1); /* uncapped: the caller caps */
    CHECK(bench_auto_layers(0.0, 1u << 20) > BENCH_MAX_LAYERS);
    CHECK(bench_auto_layers(1.0, 1u << 30) > BENCH_MAX_LAYERS);

    CHECK(bench_parse_cache_size("32768K\n") == 32u << 20 && bench_parse_cache_size("260M") == 260u << 20);
    CHECK(bench_parse_cache_size("1G") == 1u << 30 && bench_parse_cache_size("4096") == 4096);
    CHECK(bench_parse_cache_size("abc") == 0 && bench_parse_cache_size("12Q") == 0 &&
          bench_parse_cache_size("") == 0);
    const char *src = NULL;
    CHECK(bench_llc_bytes(&src) > 0 && src != NULL);
}

/* The last-level cache from sysfs trees in tests/data: each cache counted once, per the CPUs
 * asked about; the highest level holding data (an Instruction cache above it is not one). */
static void test_llc_sysfs(const char *data)
{
    char two_l3[1024], l2_last[1024], missing[1024];
    snprintf(two_l3, sizeof two_l3, "%s/sysfs-two-l3", data);
    snprintf(l2_last, sizeof l2_last, "%s/sysfs-l2-last", data);
    snprintf(missing, sizeof missing, "%s/no-such-tree", data);
    bench_llc_info info;
    const int all[] = {0, 1, 2, 3}, first[] = {0, 1}, some[] = {1, 2, 4};
    CHECK(bench_llc_sysfs(two_l3, all, 4, &info) == 32u << 20 && info.instances == 2 && info.level == 3);
    CHECK(bench_llc_sysfs(two_l3, first, 2, &info) == 16u << 20 && info.instances == 1 &&
          strcmp(info.shared, "0-1") == 0);
    CHECK(bench_llc_sysfs(two_l3, some, 3, &info) == 32u << 20 && info.instances == 2); /* no cpu4 */
    CHECK(bench_llc_sysfs(l2_last, first, 2, &info) == 2u << 20 && info.instances == 1 && info.level == 2);
    CHECK(bench_llc_sysfs(missing, all, 4, &info) == 0 && info.instances == 0);
    CHECK(bench_llc_sysfs(two_l3, all, 0, NULL) == 0);
}

/* The plan: layer counts per format and the memory guard in each format's bytes. A discrete
 * device's memory is the deterministic bound (the host's depends on the machine). */
static void test_plan(void)
{
    bench_config c;
    bench_plan plan;
    moe_device_info gpu = {
        .struct_size = sizeof gpu, .backend = MOE_BACKEND_VULKAN, .type = MOE_DEVICE_TYPE_DISCRETE_GPU};
    snprintf(gpu.name, sizeof gpu.name, "test GPU");
    /* T = 1, 8 experts of 3 x 64 x 64: f32 reads 2 experts + the router = 100352 bytes a
     * forward, q4_0 2 x 6912 + 2048 = 15872; with a 1 MiB cache: 1 + ceil(2 MiB / that). */
    CHECK(parse(&c, "--d-model", "64", "--d-ff", "64", "--experts", "8", "--top-k", "2", "--tokens", "1",
                "--weights", "f32,q4_0", "--layers", "auto", NULL) == BENCH_PARSE_OK);
    gpu.memory_bytes = 1ull << 40;
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == 0);
    CHECK(plan.n == 2 && plan.f[0].dtype == MOE_DTYPE_F32 && plan.f[1].dtype == MOE_DTYPE_Q4_0);
    CHECK(plan.f[0].auto_layers && fabs(plan.f[0].forward_bytes - 100352.0) < 1e-6 && plan.f[0].layers == 22);
    CHECK(fabs(plan.f[1].forward_bytes - 15872.0) < 1e-6 && plan.f[1].layers == 134 && !plan.f[1].capped[0]);
    CHECK(plan.max_layers == 134 && plan.llc_bytes == 1u << 20);
    CHECK(plan.f[1].layer_bytes == 8.0 * 6912 + 8 * 64 * 4);
    /* A small device caps --layers auto, in each format's own bytes. */
    gpu.memory_bytes = (uint64_t)(40 * plan.f[1].layer_bytes) + (2u << 20); /* ~40 q4_0 layers + scratch */
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == 0);
    CHECK(plan.f[1].layers < 134 && plan.f[1].layers >= 30 && plan.f[1].capped[0] && plan.f[1].wanted == 134);
    CHECK(plan.f[0].layers <= 22 && plan.f[0].layers < plan.f[1].layers);
    /* --layers auto is capped at BENCH_MAX_LAYERS. */
    gpu.memory_bytes = 1ull << 40;
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 30, "test", &plan) == 0);
    CHECK(plan.f[1].layers == BENCH_MAX_LAYERS && plan.f[1].wanted > BENCH_MAX_LAYERS && plan.f[1].capped[0]);
    /* An explicit count that does not fit is refused; a format that fits where float32 would
     * not is run: the guard counts the format's bytes. */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0", NULL) ==
          BENCH_PARSE_OK);
    const moe_layer_desc q4 = bench_make_desc(&c, 1, 1, MOE_DTYPE_Q4_0),
                         f32 = bench_make_desc(&c, 1, 1, MOE_DTYPE_F32);
    gpu.memory_bytes = (uint64_t)(1.5 * bench_all_weight_bytes(&q4)) + (256u << 20);
    CHECK(gpu.memory_bytes < bench_all_weight_bytes(&f32));
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == 0 && plan.f[0].layers == 1);
    fprintf(stderr, "(expected refusals follow)\n");
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0,f32", NULL) ==
          BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == BENCH_EXIT_MEMORY);
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0", "--layers", "2",
                NULL) == BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == BENCH_EXIT_MEMORY);
    /* --interleave keeps both formats' layers at once: two q4_0 layers fit, and the same two
     * beside a q8_0 one fit alone but not together. */
    gpu.memory_bytes = (uint64_t)(2.5 * bench_all_weight_bytes(&q4)) + (256u << 20);
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0,q8_0", "--layers", "2",
                NULL) == BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == BENCH_EXIT_MEMORY); /* q8_0: ~3.8 */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0,q8_0", NULL) ==
          BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == 0); /* one layer each: 1 and 1.9 */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0,q8_0", "--interleave",
                NULL) == BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == BENCH_EXIT_MEMORY); /* 2.9 together */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0", "--layers", "2",
                "--interleave", NULL) == BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == 0);

    /* --interleave and the last-level cache: two runs of one 20 MiB layer each fit 32 MiB alone
     * but not together, which the plan's text says; a run of 40 MiB reads memory either way, runs
     * of 5 and 10 MiB share the cache, and a single run has no one to take turns with. */
    CHECK(parse(&c, "--weights", "q4_0,q4_k", "--layers", "1", "--interleave", NULL) == BENCH_PARSE_OK);
    bench_plan two = {.n = 2, .llc_bytes = 32u << 20};
    two.f[0] = (bench_format_plan){.dtype = MOE_DTYPE_Q4_0, .layers = 1, .layer_bytes = 20.0 * 1048576};
    two.f[1] = (bench_format_plan){.dtype = MOE_DTYPE_Q4_K, .layers = 1, .layer_bytes = 20.0 * 1048576};
    double together = 0.0, largest = 0.0;
    CHECK(bench_plan_interleave_evicts(&two, &together, &largest) == 1 && together == 40.0 * 1048576 &&
          largest == 20.0 * 1048576);
    for (int interleave = 0; interleave < 2; interleave++) {
        c.interleave = interleave;
        FILE *text = tmpfile();
        CHECK(text != NULL);
        if (!text) break;
        bench_print_plan(text, &c, &two);
        char buf[1024];
        rewind(text);
        const size_t got = fread(buf, 1, sizeof buf - 1, text);
        buf[got] = '\0';
        const char *said =
            strstr(buf, "interleave: each run's layers alone fit the 32.0 MiB last-level cache "
                        "(20.0 MiB at most), the 2 runs' together do not (40.0 MiB)");
        CHECK(interleave ? said != NULL : got == 0);
        fclose(text);
    }
    two.f[1].layers = 2; /* 40 MiB: never from the cache */
    CHECK(bench_plan_interleave_evicts(&two, &together, &largest) == 0 && largest == 40.0 * 1048576);
    two.f[0].layer_bytes = two.f[1].layer_bytes = 5.0 * 1048576; /* 5 + 10 MiB together */
    CHECK(bench_plan_interleave_evicts(&two, &together, &largest) == 0 && together == 15.0 * 1048576);
    two.n = 1; /* one run: nothing to take turns with */
    two.f[0].layer_bytes = 20.0 * 1048576;
    CHECK(bench_plan_interleave_evicts(&two, &together, &largest) == 0);

    /* After the first layer: a backend that stores more than the format's bytes caps auto and
     * refuses an explicit count that no longer fits. */
    bench_format_plan f = {
        .dtype = MOE_DTYPE_Q4_0, .layers = 100, .auto_layers = 1, .wanted = 100, .layer_bytes = 1e9};
    gpu.memory_bytes = 20ull << 30;
    CHECK(bench_plan_refit(&c, &gpu, 1e9, &f) == 0 && f.layers == 100); /* as planned */
    CHECK(bench_plan_refit(&c, &gpu, 4e9, &f) == 0 && f.layers == 5 && f.capped[0]);
    f = (bench_format_plan){.dtype = MOE_DTYPE_Q4_0, .layers = 100, .layer_bytes = 1e9};
    CHECK(bench_plan_refit(&c, &gpu, 4e9, &f) == BENCH_EXIT_MEMORY);
    /* With experts on the CPU the target holds only the rest: its share is what is checked. */
    f = (bench_format_plan){
        .dtype = MOE_DTYPE_Q4_0, .layers = 100, .layer_bytes = 1e9, .expert_bytes = 1e8, .cpu_experts = 5};
    CHECK(bench_plan_refit(&c, &gpu, 0.5e9, &f) == 0 && f.layers == 100);

    /* --cpu-experts: the experts on the CPU leave the device, so a layer too big for it fits. */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0", "--cpu-experts", "0,4",
                NULL) == BENCH_PARSE_OK);
    gpu.memory_bytes = (uint64_t)(0.75 * bench_all_weight_bytes(&q4));
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == BENCH_EXIT_MEMORY); /* the 0 */
    CHECK(parse(&c, "--preset", "mixtral-8x7b", "--tokens", "1", "--weights", "q4_0", "--cpu-experts", "4",
                NULL) == BENCH_PARSE_OK);
    CHECK(bench_plan_make(&c, &gpu, 1, 1u << 20, "test", &plan) == 0 && plan.f[0].cpu_experts == 4);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_bench_argparse <bench/tests/data directory>\n");
        return 2;
    }
    test_parser();
    test_config();
    test_formats_and_layers();
    test_cache();
    test_trace_flags();
    test_arithmetic();
    test_plan();
    test_llc_sysfs(argv[1]);
    if (failures) {
        fprintf(stderr, "test_bench_argparse: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_bench_argparse: all checks passed\n");
    return 0;
}
