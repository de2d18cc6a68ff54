/* The per-channel stencil of the lean convolution on channels-last data, for the fast CPU path.
 *
 * Tensors are (N, D, H, W, C) with the C values of a voxel contiguous; 2D data is passed with D = 1.
 * One gather kernel serves the forward pass and both adjoints: for output voxel q and tap k (axis, sign),
 * the source voxel is r = (q * mul + sign * e_axis) / div along every axis, used only when the division is
 * exact and r is inside the input:
 *   forward, stride s        mul = s, div = 1, sign = +-1
 *   adjoint, stride 1        mul = 1, div = 1, signs swapped
 *   adjoint, stride 2        mul = 1, div = 2, signs swapped
 * and out[q, c] += taps[k, c] * in[r, c] for c < m.
 * The reduction kernel gives dS[k, c] = sum_q g[q, c] * in[r_k(q), c] with per-thread partial sums.
 * Written in C rather than with torch.compile: inductor recompiles per shape and layout (10-40 s each on two
 * cores), while this file compiles once in about a second and serves every shape.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

typedef struct {
    int64_t n, d, h, w; /* grid of this tensor */
    int64_t ld;         /* elements between consecutive voxels (the tensor's channel count) */
} grid_t;

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

/* For each output row (n, z, y): the NT source rows (or NULL) and their shifts along the last axis. For each
 * output voxel, the NT source pointers (a row of zeros for taps that fall outside the input), then one pass
 * over the channels accumulating all taps in registers: the output is read and written once. */
#define ROW_SETUP(NT, GO, GI, MUL, DIV)                                                                        \
    int64_t n = row / (GO.d * GO.h), z = (row / GO.h) % GO.d, y = row % GO.h;                                 \
    const T *irow[NT];                                                                                        \
    int64_t xs[NT];                                                                                           \
    for (int64_t k = 0; k < NT; k++) {                                                                        \
        int64_t rz = source_coord(z, MUL, DIV, axis[k] == 0 ? sign[k] : 0, GI.d);                             \
        int64_t ry = source_coord(y, MUL, DIV, axis[k] == 1 ? sign[k] : 0, GI.h);                             \
        irow[k] = (rz < 0 || ry < 0) ? NULL : in + ((n * GI.d + rz) * GI.h + ry) * GI.w * GI.ld;              \
        xs[k] = axis[k] == 2 ? sign[k] : 0;                                                                   \
    }

#define VOXEL_SOURCES(NT, GI, MUL, DIV)                                                                        \
    const T *p[NT];                                                                                           \
    for (int64_t k = 0; k < NT; k++) {                                                                        \
        int64_t rx = irow[k] ? source_x(x, MUL, DIV, xs[k], GI.w) : -1;                                       \
        p[k] = rx < 0 ? zeros : irow[k] + rx * GI.ld;                                                         \
    }

#define DEFINE_KERNELS(T, SUFFIX, NT)                                                                           \
static void gather_##SUFFIX##_##NT(T *restrict out, grid_t go, const T *restrict in, grid_t gi,              \
                                   const T *restrict taps, const T *restrict zeros, const int64_t *axis,      \
                                   const int64_t *sign, int64_t m, int64_t mul, int64_t div, int nthreads) {  \
    int64_t rows = go.n * go.d * go.h;                                                                        \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t row = 0; row < rows; row++) {                                                                \
        ROW_SETUP(NT, go, gi, mul, div)                                                                       \
        for (int64_t x = 0; x < go.w; x++) {                                                                  \
            VOXEL_SOURCES(NT, gi, mul, div)                                                                   \
            T *restrict o = out + (row * go.w + x) * go.ld;                                                   \
            _Pragma("omp simd")                                                                               \
            for (int64_t c = 0; c < m; c++) {                                                                 \
                T a = o[c];                                                                                   \
                for (int64_t k = 0; k < NT; k++) a += taps[k * m + c] * p[k][c];                              \
                o[c] = a;                                                                                     \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
/* partial: (nthreads, NT, m) float64, zeroed by the caller and summed over threads by the caller. Each row   \
 * is summed in T (a few hundred terms), then added to the float64 partial sums: fast and accurate.  */       \
static void grad_##SUFFIX##_##NT(double *restrict partial, const T *restrict g, grid_t gg,                   \
                                 const T *restrict in, grid_t gi, const T *restrict zeros,                   \
                                 const int64_t *axis, const int64_t *sign, int64_t m, int64_t stride,        \
                                 int nthreads) {                                                              \
    int64_t rows = gg.n * gg.d * gg.h;                                                                        \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * NT * m;                              \
        T *restrict racc = malloc(sizeof(T) * NT * m);                                                        \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t row = 0; row < rows; row++) {                                                            \
            ROW_SETUP(NT, gg, gi, stride, 1)                                                                  \
            for (int64_t i = 0; i < NT * m; i++) racc[i] = 0;                                                 \
            for (int64_t x = 0; x < gg.w; x++) {                                                              \
                VOXEL_SOURCES(NT, gi, stride, 1)                                                              \
                const T *restrict gp = g + (row * gg.w + x) * gg.ld;                                          \
                for (int64_t k = 0; k < NT; k++) {                                                            \
                    const T *restrict s = p[k];                                                               \
                    T *restrict a = racc + k * m;                                                             \
                    _Pragma("omp simd")                                                                       \
                    for (int64_t c = 0; c < m; c++) a[c] += gp[c] * s[c];                                     \
                }                                                                                             \
            }                                                                                                 \
            for (int64_t i = 0; i < NT * m; i++) acc[i] += racc[i];                                           \
        }                                                                                                     \
        free(racc);                                                                                           \
    }                                                                                                         \
}

#define DEFINE_ENTRY_POINTS(T, SUFFIX)                                                                          \
DEFINE_KERNELS(T, SUFFIX, 4)                                                                                  \
DEFINE_KERNELS(T, SUFFIX, 6)                                                                                  \
void stencil_gather_##SUFFIX(T *out, grid_t go, const T *in, grid_t gi, const T *taps, const T *zeros,        \
                             const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m,              \
                             int64_t mul, int64_t div, int nthreads) {                                        \
    (ntaps == 4 ? gather_##SUFFIX##_4 : gather_##SUFFIX##_6)(out, go, in, gi, taps, zeros, axis, sign, m,     \
                                                           mul, div, nthreads);                               \
}                                                                                                             \
void stencil_grad_##SUFFIX(double *partial, const T *g, grid_t gg, const T *in, grid_t gi, const T *zeros,    \
                           const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m, int64_t stride, \
                           int nthreads) {                                                                    \
    (ntaps == 4 ? grad_##SUFFIX##_4 : grad_##SUFFIX##_6)(partial, g, gg, in, gi, zeros, axis, sign, m, stride, \
                                                       nthreads);                                             \
}

#define T float
DEFINE_ENTRY_POINTS(float, f32)
#undef T
#define T double
DEFINE_ENTRY_POINTS(double, f64)
#undef T

/* Instance norm on channels-last (N, V, C) data, the other bandwidth-bound layer of a lean network.
 * channel_sums: sa[n, c] = sum_v a[n, v, c] and sab[n, c] = sum_v a[n, v, c] * b[n, v, c] (b = a gives the
 * second moment; a = dy, b = x gives the sums of the backward pass). Blocks of voxels are summed in T, then
 * added to float64 partial sums, one row of (2, N, C) per thread, zeroed and reduced by the caller.
 * affine2: out = p * u + q * v + r with p, q, r per (n, c); v may be NULL (q unused). */
#define NORM_BLOCK 64
#define DEFINE_NORM(T, SUFFIX)                                                                                  \
void channel_sums_##SUFFIX(double *restrict partial, const T *restrict a, const T *restrict b, int64_t n,    \
                           int64_t v, int64_t c, int nthreads) {                                              \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * 2 * n * c;                           \
        T *restrict bs = malloc(sizeof(T) * 2 * c);                                                           \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t job = 0; job < n * blocks; job++) {                                                      \
            int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                       \
            int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                           \
            for (int64_t k = 0; k < 2 * c; k++) bs[k] = 0;                                                    \
            for (int64_t j = v0; j < v1; j++) {                                                               \
                const T *restrict pa = a + (i * v + j) * c, *restrict pb = b + (i * v + j) * c;               \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++) {                                                             \
                    bs[k] += pa[k];                                                                           \
                    bs[c + k] += pa[k] * pb[k];                                                               \
                }                                                                                             \
            }                                                                                                 \
            for (int64_t k = 0; k < c; k++) {                                                                 \
                acc[i * c + k] += bs[k];                                                                      \
                acc[(n + i) * c + k] += bs[c + k];                                                            \
            }                                                                                                 \
        }                                                                                                     \
        free(bs);                                                                                             \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void affine2_##SUFFIX(T *out, const T *u, const T *v_, const T *p, const T *q, const T *r, int64_t n,        \
                      int64_t v, int64_t c, int nthreads) {                                                   \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t row = 0; row < n * v; row++) {                                                               \
        int64_t i = row / v;                                                                                  \
        const T *restrict pu = u + row * c, *restrict pp = p + i * c, *restrict pr = r + i * c;               \
        T *restrict po = out + row * c;                                                                       \
        if (v_) {                                                                                             \
            const T *restrict pv = v_ + row * c, *restrict pq = q + i * c;                                    \
            _Pragma("omp simd")                                                                               \
            for (int64_t k = 0; k < c; k++) po[k] = pp[k] * pu[k] + pq[k] * pv[k] + pr[k];                    \
        } else {                                                                                              \
            _Pragma("omp simd")                                                                               \
            for (int64_t k = 0; k < c; k++) po[k] = pp[k] * pu[k] + pr[k];                                    \
        }                                                                                                     \
    }                                                                                                         \
}

DEFINE_NORM(float, f32)
DEFINE_NORM(double, f64)
