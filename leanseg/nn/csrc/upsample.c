/* Linear interpolation of channels-last (N, Di, Hi, Wi, C) data to (N, Do, Ho, Wo, C) (2D: D = 1), for the decoder's
 * upsampling, in one pass (ATen's bfloat16 kernel converts element by element).
 * Per output coordinate along each axis the caller gives the two source indices and their weights (ATen's rule
 * for align_corners=False): iz, iy, ix (2 * Do, 2 * Ho, 2 * Wo) int64 and wz, wy, wx the same in A. The
 * eight products are summed in A and rounded once. row_lerp: one output row of w voxels from four source rows
 * (weights r[4] for the (z, y) pairs). */
#include "common.h"

#define DEFINE_LERP(T, A, SUFFIX)                                                                             \
static inline void row_lerp_##SUFFIX(T *restrict po, const T *const *rows, const A *r, const int64_t *ix,     \
                                     const A *wx, int64_t w, int64_t c) {                                     \
    for (int64_t x = 0; x < w; x++) {                                                                         \
        int64_t x0 = ix[2 * x] * c, x1 = ix[2 * x + 1] * c;                                                   \
        A a0 = wx[2 * x], a1 = wx[2 * x + 1];                                                                 \
        T *restrict o = po + x * c;                                                                           \
        _Pragma("omp simd")                                                                                   \
        for (int64_t k = 0; k < c; k++) {                                                                     \
            A s = 0;                                                                                          \
            for (int64_t j = 0; j < 4; j++)                                                                   \
                s += r[j] * (a0 * LOAD_##SUFFIX(rows[j][x0 + k]) + a1 * LOAD_##SUFFIX(rows[j][x1 + k]));      \
            o[k] = STORE_##SUFFIX(s);                                                                         \
        }                                                                                                     \
    }                                                                                                         \
}
DEFINE_LERP(float, float, f32)
DEFINE_LERP(double, double, f64)
#if BF16_SIMD
static inline void row_lerp_bf16(uint16_t *restrict po, const uint16_t *const *rows, const float *r, const int64_t *ix,
                                 const float *wx, int64_t w, int64_t c) {
    for (int64_t x = 0; x < w; x++) {
        int64_t x0 = ix[2 * x] * c, x1 = ix[2 * x + 1] * c;
        __m512 a0 = _mm512_set1_ps(wx[2 * x]), a1 = _mm512_set1_ps(wx[2 * x + 1]);
        for (int64_t k = 0; k < c; k += 16) {
            __mmask16 m = tail_mask(c - k);
            __m512 s = _mm512_setzero_ps();
            for (int64_t j = 0; j < 4; j++) {
                __m512 t = _mm512_fmadd_ps(a1, bf16x16_load(rows[j] + x1 + k, m),
                                           _mm512_mul_ps(a0, bf16x16_load(rows[j] + x0 + k, m)));
                s = _mm512_fmadd_ps(_mm512_set1_ps(r[j]), t, s);
            }
            bf16x16_store(po + x * c + k, s, m, NULL);
        }
    }
}
#else
DEFINE_LERP(uint16_t, float, bf16)
#endif

#define DEFINE_UPSAMPLE(T, A, SUFFIX)                                                                         \
void upsample_linear_##SUFFIX(T *out, grid_t go, const T *in, grid_t gi, const int64_t *iz, const int64_t *iy,\
                              const int64_t *ix, const A *wz, const A *wy, const A *wx, int nthreads) {       \
    int64_t rows = go.n * go.d * go.h, c = go.ld;                                                             \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t row = 0; row < rows; row++) {                                                                \
        int64_t n = row / (go.d * go.h), z = (row / go.h) % go.d, y = row % go.h;                             \
        const T *src[4];                                                                                      \
        A r[4];                                                                                               \
        for (int64_t j = 0; j < 4; j++) {                                                                     \
            int64_t a = j >> 1, b = j & 1;                                                                    \
            src[j] = in + ((n * gi.d + iz[2 * z + a]) * gi.h + iy[2 * y + b]) * gi.w * c;                     \
            r[j] = wz[2 * z + a] * wy[2 * y + b];                                                             \
        }                                                                                                     \
        row_lerp_##SUFFIX(out + row * go.w * c, src, r, ix, wx, go.w, c);                                     \
    }                                                                                                         \
}

DEFINE_UPSAMPLE(float, float, f32)
DEFINE_UPSAMPLE(double, double, f64)
DEFINE_UPSAMPLE(uint16_t, float, bf16)
