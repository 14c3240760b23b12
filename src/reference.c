/*
 * reference.c — the scalar reference forward: the oracle every backend is tested against.
 *
 * Written for clarity, not speed: every sum accumulated in double, one product at a time. It
 * shares no arithmetic with any backend (only the config validation), so a bug in an optimised
 * kernel cannot hide by being repeated here. Each expert's rows are decoded once per pass over
 * up to REF_TOKENS tokens and applied to every token routed there (decoding, and converting
 * rows handed over in another format, cost more than the products: done per token, the
 * reference took most of the suite's time); every value is the same sum in the same order as
 * one token and one expert at a time.
 */
#include "alloc.h"
#include "internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* NaN ranks below every number, so a > b is "a ranks above b". */
static bool ranks_above(double a, double b)
{
    if (isnan(a)) return false;
    if (isnan(b)) return true;
    return a > b;
}

/* Index of the best of n values not yet taken; ties go to the lower index. */
static int64_t best_untaken(const double *v, const bool *taken, int64_t n)
{
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++) {
        if (taken[i]) continue;
        if (best < 0 || ranks_above(v[i], v[best])) best = i;
    }
    return best;
}

static double activate(moe_activation act, double v)
{
    switch (act) {
    case MOE_ACTIVATION_SWIGLU:
        return v / (1.0 + exp(-v));
    case MOE_ACTIVATION_GEGLU:
    case MOE_ACTIVATION_GELU:
        return 0.5 * v * (1.0 + erf(v / sqrt(2.0)));
    case MOE_ACTIVATION_RELU:
        return v > 0.0 ? v : 0.0;
    case MOE_ACTIVATION_SWIGLU_OAI: /* of gate and up together: swiglu_oai */
        break;
    }
    return v;
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* A weight matrix as the layer holds it: rows in `given` (the format handed over) at `data`,
 * stored in `stored`. The reference reads each row as stored — converted with the library's
 * quantizer when the formats differ (tests/test_dtype.c holds that quantizer to ggml's bytes)
 * — and decodes it itself, from the formats' definitions in moe.h. */
typedef struct ref_matrix {
    const unsigned char *data;
    moe_dtype given, stored;
    int64_t cols;
    unsigned char *row_buf; /* one stored row */
} ref_matrix;

static double half_value(const unsigned char *p)
{
    const int bits = p[0] | (p[1] << 8), exp = (bits >> 10) & 0x1f, man = bits & 0x3ff;
    const double sign = bits & 0x8000 ? -1.0 : 1.0;
    if (exp == 0x1f) return man ? NAN : sign * INFINITY;
    return sign * (exp ? ldexp(1024 + man, exp - 25) : ldexp(man, -24));
}

static double bf16_value(const unsigned char *p)
{
    const uint32_t bits = (uint32_t)(p[0] | (p[1] << 8)) << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Row r of the matrix, decoded into out[cols]. */
static void ref_row(const ref_matrix *m, int64_t r, double *out)
{
    const unsigned char *row = m->data + (size_t)r * moe_dtype_row_bytes(m->given, m->cols);
    if (m->given != m->stored) {
        moe_convert_row_unchecked(m->given, row, m->stored, m->row_buf, m->cols);
        row = m->row_buf;
    }
    if (moe_dtype_is_kquant(m->stored)) { /* ggml's dequantisation, in float (kquants.c) */
        float v[MOE_SUPER_BLOCK_SIZE];
        const size_t bytes = moe_dtype_row_bytes(m->stored, MOE_SUPER_BLOCK_SIZE);
        for (int64_t c = 0; c < m->cols; c += MOE_SUPER_BLOCK_SIZE) {
            moe_kq_decode(m->stored, row + bytes * (size_t)(c / MOE_SUPER_BLOCK_SIZE), v);
            for (int i = 0; i < MOE_SUPER_BLOCK_SIZE; i++) out[c + i] = v[i];
        }
        return;
    }
    for (int64_t c = 0; c < m->cols; c++) {
        const int64_t b = c / 32, j = c % 32;
        switch (m->stored) {
        case MOE_DTYPE_F16:
            out[c] = half_value(row + 2 * c);
            break;
        case MOE_DTYPE_BF16:
            out[c] = bf16_value(row + 2 * c);
            break;
        case MOE_DTYPE_Q8_0:
            out[c] = (double)(int8_t)row[34 * b + 2 + j] * half_value(row + 34 * b);
            break;
        case MOE_DTYPE_Q4_0: {
            const unsigned char q = row[18 * b + 2 + j % 16];
            out[c] = (double)((j < 16 ? q & 0x0f : q >> 4) - 8) * half_value(row + 18 * b);
            break;
        }
        case MOE_DTYPE_MXFP4: { /* kv[q] · 2^(e − 128) */
            const unsigned char q = row[17 * b + 1 + j % 16];
            out[c] = ldexp((double)moe_mxfp4_values[j < 16 ? q & 0x0f : q >> 4], (int)row[17 * b] - 128);
            break;
        }
        default: {
            float f;
            memcpy(&f, row + 4 * c, sizeof f);
            out[c] = f;
        }
        }
    }
}

/* Tokens a pass of the experts (moe_reference_forward): each pass decodes the experts it uses once and
 * holds (K + 1)·d_model doubles of outputs a token. */
#define REF_TOKENS 256

static double dot_d(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* v rounded to 8 significant bits, to nearest with ties to even (the default rounding mode):
 * bfloat16's precision, at any exponent (bfloat16's range is float32's). */
static double round_8_bits(double v)
{
    int e;
    const double m = frexp(v, &e); /* v = m · 2^e, 0.5 <= |m| < 1 */
    return ldexp(nearbyint(ldexp(m, 8)), e - 8);
}

/* An expert product's input as it is seen (act: what the product runs on, rounded_inputs; intermediate:
 * the down projection's input):
 * - F32: the float values.
 * - Q8_0, integer activations (moe.h, for Q8_0 / Q4_0 / K-quant weights): each group of 16 rounded to
 *   q·d, d = max|a| / qmax in float, q = round(a / d), qmax 127 for x and 32767 for the intermediate — a
 *   group with a non-finite value gives NaN, one so small that 1/d overflows float gives zeros. Integer
 *   sums are exact, so q·d in double is what those products compute, up to float rounding.
 * - BF16, bfloat16 pairs (moe.h, for Q4_0, MXFP4 and Q4_K weights): each value as hi + lo, hi = a
 *   to 8 significant bits, lo = a − hi the same; a non-finite value stays itself. The products of the
 *   parts with the 4-bit values are exact, so hi + lo in double is what they compute, up to float
 *   rounding. */
static void expert_input(const float *a, int64_t n, moe_dtype act, bool intermediate, double *out)
{
    for (int64_t i = 0; i < n; i++) out[i] = a[i];
    if (act == MOE_DTYPE_BF16)
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(a[i])) continue;
            const double hi = round_8_bits(a[i]);
            out[i] = hi + round_8_bits(a[i] - hi);
        }
    if (act != MOE_DTYPE_Q8_0) return;
    const float qmax = intermediate ? 32767.0f : 127.0f;
    for (int64_t b = 0; b < n; b += 16) {
        float amax = 0.0f;
        bool finite = true;
        for (int64_t i = b; i < b + 16; i++) {
            if (!isfinite(a[i]))
                finite = false;
            else if (fabsf(a[i]) > amax)
                amax = fabsf(a[i]);
        }
        float scale = amax / qmax, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        if (inv > FLT_MAX) scale = inv = 0.0f;
        for (int64_t i = b; i < b + 16; i++)
            out[i] = finite ? (double)roundf(a[i] * inv) * (double)scale : NAN;
    }
}

/* gpt-oss's clamped SwiGLU (moe.h, MOE_ACTIVATION_SWIGLU_OAI) on gate g and up u; a NaN stays a
 * NaN (the comparisons are false for it), as torch.clamp keeps it. */
static double swiglu_oai(const moe_layer_desc *d, double g, double u)
{
    const double limit = d->swiglu_limit;
    g = g > limit ? limit : g;
    u = u > limit ? limit : u < -limit ? -limit : u;
    return g / (1.0 + exp(-(double)d->swiglu_alpha * g)) * (u + 1.0);
}

/* The biases of one routed expert (moe_layer_desc.expert_has_bias), each NULL where there are none. */
typedef struct ref_bias {
    const float *gate, *up, *down;
} ref_bias;

/* One expert: its three matrices and biases, width f; down_act: how the down product's input, the
 * intermediate, is rounded (expert_input; its gate/up's input comes rounded). */
typedef struct ref_expert {
    ref_matrix gate, up, down;
    ref_bias b;
    int64_t f;
    moe_dtype down_act;
} ref_expert;

/* How a product of weights stored in `format` rounds its input: as activation_dtype asks (moe.h) where
 * the format takes it, else not (F32). Gate/up and down each decide for themselves. */
static moe_dtype rounded_inputs(const moe_layer_desc *d, moe_dtype format)
{
    const moe_dtype a = d->activation_dtype;
    return moe_dtype_takes_activations(format, a) ? a : MOE_DTYPE_F32;
}

/* out[s][d_model] = down · act(gate·x_s + b_gate) ⊙ (up·x_s + b_up) + b_down for n tokens, x_s
 * their inputs as expert_input gives them (xin[s], d_model values each); h holds n·f values, hf
 * f, buf max(d, f). Each row is decoded once for the n tokens. With an activation opt-in, h is rounded
 * (expert_input: int16, or bfloat16 pairs) after it is rounded to float as the backends hold it. */
static void expert_ffn(const moe_layer_desc *d, const ref_expert *x, int64_t n, const double *const *xin,
                       double *h, float *hf, double *const *out, double *buf)
{
    const int64_t D = d->d_model, f = x->f;
    const bool gated = moe_activation_is_gated(d->activation);
    for (int64_t i = 0; i < f; i++) {
        ref_row(&x->up, i, buf);
        for (int64_t s = 0; s < n; s++)
            h[s * f + i] = dot_d(buf, xin[s], D) + (x->b.up ? (double)x->b.up[i] : 0.0);
        if (!gated) {
            for (int64_t s = 0; s < n; s++) h[s * f + i] = activate(d->activation, h[s * f + i]);
            continue;
        }
        ref_row(&x->gate, i, buf);
        for (int64_t s = 0; s < n; s++) {
            const double u = h[s * f + i];
            const double g = dot_d(buf, xin[s], D) + (x->b.gate ? (double)x->b.gate[i] : 0.0);
            h[s * f + i] = d->activation == MOE_ACTIVATION_SWIGLU_OAI ? swiglu_oai(d, g, u)
                                                                      : activate(d->activation, g) * u;
        }
    }
    if (x->down_act != MOE_DTYPE_F32)
        for (int64_t s = 0; s < n; s++) {
            for (int64_t i = 0; i < f; i++) hf[i] = (float)h[s * f + i];
            expert_input(hf, f, x->down_act, true, h + s * f);
        }
    for (int64_t o = 0; o < D; o++) {
        ref_row(&x->down, o, buf);
        for (int64_t s = 0; s < n; s++)
            out[s][o] = dot_d(buf, h + s * f, f) + (x->b.down ? (double)x->b.down[o] : 0.0);
    }
}

/* Routing of one token: scores, the chosen experts (best first) and their weights. */
static void route_token(const moe_layer_desc *d, const moe_layer_weights *w, const float *x, double *logits,
                        double *scores, double *keys, bool *taken, double *group_score, bool *group_taken,
                        int32_t *ids, double *weights)
{
    const int64_t E = d->n_experts;
    for (int64_t e = 0; e < E; e++)
        logits[e] = dot(w->router + e * d->d_model, x, d->d_model) +
                    (d->router_has_bias ? (double)w->router_bias[e] : 0.0);

    if (d->score_func == MOE_SCORE_SOFTMAX) {
        double m = -INFINITY, sum = 0.0;
        for (int64_t e = 0; e < E; e++)
            if (logits[e] > m) m = logits[e];
        for (int64_t e = 0; e < E; e++) sum += exp(logits[e] - m);
        for (int64_t e = 0; e < E; e++) scores[e] = exp(logits[e] - m) / sum;
    } else {
        for (int64_t e = 0; e < E; e++) scores[e] = 1.0 / (1.0 + exp(-logits[e]));
    }
    for (int64_t e = 0; e < E; e++)
        keys[e] = scores[e] + (d->has_selection_bias ? (double)w->router_bias[e] : 0.0);

    /* Group-limited routing: keep the topk_group best groups, exclude the other experts. */
    if (d->n_group > 1) {
        const int64_t per = E / d->n_group;
        for (int64_t g = 0; g < d->n_group; g++) {
            for (int64_t i = 0; i < per; i++) taken[i] = false;
            const int64_t n_best = d->group_score == MOE_GROUP_SCORE_MAX ? 1 : (per < 2 ? per : 2);
            double s = 0.0;
            for (int64_t b = 0; b < n_best; b++) {
                const int64_t i = best_untaken(keys + g * per, taken, per);
                taken[i] = true;
                s += keys[g * per + i];
            }
            group_score[g] = s;
            group_taken[g] = false;
        }
        for (int64_t kept = 0; kept < d->topk_group; kept++)
            group_taken[best_untaken(group_score, group_taken, d->n_group)] = true;
        for (int64_t e = 0; e < E; e++)
            if (!group_taken[e / per]) keys[e] = -INFINITY;
    }

    for (int64_t e = 0; e < E; e++) taken[e] = false;
    double sum = 0.0;
    for (int64_t j = 0; j < d->top_k; j++) {
        const int64_t e = best_untaken(keys, taken, E);
        taken[e] = true;
        ids[j] = (int32_t)e;
        weights[j] = scores[e];
        sum += scores[e];
    }
    for (int64_t j = 0; j < d->top_k; j++) {
        if (d->renormalize) weights[j] /= sum + 1e-20;
        weights[j] *= d->routed_scaling_factor;
    }
}

moe_status moe_reference_forward(const moe_layer_desc *desc, const moe_layer_weights *weights,
                                 int64_t n_tokens, const float *x, float *y, moe_forward_stats *stats)
{
    moe_clear_error(NULL);
    moe_layer_desc d;
    if (!weights) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "weights is NULL");
    moe_layer_weights full = {.struct_size = sizeof full};
    moe_status st = moe_abi_in(NULL, &moe_abi_layer_weights, weights, &full);
    if (st != MOE_OK) return st;
    weights = &full;
    st = moe_validate_layer(NULL, desc, weights, &d);
    if (st != MOE_OK) return st;
    st = moe_validate_tokens(NULL, &d, n_tokens, false);
    if (st != MOE_OK) return st;
    if (!x || !y) return moe_fail(NULL, MOE_ERROR_NULL_POINTER, "x or y is NULL");
    moe_forward_stats stats_in = {.struct_size = sizeof stats_in}; /* the caller's, by its struct_size */
    if (stats) {
        st = moe_abi_in(NULL, &moe_abi_forward_stats, stats, &stats_in);
        if (st != MOE_OK) return st;
        stats = &stats_in;
    }

    const int64_t T = n_tokens, D = d.d_model, E = d.n_experts, K = d.top_k;
    const int64_t F = d.d_ff > d.d_ff_shared ? d.d_ff : d.d_ff_shared;
    const int64_t C = T < REF_TOKENS ? T : REF_TOKENS; /* tokens a pass */
    double *logits = moe_malloc(sizeof(double) * (size_t)(T * E));
    double *scores = moe_malloc(sizeof(double) * (size_t)E);
    double *keys = moe_malloc(sizeof(double) * (size_t)E);
    bool *taken = moe_malloc(sizeof(bool) * (size_t)E);
    double *group_score = moe_malloc(sizeof(double) * (size_t)E);
    bool *group_taken = moe_malloc(sizeof(bool) * (size_t)E);
    int32_t *ids = moe_malloc(sizeof(int32_t) * (size_t)(T * K));
    double *w = moe_malloc(sizeof(double) * (size_t)(T * K));
    bool *kept = moe_malloc(sizeof(bool) * (size_t)(T * K));
    int32_t *counts = moe_calloc((size_t)E, sizeof(int32_t));
    double *h = moe_malloc(sizeof(double) * (size_t)(C * F));
    double *outs =
        moe_malloc(sizeof(double) * (size_t)(C * (K + 1) * D)); /* a pass's (token, k), then shared */
    double *acc = moe_malloc(sizeof(double) * (size_t)(T * D));
    double *p_mean = moe_calloc((size_t)E, sizeof(double));
    const int64_t DF = D > F ? D : F;
    double *buf = moe_malloc(sizeof(double) * (size_t)DF);
    double *xin = moe_malloc(sizeof(double) * (size_t)(C * D));
    const double **xs = moe_malloc(sizeof(double *) * (size_t)C);
    double **os = moe_malloc(sizeof(double *) * (size_t)C);
    float *hf = moe_malloc(sizeof(float) * (size_t)F);
    unsigned char *row_buf = moe_malloc(sizeof(float) * (size_t)DF); /* the widest stored row */
    st = MOE_OK;
    if (!logits || !scores || !keys || !taken || !group_score || !group_taken || !ids || !w || !kept ||
        !counts || !h || !outs || !acc || !p_mean || !buf || !xin || !xs || !os || !hf || !row_buf) {
        st = moe_fail(NULL, MOE_ERROR_OUT_OF_MEMORY, "reference: out of host memory");
        goto done;
    }

    for (int64_t t = 0; t < T; t++)
        route_token(&d, weights, x + t * D, logits + t * E, scores, keys, taken, group_score, group_taken,
                    ids + t * K, w + t * K);
    /* Capacity, in token order: it drops the later tokens. */
    int32_t dropped = 0;
    for (int64_t i = 0; i < T * K; i++) {
        kept[i] = d.expert_capacity == 0 || counts[ids[i]] < d.expert_capacity;
        counts[ids[i]]++;
        dropped += !kept[i];
    }

    const moe_dtype dt = moe_weights_dtype(weights), sto = d.weight_dtype;
    const size_t in_bytes = (size_t)d.d_ff * moe_dtype_row_bytes(dt, D);
    const size_t down_bytes = (size_t)D * moe_dtype_row_bytes(dt, d.d_ff);
    const moe_dtype act = rounded_inputs(&d, sto), down_act = rounded_inputs(&d, d.down_weight_dtype);
    for (int64_t t0 = 0; t0 < T; t0 += C) {
        const int64_t nt = T - t0 < C ? T - t0 : C;
        for (int64_t t = 0; t < nt; t++) expert_input(x + (t0 + t) * D, D, act, false, xin + t * D);
        /* Each expert once, on the pass's tokens routed there and kept; outs[t][k] its output. */
        for (int64_t e = 0; e < E; e++) {
            int64_t n = 0;
            for (int64_t t = 0; t < nt; t++)
                for (int64_t j = 0; j < K; j++)
                    if (ids[(t0 + t) * K + j] == e && kept[(t0 + t) * K + j]) {
                        xs[n] = xin + t * D;
                        os[n++] = outs + (t * (K + 1) + j) * D;
                    }
            if (n == 0) continue;
            const unsigned char *g = weights->gate, *u = weights->up, *dn = weights->down;
            ref_expert ex = {
                .gate = {g ? g + (size_t)e * in_bytes : NULL, dt, sto, D, row_buf},
                .up = {u + (size_t)e * in_bytes, dt, sto, D, row_buf},
                .down = {dn + (size_t)e * down_bytes, dt, d.down_weight_dtype, d.d_ff, row_buf},
                .f = d.d_ff,
                .down_act = down_act,
            };
            if (d.expert_has_bias)
                ex.b = (ref_bias){weights->gate_bias ? weights->gate_bias + (size_t)e * (size_t)d.d_ff : NULL,
                                  weights->up_bias + (size_t)e * (size_t)d.d_ff,
                                  weights->down_bias + (size_t)e * (size_t)D};
            expert_ffn(&d, &ex, n, xs, h, hf, os, buf);
        }
        /* The shared expert on every token of the pass: outs[t][K]. */
        if (d.d_ff_shared > 0) {
            const moe_dtype sdt = moe_weights_shared_dtype(weights), ssto = d.shared_weight_dtype;
            const ref_expert ex = {
                .gate = {weights->shared_gate, sdt, ssto, D, row_buf},
                .up = {weights->shared_up, sdt, ssto, D, row_buf},
                .down = {weights->shared_down, sdt, d.shared_down_weight_dtype, d.d_ff_shared, row_buf},
                .f = d.d_ff_shared,
                .down_act = rounded_inputs(&d, d.shared_down_weight_dtype),
            };
            for (int64_t t = 0; t < nt; t++) {
                expert_input(x + (t0 + t) * D, D, rounded_inputs(&d, ssto), false, xin + t * D);
                xs[t] = xin + t * D;
                os[t] = outs + (t * (K + 1) + K) * D;
            }
            expert_ffn(&d, &ex, nt, xs, h, hf, os, buf);
        }
        /* Each token's sum in its order: the routed experts best first, then the shared one. */
        for (int64_t t = 0; t < nt; t++) {
            const float *xt = x + (t0 + t) * D;
            double *yt = acc + (t0 + t) * D;
            for (int64_t i = 0; i < D; i++) yt[i] = 0.0;
            for (int64_t j = 0; j < K; j++) {
                const double wj = w[(t0 + t) * K + j], *o = outs + (t * (K + 1) + j) * D;
                if (kept[(t0 + t) * K + j])
                    for (int64_t i = 0; i < D; i++) yt[i] += wj * o[i];
                else if (d.drop_policy == MOE_DROP_PASSTHROUGH)
                    for (int64_t i = 0; i < D; i++) yt[i] += wj * (double)xt[i];
            }
            if (d.d_ff_shared > 0) {
                const double *o = outs + (t * (K + 1) + K) * D;
                double g = 1.0;
                if (d.shared_expert_gate) g = 1.0 / (1.0 + exp(-dot(weights->shared_expert_gate, xt, D)));
                for (int64_t i = 0; i < D; i++) yt[i] += g * o[i];
            }
        }
    }

    for (int64_t i = 0; i < T * D; i++) y[i] = (float)acc[i];
    if (stats) {
        if (stats->topk_ids) memcpy(stats->topk_ids, ids, sizeof(int32_t) * (size_t)(T * K));
        if (stats->topk_weights)
            for (int64_t i = 0; i < T * K; i++) stats->topk_weights[i] = (float)w[i];
        if (stats->expert_counts) memcpy(stats->expert_counts, counts, sizeof(int32_t) * (size_t)E);
        if (stats->dropped_count) *stats->dropped_count = dropped;
        /* Losses: P_e from per-token scores normalised to sum 1; z from logsumexp. */
        double z = 0.0;
        for (int64_t t = 0; t < T; t++) {
            const double *l = logits + t * E;
            double m = -INFINITY, s = 0.0;
            for (int64_t e = 0; e < E; e++)
                if (l[e] > m) m = l[e];
            for (int64_t e = 0; e < E; e++) s += exp(l[e] - m);
            const double lse = m + log(s);
            z += lse * lse;
            double norm = 0.0;
            for (int64_t e = 0; e < E; e++)
                scores[e] = d.score_func == MOE_SCORE_SOFTMAX ? exp(l[e] - lse) : 1.0 / (1.0 + exp(-l[e]));
            for (int64_t e = 0; e < E; e++) norm += scores[e];
            for (int64_t e = 0; e < E; e++) p_mean[e] += scores[e] / norm / (double)T;
        }
        double aux = 0.0;
        for (int64_t e = 0; e < E; e++) aux += (double)counts[e] / (double)(T * K) * p_mean[e];
        if (stats->aux_loss) *stats->aux_loss = (float)(aux * (double)E);
        if (stats->z_loss) *stats->z_loss = (float)(z / (double)T);
    }

done:
    moe_free(logits);
    moe_free(scores);
    moe_free(keys);
    moe_free(taken);
    moe_free(group_score);
    moe_free(group_taken);
    moe_free(ids);
    moe_free(w);
    moe_free(kept);
    moe_free(counts);
    moe_free(h);
    moe_free(outs);
    moe_free(acc);
    moe_free(p_mean);
    moe_free(buf);
    moe_free(xin);
    moe_free(xs);
    moe_free(os);
    moe_free(hf);
    moe_free(row_buf);
    return st;
}
