/*
 * run_model.c: a generic driver for a model compiled by onnxc.
 *
 * Build it against a compiled model (here the digits MLP):
 *
 *   onnxc compile testdata/mlp_digits.onnx -o build/ --input-shape input=1x64
 *   cc -Ibuild -DMODEL=mlp_digits -DMODEL_HEADER='"mlp_digits.h"' \
 *      examples/c/run_model.c build/libmlp_digits.a -lm -o build/run_model
 *
 * Run it with one raw little-endian file per input and one path per output:
 *
 *   build/run_model input0.bin output0.bin
 *
 * It reads each input (exactly MODEL_input_bytes[i] bytes), allocates the
 * arena the header asks for, calls MODEL_run once and writes each output.
 * With -DTHREADS=N (and -pthread build/onnxc_pool.c on the command line) it
 * calls MODEL_run_parallel with the default pool of N threads instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef MODEL
#error "define MODEL (the name given to onnxc --name, or the model file's stem)"
#endif
#include MODEL_HEADER

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NUM_INPUTS CAT(MODEL, _NUM_INPUTS)
#define NUM_OUTPUTS CAT(MODEL, _NUM_OUTPUTS)
#define ARENA_BYTES CAT(MODEL, _ARENA_BYTES)
#define INPUT_BYTES CAT(MODEL, _input_bytes)
#define OUTPUT_BYTES CAT(MODEL, _output_bytes)
#define RUN CAT(MODEL, _run)
#define RUN_PARALLEL CAT(MODEL, _run_parallel)
#ifdef THREADS
#include "onnxc_pool.h"
#endif

static void *read_file(const char *path, size_t expected) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(2);
    }
    void *buf = malloc(expected ? expected : 1);
    size_t got = fread(buf, 1, expected, f);
    int extra = fgetc(f);
    fclose(f);
    if (got != expected || extra != EOF) {
        fprintf(stderr, "%s: expected exactly %zu bytes\n", path, expected);
        exit(2);
    }
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 1 + NUM_INPUTS + NUM_OUTPUTS) {
        fprintf(stderr, "usage: %s INPUT_FILE x%d OUTPUT_FILE x%d\n", argv[0], NUM_INPUTS, NUM_OUTPUTS);
        return 2;
    }
    const void *inputs[NUM_INPUTS + 1];
    void *outputs[NUM_OUTPUTS + 1];
    for (int i = 0; i < NUM_INPUTS; i++) inputs[i] = read_file(argv[1 + i], INPUT_BYTES[i]);
    for (int i = 0; i < NUM_OUTPUTS; i++) outputs[i] = malloc(OUTPUT_BYTES[i] ? OUTPUT_BYTES[i] : 1);
    size_t arena_bytes = ((size_t)ARENA_BYTES + 63) / 64 * 64;
    void *arena = aligned_alloc(64, arena_bytes ? arena_bytes : 64);
#ifdef THREADS
    onnxc_pool *pool = onnxc_pool_create(THREADS);
    if (!pool) {
        fprintf(stderr, "cannot start %d threads\n", THREADS);
        return 2;
    }
    int status = RUN_PARALLEL(inputs, outputs, arena, onnxc_pool_parallel_for, pool);
    /* A second run reuses the pool (and the arena). */
    if (status == 0) status = RUN_PARALLEL(inputs, outputs, arena, onnxc_pool_parallel_for, pool);
    onnxc_pool_destroy(pool);
#else
    int status = RUN(inputs, outputs, arena);
#endif
    if (status != 0) {
        fprintf(stderr, "model returned status %d\n", status);
        return 1;
    }
    for (int i = 0; i < NUM_OUTPUTS; i++) {
        FILE *f = fopen(argv[1 + NUM_INPUTS + i], "wb");
        if (!f || fwrite(outputs[i], 1, OUTPUT_BYTES[i], f) != OUTPUT_BYTES[i]) {
            fprintf(stderr, "cannot write %s\n", argv[1 + NUM_INPUTS + i]);
            return 2;
        }
        fclose(f);
    }
    free(arena);
    return 0;
}
