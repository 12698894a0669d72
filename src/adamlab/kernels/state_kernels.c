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
 *   int8 only: v = min(v, FLT_MAX) [u = min(u, FLT_MAX)] (a NaN stays NaN), so that an overflowing (c2·g)·g
 *   (a finite |g| above ~10^21) or a decoded ṽ = ∞ leaves w, z and the block's s_z finite
 *   θ ← θ + (nstep·m)/(√v·dmul + ε)                      [AdaMax: θ + (nstep·m)/(u·dmul + ε)]
 *   re-quantise m, v (int8: m and z = √√v or √u with the block's new scales; bf16: stochastic rounding).
 *
 * Two choices the contract leaves open, made as the fp32 kernel makes them (say so to the oracle):
 *  - where the denominator is not positive (ε = 0 and v = 0, e.g. AdaMax's default ε = 0 on a coordinate that
 *    never had a gradient, or whose ũ quantised to 0), the step is 0, not 0/0 or ∞: θ ← θ + 0 (θ·decay + 0
 *    under decoupled decay), as adamlab.numpy.adam's safe_div and the oracle;
 *  - int8 codes (version 2): a block whose new scale is not positive (0, or NaN from a NaN θ under L2) codes
 *    as 0 throughout, as the oracle; the second moment's code takes min(x, 255) before rounding, so a NaN
 *    x = z·r_z codes as 255 (no longer reachable from a finite g: v is clamped to FLT_MAX, so z and s_z stay
 *    finite).
 *
 * int8 (codes version 2, quant_spec2.md), per block of B elements (the last may be shorter; blocks start at
 * element 0 of each tensor); the scales are taken after the update:
 *   m: s_m = max |m|, r_m = 1/s_m (one float32 division per block), k = the E4M3 code of y = |m|·r_m (an
 *      8-bit float: 4 exponent bits, 3 mantissa bits, subnormals, round half to even; q_e4m3_encode), stored
 *      as ±k with m's sign; m̃ = ±decode(k)·s_m;
 *   the second moment by its root z (Adam z = √w, w = √v the step's root; AdaMax z = √u): s_z = max z,
 *      q = min(rint(z·r_z), 255) with r_z = 255/s_z; z̃ = q·d with d = s_z/255; Adam ṽ = (z̃·z̃)·(z̃·z̃),
 *      AdaMax ũ = z̃·z̃. A coordinate with a non-finite gradient stores its old m̃ and z̃ (z̃ itself).
 * One pass over memory: a block is dequantised, updated (θ written), and its new m and z are kept in two
 * L1-resident float buffers while the maxima are found, then coded from them.
 *
 * bf16: m, v stored as bfloat16; encode x with 16 random bits r: NaN → 0x7FC0, else (bits(x) + r) >> 16;
 *   r = mix(key ^ i) >> 16 for element i of the flattened tensor, key = mix(seed ^ mix(2·step + which)),
 *   which = 0 for m and 1 for v/u, step the tensor's count after its increment; mix is a 32-bit integer hash.
 *
 * Non-finite gradients: the coordinate keeps its θ and stores its old (dequantised) m̃, ṽ (int8: m̃, z̃),
 * re-quantised (with the block's new scales for int8), and is counted for its tensor.
 *
 * Threads: the driver of adam_kernels.c (chunks of the concatenation) through job_t's `range` hook; a block is
 * run by the chunk that holds its first element, so a block never straddles two threads, and every element
 * takes the same arithmetic whatever the thread count.
 */

#include <float.h> /* FLT_MAX */

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

/*
 * The int8 codes, version 2 (the contract's arithmetic; docs/quantised-state.md).
 * m: y = |m|·r_m (r_m = 1/s_m) coded as an 8-bit float with 4 exponent bits, 3 mantissa bits and subnormals
 * ("E4M3", round half to even), k ∈ [0, 127]: k = rint(y·2^17) where y < 2^-14 (found as bits(y + 64) −
 * bits(64): 64's ulp is 2^-17, so the float32 addition rounds y to the subnormal codes' grid, half to even),
 * else k = (t + 0x7FFFF + ((t >> 20) & 1)) >> 20 with t = bits(y) − 0x38000000 (the same bits as
 * bits(y) − 0x37F80001 + bit 20 of bits(y)), k ≤ 127 (+∞ and NaN take 127). Decode: k·2^-17 (k < 8), else the
 * float32 with bits (k << 20) + 0x38000000 — which is exactly the IEEE half-precision value with bits k << 7
 * (its subnormals are j·2^-24, its exponent bias 15), so the SIMD builds decode with vcvtph2ps.
 */
static inline uint32_t q_e4m3_encode(float y) {
    const uint32_t b = q_bits(y);
    if (b < 0x38800000u) return q_bits(y + 64.0f) - 0x42800000u;
    const uint32_t k = (b - 0x37F80001u + ((b >> 20) & 1u)) >> 20;
    return k < 127u ? k : 127u;
}
static inline float q_e4m3_decode(uint32_t k) {
    return k < 8u ? (float)k * (1.0f / 131072.0f) : q_float((k << 20) + 0x38000000u);
}
/* The second moment's code of x = z·r_z (r_z = 255/s_z): min(rint(x), 255) — the clamp first (a NaN x takes
 * 255, as minps(x, 255) gives), then the rounding, by adding 2^23 (x ∈ [0, 255]: the integer is in the low
 * bits). */
static inline uint32_t q_linear_encode(float x) {
    x = x < 255.0f ? x : 255.0f;
    return q_bits(x + 8388608.0f) - 0x4B000000u;
}

/*
 * The update of one coordinate (the contract's steps 2 and 3), shared by both formats: from g, θ and the
 * dequantised m̃ (MT), ṽ (VT), sets OK (g finite), PN (the new θ: the old one where g is not finite), MF, VF
 * (the m and v to store: the old m̃, ṽ where g is not finite) and RT, the root the step divides by (Adam's
 * w = √v, AdaMax's u; int8 stores its square root).
 */
#define Q_UPDATE(ADAMAX, WD, CLAMP, c, gi, pi, MT, VT, OK, PN, MF, VF, RT)                      \
    const int OK = finite_f(gi);                                                                \
    float PN, MF, VF, RT;                                                                       \
    {                                                                                           \
        float ge = gi * c->sign;                                                                \
        if (WD == 1) ge = ge + c->l2 * pi;                                                      \
        const float pd = WD == 2 ? pi * c->decay : pi;                                          \
        const float mn = (c->b1 * MT) + (c->c1 * ge);                                           \
        float vn;                                                                               \
        if (ADAMAX) {                                                                           \
            const float a = c->b2 * VT, ag = fabsf(ge);                                         \
            vn = a > ag ? a : ag;                                                               \
            if (CLAMP) vn = vn > FLT_MAX ? FLT_MAX : vn; /* int8: u = min(u, FLT_MAX), NaN kept */ \
            RT = vn;                                                                            \
        } else {                                                                                \
            vn = (c->b2 * VT) + ((c->c2 * ge) * ge);                                            \
            if (CLAMP) vn = vn > FLT_MAX ? FLT_MAX : vn; /* int8: v = min(v, FLT_MAX), NaN kept */ \
            RT = sqrtf(vn);                                                                     \
        }                                                                                       \
        const float den = RT * c->dmul + c->eps;                                                \
        const float step = (c->nstep * mn) / den;                                               \
        const float pu = pd + (den > 0.0f ? step : 0.0f);                                       \
        PN = OK ? pu : pi;                                                                      \
        MF = OK ? mn : MT;                                                                      \
        VF = OK ? vn : VT;                                                                      \
    }

/* One int8 block of nb ≤ B elements: θ, g, the codes of m and of the root z, their scales (read, then the new
 * ones written), and two scratch buffers of nb floats (the new m and z). Returns the number of non-finite
 * gradients. */
typedef int64_t (*q8_block_f)(int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,
                              uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,
                              float *restrict tz, const qscalars_t *c);

/* A block's second pass, shared by every build's tail: the codes of m (tm) and z (tz) with the new scales. A
 * scale that is not positive (0, or NaN from a NaN θ) codes its whole block as 0. */
static inline void q8_codes_scalar(int64_t i0, int64_t nb, const float *tm, const float *tz, int8_t *qm,
                                   uint8_t *qv, float s_m, float s_z) {
    if (i0 >= nb) return;
    if (s_m > 0.0f) {
        const float r_m = 1.0f / s_m;
        for (int64_t i = i0; i < nb; ++i) {
            const int32_t k = (int32_t)q_e4m3_encode(fabsf(tm[i]) * r_m);
            qm[i] = (int8_t)(tm[i] < 0.0f ? -k : k);
        }
    } else {
        memset(qm + i0, 0, (size_t)(nb - i0));
    }
    if (s_z > 0.0f) {
        const float r_z = 255.0f / s_z;
        for (int64_t i = i0; i < nb; ++i) qv[i] = (uint8_t)q_linear_encode(tz[i] * r_z);
    } else {
        memset(qv + i0, 0, (size_t)(nb - i0));
    }
}

#define Q8_BLOCK_GENERIC(ISA, ATTR, ADAMAX, WD)                                                   \
    ATTR static int64_t q8_##ISA##_##ADAMAX##_##WD(                                             \
        int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,            \
        uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,       \
        float *restrict tz, const qscalars_t *c) {                                              \
        const float s_m = *sm, d = *sv / 255.0f;                                                \
        uint32_t max_m = 0, max_z = 0;                                                          \
        int32_t bad = 0;                                                                        \
        for (int64_t i = 0; i < nb; ++i) {                                                      \
            const int32_t ci = qm[i];                                                           \
            const float dm = q_e4m3_decode((uint32_t)(ci < 0 ? -ci : ci));                      \
            const float mt = (ci < 0 ? -dm : dm) * s_m;                                         \
            const float zt = (float)qv[i] * d, wt = zt * zt;                                    \
            const float vt = ADAMAX ? wt : wt * wt;                                             \
            const float gi = g[i], pi = p[i];                                                   \
            Q_UPDATE(ADAMAX, WD, 1, c, gi, pi, mt, vt, ok, pn, mf, vf, rt)                      \
            (void)vf;                                                                           \
            bad += ok ? 0 : 1;                                                                  \
            p[i] = pn;                                                                          \
            const float zf = ok ? sqrtf(rt) : zt;                                               \
            tm[i] = mf;                                                                         \
            tz[i] = zf;                                                                         \
            /* max |x| on the bits: for non-negative floats the integer order is the float order */ \
            const uint32_t bm = q_bits(mf) & 0x7fffffffu, bz = q_bits(zf); /* z ≥ +0 or NaN */     \
            max_m = bm > max_m ? bm : max_m;                                                    \
            max_z = bz > max_z ? bz : max_z;                                                    \
        }                                                                                       \
        *sm = q_float(max_m);                                                                   \
        *sv = q_float(max_z);                                                                   \
        q8_codes_scalar(0, nb, tm, tz, qm, qv, *sm, *sv);                                       \
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
            Q_UPDATE(ADAMAX, WD, 0, c, gi, pi, mt, vt, ok, pn, mf, vf, rt)                      \
            (void)rt;                                                                           \
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
 * int8 blocks with AVX-512, 16 lanes, intrinsics: Q8_BLOCK_GENERIC's operations in its order (no FMA in
 * anything stored). Pass 1 decodes m̃ by vcvtph2ps of the half-precision bits (|c| << 7) | (c's sign << 15)
 * (see q_e4m3_decode; vpmovsxbw, vpabsw, vpsllw, one vpternlogd), z̃ = q·d; it updates with masked arithmetic
 * (the lanes with a non-finite g keep θ, m̃ and z̃ through the masks, no blends), takes z = √w in the finite
 * lanes (a masked vsqrtps) and keeps m, z in the block's buffers with their maxima (on the bits). Pass 2 codes
 * them with integer operations on the float bits (m: both branches of the encoding, a masked move between
 * them; z: min, + 2^23 and the low byte by vpmovdb). Tail lanes are masked.
 */

/* 16 bytes from src, of which n (if < 16) are read and the rest zero (AVX-512 F only: no byte masks). */
TARGET_AVX512 static inline __m128i q_load16(const void *src, int64_t n) {
    if (n >= 16) return _mm_loadu_si128((const __m128i *)src);
    __m128i x = _mm_setzero_si128();
    memcpy(&x, src, (size_t)n);
    return x;
}

/* The update of 16 lanes (Q_UPDATE's operations, each rounded, in its order): returns the finite-gradient
 * mask; *pn the new θ (the old one where g is not finite), *mf, *vf the m, v to store (the old m̃, ṽ there),
 * *rt the root the step divides by (Adam √v, AdaMax u). Masked forms instead of blends: m, v are computed only
 * in the finite lanes (the others keep m̃, ṽ), the step is a zero-masked division (0 where the denominator is
 * not positive), θ a masked add. */
__attribute__((always_inline)) TARGET_AVX512 static inline __mmask16 q_update_avx512(
    int adamax, int wd, int clamp, const qscalars_t *c, __m512 gi, __m512 pi, __m512 mt, __m512 vt, __m512 *pn,
    __m512 *mf, __m512 *vf, __m512 *rt) {
    const __mmask16 ok = (__mmask16)~_mm512_fpclass_ps_mask(gi, 0x99); /* not NaN, not ±∞ */
    __m512 ge = _mm512_mul_ps(gi, _mm512_set1_ps(c->sign));
    if (wd == 1) ge = _mm512_add_ps(ge, _mm512_mul_ps(_mm512_set1_ps(c->l2), pi));
    const __m512 pd = wd == 2 ? _mm512_mul_ps(pi, _mm512_set1_ps(c->decay)) : pi;
    const __m512 mn = _mm512_mask_add_ps(mt, ok, _mm512_mul_ps(_mm512_set1_ps(c->b1), mt),
                                         _mm512_mul_ps(_mm512_set1_ps(c->c1), ge));
    const __m512 b2 = _mm512_set1_ps(c->b2), dmul = _mm512_set1_ps(c->dmul), eps = _mm512_set1_ps(c->eps);
    __m512 vn, r;
    if (adamax) {
        vn = _mm512_mask_max_ps(vt, ok, _mm512_mul_ps(b2, vt), _mm512_abs_ps(ge));
        if (clamp) vn = _mm512_min_ps(_mm512_set1_ps(FLT_MAX), vn); /* a NaN second operand is returned */
        r = vn;
    } else {
        vn = _mm512_mask_add_ps(vt, ok, _mm512_mul_ps(b2, vt),
                                _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c->c2), ge), ge));
        if (clamp) vn = _mm512_min_ps(_mm512_set1_ps(FLT_MAX), vn);
        r = _mm512_sqrt_ps(vn);
    }
    const __m512 den = _mm512_add_ps(_mm512_mul_ps(r, dmul), eps);
    const __mmask16 pos = _mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 step = _mm512_maskz_div_ps(pos, _mm512_mul_ps(_mm512_set1_ps(c->nstep), mn), den);
    *pn = _mm512_mask_add_ps(pi, ok, pd, step);
    *mf = mn;
    *vf = vn;
    *rt = r;
    return ok;
}

/* m̃ of 16 int8 codes with the block's scale s_m: decode(|c|)·s_m with c's sign (the sign changes no rounding). */
__attribute__((always_inline)) TARGET_AVX512 static inline __m512 q8_decode_m_avx512(__m128i cb, __m512 s_m) {
    const __m256i c16 = _mm256_cvtepi8_epi16(cb);
    const __m256i mag = _mm256_slli_epi16(_mm256_abs_epi16(c16), 7);
    const __m512i h = _mm512_ternarylogic_epi32(_mm512_castsi256_si512(mag), _mm512_castsi256_si512(c16),
                                                _mm512_set1_epi32((int)0x80008000u), 0xF8); /* a | (b & c) */
    return _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), s_m);
}

#define Q_TAIL16(nb, i) ((nb) - (i) >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (unsigned)((nb) - (i))) - 1u))
/* √w for Adam's root z = √w, w = √v, without the divider: rsqrt14, one Newton–Raphson step on (s ≈ √w,
 * h ≈ 1/(2√w)) and a final correction s + (w − s²)·h, each residual by a fused multiply-add; ±0 and ±∞ are
 * returned as they are. This is not the contract's arithmetic but a way to compute its correctly rounded
 * sqrtf: it equals vsqrtps bit for bit for every float32 w ≥ 2^-75 (0x1A000000: checked exhaustively over
 * all 1.7·10^9 of them, and over ∞ and the NaNs: scripts/check_state_sqrt.c), and w = √v is either 0 or at
 * least √(2^-149) = 2^-74.5. (Below 2^-75, where Adam's w never is, it can differ.) */
__attribute__((always_inline)) TARGET_AVX512 static inline __m512 q_sqrt_fma_avx512(__m512 w) {
    const __m512 y = _mm512_rsqrt14_ps(w);
    const __m512 s = _mm512_mul_ps(w, y), h = _mm512_mul_ps(y, _mm512_set1_ps(0.5f));
    const __m512 e = _mm512_fnmadd_ps(s, h, _mm512_set1_ps(0.5f));
    const __m512 s1 = _mm512_fmadd_ps(s, e, s), h1 = _mm512_fmadd_ps(h, e, h);
    const __m512 z = _mm512_fmadd_ps(_mm512_fnmadd_ps(s1, s1, w), h1, s1);
    /* ±0 and +∞ (0·∞ above) give w itself: vfixupimmps's token 1 for the classes "zero" and "+∞" */
    return _mm512_fixupimm_ps(z, w, _mm512_set1_epi32(0x00100100), 0);
}

/* 64 codes from four vectors of 16 int32 lanes (in [−128, 255]), narrowed with (un)signed saturation by two
 * packs (which interleave the 128-bit lanes) and put in order by one vpermd. */
#define Q_PACK64(PACK32, PACK16, a, b, c, d)                                                      \
    _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), \
                             PACK16(PACK32(a, b), PACK32(c, d)))

/* Pass 2 for m: the codes of nb values tm[i] with r_m = 1/s_m into qm. KIND 2: r_m = ∞ is possible (a subnormal
 * s_m: y = ∞ or NaN, code 127, so k is clamped); otherwise y ≤ 1 + 2^-22 and k ≤ 120 needs no clamp. KIND 1: the
 * block has subnormal codes (y < 2^-14; its smallest |m| says so), computed for the vectors that have one.
 * KIND 0 (the rule: no y < 2^-14, no clamp): no |·| either — the sign bit of bits(m·r_m) passes through the
 * subtraction and the shift as 0x800 (bits − 0x37F80001 < 2^31 for |y| ≥ 2^-14), so the code is k, or
 * 0x800 − (k + 0x800) = −k where m < 0 (the sign bit: m is not NaN, its block's scale would be). */
__attribute__((always_inline)) TARGET_AVX512 static inline __m512i q8_code_m_avx512(__m512 mf, __m512 r_m, int kind) {
    if (kind == 0) {
        const __m512i b = _mm512_castps_si512(_mm512_mul_ps(mf, r_m));
        const __mmask16 odd = _mm512_test_epi32_mask(b, _mm512_set1_epi32(1 << 20));
        __m512i t = _mm512_sub_epi32(b, _mm512_set1_epi32(0x37F80001));
        t = _mm512_srli_epi32(_mm512_mask_add_epi32(t, odd, t, _mm512_set1_epi32(1)), 20);
        return _mm512_mask_sub_epi32(t, _mm512_movepi32_mask(b), _mm512_set1_epi32(0x800), t);
    }
    const __m512i yb = _mm512_and_si512(_mm512_castps_si512(_mm512_mul_ps(mf, r_m)), _mm512_set1_epi32(0x7fffffff));
    const __mmask16 odd = _mm512_test_epi32_mask(yb, _mm512_set1_epi32(1 << 20));
    __m512i t = _mm512_sub_epi32(yb, _mm512_set1_epi32(0x37F80001));
    t = _mm512_mask_add_epi32(t, odd, t, _mm512_set1_epi32(1));
    __m512i k = _mm512_srli_epi32(t, 20);
    if (kind == 2) k = _mm512_min_epu32(k, _mm512_set1_epi32(127));
    const __mmask16 small = _mm512_cmplt_epu32_mask(yb, _mm512_set1_epi32(0x38800000));
    if (small) {
        const __m512 y64 = _mm512_add_ps(_mm512_castsi512_ps(yb), _mm512_set1_ps(64.0f));
        k = _mm512_mask_sub_epi32(k, small, _mm512_castps_si512(y64), _mm512_set1_epi32(0x42800000));
    }
    const __mmask16 neg = _mm512_cmp_ps_mask(mf, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_sub_epi32(k, neg, _mm512_setzero_si512(), k);
}
__attribute__((always_inline)) TARGET_AVX512 static inline void q8_codes_m_avx512(int64_t nb, const float *tm, int8_t *qm,
                                                                                 float r, int kind) {
    const __m512 r_m = _mm512_set1_ps(r);
    int64_t i = 0;
    for (; i + 64 <= nb; i += 64) {
        const __m512i a = q8_code_m_avx512(_mm512_loadu_ps(tm + i), r_m, kind);
        const __m512i b = q8_code_m_avx512(_mm512_loadu_ps(tm + i + 16), r_m, kind);
        const __m512i c = q8_code_m_avx512(_mm512_loadu_ps(tm + i + 32), r_m, kind);
        const __m512i d = q8_code_m_avx512(_mm512_loadu_ps(tm + i + 48), r_m, kind);
        _mm512_storeu_si512(qm + i, Q_PACK64(_mm512_packs_epi32, _mm512_packs_epi16, a, b, c, d));
    }
    for (; i < nb; i += 16)
        _mm512_mask_cvtepi32_storeu_epi8(qm + i, Q_TAIL16(nb, i), q8_code_m_avx512(_mm512_loadu_ps(tm + i), r_m, kind));
}

/* Pass 2 for z: q = min(rint(z·r_z), 255) (vcvtps2dq with round-to-nearest-even embedded); CLAMP: s_z = ∞ (then
 * r_z = 0 and ∞·0 = NaN, which the min sends to 255); otherwise z·r_z ≤ 255·(1 + 2^-22) rounds to ≤ 255. */
__attribute__((always_inline)) TARGET_AVX512 static inline __m512i q8_code_z_avx512(__m512 zf, __m512 r_z, int clamp) {
    __m512 x = _mm512_mul_ps(zf, r_z);
    if (clamp) x = _mm512_min_ps(x, _mm512_set1_ps(255.0f)); /* NaN → 255 */
    return _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
__attribute__((always_inline)) TARGET_AVX512 static inline void q8_codes_z_avx512(int64_t nb, const float *tz, uint8_t *qv,
                                                                                 float r, int clamp) {
    const __m512 r_z = _mm512_set1_ps(r);
    int64_t i = 0;
    for (; i + 64 <= nb; i += 64) {
        const __m512i a = q8_code_z_avx512(_mm512_loadu_ps(tz + i), r_z, clamp);
        const __m512i b = q8_code_z_avx512(_mm512_loadu_ps(tz + i + 16), r_z, clamp);
        const __m512i c = q8_code_z_avx512(_mm512_loadu_ps(tz + i + 32), r_z, clamp);
        const __m512i d = q8_code_z_avx512(_mm512_loadu_ps(tz + i + 48), r_z, clamp);
        _mm512_storeu_si512(qv + i, Q_PACK64(_mm512_packus_epi32, _mm512_packus_epi16, a, b, c, d));
    }
    for (; i < nb; i += 16)
        _mm512_mask_cvtepi32_storeu_epi8(qv + i, Q_TAIL16(nb, i), q8_code_z_avx512(_mm512_loadu_ps(tz + i), r_z, clamp));
}

#define Q_PREFETCH 1024 /* elements ahead (a prefetch past the end is harmless) */
/* Pass 1 on 16 lanes (K: the lanes in the block) from the decoded m̃, z̃: the update, θ stored, m and z into the
 * buffers, their bits into the maxima. Returns the number of non-finite gradients. A vector whose gradients
 * are all finite (the rule) takes unmasked arithmetic with the sign of "maximize" folded into the constants:
 * c1·(s·g) = (s·c1)·g and (c2·(s·g))·(s·g) = (c2·g)·g exactly (s = ±1; under L2, s·g + λθ = s·(g + (s·λ)·θ)),
 * and, where ε > 0 (CHECK = 0), no test of the denominator: it is then positive or NaN, and a NaN one comes
 * only with a NaN θ, which the step leaves NaN either way (an addition returns its first NaN operand). The
 * other vectors take q_update_avx512 (the contract's operations literally, masked). */
__attribute__((always_inline)) TARGET_AVX512 static inline int q8_pass1_avx512(
    int adamax, int wd, int check, int full, __mmask16 k, const qscalars_t *c, __m512 mt, __m512 zt, float *p,
    const float *g, float *tm, float *tz, __m512i *max_m, __m512i *min_m, __m512i *max_z) {
    const __m512 gi = full ? _mm512_loadu_ps(g) : _mm512_maskz_loadu_ps(k, g);
    const __m512 pi = full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
    const __m512 wt = _mm512_mul_ps(zt, zt);
    const __m512 vt = adamax ? wt : _mm512_mul_ps(wt, wt);
    const __mmask16 nonfinite = _mm512_fpclass_ps_mask(gi, 0x99); /* NaN, ±∞ (tail lanes are 0) */
    __m512 pn, mf, zf;
    int bad = 0;
    if (__builtin_expect(nonfinite == 0, 1)) {
        const float sign = c->sign;
        const __m512 h = wd == 1 ? _mm512_add_ps(gi, _mm512_mul_ps(_mm512_set1_ps(sign * c->l2), pi)) : gi;
        const __m512 pd = wd == 2 ? _mm512_mul_ps(pi, _mm512_set1_ps(c->decay)) : pi;
        mf = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c->b1), mt), _mm512_mul_ps(_mm512_set1_ps(sign * c->c1), h));
        __m512 r;
        if (adamax) {
            r = _mm512_min_ps(_mm512_set1_ps(FLT_MAX),
                              _mm512_max_ps(_mm512_mul_ps(_mm512_set1_ps(c->b2), vt), _mm512_abs_ps(h)));
        } else {
            const __m512 vn = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(c->b2), vt),
                                            _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c->c2), h), h));
            r = _mm512_sqrt_ps(_mm512_min_ps(_mm512_set1_ps(FLT_MAX), vn));
        }
        const __m512 den = _mm512_add_ps(_mm512_mul_ps(r, _mm512_set1_ps(c->dmul)), _mm512_set1_ps(c->eps));
        const __m512 num = _mm512_mul_ps(_mm512_set1_ps(c->nstep), mf);
        const __m512 step = check ? _mm512_maskz_div_ps(_mm512_cmp_ps_mask(den, _mm512_setzero_ps(), _CMP_GT_OQ), num, den)
                                  : _mm512_div_ps(num, den);
        pn = _mm512_add_ps(pd, step);
        zf = adamax ? _mm512_sqrt_ps(r) : q_sqrt_fma_avx512(r);
    } else {
        __m512 vf, rt;
        const __mmask16 ok = q_update_avx512(adamax, wd, 1, c, gi, pi, mt, vt, &pn, &mf, &vf, &rt);
        (void)vf;
        bad = __builtin_popcount((unsigned)(k & (__mmask16)~ok));
        zf = adamax ? _mm512_mask_sqrt_ps(zt, ok, rt) : _mm512_mask_mov_ps(zt, ok, q_sqrt_fma_avx512(rt));
    }
    if (full) _mm512_storeu_ps(p, pn);
    else _mm512_mask_storeu_ps(p, k, pn);
    _mm512_storeu_ps(tm, mf); /* the buffers hold whole vectors: B is a multiple of 64 */
    _mm512_storeu_ps(tz, zf);
    const __m512i bm = _mm512_and_si512(_mm512_castps_si512(mf), _mm512_set1_epi32(0x7fffffff));
    *max_m = full ? _mm512_max_epu32(*max_m, bm) : _mm512_mask_max_epu32(*max_m, k, *max_m, bm);
    *min_m = full ? _mm512_min_epu32(*min_m, bm) : _mm512_mask_min_epu32(*min_m, k, *min_m, bm);
    *max_z = full ? _mm512_max_epu32(*max_z, _mm512_castps_si512(zf)) /* z ≥ +0 or NaN */
                  : _mm512_mask_max_epu32(*max_z, k, *max_z, _mm512_castps_si512(zf));
    return bad;
}

/* Pass 1 over a block: 32 elements at a time (m̃ of 32 codes decoded together: vpmovsxbw to 32 words), then
 * the rest (the last block's tail) 16 at a time, masked. */
__attribute__((always_inline)) TARGET_AVX512 static inline int64_t q8_pass1_loop_avx512(
    int adamax, int wd, int check, int64_t nb, float *p, const float *g, const int8_t *qm, const uint8_t *qv,
    float *tm, float *tz, float s_m_, float d_, const qscalars_t *c, __m512i *max_m, __m512i *min_m, __m512i *max_z) {
    const __m512 s_m = _mm512_set1_ps(s_m_), d = _mm512_set1_ps(d_);
    const __m512i sign16 = _mm512_set1_epi32((int)0x80008000u);
    int64_t bad = 0, i = 0;
    for (; i + 32 <= nb; i += 32) {
        _mm_prefetch((const char *)(p + i + Q_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(g + i + Q_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + i + 16 + Q_PREFETCH), _MM_HINT_T0);
        _mm_prefetch((const char *)(g + i + 16 + Q_PREFETCH), _MM_HINT_T0);
        if ((i & 63) == 0) {
            _mm_prefetch((const char *)(qm + i + Q_PREFETCH), _MM_HINT_T0);
            _mm_prefetch((const char *)(qv + i + Q_PREFETCH), _MM_HINT_T0);
        }
        const __m512i c16 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(qm + i)));
        const __m512i h = _mm512_ternarylogic_epi32(_mm512_slli_epi16(_mm512_abs_epi16(c16), 7), c16, sign16, 0xF8);
        const __m512 mt0 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), s_m);
        const __m512 mt1 = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), s_m);
        const __m512 zt0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qv + i)))), d);
        const __m512 zt1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qv + i + 16)))), d);
        bad += q8_pass1_avx512(adamax, wd, check, 1, 0xFFFF, c, mt0, zt0, p + i, g + i, tm + i, tz + i, max_m, min_m, max_z);
        bad += q8_pass1_avx512(adamax, wd, check, 1, 0xFFFF, c, mt1, zt1, p + i + 16, g + i + 16, tm + i + 16, tz + i + 16,
                               max_m, min_m, max_z);
    }
    for (; i < nb; i += 16) {
        const __mmask16 k = Q_TAIL16(nb, i);
        const __m512 mt = q8_decode_m_avx512(q_load16(qm + i, nb - i), s_m);
        const __m512 zt = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q_load16(qv + i, nb - i))), d);
        bad += q8_pass1_avx512(adamax, wd, check, 0, k, c, mt, zt, p + i, g + i, tm + i, tz + i, max_m, min_m, max_z);
    }
    return bad;
}

#define Q8_BLOCK_AVX512(ADAMAX, WD)                                                               \
    TARGET_AVX512 static int64_t q8_avx512_##ADAMAX##_##WD(                                     \
        int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,            \
        uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,       \
        float *restrict tz, const qscalars_t *c) {                                              \
        __m512i max_m = _mm512_setzero_si512(), max_z = _mm512_setzero_si512();                 \
        __m512i min_m = _mm512_set1_epi32(-1);                                                  \
        const float s_m = *sm, d = *sv / 255.0f;                                                \
        const int64_t bad = c->eps > 0.0f && c->dmul > 0.0f                                     \
            ? q8_pass1_loop_avx512(ADAMAX, WD, 0, nb, p, g, qm, qv, tm, tz, s_m, d, c, &max_m, &min_m, &max_z) \
            : q8_pass1_loop_avx512(ADAMAX, WD, 1, nb, p, g, qm, qv, tm, tz, s_m, d, c, &max_m, &min_m, &max_z); \
        const float nm = q_float(_mm512_reduce_max_epu32(max_m)), nz = q_float(_mm512_reduce_max_epu32(max_z)); \
        *sm = nm;                                                                               \
        *sv = nz;                                                                               \
        if (nm > 0.0f) {                                                                        \
            const float r = 1.0f / nm;                                                          \
            /* the block's smallest y = RN(min|m|·r) (rounding is monotone): any subnormal code? */ \
            const int small = q_bits(q_float(_mm512_reduce_min_epu32(min_m)) * r) < 0x38800000u; \
            if (!(r < INFINITY)) q8_codes_m_avx512(nb, tm, qm, r, 2);                           \
            else if (small) q8_codes_m_avx512(nb, tm, qm, r, 1);                                \
            else q8_codes_m_avx512(nb, tm, qm, r, 0);                                           \
        } else {                                                                                \
            memset(qm, 0, (size_t)nb);                                                          \
        }                                                                                       \
        if (nz > 0.0f) {                                                                        \
            if (nz < INFINITY) q8_codes_z_avx512(nb, tz, qv, 255.0f / nz, 0);                   \
            else q8_codes_z_avx512(nb, tz, qv, 255.0f / nz, 1);                                 \
        } else {                                                                                \
            memset(qv, 0, (size_t)nb);                                                          \
        }                                                                                       \
        return bad;                                                                             \
    }
Q8_BLOCK_AVX512(0, 0)
Q8_BLOCK_AVX512(0, 1)
Q8_BLOCK_AVX512(0, 2)
Q8_BLOCK_AVX512(1, 0)
Q8_BLOCK_AVX512(1, 1)
Q8_BLOCK_AVX512(1, 2)

/*
 * int8 blocks with AVX2, 8 lanes: Q8_BLOCK_AVX512's method (m̃ by vcvtph2ps from F16C; blends where AVX-512
 * has masks). A tail of fewer than 8 goes through zero-padded copies (a zero lane changes no maximum and
 * counts as finite).
 */
TARGET_AVX2 static inline __m256 q_abs_avx2(__m256 x) {
    return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

/* Pass 1 on 8 lanes: dequantise, update (θ stored at P), the m and z to store into TM, TZ; their bits folded
 * into the maxima. As q8_pass1_avx512: a vector whose gradients are all finite takes the arithmetic without
 * blends, maximize's sign folded into the constants and, where CHECK = 0 (ε > 0), no test of the denominator. */
__attribute__((always_inline)) TARGET_AVX2 static inline int q8_avx2_update(
    int adamax, int wd, int check, float *p, const float *g, const int8_t *qm, const uint8_t *qv, float *tm, float *tz,
    __m256 s_m, __m256 d, const qscalars_t *c, __m256i *max_m, __m256i *max_z) {
    const __m128i c16 = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)qm));
    const __m128i h16 = _mm_or_si128(_mm_slli_epi16(_mm_abs_epi16(c16), 7),
                                     _mm_and_si128(c16, _mm_set1_epi16((short)0x8000)));
    const __m256 mt = _mm256_mul_ps(_mm256_cvtph_ps(h16), s_m);
    const __m256 zt =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)qv))), d);
    const __m256 wt = _mm256_mul_ps(zt, zt);
    const __m256 vt = adamax ? wt : _mm256_mul_ps(wt, wt);
    const __m256 gi = _mm256_loadu_ps(g), pi = _mm256_loadu_ps(p), zero = _mm256_setzero_ps();
    const __m256 ok = _mm256_cmp_ps(_mm256_sub_ps(gi, gi), zero, _CMP_EQ_OQ);
    const int okbits = _mm256_movemask_ps(ok);
    const __m256 b2 = _mm256_set1_ps(c->b2), dmul = _mm256_set1_ps(c->dmul), eps = _mm256_set1_ps(c->eps);
    const __m256 fmax = _mm256_set1_ps(FLT_MAX); /* v = min(v, FLT_MAX) (u likewise); minps keeps a NaN v */
    __m256 mf, zf;
    if (__builtin_expect(okbits == 0xFF, 1)) {
        const float sign = c->sign;
        const __m256 h = wd == 1 ? _mm256_add_ps(gi, _mm256_mul_ps(_mm256_set1_ps(sign * c->l2), pi)) : gi;
        const __m256 pd = wd == 2 ? _mm256_mul_ps(pi, _mm256_set1_ps(c->decay)) : pi;
        mf = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c->b1), mt), _mm256_mul_ps(_mm256_set1_ps(sign * c->c1), h));
        __m256 r;
        if (adamax) {
            r = _mm256_min_ps(fmax, _mm256_max_ps(_mm256_mul_ps(b2, vt), q_abs_avx2(h)));
        } else {
            const __m256 c2 = _mm256_set1_ps(c->c2);
            r = _mm256_sqrt_ps(
                _mm256_min_ps(fmax, _mm256_add_ps(_mm256_mul_ps(b2, vt), _mm256_mul_ps(_mm256_mul_ps(c2, h), h))));
        }
        const __m256 den = _mm256_add_ps(_mm256_mul_ps(r, dmul), eps);
        __m256 step = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(c->nstep), mf), den);
        if (check) step = _mm256_and_ps(step, _mm256_cmp_ps(den, zero, _CMP_GT_OQ));
        _mm256_storeu_ps(p, _mm256_add_ps(pd, step));
        zf = _mm256_sqrt_ps(r);
    } else {
        __m256 ge = _mm256_mul_ps(gi, _mm256_set1_ps(c->sign));
        if (wd == 1) ge = _mm256_add_ps(ge, _mm256_mul_ps(_mm256_set1_ps(c->l2), pi));
        const __m256 pd = wd == 2 ? _mm256_mul_ps(pi, _mm256_set1_ps(c->decay)) : pi;
        const __m256 mn = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(c->b1), mt), _mm256_mul_ps(_mm256_set1_ps(c->c1), ge));
        __m256 r;
        if (adamax) {
            r = _mm256_min_ps(fmax, _mm256_max_ps(_mm256_mul_ps(b2, vt), q_abs_avx2(ge)));
        } else {
            const __m256 c2 = _mm256_set1_ps(c->c2);
            r = _mm256_sqrt_ps(
                _mm256_min_ps(fmax, _mm256_add_ps(_mm256_mul_ps(b2, vt), _mm256_mul_ps(_mm256_mul_ps(c2, ge), ge))));
        }
        const __m256 den = _mm256_add_ps(_mm256_mul_ps(r, dmul), eps);
        const __m256 step = _mm256_div_ps(_mm256_mul_ps(_mm256_set1_ps(c->nstep), mn), den);
        const __m256 pu = _mm256_add_ps(pd, _mm256_and_ps(step, _mm256_cmp_ps(den, zero, _CMP_GT_OQ)));
        _mm256_storeu_ps(p, _mm256_blendv_ps(pi, pu, ok));
        mf = _mm256_blendv_ps(mt, mn, ok);
        zf = _mm256_blendv_ps(zt, _mm256_sqrt_ps(r), ok);
    }
    _mm256_storeu_ps(tm, mf);
    _mm256_storeu_ps(tz, zf);
    *max_m = _mm256_max_epu32(*max_m, _mm256_castps_si256(q_abs_avx2(mf)));
    *max_z = _mm256_max_epu32(*max_z, _mm256_castps_si256(zf)); /* z ≥ +0 or NaN */
    return 8 - __builtin_popcount((unsigned)okbits);
}

/* Pass 2 on 8 lanes: the codes of m (r_m = 1/s_m) into QM (q8_code_m_avx512's operations). */
__attribute__((always_inline)) TARGET_AVX2 static inline void q8_avx2_code_m(const float *tm, int8_t *qm, __m256 r_m) {
    const __m256 mf = _mm256_loadu_ps(tm);
    const __m256i yb = _mm256_castps_si256(q_abs_avx2(_mm256_mul_ps(mf, r_m)));
    const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x38800000), yb); /* yb < 2^31: signed compare */
    const __m256i ks = _mm256_sub_epi32(
        _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(yb), _mm256_set1_ps(64.0f))), _mm256_set1_epi32(0x42800000));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(yb, 20), _mm256_set1_epi32(1));
    const __m256i t = _mm256_add_epi32(_mm256_sub_epi32(yb, _mm256_set1_epi32(0x37F80001)), odd);
    const __m256i kb = _mm256_min_epu32(_mm256_srli_epi32(t, 20), _mm256_set1_epi32(127));
    __m256i k = _mm256_blendv_epi8(kb, ks, small);
    const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(mf, _mm256_setzero_ps(), _CMP_LT_OQ));
    k = _mm256_sub_epi32(_mm256_xor_si256(k, neg), neg); /* −k where m < 0 */
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
    _mm_storel_epi64((__m128i *)qm, _mm_packs_epi16(w, w));
}

/* Pass 2 on 8 lanes: the codes of z (r_z = 255/s_z) into QV (q_linear_encode). */
__attribute__((always_inline)) TARGET_AVX2 static inline void q8_avx2_code_z(const float *tz, uint8_t *qv, __m256 r_z) {
    const __m256 x = _mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(tz), r_z), _mm256_set1_ps(255.0f)); /* NaN → 255 */
    const __m256i q = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(x, _mm256_set1_ps(8388608.0f))),
                                       _mm256_set1_epi32(0x4B000000));
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)qv, _mm_packus_epi16(w, w));
}

TARGET_AVX2 static inline uint32_t q_max_avx2(__m256i x) {
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(m);
}

/* Pass 1 over a block (the tail, fewer than 8, through zero-padded copies). */
__attribute__((always_inline)) TARGET_AVX2 static inline int64_t q8_pass1_loop_avx2(
    int adamax, int wd, int check, int64_t nb, float *p, const float *g, const int8_t *qm, const uint8_t *qv,
    float *tm, float *tz, __m256 s_m, __m256 d, const qscalars_t *c, __m256i *max_m, __m256i *max_z) {
    int64_t bad = 0, i = 0;
    for (; i + 8 <= nb; i += 8)
        bad += q8_avx2_update(adamax, wd, check, p + i, g + i, qm + i, qv + i, tm + i, tz + i, s_m, d, c, max_m, max_z);
    if (i < nb) {
        const size_t r = (size_t)(nb - i);
        float tp[8] = {0}, tg[8] = {0};
        int8_t tq[8] = {0};
        uint8_t tu[8] = {0};
        memcpy(tp, p + i, r * sizeof(float));
        memcpy(tg, g + i, r * sizeof(float));
        memcpy(tq, qm + i, r);
        memcpy(tu, qv + i, r);
        bad += q8_avx2_update(adamax, wd, check, tp, tg, tq, tu, tm + i, tz + i, s_m, d, c, max_m, max_z);
        memcpy(p + i, tp, r * sizeof(float));
    }
    return bad;
}

#define Q8_BLOCK_AVX2(ADAMAX, WD)                                                                 \
    TARGET_AVX2 static int64_t q8_avx2_##ADAMAX##_##WD(                                         \
        int64_t nb, float *restrict p, const float *restrict g, int8_t *restrict qm,            \
        uint8_t *restrict qv, float *restrict sm, float *restrict sv, float *restrict tm,       \
        float *restrict tz, const qscalars_t *c) {                                              \
        const __m256 s_m = _mm256_set1_ps(*sm), d = _mm256_set1_ps(*sv / 255.0f);               \
        __m256i max_m = _mm256_setzero_si256(), max_z = _mm256_setzero_si256();                 \
        const int64_t bad = c->eps > 0.0f && c->dmul > 0.0f                                     \
            ? q8_pass1_loop_avx2(ADAMAX, WD, 0, nb, p, g, qm, qv, tm, tz, s_m, d, c, &max_m, &max_z) \
            : q8_pass1_loop_avx2(ADAMAX, WD, 1, nb, p, g, qm, qv, tm, tz, s_m, d, c, &max_m, &max_z); \
        const float nm = q_float(q_max_avx2(max_m)), nz = q_float(q_max_avx2(max_z));           \
        *sm = nm;                                                                               \
        *sv = nz;                                                                               \
        const int64_t whole = nb & ~(int64_t)7;                                                 \
        int64_t i;                                                                              \
        if (nm > 0.0f) {                                                                        \
            const __m256 r_m = _mm256_set1_ps(1.0f / nm);                                       \
            for (i = 0; i < whole; i += 8) q8_avx2_code_m(tm + i, qm + i, r_m);                 \
        }                                                                                       \
        if (nz > 0.0f) {                                                                        \
            const __m256 r_z = _mm256_set1_ps(255.0f / nz);                                     \
            for (i = 0; i < whole; i += 8) q8_avx2_code_z(tz + i, qv + i, r_z);                 \
        }                                                                                       \
        if (!(nm > 0.0f)) memset(qm, 0, (size_t)whole);                                         \
        if (!(nz > 0.0f)) memset(qv, 0, (size_t)whole);                                         \
        q8_codes_scalar(whole, nb, tm, tz, qm, qv, nm, nz); /* the tail */                      \
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
            __m512 pn, mf, vf, rt;                                                                \
            const __mmask16 ok = q_update_avx512(ADAMAX, WD, 0, c, gi, pi, mt, vt, &pn, &mf, &vf, &rt); \
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
