/*
 * onnxc_pool.h: a small thread pool for onnxc-compiled models (written next
 * to every compiled model; plain C11 with POSIX threads).
 *
 *   onnxc_pool *pool = onnxc_pool_create(4);          // 4 threads in all
 *   NAME_run_parallel(inputs, outputs, arena, onnxc_pool_parallel_for, pool);
 *   onnxc_pool_destroy(pool);
 *
 * Build: cc -pthread app.c onnxc_pool.c libNAME.a -lm
 * The calling thread works too, so a pool of N runs N-1 helper threads.
 * One pool serves one model call at a time.
 */
#ifndef ONNXC_POOL_H
#define ONNXC_POOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef ONNXC_PARALLEL_FOR_DEFINED
#define ONNXC_PARALLEL_FOR_DEFINED
typedef void (*onnxc_task)(void *data, size_t i);
typedef void (*onnxc_parallel_for)(void *pool, onnxc_task task, void *data, size_t n);
#endif

typedef struct onnxc_pool onnxc_pool;

/* A pool of `threads` threads including the caller; NULL on failure. */
onnxc_pool *onnxc_pool_create(int threads);
/* Stops and frees the pool's threads. */
void onnxc_pool_destroy(onnxc_pool *pool);
/* The parallel-for hook: runs task(data, i) for i in [0, n) on the pool. */
void onnxc_pool_parallel_for(void *pool, onnxc_task task, void *data, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* ONNXC_POOL_H */
