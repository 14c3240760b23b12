/*
 * alloc.h — the one place every allocation of the library goes through: host memory
 * (moe_malloc & co., cJSON's hooks) and, through moe_alloc_injected(), every device
 * allocation and driver object a backend creates (Vulkan memory, buffers and pipelines,
 * OpenCL buffers, programs and kernels).
 *
 * Why one place: a library linked into a long-running server must survive running out of
 * memory at any allocation. moe_test_inject_alloc_failure() (moe.h) makes the n-th
 * allocation point fail, so a test can walk every point of an operation and check each
 * error path. When injection is off the hook is one relaxed atomic load per allocation, and in
 * a release build (no tests) there is no hook at all.
 */
#ifndef MOE_ALLOC_H
#define MOE_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

void *moe_malloc(size_t bytes);
void *moe_calloc(size_t count, size_t size);
void *moe_realloc(void *p, size_t bytes);
/* `bytes` (a multiple of `alignment`, a power of two) aligned to `alignment`; moe_aligned_free
 * it (Windows' C runtime cannot free an over-aligned block with free). */
void *moe_aligned_alloc(size_t alignment, size_t bytes);
void moe_aligned_free(void *p);
void moe_free(void *p);
/* A copy of `s` (moe_free it), or NULL. */
char *moe_strdup(const char *s);

/* Counts one allocation point and says whether it must fail (injected). Call it right
 * before each device allocation or driver object creation and act as if the native call
 * had returned its out-of-memory error. Without the test hooks (a release build,
 * MOE_TEST_HOOKS=0) it is the constant false, and the compiler drops it. */
#if MOE_TEST_HOOKS
bool moe_alloc_injected(void);
#else
static inline bool moe_alloc_injected(void)
{
    return false;
}
#endif

/* Whether an allocation of this thread failed (real or injected) since the last reset:
 * lets a caller tell "out of memory" from "bad input" after a parser that returns only
 * NULL (cJSON). */
void moe_alloc_reset_failed(void);
bool moe_alloc_failed(void);

/* cJSON's hooks set to moe_malloc / moe_free (once per process; see json.c). */
void moe_json_init(void);

#endif /* MOE_ALLOC_H */
