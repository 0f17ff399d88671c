/*
 * onnxc_pool.c: the thread pool declared in onnxc_pool.h. Workers sleep on
 * a condition variable between jobs; a job's indices are claimed with an
 * atomic counter by the workers and the calling thread alike. The caller
 * returns only when every worker has finished the job, so no worker can
 * still hold a finished job when the next one starts.
 */
#include "onnxc_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct onnxc_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t idle;
    pthread_t *threads;
    int nthreads;
    int stop;
    unsigned long generation;
    onnxc_task task;
    void *data;
    size_t n;
    atomic_size_t next;
    int finished;
};

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
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
        if (p->stop) break;
        seen = p->generation;
        onnxc_task task = p->task;
        void *data = p->data;
        size_t n = p->n;
        pthread_mutex_unlock(&p->lock);
        drain(p, task, data, n);
        pthread_mutex_lock(&p->lock);
        if (++p->finished == p->nthreads) pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

onnxc_pool *onnxc_pool_create(int threads) {
    onnxc_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->idle, NULL);
    atomic_init(&p->next, 0);
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
    p->stop = 1;
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
    pthread_mutex_lock(&p->lock);
    p->task = task;
    p->data = data;
    p->n = n;
    atomic_store(&p->next, 0);
    p->finished = 0;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    drain(p, task, data, n);
    /* Every index is claimed; wait until every worker is done with this job. */
    pthread_mutex_lock(&p->lock);
    while (p->finished < p->nthreads) pthread_cond_wait(&p->idle, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
