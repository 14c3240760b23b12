/*
 * threadpool.c — a small persistent pool of POSIX threads for the CPU backend.
 *
 * One job at a time: the caller publishes (fn, arg, n_tasks), wakes the workers, takes
 * tasks itself, and waits until every task has finished. Tasks are claimed with an atomic
 * counter, so the split adapts to uneven tiles. Workers sleep on a condition variable
 * between jobs, so an idle context costs no CPU.
 */
#include "../alloc.h"
#include "cpu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct moe_pool {
    int n_threads; /* including the caller */
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    uint64_t generation; /* bumped per job; workers wait for a new one */
    bool stop;
    int active; /* workers still inside the current job */
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
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        work(p);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

moe_pool *moe_pool_create(int n_threads)
{
    moe_pool *p = moe_calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads < 1 ? 1 : n_threads;
    p->threads = moe_calloc((size_t)p->n_threads, sizeof *p->threads);
    if (!p->threads || pthread_mutex_init(&p->lock, NULL) != 0) {
        moe_free(p->threads);
        moe_free(p);
        return NULL;
    }
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < p->n_threads; i++) {
        if (moe_alloc_injected() || pthread_create(&p->threads[i], NULL, worker, p) != 0) {
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
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
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
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->active = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    work(p);
    pthread_mutex_lock(&p->lock);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
