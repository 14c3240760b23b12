/*
 * isa.c — run-time choice of the CPU kernel set. The library is never built with
 * -march=native: each ISA level is its own object, and the best one the running CPU
 * supports is picked here. MOE_CPU_ISA=baseline|avx2|avx2vnni|avx512|avx512vnni (x86-64),
 * baseline|neondot (64-bit Arm), or a test level, simde512|simdedot, forces one, so every path can
 * be tested on one machine ("simde512" is the 16-lane code emulated by SIMDe on narrower vectors,
 * over AVX2 on x86-64 and at the baseline ISA elsewhere; "simdedot", x86-64 only, is neondot's code
 * with SIMDe emulating Arm's dot products: slow, never chosen automatically; built only with the
 * tests).
 */
#include "cpu.h"

#include <stdlib.h>
#include <string.h>

#if MOE_CPU_X86 && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define MOE_CPU_DETECT 1
#else
#define MOE_CPU_DETECT 0
#endif
/* 64-bit Arm: the kernel's hardware capabilities (Linux: getauxval; glibc and musl define the bit,
 * whose value is the kernel's ABI), or the system's answer (macOS: sysctl). Elsewhere neondot is not
 * chosen, nor can it be forced. */
#if MOE_CPU_ARM64 && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#define MOE_CPU_ARM_DETECT 1
#elif MOE_CPU_ARM64 && defined(__APPLE__)
#include <sys/sysctl.h>
#define MOE_CPU_ARM_DETECT 2
#else
#define MOE_CPU_ARM_DETECT 0
#endif

/* Whether the CPU has Arm's dot-product instructions (FEAT_DotProd: sdot / udot). */
static bool arm_dotprod(void)
{
#if MOE_CPU_ARM_DETECT == 1
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif MOE_CPU_ARM_DETECT == 2
    int on = 0;
    size_t size = sizeof on;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &on, &size, NULL, 0) == 0 && on;
#else
    return false;
#endif
}

uint32_t moe_cpu_features(void)
{
    uint32_t f = 0;
#if MOE_CPU_DETECT
    /* The instruction sets by cpuid (clang 14's __builtin_cpu_supports knows neither "f16c"
     * nor "avxvnni"), each gated on a base set __builtin_cpu_supports reports only where the
     * OS saves its registers (XCR0): F16C and AVX-VNNI on AVX, the AVX-512 ones on AVX-512F. */
    __builtin_cpu_init();
    const bool avx = __builtin_cpu_supports("avx"), avx512 = __builtin_cpu_supports("avx512f");
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) && avx) f |= MOE_FEATURE_F16C;
    /* Integer dot products: AVX2's vpmaddubsw / vpmaddwd (and VNNI's, which imply AVX2). */
    if (__builtin_cpu_supports("avx2")) f |= MOE_FEATURE_INT_DOT;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        const unsigned subleaves = a;
        if ((c & (1u << 11)) && avx512) f |= MOE_FEATURE_AVX512_VNNI;
        if (subleaves >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) {
            if ((a & (1u << 4)) && avx) f |= MOE_FEATURE_AVX_VNNI;
            if ((a & (1u << 5)) && avx512) f |= MOE_FEATURE_AVX512_BF16;
        }
    }
#endif
    /* Integer dot products: Arm's sdot (the neondot level). */
    if (arm_dotprod()) f |= MOE_FEATURE_INT_DOT;
    return f;
}

/* What a level's object was compiled for (CMakeLists.txt: MOE_CPU_LEVELS), F16C included: the
 * avx2 and avx512 kernels convert F16 weights with it. */
static bool cpu_has(const char *level)
{
#if MOE_CPU_DETECT
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      (moe_cpu_features() & MOE_FEATURE_F16C);
    if (!strcmp(level, "avx2")) return avx2;
    if (!strcmp(level, "avx2vnni")) return avx2 && (moe_cpu_features() & MOE_FEATURE_AVX_VNNI);
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
    if (!strcmp(level, "avx512")) return avx512;
    if (!strcmp(level, "avx512vnni"))
        return avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               (moe_cpu_features() & MOE_FEATURE_AVX512_VNNI);
#endif
    if (!strcmp(level, "neondot")) return arm_dotprod();
    return false;
}

const moe_cpu_kernels *moe_cpu_select_kernels(const char **why)
{
    static const struct {
        const moe_cpu_kernels *k;
        const char *feature; /* NULL: runs on every CPU */
    } levels[] = {
#if MOE_CPU_X86
        {&moe_cpu_kernels_avx512vnni, "avx512vnni"},
        {&moe_cpu_kernels_avx512, "avx512"},
        {&moe_cpu_kernels_avx2vnni, "avx2vnni"},
        {&moe_cpu_kernels_avx2, "avx2"},
#endif
#if MOE_CPU_ARM64
        {&moe_cpu_kernels_neondot, "neondot"},
#endif
        {&moe_cpu_kernels_baseline, NULL},
#if MOE_CPU_SIMDEDOT
        /* built with the baseline's flags: runs on any x86-64 */
        {&moe_cpu_kernels_simdedot, NULL},
#endif
#if MOE_CPU_SIMDE512
        /* compiled with avx2's flags on x86-64 (CMakeLists.txt says why) */
        {&moe_cpu_kernels_simde512, MOE_CPU_X86 ? "avx2" : NULL},
#endif
    };
    const size_t n = sizeof levels / sizeof levels[0];
    const char *want = getenv("MOE_CPU_ISA");
    *why = "best level this CPU supports";
    if (want && *want) {
        *why = "forced by MOE_CPU_ISA";
        for (size_t i = 0; i < n; i++)
            if (!strcmp(want, levels[i].k->name))
                return !levels[i].feature || cpu_has(levels[i].feature) ? levels[i].k : NULL;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!levels[i].feature || cpu_has(levels[i].feature)) return levels[i].k;
    return &moe_cpu_kernels_baseline;
}

/* Whether the CPU is AMD's (__builtin_cpu_is reads cpuid's vendor string, "AuthenticAMD"). */
static bool cpu_is_amd(void)
{
#if MOE_CPU_DETECT
    __builtin_cpu_init();
    return __builtin_cpu_is("amd");
#else
    return false;
#endif
}

/* The dense formats' software prefetch (kernels.c: prefetch_line, 8 KiB ahead into L2) is off by
 * default at 512 bits on AMD: on Zen 4 a decode of F32, F16 or BF16 streams faster with the
 * hardware prefetcher alone, while the block formats still gain from it. Measured on a 2-core
 * Zen 4 EPYC, one moe-bench process per format taking each distance in turn forward by forward
 * (`--tokens 1 --layers auto`, median ms, none / 2 / 4 / 8 KiB ahead): qwen3-30b-a3b BF16 1.45 /
 * 1.52 / 2.00 / 1.87, F16 1.37 / 2.08 / 1.89 / 1.80, F32 4.71 / 4.75 / 4.75 / 4.93; olmoe-1b-7b
 * BF16 3.12 / 3.12 / 3.35 / 3.32, F32 3.56 / 3.68 / 3.68 / 3.97; but Q4_K 1.48 / 1.01 / 0.83 /
 * 0.84, Q4_0 0.88 / 0.99 / 0.85 / 0.82 (docs/ARCHITECTURE.md, "Software prefetch"). Intel CPUs
 * and the narrower levels keep it, as measured when it was added. */
int moe_cpu_dense_prefetch(const moe_cpu_kernels *k, const char **value)
{
    const char *env = getenv("MOE_CPU_PREFETCH");
    *value = env;
    if (env && *env && strcmp(env, "auto")) {
        if (!strcmp(env, "on")) return 1;
        if (!strcmp(env, "off")) return 0;
        return -1;
    }
    return !(k->vector_bits == 512 && cpu_is_amd());
}
