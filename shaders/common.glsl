// common.glsl — what every moe compute shader shares: the activations and the other helpers,
// written once so the GEMM epilogues and any later kernel agree with the scalar reference's
// definitions (opencl/common.cl holds the same for OpenCL C). A kernel's workgroup size,
// specialization constants, buffers and push constants come from its interface description,
// kernels/<kernel>.h, included after this file.

// moe_activation values (include/moe.h); -1 = none.
#define ACT_NONE -1
#define ACT_SWIGLU 0
#define ACT_GEGLU 1
#define ACT_RELU 2
#define ACT_GELU 3
#define ACT_SWIGLU_OAI 4

float sigmoid(float v) { return 1.0 / (1.0 + exp(-v)); }

float silu(float v) { return v / (1.0 + exp(-v)); }

// erfc with fractional error below 1.2e-7 everywhere (the Chebyshev fit of Numerical
// Recipes' erfcc): GELU(v) = v/2 · erfc(-v/√2) is then accurate relative to its own value,
// also for negative v where 1 + erf(v/√2) would cancel.
float erfc_approx(float x)
{
    float z = abs(x);
    float t = 1.0 / (1.0 + 0.5 * z);
    float p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
              t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
              t * (-0.82215223 + t * 0.17087277))))))));
    float r = t * exp(-z * z + p);
    return x >= 0.0 ? r : 2.0 - r;
}

float gelu(float v) { return 0.5 * v * erfc_approx(-v * 0.7071067811865476); }

float activate(int act, float v)
{
    if (act == ACT_SWIGLU) return silu(v);
    if (act == ACT_GEGLU || act == ACT_GELU) return gelu(v);
    if (act == ACT_RELU) return max(v, 0.0);
    return v;
}

// The gated epilogue on gate g and up u: act(g) · u, or gpt-oss's clamped SwiGLU (moe.h,
// MOE_ACTIVATION_SWIGLU_OAI). Comparisons rather than min/clamp, whose result for a NaN is
// undefined, so that a NaN stays one as in the reference where the driver keeps NaNs (Vulkan
// does not promise it without SignedZeroInfNanPreserve).
float gated_act(int act, float g, float u, float alpha, float limit)
{
    if (act != ACT_SWIGLU_OAI) return activate(act, g) * u;
    g = g > limit ? limit : g;
    u = u > limit ? limit : (u < -limit ? -limit : u);
    return g / (1.0 + exp(-alpha * g)) * (u + 1.0);
}

// a ranks above b: a NaN ranks below every number (ties are left to the caller's order).
bool ranks_above(float a, float b) { return !isnan(a) && (isnan(b) || a > b); }
