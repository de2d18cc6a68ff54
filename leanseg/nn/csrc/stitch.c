/* Sliding-window stitching (leanseg.stitch): one pass per window instead of MONAI's four (the activation into a
 * new tensor, the Gaussian weighting in place, the accumulation, and the windows' weights summed again per call).
 * For window output y (K, d, h, w) at offset (z0, y0, x0) of the accumulator acc (K, D, H, W), contiguous:
 *   acc[k, z0 + z, y0 + y, x0 + x] += act(y)[k, z, y, x] * wt[z, y, x]
 * with act 0: none, 1: softmax over the K channels, 2: sigmoid. y is read through its strides (sc, sz, sy, sx), so
 * a channels-last network output needs no copy: each block of a row is gathered into a small buffer first. exp is
 * a polynomial (Cody-Waite reduction to |r| <= ln2 / 2, Taylor terms to r^7 in float, r^13 in double: within 2
 * ulp) that GCC vectorises, as glibc's expf is scalar without -ffast-math. Inputs below the smallest normal
 * exponent give that exponent's power of two (about 1e-38 in float) instead of a subnormal or 0: far below what a
 * probability resolves. */
#include "common.h"

static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;  /* ln 2 split in a short high part and the rest */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720
              + r * (1.0f / 5040)))))));
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    return p * s.f;
}

static inline double exp_f64(double x) {
    x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
    double n = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0; /* 1.5 * 2^52 */
    double r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10;
    double p = 1.0;
    for (int k = 13; k >= 1; k--) p = 1.0 + r * p / k; /* 1 + r (1 + r/2 (1 + r/3 (...))): the Taylor sum */
    union { int64_t i; double f; } s;
    s.i = ((int64_t)n + 1023) << 52;
    return p * s.f;
}

/* STITCH_BLOCK voxels of a row at a time: their K values stay in L1 from the gather to the accumulation. */
#define STITCH_BLOCK 64
#define DEFINE_STITCH(T, SUFFIX)                                                                              \
void stitch_add_##SUFFIX(T *acc, int64_t k, int64_t D, int64_t H, int64_t W, const T *y, int64_t d, int64_t h, \
                         int64_t w, int64_t sc, int64_t sz, int64_t sy, int64_t sx, int64_t z0, int64_t y0,    \
                         int64_t x0, const T *wt, int act, int nthreads) {                                    \
    int64_t va = D * H * W;                                                                                   \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        T *e = malloc(sizeof(T) * (size_t)(k * STITCH_BLOCK + STITCH_BLOCK));                                 \
        T *s = e + k * STITCH_BLOCK;                                                                          \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t row = 0; row < d * h; row++) {                                                           \
            const T *py = y + (row / h) * sz + (row % h) * sy, *pw = wt + row * w;                            \
            T *pa = acc + ((z0 + row / h) * H + y0 + row % h) * W + x0;                                       \
            for (int64_t b = 0; b < w; b += STITCH_BLOCK) {                                                   \
                int64_t n = w - b < STITCH_BLOCK ? w - b : STITCH_BLOCK;                                      \
                for (int64_t c = 0; c < k; c++)                                                               \
                    for (int64_t x = 0; x < n; x++) e[c * STITCH_BLOCK + x] = py[c * sc + (b + x) * sx];      \
                if (act == 1) { /* softmax: s = max, e = exp(e - max), s = weight / sum */                    \
                    for (int64_t x = 0; x < n; x++) s[x] = e[x];                                              \
                    for (int64_t c = 1; c < k; c++)                                                           \
                        for (int64_t x = 0; x < n; x++) {                                                     \
                            T v = e[c * STITCH_BLOCK + x];                                                    \
                            s[x] = v > s[x] ? v : s[x];                                                       \
                        }                                                                                     \
                    for (int64_t c = 0; c < k; c++)                                                           \
                        for (int64_t x = 0; x < n; x++)                                                       \
                            e[c * STITCH_BLOCK + x] = exp_##SUFFIX(e[c * STITCH_BLOCK + x] - s[x]);           \
                    for (int64_t x = 0; x < n; x++) s[x] = e[x];                                              \
                    for (int64_t c = 1; c < k; c++)                                                           \
                        for (int64_t x = 0; x < n; x++) s[x] += e[c * STITCH_BLOCK + x];                      \
                    for (int64_t x = 0; x < n; x++) s[x] = pw[b + x] / s[x];                                  \
                } else if (act == 2) { /* sigmoid: e = weight / (1 + exp(-e)) */                              \
                    for (int64_t c = 0; c < k; c++)                                                           \
                        for (int64_t x = 0; x < n; x++)                                                       \
                            e[c * STITCH_BLOCK + x] = pw[b + x] / (1 + exp_##SUFFIX(-e[c * STITCH_BLOCK + x])); \
                    for (int64_t x = 0; x < n; x++) s[x] = 1;                                                 \
                } else {                                                                                      \
                    for (int64_t x = 0; x < n; x++) s[x] = pw[b + x];                                         \
                }                                                                                             \
                for (int64_t c = 0; c < k; c++)                                                               \
                    for (int64_t x = 0; x < n; x++) pa[c * va + b + x] += e[c * STITCH_BLOCK + x] * s[x];     \
            }                                                                                                 \
        }                                                                                                     \
        free(e);                                                                                              \
    }                                                                                                         \
}

DEFINE_STITCH(float, f32)
DEFINE_STITCH(double, f64)
