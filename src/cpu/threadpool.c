/*
 * threadpool.c — a small persistent pool of threads for the CPU backend (platform/thread.h).
 *
 * One job at a time: the caller publishes (fn, arg, n_tasks), wakes the workers, takes
 * tasks itself, and waits until every task has finished. Tasks are claimed with an atomic
 * counter, so the split adapts to uneven tiles.
 *
 * Between jobs a worker first spins for a short while (about 0.1 ms) watching the job
 * generation, then sleeps on a condition variable, so an idle context costs no CPU. The spin
 * is for decode: a forward of one token is five jobs a few hundred microseconds long with
 * serial work in between, and waking a sleeping thread through the kernel took tens of
 * microseconds each time (measured: a third of a tiny layer's forward). The caller waits for
 * the workers the same way.
 */
#include "../alloc.h"
#include "cpu.h"

#include "../platform/thread.h"
#include <stdatomic.h>
#include <stdlib.h>

/* Spin iterations before sleeping; a pause is ~40-140 cycles on x86. */
#define SPIN_ITERS 2000

static inline void cpu_relax(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_ia32_pause();
#elif (defined(__aarch64__) || defined(__arm__)) && (defined(__GNUC__) || defined(__clang__))
    __asm__ __volatile__("yield");
#endif
}

struct moe_pool {
    int n_threads; /* including the caller */
    moe_thread *threads;
    moe_mutex lock;
    moe_cond wake, done;
    /* Bumped per job (release, under the lock); workers wait for a new one. The job's fields
     * below are written before the bump and read after seeing it (acquire). */
    atomic_uint_fast64_t generation;
    atomic_bool stop;
    atomic_int active; /* workers still inside the current job */
    moe_task_fn fn;
    void *arg;
    int64_t n_tasks;
    atomic_int_fast64_t next;
};

static void work(moe_pool *p)
{
    for (;;) {
        const int64_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n_tasks) return;
        p->fn(p->arg, i);
    }
}

static void *worker(void *arg)
{
    moe_pool *p = arg;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        for (int i = 0; g == seen && i < SPIN_ITERS && !atomic_load_explicit(&p->stop, memory_order_relaxed);
             i++) {
            cpu_relax();
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
        }
        if (g == seen) {
            moe_mutex_lock(&p->lock);
            while (!atomic_load(&p->stop) && atomic_load(&p->generation) == seen)
                moe_cond_wait(&p->wake, &p->lock);
            g = atomic_load(&p->generation);
            moe_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        work(p);
        if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
            /* Under the lock, so a caller that found active > 0 is already waiting. */
            moe_mutex_lock(&p->lock);
            moe_cond_signal(&p->done);
            moe_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

moe_pool *moe_pool_create(int n_threads)
{
    moe_pool *p = moe_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    p->threads = moe_calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->threads || moe_mutex_init(&p->lock) != 0) {
        moe_free(p->threads);
        moe_free(p);
        return NULL;
    }
    moe_cond_init(&p->wake);
    moe_cond_init(&p->done);
    atomic_init(&p->generation, 0);
    atomic_init(&p->stop, false);
    atomic_init(&p->active, 0);
    atomic_init(&p->next, 0);
    for (int i = 1; i < p->n_threads; i++) {
        if (moe_alloc_injected() || moe_thread_create(&p->threads[i], worker, p) != 0) {
            p->n_threads = i; /* join the ones that started */
            moe_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void moe_pool_destroy(moe_pool *p)
{
    if (!p) return;
    moe_mutex_lock(&p->lock);
    atomic_store(&p->stop, true);
    moe_cond_broadcast(&p->wake);
    moe_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads; i++) moe_thread_join(p->threads[i]);
    moe_cond_destroy(&p->wake);
    moe_cond_destroy(&p->done);
    moe_mutex_destroy(&p->lock);
    moe_free(p->threads);
    moe_free(p);
}

int moe_pool_threads(const moe_pool *p)
{
    return p->n_threads;
}

void moe_pool_run(moe_pool *p, int64_t n_tasks, moe_task_fn fn, void *arg)
{
    if (n_tasks <= 0) return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (int64_t i = 0; i < n_tasks; i++) fn(arg, i);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->active, p->n_threads - 1, memory_order_relaxed);
    moe_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    moe_cond_broadcast(&p->wake);
    moe_mutex_unlock(&p->lock);
    work(p);
    for (int i = 0; i < SPIN_ITERS && atomic_load_explicit(&p->active, memory_order_acquire) > 0; i++)
        cpu_relax();
    if (atomic_load_explicit(&p->active, memory_order_acquire) > 0) {
        moe_mutex_lock(&p->lock);
        while (atomic_load(&p->active) > 0) moe_cond_wait(&p->done, &p->lock);
        moe_mutex_unlock(&p->lock);
    }
}
