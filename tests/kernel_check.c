/*
 * A Python-free check of the fused kernel (src/adamlab/kernels/adam_kernels.c), for any architecture: built
 * natively or with a cross compiler and run under emulation (scripts/check_kernel_arch.sh, tests/
 * test_kernels_build.py). It includes the kernel's source (so its option bits and hyper-parameter order are
 * the kernel's own) and checks, for every instruction-set build this CPU runs, Adam and AdaMax (with and
 * without weight decay, AMSGrad and averaging) on tensors of sizes around every vector width, against the
 * paper's algorithms written out here in double precision (Kingma & Ba, Algorithms 1 and 2), and that a
 * non-finite gradient entry is counted and leaves its coordinate unchanged.
 *
 * Prints one line per check and "kernel_check: ok (<n> checks, builds: ...)"; exits 1 on any mismatch.
 * Build: cc -O2 -std=gnu11 -I src/adamlab/kernels tests/kernel_check.c -lm -lpthread
 */
#include "adam_kernels.c"

#include <stdio.h>

#define NT 6
static const int64_t SIZES[NT] = {1, 7, 9, 17, 33, 1001};
#define STEPS 5

static double urand(uint64_t *state) { /* xorshift64*, in [-1, 1) */
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (double)((*state * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* One step of the paper's algorithm for one coordinate, in double: Adam (Algorithm 1, with the §2 note's
 * efficient order and optional AMSGrad / L2 / decoupled decay) or AdaMax (Algorithm 2). */
static void reference_step(int adamax, int flags, const double *hp, double t, double g, double *p, double *m,
                           double *v, double *vmax, double *avg) {
    double lr = hp[HP_LR], b1 = hp[HP_BETA1], b2 = hp[HP_BETA2], eps = hp[HP_EPS], wd = hp[HP_WD];
    double theta = *p;
    if (wd != 0.0 && !(flags & FLAG_DECOUPLED)) g += wd * theta;
    *m = b1 * *m + (1.0 - b1) * g;
    double update;
    if (adamax) {
        double a = b2 * *v, b = fabs(g) + eps;
        *v = a > b ? a : b;
        update = lr / (1.0 - pow(b1, t)) * *m / *v;
    } else {
        *v = b2 * *v + (1.0 - b2) * g * g;
        double vh = *v;
        if (flags & FLAG_AMSGRAD) {
            *vmax = *vmax > *v ? *vmax : *v;
            vh = *vmax;
        }
        double mhat = *m / (1.0 - pow(b1, t)), vhat = vh / (1.0 - pow(b2, t));
        update = lr * mhat / (sqrt(vhat) + eps);
    }
    if (wd != 0.0 && (flags & FLAG_DECOUPLED)) theta *= 1.0 - lr * wd;
    *p = theta - update;
    if (flags & FLAG_AVERAGING) *avg = hp[HP_AVG_BETA] * *avg + (1.0 - hp[HP_AVG_BETA]) * *p;
}

static int failures = 0, checks = 0;

/* Run STEPS steps of the kernel (float32) and of the reference (double) from the same start; compare. */
static void check(int adamax, int flags, double wd, int isa) {
    double hp[HP_COUNT] = {0};
    hp[HP_LR] = 1e-2; hp[HP_BETA1] = 0.9; hp[HP_BETA2] = 0.999; hp[HP_EPS] = 1e-8; hp[HP_WD] = wd;
    hp[HP_BETA1_DECAY] = 1.0; hp[HP_AVG_BETA] = 0.99;
    float *p[NT], *g[NT], *m[NT], *v[NT], *vm[NT], *av[NT], step[NT], *steps[NT];
    double *rp[NT], *rm[NT], *rv[NT], *rvm[NT], *rav[NT];
    int64_t nonfinite[NT];
    uint64_t seed = 88172645463325252ull;
    for (int k = 0; k < NT; ++k) {
        int64_t n = SIZES[k];
        p[k] = calloc(n, 4); g[k] = calloc(n, 4); m[k] = calloc(n, 4); v[k] = calloc(n, 4);
        vm[k] = calloc(n, 4); av[k] = calloc(n, 4);
        rp[k] = calloc(n, 8); rm[k] = calloc(n, 8); rv[k] = calloc(n, 8); rvm[k] = calloc(n, 8);
        rav[k] = calloc(n, 8);
        for (int64_t i = 0; i < n; ++i) rp[k][i] = p[k][i] = (float)urand(&seed);
        step[k] = 0.0f;
        steps[k] = &step[k];
    }
    for (int s = 1; s <= STEPS; ++s) {
        for (int k = 0; k < NT; ++k)
            for (int64_t i = 0; i < SIZES[k]; ++i) g[k][i] = (float)urand(&seed);
        g[NT - 1][500] = s == 3 ? NAN : g[NT - 1][500]; /* one non-finite entry at step 3 */
        int64_t bad = adamax ? adamlab_adamax_step(0, NT, SIZES, (void *const *)p, (void *const *)g,
                                                   (void *const *)m, (void *const *)v, (void *const *)av,
                                                   steps, hp, flags, 2, nonfinite)
                             : adamlab_adam_step(0, NT, SIZES, (void *const *)p, (void *const *)g,
                                                 (void *const *)m, (void *const *)v, (void *const *)vm,
                                                 (void *const *)av, steps, hp, flags, 2, nonfinite);
        if (bad != (s == 3) || nonfinite[NT - 1] != (s == 3)) {
            printf("FAIL isa %d adamax %d flags %d: non-finite count %lld at step %d\n", isa, adamax, flags,
                   (long long)bad, s);
            ++failures;
        }
        for (int k = 0; k < NT; ++k)
            for (int64_t i = 0; i < SIZES[k]; ++i)
                if (!(k == NT - 1 && i == 500 && s == 3))
                    reference_step(adamax, flags, hp, (double)s, (double)g[k][i], &rp[k][i], &rm[k][i],
                                   &rv[k][i], &rvm[k][i], &rav[k][i]);
    }
    double worst = 0.0;
    for (int k = 0; k < NT; ++k)
        for (int64_t i = 0; i < SIZES[k]; ++i) {
            double pairs[4][2] = {{p[k][i], rp[k][i]}, {m[k][i], rm[k][i]}, {v[k][i], rv[k][i]},
                                  {av[k][i], (flags & FLAG_AVERAGING) ? rav[k][i] : 0.0}};
            for (int j = 0; j < 4; ++j) {
                double err = fabs(pairs[j][0] - pairs[j][1]) / (1e-6 + 1e-5 * fabs(pairs[j][1]));
                worst = err > worst ? err : worst;
            }
        }
    ++checks;
    int ok = worst <= 1.0 && step[0] == (float)STEPS;
    printf("%s isa %d %s flags %3d wd %.2f: worst error %.3f of the tolerance\n", ok ? "ok  " : "FAIL", isa,
           adamax ? "adamax" : "adam  ", flags, wd, worst);
    failures += !ok;
    for (int k = 0; k < NT; ++k) {
        free(p[k]); free(g[k]); free(m[k]); free(v[k]); free(vm[k]); free(av[k]);
        free(rp[k]); free(rm[k]); free(rv[k]); free(rvm[k]); free(rav[k]);
    }
}

int main(void) {
    char builds[64] = "";
    for (int isa = 0; isa < ISA_COUNT; ++isa) {
        if (!adamlab_isa_supported(isa)) continue;
        if (adamlab_set_isa(isa) != isa || adamlab_get_isa() != isa) {
            printf("FAIL: cannot select build %d\n", isa);
            return 1;
        }
        snprintf(builds + strlen(builds), sizeof builds - strlen(builds), "%s%d", *builds ? "," : "", isa);
        const int bc = FLAG_BIAS_CORRECTION;
        for (int adamax = 0; adamax < 2; ++adamax) {
            check(adamax, bc, 0.0, isa);
            check(adamax, bc, 0.1, isa);
            check(adamax, bc | FLAG_DECOUPLED | FLAG_AVERAGING, 0.1, isa);
        }
        check(0, bc | FLAG_AMSGRAD | FLAG_AVERAGING, 0.0, isa);
    }
    if (adamlab_set_isa(ISA_COUNT) != -1) {
        printf("FAIL: an unknown build was accepted\n");
        ++failures;
    }
    printf("kernel_check: %s (%d checks, builds: %s)\n", failures ? "FAILED" : "ok", checks, builds);
    return failures ? 1 : 0;
}
