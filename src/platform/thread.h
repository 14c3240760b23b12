/*
 * thread.h — the library's threads, locks and one-time initialisation, on each platform's own
 * calls: POSIX threads, or Windows' (SRW locks, condition variables, INIT_ONCE, _beginthreadex).
 *
 * Why not C11 <threads.h>: its mtx_t has no static initialiser, and the process-wide locks
 * (a GPU backend's device list, the validation layer's message) must exist before any call
 * could initialise them; glibc implements <threads.h> over POSIX threads anyway, and
 * ThreadSanitizer (CI's tsan stage) knows POSIX threads best. Every function here is a thin
 * inline wrapper: the POSIX build compiles to the calls it made before.
 *
 * The calls that can fail (mutex / condition variable initialisation, thread creation) return
 * 0 on success, as POSIX does; the others cannot fail on valid arguments.
 */
#ifndef MOE_PLATFORM_THREAD_H
#define MOE_PLATFORM_THREAD_H

#if defined(_WIN32)

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <process.h> /* _beginthreadex: CreateThread without the C runtime's per-thread state */
#include <stdint.h>
#include <stdlib.h>

typedef SRWLOCK moe_mutex;
#define MOE_MUTEX_INIT SRWLOCK_INIT
static inline int moe_mutex_init(moe_mutex *m)
{
    InitializeSRWLock(m);
    return 0;
}
static inline void moe_mutex_destroy(moe_mutex *m)
{
    (void)m;
} /* SRW locks hold no resource */
static inline void moe_mutex_lock(moe_mutex *m)
{
    AcquireSRWLockExclusive(m);
}
static inline void moe_mutex_unlock(moe_mutex *m)
{
    ReleaseSRWLockExclusive(m);
}

typedef CONDITION_VARIABLE moe_cond;
static inline int moe_cond_init(moe_cond *c)
{
    InitializeConditionVariable(c);
    return 0;
}
static inline void moe_cond_destroy(moe_cond *c)
{
    (void)c;
}
static inline void moe_cond_wait(moe_cond *c, moe_mutex *m)
{
    SleepConditionVariableSRW(c, m, INFINITE, 0);
}
static inline void moe_cond_signal(moe_cond *c)
{
    WakeConditionVariable(c);
}
static inline void moe_cond_broadcast(moe_cond *c)
{
    WakeAllConditionVariable(c);
}

typedef INIT_ONCE moe_once;
#define MOE_ONCE_INIT INIT_ONCE_STATIC_INIT
struct moe_once_fn {
    void (*fn)(void);
};
static inline BOOL CALLBACK moe_once_trampoline(PINIT_ONCE once, PVOID param, PVOID *context)
{
    (void)once, (void)context;
    ((struct moe_once_fn *)param)->fn();
    return TRUE;
}
static inline void moe_call_once(moe_once *once, void (*fn)(void))
{
    struct moe_once_fn f = {fn};
    InitOnceExecuteOnce(once, moe_once_trampoline, &f, NULL);
}

/* A thread runs fn(arg) as a POSIX thread would; its return value is not kept (none is used). */
typedef HANDLE moe_thread;
struct moe_thread_start {
    void *(*fn)(void *);
    void *arg;
};
static inline unsigned __stdcall moe_thread_trampoline(void *param)
{
    struct moe_thread_start start = *(struct moe_thread_start *)param;
    free(param);
    start.fn(start.arg);
    return 0;
}
static inline int moe_thread_create(moe_thread *t, void *(*fn)(void *), void *arg)
{
    struct moe_thread_start *start = malloc(sizeof *start);
    if (!start) return -1;
    start->fn = fn;
    start->arg = arg;
    const uintptr_t h = _beginthreadex(NULL, 0, moe_thread_trampoline, start, 0, NULL);
    if (h == 0) {
        free(start);
        return -1;
    }
    *t = (HANDLE)h;
    return 0;
}
static inline void moe_thread_join(moe_thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

#else /* POSIX */

#include <pthread.h>

typedef pthread_mutex_t moe_mutex;
#define MOE_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
static inline int moe_mutex_init(moe_mutex *m)
{
    return pthread_mutex_init(m, NULL);
}
static inline void moe_mutex_destroy(moe_mutex *m)
{
    pthread_mutex_destroy(m);
}
static inline void moe_mutex_lock(moe_mutex *m)
{
    pthread_mutex_lock(m);
}
static inline void moe_mutex_unlock(moe_mutex *m)
{
    pthread_mutex_unlock(m);
}

typedef pthread_cond_t moe_cond;
static inline int moe_cond_init(moe_cond *c)
{
    return pthread_cond_init(c, NULL);
}
static inline void moe_cond_destroy(moe_cond *c)
{
    pthread_cond_destroy(c);
}
static inline void moe_cond_wait(moe_cond *c, moe_mutex *m)
{
    pthread_cond_wait(c, m);
}
static inline void moe_cond_signal(moe_cond *c)
{
    pthread_cond_signal(c);
}
static inline void moe_cond_broadcast(moe_cond *c)
{
    pthread_cond_broadcast(c);
}

typedef pthread_once_t moe_once;
#define MOE_ONCE_INIT  PTHREAD_ONCE_INIT
static inline void moe_call_once(moe_once *once, void (*fn)(void))
{
    pthread_once(once, fn);
}

typedef pthread_t moe_thread;
static inline int moe_thread_create(moe_thread *t, void *(*fn)(void *), void *arg)
{
    return pthread_create(t, NULL, fn, arg);
}
static inline void moe_thread_join(moe_thread t)
{
    pthread_join(t, NULL);
}

#endif

#endif /* MOE_PLATFORM_THREAD_H */
