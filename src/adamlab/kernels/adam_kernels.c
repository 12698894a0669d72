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

ADAM_LOOP(double, 0, 0)
ADAM_LOOP(double, 0, 1)
ADAM_LOOP(double, 1, 0)
ADAM_LOOP(double, 1, 1)
ADAMAX_LOOP(float, 0)
ADAMAX_LOOP(float, 1)
ADAMAX_LOOP(double, 0)
ADAMAX_LOOP(double, 1)

#if defined(__AVX512F__)
#include <float.h>
#include <immintrin.h>
/*
 * fp32 Adam with AVX-512: 16 lanes, the tail through masked loads and stores, so every element takes the
 * same arithmetic wherever the thread split and the tensor ends fall (results never depend on the thread
 * count).
 *
 * Why not the generic loop: √v and the division each cost about 10 cycles per 16 lanes on the same divider
 * unit, which makes the generic loop compute-bound in cache (small models) and level with memory on one
 * thread out of cache. Here the division is a reciprocal estimate (rcp14) refined by one Newton step,
 * q·(2 − d·q): relative error about 2^-28 before rounding, within an ulp or so of step·m/d; √v stays exact.
 * Denominators outside [FLT_MIN, FLT_MAX] (ε = 0 with v = 0 or subnormal, overflow) take the exact
 * division for that vector; where the denominator is 0 the step is 0, as in the generic loop.
 */
#define ADAM_AVX512(AMS, AVG)                                                                        \
    static int64_t adam_avx512_##AMS##_##AVG(int64_t n, float *restrict p, const float *restrict g,   \
                                             float *restrict m, float *restrict v,                    \
                                             float *restrict vmax, float *restrict avg,               \
                                             const scalars_t *s) {                                    \
        const __m512 b1 = _mm512_set1_ps((float)s->beta1_t);                                         \
        const __m512 c1 = _mm512_set1_ps((float)(1.0 - s->beta1_t));                                 \
        const __m512 b2 = _mm512_set1_ps((float)s->beta2);                                           \
        const __m512 c2 = _mm512_set1_ps((float)(1.0 - s->beta2));                                   \
        const __m512 step = _mm512_set1_ps((float)s->step);                                          \
        const __m512 dscale = _mm512_set1_ps((float)s->denom_scale);                                 \
        const __m512 eps = _mm512_set1_ps((float)s->eps);                                            \
        const __m512 l2 = _mm512_set1_ps((float)s->l2), decay = _mm512_set1_ps((float)s->decay);     \
        const __m512 sign = _mm512_set1_ps((float)s->sign);                                          \
        const __m512 ab = _mm512_set1_ps((float)s->avg_beta);                                        \
        const __m512 ac = _mm512_set1_ps((float)(1.0 - s->avg_beta));                                \
        const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);                         \
        const __m512 two = _mm512_set1_ps(2.0f);                                                     \
        const __m512 lo = _mm512_set1_ps(FLT_MIN), hi = _mm512_set1_ps(FLT_MAX);                     \
        int64_t bad = 0;                                                                             \
        (void)vmax; (void)avg; (void)ab; (void)ac;                                                   \
        for (int64_t i = 0; i < n; i += 16) {                                                        \
            const __mmask16 k =                                                                      \
                n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(n - i)) - 1u);        \
            const __m512 gi = _mm512_maskz_loadu_ps(k, g + i);                                       \
            const __m512 pi = _mm512_maskz_loadu_ps(k, p + i);                                       \
            const __m512 mi = _mm512_maskz_loadu_ps(k, m + i);                                       \
            const __m512 vi = _mm512_maskz_loadu_ps(k, v + i);                                       \
            /* g − g == 0 exactly when g is finite (IEEE: inf − inf and NaN − NaN are NaN). */        \
            const __mmask16 ok = _mm512_mask_cmp_ps_mask(k, _mm512_sub_ps(gi, gi), zero, _CMP_EQ_OQ); \
            bad += __builtin_popcount((unsigned)(k & (__mmask16)~ok));                               \
            const __m512 ge = _mm512_fmadd_ps(l2, pi, _mm512_mul_ps(sign, gi));                      \
            const __m512 mn = _mm512_fmadd_ps(b1, mi, _mm512_mul_ps(c1, ge));                        \
            const __m512 vn = _mm512_fmadd_ps(b2, vi, _mm512_mul_ps(c2, _mm512_mul_ps(ge, ge)));     \
            __m512 vu = vn, vm = zero;                                                               \
            if (AMS) {                                                                               \
                vm = _mm512_maskz_loadu_ps(k, vmax + i);                                             \
                vu = _mm512_max_ps(vm, vn); /* vm > vn ? vm : vn, as the generic loop */             \
            }                                                                                        \
            const __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(vu), dscale, eps);                     \
            __m512 q = _mm512_rcp14_ps(den);                                                         \
            q = _mm512_mul_ps(q, _mm512_fnmadd_ps(den, q, two));                                     \
            const __mmask16 normal =                                                                 \
                _mm512_cmp_ps_mask(den, lo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(den, hi, _CMP_LE_OQ);    \
            if (__builtin_expect((normal & k) != k, 0)) q = _mm512_div_ps(one, den);                 \
            const __mmask16 pos = _mm512_cmp_ps_mask(den, zero, _CMP_GT_OQ);                         \
            const __m512 r = _mm512_maskz_mul_ps(pos, _mm512_mul_ps(step, mn), q);                   \
            const __m512 pn = _mm512_fmsub_ps(pi, decay, r);                                         \
            _mm512_mask_storeu_ps(p + i, k, _mm512_mask_blend_ps(ok, pi, pn));                       \
            _mm512_mask_storeu_ps(m + i, k, _mm512_mask_blend_ps(ok, mi, mn));                       \
            _mm512_mask_storeu_ps(v + i, k, _mm512_mask_blend_ps(ok, vi, vn));                       \
            if (AMS) _mm512_mask_storeu_ps(vmax + i, k, _mm512_mask_blend_ps(ok, vm, vu));           \
            if (AVG) {                                                                               \
                const __m512 ai = _mm512_maskz_loadu_ps(k, avg + i);                                 \
                const __m512 an = _mm512_fmadd_ps(ab, ai, _mm512_mul_ps(ac, pn));                    \
                _mm512_mask_storeu_ps(avg + i, k, _mm512_mask_blend_ps(ok, ai, an));                 \
            }                                                                                        \
        }                                                                                            \
        return bad;                                                                                  \
    }

ADAM_AVX512(0, 0)
ADAM_AVX512(0, 1)
ADAM_AVX512(1, 0)
ADAM_AVX512(1, 1)
#define ADAM_F32(AMS, AVG) adam_avx512_##AMS##_##AVG
#else
ADAM_LOOP(float, 0, 0)
ADAM_LOOP(float, 0, 1)
ADAM_LOOP(float, 1, 0)
ADAM_LOOP(float, 1, 1)
#define ADAM_F32(AMS, AVG) adam_loop_float_##AMS##_##AVG
#endif

typedef int64_t (*loop_f32)(int64_t, float *, const float *, float *, float *, float *, float *,
                            const scalars_t *);
typedef int64_t (*loop_f64)(int64_t, double *, const double *, double *, double *, double *, double *,
                            const scalars_t *);

/* The roofline's loop: Adam's memory pattern (read θ, g, m, v; write θ, m, v) with trivial arithmetic. */
static int64_t roofline_loop(int64_t n, float *restrict p, const float *restrict g, float *restrict m,
                             float *restrict v, float *restrict unused1, float *restrict unused2,
                             const scalars_t *s) {
    (void)unused1; (void)unused2; (void)s;
    for (int64_t i = 0; i < n; ++i) {
        const float gi = g[i];
        m[i] = m[i] + gi;
        v[i] = v[i] + gi;
        p[i] = p[i] - gi;
    }
    return 0;
}

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
            bad = job->f64(hi - lo, A64(0), A64(1), A64(2), A64(3), A64(4), A64(5),
                           job->scalars ? job->scalars + k : NULL);
        } else {
#define A32(j) (job->arrays[j] ? (float *)job->arrays[j][k] + lo : NULL)
            bad = job->f32(hi - lo, A32(0), A32(1), A32(2), A32(3), A32(4), A32(5),
                           job->scalars ? job->scalars + k : NULL);
        }
        if (bad) __atomic_fetch_add(&job->nonfinite[k], bad, __ATOMIC_RELAXED);
    }
}

static void *worker(void *arg) {
    run_range((job_t *)arg);
    return NULL;
}

/*
 * Below this many elements per thread, starting a thread (tens of µs) costs more than it saves: a step of
 * 1e5 elements runs on one thread whatever torch.get_num_threads() says.
 */
#define MIN_PER_THREAD (1 << 16)
#define MAX_THREADS 64

/* Split `total` concatenated elements evenly over min(nthreads, total / MIN_PER_THREAD) threads; the
 * calling thread takes the first share. */
static void run_jobs(const job_t *base, int64_t total, int nthreads) {
    int64_t want = total / MIN_PER_THREAD;
    int nt = nthreads < 1 ? 1 : (nthreads > MAX_THREADS ? MAX_THREADS : nthreads);
    if (want < nt) nt = want < 1 ? 1 : (int)want;
    job_t jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    for (int j = 0; j < nt; ++j) {
        jobs[j] = *base;
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
}

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
    double t_prev = -1.0;
    for (int64_t k = 0; k < n_tensors; ++k) {
        double t = (double)*steps[k] + 1.0;
        *steps[k] = (float)t;
        /* Tensors usually share their step count: compute the scalars (pow, sqrt) once for a run of them. */
        if (k > 0 && t == t_prev) scalars[k] = scalars[k - 1];
        else if (is_adamax) adamax_scalars(hp, flags, t, &scalars[k]);
        else adam_scalars(hp, flags, t, &scalars[k]);
        t_prev = t;
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
        loop_f32 f32s[4] = {ADAM_F32(0, 0), ADAM_F32(0, 1), ADAM_F32(1, 0), ADAM_F32(1, 1)};
        loop_f64 f64s[4] = {adam_loop_double_0_0, adam_loop_double_0_1, adam_loop_double_1_0,
                            adam_loop_double_1_1};
        base.f32 = f32s[ams * 2 + av];
        base.f64 = f64s[ams * 2 + av];
    }
    run_jobs(&base, total, nthreads);
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
 * trivial arithmetic, run by the same driver (thread split, per-tensor calls) as the step. What no Adam step
 * on this machine can beat; the benchmark's yardstick. adamlab_roofline_multi takes the tensors where they
 * lie (what the layout itself costs); adamlab_roofline one flat buffer of each.
 */
void adamlab_roofline_multi(int64_t n_tensors, const int64_t *numel, void *const *p, void *const *g,
                            void *const *m, void *const *v, int nthreads) {
    job_t base;
    memset(&base, 0, sizeof base);
    base.n_tensors = n_tensors;
    base.numel = numel;
    base.arrays[0] = p; base.arrays[1] = g; base.arrays[2] = m; base.arrays[3] = v;
    base.f32 = roofline_loop;
    int64_t total = 0;
    for (int64_t k = 0; k < n_tensors; ++k) total += numel[k];
    run_jobs(&base, total, nthreads);
}

void adamlab_roofline(int64_t n, float *p, const float *g, float *m, float *v, int nthreads) {
    void *pp = p, *gg = (void *)g, *mm = m, *vv = v;
    adamlab_roofline_multi(1, &n, &pp, &gg, &mm, &vv, nthreads);
}
