/*
 * system.h — what the library asks of the operating system besides threads (thread.h) and
 * files (file.h): the cores this process may use, the machine's memory, a monotonic clock,
 * the process id (temporary file names) and aligned allocation, on each platform's own calls:
 * POSIX (Linux, other Unixes), or Windows'. Thin inline wrappers, like thread.h.
 */
#ifndef MOE_PLATFORM_SYSTEM_H
#define MOE_PLATFORM_SYSTEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(_WIN32)

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <malloc.h> /* _aligned_malloc */

/* The processors of the process's affinity mask (a job object's or `start /affinity`'s limit),
 * within its processor group: Windows runs a process's threads in one group unless told. */
static inline long moe_sys_cpu_count(void)
{
    DWORD_PTR process = 0, system = 0;
    if (GetProcessAffinityMask(GetCurrentProcess(), &process, &system) && process) {
        long n = 0;
        for (; process; process &= process - 1) n++;
        return n;
    }
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return (long)si.dwNumberOfProcessors;
}

/* Physical memory in bytes; 0 when unknown. */
static inline uint64_t moe_sys_memory_bytes(void)
{
    MEMORYSTATUSEX m = {.dwLength = sizeof m};
    return GlobalMemoryStatusEx(&m) ? (uint64_t)m.ullTotalPhys : 0;
}

/* Nanoseconds of a monotonic clock (the performance counter). */
static inline uint64_t moe_sys_now_ns(void)
{
    static LARGE_INTEGER freq; /* set once; a racing first call writes the same value */
    LARGE_INTEGER t;
    if (!freq.QuadPart) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t);
    const uint64_t f = (uint64_t)freq.QuadPart, c = (uint64_t)t.QuadPart;
    return c / f * 1000000000u + c % f * 1000000000u / f;
}

static inline unsigned long moe_sys_process_id(void)
{
    return (unsigned long)GetCurrentProcessId();
}

/* Windows' C runtime has no aligned_alloc (its free cannot release an over-aligned block):
 * such blocks come from _aligned_malloc and go back through moe_sys_aligned_free. */
static inline void *moe_sys_aligned_alloc(size_t alignment, size_t bytes)
{
    return _aligned_malloc(bytes, alignment);
}
static inline void moe_sys_aligned_free(void *p)
{
    _aligned_free(p);
}

#else /* POSIX */

#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#endif

static inline long moe_sys_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__linux__) && defined(CPU_COUNT)
    /* the affinity mask's cores when it has fewer (mpirun binding, taskset, a cpuset) */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) >= 1 && CPU_COUNT(&set) < n)
        n = CPU_COUNT(&set);
#endif
    return n;
}

static inline uint64_t moe_sys_memory_bytes(void)
{
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

static inline uint64_t moe_sys_now_ns(void)
{
    struct timespec t;
#if defined(CLOCK_MONOTONIC)
    clock_gettime(CLOCK_MONOTONIC, &t);
#else
    timespec_get(&t, TIME_UTC); /* no monotonic clock: the best there is */
#endif
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static inline unsigned long moe_sys_process_id(void)
{
    return (unsigned long)getpid();
}

static inline void *moe_sys_aligned_alloc(size_t alignment, size_t bytes)
{
    return aligned_alloc(alignment, bytes);
}
static inline void moe_sys_aligned_free(void *p)
{
    free(p);
}

#endif

#endif /* MOE_PLATFORM_SYSTEM_H */
