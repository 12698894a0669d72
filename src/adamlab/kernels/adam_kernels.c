/*
 * adamlab's fused CPU kernels: one pass over memory for every parameter of a group.
 *
 * Each array (θ, g, m, v and, where used, v_max and θ̄) is read once and written once per step; no
 * temporaries. The per-tensor scalars (α_t, bias corrections, β1,t) are computed once per tensor from its
 * own step counter, mirroring adamlab/formulas.py line for line (the tests check every option of this kernel
 * against the reference path, which takes its scalars from formulas.py).
 *
 * Threads: torch's own OpenMP pool where torch runs on GNU libgomp, else plain pthreads (never a second
 * OpenMP runtime fighting torch's over the cores), taking chunks of the concatenated elements.
 *
 * Non-finite gradients: the affected coordinates keep their old θ, m, v (a select or a masked store, so the
 * loop still vectorises) and are counted per tensor; the caller raises.
 *
 * Instruction sets: one library holds a build of every loop for each instruction set of the architecture
 * (scalar/baseline, AVX2 + FMA, AVX-512; see "element loops"), and the fastest one this CPU runs is chosen
 * at run time (adamlab_set_isa / adamlab_get_isa; build.py applies $ADAMLAB_ISA).
 *
 * Built by adamlab/kernels/build.py with -O3 -fno-math-errno -fno-trapping-math -ffp-contract=off and no
 * -march (FMAs only where written: every build rounds alike; no
 * -ffast-math: IEEE semantics are kept, and the finiteness test g - g == 0 relies on them). With AVX-512
 * the fp32 steps divide by a refined reciprocal estimate (see ADAM_AVX512): within an ulp or so of the
 * exact quotient; float64 and the other loops divide exactly.
 */
#include <math.h>
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

/*
 * One source, several instruction-set builds. Every loop below is compiled into the same library once per
 * instruction set (ISA) it exists for, with the compiler's per-function target attribute (TARGET_*): the
 * file itself is built for the baseline of the architecture (x86-64: SSE2; aarch64: NEON), so one build
 * runs on any CPU of that architecture, and the fastest set the CPU has is chosen at run time from cpuid
 * (dispatch below; adamlab_set_isa overrides it, for tests and the benchmark).
 *
 *  - ISA_SCALAR: the generic C loops (GCC vectorises them for the baseline: SSE2 on x86-64, NEON on aarch64);
 *  - ISA_AVX2:   AVX2 + FMA + F16C, 8 lanes, intrinsics (fp32, bf16, fp16); the generic loops for fp64,
 *                vectorised for AVX2;
 *  - ISA_AVX512: AVX-512 F + DQ + BW, 16 lanes, intrinsics (fp32, bf16, fp16); the generic loops for fp64.
 *
 * Every build computes the same formulas in the same order; the fp32 builds differ from each other only in
 * the rounding of the quotient m/(√v·s + ε) (see ADAM_AVX512) and in FMA contraction. The tests check each
 * build the CPU can run against the reference path.
 */
#define ISA_SCALAR 0
#define ISA_AVX2 1
#define ISA_AVX512 2
#define ISA_COUNT 3

#if defined(__x86_64__) || defined(_M_X64)
#define ADAMLAB_X86 1
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TARGET_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,prefer-vector-width=512")))
#endif
#define TARGET_SCALAR

#define COUNT_BLOCK ((int64_t)1 << 16)

/* Finite: the exponent bits are not all ones. A test on the bits, not g − g == 0: GCC vectorises selects on
 * it for SSE2 and NEON too (a float compare that must honour NaN keeps it from if-converting the loop). */
static inline int finite_f(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (b & 0x7f800000u) != 0x7f800000u;
}
static inline int finite_d(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return (b & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}
#define IS_FINITE(x) _Generic((x), float: finite_f, double: finite_d)(x)

#define ADAM_LOOP(ISA, ATTR, T, AMS, AVG)                                                         \
    ATTR static int64_t adam_loop_##ISA##_##T##_##AMS##_##AVG(                                   \
        int64_t n, T *restrict p, const T *restrict g, T *restrict m, T *restrict v,             \
        T *restrict vmax, T *restrict avg, const scalars_t *s) {                                 \
        const T b1 = (T)s->beta1_t, c1 = (T)(1.0 - s->beta1_t);                                  \
        const T b2 = (T)s->beta2, c2 = (T)(1.0 - s->beta2);                                      \
        const T step = (T)s->step, dscale = (T)s->denom_scale, eps = (T)s->eps;                  \
        const T l2 = (T)s->l2, decay = (T)s->decay, sign = (T)s->sign;                           \
        const T ab = (T)s->avg_beta, ac = (T)(1.0 - s->avg_beta);                                \
        int64_t bad = 0;                                                                         \
        (void)vmax; (void)avg; (void)ab; (void)ac;                                               \
        /* The count runs in T per block of COUNT_BLOCK (exact), so that the loop vectorises for SSE2 */ \
        for (int64_t i0 = 0; i0 < n; i0 += COUNT_BLOCK) {                                        \
        const int64_t i1 = n - i0 < COUNT_BLOCK ? n : i0 + COUNT_BLOCK;                          \
        T nb = 0;                                                                                \
        for (int64_t i = i0; i < i1; ++i) {                                                      \
            const T gi = g[i], pi = p[i], mi = m[i], vi = v[i];                                  \
            const int ok = IS_FINITE(gi);                                                        \
            nb += ok ? (T)0 : (T)1;                                                              \
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
            /* den = 0 only with eps = 0 and no gradient yet: the step is 0 there, not 0/0 (the  \
             * quotient is computed everywhere and selected, so that the loop vectorises). */      \
            const T q = step * mn / den;                                                         \
            const T pn = pi * decay - (den > (T)0 ? q : (T)0);                                   \
            p[i] = ok ? pn : pi;                                                                 \
            m[i] = ok ? mn : mi;                                                                 \
            v[i] = ok ? vn : vi;                                                                 \
            if (AVG) {                                                                           \
                const T ai = avg[i];                                                             \
                avg[i] = ok ? ab * ai + ac * pn : ai;                                            \
            }                                                                                    \
        }                                                                                        \
        bad += (int64_t)nb;                                                                      \
        }                                                                                        \
        return bad;                                                                              \
    }

#define ADAMAX_LOOP(ISA, ATTR, T, AVG)                                                            \
    ATTR static int64_t adamax_loop_##ISA##_##T##_##AVG(                                         \
        int64_t n, T *restrict p, const T *restrict g, T *restrict m, T *restrict u,             \
        T *restrict unused, T *restrict avg, const scalars_t *s) {                               \
        const T b1 = (T)s->beta1_t, c1 = (T)(1.0 - s->beta1_t), b2 = (T)s->beta2;                \
        const T step = (T)s->step, eps = (T)s->eps;                                              \
        const T l2 = (T)s->l2, decay = (T)s->decay, sign = (T)s->sign;                           \
        const T ab = (T)s->avg_beta, ac = (T)(1.0 - s->avg_beta);                                \
        int64_t bad = 0;                                                                         \
        (void)unused; (void)avg; (void)ab; (void)ac;                                             \
        /* The count runs in T per block of COUNT_BLOCK (exact), so that the loop vectorises for SSE2 */ \
        for (int64_t i0 = 0; i0 < n; i0 += COUNT_BLOCK) {                                        \
        const int64_t i1 = n - i0 < COUNT_BLOCK ? n : i0 + COUNT_BLOCK;                          \
        T nb = 0;                                                                                \
        for (int64_t i = i0; i < i1; ++i) {                                                      \
            const T gi = g[i], pi = p[i], mi = m[i], ui = u[i];                                  \
            const int ok = IS_FINITE(gi);                                                        \
            nb += ok ? (T)0 : (T)1;                                                              \
            const T ge = sign * gi + l2 * pi;                                                    \
            const T mn = b1 * mi + c1 * ge;                                                      \
            const T a = b2 * ui, b = FABS(ge) + eps;                                             \
            const T un = a > b ? a : b;                                                          \
            /* Where u = 0 the step is 0 (with β2 > 0: every gradient so far was 0, so m = 0). */ \
            const T q = step * mn / un;                                                          \
            const T r = un > (T)0 ? q : (T)0;                                                    \
            const T pn = pi * decay - r;                                                         \
            p[i] = ok ? pn : pi;                                                                 \
            m[i] = ok ? mn : mi;                                                                 \
            u[i] = ok ? un : ui;                                                                 \
            if (AVG) {                                                                           \
                const T ai = avg[i];                                                             \
                avg[i] = ok ? ab * ai + ac * pn : ai;                                            \
            }                                                                                    \
        }                                                                                        \
        bad += (int64_t)nb;                                                                      \
        }                                                                                        \
        return bad;                                                                              \
    }

/* The generic loops of one ISA, for one element type. */
#define GENERIC_LOOPS(ISA, ATTR, T)                                                               \
    ADAM_LOOP(ISA, ATTR, T, 0, 0)                                                                 \
    ADAM_LOOP(ISA, ATTR, T, 0, 1)                                                                 \
    ADAM_LOOP(ISA, ATTR, T, 1, 0)                                                                 \
    ADAM_LOOP(ISA, ATTR, T, 1, 1)                                                                 \
    ADAMAX_LOOP(ISA, ATTR, T, 0)                                                                  \
    ADAMAX_LOOP(ISA, ATTR, T, 1)

GENERIC_LOOPS(scalar, TARGET_SCALAR, float)
GENERIC_LOOPS(scalar, TARGET_SCALAR, double)

/*
 * The roofline's loop: Adam's memory pattern (read θ, g, m, v; write θ, m, v) with trivial arithmetic,
 * vectorised and prefetched as the steps of the same ISA are.
 */
#define ROOFLINE_GENERIC(ISA, ATTR)                                                               \
    ATTR static int64_t roofline_##ISA(int64_t n, float *restrict p, const float *restrict g,    \
                                       float *restrict m, float *restrict v, float *restrict u1,  \
                                       float *restrict u2, const scalars_t *s) {                  \
        (void)u1; (void)u2; (void)s;                                                              \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            const float gi = g[i];                                                                \
            m[i] = m[i] + gi;                                                                     \
            v[i] = v[i] + gi;                                                                     \
            p[i] = p[i] - gi;                                                                     \
        }                                                                                         \
        return 0;                                                                                 \
    }
ROOFLINE_GENERIC(scalar, TARGET_SCALAR)

/*
 * Half-precision parameters (bfloat16, float16): θ, g, m, v (and v_max) stored in the parameter's dtype, as
 * torch keeps them; the arithmetic in float32, in registers, in the order of torch's fused CPU Adam
 * (aten/src/ATen/native/cpu/FusedAdamKernel.cpp) and with the FMAs its compiler makes, so that the results
 * are its bits exactly: g_t = fma(θ, λ, g) (L2), m by lerp, m + (1 − β1)(g_t − m) as one FMA (or
 * g_t − (g_t − m)·β1 where 1 − β1 ≥ 0.5), v = fma((1 − β2)·g_t, g_t, v·β2), denominator √v/√(1 − β2^t) + ε,
 * θ + ((−α/(1 − β1^t))·m)/denominator, every other operation rounded to float32 (the library is built with
 * -ffp-contract=off: no FMA but those written), the float32 m and v (not their rounded copies) used for θ,
 * and every stored value rounded to nearest even. (torch's contractions were found by emulating each
 * candidate against torch._fused_adam_ on 10⁶ coordinates; tests/test_kernels_half.py checks every build
 * bit for bit.) Options: those of Adam (maximize, L2 or decoupled weight decay, AMSGrad, bias correction,
 * ε-hat, √t learning rate, β1 decay); averaging is not offered.
 */
static inline float bf16_to_f(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}
static inline uint16_t f_to_bf16(float f) { /* round to nearest even; NaN stays NaN (no branch: vectorises) */
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    const uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16, nan = (b >> 16) | 0x40u;
    return (uint16_t)((b & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}
static inline float f16_to_f(uint16_t h) {
    _Float16 x;
    memcpy(&x, &h, sizeof x);
    return (float)x;
}
static inline uint16_t f_to_f16(float f) {
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, sizeof h);
    return h;
}

typedef int64_t (*loop_half)(int64_t, uint16_t *, const uint16_t *, uint16_t *, uint16_t *, uint16_t *,
                             uint16_t *, const scalars_t *);

#define ADAM_HALF_LOOP(ISA, ATTR, NAME, TOF, FROMF, AMS, WD)                                        \
    ATTR static int64_t adam_##NAME##_##ISA##_##AMS##_##WD(                                     \
        int64_t n, uint16_t *restrict p, const uint16_t *restrict g, uint16_t *restrict m,          \
        uint16_t *restrict v, uint16_t *restrict vmax, uint16_t *restrict unused,                 \
        const scalars_t *s) {                                                                     \
        const float c1 = (float)(1.0 - s->beta1_t), c1m = c1 - 1.0f;                              \
        const int small_c1 = fabsf(c1) < 0.5f;                                                    \
        const float b2 = (float)s->beta2, c2 = (float)(1.0 - s->beta2);                           \
        const float nstep = (float)(-s->step), bc2 = (float)(1.0 / s->denom_scale);               \
        const float eps = (float)s->eps;                                                          \
        const float wd = (float)s->l2, decay = (float)s->decay, sign = (float)s->sign;             \
        int64_t bad = 0;                                                                          \
        (void)vmax; (void)unused; (void)wd; (void)decay;                                          \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            const float gi = TOF(g[i]), mi = TOF(m[i]), vi = TOF(v[i]);                           \
            float pi = TOF(p[i]);                                                                 \
            const int ok = finite_f(gi);                                                          \
            bad += ok ? 0 : 1; /* an integer count: a float one keeps 2-byte loops from vectorising */ \
            float ge = gi * sign;                                                                 \
            if (WD == 1) ge = fmaf(pi, wd, ge);                                                   \
            if (WD == 2) pi = pi * decay;                                                         \
            const float d = ge - mi;                                                              \
            const float mn = fmaf(small_c1 ? c1 : c1m, d, small_c1 ? mi : ge);                    \
            const float vn = fmaf(c2 * ge, ge, vi * b2);                                          \
            float vu = vn;                                                                        \
            if (AMS) {                                                                            \
                const float vm = TOF(vmax[i]);                                                    \
                vu = vm > vn ? vm : vn;                                                           \
                const uint16_t uh = FROMF(vu);                                                    \
                vmax[i] = ok ? uh : vmax[i];                                                      \
            }                                                                                     \
            const float den = sqrtf(vu) / bc2 + eps;                                              \
            const float pn = pi + (nstep * mn) / den;                                             \
            const uint16_t ph = FROMF(pn), mh = FROMF(mn), vh = FROMF(vn);                        \
            p[i] = ok ? ph : p[i];                                                                \
            m[i] = ok ? mh : m[i];                                                                \
            v[i] = ok ? vh : v[i];                                                                \
        }                                                                                         \
        return bad;                                                                               \
    }

#define HALF_LOOPS(ISA, ATTR)                                                                     \
    ADAM_HALF_LOOP(ISA, ATTR, bf16, bf16_to_f, f_to_bf16, 0, 0)                                  \
    ADAM_HALF_LOOP(ISA, ATTR, bf16, bf16_to_f, f_to_bf16, 0, 1)                                  \
    ADAM_HALF_LOOP(ISA, ATTR, bf16, bf16_to_f, f_to_bf16, 0, 2)                                  \
    ADAM_HALF_LOOP(ISA, ATTR, bf16, bf16_to_f, f_to_bf16, 1, 0)                                  \
    ADAM_HALF_LOOP(ISA, ATTR, bf16, bf16_to_f, f_to_bf16, 1, 1)                                  \
    ADAM_HALF_LOOP(ISA, ATTR, bf16, bf16_to_f, f_to_bf16, 1, 2)                                  \
    ADAM_HALF_LOOP(ISA, ATTR, f16, f16_to_f, f_to_f16, 0, 0)                                     \
    ADAM_HALF_LOOP(ISA, ATTR, f16, f16_to_f, f_to_f16, 0, 1)                                     \
    ADAM_HALF_LOOP(ISA, ATTR, f16, f16_to_f, f_to_f16, 0, 2)                                     \
    ADAM_HALF_LOOP(ISA, ATTR, f16, f16_to_f, f_to_f16, 1, 0)                                     \
    ADAM_HALF_LOOP(ISA, ATTR, f16, f16_to_f, f_to_f16, 1, 1)                                     \
    ADAM_HALF_LOOP(ISA, ATTR, f16, f16_to_f, f_to_f16, 1, 2)
#define HALF_TABLE(ISA)                                                                           \
    .adam_half = {{{adam_bf16_##ISA##_0_0, adam_bf16_##ISA##_0_1, adam_bf16_##ISA##_0_2},         \
                   {adam_bf16_##ISA##_1_0, adam_bf16_##ISA##_1_1, adam_bf16_##ISA##_1_2}},        \
                  {{adam_f16_##ISA##_0_0, adam_f16_##ISA##_0_1, adam_f16_##ISA##_0_2},            \
                   {adam_f16_##ISA##_1_0, adam_f16_##ISA##_1_1, adam_f16_##ISA##_1_2}}}

HALF_LOOPS(scalar, TARGET_SCALAR)

/* The roofline of a half-precision step: its memory pattern (read θ, g, m, v; write θ, m, v: 14 bytes a
 * parameter) with trivial (integer) arithmetic. */
#define ROOFLINE_HALF(ISA, ATTR)                                                                  \
    ATTR static int64_t roofline_half_##ISA(int64_t n, uint16_t *restrict p, const uint16_t *restrict g, \
                                            uint16_t *restrict m, uint16_t *restrict v,            \
                                            uint16_t *restrict u1, uint16_t *restrict u2,          \
                                            const scalars_t *s) {                                  \
        (void)u1; (void)u2; (void)s;                                                              \
        for (int64_t i = 0; i < n; ++i) {                                                         \
            const uint16_t gi = g[i];                                                             \
            m[i] = (uint16_t)(m[i] + gi);                                                         \
            v[i] = (uint16_t)(v[i] ^ gi);                                                         \
            p[i] = (uint16_t)(p[i] - gi);                                                         \
        }                                                                                         \
        return 0;                                                                                 \
    }
ROOFLINE_HALF(scalar, TARGET_SCALAR)

/*
 * Software prefetch PREFETCH_AHEAD elements (2 KiB) ahead on the four streams, for reading (g) and for
 * writing (θ, m, v), once per 64-byte line. Measured: +3-4% at 1e7 elements (partly in L3), nothing at 5e7
 * or in L2; the roofline loops prefetch alike, so that they stay the speed limit. A prefetch past the end
 * is harmless.
 */
#ifndef PREFETCH_AHEAD /* (a -D for experiments) */
#define PREFETCH_AHEAD 512
#endif
#define PREFETCH4(g, p, m, v, i)                                                                     \
    do {                                                                                             \
        __builtin_prefetch((g) + (i) + PREFETCH_AHEAD, 0, 3);                                        \
        __builtin_prefetch((p) + (i) + PREFETCH_AHEAD, 1, 3);                                        \
        __builtin_prefetch((m) + (i) + PREFETCH_AHEAD, 1, 3);                                        \
        __builtin_prefetch((v) + (i) + PREFETCH_AHEAD, 1, 3);                                        \
    } while (0)

#ifdef ADAMLAB_X86
/* ---------------------------------------------------------------- AVX2 + FMA (8 lanes) */

GENERIC_LOOPS(avx2, TARGET_AVX2, double)

/*
 * Half-precision Adam with explicit SIMD (AVX2 + FMA + F16C; AVX-512 F/DQ/BW): the arithmetic and rounding of
 * ADAM_HALF_LOOP (torch's fused CPU Adam), equal to it bit for bit on every coordinate.
 *
 *  - bf16 ↔ fp32 by integer operations, no shuffles: the even-numbered values shifted up 16 bits and the
 *    odd-numbered ones masked (two float vectors), back by round-to-nearest-even on the bits,
 *    b + 0x7fff + ((b >> 16) & 1), and a 16-bit blend of the high halves (in cache no faster than an
 *    unpack/pack pair on this Xeon, but it leaves the shuffle port free). Not AVX512_BF16's vcvtneps2bf16:
 *    measured on this Xeon, it flushes subnormal
 *    inputs to zero (0x00400000 → 0x0000, where torch gives 0x0040); torch's conversion does not.
 *    fp16 ↔ fp32 by F16C's vcvtph2ps / vcvtps2ph (round to nearest even; exact, subnormals included).
 *  - The denominator √v/√(1 − β2^t) + ε: torch divides by √(1 − β2^t). Two divisions and a √ a vector
 *    bound the step in cache; the quotient by the constant is taken instead as y = x·(1/c) corrected once by
 *    its exact residual, y + (x − y·c)·(1/c) (markstein_div_*: two FMAs), which is the correctly rounded
 *    x/c (Markstein's correction with a correctly rounded reciprocal; checked against the division on 3.5e8
 *    quotients, every bias correction of β2 ∈ {0.3 … 0.9999} up to step 3000, whole binades: no
 *    difference). √v and the final quotient stay exact: both are torch's bits, not estimates. (An estimate
 *    of the final quotient checked by rounding θ + r(1 ± 2^-19) both ways, exact where they agree, was
 *    measured no faster: the extra conversions cost what the division saves.)
 *  - Non-finite gradients: found on the 16-bit values (exponent field all ones), counted; the old 16-bit
 *    values are blended back into those lanes (a branch taken only where one is not finite).
 *  - Tails of fewer than a vector go through a zero-padded copy on the stack: every element takes the same
 *    arithmetic wherever thread splits and tensor ends fall.
 */
#define PREFETCH_AHEAD_HALF (2 * PREFETCH_AHEAD) /* elements: the same distance in bytes as PREFETCH4's */
#define PREFETCH4_HALF(g, p, m, v, i)                                                                \
    do {                                                                                             \
        __builtin_prefetch((g) + (i) + PREFETCH_AHEAD_HALF, 0, 3);                                   \
        __builtin_prefetch((p) + (i) + PREFETCH_AHEAD_HALF, 1, 3);                                   \
        __builtin_prefetch((m) + (i) + PREFETCH_AHEAD_HALF, 1, 3);                                   \
        __builtin_prefetch((v) + (i) + PREFETCH_AHEAD_HALF, 1, 3);                                   \
    } while (0)

/* The per-call float32 scalars of the half-precision step, as ADAM_HALF_LOOP has them. */
#define HALF_SCALARS                                                                                 \
    const float c1f = (float)(1.0 - s->beta1_t);                                                     \
    const int small_c1 = fabsf(c1f) < 0.5f;                                                          \
    const float coeff_f = small_c1 ? c1f : c1f - 1.0f;                                               \
    const float bc2_f = (float)(1.0 / s->denom_scale) /* √(1 − β2^t), as torch's float */

/* ---- AVX2 + FMA + F16C: a body takes 16 values (one 256-bit vector of each stream) as two float32 vectors
 * of 8. bf16: the even-numbered values (shifted up 16 bits) and the odd-numbered ones (the high halves of the
 * 32-bit lanes, masked): one integer operation each, no shuffle; back by rounding both, shifting the even
 * ones down and blending the 16-bit halves. fp16 by F16C on the two 128-bit halves. */

TARGET_AVX2 static inline void bf16_in2_avx2(__m256i h, __m256 x[2]) {
    x[0] = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    x[1] = _mm256_castsi256_ps(_mm256_and_si256(h, _mm256_set1_epi32((int)0xffff0000u)));
}
/* Round to nearest even, into the high 16 bits of each lane (b + 0x7fff + ((b >> 16) & 1), f_to_bf16's).
 * NaN needs no case of its own here: every NaN the step makes comes from bf16 values or from arithmetic
 * (quiet, low 16 bits zero), which this keeps a NaN with the bits f_to_bf16 gives it. */
TARGET_AVX2 static inline __m256i bf16_round_avx2(__m256 x) {
    const __m256i b = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb);
}
TARGET_AVX2 static inline __m256i bf16_out2_avx2(const __m256 x[2]) {
    return _mm256_blend_epi16(_mm256_srli_epi32(bf16_round_avx2(x[0]), 16), bf16_round_avx2(x[1]), 0xAA);
}
TARGET_AVX2 static inline void f16_in2_avx2(__m256i h, __m256 x[2]) {
    x[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    x[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}
TARGET_AVX2 static inline __m256i f16_out2_avx2(const __m256 x[2]) {
    const int rne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    return _mm256_set_m128i(_mm256_cvtps_ph(x[1], rne), _mm256_cvtps_ph(x[0], rne));
}
/* x/c correctly rounded, from rc = 1/c (correctly rounded): y = x·rc, then y + (x − y·c)·rc; ∞ stays ∞. */
TARGET_AVX2 static inline __m256 markstein_div_avx2(__m256 x, __m256 c, __m256 rc) {
    const __m256 y = _mm256_mul_ps(x, rc);
    const __m256 z = _mm256_fmadd_ps(_mm256_fnmadd_ps(y, c, x), rc, y);
    return _mm256_blendv_ps(z, y, _mm256_cmp_ps(y, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ));
}
/* The exponent field of each 16-bit value: all ones for ±∞ and NaN. */
#define bf16_EXPONENT 0x7f80
#define f16_EXPONENT 0x7c00

#define HALF_AVX2_CONSTS(NAME)                                                                       \
    HALF_SCALARS;                                                                                    \
    const __m256 coeff = _mm256_set1_ps(coeff_f);                                                    \
    const __m256 b2 = _mm256_set1_ps((float)s->beta2), c2 = _mm256_set1_ps((float)(1.0 - s->beta2)); \
    const __m256 nstep = _mm256_set1_ps((float)(-s->step)), eps = _mm256_set1_ps((float)s->eps);     \
    const __m256 bc2 = _mm256_set1_ps(bc2_f), rbc2 = _mm256_set1_ps(1.0f / bc2_f);                  \
    const __m256 wd = _mm256_set1_ps((float)s->l2), decay = _mm256_set1_ps((float)s->decay);         \
    const __m256 negzero = _mm256_set1_ps(-0.0f);                                                    \
    const __m256i expo = _mm256_set1_epi16((short)NAME##_EXPONENT);                                  \
    (void)wd; (void)decay

/* 16 values of half-precision Adam at P, G, M, V, VM; adds the non-finite count to `bad`. */
#define HALF_AVX2_BODY(NAME, AMS, WD, SMALL, MAX, P, G, M, V, VM)                                \
    do {                                                                                             \
        const __m256i gh = _mm256_loadu_si256((const __m256i *)(G));                                 \
        const __m256i ph = _mm256_loadu_si256((const __m256i *)(P));                                 \
        const __m256i mh = _mm256_loadu_si256((const __m256i *)(M));                                 \
        const __m256i vh = _mm256_loadu_si256((const __m256i *)(V));                                 \
        const __m256i vmh = AMS ? _mm256_loadu_si256((const __m256i *)(VM)) : _mm256_setzero_si256(); \
        const __m256i nonfinite = _mm256_cmpeq_epi16(_mm256_and_si256(gh, expo), expo);              \
        const unsigned nf = (unsigned)_mm256_movemask_epi8(nonfinite);                               \
        bad += __builtin_popcount(nf) / 2;                                                           \
        __m256 gi[2], pi[2], mi[2], vi[2], vmi[2], mn[2], vn[2], vu[2], pn[2];                       \
        NAME##_in2_avx2(gh, gi); NAME##_in2_avx2(ph, pi); NAME##_in2_avx2(mh, mi);                   \
        NAME##_in2_avx2(vh, vi);                                                                     \
        if (AMS) NAME##_in2_avx2(vmh, vmi);                                                          \
        for (int h = 0; h < 2; ++h) {                                                                \
            __m256 ge = MAX ? _mm256_xor_ps(gi[h], negzero) : gi[h]; /* −g, exactly */               \
            if (WD == 1) ge = _mm256_fmadd_ps(pi[h], wd, ge);                                        \
            if (WD == 2) pi[h] = _mm256_mul_ps(pi[h], decay);                                        \
            mn[h] = _mm256_fmadd_ps(coeff, _mm256_sub_ps(ge, mi[h]), SMALL ? mi[h] : ge);            \
            vn[h] = _mm256_fmadd_ps(_mm256_mul_ps(c2, ge), ge, _mm256_mul_ps(vi[h], b2));            \
            vu[h] = AMS ? _mm256_max_ps(vmi[h], vn[h]) : vn[h];                                      \
            /* √v/√(1 − β2^t), correctly rounded without a division (markstein_div_avx2), + ε */         \
            const __m256 den = _mm256_add_ps(markstein_div_avx2(_mm256_sqrt_ps(vu[h]), bc2, rbc2), eps); \
            pn[h] = _mm256_add_ps(pi[h], _mm256_div_ps(_mm256_mul_ps(nstep, mn[h]), den));           \
        }                                                                                            \
        __m256i pout = NAME##_out2_avx2(pn);                                                         \
        __m256i mout = NAME##_out2_avx2(mn), vout = NAME##_out2_avx2(vn);                            \
        __m256i vmout = AMS ? NAME##_out2_avx2(vu) : vmh;                                            \
        if (__builtin_expect(nf != 0, 0)) {                                                          \
            pout = _mm256_blendv_epi8(pout, ph, nonfinite);                                          \
            mout = _mm256_blendv_epi8(mout, mh, nonfinite);                                          \
            vout = _mm256_blendv_epi8(vout, vh, nonfinite);                                          \
            vmout = _mm256_blendv_epi8(vmout, vmh, nonfinite);                                       \
        }                                                                                            \
        _mm256_storeu_si256((__m256i *)(P), pout);                                                   \
        _mm256_storeu_si256((__m256i *)(M), mout);                                                   \
        _mm256_storeu_si256((__m256i *)(V), vout);                                                   \
        if (AMS) _mm256_storeu_si256((__m256i *)(VM), vmout);                                        \
    } while (0)

/* The loop around a body of W values: 32 values (one 64-byte line of each stream) per iteration, then W,
 * then a zero-padded tail. Two copies: the usual case (the lerp's |1 − β1| < 0.5 branch, SMALL, and no
 * maximize, MAX) with both fixed, where the body does no work for either (measured 9% less time in cache than
 * choosing per vector), and every other case with both chosen at run time (more copies would double the
 * build time for rarely used options). */
#define HALF_SIMD_RUN(NAME, BODY, W, AMS, WD, SMALL, MAX)                                           \
    do {                                                                                             \
        for (; i + 32 <= n; i += 32) {                                                               \
            PREFETCH4_HALF(g, p, m, v, i);                                                           \
            for (int j = 0; j < 32; j += W)                                                          \
                BODY(NAME, AMS, WD, SMALL, MAX, p + i + j, g + i + j, m + i + j, v + i + j, vmax + i + j); \
        }                                                                                            \
        for (; i + W <= n; i += W) BODY(NAME, AMS, WD, SMALL, MAX, p + i, g + i, m + i, v + i, vmax + i); \
        if (i < n) {                                                                                 \
            uint16_t tp[W] = {0}, tg[W] = {0}, tm[W] = {0}, tv[W] = {0}, tvm[W] = {0};               \
            const size_t bytes = (size_t)(n - i) * sizeof(uint16_t);                                 \
            memcpy(tp, p + i, bytes); memcpy(tg, g + i, bytes);                                      \
            memcpy(tm, m + i, bytes); memcpy(tv, v + i, bytes);                                      \
            if (AMS) memcpy(tvm, vmax + i, bytes);                                                   \
            BODY(NAME, AMS, WD, SMALL, MAX, tp, tg, tm, tv, tvm);                                    \
            memcpy(p + i, tp, bytes); memcpy(m + i, tm, bytes); memcpy(v + i, tv, bytes);            \
            if (AMS) memcpy(vmax + i, tvm, bytes);                                                   \
        }                                                                                            \
    } while (0)

#define HALF_SIMD_LOOP(ISA, ATTR, NAME, BODY, CONSTS, W, AMS, WD)                                    \
    ATTR static int64_t adam_##NAME##_##ISA##_##AMS##_##WD(                                          \
        int64_t n, uint16_t *restrict p, const uint16_t *restrict g, uint16_t *restrict m,           \
        uint16_t *restrict v, uint16_t *restrict vmax, uint16_t *restrict unused, const scalars_t *s) { \
        CONSTS(NAME);                                                                                \
        int64_t bad = 0, i = 0;                                                                      \
        (void)vmax; (void)unused;                                                                    \
        if (small_c1 && s->sign > 0) HALF_SIMD_RUN(NAME, BODY, W, AMS, WD, 1, 0); /* the usual case */ \
        else HALF_SIMD_RUN(NAME, BODY, W, AMS, WD, small_c1, s->sign < 0);                           \
        return bad;                                                                                  \
    }

#define HALF_SIMD_LOOPS(ISA, ATTR, BODY, CONSTS, W)                                                  \
    HALF_SIMD_LOOP(ISA, ATTR, bf16, BODY, CONSTS, W, 0, 0)                                           \
    HALF_SIMD_LOOP(ISA, ATTR, bf16, BODY, CONSTS, W, 0, 1)                                           \
    HALF_SIMD_LOOP(ISA, ATTR, bf16, BODY, CONSTS, W, 0, 2)                                           \
    HALF_SIMD_LOOP(ISA, ATTR, bf16, BODY, CONSTS, W, 1, 0)                                           \
    HALF_SIMD_LOOP(ISA, ATTR, bf16, BODY, CONSTS, W, 1, 1)                                           \
    HALF_SIMD_LOOP(ISA, ATTR, bf16, BODY, CONSTS, W, 1, 2)                                           \
    HALF_SIMD_LOOP(ISA, ATTR, f16, BODY, CONSTS, W, 0, 0)                                            \
    HALF_SIMD_LOOP(ISA, ATTR, f16, BODY, CONSTS, W, 0, 1)                                            \
    HALF_SIMD_LOOP(ISA, ATTR, f16, BODY, CONSTS, W, 0, 2)                                            \
    HALF_SIMD_LOOP(ISA, ATTR, f16, BODY, CONSTS, W, 1, 0)                                            \
    HALF_SIMD_LOOP(ISA, ATTR, f16, BODY, CONSTS, W, 1, 1)                                            \
    HALF_SIMD_LOOP(ISA, ATTR, f16, BODY, CONSTS, W, 1, 2)

HALF_SIMD_LOOPS(avx2, TARGET_AVX2, HALF_AVX2_BODY, HALF_AVX2_CONSTS, 16)

/* The half-precision roofline, prefetched as the step is. */
#define ROOFLINE_HALF_SIMD(ISA, ATTR)                                                                \
    ATTR static int64_t roofline_half_##ISA(int64_t n, uint16_t *restrict p, const uint16_t *restrict g, \
                                            uint16_t *restrict m, uint16_t *restrict v,              \
                                            uint16_t *restrict u1, uint16_t *restrict u2,            \
                                            const scalars_t *s) {                                    \
        (void)u1; (void)u2; (void)s;                                                                 \
        int64_t i = 0;                                                                               \
        for (; i + 32 <= n; i += 32) {                                                               \
            PREFETCH4_HALF(g, p, m, v, i);                                                           \
            for (int64_t j = i; j < i + 32; ++j) {                                                   \
                const uint16_t gj = g[j];                                                            \
                m[j] = (uint16_t)(m[j] + gj);                                                        \
                v[j] = (uint16_t)(v[j] ^ gj);                                                        \
                p[j] = (uint16_t)(p[j] - gj);                                                        \
            }                                                                                        \
        }                                                                                            \
        for (; i < n; ++i) {                                                                         \
            const uint16_t gi = g[i];                                                                \
            m[i] = (uint16_t)(m[i] + gi);                                                            \
            v[i] = (uint16_t)(v[i] ^ gi);                                                            \
            p[i] = (uint16_t)(p[i] - gi);                                                            \
        }                                                                                            \
        return 0;                                                                                    \
    }
ROOFLINE_HALF_SIMD(avx2, TARGET_AVX2)

/*
 * fp32 Adam with AVX2 + FMA, 8 lanes, the same arithmetic as ADAM_AVX512 but for the division, which is
 * exact here (vdivps: the AVX2 class has no 14-bit reciprocal estimate; rcp_ps's 12 bits with a Newton step,
 * a residual correction and the special-lane check were measured slower in cache, 71 µs against 56 µs for
 * 10⁵ elements on this Xeon, interleaved, and no more accurate).
 * Non-finite gradients: a lane is finite iff g − g == 0; the others keep θ, m, v through blends (no masked
 * stores, which are slow on AMD's cores). The loop body is one macro, run on 16 elements per iteration and,
 * for a tail of fewer than 8, on a zero-padded copy in registers-sized stack buffers: every element takes
 * the same arithmetic wherever the thread split and the tensor ends fall.
 */
#define AVX2_COMMON_CONSTS                                                                        \
    const __m256 b1 = _mm256_set1_ps((float)s->beta1_t);                                          \
    const __m256 c1s = _mm256_set1_ps((float)((1.0 - s->beta1_t) * s->sign));                     \
    const __m256 b2 = _mm256_set1_ps((float)s->beta2);                                            \
    const __m256 step = _mm256_set1_ps((float)s->step);                                           \
    const __m256 eps = _mm256_set1_ps((float)s->eps);                                             \
    const __m256 sl2 = _mm256_set1_ps((float)(s->sign * s->l2));                                  \
    const __m256 decay = _mm256_set1_ps((float)s->decay);                                         \
    const __m256 ab = _mm256_set1_ps((float)s->avg_beta);                                         \
    const __m256 ac = _mm256_set1_ps((float)(1.0 - s->avg_beta));                                 \
    const __m256 zero = _mm256_setzero_ps();                                                      \
    (void)ab; (void)ac; (void)sl2; (void)decay

/* One vector of Adam at P, G, M, V, VM (v_max), A (θ̄); adds the non-finite count to `bad`. */
#define ADAM_AVX2_BODY(AMS, AVG, WD, P, G, M, V, VM, A)                                           \
    do {                                                                                          \
        const __m256 gi = _mm256_loadu_ps(G), pi = _mm256_loadu_ps(P);                            \
        const __m256 mi = _mm256_loadu_ps(M), vi = _mm256_loadu_ps(V);                            \
        const __m256 ok = _mm256_cmp_ps(_mm256_sub_ps(gi, gi), zero, _CMP_EQ_OQ);                 \
        bad += 8 - __builtin_popcount((unsigned)_mm256_movemask_ps(ok));                          \
        const __m256 gs = WD == 1 ? _mm256_fmadd_ps(sl2, pi, gi) : gi;                            \
        const __m256 mn = _mm256_fmadd_ps(b1, mi, _mm256_mul_ps(c1s, gs));                        \
        const __m256 vn = _mm256_fmadd_ps(_mm256_mul_ps(c2, gs), gs, _mm256_mul_ps(b2, vi));      \
        __m256 vu = vn;                                                                           \
        if (AMS) {                                                                                \
            const __m256 vm = _mm256_loadu_ps(VM);                                                \
            vu = _mm256_max_ps(vm, vn);                                                           \
            _mm256_storeu_ps(VM, _mm256_blendv_ps(vm, vu, ok));                                   \
        }                                                                                         \
        const __m256 den = _mm256_fmadd_ps(_mm256_sqrt_ps(vu), dscale, eps);                      \
        const __m256 pos = _mm256_cmp_ps(den, zero, _CMP_GT_OQ);                                  \
        const __m256 r = _mm256_and_ps(_mm256_div_ps(_mm256_mul_ps(step, mn), den), pos);         \
        const __m256 pn = WD == 2 ? _mm256_fmsub_ps(pi, decay, r) : _mm256_sub_ps(pi, r);         \
        _mm256_storeu_ps(P, _mm256_blendv_ps(pi, pn, ok));                                        \
        _mm256_storeu_ps(M, _mm256_blendv_ps(mi, mn, ok));                                        \
        _mm256_storeu_ps(V, _mm256_blendv_ps(vi, vn, ok));                                        \
        if (AVG) {                                                                                \
            const __m256 ai = _mm256_loadu_ps(A);                                                 \
            const __m256 an = _mm256_fmadd_ps(ab, ai, _mm256_mul_ps(ac, pn));                     \
            _mm256_storeu_ps(A, _mm256_blendv_ps(ai, an, ok));                                    \
        }                                                                                         \
    } while (0)

/* One vector of AdaMax: u = max(β2·u, |g_t| + ε), θ −= step·m/u (0 where u is not positive). */
#define ADAMAX_AVX2_BODY(AMS, AVG, WD, P, G, M, V, VM, A)                                         \
    do {                                                                                          \
        const __m256 gi = _mm256_loadu_ps(G), pi = _mm256_loadu_ps(P);                            \
        const __m256 mi = _mm256_loadu_ps(M), ui = _mm256_loadu_ps(V);                            \
        const __m256 ok = _mm256_cmp_ps(_mm256_sub_ps(gi, gi), zero, _CMP_EQ_OQ);                 \
        bad += 8 - __builtin_popcount((unsigned)_mm256_movemask_ps(ok));                          \
        const __m256 gs = WD == 1 ? _mm256_fmadd_ps(sl2, pi, gi) : gi; /* |g_t| = |gs| */         \
        const __m256 mn = _mm256_fmadd_ps(b1, mi, _mm256_mul_ps(c1s, gs));                        \
        const __m256 a = _mm256_mul_ps(b2, ui), b = _mm256_add_ps(_mm256_and_ps(gs, absmask), eps);\
        const __m256 un = _mm256_max_ps(a, b); /* a > b ? a : b, as the generic loop */          \
        const __m256 pos = _mm256_cmp_ps(un, zero, _CMP_GT_OQ);                                   \
        const __m256 r = _mm256_and_ps(_mm256_div_ps(_mm256_mul_ps(step, mn), un), pos);          \
        const __m256 pn = WD == 2 ? _mm256_fmsub_ps(pi, decay, r) : _mm256_sub_ps(pi, r);         \
        _mm256_storeu_ps(P, _mm256_blendv_ps(pi, pn, ok));                                        \
        _mm256_storeu_ps(M, _mm256_blendv_ps(mi, mn, ok));                                        \
        _mm256_storeu_ps(V, _mm256_blendv_ps(ui, un, ok));                                        \
        if (AVG) {                                                                                \
            const __m256 ai = _mm256_loadu_ps(A);                                                 \
            const __m256 an = _mm256_fmadd_ps(ab, ai, _mm256_mul_ps(ac, pn));                     \
            _mm256_storeu_ps(A, _mm256_blendv_ps(ai, an, ok));                                    \
        }                                                                                         \
    } while (0)

/* The loop around a body: 16 elements per iteration (one prefetch per line), then 8, then a padded tail. */
#define AVX2_LOOP(NAME, BODY, EXTRA_CONSTS, AMS, AVG, WD)                                         \
    TARGET_AVX2 static int64_t NAME(int64_t n, float *restrict p, const float *restrict g,        \
                                    float *restrict m, float *restrict v, float *restrict vmax,   \
                                    float *restrict avg, const scalars_t *s) {                    \
        AVX2_COMMON_CONSTS;                                                                       \
        EXTRA_CONSTS;                                                                             \
        int64_t bad = 0, i = 0;                                                                   \
        (void)vmax; (void)avg;                                                                    \
        for (; i + 16 <= n; i += 16) {                                                            \
            PREFETCH4(g, p, m, v, i);                                                             \
            BODY(AMS, AVG, WD, p + i, g + i, m + i, v + i, vmax + i, avg + i);                    \
            BODY(AMS, AVG, WD, p + i + 8, g + i + 8, m + i + 8, v + i + 8, vmax + i + 8,          \
                 avg + i + 8);                                                                    \
        }                                                                                         \
        for (; i + 8 <= n; i += 8) BODY(AMS, AVG, WD, p + i, g + i, m + i, v + i, vmax + i, avg + i); \
        if (i < n) {                                                                              \
            float tp[8] = {0}, tg[8] = {0}, tm[8] = {0}, tv[8] = {0}, tvm[8] = {0}, ta[8] = {0};   \
            const size_t bytes = (size_t)(n - i) * sizeof(float);                                 \
            memcpy(tp, p + i, bytes); memcpy(tg, g + i, bytes);                                   \
            memcpy(tm, m + i, bytes); memcpy(tv, v + i, bytes);                                   \
            if (AMS) memcpy(tvm, vmax + i, bytes);                                                \
            if (AVG) memcpy(ta, avg + i, bytes);                                                  \
            BODY(AMS, AVG, WD, tp, tg, tm, tv, tvm, ta);                                          \
            memcpy(p + i, tp, bytes); memcpy(m + i, tm, bytes); memcpy(v + i, tv, bytes);         \
            if (AMS) memcpy(vmax + i, tvm, bytes);                                                \
            if (AVG) memcpy(avg + i, ta, bytes);                                                  \
        }                                                                                         \
        return bad;                                                                               \
    }

#define ADAM_AVX2_CONSTS                                                                          \
    const __m256 c2 = _mm256_set1_ps((float)(1.0 - s->beta2));                                   \
    const __m256 dscale = _mm256_set1_ps((float)s->denom_scale)
#define ADAMAX_AVX2_CONSTS const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))
#define ADAM_AVX2(AMS, AVG, WD) \
    AVX2_LOOP(adam_avx2_##AMS##_##AVG##_##WD, ADAM_AVX2_BODY, ADAM_AVX2_CONSTS, AMS, AVG, WD)
#define ADAMAX_AVX2(AVG, WD) \
    AVX2_LOOP(adamax_avx2_##AVG##_##WD, ADAMAX_AVX2_BODY, ADAMAX_AVX2_CONSTS, 0, AVG, WD)
#define ADAM_AVX2_WD(AMS, AVG) ADAM_AVX2(AMS, AVG, 0) ADAM_AVX2(AMS, AVG, 1) ADAM_AVX2(AMS, AVG, 2)
ADAM_AVX2_WD(0, 0)
ADAM_AVX2_WD(0, 1)
ADAM_AVX2_WD(1, 0)
ADAM_AVX2_WD(1, 1)
ADAMAX_AVX2(0, 0)
ADAMAX_AVX2(0, 1)
ADAMAX_AVX2(0, 2)
ADAMAX_AVX2(1, 0)
ADAMAX_AVX2(1, 1)
ADAMAX_AVX2(1, 2)

TARGET_AVX2 static int64_t roofline_avx2(int64_t n, float *restrict p, const float *restrict g,
                                         float *restrict m, float *restrict v, float *restrict u1,
                                         float *restrict u2, const scalars_t *s) {
    (void)u1; (void)u2; (void)s;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        PREFETCH4(g, p, m, v, i);
        for (int64_t j = i; j < i + 16; j += 8) {
            const __m256 gi = _mm256_loadu_ps(g + j);
            _mm256_storeu_ps(m + j, _mm256_add_ps(_mm256_loadu_ps(m + j), gi));
            _mm256_storeu_ps(v + j, _mm256_add_ps(_mm256_loadu_ps(v + j), gi));
            _mm256_storeu_ps(p + j, _mm256_sub_ps(_mm256_loadu_ps(p + j), gi));
        }
    }
    for (; i < n; ++i) {
        const float gi = g[i];
        m[i] = m[i] + gi;
        v[i] = v[i] + gi;
        p[i] = p[i] - gi;
    }
    return 0;
}

/* ---------------------------------------------------------------- AVX-512 F + DQ + BW (16 lanes) */

GENERIC_LOOPS(avx512, TARGET_AVX512, double)

/* ---- AVX-512 (F, DQ, BW): a body takes 32 values (one 512-bit vector of each stream) as two float32
 * vectors of 16, as HALF_AVX2_BODY (even/odd split for bf16, F16C halves for fp16). */

TARGET_AVX512 static inline void bf16_in2_avx512(__m512i h, __m512 x[2]) {
    x[0] = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    x[1] = _mm512_castsi512_ps(_mm512_and_si512(h, _mm512_set1_epi32((int)0xffff0000u)));
}
TARGET_AVX512 static inline __m512i bf16_round_avx512(__m512 x) { /* as bf16_round_avx2 */
    const __m512i b = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb);
}
TARGET_AVX512 static inline __m512i bf16_out2_avx512(const __m512 x[2]) {
    return _mm512_mask_blend_epi16((__mmask32)0xAAAAAAAAu, _mm512_srli_epi32(bf16_round_avx512(x[0]), 16),
                                   bf16_round_avx512(x[1]));
}
TARGET_AVX512 static inline void f16_in2_avx512(__m512i h, __m512 x[2]) {
    x[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    x[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}
TARGET_AVX512 static inline __m512i f16_out2_avx512(const __m512 x[2]) {
    const int rne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtps_ph(x[0], rne)), _mm512_cvtps_ph(x[1], rne), 1);
}

TARGET_AVX512 static inline __m512 markstein_div_avx512(__m512 x, __m512 c, __m512 rc) { /* as _avx2 */
    const __m512 y = _mm512_mul_ps(x, rc);
    const __m512 z = _mm512_fmadd_ps(_mm512_fnmadd_ps(y, c, x), rc, y);
    return _mm512_mask_mov_ps(z, _mm512_fpclass_ps_mask(y, 0x08), y); /* +∞ */
}

#define HALF_AVX512_CONSTS(NAME)                                                                     \
    HALF_SCALARS;                                                                                    \
    const __m512 coeff = _mm512_set1_ps(coeff_f);                                                    \
    const __m512 b2 = _mm512_set1_ps((float)s->beta2), c2 = _mm512_set1_ps((float)(1.0 - s->beta2)); \
    const __m512 nstep = _mm512_set1_ps((float)(-s->step)), eps = _mm512_set1_ps((float)s->eps);     \
    const __m512 bc2 = _mm512_set1_ps(bc2_f), rbc2 = _mm512_set1_ps(1.0f / bc2_f);                  \
    const __m512 wd = _mm512_set1_ps((float)s->l2), decay = _mm512_set1_ps((float)s->decay);         \
    const __m512i negzero = _mm512_set1_epi32((int)0x80000000u);                                     \
    const __m512i expo = _mm512_set1_epi16((short)NAME##_EXPONENT);                                  \
    (void)wd; (void)decay

#define HALF_AVX512_BODY(NAME, AMS, WD, SMALL, MAX, P, G, M, V, VM)                              \
    do {                                                                                             \
        const __m512i gh = _mm512_loadu_si512((const void *)(G));                                    \
        const __m512i ph = _mm512_loadu_si512((const void *)(P));                                    \
        const __m512i mh = _mm512_loadu_si512((const void *)(M));                                    \
        const __m512i vh = _mm512_loadu_si512((const void *)(V));                                    \
        const __m512i vmh = AMS ? _mm512_loadu_si512((const void *)(VM)) : _mm512_setzero_si512();   \
        const __mmask32 nonfinite = _mm512_cmpeq_epi16_mask(_mm512_and_si512(gh, expo), expo);       \
        bad += __builtin_popcount((unsigned)nonfinite);                                              \
        __m512 gi[2], pi[2], mi[2], vi[2], vmi[2], mn[2], vn[2], vu[2], pn[2];                       \
        NAME##_in2_avx512(gh, gi); NAME##_in2_avx512(ph, pi); NAME##_in2_avx512(mh, mi);             \
        NAME##_in2_avx512(vh, vi);                                                                   \
        if (AMS) NAME##_in2_avx512(vmh, vmi);                                                        \
        for (int h = 0; h < 2; ++h) {                                                                \
            __m512 ge = MAX ? _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(gi[h]), negzero)) : gi[h]; \
            if (WD == 1) ge = _mm512_fmadd_ps(pi[h], wd, ge);                                        \
            if (WD == 2) pi[h] = _mm512_mul_ps(pi[h], decay);                                        \
            mn[h] = _mm512_fmadd_ps(coeff, _mm512_sub_ps(ge, mi[h]), SMALL ? mi[h] : ge);            \
            vn[h] = _mm512_fmadd_ps(_mm512_mul_ps(c2, ge), ge, _mm512_mul_ps(vi[h], b2));            \
            vu[h] = AMS ? _mm512_max_ps(vmi[h], vn[h]) : vn[h];                                      \
            const __m512 den = _mm512_add_ps(markstein_div_avx512(_mm512_sqrt_ps(vu[h]), bc2, rbc2), eps); \
            pn[h] = _mm512_add_ps(pi[h], _mm512_div_ps(_mm512_mul_ps(nstep, mn[h]), den));           \
        }                                                                                            \
        __m512i pout = NAME##_out2_avx512(pn);                                                       \
        __m512i mout = NAME##_out2_avx512(mn), vout = NAME##_out2_avx512(vn);                        \
        __m512i vmout = AMS ? NAME##_out2_avx512(vu) : vmh;                                          \
        if (__builtin_expect(nonfinite != 0, 0)) {                                                   \
            pout = _mm512_mask_blend_epi16(nonfinite, pout, ph);                                     \
            mout = _mm512_mask_blend_epi16(nonfinite, mout, mh);                                     \
            vout = _mm512_mask_blend_epi16(nonfinite, vout, vh);                                     \
            vmout = _mm512_mask_blend_epi16(nonfinite, vmout, vmh);                                  \
        }                                                                                            \
        _mm512_storeu_si512((void *)(P), pout);                                                      \
        _mm512_storeu_si512((void *)(M), mout);                                                      \
        _mm512_storeu_si512((void *)(V), vout);                                                      \
        if (AMS) _mm512_storeu_si512((void *)(VM), vmout);                                           \
    } while (0)

HALF_SIMD_LOOPS(avx512, TARGET_AVX512, HALF_AVX512_BODY, HALF_AVX512_CONSTS, 32)
ROOFLINE_HALF_SIMD(avx512, TARGET_AVX512)

/*
 * fp32 Adam with AVX-512, 16 lanes; the tail goes through masked loads and stores, so every element takes
 * the same arithmetic wherever the thread split and the tensor ends fall (results never depend on the
 * thread count). Measured in cache (docs/performance.md) it runs at ~0.95 of the roofline, where the generic
 * loop reaches ~0.6-0.8; out of cache both are memory-bound, this one with more headroom.
 *
 * What makes it lean:
 *  - the division is a reciprocal estimate (rcp14) refined by one Newton step, q·(2 − d·q), and the
 *    quotient r = (step·m)·q then corrected once with its residual, r + q·(step·m − d·r) (two FMAs): as
 *    accurate as the exact division on average (measured: scripts/float32_drift.py, one-step error 0.29 ulp
 *    mean, as torch's fused step; without the correction 0.32), at a fraction of its cost; √v stays exact.
 *    (√v and a division cost about 10 cycles per 16 lanes each on the same divider unit: the generic loop
 *    is bound by that, not by memory, whenever the data is in cache.) Lanes whose denominator is not a
 *    positive normal
 *    number (ε = 0 with v = 0, overflow to ∞, subnormal ε) take the exact division instead, per lane, and
 *    0 where the denominator is not positive, as the generic loop;
 *  - non-finite gradients are found with one fpclass and left untouched by masked stores (no blends);
 *  - the sign of `maximize` is folded into 1 − β1 (g² does not see it) and the weight-decay mode (none,
 *    L2 added to the gradient, decoupled) is a compile-time parameter, so the plain step does no work for
 *    options it does not use.
 * WD: 0 no weight decay, 1 L2 (g + λθ), 2 decoupled (θ·(1 − αλ)).
 */
#define ADAM_AVX512(AMS, AVG, WD)                                                                    \
    TARGET_AVX512 static int64_t adam_avx512_##AMS##_##AVG##_##WD(int64_t n, float *restrict p,                     \
                                                    const float *restrict g, float *restrict m,       \
                                                    float *restrict v, float *restrict vmax,          \
                                                    float *restrict avg, const scalars_t *s) {        \
        const __m512 b1 = _mm512_set1_ps((float)s->beta1_t);                                         \
        const __m512 c1s = _mm512_set1_ps((float)((1.0 - s->beta1_t) * s->sign));                    \
        const __m512 b2 = _mm512_set1_ps((float)s->beta2);                                           \
        const __m512 c2 = _mm512_set1_ps((float)(1.0 - s->beta2));                                   \
        const __m512 step = _mm512_set1_ps((float)s->step);                                          \
        const __m512 dscale = _mm512_set1_ps((float)s->denom_scale);                                 \
        const __m512 eps = _mm512_set1_ps((float)s->eps);                                            \
        const __m512 sl2 = _mm512_set1_ps((float)(s->sign * s->l2));                                 \
        const __m512 decay = _mm512_set1_ps((float)s->decay);                                        \
        const __m512 ab = _mm512_set1_ps((float)s->avg_beta);                                        \
        const __m512 ac = _mm512_set1_ps((float)(1.0 - s->avg_beta));                                \
        const __m512 zero = _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f);                         \
        int64_t bad = 0;                                                                             \
        (void)vmax; (void)avg; (void)ab; (void)ac; (void)sl2; (void)decay;                           \
        for (int64_t i = 0; i < n; i += 16) {                                                        \
            const __mmask16 k =                                                                      \
                n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(n - i)) - 1u);        \
            PREFETCH4(g, p, m, v, i);                                                                \
            const __m512 gi = _mm512_maskz_loadu_ps(k, g + i);                                       \
            const __m512 pi = _mm512_maskz_loadu_ps(k, p + i);                                       \
            const __m512 mi = _mm512_maskz_loadu_ps(k, m + i);                                       \
            const __m512 vi = _mm512_maskz_loadu_ps(k, v + i);                                       \
            /* fpclass 0x99: QNaN, SNaN, +∞, −∞. Those lanes are counted and not stored. */            \
            const __mmask16 nonfinite = _mm512_fpclass_ps_mask(gi, 0x99) & k;                        \
            const __mmask16 ok = k & (__mmask16)~nonfinite;                                          \
            bad += __builtin_popcount((unsigned)nonfinite);                                          \
            /* gs = sign·g_t, with g_t = ±g + λθ: m uses (1 − β1)·sign·gs, v uses gs². */             \
            const __m512 gs = WD == 1 ? _mm512_fmadd_ps(sl2, pi, gi) : gi;                           \
            const __m512 mn = _mm512_fmadd_ps(b1, mi, _mm512_mul_ps(c1s, gs));                      \
            const __m512 vn = _mm512_fmadd_ps(_mm512_mul_ps(c2, gs), gs, _mm512_mul_ps(b2, vi));     \
            __m512 vu = vn;                                                                          \
            if (AMS) vu = _mm512_max_ps(_mm512_maskz_loadu_ps(k, vmax + i), vn);                     \
            const __m512 den = _mm512_fmadd_ps(_mm512_sqrt_ps(vu), dscale, eps);                     \
            __m512 q = _mm512_rcp14_ps(den);                                                         \
            q = _mm512_mul_ps(q, _mm512_fnmadd_ps(den, q, two));                                     \
            const __m512 sm = _mm512_mul_ps(step, mn);                                               \
            __m512 r = _mm512_mul_ps(sm, q);                                                         \
            r = _mm512_fmadd_ps(q, _mm512_fnmadd_ps(den, r, sm), r); /* r + q·(sm − den·r) */        \
            /* fpclass 0xFF: anything but a positive normal finite number. */                        \
            const __mmask16 special = _mm512_fpclass_ps_mask(den, 0xFF) & ok;                        \
            if (__builtin_expect(special != 0, 0)) {                                                 \
                const __mmask16 pos = _mm512_cmp_ps_mask(den, zero, _CMP_GT_OQ);                     \
                r = _mm512_mask_blend_ps(special, r, _mm512_maskz_div_ps(pos, sm, den));             \
            }                                                                                        \
            const __m512 pn = WD == 2 ? _mm512_fmsub_ps(pi, decay, r) : _mm512_sub_ps(pi, r);        \
            _mm512_mask_storeu_ps(p + i, ok, pn);                                                    \
            _mm512_mask_storeu_ps(m + i, ok, mn);                                                    \
            _mm512_mask_storeu_ps(v + i, ok, vn);                                                    \
            if (AMS) _mm512_mask_storeu_ps(vmax + i, ok, vu);                                        \
            if (AVG) {                                                                               \
                const __m512 ai = _mm512_maskz_loadu_ps(k, avg + i);                                 \
                _mm512_mask_storeu_ps(avg + i, ok, _mm512_fmadd_ps(ab, ai, _mm512_mul_ps(ac, pn)));  \
            }                                                                                        \
        }                                                                                            \
        return bad;                                                                                  \
    }

#define ADAM_AVX512_WD(AMS, AVG) ADAM_AVX512(AMS, AVG, 0) ADAM_AVX512(AMS, AVG, 1) ADAM_AVX512(AMS, AVG, 2)
ADAM_AVX512_WD(0, 0)
ADAM_AVX512_WD(0, 1)
ADAM_AVX512_WD(1, 0)
ADAM_AVX512_WD(1, 1)

/* fp32 AdaMax with AVX-512, built as ADAM_AVX512: u = max(β2·u, |g_t| + ε), θ −= step·m/u (0 where u is
 * not positive), the division through the refined reciprocal. */
#define ADAMAX_AVX512(AVG, WD)                                                                       \
    TARGET_AVX512 static int64_t adamax_avx512_##AVG##_##WD(int64_t n, float *restrict p, const float *restrict g,  \
                                              float *restrict m, float *restrict u,                  \
                                              float *restrict unused, float *restrict avg,           \
                                              const scalars_t *s) {                                  \
        const __m512 b1 = _mm512_set1_ps((float)s->beta1_t);                                         \
        const __m512 c1s = _mm512_set1_ps((float)((1.0 - s->beta1_t) * s->sign));                    \
        const __m512 b2 = _mm512_set1_ps((float)s->beta2);                                           \
        const __m512 step = _mm512_set1_ps((float)s->step);                                          \
        const __m512 eps = _mm512_set1_ps((float)s->eps);                                            \
        const __m512 sl2 = _mm512_set1_ps((float)(s->sign * s->l2));                                 \
        const __m512 decay = _mm512_set1_ps((float)s->decay);                                        \
        const __m512 ab = _mm512_set1_ps((float)s->avg_beta);                                        \
        const __m512 ac = _mm512_set1_ps((float)(1.0 - s->avg_beta));                                \
        const __m512 zero = _mm512_setzero_ps(), two = _mm512_set1_ps(2.0f);                         \
        int64_t bad = 0;                                                                             \
        (void)unused; (void)avg; (void)ab; (void)ac; (void)sl2; (void)decay;                         \
        for (int64_t i = 0; i < n; i += 16) {                                                        \
            const __mmask16 k =                                                                      \
                n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(n - i)) - 1u);        \
            PREFETCH4(g, p, m, u, i);                                                                \
            const __m512 gi = _mm512_maskz_loadu_ps(k, g + i);                                       \
            const __m512 pi = _mm512_maskz_loadu_ps(k, p + i);                                       \
            const __m512 mi = _mm512_maskz_loadu_ps(k, m + i);                                       \
            const __m512 ui = _mm512_maskz_loadu_ps(k, u + i);                                       \
            const __mmask16 nonfinite = _mm512_fpclass_ps_mask(gi, 0x99) & k;                        \
            const __mmask16 ok = k & (__mmask16)~nonfinite;                                          \
            bad += __builtin_popcount((unsigned)nonfinite);                                          \
            const __m512 gs = WD == 1 ? _mm512_fmadd_ps(sl2, pi, gi) : gi; /* |g_t| = |gs| */        \
            const __m512 mn = _mm512_fmadd_ps(b1, mi, _mm512_mul_ps(c1s, gs));                      \
            const __m512 a = _mm512_mul_ps(b2, ui), b = _mm512_add_ps(_mm512_abs_ps(gs), eps);       \
            const __m512 un = _mm512_max_ps(b, a); /* a > b ? a : b, as the generic loop */          \
            __m512 q = _mm512_rcp14_ps(un);                                                          \
            q = _mm512_mul_ps(q, _mm512_fnmadd_ps(un, q, two));                                      \
            const __m512 sm = _mm512_mul_ps(step, mn);                                               \
            __m512 r = _mm512_mul_ps(sm, q);                                                         \
            r = _mm512_fmadd_ps(q, _mm512_fnmadd_ps(un, r, sm), r); /* r + q·(sm − u·r) */           \
            const __mmask16 special = _mm512_fpclass_ps_mask(un, 0xFF) & ok;                         \
            if (__builtin_expect(special != 0, 0)) {                                                 \
                const __mmask16 pos = _mm512_cmp_ps_mask(un, zero, _CMP_GT_OQ);                      \
                r = _mm512_mask_blend_ps(special, r, _mm512_maskz_div_ps(pos, sm, un));              \
            }                                                                                        \
            const __m512 pn = WD == 2 ? _mm512_fmsub_ps(pi, decay, r) : _mm512_sub_ps(pi, r);        \
            _mm512_mask_storeu_ps(p + i, ok, pn);                                                    \
            _mm512_mask_storeu_ps(m + i, ok, mn);                                                    \
            _mm512_mask_storeu_ps(u + i, ok, un);                                                    \
            if (AVG) {                                                                               \
                const __m512 ai = _mm512_maskz_loadu_ps(k, avg + i);                                 \
                _mm512_mask_storeu_ps(avg + i, ok, _mm512_fmadd_ps(ab, ai, _mm512_mul_ps(ac, pn)));  \
            }                                                                                        \
        }                                                                                            \
        return bad;                                                                                  \
    }

ADAMAX_AVX512(0, 0)
ADAMAX_AVX512(0, 1)
ADAMAX_AVX512(0, 2)
ADAMAX_AVX512(1, 0)
ADAMAX_AVX512(1, 1)
ADAMAX_AVX512(1, 2)

TARGET_AVX512 static int64_t roofline_avx512(int64_t n, float *restrict p, const float *restrict g,
                                             float *restrict m, float *restrict v, float *restrict u1,
                                             float *restrict u2, const scalars_t *s) {
    (void)u1; (void)u2; (void)s;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(n - i)) - 1u);
        PREFETCH4(g, p, m, v, i);
        const __m512 gi = _mm512_maskz_loadu_ps(k, g + i);
        _mm512_mask_storeu_ps(m + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, m + i), gi));
        _mm512_mask_storeu_ps(v + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, v + i), gi));
        _mm512_mask_storeu_ps(p + i, k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + i), gi));
    }
    return 0;
}
#endif /* ADAMLAB_X86 */


/* ---------------------------------------------------------------- dispatch */

typedef int64_t (*loop_f32)(int64_t, float *, const float *, float *, float *, float *, float *,
                            const scalars_t *);
typedef int64_t (*loop_f64)(int64_t, double *, const double *, double *, double *, double *, double *,
                            const scalars_t *);

/* One ISA's loops: adam[amsgrad·2 + averaging][weight-decay mode], adamax[averaging][weight-decay mode]. */
typedef struct {
    loop_f32 adam32[4][3], adamax32[2][3], roofline;
    loop_f64 adam64[4], adamax64[2];
    loop_half adam_half[2][2][3]; /* [bf16, f16][amsgrad][weight-decay mode] */
    loop_half roofline_half;
} isa_loops_t;

/* The generic loops take every weight-decay mode alike. */
#define SAME3(f) {f, f, f}
#define GENERIC_TABLE(ISA)                                                                          \
    .adam64 = {adam_loop_##ISA##_double_0_0, adam_loop_##ISA##_double_0_1,                          \
               adam_loop_##ISA##_double_1_0, adam_loop_##ISA##_double_1_1},                         \
    .adamax64 = {adamax_loop_##ISA##_double_0, adamax_loop_##ISA##_double_1}
#define WD3(prefix) {prefix##_0, prefix##_1, prefix##_2}

static const isa_loops_t ISA_LOOPS[ISA_COUNT] = {
    [ISA_SCALAR] = {
        .adam32 = {SAME3(adam_loop_scalar_float_0_0), SAME3(adam_loop_scalar_float_0_1),
                   SAME3(adam_loop_scalar_float_1_0), SAME3(adam_loop_scalar_float_1_1)},
        .adamax32 = {SAME3(adamax_loop_scalar_float_0), SAME3(adamax_loop_scalar_float_1)},
        .roofline = roofline_scalar,
        GENERIC_TABLE(scalar),
        HALF_TABLE(scalar),
        .roofline_half = roofline_half_scalar,
    },
#ifdef ADAMLAB_X86
    [ISA_AVX2] = {
        .adam32 = {WD3(adam_avx2_0_0), WD3(adam_avx2_0_1), WD3(adam_avx2_1_0), WD3(adam_avx2_1_1)},
        .adamax32 = {WD3(adamax_avx2_0), WD3(adamax_avx2_1)},
        .roofline = roofline_avx2,
        GENERIC_TABLE(avx2),
        HALF_TABLE(avx2),
        .roofline_half = roofline_half_avx2,
    },
    [ISA_AVX512] = {
        .adam32 = {WD3(adam_avx512_0_0), WD3(adam_avx512_0_1), WD3(adam_avx512_1_0), WD3(adam_avx512_1_1)},
        .adamax32 = {WD3(adamax_avx512_0), WD3(adamax_avx512_1)},
        .roofline = roofline_avx512,
        GENERIC_TABLE(avx512),
        HALF_TABLE(avx512),
        .roofline_half = roofline_half_avx512,
    },
#endif
};

/* Whether this CPU (and its OS, which must save the wider registers) can run an ISA's build. */
int adamlab_isa_supported(int isa) {
    if (isa == ISA_SCALAR) return 1;
#ifdef ADAMLAB_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (isa == ISA_AVX512)
        return adamlab_isa_supported(ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#endif
    return 0;
}

/* The best build this CPU runs. */
static int best_isa(void) {
    for (int isa = ISA_COUNT - 1; isa > 0; --isa)
        if (adamlab_isa_supported(isa)) return isa;
    return ISA_SCALAR;
}

static int current_isa = -1; /* -1: not chosen yet (the best, on first use) */

/* The build in use: ISA_SCALAR (0), ISA_AVX2 (1) or ISA_AVX512 (2). */
int adamlab_get_isa(void) {
    int isa = __atomic_load_n(&current_isa, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = best_isa();
        __atomic_store_n(&current_isa, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

/* Choose the build: an ISA number, or -1 for the best this CPU runs. Returns the build now in use, or -1
 * (nothing changed) if this CPU cannot run the one asked for. */
int adamlab_set_isa(int isa) {
    if (isa == -1) isa = best_isa();
    if (isa < 0 || isa >= ISA_COUNT || !adamlab_isa_supported(isa)) return -1;
    __atomic_store_n(&current_isa, isa, __ATOMIC_RELAXED);
    return isa;
}

/* ---------------------------------------------------------------- multi-tensor driver */

/*
 * The concatenated elements of all tensors are cut into chunks of CHUNK elements, and the threads take
 * chunks from a shared counter until none is left: a thread that the OS preempts (a busy or shared
 * machine) delays the step by at most one chunk instead of by its whole static share. Every element takes
 * the same arithmetic whichever thread runs it, so results never depend on the thread count.
 */
#define CHUNK ((int64_t)1 << 16)

typedef struct {
    int64_t n_tensors;
    const int64_t *numel;
    void *const *arrays[6]; /* p, g, m, v (or u), v_max, θ̄ */
    const scalars_t *scalars;
    int is_double; /* 0 float32, 1 float64, 2 a half-precision type (f16 below) */
    loop_f32 f32;
    loop_f64 f64;
    loop_half f16;
    int64_t *nonfinite; /* per tensor */
    int64_t total;      /* concatenated elements */
    int64_t next_chunk; /* shared counter (atomic) */
    /* state_kernels.c's own work on [begin, end) (quantised state, by blocks); NULL: the loops above */
    void (*range)(void *job, int64_t k, int64_t offset, int64_t begin, int64_t end);
} job_t;

/* Elements [begin, end) of the concatenation; tensor k starts at element `offset` (k ≤ the first tensor
 * that holds `begin`). */
static void run_range(job_t *job, int64_t k, int64_t offset, int64_t begin, int64_t end) {
    if (job->range) {
        job->range(job, k, offset, begin, end);
        return;
    }
    for (; k < job->n_tensors && offset < end; ++k) {
        int64_t n = job->numel[k];
        int64_t lo = begin > offset ? begin - offset : 0;
        int64_t hi = end - offset < n ? end - offset : n;
        offset += n;
        if (hi <= lo) continue;
        int64_t bad;
        const scalars_t *sc = job->scalars ? job->scalars + k : NULL;
        if (job->is_double == 2) {
#define A16(j) (job->arrays[j] ? (uint16_t *)job->arrays[j][k] + lo : NULL)
            bad = job->f16(hi - lo, A16(0), A16(1), A16(2), A16(3), A16(4), A16(5), sc);
        } else if (job->is_double) {
#define A64(j) (job->arrays[j] ? (double *)job->arrays[j][k] + lo : NULL)
            bad = job->f64(hi - lo, A64(0), A64(1), A64(2), A64(3), A64(4), A64(5), sc);
        } else {
#define A32(j) (job->arrays[j] ? (float *)job->arrays[j][k] + lo : NULL)
            bad = job->f32(hi - lo, A32(0), A32(1), A32(2), A32(3), A32(4), A32(5), sc);
        }
        if (bad) __atomic_fetch_add(&job->nonfinite[k], bad, __ATOMIC_RELAXED);
    }
}

/* One thread's work: take chunks until none is left. Chunks come in increasing order, so the thread's
 * cursor into the tensor list only moves forward. */
static void work(job_t *job) {
    int64_t k = 0, offset = 0, n_chunks = (job->total + CHUNK - 1) / CHUNK;
    for (;;) {
        int64_t c = __atomic_fetch_add(&job->next_chunk, 1, __ATOMIC_RELAXED);
        if (c >= n_chunks) break;
        int64_t begin = c * CHUNK, end = begin + CHUNK < job->total ? begin + CHUNK : job->total;
        while (k < job->n_tensors && offset + job->numel[k] <= begin) offset += job->numel[k++];
        run_range(job, k, offset, begin, end);
    }
}

/*
 * Threads. Built with -fopenmp (build.py does so only where torch's own OpenMP runtime, GNU libgomp, is
 * loaded in the process: the kernel's DT_NEEDED libgomp.so.1 then binds to that very copy), the step runs on
 * torch's OpenMP thread pool: no second runtime, no thread creation per step, and torch's workers, which
 * spin for a while after each parallel region (e.g. the backward pass), pick the work up instead of
 * competing with the step's threads for the cores. Otherwise plain pthreads, started and joined per step.
 *
 * Below MIN_PER_THREAD elements per thread, splitting costs more than it saves: a step of 1e5 elements runs
 * on one thread whatever torch.get_num_threads() says.
 */
#define MIN_PER_THREAD (1 << 16)
#define MAX_THREADS 64

static int thread_count(int64_t total, int nthreads) {
    int64_t want = total / MIN_PER_THREAD;
    int nt = nthreads < 1 ? 1 : (nthreads > MAX_THREADS ? MAX_THREADS : nthreads);
    if (want < nt) nt = want < 1 ? 1 : (int)want;
    return nt;
}

#ifdef _OPENMP
#include <omp.h>

static void run_jobs(job_t *job, int nthreads) {
    int nt = thread_count(job->total, nthreads);
    job->next_chunk = 0;
    if (nt == 1) {
        run_range(job, 0, 0, 0, job->total);
        return;
    }
#pragma omp parallel num_threads(nt)
    work(job);
}

int adamlab_threading(void) { return 1; } /* 1: OpenMP (torch's pool), 0: pthreads */
#else
#include <pthread.h>

static void *worker(void *arg) {
    work((job_t *)arg);
    return NULL;
}

static void run_jobs(job_t *job, int nthreads) {
    int nt = thread_count(job->total, nthreads);
    job->next_chunk = 0;
    if (nt == 1) {
        run_range(job, 0, 0, 0, job->total);
        return;
    }
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS];
    for (int j = 1; j < nt; ++j) started[j] = pthread_create(&threads[j], NULL, worker, job) == 0;
    work(job); /* also covers the chunks of any thread that could not start */
    for (int j = 1; j < nt; ++j)
        if (started[j]) pthread_join(threads[j], NULL);
}

int adamlab_threading(void) { return 0; }
#endif

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
    int wd = hp[HP_WD] == 0.0 ? 0 : ((flags & FLAG_DECOUPLED) ? 2 : 1);
    const isa_loops_t *loops = &ISA_LOOPS[adamlab_get_isa()];
    if (is_double >= 2) { /* 2 bfloat16, 3 float16: Adam only, no averaging (checked by the caller) */
        base.f16 = loops->adam_half[is_double - 2][ams][wd];
        base.is_double = 2;
    } else if (is_adamax) {
        base.f32 = loops->adamax32[av][wd];
        base.f64 = loops->adamax64[av];
    } else {
        base.f32 = loops->adam32[ams * 2 + av][wd];
        base.f64 = loops->adam64[ams * 2 + av];
    }
    base.total = total;
    run_jobs(&base, nthreads);
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

/*
 * Adam for bfloat16 (half_type 0) or float16 (half_type 1) parameters, gradients and state, in float32
 * arithmetic matching torch's fused CPU Adam (see ADAM_HALF_LOOP). Arguments as adamlab_adam_step's but for
 * the first (the half type) and no θ̄ (averaging is not offered: FLAG_AVERAGING is refused). Returns the
 * number of non-finite gradient entries (those coordinates left unchanged), or -2 for a refused request.
 */
int64_t adamlab_adam_step_half(int half_type, int64_t n_tensors, const int64_t *numel, void *const *param,
                               void *const *grad, void *const *m, void *const *v, void *const *vmax,
                               float *const *steps, const double *hp, int flags, int nthreads,
                               int64_t *nonfinite) {
    if (half_type < 0 || half_type > 1 || (flags & FLAG_AVERAGING)) return -2;
    return multi_step(0, 2 + half_type, n_tensors, numel, param, grad, m, v, vmax, NULL, steps, hp, flags,
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
    base.f32 = ISA_LOOPS[adamlab_get_isa()].roofline;
    for (int64_t k = 0; k < n_tensors; ++k) base.total += numel[k];
    run_jobs(&base, nthreads);
}

/* The roofline of the half-precision step (14 bytes a parameter), over 2-byte tensors where they lie. */
void adamlab_roofline_half_multi(int64_t n_tensors, const int64_t *numel, void *const *p, void *const *g,
                                 void *const *m, void *const *v, int nthreads) {
    job_t base;
    memset(&base, 0, sizeof base);
    base.n_tensors = n_tensors;
    base.numel = numel;
    base.arrays[0] = p; base.arrays[1] = g; base.arrays[2] = m; base.arrays[3] = v;
    base.is_double = 2;
    base.f16 = ISA_LOOPS[adamlab_get_isa()].roofline_half;
    for (int64_t k = 0; k < n_tensors; ++k) base.total += numel[k];
    run_jobs(&base, nthreads);
}

void adamlab_roofline(int64_t n, float *p, const float *g, float *m, float *v, int nthreads) {
    void *pp = p, *gg = (void *)g, *mm = m, *vv = v;
    adamlab_roofline_multi(1, &n, &pp, &gg, &mm, &vv, nthreads);
}

#include "state_kernels.c"
