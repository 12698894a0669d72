/*
 * adamlab's fused CPU kernels: one pass over memory for every parameter of a group.
 *
 * Each array (θ, g, m, v and, where used, v_max and θ̄) is read once and written once per step; no
 * temporaries. The per-tensor scalars (α_t, bias corrections, β1,t) are computed once per tensor from its
 * own step counter, mirroring adamlab/formulas.py line for line (the tests check every option of this kernel
 * against the reference path, which takes its scalars from formulas.py).
 *
 * Threads: plain pthreads over an even split of the concatenated elements, so no second OpenMP runtime
 * fights torch's over the cores. Non-finite gradients: the affected coordinates keep their old θ, m, v
 * (a select, so the loop still vectorises) and are counted per tensor; the caller raises.
 *
 * Built by adamlab/kernels/build.py with -O3 -march=native -fno-math-errno -fno-trapping-math (no
 * -ffast-math: IEEE semantics are kept, and the finiteness test g - g == 0 relies on them).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Type-generic sqrt/fabs: float arithmetic stays float (sqrt() would promote to double). */
#define SQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x)
#define FABS(x) _Generic((x), float: fabsf, double: fabs)(x)

#define FLAG_MAXIMIZE 1
#define FLAG_DECOUPLED 2
#define FLAG_BIAS_CORRECTION 4
#define FLAG_EPS_HAT 8
#define FLAG_LR_SQRT 16
#define FLAG_AMSGRAD 32
#define FLAG_AVERAGING 64
#define FLAG_BETA1_DECAY 128

/* Hyper-parameters, as doubles, in this order (see fused.py). */
enum { HP_LR, HP_BETA1, HP_BETA2, HP_EPS, HP_WD, HP_BETA1_DECAY, HP_AVG_BETA, HP_COUNT };

/* Per-tensor scalars of one step. */
typedef struct {
    double beta1_t, beta2, step, denom_scale, eps, l2, decay, sign, avg_beta;
} scalars_t;

/* formulas.py, mirrored: α_t, β1,t and the folded step scalars of Adam (adam_scalars / adam_hat_step). */
static void adam_scalars(const double *hp, int flags, double t, scalars_t *s) {
    double lr = hp[HP_LR], b1 = hp[HP_BETA1], b2 = hp[HP_BETA2];
    double alpha_t = (flags & FLAG_LR_SQRT) ? lr / sqrt(t) : lr;
    s->beta1_t = (flags & FLAG_BETA1_DECAY) ? b1 * pow(hp[HP_BETA1_DECAY], t - 1.0) : b1;
    s->beta2 = b2;
    s->eps = hp[HP_EPS];
    if (!(flags & FLAG_BIAS_CORRECTION)) {
        s->step = alpha_t;
        s->denom_scale = 1.0;
    } else if (flags & FLAG_EPS_HAT) {
        s->step = alpha_t * sqrt(1.0 - pow(b2, t)) / (1.0 - pow(b1, t));
        s->denom_scale = 1.0;
    } else {
        s->step = alpha_t / (1.0 - pow(b1, t));
        s->denom_scale = 1.0 / sqrt(1.0 - pow(b2, t));
    }
    int decoupled = flags & FLAG_DECOUPLED;
    s->l2 = decoupled ? 0.0 : hp[HP_WD];
    s->decay = decoupled ? 1.0 - alpha_t * hp[HP_WD] : 1.0;
    s->sign = (flags & FLAG_MAXIMIZE) ? -1.0 : 1.0;
    s->avg_beta = hp[HP_AVG_BETA];
}

/* AdaMax (Algorithm 2): step = α_t/(1 − β1^t), or α_t without bias correction. */
static void adamax_scalars(const double *hp, int flags, double t, scalars_t *s) {
    adam_scalars(hp, flags & ~FLAG_EPS_HAT, t, s);
    s->denom_scale = 1.0;
}

/* ---------------------------------------------------------------- element loops */

#define ADAM_LOOP(T, AMS, AVG)                                                                   \
    static int64_t adam_loop_##T##_##AMS##_##AVG(int64_t n, T *restrict p, const T *restrict g,   \
                                                  T *restrict m, T *restrict v, T *restrict vmax, \
                                                  T *restrict avg, const scalars_t *s) {          \
        const T b1 = (T)s->beta1_t, c1 = (T)(1.0 - s->beta1_t);                                  \
        const T b2 = (T)s->beta2, c2 = (T)(1.0 - s->beta2);                                      \
        const T step = (T)s->step, dscale = (T)s->denom_scale, eps = (T)s->eps;                  \
        const T l2 = (T)s->l2, decay = (T)s->decay, sign = (T)s->sign;                           \
        const T ab = (T)s->avg_beta, ac = (T)(1.0 - s->avg_beta);                                \
        int64_t bad = 0;                                                                         \
        (void)vmax; (void)avg; (void)ab; (void)ac;                                               \
        for (int64_t i = 0; i < n; ++i) {                                                        \
            const T gi = g[i], pi = p[i], mi = m[i], vi = v[i];                                  \
            const int ok = (gi - gi) == (T)0;                                                    \
            bad += !ok;                                                                          \
            const T ge = sign * gi + l2 * pi;                                                    \
            const T mn = b1 * mi + c1 * ge;                                                      \
            const T vn = b2 * vi + c2 * (ge * ge);                                               \
            T vu = vn;                                                                           \
            if (AMS) {                                                                           \
                const T vm = vmax[i];                                                            \
                const T vmn = vm > vn ? vm : vn;                                                 \
                vmax[i] = ok ? vmn : vm;                                                         \
                vu = vmn;                                                                        \
            }                                                                                    \
            const T den = SQRT(vu) * dscale + eps;                                               \
            /* den = 0 only with eps = 0 and no gradient yet: the step is 0 there, not 0/0. */      \
            const T pn = pi * decay - (den > (T)0 ? step * mn / den : (T)0);                     \
            p[i] = ok ? pn : pi;                                                                 \
            m[i] = ok ? mn : mi;                                                                 \
            v[i] = ok ? vn : vi;                                                                 \
            if (AVG) {                                                                           \
                const T ai = avg[i];                                                             \
                avg[i] = ok ? ab * ai + ac * pn : ai;                                            \
            }                                                                                    \
        }                                                                                        \
        return bad;                                                                              \
    }

#define ADAMAX_LOOP(T, AVG)                                                                       \
    static int64_t adamax_loop_##T##_##AVG(int64_t n, T *restrict p, const T *restrict g,          \
                                           T *restrict m, T *restrict u, T *restrict unused,       \
                                           T *restrict avg, const scalars_t *s) {                  \
        const T b1 = (T)s->beta1_t, c1 = (T)(1.0 - s->beta1_t), b2 = (T)s->beta2;                 \
        const T step = (T)s->step, eps = (T)s->eps;                                               \
        const T l2 = (T)s->l2, decay = (T)s->decay, sign = (T)s->sign;                            \
        const T ab = (T)s->avg_beta, ac = (T)(1.0 - s->avg_beta);                                 \
        int64_t bad = 0;                                                                          \
        (void)unused; (void)avg; (void)ab; (void)ac;                                              \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            const T gi = g[i], pi = p[i], mi = m[i], ui = u[i];                                   \
            const int ok = (gi - gi) == (T)0;                                                     \
            bad += !ok;                                                                           \
            const T ge = sign * gi + l2 * pi;                                                     \
            const T mn = b1 * mi + c1 * ge;                                                       \
            const T a = b2 * ui, b = FABS(ge) + eps;                                              \
            const T un = a > b ? a : b;                                                           \
            /* Where u = 0 the step is 0 (with β2 > 0: every gradient so far was 0, so m = 0). */  \
            const T r = un > (T)0 ? mn / un : (T)0;                                               \
            const T pn = pi * decay - step * r;                                                   \
            p[i] = ok ? pn : pi;                                                                  \
            m[i] = ok ? mn : mi;                                                                  \
            u[i] = ok ? un : ui;                                                                  \
            if (AVG) {                                                                            \
                const T ai = avg[i];                                                              \
                avg[i] = ok ? ab * ai + ac * pn : ai;                                             \
            }                                                                                     \
        }                                                                                         \
        return bad;                                                                               \
    }

ADAM_LOOP(float, 0, 0)
ADAM_LOOP(float, 0, 1)
ADAM_LOOP(float, 1, 0)
ADAM_LOOP(float, 1, 1)
ADAM_LOOP(double, 0, 0)
ADAM_LOOP(double, 0, 1)
ADAM_LOOP(double, 1, 0)
ADAM_LOOP(double, 1, 1)
ADAMAX_LOOP(float, 0)
ADAMAX_LOOP(float, 1)
ADAMAX_LOOP(double, 0)
ADAMAX_LOOP(double, 1)

typedef int64_t (*loop_f32)(int64_t, float *, const float *, float *, float *, float *, float *,
                            const scalars_t *);
typedef int64_t (*loop_f64)(int64_t, double *, const double *, double *, double *, double *, double *,
                            const scalars_t *);

/* ---------------------------------------------------------------- multi-tensor driver */

typedef struct {
    int64_t n_tensors;
    const int64_t *numel;
    void *const *arrays[6]; /* p, g, m, v (or u), v_max, θ̄ */
    const scalars_t *scalars;
    int is_double;
    loop_f32 f32;
    loop_f64 f64;
    int64_t *nonfinite; /* per tensor */
    int64_t begin, end; /* this worker's range of the concatenated elements */
} job_t;

static void run_range(job_t *job) {
    int64_t offset = 0;
    for (int64_t k = 0; k < job->n_tensors && offset < job->end; ++k) {
        int64_t n = job->numel[k];
        int64_t lo = job->begin > offset ? job->begin - offset : 0;
        int64_t hi = job->end - offset < n ? job->end - offset : n;
        offset += n;
        if (hi <= lo) continue;
        int64_t bad;
        if (job->is_double) {
#define A64(j) (job->arrays[j] ? (double *)job->arrays[j][k] + lo : NULL)
            bad = job->f64(hi - lo, A64(0), A64(1), A64(2), A64(3), A64(4), A64(5), &job->scalars[k]);
        } else {
#define A32(j) (job->arrays[j] ? (float *)job->arrays[j][k] + lo : NULL)
            bad = job->f32(hi - lo, A32(0), A32(1), A32(2), A32(3), A32(4), A32(5), &job->scalars[k]);
        }
        if (bad) __atomic_fetch_add(&job->nonfinite[k], bad, __ATOMIC_RELAXED);
    }
}

static void *worker(void *arg) {
    run_range((job_t *)arg);
    return NULL;
}

#define MIN_PER_THREAD (1 << 16)
#define MAX_THREADS 64

/*
 * One step for n_tensors tensors of one dtype. steps[k] points at tensor k's float32 step counter, which is
 * incremented here. Returns the number of non-finite gradient entries (per tensor in nonfinite[k]).
 */
static int64_t multi_step(int is_adamax, int is_double, int64_t n_tensors, const int64_t *numel,
                          void *const *param, void *const *grad, void *const *m, void *const *v,
                          void *const *vmax, void *const *avg, float *const *steps, const double *hp,
                          int flags, int nthreads, int64_t *nonfinite) {
    scalars_t *scalars = (scalars_t *)malloc(sizeof(scalars_t) * (n_tensors > 0 ? n_tensors : 1));
    if (!scalars) return -1;
    int64_t total = 0;
    for (int64_t k = 0; k < n_tensors; ++k) {
        double t = (double)*steps[k] + 1.0;
        *steps[k] = (float)t;
        if (is_adamax) adamax_scalars(hp, flags, t, &scalars[k]);
        else adam_scalars(hp, flags, t, &scalars[k]);
        nonfinite[k] = 0;
        total += numel[k];
    }
    int ams = !is_adamax && (flags & FLAG_AMSGRAD), av = (flags & FLAG_AVERAGING) != 0;
    job_t base;
    memset(&base, 0, sizeof base);
    base.n_tensors = n_tensors;
    base.numel = numel;
    base.arrays[0] = param; base.arrays[1] = grad; base.arrays[2] = m; base.arrays[3] = v;
    base.arrays[4] = ams ? vmax : NULL; base.arrays[5] = av ? avg : NULL;
    base.scalars = scalars;
    base.is_double = is_double;
    base.nonfinite = nonfinite;
    if (is_adamax) {
        base.f32 = av ? adamax_loop_float_1 : adamax_loop_float_0;
        base.f64 = av ? adamax_loop_double_1 : adamax_loop_double_0;
    } else {
        loop_f32 f32s[4] = {adam_loop_float_0_0, adam_loop_float_0_1, adam_loop_float_1_0, adam_loop_float_1_1};
        loop_f64 f64s[4] = {adam_loop_double_0_0, adam_loop_double_0_1, adam_loop_double_1_0,
                            adam_loop_double_1_1};
        base.f32 = f32s[ams * 2 + av];
        base.f64 = f64s[ams * 2 + av];
    }
    int64_t want = total / MIN_PER_THREAD;
    int nt = nthreads < 1 ? 1 : (nthreads > MAX_THREADS ? MAX_THREADS : nthreads);
    if (want < nt) nt = want < 1 ? 1 : (int)want;
    job_t jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    for (int j = 0; j < nt; ++j) {
        jobs[j] = base;
        jobs[j].begin = total * j / nt;
        jobs[j].end = total * (j + 1) / nt;
        started[j] = 0;
    }
    for (int j = 1; j < nt; ++j)
        started[j] = pthread_create(&threads[j], NULL, worker, &jobs[j]) == 0;
    run_range(&jobs[0]);
    for (int j = 1; j < nt; ++j) {
        if (started[j]) pthread_join(threads[j], NULL);
        else run_range(&jobs[j]); /* could not start a thread: do its share here */
    }
    free(scalars);
    int64_t bad = 0;
    for (int64_t k = 0; k < n_tensors; ++k) bad += nonfinite[k];
    return bad;
}

int64_t adamlab_adam_step(int is_double, int64_t n_tensors, const int64_t *numel, void *const *param,
                          void *const *grad, void *const *m, void *const *v, void *const *vmax,
                          void *const *avg, float *const *steps, const double *hp, int flags, int nthreads,
                          int64_t *nonfinite) {
    return multi_step(0, is_double, n_tensors, numel, param, grad, m, v, vmax, avg, steps, hp, flags,
                      nthreads, nonfinite);
}

int64_t adamlab_adamax_step(int is_double, int64_t n_tensors, const int64_t *numel, void *const *param,
                            void *const *grad, void *const *m, void *const *u, void *const *avg,
                            float *const *steps, const double *hp, int flags, int nthreads,
                            int64_t *nonfinite) {
    return multi_step(1, is_double, n_tensors, numel, param, grad, m, u, NULL, avg, steps, hp, flags,
                      nthreads, nonfinite);
}

/*
 * The roofline: Adam's memory pattern (read θ, g, m, v; write θ, m, v: 28 bytes per fp32 parameter) with
 * trivial arithmetic. What no Adam step on this machine can beat; the benchmark's yardstick.
 */
typedef struct {
    float *p, *g, *m, *v;
    int64_t begin, end;
} roof_t;

static void *roof_worker(void *arg) {
    roof_t *r = (roof_t *)arg;
    float *restrict p = r->p, *restrict m = r->m, *restrict v = r->v;
    const float *restrict g = r->g;
    for (int64_t i = r->begin; i < r->end; ++i) {
        const float gi = g[i];
        m[i] = m[i] + gi;
        v[i] = v[i] + gi;
        p[i] = p[i] - gi;
    }
    return NULL;
}

void adamlab_roofline(int64_t n, float *p, const float *g, float *m, float *v, int nthreads) {
    int nt = nthreads < 1 ? 1 : (nthreads > MAX_THREADS ? MAX_THREADS : nthreads);
    roof_t jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    for (int j = 0; j < nt; ++j) {
        jobs[j].p = p; jobs[j].g = (float *)g; jobs[j].m = m; jobs[j].v = v;
        jobs[j].begin = n * j / nt;
        jobs[j].end = n * (j + 1) / nt;
    }
    for (int j = 1; j < nt; ++j) started[j] = pthread_create(&threads[j], NULL, roof_worker, &jobs[j]) == 0;
    roof_worker(&jobs[0]);
    for (int j = 1; j < nt; ++j) {
        if (started[j]) pthread_join(threads[j], NULL);
        else roof_worker(&jobs[j]);
    }
}
