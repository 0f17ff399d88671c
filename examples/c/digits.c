/*
 * digits.c: classify one handwritten digit with the compiled digits MLP.
 *
 *   cargo run --release -p onnxc -- compile testdata/mlp_digits.onnx -o build/ --input-shape input=1x64
 *   cc -Ibuild examples/c/digits.c build/libmlp_digits.a -lm -o build/digits && ./build/digits
 *
 * The model takes 8x8 grey-level pixels scaled to [0, 1] (scikit-learn's
 * digits, divided by 16) and returns 10 logits.
 */
#include <stdio.h>
#include <stdlib.h>
#include "mlp_digits.h"

/* A "2" from the held-out test split, grey levels 0..16. */
static const unsigned char pixels[64] = {
    0, 0, 7, 16, 14, 3, 0, 0,  0, 0, 9, 14, 11, 15, 0, 0,
    0, 0, 1, 5, 0, 15, 5, 0,   0, 0, 0, 0, 0, 16, 5, 0,
    0, 0, 0, 0, 3, 16, 4, 0,   0, 0, 0, 1, 12, 14, 1, 0,
    0, 0, 5, 12, 16, 16, 14, 1, 0, 0, 8, 16, 14, 10, 13, 3,
};

int main(void) {
    float input[64];
    for (int i = 0; i < 64; i++) input[i] = pixels[i] / 16.0f;
    float logits[10];
    const void *inputs[mlp_digits_NUM_INPUTS] = {input};
    void *outputs[mlp_digits_NUM_OUTPUTS] = {logits};
    /* The arena is the model's scratch memory: 64-byte aligned, caller-owned. */
    void *arena = aligned_alloc(64, (mlp_digits_ARENA_BYTES + 63) / 64 * 64 + 64);
    if (!arena || mlp_digits_run(inputs, outputs, arena) != 0) {
        fprintf(stderr, "inference failed\n");
        return 1;
    }
    int best = 0;
    for (int i = 1; i < 10; i++)
        if (logits[i] > logits[best]) best = i;
    for (int row = 0; row < 8; row++) {
        for (int col = 0; col < 8; col++) putchar(" .:-=+*#%@"[pixels[row * 8 + col] * 9 / 16]);
        putchar('\n');
    }
    printf("predicted digit: %d (logit %.3f)\n", best, logits[best]);
    free(arena);
    return 0;
}
