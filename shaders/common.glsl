// common.glsl — what every moe compute shader shares: the workgroup size as specialization
// constant 0 (chosen on the host from the device's limits) and the activations, written once
// so the GEMM epilogues and any later kernel agree with the scalar reference's definitions.
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

// moe_activation values (include/moe.h); -1 = none.
#define ACT_NONE -1
#define ACT_SWIGLU 0
#define ACT_GEGLU 1
#define ACT_RELU 2
#define ACT_GELU 3

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
