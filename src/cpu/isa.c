/*
 * isa.c — run-time choice of the CPU kernel set. The library is never built with
 * -march=native: each ISA level is its own object, and the best one the running CPU
 * supports is picked here. MOE_CPU_ISA=baseline|avx2|avx512|simde512 forces one, so every
 * path can be tested on one machine ("simde512" is the 16-lane code emulated by SIMDe at
 * the baseline ISA: slow, never chosen automatically, runs everywhere; built only with the
 * tests).
 */
#include "cpu.h"

#include <stdlib.h>
#include <string.h>

static bool cpu_has(const char *feature)
{
#if MOE_CPU_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (!strcmp(feature, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(feature, "avx512")) return __builtin_cpu_supports("avx512f");
#endif
    (void)feature;
    return false;
}

const moe_cpu_kernels *moe_cpu_select_kernels(const char **why)
{
    static const struct {
        const moe_cpu_kernels *k;
        const char *feature; /* NULL: runs on every CPU */
    } levels[] = {
#if MOE_CPU_X86
        {&moe_cpu_kernels_avx512, "avx512"},
        {&moe_cpu_kernels_avx2, "avx2"},
#endif
        {&moe_cpu_kernels_baseline, NULL},
#if MOE_CPU_SIMDE512
        {&moe_cpu_kernels_simde512, NULL},
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
