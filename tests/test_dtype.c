/*
 * test_dtype.c — the weight formats of moe.h against an independent implementation, and what a
 * layer stores, on the backend named in argv[1].
 *
 *  - moe_convert_row from float32 gives, byte for byte, what ggml's reference quantizers give
 *    (fixtures made by the `gguf` Python package: tests/data/gguf-quants/make_fixtures.py),
 *    and decoding gives the package's dequantised values exactly (K-quants: decoding only, the
 *    package has no K-quant quantizer; make_kquant_fixtures.py); edge rows cover zero blocks,
 *    the rounding rules' ties, negative extremes, tiny, huge and overflowing scales, fp16 limits;
 *  - names, block sizes and row sizes; conversion between every pair of formats is decoding
 *    then encoding; bad arguments are refused with dst untouched;
 *  - layer creation refuses a block format on rows that are not whole blocks, and unknown
 *    dtypes, naming the field; the arena holds each format at its own size (Q4_0 at most 0.16×
 *    float32's bytes, F16/BF16 about half), so no backend keeps a float copy;
 *  - a BF16 checkpoint's experts are stored as BF16 by default.
 * Usage: test_dtype <backend> <tests/data/gguf-quants>
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const moe_dtype all[] = {MOE_DTYPE_F32,   MOE_DTYPE_F16,  MOE_DTYPE_BF16, MOE_DTYPE_Q8_0,
                                MOE_DTYPE_Q4_0,  MOE_DTYPE_Q4_K, MOE_DTYPE_Q5_K, MOE_DTYPE_Q6_K,
                                MOE_DTYPE_MXFP4, MOE_DTYPE_Q3_K, MOE_DTYPE_Q2_K};
#define N_ALL (sizeof all / sizeof all[0])

static void *read_file(const char *dir, const char *name, size_t want)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    void *p = malloc(want ? want : 1);
    size_t got = f && p ? fread(p, 1, want, f) : 0;
    const bool extra = f && fgetc(f) != EOF;
    if (f) fclose(f);
    CHECK(got == want && !extra, "%s: %zu bytes read, %zu expected", path, got, want);
    return p;
}

static void names_and_sizes(void)
{
    /* takes: moe.h's activation opt-ins for the format (moe_dtype_takes_activations), "i" integer
     * (Q8_0), "b" bfloat16 pairs (BF16). */
    static const struct {
        moe_dtype dt;
        const char *name;
        int64_t block;
        size_t bytes_256;
        const char *takes;
    } want[] = {{MOE_DTYPE_F32, "f32", 1, 1024, ""},         {MOE_DTYPE_F16, "f16", 1, 512, ""},
                {MOE_DTYPE_BF16, "bf16", 1, 512, ""},        {MOE_DTYPE_Q8_0, "q8_0", 32, 8 * 34, "i"},
                {MOE_DTYPE_Q4_0, "q4_0", 32, 8 * 18, "ib"},  {MOE_DTYPE_Q4_K, "q4_k", 256, 144, "ib"},
                {MOE_DTYPE_Q5_K, "q5_k", 256, 176, "i"},     {MOE_DTYPE_Q6_K, "q6_k", 256, 210, "i"},
                {MOE_DTYPE_MXFP4, "mxfp4", 32, 8 * 17, "b"}, {MOE_DTYPE_Q3_K, "q3_k", 256, 110, "i"},
                {MOE_DTYPE_Q2_K, "q2_k", 256, 84, "i"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK(!strcmp(moe_dtype_name(want[i].dt), want[i].name), "name of %d is %s", (int)want[i].dt,
              moe_dtype_name(want[i].dt));
        moe_dtype dt = MOE_DTYPE_DEFAULT;
        CHECK_STATUS(moe_dtype_from_name(want[i].name, &dt), MOE_OK);
        CHECK(dt == want[i].dt, "from_name(%s) = %d", want[i].name, (int)dt);
        char upper[16];
        snprintf(upper, sizeof upper, "%s", want[i].name);
        for (char *c = upper; *c; c++)
            if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
        dt = MOE_DTYPE_DEFAULT;
        CHECK_STATUS(moe_dtype_from_name(upper, &dt), MOE_OK);
        CHECK(dt == want[i].dt, "from_name(%s) = %d", upper, (int)dt);
        CHECK(moe_dtype_block_size(want[i].dt) == want[i].block, "block size of %s", want[i].name);
        CHECK(moe_dtype_row_bytes(want[i].dt, 256) == want[i].bytes_256, "row bytes of %s: %zu", want[i].name,
              moe_dtype_row_bytes(want[i].dt, 256));
        CHECK(moe_dtype_row_bytes(want[i].dt, 0) == 0 && moe_dtype_row_bytes(want[i].dt, -32) == 0,
              "row bytes of %s for n <= 0", want[i].name);
        CHECK(moe_dtype_takes_activations(want[i].dt, MOE_DTYPE_F32) == 1 &&
                  moe_dtype_takes_activations(want[i].dt, MOE_DTYPE_DEFAULT) == 1 &&
                  moe_dtype_takes_activations(want[i].dt, MOE_DTYPE_Q8_0) ==
                      (strchr(want[i].takes, 'i') != NULL) &&
                  moe_dtype_takes_activations(want[i].dt, MOE_DTYPE_BF16) ==
                      (strchr(want[i].takes, 'b') != NULL) &&
                  moe_dtype_takes_activations(want[i].dt, MOE_DTYPE_F16) == 0 &&
                  moe_dtype_takes_activations(want[i].dt, (moe_dtype)99) == 0,
              "the activations %s takes", want[i].name);
    }
    CHECK(moe_dtype_takes_activations(MOE_DTYPE_DEFAULT, MOE_DTYPE_F32) == 0 &&
              moe_dtype_takes_activations((moe_dtype)99, MOE_DTYPE_F32) == 0 &&
              moe_dtype_takes_activations((moe_dtype)-1, MOE_DTYPE_Q8_0) == 0,
          "no activations for what is not a format");
    CHECK(moe_dtype_row_bytes(MOE_DTYPE_Q4_0, 48) == 0 && moe_dtype_row_bytes(MOE_DTYPE_Q8_0, 33) == 0 &&
              moe_dtype_row_bytes(MOE_DTYPE_MXFP4, 40) == 0 && moe_dtype_row_bytes(MOE_DTYPE_MXFP4, 96) == 51,
          "a block format's row that is not whole blocks has no size");
    CHECK(moe_dtype_row_bytes(MOE_DTYPE_Q4_K, 128) == 0 && moe_dtype_row_bytes(MOE_DTYPE_Q6_K, 288) == 0 &&
              moe_dtype_row_bytes(MOE_DTYPE_Q5_K, 512) == 352 &&
              moe_dtype_row_bytes(MOE_DTYPE_Q3_K, 384) == 0 &&
              moe_dtype_row_bytes(MOE_DTYPE_Q3_K, 768) == 330 &&
              moe_dtype_row_bytes(MOE_DTYPE_Q2_K, 384) == 0 &&
              moe_dtype_row_bytes(MOE_DTYPE_Q2_K, 512) == 168,
          "a K-quant row is whole super-blocks of 256");
    CHECK(moe_dtype_row_bytes(MOE_DTYPE_F16, 33) == 66, "f16 rows of any length");
    CHECK(moe_dtype_row_bytes(MOE_DTYPE_F32, INT64_MAX) == 0 || sizeof(size_t) > 8,
          "an overflowing row size is 0"); /* 2^63 floats overflow a 64-bit size_t */
    CHECK(!strcmp(moe_dtype_name(MOE_DTYPE_DEFAULT), "default"), "DEFAULT's name");
    CHECK(moe_dtype_name((moe_dtype)99) == NULL && moe_dtype_block_size((moe_dtype)99) == 0 &&
              moe_dtype_row_bytes((moe_dtype)99, 32) == 0 && moe_dtype_row_bytes(MOE_DTYPE_DEFAULT, 32) == 0,
          "an unknown dtype has no name or size");
    const char *bad[] = {"", "q4", "q4_1", "fp32", "float", "f32 ", "bf16x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moe_dtype dt = MOE_DTYPE_Q4_0;
        CHECK_STATUS(moe_dtype_from_name(bad[i], &dt), MOE_ERROR_INVALID_ARGUMENT);
        CHECK(dt == MOE_DTYPE_Q4_0, "from_name('%s') wrote its output", bad[i]);
        CHECK(strstr(moe_last_error(), "q4_0") != NULL && strstr(moe_last_error(), "q2_k") != NULL,
              "the message lists the formats: %s", moe_last_error());
    }
    CHECK_STATUS(moe_dtype_from_name(NULL, NULL), MOE_ERROR_NULL_POINTER);
    for (uint32_t bit = 1; bit != 0; bit <<= 1) {
        const char *n = moe_feature_name((moe_feature)bit);
        CHECK((bit <= MOE_FEATURE_SUBGROUP_REDUCE) == (n != NULL), "feature bit %#x named %s", bit,
              n ? n : "(null)");
    }
}

/* A fixture set's "ROWS COLS" line (COLS whole blocks of `block`); false, and a failed check,
 * if the file is missing or says otherwise. */
static bool read_meta(const char *dir, const char *name, long block, long *rows, long *cols)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    *rows = *cols = 0;
    const bool ok =
        f && fscanf(f, "%ld %ld", rows, cols) == 2 && *rows > 0 && *cols > 0 && *cols % block == 0;
    CHECK(ok, "%s", path);
    if (f) fclose(f);
    return ok;
}

/* n floats bit for bit (so -0 != +0), except that any NaN equals any NaN: the sign of a NaN that
 * arithmetic makes (0 * inf) is the CPU's (x86's default NaN is negative, aarch64's positive). */
static bool same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(isnan(a[i]) && isnan(b[i]))) return false;
    return true;
}

/* Every row of the fixtures through moe_convert_row, both ways, against the gguf package. */
static void against_gguf(const char *dir)
{
    long rows, cols;
    if (!read_meta(dir, "meta.txt", 32, &rows, &cols)) return;
    const size_t n = (size_t)rows * (size_t)cols;
    float *x = read_file(dir, "rows.f32", n * sizeof(float));
    static const char *names[] = {"f16", "bf16", "q8_0", "q4_0", "mxfp4"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        moe_dtype dt;
        CHECK_STATUS(moe_dtype_from_name(names[i], &dt), MOE_OK);
        const size_t rb = moe_dtype_row_bytes(dt, cols);
        char file[64];
        snprintf(file, sizeof file, "%s.bin", names[i]);
        unsigned char *want = read_file(dir, file, rb * (size_t)rows);
        snprintf(file, sizeof file, "%s.deq.f32", names[i]);
        float *want_deq = read_file(dir, file, n * sizeof(float));
        unsigned char *got = malloc(rb);
        float *deq = malloc(sizeof(float) * (size_t)cols);
        int bad_rows = 0, bad_deq = 0;
        for (long r = 0; r < rows; r++) {
            CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x + r * cols, dt, got, cols), MOE_OK);
            if (memcmp(got, want + (size_t)r * rb, rb) != 0) {
                if (bad_rows++ < 3) {
                    size_t b = 0;
                    while (got[b] == want[(size_t)r * rb + b]) b++;
                    fprintf(stderr, "  %s row %ld: first differing byte %zu: 0x%02x, gguf 0x%02x\n", names[i],
                            r, b, got[b], want[(size_t)r * rb + b]);
                }
            }
            CHECK_STATUS(moe_convert_row(dt, want + (size_t)r * rb, MOE_DTYPE_F32, deq, cols), MOE_OK);
            /* -0 != +0 (from the overflowing-scale row); NaN == NaN. */
            if (!same_floats(deq, want_deq + r * cols, (size_t)cols)) bad_deq++;
        }
        CHECK(bad_rows == 0, "%s: %d of %ld rows differ from ggml's quantizer (gguf package)", names[i],
              bad_rows, rows);
        CHECK(bad_deq == 0, "%s: %d of %ld rows decode to other values than the gguf package's", names[i],
              bad_deq, rows);
        printf("  %-5s %ld rows of %ld: bytes and decoded values as the gguf package's\n", names[i], rows,
               cols);
        free(want);
        free(want_deq);
        free(got);
        free(deq);
    }
    free(x);
}

/* The K-quants against the gguf package's dequantisation (tests/data/gguf-quants/
 * make_kquant_fixtures.py: random super-blocks with sane scales, and edge blocks — zero and
 * negative scales, fp16 subnormals, the largest 6-bit (Q2_K: 4-bit) scales and quants). The package
 * has no K-quant quantizer, so only decoding has an oracle; moe's own quantizer is held to a bound
 * (q3k_fit_bound, q2k_fit_bound). */
static void against_gguf_kquants(const char *dir)
{
    long rows, cols;
    if (!read_meta(dir, "kquants.txt", 256, &rows, &cols)) return;
    static const char *names[] = {"q4_k", "q5_k", "q6_k", "q3_k", "q2_k"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        moe_dtype dt;
        CHECK_STATUS(moe_dtype_from_name(names[i], &dt), MOE_OK);
        const size_t rb = moe_dtype_row_bytes(dt, cols), n = (size_t)rows * (size_t)cols;
        char file[64];
        snprintf(file, sizeof file, "%s.bin", names[i]);
        unsigned char *bytes = read_file(dir, file, rb * (size_t)rows);
        snprintf(file, sizeof file, "%s.deq.f32", names[i]);
        float *want = read_file(dir, file, n * sizeof(float));
        float *deq = malloc(sizeof(float) * (size_t)cols);
        int bad = 0;
        for (long r = 0; r < rows && bytes && want && deq; r++) {
            CHECK_STATUS(moe_convert_row(dt, bytes + (size_t)r * rb, MOE_DTYPE_F32, deq, cols), MOE_OK);
            /* Bitwise: the package's −0 (a negative d·sc times q − 32 = 0; Q2_K: (−0)·q − 0) included. */
            if (memcmp(deq, want + r * cols, sizeof(float) * (size_t)cols) != 0 && bad++ < 3) {
                long c = 0;
                while (!memcmp(&deq[c], &want[r * cols + c], sizeof(float))) c++;
                fprintf(stderr, "  %s row %ld: value %ld is %.9g, gguf %.9g\n", names[i], r, c, deq[c],
                        want[r * cols + c]);
            }
        }
        CHECK(bad == 0, "%s: %d of %ld rows decode to other values than the gguf package's", names[i], bad,
              rows);
        printf("  %-5s %ld rows of %ld: decoded values as the gguf package's\n", names[i], rows, cols);
        free(bytes);
        free(want);
        free(deq);
    }
}

/* Any pair of formats: decoding the source then encoding the result, for random rows. */
static void pairs_and_errors(h_rng *r)
{
    const int64_t n = 512; /* two K-quant super-blocks */
    float x[512], a[512], b[512];
    unsigned char src[512 * 4], dst[512 * 4], via[512 * 4];
    for (int i = 0; i < n; i++) x[i] = h_sym(r, 2.0f);
    for (size_t i = 0; i < N_ALL; i++)
        for (size_t j = 0; j < N_ALL; j++) {
            CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, all[i], src, n), MOE_OK);
            CHECK_STATUS(moe_convert_row(all[i], src, all[j], dst, n), MOE_OK);
            CHECK_STATUS(moe_convert_row(all[i], src, MOE_DTYPE_F32, a, n), MOE_OK);
            CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, a, all[j], via, n), MOE_OK);
            CHECK(!memcmp(dst, via, moe_dtype_row_bytes(all[j], n)), "%s -> %s is not decode then encode",
                  moe_dtype_name(all[i]), moe_dtype_name(all[j]));
            CHECK_STATUS(moe_convert_row(all[j], dst, MOE_DTYPE_F32, b, n), MOE_OK);
            if (i == j) CHECK(!memcmp(src, dst, moe_dtype_row_bytes(all[i], n)), "same-format copy");
        }
    /* The worst relative error of one row per format: a loose sanity bound on the rounding (the
     * K-quants' one-pass fit, kquants.c: Q4_K ~0.09, Q5_K ~0.045, Q6_K ~0.02 on these rows; Q3_K 0.134
     * with a standard deviation of 0.0035 over 300 seeds, at most 0.143, its bound value by value in
     * q3k_fit_bound; Q2_K, 4 codes a sub-block of 16, 0.283 with a standard deviation of 0.006 over
     * 300 seeds, at most 0.297, value by value in q2k_fit_bound; MXFP4, 3 steps an octave, ~0.1). */
    const double bound[] = {0.0, 1e-3, 8e-3, 1.5e-2, 0.2, 0.15, 0.08, 0.04, 0.2, 0.16, 0.32};
    for (size_t i = 0; i < N_ALL; i++) {
        CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, all[i], src, n), MOE_OK);
        CHECK_STATUS(moe_convert_row(all[i], src, MOE_DTYPE_F32, a, n), MOE_OK);
        const double err = h_rel_l2(a, x, (size_t)n);
        CHECK(err <= bound[i], "%s round trip: relative L2 error %.3g > %.3g", moe_dtype_name(all[i]), err,
              bound[i]);
    }

    memset(dst, 0xab, sizeof dst);
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_Q4_0, dst, 48), MOE_ERROR_INVALID_SIZE);
    CHECK(strstr(moe_last_error(), "q4_0") && strstr(moe_last_error(), "32"), "message: %s",
          moe_last_error());
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q8_0, src, MOE_DTYPE_F32, dst, 33), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_F16, dst, 0), MOE_ERROR_INVALID_SIZE);
    /* 32 values are a whole Q4_0 block but not a Q4_K super-block, either way round. */
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q4_0, src, MOE_DTYPE_Q4_K, dst, 32), MOE_ERROR_INVALID_SIZE);
    CHECK(strstr(moe_last_error(), "q4_k") && strstr(moe_last_error(), "256"), "message: %s",
          moe_last_error());
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q6_K, src, MOE_DTYPE_Q8_0, dst, 288), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_Q3_K, dst, 128), MOE_ERROR_INVALID_SIZE);
    CHECK(strstr(moe_last_error(), "q3_k") && strstr(moe_last_error(), "256"), "message: %s",
          moe_last_error());
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q3_K, src, MOE_DTYPE_F32, dst, 288), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_Q2_K, dst, 128), MOE_ERROR_INVALID_SIZE);
    CHECK(strstr(moe_last_error(), "q2_k") && strstr(moe_last_error(), "256"), "message: %s",
          moe_last_error());
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q2_K, src, MOE_DTYPE_Q3_K, dst, 288), MOE_ERROR_INVALID_SIZE);
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_DEFAULT, dst, 32), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_convert_row((moe_dtype)99, x, MOE_DTYPE_F16, dst, 32), MOE_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, NULL, MOE_DTYPE_F16, dst, 32), MOE_ERROR_NULL_POINTER);
    bool untouched = true;
    for (size_t i = 0; i < sizeof dst; i++) untouched = untouched && dst[i] == 0xab;
    CHECK(untouched, "a refused conversion wrote to dst");
}

/* Q3_K's one-pass fit (kquants.c), value by value, against the bound its arithmetic gives. Sub-block j
 * (16 values) takes s_j = m_j / -4, m_j its value of largest magnitude (which maps to q - 4 = -4). The
 * scales are stored as t_j = d (sc_j - 32), d = -M/32 in fp16 (M the s_j of largest magnitude: |M| = A/4,
 * A the super-block's largest |x|) and sc_j - 32 = round(-32 s_j / M) clamped to -32..31; so t_j is s_j
 * within e_j = |M|/32 (u + 32.5 * 2^-11): u half a unit of sc, or 1 where -32 s_j / M passes 31.5 and is
 * clamped to 31 (a sub-block of the other sign within 1.6% of the largest), and d's fp16 rounding. A
 * value then rounds to the nearest of t_j * (-4..3):
 *  - of m_j's sign: half a step, |t_j|/2 <= |m_j|/8 + e_j/2, or clamped at -4 where t_j came out
 *    small, |x| - 4 |t_j| <= 4 e_j;
 *  - of the other sign the codes stop at +3, so a value near -m_j is clamped a whole step off:
 *    |x| - 3 |t_j| <= |m_j|/4 + 3 e_j.
 * (A sub-block whose sc_j - 32 rounds to 0, |m_j| < A/64, decodes to zeros: within both.) ggml's
 * make_q3_quants refines this starting point by least squares; the bound is the plain fit's. Rows:
 * uniform values, and sub-blocks scaled by 10^-3..1 (small sc_j, zero ones, the scales' rounding). */
static void q3k_fit_bound(h_rng *r)
{
    enum { N = 512, ROWS = 24 };
    float x[N], y[N];
    unsigned char q[2 * 110];
    double worst[2] = {0, 0}; /* the largest error / bound, of m_j's sign and of the other */
    int bad = 0;
    for (int row = 0; row < ROWS; row++) {
        for (int i = 0; i < N; i++) x[i] = h_sym(r, 2.0f);
        if (row % 2)
            for (int j = 0; j < N / 16; j++) {
                const float scale = powf(10.0f, -3.0f * (0.5f + 0.5f * h_sym(r, 1.0f)));
                for (int i = 16 * j; i < 16 * j + 16; i++) x[i] *= scale;
            }
        CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_Q3_K, q, N), MOE_OK);
        CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q3_K, q, MOE_DTYPE_F32, y, N), MOE_OK);
        for (int sb = 0; sb < N / 256; sb++) {
            /* (as a comparison: gcc 12 for aarch64 fails with an internal error vectorising an fmax
             * reduction here) */
            float A = 0;
            for (int i = 256 * sb; i < 256 * sb + 256; i++)
                if (fabsf(x[i]) > A) A = fabsf(x[i]);
            for (int j = 16 * sb; j < 16 * sb + 16; j++) {
                float m = 0;
                for (int i = 16 * j; i < 16 * j + 16; i++)
                    if (fabsf(x[i]) > fabsf(m)) m = x[i];
                const double am = fabs((double)m);
                const double e = A / 4 / 32 * ((am > 31.5 / 32 * A ? 1.0 : 0.5) + 32.5 / 2048);
                for (int i = 16 * j; i < 16 * j + 16; i++) {
                    const int other = (x[i] < 0) != (m < 0);
                    const double err = fabs((double)x[i] - (double)y[i]);
                    /* 1e-6 A: the encoder's float arithmetic (x / t_j, d's product) */
                    const double b = (other ? am / 4 + 3 * e : fmax(am / 8 + e / 2, 4 * e)) + 1e-6 * A;
                    worst[other] = fmax(worst[other], err / b);
                    if (err > b && bad++ < 3)
                        fprintf(stderr, "  q3_k row %d value %d: %.9g decodes to %.9g, off by %.3g > %.3g\n",
                                row, i, x[i], y[i], err, b);
                }
            }
        }
    }
    CHECK(bad == 0, "q3_k: %d values off by more than the one-pass fit allows", bad);
    printf(
        "  q3_k  one-pass fit: worst error %.3f of the bound for values of the sub-block's largest's sign, "
        "%.3f for the other sign\n",
        worst[0], worst[1]);
}

/* Q2_K's one-pass fit (kquants.c, min_fit), value by value, against the bound its arithmetic gives.
 * Sub-block j (16 values) spans [lo_j, hi_j] with lo_j = min(x, 0) and takes the scale s_j = (hi_j -
 * lo_j) / 3 and min mu_j = -lo_j, so that its values are s_j q - mu_j for real q in 0..3. Against the
 * super-block's largest, S and M, they are stored as dl_j = d sc_j and ml_j = dmin m_j: d = S/15 and
 * dmin = M/15 in fp16 (each within half an fp16 ulp, e_d and e_m), sc_j = round(15 s_j / S) and m_j =
 * round(15 mu_j / M), 4 bits each (0..15: no clamping). So dl_j is s_j within E_s = S/30 + 15 e_d
 * (half a unit of sc_j, and d's rounding times sc_j <= 15), ml_j is mu_j within E_m = M/30 + 15 e_m,
 * neither below 0. A value decodes to the code nearest p = x + ml_j of 0, dl_j, 2 dl_j, 3 dl_j (q
 * rounded, then clamped to 0..3; all 0 where sc_j rounds to 0), less ml_j: its error is that distance,
 * which with dl_j and ml_j anywhere in those intervals is at most the smaller of
 *  - half a step, (s_j + E_s) / 2, where p falls between two codes; where it falls past the last, the
 *    clamp's excess: x - (3 dl_j - ml_j) <= (x - hi_j) + 3 E_s + E_m, or -ml_j - x <= (lo_j - x) + E_m;
 *  - for the best code k, the largest |p - k dl_j| at the intervals' corners (convex in p and dl_j):
 *    a value near a code (the sub-block's ends among them) lands within about E_m + k E_s of it.
 * ggml's quantize_row_q2_K_ref searches each scale and min (make_qkx2_quants, weighted by |x|); the
 * bound is the plain fit's. Rows: uniform values; sub-blocks scaled by 10^-3..1 (small and zero sc_j,
 * the 4-bit rounding); all positive (no min: dmin = 0); all negative (every range ends below 0). */
static void q2k_fit_bound(h_rng *r)
{
    enum { N = 512, ROWS = 32 };
    float x[N], y[N];
    unsigned char q[2 * 84];
    /* The largest error / bound, where half a step bounds it and where a code's distance does (1 is
     * reached there: a value that rounds to code 0 of a sub-block whose min is 0 is exactly that far). */
    double worst[2] = {0, 0};
    int bad = 0;
    for (int row = 0; row < ROWS; row++) {
        for (int i = 0; i < N; i++) {
            x[i] = h_sym(r, 2.0f);
            if (row % 4 >= 2) x[i] = row % 4 == 2 ? fabsf(x[i]) : -fabsf(x[i]);
        }
        if (row % 4 == 1)
            for (int j = 0; j < N / 16; j++) {
                const float scale = powf(10.0f, -3.0f * (0.5f + 0.5f * h_sym(r, 1.0f)));
                for (int i = 16 * j; i < 16 * j + 16; i++) x[i] *= scale;
            }
        CHECK_STATUS(moe_convert_row(MOE_DTYPE_F32, x, MOE_DTYPE_Q2_K, q, N), MOE_OK);
        CHECK_STATUS(moe_convert_row(MOE_DTYPE_Q2_K, q, MOE_DTYPE_F32, y, N), MOE_OK);
        for (int sb = 0; sb < N / 256; sb++) {
            /* (reductions as comparisons, as in q3k_fit_bound) */
            double lo[16], hi[16], S = 0, M = 0, A = 0;
            for (int j = 0; j < 16; j++) {
                lo[j] = 0, hi[j] = -INFINITY;
                for (int i = 256 * sb + 16 * j; i < 256 * sb + 16 * j + 16; i++) {
                    if (x[i] < lo[j]) lo[j] = x[i];
                    if (x[i] > hi[j]) hi[j] = x[i];
                    if (fabsf(x[i]) > A) A = fabsf(x[i]);
                }
                if ((hi[j] - lo[j]) / 3 > S) S = (hi[j] - lo[j]) / 3;
                if (-lo[j] > M) M = -lo[j];
            }
            /* half an fp16 ulp: 2^-11 of a normal value, 2^-25 below 2^-14 */
            const double Es = S / 30 + 15 * fmax(S / 15 / 2048, 0x1p-25),
                         Em = M / 30 + 15 * fmax(M / 15 / 2048, 0x1p-25);
            for (int j = 0; j < 16; j++) {
                const double s = (hi[j] - lo[j]) / 3, step = (s + Es) / 2;
                const double dl[2] = {fmax(s - Es, 0), s + Es};
                for (int i = 256 * sb + 16 * j; i < 256 * sb + 16 * j + 16; i++) {
                    const double p[2] = {x[i] - lo[j] - fmin(Em, -lo[j]), x[i] - lo[j] + Em};
                    const double clamped =
                        fmax((double)x[i] - hi[j] + 3 * Es + Em, lo[j] - (double)x[i] + Em);
                    double code = INFINITY;
                    for (int k = 0; k < 4; k++) {
                        double far = 0;
                        for (int c = 0; c < 4; c++) {
                            const double dist = fabs(p[c / 2] - k * dl[c % 2]);
                            if (dist > far) far = dist;
                        }
                        if (far < code) code = far;
                    }
                    const double err = fabs((double)x[i] - (double)y[i]), plain = fmax(step, clamped);
                    /* 1e-6 A: the encoder's float arithmetic ((x + ml_j) / dl_j, the products) */
                    const double b = fmin(plain, code) + 1e-6 * A;
                    worst[code < plain] = fmax(worst[code < plain], err / b);
                    if (err > b && bad++ < 3)
                        fprintf(stderr, "  q2_k row %d value %d: %.9g decodes to %.9g, off by %.3g > %.3g\n",
                                row, i, x[i], y[i], err, b);
                }
            }
        }
    }
    CHECK(bad == 0, "q2_k: %d values off by more than the one-pass fit allows", bad);
    printf("  q2_k  one-pass fit: worst error %.3f of the bound where half a step bounds it, %.3f where "
           "the distance to a code does\n",
           worst[0], worst[1]);
}

/* Layer creation: block formats on rows that are not whole blocks, unknown dtypes. */
static void layer_errors(moe_context *ctx, h_rng *r)
{
    const moe_layer_desc base = {.struct_size = sizeof base,
                                 .d_model = 64,
                                 .d_ff = 48, /* not whole blocks */
                                 .n_experts = 4,
                                 .top_k = 2,
                                 .max_tokens = 4,
                                 .d_ff_shared = 40};
    h_layer hl;
    h_layer_init(&hl, &base, r, 1.0f);
    const struct {
        moe_dtype storage, shared_storage, given;
        moe_status want;
        const char *words[3];
        moe_dtype down; /* down_weight_dtype (DEFAULT: weight_dtype's) */
    } cases[] = {
        {MOE_DTYPE_Q4_0,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"weight_dtype", "q4_0", "d_ff = 48"},
         MOE_DTYPE_DEFAULT},
        {MOE_DTYPE_F16,
         MOE_DTYPE_Q8_0,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"shared_weight_dtype", "q8_0", "d_ff_shared = 40"},
         MOE_DTYPE_DEFAULT},
        {(moe_dtype)99,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_ARGUMENT,
         {"weight_dtype", "99", ""},
         MOE_DTYPE_DEFAULT},
        {MOE_DTYPE_F16,
         MOE_DTYPE_F16,
         (moe_dtype)-1,
         MOE_ERROR_INVALID_ARGUMENT,
         {"weights.dtype", "-1", ""},
         MOE_DTYPE_DEFAULT},
        {MOE_DTYPE_DEFAULT,
         MOE_DTYPE_F16,
         MOE_DTYPE_Q8_0,
         MOE_ERROR_INVALID_SIZE,
         {"weights.dtype", "q8_0", "d_ff = 48"},
         MOE_DTYPE_DEFAULT},
        /* Per projection: a block down needs d_ff in whole blocks, a block gate/up only d_model. */
        {MOE_DTYPE_F16,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"down_weight_dtype", "q8_0", "d_ff = 48"},
         MOE_DTYPE_Q8_0},
        {MOE_DTYPE_Q4_0, MOE_DTYPE_F16, MOE_DTYPE_F32, MOE_OK, {"", "", ""}, MOE_DTYPE_F16},
        {MOE_DTYPE_F16,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"down_weight_dtype", "mxfp4", "d_ff = 48"},
         MOE_DTYPE_MXFP4},
        /* K-quants: d_model = 64 is whole Q4_0 blocks but not a super-block of 256. */
        {MOE_DTYPE_Q4_K,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"weight_dtype", "q4_k", "d_model = 64"},
         MOE_DTYPE_F16},
        {MOE_DTYPE_F16,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"down_weight_dtype", "q6_k", "256"},
         MOE_DTYPE_Q6_K},
        {MOE_DTYPE_Q3_K,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"weight_dtype", "q3_k", "d_model = 64"},
         MOE_DTYPE_F16},
        {MOE_DTYPE_F16,
         MOE_DTYPE_F16,
         MOE_DTYPE_F32,
         MOE_ERROR_INVALID_SIZE,
         {"down_weight_dtype", "q2_k", "256"},
         MOE_DTYPE_Q2_K},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_layer_desc d = hl.desc;
        d.weight_dtype = cases[i].storage;
        d.shared_weight_dtype = cases[i].shared_storage;
        d.down_weight_dtype = cases[i].down;
        moe_layer_weights w = hl.w;
        w.dtype = cases[i].given;
        moe_layer *layer = (moe_layer *)&hl; /* must stay as it is */
        CHECK_STATUS(moe_layer_create(ctx, &d, &w, &layer), cases[i].want);
        if (cases[i].want == MOE_OK) { /* (test_forward's down_format runs such layers) */
            moe_layer_destroy(layer);
            continue;
        }
        CHECK(layer == (moe_layer *)&hl, "case %zu: out_layer written on failure", i);
        for (int k = 0; k < 3; k++)
            CHECK(strstr(moe_context_error(ctx), cases[i].words[k]) != NULL,
                  "case %zu: message lacks '%s': %s", i, cases[i].words[k], moe_context_error(ctx));
        float y[64], x[64] = {0};
        CHECK_STATUS(moe_reference_forward(&d, &w, 1, x, y, NULL), cases[i].want);
    }
    h_layer_free(&hl);
}

/* The arena holds each format at its own size. */
static void storage_sizes(moe_context *ctx, h_rng *r)
{
    const moe_layer_desc base = {
        .struct_size = sizeof base, .d_model = 256, .d_ff = 256, .n_experts = 8, .top_k = 2, .max_tokens = 8};
    h_layer hl;
    h_layer_init(&hl, &base, r, 1.0f);
    size_t bytes[N_ALL] = {0};
    for (size_t i = 0; i < N_ALL; i++) {
        moe_layer_desc d = hl.desc;
        d.weight_dtype = all[i];
        moe_arena_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
        CHECK_STATUS(moe_context_get_arena_stats(ctx, &before), MOE_OK);
        moe_layer *layer = NULL;
        CHECK_STATUS(moe_layer_create(ctx, &d, &hl.w, &layer), MOE_OK);
        CHECK_STATUS(moe_context_get_arena_stats(ctx, &after), MOE_OK);
        bytes[i] = after.weights_bytes - before.weights_bytes;
        moe_layer_destroy(layer);
    }
    /* The router (float32) is in every layer: compare the experts' share. */
    const size_t router = sizeof(float) * 8 * 256;
    const double f32 = (double)(bytes[0] - router);
    for (size_t i = 1; i < N_ALL; i++) {
        const double ratio = (double)(bytes[i] - router) / f32;
        const double ideal =
            (double)moe_dtype_row_bytes(all[i], 256) / (double)moe_dtype_row_bytes(MOE_DTYPE_F32, 256);
        printf("  %-5s weights %8zu bytes, %.4f x f32's (the format's own size: %.4f)\n",
               moe_dtype_name(all[i]), bytes[i], ratio, ideal);
        CHECK(ratio <= ideal * 1.05 + 0.005,
              "%s: the layer keeps %.3f x float32's bytes; the format is %.3f x", moe_dtype_name(all[i]),
              ratio, ideal);
    }
    h_layer_free(&hl);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_dtype <backend> <tests/data/gguf-quants>\n");
        return 2;
    }
    moe_backend_kind kind;
    moe_context *ctx = h_open(argc, argv, &kind);
    h_rng r = h_rng_seeded("test_dtype");
    names_and_sizes();
    against_gguf(argv[2]);
    against_gguf_kquants(argv[2]);
    pairs_and_errors(&r);
    q3k_fit_bound(&r);
    q2k_fit_bound(&r);
    layer_errors(ctx, &r);
    storage_sizes(ctx, &r);
    moe_context_destroy(ctx);
    return h_finish("test_dtype");
}
