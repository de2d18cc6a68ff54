/* Helpers shared by the kernel files (internal: not part of the library's interface, see leanseg_cpu.h).
 *
 * Each kernel is instantiated per storage type T with an accumulator type A by a DEFINE_* macro: float/float,
 * double/double and bfloat16/float. bf16 is stored as uint16_t and converted by hand (LOAD_bf16, STORE_bf16):
 * portable C that GCC vectorises, with AVX512-BF16 versions of the hot loops where the CPU has them.
 */
#ifndef LEANSEG_COMMON_H
#define LEANSEG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#include "leanseg_cpu.h"

static inline float bf16_load(uint16_t u) {
    union { uint32_t i; float f; } v;
    v.i = (uint32_t)u << 16;
    return v.f;
}

/* round to nearest even, as torch's float -> bfloat16 conversion; NaN stays NaN. Branch-free, so that GCC
 * vectorises the loops that store bf16. */
static inline uint16_t bf16_store(float f) {
    union { uint32_t i; float f; } v;
    v.f = f;
    uint16_t rounded = (uint16_t)((v.i + 0x7FFFu + ((v.i >> 16) & 1u)) >> 16);
    return f != f ? (uint16_t)0x7FC0 : rounded;
}

/* AVX512-BF16 (Cooper Lake, Sapphire Rapids and later): 16 channels at a time, bf16 widened by a shift and
 * narrowed by one vcvtne2ps2bf16/vcvtneps2bf16 (round to nearest even, as bf16_store), instead of per element.
 * The library is built with -march=native on the machine that runs it (the cache key includes this CPU's
 * flags), so the preprocessor test below is the check of this CPU; -DLEANSEG_NO_BF16_SIMD builds the portable
 * loops (tests compare the two). The vector loops do the same float operations in the same order as the portable
 * ones, so the results agree bit for bit; the one difference is that the instruction flushes float32
 * subnormals (below 2^-126) to zero, far below bf16's 2^-8 relative resolution of any value that matters. */
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__) && !defined(LEANSEG_NO_BF16_SIMD)
#include <immintrin.h>
#define BF16_SIMD 1

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

/* Masked loads and stores only for the tail: a masked load that reads a masked store's data waits for the store
 * to retire (no store forwarding), and the per-voxel statistics are read right after they are written. */
static inline __m512 f32x16_load(const float *p, __mmask16 k) {
    return k == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}

static inline void f32x16_store(float *p, __mmask16 k, __m512 v) {
    if (k == 0xFFFF)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, k, v);
}

static inline __m512 bf16x16_load(const uint16_t *p, __mmask16 k) {
    __m256i h = k == 0xFFFF ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(k, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* the stored bf16 values, and (into *back) the float32 they stand for */
static inline void bf16x16_store(uint16_t *p, __m512 v, __mmask16 k, __m512 *back) {
    __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    if (k == 0xFFFF)
        _mm256_storeu_si256((__m256i *)p, h);
    else
        _mm256_mask_storeu_epi16(p, k, h);
    if (back) *back = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#else
#define BF16_SIMD 0
#endif

#define LOAD_f32(x) (x)
#define STORE_f32(x) (x)
#define LOAD_f64(x) (x)
#define STORE_f64(x) (x)
#define LOAD_bf16(x) bf16_load(x)
#define STORE_bf16(x) bf16_store(x)

static inline int64_t source_coord(int64_t q, int64_t mul, int64_t div, int64_t shift, int64_t size) {
    int64_t r = q * mul + shift;
    if (r < 0 || r % div != 0) return -1;
    r /= div;
    return r < size ? r : -1;
}

/* Source voxel along the last axis for output x, or -1. Cheaper than source_coord: div is 1 or 2 (mul = 1 then). */
static inline int64_t source_x(int64_t x, int64_t mul, int64_t div, int64_t shift, int64_t size) {
    int64_t r = x * mul + shift;
    if (div == 2) {
        if (r & 1) return -1;
        r >>= 1;
    }
    return r >= 0 && r < size ? r : -1;
}

/* ROW_SETUP: for output row `row` = (n, z, y), the NT source rows irow[k] (NULL outside the input) and the
 * taps' shifts xs[k] along the last axis. VOXEL_SOURCES: for output voxel x of that row, the NT source pointers
 * p[k] (`zeros` for taps outside the input). They expect `in`, `axis`, `sign` and `zeros` in scope. */
#define ROW_SETUP(T, NT, GO, GI, MUL, DIV)                                                                     \
    int64_t n = row / (GO.d * GO.h), z = (row / GO.h) % GO.d, y = row % GO.h;                                 \
    const T *irow[NT];                                                                                        \
    int64_t xs[NT];                                                                                           \
    for (int64_t k = 0; k < NT; k++) {                                                                        \
        int64_t rz = source_coord(z, MUL, DIV, axis[k] == 0 ? sign[k] : 0, GI.d);                             \
        int64_t ry = source_coord(y, MUL, DIV, axis[k] == 1 ? sign[k] : 0, GI.h);                             \
        irow[k] = (rz < 0 || ry < 0) ? NULL : in + ((n * GI.d + rz) * GI.h + ry) * GI.w * GI.ld;              \
        xs[k] = axis[k] == 2 ? sign[k] : 0;                                                                   \
    }

#define VOXEL_SOURCES(T, NT, GI, MUL, DIV)                                                                     \
    const T *p[NT];                                                                                           \
    for (int64_t k = 0; k < NT; k++) {                                                                        \
        int64_t rx = irow[k] ? source_x(x, MUL, DIV, xs[k], GI.w) : -1;                                       \
        p[k] = rx < 0 ? zeros : irow[k] + rx * GI.ld;                                                         \
    }

/* The AVX-512 float32 kernels (lean_tile_f32, lean_wgrad_f32, lean_bwd_f32) exist only in builds for CPUs that
 * have AVX-512 (-march=native); -DLEANSEG_NO_LEAN_SIMD leaves them out. */
#if defined(__AVX512F__) && !defined(LEANSEG_NO_LEAN_SIMD)
#include <immintrin.h>
#define LEAN_SIMD 1

static inline __mmask16 lane_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
}
#else
#define LEAN_SIMD 0
#endif

#endif /* LEANSEG_COMMON_H */
