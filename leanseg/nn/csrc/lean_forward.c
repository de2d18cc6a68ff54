/* The lean convolution's forward pass (and its adjoint, dx from dy) on channels-last data, portable C.
 *
 * Two ways, picked by the caller (leanseg/nn/_cpu.py):
 * - stencil_gather: the 1x1 is a BLAS GEMM; this pass adds the per-channel stencil in place, reading each
 *   voxel's neighbours while they are in cache: out[q, c] += taps[k, c] * in[r_k(q), c] for c < m.
 * - lean_direct: the 1x1 and the stencil in one pass, for few channels, where the GEMM is bound by memory.
 * Both can sum each output channel and its square per sample while writing it, so an instance norm after the
 * convolution needs no pass of its own. Written in C rather than with torch.compile: inductor recompiles per
 * shape and layout, while this library compiles once and serves every shape.
 */
#include "common.h"

/* voxel_gather: o[c] += sum_k tp[k, c] * p[k][c] for c < m (the stencil update of one output voxel); with rs,
 * also rs[c] += o[c], rs[cs + c] += o[c]^2 for every c < cs, of the stored values (bf16 statistics describe the
 * bf16 data). Portable loops that GCC vectorises; for bf16 with AVX512-BF16 the same arithmetic in vectors. */
#define DEFINE_VOXEL_GATHER(T, A, SUFFIX)                                                                     \
static inline void voxel_gather_##SUFFIX(T *restrict o, const T *const *p, const A *restrict tp, int64_t m,   \
                                         int64_t nt, A *restrict rs, int64_t cs) {                            \
    if (rs) {                                                                                                 \
        _Pragma("omp simd")                                                                                   \
        for (int64_t c = 0; c < m; c++) {                                                                     \
            A a = LOAD_##SUFFIX(o[c]);                                                                        \
            for (int64_t k = 0; k < nt; k++) a += tp[k * m + c] * LOAD_##SUFFIX(p[k][c]);                     \
            T t = STORE_##SUFFIX(a);                                                                          \
            o[c] = t;                                                                                         \
            A r = LOAD_##SUFFIX(t);                                                                           \
            rs[c] += r;                                                                                       \
            rs[cs + c] += r * r;                                                                              \
        }                                                                                                     \
        _Pragma("omp simd")                                                                                   \
        for (int64_t c = m; c < cs; c++) {                                                                    \
            A r = LOAD_##SUFFIX(o[c]);                                                                        \
            rs[c] += r;                                                                                       \
            rs[cs + c] += r * r;                                                                              \
        }                                                                                                     \
    } else {                                                                                                  \
        _Pragma("omp simd")                                                                                   \
        for (int64_t c = 0; c < m; c++) {                                                                     \
            A a = LOAD_##SUFFIX(o[c]);                                                                        \
            for (int64_t k = 0; k < nt; k++) a += tp[k * m + c] * LOAD_##SUFFIX(p[k][c]);                     \
            o[c] = STORE_##SUFFIX(a);                                                                         \
        }                                                                                                     \
    }                                                                                                         \
}
DEFINE_VOXEL_GATHER(float, float, f32)
DEFINE_VOXEL_GATHER(double, double, f64)
#if BF16_SIMD
static inline void voxel_gather_bf16(uint16_t *restrict o, const uint16_t *const *p, const float *restrict tp,
                                     int64_t m, int64_t nt, float *restrict rs, int64_t cs) {
    for (int64_t c = 0; c < m; c += 16) {
        __mmask16 k = tail_mask(m - c);
        __m512 a = bf16x16_load(o + c, k), r;
        for (int64_t t = 0; t < nt; t++)
            a = _mm512_fmadd_ps(f32x16_load(tp + t * m + c, k), bf16x16_load(p[t] + c, k), a);
        bf16x16_store(o + c, a, k, rs ? &r : NULL);
        if (rs) {
            f32x16_store(rs + c, k, _mm512_add_ps(f32x16_load(rs + c, k), r));
            f32x16_store(rs + cs + c, k, _mm512_fmadd_ps(r, r, f32x16_load(rs + cs + c, k)));
        }
    }
    if (rs)
        for (int64_t c = m; c < cs; c += 16) {
            __mmask16 k = tail_mask(cs - c);
            __m512 r = bf16x16_load(o + c, k);
            f32x16_store(rs + c, k, _mm512_add_ps(f32x16_load(rs + c, k), r));
            f32x16_store(rs + cs + c, k, _mm512_fmadd_ps(r, r, f32x16_load(rs + cs + c, k)));
        }
}
#else
DEFINE_VOXEL_GATHER(uint16_t, float, bf16)
#endif

/* stats: NULL, or (nthreads, 2, N, cs) float64 partial sums of the output after the update (channels c < cs of
 * every output voxel, sums then sums of squares), zeroed and reduced over threads by the caller. */
#define DEFINE_GATHER(T, A, SUFFIX, NT)                                                                         \
static void gather_##SUFFIX##_##NT(T *restrict out, grid_t go, const T *restrict in, grid_t gi,              \
                                   const T *restrict taps, const T *restrict zeros, const int64_t *axis,      \
                                   const int64_t *sign, int64_t m, int64_t mul, int64_t div, double *stats,   \
                                   int64_t cs, int nthreads) {                                                \
    int64_t rows = go.n * go.d * go.h;                                                                        \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = stats ? stats + (int64_t)omp_get_thread_num() * 2 * go.n * cs : NULL;          \
        A *restrict rs = stats ? malloc(sizeof(A) * 2 * cs) : NULL;                                           \
        A tp[NT * m];                                                                                         \
        for (int64_t i = 0; i < NT * m; i++) tp[i] = LOAD_##SUFFIX(taps[i]);                                  \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t row = 0; row < rows; row++) {                                                            \
            ROW_SETUP(T, NT, go, gi, mul, div)                                                                \
            if (rs)                                                                                           \
                for (int64_t c = 0; c < 2 * cs; c++) rs[c] = 0;                                               \
            for (int64_t x = 0; x < go.w; x++) {                                                              \
                VOXEL_SOURCES(T, NT, gi, mul, div)                                                            \
                voxel_gather_##SUFFIX(out + (row * go.w + x) * go.ld, p, tp, m, NT, rs, cs);                  \
            }                                                                                                 \
            if (rs)                                                                                           \
                for (int64_t c = 0; c < cs; c++) {                                                            \
                    acc[n * cs + c] += rs[c];                                                                 \
                    acc[(go.n + n) * cs + c] += rs[cs + c];                                                   \
                }                                                                                             \
        }                                                                                                     \
        free(rs);                                                                                             \
    }                                                                                                         \
}

/* The whole lean convolution in one pass, for the small channel counts where a BLAS GEMM over the voxels is
 * bound by memory, not arithmetic: the input is read once and the output written once (the GEMM + gather path
 * writes the output, then reads and writes it again). The 1x1 is register-blocked: DX voxels of a row times
 * OB output channels of accumulators, one load of W per input channel serving DX voxels; W stays in L1.
 * wt is (cin, coutp) in A, zero-padded to coutp = OB * ceil(cout / OB) columns (row c: the weights of input
 * channel c for every output); taps (NT, m) in A; zeros has max(cin, m) zeros. The source of the 1x1 is
 * r = (q * mul) / div, as for the taps with no shift, so the same kernel is the forward (mul = stride) and the
 * adjoint (dx from dy: div = stride, wt = W, the taps' signs swapped by the caller). */
#define DX 8
#define OB 16

/* mix: the 1x1 of DX voxels (src: their input rows) into vb (DX, coutp), in A: blocks of OB outputs held in
 * registers, one load of W per input channel serving DX voxels.
 * voxel_finish: one voxel's 1x1 result v (cout values, in A) + the taps on c < m, + bias, stored into po; with rs,
 * also the statistics of the stored values. */
#define DEFINE_MIX(T, A, SUFFIX)                                                                              \
static inline void mix_##SUFFIX(A *restrict vb, const T *const *src, const A *restrict wt, int64_t cin,       \
                                int64_t coutp) {                                                              \
    for (int64_t o0 = 0; o0 < coutp; o0 += OB) {                                                              \
        A av[DX][OB];                                                                                         \
        for (int64_t j = 0; j < DX; j++)                                                                      \
            for (int64_t l = 0; l < OB; l++) av[j][l] = 0;                                                    \
        for (int64_t c = 0; c < cin; c++) {                                                                   \
            const A *restrict wr = wt + c * coutp + o0;                                                       \
            for (int64_t j = 0; j < DX; j++) {                                                                \
                A xv = LOAD_##SUFFIX(src[j][c]);                                                              \
                _Pragma("omp simd")                                                                           \
                for (int64_t l = 0; l < OB; l++) av[j][l] += wr[l] * xv;                                      \
            }                                                                                                 \
        }                                                                                                     \
        for (int64_t j = 0; j < DX; j++)                                                                      \
            for (int64_t l = 0; l < OB; l++) vb[j * coutp + o0 + l] = av[j][l];                               \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
static inline void voxel_finish_##SUFFIX(T *restrict po, A *restrict v, const T *const *p, const A *restrict taps, \
                                         int64_t m, int64_t nt, const A *restrict bias, int64_t cout,         \
                                         A *restrict rs) {                                                    \
    _Pragma("omp simd")                                                                                       \
    for (int64_t o = 0; o < m; o++) {                                                                         \
        A a = v[o];                                                                                           \
        for (int64_t k = 0; k < nt; k++) a += taps[k * m + o] * LOAD_##SUFFIX(p[k][o]);                       \
        v[o] = a;                                                                                             \
    }                                                                                                         \
    if (bias) {                                                                                               \
        _Pragma("omp simd")                                                                                   \
        for (int64_t o = 0; o < cout; o++) v[o] += bias[o];                                                   \
    }                                                                                                         \
    if (rs) {                                                                                                 \
        _Pragma("omp simd")                                                                                   \
        for (int64_t o = 0; o < cout; o++) {                                                                  \
            T t = STORE_##SUFFIX(v[o]);                                                                       \
            po[o] = t;                                                                                        \
            A r = LOAD_##SUFFIX(t);                                                                           \
            rs[o] += r;                                                                                       \
            rs[cout + o] += r * r;                                                                            \
        }                                                                                                     \
    } else {                                                                                                  \
        _Pragma("omp simd")                                                                                   \
        for (int64_t o = 0; o < cout; o++) po[o] = STORE_##SUFFIX(v[o]);                                      \
    }                                                                                                         \
}
DEFINE_MIX(float, float, f32)
DEFINE_MIX(double, double, f64)
DEFINE_MIX(uint16_t, float, bf16)
#define DEFINE_DIRECT(T, A, SUFFIX, NT)                                                                         \
static void direct_##SUFFIX##_##NT(T *restrict out, grid_t go, const T *restrict in, grid_t gi,              \
                                   const A *restrict wt, const A *restrict bias, const A *restrict taps,      \
                                   const T *restrict zeros, const int64_t *axis, const int64_t *sign,         \
                                   int64_t cin, int64_t cout, int64_t m, int64_t mul, int64_t div,            \
                                   double *stats, int nthreads) {                                             \
    int64_t rows = go.n * go.d * go.h, coutp = (cout + OB - 1) / OB * OB;                                    \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = stats ? stats + (int64_t)omp_get_thread_num() * 2 * go.n * cout : NULL;        \
        A *restrict rs = stats ? malloc(sizeof(A) * 2 * cout) : NULL;                                         \
        A *restrict vb = malloc(sizeof(A) * DX * coutp);                                                      \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t row = 0; row < rows; row++) {                                                            \
            ROW_SETUP(T, NT, go, gi, mul, div)                                                                \
            int64_t cz = source_coord(z, mul, div, 0, gi.d), cy = source_coord(y, mul, div, 0, gi.h);         \
            const T *crow = (cz < 0 || cy < 0) ? NULL : in + ((n * gi.d + cz) * gi.h + cy) * gi.w * gi.ld;    \
            if (rs)                                                                                           \
                for (int64_t c = 0; c < 2 * cout; c++) rs[c] = 0;                                             \
            for (int64_t x0 = 0; x0 < go.w; x0 += DX) {                                                       \
                int64_t nx = go.w - x0 < DX ? go.w - x0 : DX;                                                 \
                const T *src[DX];                                                                             \
                for (int64_t j = 0; j < DX; j++) {                                                            \
                    int64_t cx = crow && j < nx ? source_x(x0 + j, mul, div, 0, gi.w) : -1;                   \
                    src[j] = cx < 0 ? zeros : crow + cx * gi.ld;                                              \
                }                                                                                             \
                mix_##SUFFIX(vb, src, wt, cin, coutp);                                                        \
                for (int64_t j = 0; j < nx; j++) {                                                            \
                    int64_t x = x0 + j;                                                                       \
                    A *restrict v = vb + j * coutp;                                                           \
                    VOXEL_SOURCES(T, NT, gi, mul, div)                                                        \
                    voxel_finish_##SUFFIX(out + (row * go.w + x) * go.ld, v, p, taps, m, NT, bias, cout, rs); \
                }                                                                                             \
            }                                                                                                 \
            if (rs)                                                                                           \
                for (int64_t c = 0; c < cout; c++) {                                                          \
                    acc[n * cout + c] += rs[c];                                                               \
                    acc[(go.n + n) * cout + c] += rs[cout + c];                                               \
                }                                                                                             \
        }                                                                                                     \
        free(rs);                                                                                             \
        free(vb);                                                                                             \
    }                                                                                                         \
}

#define DEFINE_FORWARD(T, A, SUFFIX)                                                                            \
DEFINE_GATHER(T, A, SUFFIX, 4)                                                                                \
DEFINE_GATHER(T, A, SUFFIX, 6)                                                                                \
DEFINE_DIRECT(T, A, SUFFIX, 4)                                                                                \
DEFINE_DIRECT(T, A, SUFFIX, 6)                                                                                \
void lean_direct_##SUFFIX(T *out, grid_t go, const T *in, grid_t gi, const A *wt, const A *bias, const A *taps, \
                          const T *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t cin,  \
                          int64_t cout, int64_t m, int64_t mul, int64_t div, double *stats, int nthreads) {      \
    (ntaps == 4 ? direct_##SUFFIX##_4 : direct_##SUFFIX##_6)(out, go, in, gi, wt, bias, taps, zeros, axis, sign,  \
                                                           cin, cout, m, mul, div, stats, nthreads);           \
}                                                                                                             \
void stencil_gather_##SUFFIX(T *out, grid_t go, const T *in, grid_t gi, const T *taps, const T *zeros,        \
                             const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m,              \
                             int64_t mul, int64_t div, double *stats, int64_t cs, int nthreads) {             \
    (ntaps == 4 ? gather_##SUFFIX##_4 : gather_##SUFFIX##_6)(out, go, in, gi, taps, zeros, axis, sign, m,     \
                                                           mul, div, stats, cs, nthreads);                    \
}

DEFINE_FORWARD(float, float, f32)
DEFINE_FORWARD(double, double, f64)
DEFINE_FORWARD(uint16_t, float, bf16)
