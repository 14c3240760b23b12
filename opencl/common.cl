// common.cl — what every moe OpenCL kernel shares, included first by each (the #include is
// inlined when the program is embedded, src/opencl/embed_cl.cmake): the activations and the
// other helpers (the same definitions as shaders/common.glsl and the scalar reference), a
// ranking rule for scores, and FMA, a fused multiply-add where the device has a fast one. A
// kernel's parameters arrive as -D options rendered from its interface description,
// kernels/<kernel>.h (src/opencl/cl_steps.c).
#ifdef MOE_INJECT_BUILD_FAILURE
#error "build failure injected by MOE_CL_INJECT=build"
#endif

// moe_activation values (include/moe.h); -1 = none.
#define ACT_NONE -1
#define ACT_SWIGLU 0
#define ACT_GEGLU 1
#define ACT_RELU 2
#define ACT_GELU 3
#define ACT_SWIGLU_OAI 4

#ifdef FP_FAST_FMAF
#define FMA(a, b, c) fma((a), (b), (c))
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif

float sigmoid(float v) { return 1.0f / (1.0f + exp(-v)); }

float silu(float v) { return v / (1.0f + exp(-v)); }

// erfc with fractional error below 1.2e-7 everywhere (Numerical Recipes' erfcc), so that
// GELU(v) = v/2 · erfc(-v/√2) stays accurate for negative v too.
float erfc_approx(float x)
{
    const float z = fabs(x);
    const float t = 1.0f / (1.0f + 0.5f * z);
    const float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
                    t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
                    t * (-0.82215223f + t * 0.17087277f))))))));
    const float r = t * exp(-z * z + p);
    return x >= 0.0f ? r : 2.0f - r;
}

float gelu(float v) { return 0.5f * v * erfc_approx(-v * 0.7071067811865476f); }

float activate(int act, float v)
{
    if (act == ACT_SWIGLU) return silu(v);
    if (act == ACT_GEGLU || act == ACT_GELU) return gelu(v);
    if (act == ACT_RELU) return fmax(v, 0.0f);
    return v;
}

// The gated epilogue on gate g and up u: act(g) · u, or gpt-oss's clamped SwiGLU (as
// shaders/common.glsl's; a NaN stays one).
float gated_act(int act, float g, float u, float alpha, float limit)
{
    if (act != ACT_SWIGLU_OAI) return activate(act, g) * u;
    g = g > limit ? limit : g;
    u = u > limit ? limit : (u < -limit ? -limit : u);
    return g / (1.0f + exp(-alpha * g)) * (u + 1.0f);
}

// a ranks above b: a NaN ranks below every number (ties are left to the caller's order).
bool ranks_above(float a, float b) { return !isnan(a) && (isnan(b) || a > b); }
