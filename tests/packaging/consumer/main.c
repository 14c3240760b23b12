/* A tiny consumer of an installed moe: CPU context, a small layer, one forward. */
#include <moe.h>

#include <stdio.h>
#include <string.h>

#if defined(CONSUMER_EXPECT_STATIC) && !defined(MOE_STATIC_DEFINE)
#error "moe::moe_static must define MOE_STATIC_DEFINE for its users"
#endif

#define STR_(x) #x
#define STR(x)  STR_(x)

static int check(moe_status st, const char *what)
{
    if (st != MOE_OK) {
        fprintf(stderr, "consumer: %s failed: %s (%s)\n", what, moe_status_string(st), moe_last_error());
        return 1;
    }
    return 0;
}

int main(void)
{
    enum { D = 8, F = 16, E = 4, K = 2, T = 3 };
    static float router[E * D], gate[E * F * D], up[E * F * D], down[E * D * F];
    static float x[T * D], y[T * D];
    unsigned s = 12345u;
    float *arrays[] = {router, gate, up, down, x};
    size_t sizes[] = {E * D, E * F * D, E * F * D, E * D * F, T * D};
    for (size_t a = 0; a < 5; a++)
        for (size_t i = 0; i < sizes[a]; i++) {
            s = s * 1664525u + 1013904223u;
            arrays[a][i] = (float)(s >> 8) / 16777216.0f - 0.5f;
        }

    const char *version = moe_version();
    char header_version[32];
    snprintf(header_version, sizeof header_version, "%d.%d.%d", MOE_VERSION_MAJOR, MOE_VERSION_MINOR,
             MOE_VERSION_PATCH);
    if (strcmp(version, header_version) != 0 || moe_version_number() != MOE_VERSION_NUMBER) {
        fprintf(stderr, "consumer: library version %s does not match header %s\n", version, header_version);
        return 1;
    }
#ifdef EXPECTED_VERSION
    if (strcmp(version, STR(EXPECTED_VERSION)) != 0) {
        fprintf(stderr, "consumer: library version %s, package says %s\n", version, STR(EXPECTED_VERSION));
        return 1;
    }
#endif

    moe_context *ctx = NULL;
    moe_layer *layer = NULL;
    moe_context_desc cd = {.struct_size = sizeof cd, .backend = MOE_BACKEND_CPU, .n_threads = 1};
    moe_layer_desc ld = {.struct_size = sizeof ld,
                         .d_model = D,
                         .d_ff = F,
                         .n_experts = E,
                         .top_k = K,
                         .max_tokens = T,
                         .renormalize = 1};
    moe_layer_weights w = {.struct_size = sizeof w, .router = router, .gate = gate, .up = up, .down = down};
    int bad = check(moe_context_create(&cd, &ctx), "moe_context_create");
    if (!bad) bad = check(moe_layer_create(ctx, &ld, &w, &layer), "moe_layer_create");
    if (!bad) bad = check(moe_layer_forward(layer, T, x, y, NULL), "moe_layer_forward");
    moe_layer_destroy(layer);
    moe_context_destroy(ctx);
    if (bad) return 1;
    for (size_t i = 0; i < T * D; i++)
        if (!(y[i] == y[i])) {
            fprintf(stderr, "consumer: output %zu is NaN\n", i);
            return 1;
        }
    printf("moe %s (%s): forward OK, y[0] = %g\n", version,
#ifdef MOE_STATIC_DEFINE
           "static",
#else
           "shared",
#endif
           (double)y[0]);
    return 0;
}
