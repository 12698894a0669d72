/*
 * Quantised optimizer state (issue 16): Adam and AdaMax with m and v stored in 8 bits with a float32 scale per
 * block ("int8"), or in bfloat16 with seeded stochastic rounding ("bf16"); θ and g stay float32.
 *
 * Included at the end of adam_kernels.c (it shares that file's statics: scalars_t, adam_scalars and
 * adamax_scalars, the ISA target macros, finite_f, bf16_to_f, job_t and run_jobs). The arithmetic is the
 * contract of docs/quantised-state.md (briefs: quant_spec.md), one float32 operation at a time, rounded, in
 * the written order, with no fused multiply-add (the library is built with -ffp-contract=off), so that every
 * instruction-set build gives the same bits as the NumPy oracle (adamlab.numpy.quantised):
 *
 *   dequantise m̃, ṽ;  g ← sign·g (maximize), + λ·θ (L2);  θ ← θ·decay (decoupled);
 *   m = (b1·m̃) + (c1·g);  v = (b2·ṽ) + ((c2·g)·g)      [AdaMax: u = max(b2·ũ, |g|)]
 *   θ ← θ + (nstep·m)/(√v·dmul + ε)                      [AdaMax: θ + (nstep·m)/(u·dmul + ε)]
 *   re-quantise m, v (int8: with the block's new absmax; bf16: stochastic rounding).
 *
 * Two choices the contract leaves open, made as the fp32 kernel makes them (say so to the oracle):
 *  - where the denominator is not positive (ε = 0 and v = 0, e.g. AdaMax's default ε = 0 on a coordinate that
 *    never had a gradient, or whose ũ quantised to 0), the step is 0, not 0/0 or ∞: θ ← θ + 0 (θ·decay + 0
 *    under decoupled decay), as adamlab.numpy.adam's safe_div and the oracle;
 *  - int8 codes: x = 127·√r (or 255·⁴√r, 255·√r) is clamped as min(max(x, 0), 127 or 255), which sends a NaN
 *    x to 0. A NaN x arises only where the block's scale is subnormal (1/s = ∞, and 0·∞ for a zero element):
 *    zeros stay 0, every other element of such a block codes as the block's maximum.
 *
 * int8, per block of B elements (the last may be shorter; blocks start at element 0 of each tensor):
 *   m: signed square map, q = ±rint(127·√(|m|/s)), m̃ = ±(a·a)·s with a = |q|·(1/127);
 *   v: unsigned fourth-power map, q = rint(255·√√(v/s)), ṽ = (b·b)·s with b = a·a, a = q·(1/255);
 *   u (AdaMax): unsigned square map with 255; s = the block's max |x| after the update, one float32 per block
 *   and moment; |x|/s is computed as |x|·(1.0f/s), one division per block.
 * One pass over memory: a block is dequantised, updated (θ written), and its new m and v are kept in two
 * L1-resident float buffers while the absmax is found, then re-quantised from them.
 *
 * bf16: m, v stored as bfloat16; encode x with 16 random bits r: NaN → 0x7FC0, else (bits(x) + r) >> 16;
 *   r = mix(key ^ i) >> 16 for element i of the flattened tensor, key = mix(seed ^ mix(2·step + which)),
 *   which = 0 for m and 1 for v/u, step the tensor's count after its increment; mix is a 32-bit integer hash.
 *
 * Non-finite gradients: the coordinate keeps its θ and stores its old (dequantised) m̃, ṽ, re-quantised (with
 * the block's new scale for int8), and is counted for its tensor.
 *
 * Threads: the driver of adam_kernels.c (chunks of the concatenation) through job_t's `range` hook; a block is
 * run by the chunk that holds its first element, so a block never straddles two threads, and every element
 * takes the same arithmetic whatever the thread count.
 */

#define QMODE_BF16 0
#define QMODE_INT8 1
#define Q_STACK_BLOCK 4096 /* blocks up to this size keep their buffers on the stack */

/* The per-tensor float32 constants of the contract. */
typedef struct {
    float b1, c1, b2, c2, nstep, dmul, eps, l2, decay, sign;
    uint32_t key_m, key_v; /* bf16's random-bit keys */
} qscalars_t;

/* The contract's 32-bit mixing function (the random bits of bf16's stochastic rounding). */
static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

static inline uint32_t q_bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}
static inline float q_float(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* bf16 stochastic rounding with the random bits r (< 2^16): NaN → 0x7FC0, else (bits(x) + r) >> 16. */
static inline uint16_t bf16_round_stochastic(float x, uint32_t r) {
    const uint32_t b = q_bits(x);
    return (uint16_t)((b & 0x7fffffffu) > 0x7f800000u ? 0x7FC0u : (b + r) >> 16);
}

/* rint (round half to even) of x after clamping it to [0, HI] (NaN → 0), as an integer: adding 2^23 to a
 * float in [0, 2^23) leaves the rounded integer in the low mantissa bits. min(max(x, 0), HI) in the order of
 * the SIMD max/min instructions (maxps(x, 0) is 0 for a NaN x). */
static inline int32_t q_code(float x, float hi) {
    x = x > 0.0f ? x : 0.0f;
    x = x < hi ? x : hi;
    return (int32_t)(q_bits(x + 8388608.0f) - 0x4B000000u);
}

/*
 * The update of one coordinate (the contract's steps 2 and 3), shared by both formats: from g, θ and the
 * dequantised m̃ (MT), ṽ (VT), sets OK (g finite), PN (the new θ: the old one where g is not finite), MF, VF
 * (the m and v to store: the old m̃, ṽ where g is not finite).
 */
#define Q_UPDATE(ADAMAX, WD, c, gi, pi, MT, VT, OK, PN, MF, VF)                                 \
    const int OK = finite_f(gi);                                                                \
    float PN, MF, VF;                                                                           \
    {                                                                                           \
        float ge = gi * c->sign;                                                                \
        if (WD == 1) ge = ge + c->l2 * pi;                                                      \
        const float pd = WD == 2 ? pi * c->decay : pi;                                          \
        const float mn = (c->b1 * MT) + (c->c1 * ge);                                           \
        float vn, den;                                                                          \
        if (ADAMAX) {                                                                           \
            const float a = c->b2 * VT, ag = fabsf(ge);                                         \
            vn = a > ag ? a : ag;                                                               \
            den = vn * c->dmul + c->eps;                                                        \
        } else {                                                                                \
            vn = (c->b2 * VT) + ((c->c2 * ge) * ge);                                            \
            den = sqrtf(vn) * c->dmul + c->eps;                                                 \
        }                                                                                       \
        const float step = (c->nstep * mn) / den;                                               \
        const float pu = pd + (den > 0.0f ? step : 0.0f);                                       \
        PN = OK ? pu : pi;                                                                      \
        MF = OK ? mn : MT;                                                                      \
        VF = OK ? vn : VT;                                                                      \
    }

/* One int8 block of nb ≤ B elements: θ, g, the codes of m and v, their scales (read, then the new ones
 * written), and two scratch buffers of nb floats. Returns the number of non-finite gradients. */
typedef int64_t (*q8_block_f)(int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,
                              uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,
                              float *restrict tv, const qscalars_t *c);

#define Q8_BLOCK_GENERIC(ISA, ATTR, ADAMAX, WD)                                                   \
    ATTR static int64_t q8_##ISA##_##ADAMAX##_##WD(                                             \
        int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,            \
        uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,       \
        float *restrict tv, const qscalars_t *c) {                                              \
        const float s_m = *sm, s_v = *sv, k127 = 1.0f / 127.0f, k255 = 1.0f / 255.0f;           \
        uint32_t max_m = 0, max_v = 0;                                                          \
        int32_t bad = 0;                                                                        \
        for (int64_t i = 0; i < nb; ++i) {                                                      \
            const int32_t qi = qm[i];                                                           \
            const float am = (float)(qi < 0 ? -qi : qi) * k127;                                 \
            const float mag = (am * am) * s_m;                                                  \
            const float mt = qi < 0 ? -mag : mag;                                               \
            const float av = (float)qv[i] * k255, bv = av * av;                                 \
            const float vt = ADAMAX ? bv * s_v : (bv * bv) * s_v;                               \
            const float gi = g[i], pi = p[i];                                                   \
            Q_UPDATE(ADAMAX, WD, c, gi, pi, mt, vt, ok, pn, mf, vf)                             \
            bad += ok ? 0 : 1;                                                                  \
            p[i] = pn;                                                                          \
            tm[i] = mf;                                                                         \
            tv[i] = vf;                                                                         \
            /* max |x| on the bits: for non-negative floats the integer order is the float order */ \
            const uint32_t bm = q_bits(mf) & 0x7fffffffu, bvv = q_bits(vf) & 0x7fffffffu;       \
            max_m = bm > max_m ? bm : max_m;                                                    \
            max_v = bvv > max_v ? bvv : max_v;                                                  \
        }                                                                                       \
        const float nm = q_float(max_m), nv = q_float(max_v);                                   \
        *sm = nm;                                                                               \
        *sv = nv;                                                                               \
        const float im = max_m ? 1.0f / nm : 0.0f, iv = max_v ? 1.0f / nv : 0.0f;               \
        for (int64_t i = 0; i < nb; ++i) {                                                      \
            const float mf = tm[i];                                                             \
            const int32_t q = q_code(127.0f * sqrtf(fabsf(mf) * im), 127.0f);                   \
            qm[i] = (int8_t)(mf < 0.0f ? -q : q);                                               \
            const float r = tv[i] * iv;                                                         \
            qv[i] = (uint8_t)q_code(255.0f * (ADAMAX ? sqrtf(r) : sqrtf(sqrtf(r))), 255.0f);    \
        }                                                                                       \
        return bad;                                                                             \
    }

/* bf16 state: n elements starting at element i0 of the tensor (for the random bits). */
typedef int64_t (*bf_loop_f)(int64_t n, int64_t i0, float *restrict p, const float *restrict g,
                             uint16_t *restrict m, uint16_t *restrict v, const qscalars_t *c);

#define BF_LOOP_GENERIC(ISA, ATTR, ADAMAX, WD)                                                    \
    ATTR static int64_t bfs_##ISA##_##ADAMAX##_##WD(int64_t n, int64_t i0, float *restrict p,    \
                                                    const float *restrict g, uint16_t *restrict m, \
                                                    uint16_t *restrict v, const qscalars_t *c) {  \
        const uint32_t key_m = c->key_m, key_v = c->key_v;                                      \
        int32_t bad = 0;                                                                        \
        for (int64_t i = 0; i < n; ++i) {                                                       \
            const float mt = bf16_to_f(m[i]), vt = bf16_to_f(v[i]);                             \
            const float gi = g[i], pi = p[i];                                                   \
            Q_UPDATE(ADAMAX, WD, c, gi, pi, mt, vt, ok, pn, mf, vf)                             \
            bad += ok ? 0 : 1;                                                                  \
            p[i] = pn;                                                                          \
            const uint32_t idx = (uint32_t)(i0 + i);                                            \
            m[i] = bf16_round_stochastic(mf, mix32(key_m ^ idx) >> 16);                         \
            v[i] = bf16_round_stochastic(vf, mix32(key_v ^ idx) >> 16);                         \
        }                                                                                       \
        return bad;                                                                             \
    }

#define Q8_BLOCKS_GENERIC(ISA, ATTR)                                                              \
    Q8_BLOCK_GENERIC(ISA, ATTR, 0, 0) Q8_BLOCK_GENERIC(ISA, ATTR, 0, 1) Q8_BLOCK_GENERIC(ISA, ATTR, 0, 2) \
    Q8_BLOCK_GENERIC(ISA, ATTR, 1, 0) Q8_BLOCK_GENERIC(ISA, ATTR, 1, 1) Q8_BLOCK_GENERIC(ISA, ATTR, 1, 2)
#define BF_LOOPS_GENERIC(ISA, ATTR)                                                               \
    BF_LOOP_GENERIC(ISA, ATTR, 0, 0) BF_LOOP_GENERIC(ISA, ATTR, 0, 1) BF_LOOP_GENERIC(ISA, ATTR, 0, 2)    \
    BF_LOOP_GENERIC(ISA, ATTR, 1, 0) BF_LOOP_GENERIC(ISA, ATTR, 1, 1) BF_LOOP_GENERIC(ISA, ATTR, 1, 2)
#define Q_TABLE_GENERIC(ISA)                                                                      \
    {{{q8_##ISA##_0_0, q8_##ISA##_0_1, q8_##ISA##_0_2}, {q8_##ISA##_1_0, q8_##ISA##_1_1, q8_##ISA##_1_2}}, \
     {{bfs_##ISA##_0_0, bfs_##ISA##_0_1, bfs_##ISA##_0_2}, {bfs_##ISA##_1_0, bfs_##ISA##_1_1, bfs_##ISA##_1_2}}}

/* One ISA's loops: [adamax][weight-decay mode: 0 none, 1 L2, 2 decoupled]. */
typedef struct {
    q8_block_f q8[2][3];
    bf_loop_f bf[2][3];
} q_isa_loops_t;

Q8_BLOCKS_GENERIC(scalar, TARGET_SCALAR)
BF_LOOPS_GENERIC(scalar, TARGET_SCALAR)

#ifdef ADAMLAB_X86
/*
 * int8 blocks with AVX-512, 16 lanes, intrinsics: the same operations as Q8_BLOCK_GENERIC in the same order
 * (no FMA in anything stored), but the codes are found without the divider. A code q(r) = rint(c·√r) (or
 * rint(c·√√r)), clamped, is a non-decreasing function of r, so it is fixed by the thresholds
 * T[j] = min{r : q(r) ≥ j}, found once (q_init_tables) by bisection over the float bit patterns with the
 * scalar code function itself, so they are exact by construction. In the loop, x̂ = c·√r is estimated with
 * rsqrt14 as c·r·rsqrt14(r), and c·√√r as c·rsqrt14(rsqrt14(r)) (relative error < 1.5·2⁻¹⁴: |x̂ − x| < 0.03
 * for c ≤ 255); with k = ⌊x̂⌋ (clamped to the top code − 1) the code is k or k + 1, and it is k + 1 exactly
 * where r ≥ T[k + 1] (one lookup, one compare). A NaN r gives k = 0 and fails the compare (code 0, as q_code's clamp); ∞ is taken
 * as 2 (any r ≥ 1.02 codes as the maximum). Tail lanes (the last block's end) are masked.
 */
#define Q_KIND_M 0 /* 127·√r, m's square map */
#define Q_KIND_V 1 /* 255·√√r, v's fourth-power map */
#define Q_KIND_U 2 /* 255·√r, AdaMax's u */
static float q_thresholds[3][257];

static int32_t q_code_of(float r, int kind) {
    if (kind == Q_KIND_M) return q_code(127.0f * sqrtf(r), 127.0f);
    return q_code(255.0f * (kind == Q_KIND_V ? sqrtf(sqrtf(r)) : sqrtf(r)), 255.0f);
}

__attribute__((constructor)) static void q_init_tables(void) {
    for (int kind = 0; kind < 3; ++kind) {
        const int top = kind == Q_KIND_M ? 127 : 255;
        float *T = q_thresholds[kind];
        T[0] = 0.0f;
        for (int j = 1; j <= top; ++j) { /* the smallest non-negative float r with q(r) ≥ j */
            uint32_t lo = 0, hi = 0x7f800000u; /* q(lo) < j ≤ q(hi = ∞) */
            while (hi - lo > 1) {
                const uint32_t mid = lo + (hi - lo) / 2;
                if (q_code_of(q_float(mid), kind) >= j) hi = mid;
                else lo = mid;
            }
            T[j] = q_float(hi);
        }
        for (int j = top + 1; j < 257; ++j) T[j] = q_float(0x7f800000u); /* never reached: ∞ */
    }
}

/* 16 bytes from src, of which n (if < 16) are read and the rest zero (AVX-512 F only: no byte masks). */
TARGET_AVX512 static inline __m128i q_load16(const void *src, int64_t n) {
    if (n >= 16) return _mm_loadu_si128((const __m128i *)src);
    __m128i x = _mm_setzero_si128();
    memcpy(&x, src, (size_t)n);
    return x;
}

/* T[1..128] of m's square map (T[128] = ∞) in 8 registers: a gather-free lookup of T[k + 1], k ≤ 126. */
typedef struct {
    __m512 t[8];
} q_mtable_t;

TARGET_AVX512 static inline q_mtable_t q_mtable_avx512(void) {
    q_mtable_t T;
    for (int j = 0; j < 8; ++j) T.t[j] = _mm512_loadu_ps(q_thresholds[Q_KIND_M] + 1 + 16 * j);
    return T;
}

/* The codes of r (≥ 0, or NaN/∞) under map `kind`, for 16 lanes; m's thresholds from MT (vpermt2ps on k's
 * low 5 bits, then two levels of blends on bits 5 and 6), the others' by a gather. */
__attribute__((always_inline)) TARGET_AVX512 static inline __m512i q_codes_avx512(__m512 r, int kind,
                                                                                 const q_mtable_t *MT) {
    r = _mm512_min_ps(_mm512_set1_ps(2.0f), r); /* ∞ → 2; NaN stays NaN (minps returns its second operand) */
    /* √r ≈ r·rsqrt(r) (r = 0: 0·∞ = NaN, code 0); ⁴√r ≈ rsqrt(rsqrt(r)) (r = 0: rsqrt(∞) = 0), relative
     * error < 1.5·2⁻¹⁴ */
    const __m512 y = kind == Q_KIND_V ? _mm512_rsqrt14_ps(_mm512_rsqrt14_ps(r)) : _mm512_mul_ps(r, _mm512_rsqrt14_ps(r));
    const __m512 x = _mm512_mul_ps(_mm512_set1_ps(kind == Q_KIND_M ? 127.0f : 255.0f), y);
    __m512i k = _mm512_cvttps_epi32(x); /* ⌊x̂⌋ (x̂ ≥ 0); NaN → INT_MIN */
    /* k ≤ top − 1: the code is k or k + 1 also where x̂ ≥ top (then x ≥ top − 1 and T[top] decides) */
    k = _mm512_min_epi32(_mm512_max_epi32(k, _mm512_setzero_si512()), _mm512_set1_epi32(kind == Q_KIND_M ? 126 : 254));
    const __m512i one = _mm512_set1_epi32(1);
    __m512 t;
    if (kind == Q_KIND_M) {
        const __mmask16 b5 = _mm512_test_epi32_mask(k, _mm512_set1_epi32(32));
        const __mmask16 b6 = _mm512_test_epi32_mask(k, _mm512_set1_epi32(64));
        const __m512 lo = _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(MT->t[0], k, MT->t[1]),
                                               _mm512_permutex2var_ps(MT->t[2], k, MT->t[3]));
        const __m512 hi = _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(MT->t[4], k, MT->t[5]),
                                               _mm512_permutex2var_ps(MT->t[6], k, MT->t[7]));
        t = _mm512_mask_blend_ps(b6, lo, hi);
    } else {
        t = _mm512_i32gather_ps(_mm512_add_epi32(k, one), q_thresholds[kind], 4);
    }
    return _mm512_mask_add_epi32(k, _mm512_cmp_ps_mask(r, t, _CMP_GE_OQ), k, one);
}

/* The update of 16 lanes (Q_UPDATE's operations, each rounded, in its order): returns the finite-gradient
 * mask; *pn the new θ (the old one where g is not finite), *mf, *vf the m, v to store (the old m̃, ṽ there).
 * Masked forms instead of blends: m, v are computed only in the finite lanes (the others keep m̃, ṽ), the
 * step is a zero-masked division (0 where the denominator is not positive), θ a masked add. */
__attribute__((always_inline)) TARGET_AVX512 static inline __mmask16 q_update_avx512(
    int adamax, int wd, const qscalars_t *c, __m512 gi, __m512 pi, __m512 mt, __m512 vt, __m512 *pn, __m512 *mf,
    __m512 *vf) {
    const __mmask16 ok = (__mmask16)~_mm512_fpclass_ps_mask(gi, 0x99); /* not NaN, not ±∞ */
    __m512 ge = _mm512_mul_ps(gi, _mm512_set1_ps(c->sign));
    if (wd == 1) ge = _mm512_add_ps(ge, _mm512_mul_ps(_mm512_set1_ps(c->l2), pi));
    const __m512 pd = wd == 2 ? _mm512_mul_ps(pi, _mm512_set1_ps(c->decay)) : pi;
    const __m512 mn = _mm512_mask_add_ps(mt, ok, _mm512_mul_ps(_mm512_set1_ps(c->b1), mt),
                                         _mm512_mul_ps(_mm512_set1_ps(c->c1), ge));
    const __m512 b2 = _mm512_set1_ps(c->b2), dmul = _mm512_set1_ps(c->dmul), eps = _mm512_set1_ps(c->eps);
    __m512 vn, den;
    if (adamax) {
        vn = _mm512_mask_max_ps(vt, ok, _mm512_mul_ps(b2, vt), _mm512_abs_ps(ge));
        den = _mm512_add_ps(_mm512_mul_ps(vn, dmul), eps);
    } else {
        vn = _mm512_mask_add_ps(vt, ok, _mm512_mul_ps(b2, vt),
                                _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c->c2), ge), ge));
        den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vn), dmul), eps);
    }
    const __mmask16 pos = _mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 step = _mm512_maskz_div_ps(pos, _mm512_mul_ps(_mm512_set1_ps(c->nstep), mn), den);
    *pn = _mm512_mask_add_ps(pi, ok, pd, step);
    *mf = mn;
    *vf = vn;
    return ok;
}

#define Q_PREFETCH 1024 /* elements ahead (a prefetch past the end is harmless) */
#define Q8_BLOCK_AVX512(ADAMAX, WD)                                                               \
    TARGET_AVX512 static int64_t q8_avx512_##ADAMAX##_##WD(                                     \
        int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,            \
        uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,       \
        float *restrict tv, const qscalars_t *c) {                                              \
        const __m512 s_m = _mm512_set1_ps(*sm), s_v = _mm512_set1_ps(*sv);                     \
        const __m512 k127 = _mm512_set1_ps(1.0f / 127.0f), k255 = _mm512_set1_ps(1.0f / 255.0f); \
        const __m512 zero = _mm512_setzero_ps(), signbit = _mm512_set1_ps(-0.0f);               \
        const __m512i absmask = _mm512_set1_epi32(0x7fffffff);                                  \
        __m512i max_m = _mm512_setzero_si512(), max_v = _mm512_setzero_si512();                 \
        int64_t bad = 0;                                                                        \
        for (int64_t i = 0; i < nb; i += 16) {                                                  \
            const __mmask16 k =                                                                 \
                nb - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(nb - i)) - 1u); \
            _mm_prefetch((const char *)(p + i + Q_PREFETCH), _MM_HINT_T0);                      \
            _mm_prefetch((const char *)(g + i + Q_PREFETCH), _MM_HINT_T0);                      \
            if ((i & 63) == 0) {                                                                \
                _mm_prefetch((const char *)(qm + i + Q_PREFETCH), _MM_HINT_T0);                 \
                _mm_prefetch((const char *)(qv + i + Q_PREFETCH), _MM_HINT_T0);                 \
            }                                                                                   \
            const __m512i qi = _mm512_cvtepi8_epi32(q_load16(qm + i, nb - i));            \
            /* a·a from the signed code: (q·(1/127))² has the bits of (|q|·(1/127))² (round to nearest is  \
             * symmetric); the sign of q·(1/127) is then put on (a·a)·s by one vpternlogd (0xCA: a ? b : c) */ \
            const __m512 as = _mm512_mul_ps(_mm512_cvtepi32_ps(qi), k127);                      \
            const __m512 mag = _mm512_mul_ps(_mm512_mul_ps(as, as), s_m);                       \
            const __m512 mt = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(                    \
                _mm512_castps_si512(signbit), _mm512_castps_si512(as), _mm512_castps_si512(mag), 0xCA)); \
            const __m512 av =                                                                   \
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q_load16(qv + i, nb - i))), k255); \
            const __m512 bv = _mm512_mul_ps(av, av);                                            \
            const __m512 vt = ADAMAX ? _mm512_mul_ps(bv, s_v) : _mm512_mul_ps(_mm512_mul_ps(bv, bv), s_v); \
            const __m512 gi = _mm512_maskz_loadu_ps(k, g + i), pi = _mm512_maskz_loadu_ps(k, p + i); \
            __m512 pn, mf, vf;                                                                  \
            const __mmask16 ok = q_update_avx512(ADAMAX, WD, c, gi, pi, mt, vt, &pn, &mf, &vf); \
            bad += __builtin_popcount((unsigned)(k & (__mmask16)~ok));                          \
            _mm512_mask_storeu_ps(p + i, k, pn);                                                \
            _mm512_storeu_ps(tm + i, mf); /* the buffers hold whole vectors: B is a multiple of 64 */ \
            _mm512_storeu_ps(tv + i, vf);                                                       \
            max_m = _mm512_mask_max_epu32(max_m, k, max_m, _mm512_and_si512(_mm512_castps_si512(mf), absmask)); \
            max_v = _mm512_mask_max_epu32(max_v, k, max_v, _mm512_and_si512(_mm512_castps_si512(vf), absmask)); \
        }                                                                                       \
        const uint32_t bm = _mm512_reduce_max_epu32(max_m), bvv = _mm512_reduce_max_epu32(max_v); \
        const float nm = q_float(bm), nv = q_float(bvv);                                        \
        *sm = nm;                                                                               \
        *sv = nv;                                                                               \
        const __m512 im = _mm512_set1_ps(bm ? 1.0f / nm : 0.0f), iv = _mm512_set1_ps(bvv ? 1.0f / nv : 0.0f); \
        const q_mtable_t MT = q_mtable_avx512();                                                \
        for (int64_t i = 0; i < nb; i += 16) {                                                  \
            const __mmask16 k =                                                                 \
                nb - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(nb - i)) - 1u); \
            const __m512 mf = _mm512_loadu_ps(tm + i);                                           \
            const __m512 rm = _mm512_mul_ps(_mm512_abs_ps(mf), im);                             \
            __m512i q = q_codes_avx512(rm, Q_KIND_M, &MT);                                         \
            const __mmask16 neg = _mm512_cmp_ps_mask(mf, zero, _CMP_LT_OQ);                     \
            q = _mm512_mask_sub_epi32(q, neg, _mm512_setzero_si512(), q);                       \
            _mm512_mask_cvtepi32_storeu_epi8(qm + i, k, q);                                     \
            const __m512 rv = _mm512_mul_ps(_mm512_loadu_ps(tv + i), iv);                        \
            _mm512_mask_cvtepi32_storeu_epi8(qv + i, k, q_codes_avx512(rv, ADAMAX ? Q_KIND_U : Q_KIND_V, &MT));   \
        }                                                                                       \
        return bad;                                                                             \
    }
Q8_BLOCK_AVX512(0, 0)
Q8_BLOCK_AVX512(0, 1)
Q8_BLOCK_AVX512(0, 2)
Q8_BLOCK_AVX512(1, 0)
Q8_BLOCK_AVX512(1, 1)
Q8_BLOCK_AVX512(1, 2)
#endif

#ifdef ADAMLAB_X86
/*
 * int8 blocks with AVX2, 8 lanes: Q8_BLOCK_AVX512's method (the same operations in the same order, the codes
 * from the thresholds with an rsqrt estimate: rsqrt_ps's relative error < 1.5·2⁻¹², 2.3·2⁻¹² through
 * rsqrt(rsqrt(r)): |x̂ − x| < 0.2 < ½ for x ≤ 255·⁴√2). A tail of fewer than 8 goes through zero-padded copies (a zero
 * lane changes no maximum and counts as finite).
 */
TARGET_AVX2 static inline __m256 q_abs_avx2(__m256 x) {
    return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

/* The codes of 8 values r under map `kind` (see q_codes_avx512). */
TARGET_AVX2 static inline __m256i q_codes_avx2(__m256 r, int kind) {
    r = _mm256_min_ps(_mm256_set1_ps(2.0f), r);
    const __m256 y = kind == Q_KIND_V ? _mm256_rsqrt_ps(_mm256_rsqrt_ps(r)) : _mm256_mul_ps(r, _mm256_rsqrt_ps(r));
    const __m256 x = _mm256_mul_ps(_mm256_set1_ps(kind == Q_KIND_M ? 127.0f : 255.0f), y);
    __m256i k = _mm256_cvttps_epi32(x);
    k = _mm256_min_epi32(_mm256_max_epi32(k, _mm256_setzero_si256()), _mm256_set1_epi32(kind == Q_KIND_M ? 127 : 255));
    const __m256 t = _mm256_i32gather_ps(q_thresholds[kind], _mm256_add_epi32(k, _mm256_set1_epi32(1)), 4);
    return _mm256_sub_epi32(k, _mm256_castps_si256(_mm256_cmp_ps(r, t, _CMP_GE_OQ)));
}

/* Pass 1 on 8 lanes: dequantise, update (θ stored at P), the m and v to store into TM, TV; their |·| bits
 * folded into the maxima. */
__attribute__((always_inline)) TARGET_AVX2 static inline int q8_avx2_update(
    int adamax, int wd, float *p, const float *g, const int8_t *qm, const uint8_t *qv, float *tm, float *tv,
    __m256 s_m, __m256 s_v, const qscalars_t *c, __m256i *max_m, __m256i *max_v) {
    const __m256 k127 = _mm256_set1_ps(1.0f / 127.0f), k255 = _mm256_set1_ps(1.0f / 255.0f);
    const __m256i qi = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)qm));
    const __m256 am = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_abs_epi32(qi)), k127);
    const __m256 mag = _mm256_mul_ps(_mm256_mul_ps(am, am), s_m);
    const __m256 neg = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setzero_si256(), qi));
    const __m256 mt = _mm256_xor_ps(mag, _mm256_and_ps(neg, _mm256_set1_ps(-0.0f)));
    const __m256 av =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qv))), k255);
    const __m256 bv = _mm256_mul_ps(av, av);
    const __m256 vt = adamax ? _mm256_mul_ps(bv, s_v) : _mm256_mul_ps(_mm256_mul_ps(bv, bv), s_v);
    const __m256 gi = _mm256_loadu_ps(g), pi = _mm256_loadu_ps(p), zero = _mm256_setzero_ps();
    const __m256 ok = _mm256_cmp_ps(_mm256_sub_ps(gi, gi), zero, _CMP_EQ_OQ);
    __m256 ge = _mm256_mul_ps(gi, _mm256_set1_ps(c->sign));
    if (wd == 1) ge = _mm256_add_ps(ge, _mm256_mul_ps(_mm256_set1_ps(c->l2), pi));
    const __m256 pd = wd == 2 ? _mm256_mul_ps(pi, _mm256_set1_ps(c->decay)) : pi;
    const __m256 mn = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c->b1), mt), _mm256_mul_ps(_mm256_set1_ps(c->c1), ge));
    const __m256 b2 = _mm256_set1_ps(c->b2), dmul = _mm256_set1_ps(c->dmul), eps = _mm256_set1_ps(c->eps);
    __m256 vn, den;
    if (adamax) {
        vn = _mm256_max_ps(_mm256_mul_ps(b2, vt), q_abs_avx2(ge));
        den = _mm256_add_ps(_mm256_mul_ps(vn, dmul), eps);
    } else {
        const __m256 c2 = _mm256_set1_ps(c->c2);
        vn = _mm256_add_ps(_mm256_mul_ps(b2, vt), _mm256_mul_ps(_mm256_mul_ps(c2, ge), ge));
        den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vn), dmul), eps);
    }
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(c->nstep), mn), den);
    const __m256 pu = _mm256_add_ps(pd, _mm256_and_ps(step, _mm256_cmp_ps(den, zero, _CMP_GT_OQ)));
    _mm256_storeu_ps(p, _mm256_blendv_ps(pi, pu, ok));
    const __m256 mf = _mm256_blendv_ps(mt, mn, ok), vf = _mm256_blendv_ps(vt, vn, ok);
    _mm256_storeu_ps(tm, mf);
    _mm256_storeu_ps(tv, vf);
    *max_m = _mm256_max_epu32(*max_m, _mm256_castps_si256(q_abs_avx2(mf)));
    *max_v = _mm256_max_epu32(*max_v, _mm256_castps_si256(q_abs_avx2(vf)));
    return 8 - __builtin_popcount((unsigned)_mm256_movemask_ps(ok));
}

/* Pass 2 on 8 lanes: the codes of TM, TV (scaled by im, iv) into QM, QV. */
__attribute__((always_inline)) TARGET_AVX2 static inline void q8_avx2_codes(int adamax, const float *tm,
                                                                            const float *tv, int8_t *qm,
                                                                            uint8_t *qv, __m256 im, __m256 iv) {
    const __m256 mf = _mm256_loadu_ps(tm);
    __m256i q = q_codes_avx2(_mm256_mul_ps(q_abs_avx2(mf), im), Q_KIND_M);
    const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(mf, _mm256_setzero_ps(), _CMP_LT_OQ));
    q = _mm256_sub_epi32(_mm256_xor_si256(q, neg), neg); /* −q where m < 0 */
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)qm, _mm_packs_epi16(w, w));
    const __m256i u = q_codes_avx2(_mm256_mul_ps(_mm256_loadu_ps(tv), iv), adamax ? Q_KIND_U : Q_KIND_V);
    const __m128i wu = _mm_packs_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
    _mm_storel_epi64((__m128i *)qv, _mm_packus_epi16(wu, wu));
}

TARGET_AVX2 static inline uint32_t q_max_avx2(__m256i x) {
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(m);
}

#define Q8_BLOCK_AVX2(ADAMAX, WD)                                                                 \
    TARGET_AVX2 static int64_t q8_avx2_##ADAMAX##_##WD(                                         \
        int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,            \
        uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,       \
        float *restrict tv, const qscalars_t *c) {                                              \
        const __m256 s_m = _mm256_set1_ps(*sm), s_v = _mm256_set1_ps(*sv);                     \
        __m256i max_m = _mm256_setzero_si256(), max_v = _mm256_setzero_si256();                 \
        int64_t bad = 0, i = 0;                                                                 \
        for (; i + 8 <= nb; i += 8)                                                             \
            bad += q8_avx2_update(ADAMAX, WD, p + i, g + i, qm + i, qv + i, tm + i, tv + i, s_m, s_v, c, \
                                  &max_m, &max_v);                                              \
        if (i < nb) {                                                                           \
            const size_t r = (size_t)(nb - i);                                                  \
            float tp[8] = {0}, tg[8] = {0};                                                     \
            int8_t tq[8] = {0};                                                                 \
            uint8_t tu[8] = {0};                                                                \
            memcpy(tp, p + i, r * sizeof(float));                                               \
            memcpy(tg, g + i, r * sizeof(float));                                               \
            memcpy(tq, qm + i, r);                                                              \
            memcpy(tu, qv + i, r);                                                              \
            bad += q8_avx2_update(ADAMAX, WD, tp, tg, tq, tu, tm + i, tv + i, s_m, s_v, c, &max_m, &max_v); \
            memcpy(p + i, tp, r * sizeof(float));                                               \
        }                                                                                       \
        const uint32_t bm = q_max_avx2(max_m), bvv = q_max_avx2(max_v);                         \
        const float nm = q_float(bm), nv = q_float(bvv);                                        \
        *sm = nm;                                                                               \
        *sv = nv;                                                                               \
        const __m256 im = _mm256_set1_ps(bm ? 1.0f / nm : 0.0f), iv = _mm256_set1_ps(bvv ? 1.0f / nv : 0.0f); \
        for (i = 0; i + 8 <= nb; i += 8) q8_avx2_codes(ADAMAX, tm + i, tv + i, qm + i, qv + i, im, iv); \
        if (i < nb) {                                                                           \
            int8_t tq[8];                                                                       \
            uint8_t tu[8];                                                                      \
            q8_avx2_codes(ADAMAX, tm + i, tv + i, tq, tu, im, iv);                              \
            memcpy(qm + i, tq, (size_t)(nb - i));                                               \
            memcpy(qv + i, tu, (size_t)(nb - i));                                               \
        }                                                                                       \
        return bad;                                                                             \
    }
Q8_BLOCK_AVX2(0, 0)
Q8_BLOCK_AVX2(0, 1)
Q8_BLOCK_AVX2(0, 2)
Q8_BLOCK_AVX2(1, 0)
Q8_BLOCK_AVX2(1, 1)
Q8_BLOCK_AVX2(1, 2)
#endif

#ifdef ADAMLAB_X86
/*
 * bf16 state with intrinsics (AVX-512: 16 lanes; AVX2: 8), the generic loop's operations in its order:
 * decode = zero-extension of the 16 bits and a shift left by 16; the update as Q_UPDATE (no FMA, exact √ and
 * division; a non-positive denominator gives a zero step); the random bits mix(key ^ i) >> 16 in 32-bit
 * integer lanes (vpmulld), without mix's last x ^= x >> 16, which leaves the high 16 bits unchanged; encode
 * (bits(x) + r) >> 16 and NaN → 0x7FC0 by a compare and a blend, narrowed to 16 bits (vpmovdw / packusdw).
 */
/* mix32(x) >> 16 for x = key ^ i, from key' = key ^ (key >> 16) and j = i ^ (i >> 16): mix's first x ^= x >> 16
 * is key' ^ j (a shift distributes over ^), so j is shared by m's and v's bits. */
TARGET_AVX512 static inline __m512i q_rand16_avx512(__m512i key1, __m512i j) {
    __m512i x = _mm512_xor_si512(key1, j);
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    return _mm512_srli_epi32(x, 16);
}

/* bits(x) + r (r < 2^16), or 0x7FC00000 where x is NaN (one masked add): the bf16 code in the high 16 bits. */
TARGET_AVX512 static inline __m512i q_bf16_round_avx512(__m512 x, __m512i r) {
    return _mm512_mask_add_epi32(_mm512_set1_epi32(0x7FC00000), _mm512_cmp_ps_mask(x, x, _CMP_ORD_Q),
                                 _mm512_castps_si512(x), r);
}

/* The words 1, 3, …, 31 of a then of b: the high halves of 16 lanes of a, then of b (vpermt2w). */
static const uint16_t Q_ODD_WORDS[32] __attribute__((aligned(64))) = {
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
    33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
/* Word k of the source into word 2k + 1 (the zero mask clears the even words): bf16 → float32 bits. */
static const uint16_t Q_WIDEN_WORDS[32] __attribute__((aligned(64))) = {
    0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15};

#define BF_LOOP_AVX512(ADAMAX, WD)                                                                \
    TARGET_AVX512 static int64_t bfs_avx512_##ADAMAX##_##WD(int64_t n, int64_t i0, float *restrict p,  \
                                                          const float *restrict g, uint16_t *restrict m, \
                                                          uint16_t *restrict v, const qscalars_t *c) { \
        const __m512i key_m = _mm512_set1_epi32((int)(c->key_m ^ (c->key_m >> 16)));              \
        const __m512i key_v = _mm512_set1_epi32((int)(c->key_v ^ (c->key_v >> 16)));              \
        const __m512i odd = _mm512_load_si512(Q_ODD_WORDS), widen = _mm512_load_si512(Q_WIDEN_WORDS); \
        __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i0),                     \
                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)); \
        const __m512i sixteen = _mm512_set1_epi32(16);                                            \
        int64_t bad = 0;                                                                          \
        for (int64_t i = 0; i < n; i += 16, idx = _mm512_add_epi32(idx, sixteen)) {               \
            const int full = n - i >= 16;                                                         \
            const __mmask16 k = full ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)(n - i)) - 1u); \
            _mm_prefetch((const char *)(p + i + Q_PREFETCH), _MM_HINT_T0);                        \
            _mm_prefetch((const char *)(g + i + Q_PREFETCH), _MM_HINT_T0);                        \
            if ((i & 31) == 0) {                                                                  \
                _mm_prefetch((const char *)(m + i + Q_PREFETCH), _MM_HINT_T0);                    \
                _mm_prefetch((const char *)(v + i + Q_PREFETCH), _MM_HINT_T0);                    \
            }                                                                                     \
            const __m512i mb = full ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(m + i))) \
                                    : _mm512_maskz_loadu_epi16((__mmask32)k, m + i);              \
            const __m512i vb = full ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(v + i))) \
                                    : _mm512_maskz_loadu_epi16((__mmask32)k, v + i);              \
            const __m512 mt = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, widen, mb)); \
            const __m512 vt = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, widen, vb)); \
            const __m512 gi = full ? _mm512_loadu_ps(g + i) : _mm512_maskz_loadu_ps(k, g + i);    \
            const __m512 pi = full ? _mm512_loadu_ps(p + i) : _mm512_maskz_loadu_ps(k, p + i);    \
            __m512 pn, mf, vf;                                                                    \
            const __mmask16 ok = q_update_avx512(ADAMAX, WD, c, gi, pi, mt, vt, &pn, &mf, &vf);   \
            bad += __builtin_popcount((unsigned)(k & (__mmask16)~ok));                            \
            const __m512i j = _mm512_xor_si512(idx, _mm512_srli_epi32(idx, 16));                  \
            const __m512i mo = q_bf16_round_avx512(mf, q_rand16_avx512(key_m, j));                \
            const __m512i vo = q_bf16_round_avx512(vf, q_rand16_avx512(key_v, j));                \
            const __m512i mv = _mm512_permutex2var_epi16(mo, odd, vo); /* m's 16 codes, then v's */ \
            const __m256i vh = _mm512_extracti64x4_epi64(mv, 1);                                  \
            if (full) {                                                                           \
                _mm512_storeu_ps(p + i, pn);                                                      \
                _mm256_storeu_si256((__m256i *)(m + i), _mm512_castsi512_si256(mv));              \
                _mm256_storeu_si256((__m256i *)(v + i), vh);                                      \
            } else {                                                                              \
                _mm512_mask_storeu_ps(p + i, k, pn);                                              \
                _mm512_mask_storeu_epi16(m + i, (__mmask32)k, mv);                                \
                _mm512_mask_storeu_epi16(v + i, (__mmask32)k, _mm512_castsi256_si512(vh));        \
            }                                                                                     \
        }                                                                                         \
        return bad;                                                                               \
    }
BF_LOOP_AVX512(0, 0)
BF_LOOP_AVX512(0, 1)
BF_LOOP_AVX512(0, 2)
BF_LOOP_AVX512(1, 0)
BF_LOOP_AVX512(1, 1)
BF_LOOP_AVX512(1, 2)

TARGET_AVX2 static inline __m256i q_rand16_avx2(__m256i key1, __m256i j) { /* as q_rand16_avx512 */
    __m256i x = _mm256_xor_si256(key1, j);
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bu));
    return _mm256_srli_epi32(x, 16);
}

/* 8 lanes rounded to bf16 with the random bits r, narrowed to 8 × 16 bits. */
TARGET_AVX2 static inline __m128i q_bf16_round_avx2(__m256 x, __m256i r) {
    __m256i b = _mm256_srli_epi32(_mm256_add_epi32(_mm256_castps_si256(x), r), 16);
    b = _mm256_blendv_epi8(b, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    return _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)); /* b ≤ 0xFFFF */
}

/* 8 lanes of bf16 state: element idx.. of the tensor at p, g, m, v (all 8 lanes read and written). */
__attribute__((always_inline)) TARGET_AVX2 static inline int bf_avx2_8(int adamax, int wd, float *p,
                                                                    const float *g, uint16_t *m, uint16_t *v,
                                                                    __m256i idx, const qscalars_t *c) {
    const __m256 mt = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)m)), 16));
    const __m256 vt = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)v)), 16));
    const __m256 gi = _mm256_loadu_ps(g), pi = _mm256_loadu_ps(p), zero = _mm256_setzero_ps();
    const __m256 ok = _mm256_cmp_ps(_mm256_sub_ps(gi, gi), zero, _CMP_EQ_OQ);
    __m256 ge = _mm256_mul_ps(gi, _mm256_set1_ps(c->sign));
    if (wd == 1) ge = _mm256_add_ps(ge, _mm256_mul_ps(_mm256_set1_ps(c->l2), pi));
    const __m256 pd = wd == 2 ? _mm256_mul_ps(pi, _mm256_set1_ps(c->decay)) : pi;
    const __m256 mn = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c->b1), mt), _mm256_mul_ps(_mm256_set1_ps(c->c1), ge));
    const __m256 b2 = _mm256_set1_ps(c->b2), dmul = _mm256_set1_ps(c->dmul), eps = _mm256_set1_ps(c->eps);
    __m256 vn, den;
    if (adamax) {
        vn = _mm256_max_ps(_mm256_mul_ps(b2, vt), q_abs_avx2(ge));
        den = _mm256_add_ps(_mm256_mul_ps(vn, dmul), eps);
    } else {
        vn = _mm256_add_ps(_mm256_mul_ps(b2, vt), _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(c->c2), ge), ge));
        den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vn), dmul), eps);
    }
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(c->nstep), mn), den);
    const __m256 pu = _mm256_add_ps(pd, _mm256_and_ps(step, _mm256_cmp_ps(den, zero, _CMP_GT_OQ)));
    _mm256_storeu_ps(p, _mm256_blendv_ps(pi, pu, ok));
    const __m256 mf = _mm256_blendv_ps(mt, mn, ok), vf = _mm256_blendv_ps(vt, vn, ok);
    const __m256i j = _mm256_xor_si256(idx, _mm256_srli_epi32(idx, 16));
    const __m256i key_m = _mm256_set1_epi32((int)(c->key_m ^ (c->key_m >> 16)));
    const __m256i key_v = _mm256_set1_epi32((int)(c->key_v ^ (c->key_v >> 16)));
    _mm_storeu_si128((__m128i *)m, q_bf16_round_avx2(mf, q_rand16_avx2(key_m, j)));
    _mm_storeu_si128((__m128i *)v, q_bf16_round_avx2(vf, q_rand16_avx2(key_v, j)));
    return 8 - __builtin_popcount((unsigned)_mm256_movemask_ps(ok));
}

/* A tail of fewer than 8 goes through zero-padded copies (a zero lane counts as finite). */
#define BF_LOOP_AVX2(ADAMAX, WD)                                                                  \
    TARGET_AVX2 static int64_t bfs_avx2_##ADAMAX##_##WD(int64_t n, int64_t i0, float *restrict p,  \
                                                      const float *restrict g, uint16_t *restrict m, \
                                                      uint16_t *restrict v, const qscalars_t *c) { \
        __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)i0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); \
        const __m256i eight = _mm256_set1_epi32(8);                                               \
        int64_t bad = 0, i = 0;                                                                   \
        for (; i + 8 <= n; i += 8, idx = _mm256_add_epi32(idx, eight))                            \
            bad += bf_avx2_8(ADAMAX, WD, p + i, g + i, m + i, v + i, idx, c);                     \
        if (i < n) {                                                                              \
            const size_t r = (size_t)(n - i);                                                     \
            float tp[8] = {0}, tg[8] = {0};                                                       \
            uint16_t tm[8] = {0}, tv[8] = {0};                                                    \
            memcpy(tp, p + i, r * sizeof(float));                                                 \
            memcpy(tg, g + i, r * sizeof(float));                                                 \
            memcpy(tm, m + i, r * sizeof(uint16_t));                                              \
            memcpy(tv, v + i, r * sizeof(uint16_t));                                              \
            bad += bf_avx2_8(ADAMAX, WD, tp, tg, tm, tv, idx, c);                                 \
            memcpy(p + i, tp, r * sizeof(float));                                                 \
            memcpy(m + i, tm, r * sizeof(uint16_t));                                              \
            memcpy(v + i, tv, r * sizeof(uint16_t));                                              \
        }                                                                                         \
        return bad;                                                                               \
    }
BF_LOOP_AVX2(0, 0)
BF_LOOP_AVX2(0, 1)
BF_LOOP_AVX2(0, 2)
BF_LOOP_AVX2(1, 0)
BF_LOOP_AVX2(1, 1)
BF_LOOP_AVX2(1, 2)
#endif

static const q_isa_loops_t Q_ISA_LOOPS[ISA_COUNT] = {
    [ISA_SCALAR] = Q_TABLE_GENERIC(scalar),
#ifdef ADAMLAB_X86
    [ISA_AVX2] = {{{q8_avx2_0_0, q8_avx2_0_1, q8_avx2_0_2}, {q8_avx2_1_0, q8_avx2_1_1, q8_avx2_1_2}},
                  {{bfs_avx2_0_0, bfs_avx2_0_1, bfs_avx2_0_2}, {bfs_avx2_1_0, bfs_avx2_1_1, bfs_avx2_1_2}}},
    [ISA_AVX512] = {{{q8_avx512_0_0, q8_avx512_0_1, q8_avx512_0_2}, {q8_avx512_1_0, q8_avx512_1_1, q8_avx512_1_2}},
                    {{bfs_avx512_0_0, bfs_avx512_0_1, bfs_avx512_0_2}, {bfs_avx512_1_0, bfs_avx512_1_1, bfs_avx512_1_2}}},
#endif
};

/* ---------------------------------------------------------------- driver */

typedef struct {
    job_t base; /* first: run_range hands the hook the job_t */
    int mode;   /* QMODE_* */
    int64_t block;
    void *const *scale_m;
    void *const *scale_v;
    const qscalars_t *qs;
    q8_block_f q8;
    bf_loop_f bf;
    int failed; /* a scratch buffer could not be allocated */
} qjob_t;

/* The hook: elements [begin, end) of the concatenation, tensor k starting at element `offset`. bf16 runs those
 * elements; int8 runs every block whose first element lies in [begin, end) (whole, even past `end`). */
static void q_range(void *arg, int64_t k, int64_t offset, int64_t begin, int64_t end) {
    qjob_t *job = (qjob_t *)arg;
    const job_t *b = &job->base;
    const int64_t B = job->block;
    float stack_m[Q_STACK_BLOCK], stack_v[Q_STACK_BLOCK];
    float *tm = stack_m, *tv = stack_v, *heap = NULL;
    if (job->mode == QMODE_INT8 && B > Q_STACK_BLOCK) {
        heap = (float *)malloc(sizeof(float) * 2 * (size_t)B);
        if (!heap) {
            __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
            return;
        }
        tm = heap;
        tv = heap + B;
    }
    for (; k < b->n_tensors && offset < end; ++k) {
        const int64_t n = b->numel[k], start = offset;
        offset += n;
        const int64_t lo = begin > start ? begin - start : 0, hi = end - start < n ? end - start : n;
        if (hi <= lo) continue;
        float *p = (float *)b->arrays[0][k];
        const float *g = (const float *)b->arrays[1][k];
        const qscalars_t *c = &job->qs[k];
        int64_t bad = 0;
        if (job->mode == QMODE_BF16) {
            bad = job->bf(hi - lo, lo, p + lo, g + lo, (uint16_t *)b->arrays[2][k] + lo,
                          (uint16_t *)b->arrays[3][k] + lo, c);
        } else {
            int8_t *qm = (int8_t *)b->arrays[2][k];
            uint8_t *qv = (uint8_t *)b->arrays[3][k];
            float *sm = (float *)job->scale_m[k], *sv = (float *)job->scale_v[k];
            for (int64_t j = (lo + B - 1) / B, e = j * B; e < hi; ++j, e += B) {
                const int64_t nb = n - e < B ? n - e : B;
                bad += job->q8(nb, p + e, g + e, qm + e, qv + e, sm + j, sv + j, tm, tv, c);
            }
        }
        if (bad) __atomic_fetch_add(&b->nonfinite[k], bad, __ATOMIC_RELAXED);
    }
    free(heap);
}

/*
 * One step of Adam (is_adamax 0) or AdaMax (1) with quantised state, for n_tensors float32 tensors.
 * mode: QMODE_BF16 (m, v: bfloat16 tensors; seeds[k] the tensor's state seed) or QMODE_INT8 (m: int8, v:
 * uint8, scale_m/scale_v: float32 arrays of ceil(numel/block) scales; block a multiple of 64).
 * steps[k]: tensor k's float32 step counter, incremented here. Returns the number of non-finite gradient
 * entries (per tensor in nonfinite[k]); -2 for a refused request (AMSGrad, averaging, a bad mode or block),
 * -1 if memory ran out.
 */
int64_t adamlab_adam_step_quantised(int mode, int is_adamax, int64_t n_tensors, const int64_t *numel,
                                    void *const *param, void *const *grad, void *const *m, void *const *v,
                                    void *const *scale_m, void *const *scale_v, float *const *steps,
                                    const int64_t *seeds, int64_t block, const double *hp, int flags,
                                    int nthreads, int64_t *nonfinite) {
    if (mode != QMODE_BF16 && mode != QMODE_INT8) return -2;
    if (flags & (FLAG_AMSGRAD | FLAG_AVERAGING)) return -2;
    if (mode == QMODE_INT8 && (block < 64 || block % 64 != 0)) return -2;
    qscalars_t *qs = (qscalars_t *)malloc(sizeof(qscalars_t) * (n_tensors > 0 ? (size_t)n_tensors : 1));
    if (!qs) return -1;
    int64_t total = 0;
    double t_prev = -1.0;
    scalars_t s;
    for (int64_t k = 0; k < n_tensors; ++k) {
        const double t = (double)*steps[k] + 1.0;
        *steps[k] = (float)t;
        if (k == 0 || t != t_prev) {
            if (is_adamax) adamax_scalars(hp, flags, t, &s);
            else adam_scalars(hp, flags, t, &s);
        }
        t_prev = t;
        qscalars_t *c = &qs[k];
        c->b1 = (float)s.beta1_t;
        c->c1 = (float)(1.0 - s.beta1_t);
        c->b2 = (float)s.beta2;
        c->c2 = (float)(1.0 - s.beta2);
        c->nstep = (float)(-s.step);
        c->dmul = (float)s.denom_scale;
        c->eps = (float)s.eps;
        c->l2 = (float)s.l2;
        c->decay = (float)s.decay;
        c->sign = (float)s.sign;
        const uint32_t seed = (uint32_t)seeds[k], step = (uint32_t)t;
        c->key_m = mix32(seed ^ mix32(2u * step + 0u));
        c->key_v = mix32(seed ^ mix32(2u * step + 1u));
        nonfinite[k] = 0;
        total += numel[k];
    }
    const int wd = hp[HP_WD] == 0.0 ? 0 : ((flags & FLAG_DECOUPLED) ? 2 : 1);
    const q_isa_loops_t *loops = &Q_ISA_LOOPS[adamlab_get_isa()];
    qjob_t job;
    memset(&job, 0, sizeof job);
    job.base.n_tensors = n_tensors;
    job.base.numel = numel;
    job.base.arrays[0] = param;
    job.base.arrays[1] = grad;
    job.base.arrays[2] = m;
    job.base.arrays[3] = v;
    job.base.nonfinite = nonfinite;
    job.base.total = total;
    job.base.range = q_range;
    job.mode = mode;
    job.block = block;
    job.scale_m = scale_m;
    job.scale_v = scale_v;
    job.qs = qs;
    job.q8 = loops->q8[is_adamax != 0][wd];
    job.bf = loops->bf[is_adamax != 0][wd];
    run_jobs(&job.base, nthreads);
    free(qs);
    if (job.failed) return -1;
    int64_t bad = 0;
    for (int64_t k = 0; k < n_tensors; ++k) bad += nonfinite[k];
    return bad;
}
