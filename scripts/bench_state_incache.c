/*
 * The compute cost of one optimizer step per element, in cache (issue 16): Adam with int8 and bf16 state and
 * AdaMax with int8 state (adamlab_adam_step_quantised), the fp32 fused step and the fp32 roofline loop, each
 * build the CPU runs,
 * on one tensor of 16,384 elements (L1/L2-resident), 1 thread. Each figure is the minimum over 3000 single
 * calls, interleaved round-robin: on a shared machine the minimum is the call that ran undisturbed, so the
 * figures measure the arithmetic, not the load. Out of cache a step costs max(this, its memory traffic) at
 * best. Build and run from the repository root:
 *
 *   cc -O3 -fno-math-errno -ffp-contract=off -fno-trapping-math -fopenmp -Isrc/adamlab/kernels \
 *      scripts/bench_state_incache.c -o /tmp/bench_state_incache -lm && /tmp/bench_state_incache
 */
#include "adam_kernels.c"
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { INT8, ADAMAX_INT8, BF16, FP32, ROOFLINE, CONTENDERS };
static const char *NAMES[CONTENDERS] = {"Adam int8 state", "AdaMax int8 state", "Adam bf16 state", "Adam fp32 (fused)",
                                        "fp32 roofline"};

int main(void) {
    int64_t n = 16384;
    float *p = malloc(4 * n), *g = malloc(4 * n), *m32 = calloc(n, 4), *v32 = calloc(n, 4);
    uint16_t *m16 = calloc(n, 2), *v16 = calloc(n, 2);
    int8_t *m8 = calloc(n, 1), *a8 = calloc(n, 1);
    uint8_t *v8 = calloc(n, 1), *u8 = calloc(n, 1);
    float *sm = calloc(n / 64 + 1, 4), *sv = calloc(n / 64 + 1, 4), step = 0.0f;
    float *am = calloc(n / 64 + 1, 4), *au = calloc(n / 64 + 1, 4), astep = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        p[i] = (float)rand() / RAND_MAX - 0.5f;
        g[i] = ((float)rand() / RAND_MAX - 0.5f) * 1e-3f;
    }
    double hp[HP_COUNT] = {1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.999};
    void *P = p, *G = g, *M8 = m8, *V8 = v8, *M16 = m16, *V16 = v16, *SM = sm, *SV = sv, *M32 = m32, *V32 = v32;
    void *A8 = a8, *U8 = u8, *AM = am, *AU = au;
    double hpmax[HP_COUNT] = {2e-3, 0.9, 0.999, 0.0, 0.0, 1.0, 0.999}; /* AdaMax's defaults (ε = 0) */
    float *S = &step, *AS = &astep;
    int64_t seed = 1, bad;
    const char *isas[ISA_COUNT] = {"scalar", "avx2", "avx512"};
    for (int isa = 0; isa < ISA_COUNT; ++isa) {
        if (adamlab_set_isa(isa) < 0) continue;
        double best[CONTENDERS];
        for (int c = 0; c < CONTENDERS; ++c) best[c] = 1e9;
        for (int r = 0; r < 3000; ++r) {
            for (int c = 0; c < CONTENDERS; ++c) {
                double t = now();
                if (c == INT8)
                    adamlab_adam_step_quantised(1, 0, 1, &n, &P, &G, &M8, &V8, &SM, &SV, &S, &seed, 256, hp,
                                                FLAG_BIAS_CORRECTION, 1, &bad);
                else if (c == ADAMAX_INT8)
                    adamlab_adam_step_quantised(1, 1, 1, &n, &P, &G, &A8, &U8, &AM, &AU, &AS, &seed, 256, hpmax,
                                                FLAG_BIAS_CORRECTION, 1, &bad);
                else if (c == BF16)
                    adamlab_adam_step_quantised(0, 0, 1, &n, &P, &G, &M16, &V16, &SM, &SV, &S, &seed, 256, hp,
                                                FLAG_BIAS_CORRECTION, 1, &bad);
                else if (c == FP32)
                    adamlab_adam_step(0, 1, &n, &P, &G, &M32, &V32, NULL, NULL, &S, hp, FLAG_BIAS_CORRECTION, 1,
                                      &bad);
                else
                    adamlab_roofline(n, p, g, m32, v32, 1);
                t = now() - t;
                if (t < best[c]) best[c] = t;
            }
        }
        for (int c = 0; c < CONTENDERS; ++c)
            printf("%-7s %-18s %6.3f ns/element  %5.2f x the roofline's time\n", isas[isa], NAMES[c],
                   best[c] / (double)n * 1e9, best[c] / best[ROOFLINE]);
    }
    return 0;
}
