/*
 * onnxc_pool.c: the thread pool declared in onnxc_pool.h. A job's indices
 * are claimed with an atomic counter by the workers and the calling thread
 * alike. The caller returns only when every worker has finished the job,
 * so no worker can still hold a finished job when the next one starts.
 *
 * A model run hands the pool hundreds of short jobs, so waiting is
 * spin-then-sleep: a worker polls for the next job, and the caller for
 * the workers' completion, for a bounded number of rounds (20000 `pause`
 * instructions: about half a millisecond on an AMD Zen 4, where one takes
 * about 25 ns) before sleeping on a condition variable. Between runs the
 * workers sleep; they never spin for longer than that.
 */
#include "onnxc_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Polling rounds before sleeping. */
#define ONNXC_POOL_SPIN 20000

struct onnxc_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t idle;
    pthread_t *threads;
    int nthreads;
    atomic_int stop;
    /* Bumped (with release order, after task/data/n are set) per job. */
    atomic_ulong generation;
    onnxc_task task;
    void *data;
    size_t n;
    atomic_size_t next;
    /* Workers done with the current job. */
    atomic_int finished;
};

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void drain(onnxc_pool *p, onnxc_task task, void *data, size_t n) {
    for (;;) {
        size_t i = atomic_fetch_add(&p->next, 1);
        if (i >= n) return;
        task(data, i);
    }
}

static void *worker(void *arg) {
    onnxc_pool *p = arg;
    unsigned long seen = 0;
    for (;;) {
        /* Poll for a new job, then sleep until one comes. */
        for (int s = 0; s < ONNXC_POOL_SPIN; s++) {
            if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen || atomic_load(&p->stop)) break;
            relax();
        }
        if (atomic_load_explicit(&p->generation, memory_order_acquire) == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->lock);
            while (!atomic_load(&p->stop) && atomic_load(&p->generation) == seen) pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        drain(p, p->task, p->data, p->n);
        if (atomic_fetch_add(&p->finished, 1) + 1 == p->nthreads) {
            /* Under the lock, so a caller about to sleep cannot miss it. */
            pthread_mutex_lock(&p->lock);
            pthread_cond_broadcast(&p->idle);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

onnxc_pool *onnxc_pool_create(int threads) {
    onnxc_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    atomic_init(&p->stop, 0);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->finished, 0);
    p->nthreads = threads > 1 ? threads - 1 : 0;
    p->threads = calloc((size_t)(p->nthreads ? p->nthreads : 1), sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int t = 0; t < p->nthreads; t++) {
        if (pthread_create(&p->threads[t], NULL, worker, p) != 0) {
            p->nthreads = t;
            onnxc_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void onnxc_pool_destroy(onnxc_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int t = 0; t < p->nthreads; t++) pthread_join(p->threads[t], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->lock);
    free(p->threads);
    free(p);
}

void onnxc_pool_parallel_for(void *pool, onnxc_task task, void *data, size_t n) {
    onnxc_pool *p = pool;
    if (!p || p->nthreads == 0 || n < 2) {
        for (size_t i = 0; i < n; i++) task(data, i);
        return;
    }
    /* Every worker finished the previous job (see below), so none reads
       these while they change. */
    p->task = task;
    p->data = data;
    p->n = n;
    atomic_store(&p->next, 0);
    atomic_store(&p->finished, 0);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    drain(p, task, data, n);
    /* Every index is claimed; wait until every worker is done with this job. */
    for (int s = 0; s < ONNXC_POOL_SPIN; s++) {
        if (atomic_load(&p->finished) == p->nthreads) return;
        relax();
    }
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->finished) < p->nthreads) pthread_cond_wait(&p->idle, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
