/*
 * alloc.c — host allocation wrappers and the allocation-failure injection hook (alloc.h).
 *
 * The injection state is process-wide (a test arms it, then runs one operation from one
 * thread); the "an allocation failed" flag is per thread, so concurrent contexts never see
 * each other's failures.
 */
#include "alloc.h"
#include "moe.h"
#include "platform/system.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local bool tls_failed; /* an allocation of this thread failed */

#if MOE_TEST_HOOKS
static atomic_int g_armed;       /* 0: off (the fast path), 1: counting */
static atomic_llong g_countdown; /* > 0: the point at which to fail, counted down */
static atomic_llong g_points;    /* points counted since the last arm */

bool moe_alloc_injected(void)
{
    if (!atomic_load_explicit(&g_armed, memory_order_relaxed)) return false;
    atomic_fetch_add(&g_points, 1);
    long long left = atomic_load(&g_countdown);
    while (left > 0) {
        if (atomic_compare_exchange_weak(&g_countdown, &left, left - 1)) {
            if (left == 1) {
                tls_failed = true;
                return true;
            }
            break;
        }
    }
    return false;
}

int64_t moe_test_inject_alloc_failure(int64_t n)
{
    const long long counted = atomic_load(&g_points);
    atomic_store(&g_armed, 0);
    atomic_store(&g_points, 0);
    atomic_store(&g_countdown, n > 0 ? (long long)n : 0);
    if (n != 0) atomic_store(&g_armed, 1);
    return counted;
}
#else
int64_t moe_test_inject_alloc_failure(int64_t n)
{
    (void)n;
    return -1; /* built without the test hooks: nothing counted, nothing injected */
}
#endif

void *moe_malloc(size_t bytes)
{
    void *p = moe_alloc_injected() ? NULL : malloc(bytes ? bytes : 1);
    if (!p) tls_failed = true;
    return p;
}

void *moe_calloc(size_t count, size_t size)
{
    void *p = moe_alloc_injected() ? NULL : calloc(count ? count : 1, size ? size : 1);
    if (!p) tls_failed = true;
    return p;
}

void *moe_realloc(void *p, size_t bytes)
{
    void *q = moe_alloc_injected() ? NULL : realloc(p, bytes ? bytes : 1);
    if (!q) tls_failed = true;
    return q;
}

void *moe_aligned_alloc(size_t alignment, size_t bytes)
{
    void *p = moe_alloc_injected() ? NULL : moe_sys_aligned_alloc(alignment, bytes ? bytes : alignment);
    if (!p) tls_failed = true;
    return p;
}

void moe_free(void *p)
{
    free(p);
}

void moe_aligned_free(void *p)
{
    moe_sys_aligned_free(p);
}

char *moe_strdup(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *p = moe_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void moe_alloc_reset_failed(void)
{
    tls_failed = false;
}
bool moe_alloc_failed(void)
{
    return tls_failed;
}
