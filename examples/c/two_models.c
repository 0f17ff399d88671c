/*
 * two_models.c: two models compiled with different --name values link into
 * one program; each keeps its own symbols. Built by the test suite with
 *
 *   onnxc compile mlp_digits.onnx -o build --name digits_a --input-shape input=1x64
 *   onnxc compile mlp_digits.onnx -o build --name digits_b --input-shape input=1x64
 *   cc -Ibuild examples/c/two_models.c build/libdigits_a.a build/libdigits_b.a -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "digits_a.h"
#include "digits_b.h"

int main(void) {
    float input[64];
    for (int i = 0; i < 64; i++) input[i] = (float)(i % 17) / 16.0f;
    float out_a[10], out_b[10];
    const void *inputs[1] = {input};
    void *outputs_a[1] = {out_a};
    void *outputs_b[1] = {out_b};
    void *arena_a = aligned_alloc(64, (digits_a_ARENA_BYTES + 63) / 64 * 64 + 64);
    void *arena_b = aligned_alloc(64, (digits_b_ARENA_BYTES + 63) / 64 * 64 + 64);
    if (digits_a_run(inputs, outputs_a, arena_a) != 0 || digits_b_run(inputs, outputs_b, arena_b) != 0) return 1;
    if (memcmp(out_a, out_b, sizeof out_a) != 0) return 3;
    if (digits_a_run(inputs, outputs_a, NULL) != 3) return 4; /* a NULL arena is refused */
    int best = 0;
    for (int i = 1; i < 10; i++) if (out_a[i] > out_a[best]) best = i;
    printf("class %d\n", best);
    return 0;
}
