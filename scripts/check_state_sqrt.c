/*
 * Exhaustive check of state_kernels.c's q_sqrt_fma_avx512 (issue 16, int8 state version 2): Adam's stored root
 * z = sqrtf(w), w = sqrtf(v), is computed without the divider (rsqrt14, one Newton–Raphson step, a final
 * correction with fused multiply-adds). It must equal the correctly rounded vsqrtps bit for bit for every w
 * Adam can have: 0, ∞, NaN and every float32 in [2^-75, 2^128) (w = √v ≥ 2^-74.5 when v ≠ 0). This program
 * compares the two over all those bit patterns (1.7·10^9; about a second) and prints the mismatches; it also
 * reports, for information, the range below 2^-75 (never an Adam w), where the estimate may differ.
 * Needs an AVX-512 CPU. From the repository root:
 *
 *   cc -O2 -Isrc/adamlab/kernels scripts/check_state_sqrt.c -o /tmp/check_state_sqrt -lm && /tmp/check_state_sqrt
 */
#include "adam_kernels.c"
#include <stdio.h>

TARGET_AVX512 static uint64_t mismatches(uint32_t lo, uint32_t hi, uint32_t *first) {
    uint64_t bad = 0;
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)lo),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    for (uint64_t b = lo; b < hi; b += 16, idx = _mm512_add_epi32(idx, _mm512_set1_epi32(16))) {
        const __m512 w = _mm512_castsi512_ps(idx);
        __mmask16 ne = _mm512_cmpneq_epi32_mask(_mm512_castps_si512(q_sqrt_fma_avx512(w)),
                                                _mm512_castps_si512(_mm512_sqrt_ps(w)));
        if (b + 16 > hi) ne &= (__mmask16)((1u << (unsigned)(hi - b)) - 1u);
        if (ne) {
            if (!bad) *first = (uint32_t)b + (uint32_t)__builtin_ctz(ne);
            bad += (uint64_t)__builtin_popcount(ne);
        }
    }
    return bad;
}

int main(void) {
    if (!adamlab_isa_supported(ISA_AVX512)) {
        printf("this CPU has no AVX-512: nothing to check\n");
        return 0;
    }
    uint32_t first = 0;
    const uint64_t zero = mismatches(0u, 1u, &first), adam = mismatches(0x1A000000u, 0x80000000u, &first);
    printf("w = 0 and [2^-75, 2^128), inf, NaN: %llu mismatches%s\n", (unsigned long long)(zero + adam),
           zero + adam ? " (FAILED)" : "");
    first = 0;
    const uint64_t below = mismatches(1u, 0x1A000000u, &first);
    printf("(below 2^-75, never an Adam w: %llu differ, the first at bits %08x)\n", (unsigned long long)below,
           first);
    return zero + adam ? 1 : 0;
}
