/* The lean convolution's weight gradients: dS[k, c] = sum_q g[q, c] * x[s q + e_k, c] (stencil_grad, portable;
 * dW and dbias are a BLAS GEMM and a sum in the caller), and in float32 on AVX-512 CPUs dW, dS and dbias in one
 * pass (lean_wgrad_f32) or, at stride 1, those with dx in one pass that reads g once (lean_bwd_f32). dx without
 * those is the forward's adjoint (lean_forward.c, lean_tiles_avx512.c).
 */
#include "common.h"

/* partial: (nthreads, NT, m) float64. Each row is summed in A (a few hundred terms), then added to the float64
 * partial sums: fast and accurate. */
#define DEFINE_GRAD(T, A, SUFFIX, NT)                                                                           \
static void grad_##SUFFIX##_##NT(double *restrict partial, const T *restrict g, grid_t gg,                   \
                                 const T *restrict in, grid_t gi, const T *restrict zeros,                   \
                                 const int64_t *axis, const int64_t *sign, int64_t m, int64_t stride,        \
                                 int nthreads) {                                                              \
    int64_t rows = gg.n * gg.d * gg.h;                                                                        \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * NT * m;                              \
        A *restrict racc = malloc(sizeof(A) * NT * m);                                                        \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t row = 0; row < rows; row++) {                                                            \
            ROW_SETUP(T, NT, gg, gi, stride, 1)                                                               \
            for (int64_t i = 0; i < NT * m; i++) racc[i] = 0;                                                 \
            for (int64_t x = 0; x < gg.w; x++) {                                                              \
                VOXEL_SOURCES(T, NT, gi, stride, 1)                                                           \
                const T *restrict gp = g + (row * gg.w + x) * gg.ld;                                          \
                for (int64_t k = 0; k < NT; k++) {                                                            \
                    const T *restrict s = p[k];                                                               \
                    A *restrict a = racc + k * m;                                                             \
                    _Pragma("omp simd")                                                                       \
                    for (int64_t c = 0; c < m; c++) a[c] += LOAD_##SUFFIX(gp[c]) * LOAD_##SUFFIX(s[c]);       \
                }                                                                                             \
            }                                                                                                 \
            for (int64_t i = 0; i < NT * m; i++) acc[i] += racc[i];                                           \
        }                                                                                                     \
        free(racc);                                                                                           \
    }                                                                                                         \
}

#define DEFINE_STENCIL_GRAD(T, A, SUFFIX)                                                                       \
DEFINE_GRAD(T, A, SUFFIX, 4)                                                                                  \
DEFINE_GRAD(T, A, SUFFIX, 6)                                                                                  \
void stencil_grad_##SUFFIX(double *partial, const T *g, grid_t gg, const T *in, grid_t gi, const T *zeros,    \
                           const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m, int64_t stride, \
                           int nthreads) {                                                                    \
    (ntaps == 4 ? grad_##SUFFIX##_4 : grad_##SUFFIX##_6)(partial, g, gg, in, gi, zeros, axis, sign, m, stride, \
                                                       nthreads);                                             \
}

DEFINE_STENCIL_GRAD(float, float, f32)
DEFINE_STENCIL_GRAD(double, double, f64)
DEFINE_STENCIL_GRAD(uint16_t, float, bf16)

#if LEAN_SIMD
/* The weight gradients of the lean convolution in one pass over g (the output gradient, grid gg, cout channels)
 * and x (the input, grid gi, cin channels), stride s: dW[o, c] = sum_q g[q, o] x[s q, c], dS[k, o] = sum_q g[q, o]
 * x[s q + e_k, o] (o < m), db[o] = sum_q g[q, o]. BLAS's dW alone reads both tensors once; this adds dS and db
 * for the same read. Tiles of WG_TILE voxels of a row are summed in float32 registers, then added to the float64
 * partial of the thread: partial (nthreads, cout * cinp + nt * coutp + coutp) with cinp, coutp the channel counts
 * rounded up to 16 (dW rows cinp long, then dS rows, then db), zeroed and reduced by the caller. */
#define WG_TILE 32
#ifndef BPF
#define BPF 8
#endif
#ifndef WG_FLUSH
#define WG_FLUSH 128
#endif

static inline void add_f64(double *restrict dst, __m512 v) {
    _mm512_storeu_pd(dst, _mm512_add_pd(_mm512_loadu_pd(dst), _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
    _mm512_storeu_pd(dst + 8, _mm512_add_pd(_mm512_loadu_pd(dst + 8),
                                             _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                                                 _mm512_castps_pd(v), 1)))));
}

/* Up to 16 channels in and out, a tile whose taps are all inside the input in one loop over its voxels: the 16
 * rows of dW, the taps of dS and db in 23 registers, x and g loaded once per voxel (the general loop reads the tile
 * twice, for dW and for dS). g: the tile's first voxel (voxel step gs); xc: its centre source (step xs); the taps
 * read base[k] + (x0s + j * stride + xoff[k]) * ld. pf: prefetch the next tile's rows. */
/* a[o] += g[o] * xv for the first n <= 16 output rows (n = 16 without a test per row); inlined with constant
 * indices, a[] stays in registers */
static inline __attribute__((always_inline)) void fma_rows16(__m512 *a, const float *g, __m512 xv, int64_t n) {
    if (n == 16) {
#pragma GCC unroll 16
        for (int o = 0; o < 16; o++) a[o] = _mm512_fmadd_ps(_mm512_set1_ps(g[o]), xv, a[o]);
    } else {
#pragma GCC unroll 16
        for (int o = 0; o < 16; o++)
            if (o < n) a[o] = _mm512_fmadd_ps(_mm512_set1_ps(g[o]), xv, a[o]);
    }
}

static void wgrad_tile_16(double *restrict dw, double *restrict ds, double *restrict db, const float *g, int64_t gs,
                          const float *xc, int64_t xs, const float *const *base, const int64_t *xoff, int64_t nt,
                          int64_t x0s, int64_t ld, int64_t cin, int64_t cout, int64_t m, int64_t nx, int pf) {
    __mmask16 cm = lane_mask(cin), om = lane_mask(cout), tm = lane_mask(m);
    const float *src[6];
    __m512 a[16], sk[6], sb = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int o = 0; o < 16; o++) a[o] = _mm512_setzero_ps();
#pragma GCC unroll 6
    for (int k = 0; k < 6; k++) {
        src[k] = k < nt && base[k] ? base[k] + (x0s + xoff[k]) * ld : NULL;
        sk[k] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < nx; j++) {
        const float *gp = g + j * gs;
        if (pf) {
            _mm_prefetch((const char *)(gp + WG_TILE * gs), _MM_HINT_T0);
            _mm_prefetch((const char *)(xc + (j + WG_TILE) * xs), _MM_HINT_T0);
            for (int k = 0; k < nt; k++)
                if (src[k] && xoff[k] == 0) _mm_prefetch((const char *)(src[k] + (j + WG_TILE) * xs), _MM_HINT_T0);
        }
        __m512 xv = _mm512_maskz_loadu_ps(cm, xc + j * xs), gv = _mm512_maskz_loadu_ps(om, gp);
        fma_rows16(a, gp, xv, cout);
        sb = _mm512_add_ps(sb, gv);
#pragma GCC unroll 6
        for (int k = 0; k < 6; k++)
            if (src[k]) sk[k] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(tm, src[k] + j * xs), sk[k]);
    }
    int64_t cinp = 16, coutp = 16;
#pragma GCC unroll 16
    for (int o = 0; o < 16; o++)
        if (o < cout) add_f64(dw + o * cinp, a[o]);
#pragma GCC unroll 6
    for (int k = 0; k < 6; k++)
        if (src[k]) add_f64(ds + k * coutp, sk[k]);
    add_f64(db, sb);
}

/* One row (n, z, y) of g of lean_wgrad_f32, added to the thread's partials dw, ds, db (layout as partial's). */
static void wgrad_row(double *restrict dw, double *restrict ds, double *restrict db, const float *g, grid_t gg,
                      const float *in, grid_t gi, int64_t row, const int64_t *axis, const int64_t *sign, int64_t nt,
                      int64_t cin, int64_t cout, int64_t m, int64_t stride) {
    int64_t cinp = (cin + 15) / 16 * 16, coutp = (cout + 15) / 16 * 16;
    int64_t n = row / (gg.d * gg.h), z = (row / gg.h) % gg.d, y = row % gg.h;
    const float *crow = in + ((n * gi.d + z * stride) * gi.h + y * stride) * gi.w * gi.ld;
    const float *grow = g + row * gg.w * gg.ld;
    const float *base[6];
    int64_t xoff[6];
    for (int k = 0; k < nt; k++) {
        int64_t rz = source_coord(z, stride, 1, axis[k] == 0 ? sign[k] : 0, gi.d);
        int64_t ry = source_coord(y, stride, 1, axis[k] == 1 ? sign[k] : 0, gi.h);
        base[k] = rz < 0 || ry < 0 ? NULL : in + ((n * gi.d + rz) * gi.h + ry) * gi.w * gi.ld;
        xoff[k] = axis[k] == 2 ? sign[k] : 0;
    }
    int64_t hi = gi.w >= 2 ? (gi.w - 2) / stride + 1 : 0; /* x < hi: x * stride + 1 inside the input */
    /* tiles of up to WG_TILE voxels within the segments [0, 1), [1, hi), [hi, w): the interior's tiles all take the
     * one-loop path (a row of 64 voxels cut at 32 would have none) */
    for (int64_t x0 = 0, nx; x0 < gg.w; x0 += nx) {
        int64_t end = x0 < 1 ? 1 : x0 < hi ? hi : gg.w;
        nx = end - x0 < WG_TILE ? end - x0 : WG_TILE;
        if (cout <= 16 && cin <= 16 && x0 >= 1 && x0 + nx <= hi) {
            wgrad_tile_16(dw, ds, db, grow + x0 * gg.ld, gg.ld, crow + x0 * stride * gi.ld, stride * gi.ld,
                          base, xoff, nt, x0 * stride, gi.ld, cin, cout, m, nx, x0 + nx + WG_TILE <= gg.w);
            continue;
        }
        /* dW: 16 rows o of one block of 16 input channels at a time, in 16 registers */
        for (int64_t o0 = 0; o0 < cout; o0 += 16) {
            int64_t no = cout - o0 < 16 ? cout - o0 : 16;
            for (int64_t c0 = 0; c0 < cin; c0 += 16) {
                __mmask16 cm = lane_mask(cin - c0);
                __m512 a[16];
#pragma GCC unroll 16
                for (int o = 0; o < 16; o++) a[o] = _mm512_setzero_ps();
                int first = o0 == 0 && c0 == 0;
                for (int64_t j = 0; j < nx; j++) {
                    const float *gp = grow + (x0 + j) * gg.ld + o0;
                    if (first && x0 + j + WG_TILE < gg.w) { /* the next tile, while this one computes */
                        int64_t nxt = (x0 + j + WG_TILE) * stride * gi.ld;
                        for (int64_t l = 0; l < cin || l < cout; l += 16) {
                            _mm_prefetch((const char *)(gp + WG_TILE * gg.ld + l), _MM_HINT_T0);
                            _mm_prefetch((const char *)(crow + nxt + l), _MM_HINT_T0);
                        }
                        for (int k = 0; k < nt; k++) /* the other rows the taps read */
                            if (base[k] && axis[k] != 2)
                                for (int64_t l = 0; l < m; l += 16)
                                    _mm_prefetch((const char *)(base[k] + nxt + l), _MM_HINT_T0);
                    }
                    __m512 xv = _mm512_maskz_loadu_ps(cm, crow + (x0 + j) * stride * gi.ld + c0);
                    fma_rows16(a, gp, xv, no);
                }
#pragma GCC unroll 16
                for (int o = 0; o < 16; o++) /* constant indices: a[] stays in registers */
                    if (o < no) add_f64(dw + (o0 + o) * cinp + c0, a[o]);
            }
        }
        /* dS and db, per block of 16 output channels. Tiles at a row's ends: the plain sum, then per tap over
         * the voxels whose source is inside the input (x * stride + xoff in [0, gi.w)), two chains each */
        for (int64_t o0 = 0; o0 < cout; o0 += 16) {
            __mmask16 om = lane_mask(cout - o0), tm = lane_mask(m - o0);
            const float *gp = grow + x0 * gg.ld + o0;
            if (tm != 0 && x0 >= 1 && x0 + nx <= hi) { /* every tap inside: one loop, 7 chains of sums */
                const float *src[6];
                __m512 sb = _mm512_setzero_ps(), sk[6];
#pragma GCC unroll 6
                for (int k = 0; k < 6; k++) {
                    src[k] = k < nt && base[k] ? base[k] + (x0 * stride + xoff[k]) * gi.ld + o0 : NULL;
                    sk[k] = _mm512_setzero_ps();
                }
                for (int64_t j = 0; j < nx; j++) {
                    __m512 gv = _mm512_maskz_loadu_ps(om, gp + j * gg.ld);
                    sb = _mm512_add_ps(sb, gv);
#pragma GCC unroll 6
                    for (int k = 0; k < 6; k++)
                        if (src[k])
                            sk[k] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(tm, src[k] + j * stride * gi.ld),
                                                    sk[k]);
                }
                add_f64(db + o0, sb);
#pragma GCC unroll 6
                for (int k = 0; k < 6; k++)
                    if (src[k]) add_f64(ds + k * coutp + o0, sk[k]);
                continue;
            }
            __m512 sb0 = _mm512_setzero_ps(), sb1 = _mm512_setzero_ps();
            int64_t i = 0;
            for (; i + 1 < nx; i += 2) {
                sb0 = _mm512_add_ps(sb0, _mm512_maskz_loadu_ps(om, gp + i * gg.ld));
                sb1 = _mm512_add_ps(sb1, _mm512_maskz_loadu_ps(om, gp + (i + 1) * gg.ld));
            }
            if (i < nx) sb0 = _mm512_add_ps(sb0, _mm512_maskz_loadu_ps(om, gp + i * gg.ld));
            add_f64(db + o0, _mm512_add_ps(sb0, sb1));
            if (tm == 0) continue;
            for (int k = 0; k < nt; k++) {
                if (!base[k]) continue;
                int64_t xa = xoff[k] < 0 ? 1 : 0;
                int64_t xb = gi.w - 1 - xoff[k] >= 0 ? (gi.w - 1 - xoff[k]) / stride + 1 : 0;
                xa = xa > x0 ? xa - x0 : 0;
                xb = xb - x0 < nx ? xb - x0 : nx;
                const float *src = base[k] + (x0 * stride + xoff[k]) * gi.ld + o0;
                __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
                int64_t j = xa;
                for (; j + 1 < xb; j += 2) {
                    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, gp + j * gg.ld),
                                         _mm512_maskz_loadu_ps(tm, src + j * stride * gi.ld), a0);
                    a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, gp + (j + 1) * gg.ld),
                                         _mm512_maskz_loadu_ps(tm, src + (j + 1) * stride * gi.ld), a1);
                }
                if (j < xb)
                    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tm, gp + j * gg.ld),
                                         _mm512_maskz_loadu_ps(tm, src + j * stride * gi.ld), a0);
                add_f64(ds + k * coutp + o0, _mm512_add_ps(a0, a1));
            }
        }
    }
}

void lean_wgrad_f32(double *partial, const float *g, grid_t gg, const float *in, grid_t gi, const int64_t *axis,
                    const int64_t *sign, int64_t nt, int64_t cin, int64_t cout, int64_t m, int64_t stride,
                    int nthreads) {
    int64_t rows = gg.n * gg.d * gg.h, cinp = (cin + 15) / 16 * 16, coutp = (cout + 15) / 16 * 16;
    int64_t size = cout * cinp + nt * coutp + coutp;
    _Pragma("omp parallel num_threads(nthreads)")
    {
        double *restrict dw = partial + (int64_t)omp_get_thread_num() * size;
        double *restrict ds = dw + cout * cinp, *restrict db = ds + nt * coutp;
        _Pragma("omp for schedule(static)")
        for (int64_t row = 0; row < rows; row++)
            wgrad_row(dw, ds, db, g, gg, in, gi, row, axis, sign, nt, cin, cout, m, stride);
    }
}

/* lean_bwd_f32's tile for up to 16 channels in and out: nx voxels of a row, each broadcast g[o] feeding both
 * dx (times row o of W) and dW's row o (times x), so g and x are loaded once per voxel and dx, dW, dS and db come
 * from one loop. dW, dS and db are summed in registers as in wgrad_tile_16 and added to the float64 partials at
 * the end. o: dx's first voxel (step os); g, xc: g's and x's (steps gs, xs); gk[k]: g at the source of dx's
 * adjoint tap k for the first voxel, xk[k]: x at dS's tap k (step gs, xs; NULL: the tap is outside for every
 * voxel of the tile); wt (cout, 16) W zero-padded, taps (nt, 16) S^T zero-padded. A tap k in neg (bit k), one
 * that reads x(p - e), takes its dS from the same pairs shifted by e: sum_q g(q + e) x(q), where g(q + e) is the
 * adjoint tap's source already loaded for dx and x(q) the centre, so its row of x is never read (xk[k] unused). */
static inline __attribute__((always_inline)) void bwd_tile_16(__m512 *restrict a, __m512 *restrict sk,
        __m512 *restrict sb, float *restrict o, int64_t os, const float *g, int64_t gs, const float *xc, int64_t xs,
        const float *const *gk, const float *const *xk, int64_t nt, const float *restrict wt,
        const float *restrict taps, int64_t cin, int64_t cout, int64_t m, int64_t nx, const float *const *pf, int npf,
        int neg) {
    __mmask16 cm = lane_mask(cin), om = lane_mask(cout), tm = lane_mask(m);
    for (int64_t j = 0; j < nx; j++) {
        for (int p = 0; p < npf; p++) _mm_prefetch((const char *)(pf[p] + (j + BPF) * gs), _MM_HINT_T0);
        const float *gp = g + j * gs;
        __m512 xv = _mm512_maskz_loadu_ps(cm, xc + j * xs), gv = _mm512_maskz_loadu_ps(om, gp);
        __m512 d[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}; /* dx in two chains: half the latency */
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++)
            if (q < cout) {
                __m512 b = _mm512_set1_ps(gp[q]);
                d[q & 1] = _mm512_fmadd_ps(_mm512_loadu_ps(wt + 16 * q), b, d[q & 1]);
                a[q] = _mm512_fmadd_ps(b, xv, a[q]);
            }
        *sb = _mm512_add_ps(*sb, gv);
#pragma GCC unroll 6
        for (int k = 0; k < 6; k++) {
            if (k >= nt) break;
            if (gk[k]) {
                __m512 gt = _mm512_maskz_loadu_ps(tm, gk[k] + j * gs);
                d[k & 1] = _mm512_fmadd_ps(_mm512_loadu_ps(taps + 16 * k), gt, d[k & 1]);
                if (neg >> k & 1) sk[k] = _mm512_fmadd_ps(gt, xv, sk[k]);
            }
            if (xk[k]) sk[k] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(tm, xk[k] + j * xs), sk[k]); /* not in neg */
        }
        _mm512_mask_storeu_ps(o + j * os, cm, _mm512_add_ps(d[0], d[1]));
    }
}

/* bwd_tile_full's prefetch distance in voxels. */
#ifndef FPD
#define FPD 64
#endif
/* bwd_tile_16 for the common case, straight-line: 16 channels in and out with 16 floats a voxel, every tap inside,
 * the taps in _taps' order (-e, +e per axis; 4 in 2D, 6 in 3D). The x-taps are the centre's neighbours (+-16 floats),
 * so only the y- and z-rows need pointers: gk the adjoint taps' rows of g (k < nt - 2), xk[k] (k odd) x's rows at
 * +e. The same sums in the same order as bwd_tile_16, whose tests on whole tiles it answers: GCC does not unswitch
 * bwd_tile_16's per-channel and per-tap tests out of the voxel loop, so this case is written out. */
static inline __attribute__((always_inline)) void bwd_tile_full(__m512 *restrict a, __m512 *restrict sk,
        __m512 *restrict sb, float *restrict o, const float *g, const float *xc, const float *const *gk,
        const float *const *xk, const int nt, const float *restrict wt, const float *restrict taps, int64_t nx) {
    const float *g0 = gk[0], *g1 = gk[1], *g2 = nt == 6 ? gk[2] : NULL, *g3 = nt == 6 ? gk[3] : NULL;
    const float *x1 = xk[1], *x3 = nt == 6 ? xk[3] : NULL;
    for (int64_t j = 0; j < nx; j++) {
        const float *gp = g + 16 * j, *xp = xc + 16 * j;
        /* the rows at +e of the outermost axis (z in 3D, y in 2D) are the data no earlier row has read: one line
         * of each FPD voxels ahead, across the row's end into the next (each row is its own 4 KB page at 64^3, where
         * the hardware prefetcher stops) */
        _mm_prefetch((const char *)(g0 + 16 * (j + FPD)), _MM_HINT_T0);
        _mm_prefetch((const char *)(x1 + 16 * (j + FPD)), _MM_HINT_T0);
        __m512 xv = _mm512_loadu_ps(xp), gv = _mm512_loadu_ps(gp);
        __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int q = 0; q < 16; q += 2) {
            __m512 b0 = _mm512_set1_ps(gp[q]), b1 = _mm512_set1_ps(gp[q + 1]);
            d0 = _mm512_fmadd_ps(_mm512_loadu_ps(wt + 16 * q), b0, d0);
            a[q] = _mm512_fmadd_ps(b0, xv, a[q]);
            d1 = _mm512_fmadd_ps(_mm512_loadu_ps(wt + 16 * q + 16), b1, d1);
            a[q + 1] = _mm512_fmadd_ps(b1, xv, a[q + 1]);
        }
        *sb = _mm512_add_ps(*sb, gv);
        /* the y- (and z-) taps: g at -e feeds dx's tap and, for a tap reading x(p - e), dS as g(q + e) x(q) */
        __m512 t;
        t = _mm512_loadu_ps(g0 + 16 * j);
        d0 = _mm512_fmadd_ps(_mm512_loadu_ps(taps), t, d0);
        sk[0] = _mm512_fmadd_ps(t, xv, sk[0]);
        t = _mm512_loadu_ps(g1 + 16 * j);
        d1 = _mm512_fmadd_ps(_mm512_loadu_ps(taps + 16), t, d1);
        sk[1] = _mm512_fmadd_ps(gv, _mm512_loadu_ps(x1 + 16 * j), sk[1]);
        if (nt == 6) {
            t = _mm512_loadu_ps(g2 + 16 * j);
            d0 = _mm512_fmadd_ps(_mm512_loadu_ps(taps + 32), t, d0);
            sk[2] = _mm512_fmadd_ps(t, xv, sk[2]);
            t = _mm512_loadu_ps(g3 + 16 * j);
            d1 = _mm512_fmadd_ps(_mm512_loadu_ps(taps + 48), t, d1);
            sk[3] = _mm512_fmadd_ps(gv, _mm512_loadu_ps(x3 + 16 * j), sk[3]);
        }
        /* the x-taps: tap nt - 2 reads x(p - 1) (adjoint source g(q + 1)), tap nt - 1 reads x(p + 1) */
        t = _mm512_loadu_ps(gp + 16);
        d0 = _mm512_fmadd_ps(_mm512_loadu_ps(taps + 16 * (nt - 2)), t, d0);
        sk[nt - 2] = _mm512_fmadd_ps(t, xv, sk[nt - 2]);
        d1 = _mm512_fmadd_ps(_mm512_loadu_ps(taps + 16 * (nt - 1)), _mm512_loadu_ps(gp - 16), d1);
        sk[nt - 1] = _mm512_fmadd_ps(gv, _mm512_loadu_ps(xp + 16), sk[nt - 1]);
        _mm512_storeu_ps(o + 16 * j, _mm512_add_ps(d0, d1));
    }
}

/* One row of lean_bwd_f32 for up to 16 channels: the interior (every x-tap inside) in tiles of WG_TILE voxels, the
 * row's ends as tiles of one voxel whose x-taps outside the input are dropped. */
static void bwd_row_16(double *restrict dw, double *restrict ds, double *restrict db, float *dx, grid_t gx,
                       const float *g, grid_t gg, const float *in, grid_t gi, int64_t row, const float *wt,
                       const float *taps, const int64_t *axis, const int64_t *sign, int64_t nt, int64_t cin,
                       int64_t cout, int64_t m) {
    int64_t n = row / (gg.d * gg.h), z = (row / gg.h) % gg.d, y = row % gg.h, w = gg.w;
    const float *gb[6], *xb[6], *gk[6], *xk[6];
    int64_t xoff[6];
    int neg = 0;
    for (int k = 0; k < nt; k++) {
        int64_t s0 = axis[k] == 0 ? sign[k] : 0, s1 = axis[k] == 1 ? sign[k] : 0;
        int64_t gz = source_coord(z, 1, 1, -s0, gg.d), gy = source_coord(y, 1, 1, -s1, gg.h); /* adjoint: -e_k */
        int64_t xz = source_coord(z, 1, 1, s0, gi.d), xy = source_coord(y, 1, 1, s1, gi.h);
        gb[k] = gz < 0 || gy < 0 ? NULL : g + ((n * gg.d + gz) * gg.h + gy) * w * gg.ld;
        xb[k] = xz < 0 || xy < 0 || sign[k] < 0 ? NULL : in + ((n * gi.d + xz) * gi.h + xy) * w * gi.ld;
        xoff[k] = axis[k] == 2 ? sign[k] : 0;
        neg |= (sign[k] < 0) << k; /* dS from g(q + e) x(q): x's row at -e is not read */
    }
    int64_t hi = w >= 2 ? w - 1 : 0;
    /* the row's interior tiles take bwd_tile_full: 16 channels of 16 floats, the taps in _taps' order (which
     * bwd_tile_full assumes) and every tap row inside (an interior tile's x-taps always are) */
    int full = cin == 16 && cout == 16 && m == 16 && gx.ld == 16 && gg.ld == 16 && gi.ld == 16 &&
               ((nt == 6 && neg == 0x15) || (nt == 4 && neg == 0x5)) && axis[nt - 2] == 2 && axis[nt - 1] == 2;
    for (int k = 0; k < nt; k++) full = full && gb[k] && (xb[k] || (neg >> k & 1));
    /* dW, dS and db of the row in float32 registers, added to the float64 partials every WG_FLUSH voxels: once per
     * row of up to that many, not once per tile (the row's two end voxels are tiles of their own) */
    __m512 a[16], sk[6], sb = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int q = 0; q < 16; q++) a[q] = _mm512_setzero_ps();
#pragma GCC unroll 6
    for (int k = 0; k < 6; k++) sk[k] = _mm512_setzero_ps();
    int64_t since = 0;
    const float *pf[4];
    for (int64_t x0 = 0, nx; x0 < w; x0 += nx) {
        int npf = 0;
        int interior = x0 >= 1 && x0 < hi;
        nx = !interior ? 1 : hi - x0 < WG_TILE ? hi - x0 : WG_TILE;
        for (int k = 0; k < nt; k++) {
            int64_t rg = x0 - xoff[k], rx = x0 + xoff[k];
            gk[k] = gb[k] && rg >= 0 && rg < w ? gb[k] + rg * gg.ld : NULL;
            xk[k] = xb[k] && rx >= 0 && rx < w ? xb[k] + rx * gi.ld : NULL;
            if (BPF && interior && gi.ld == gg.ld && far_row(axis[k], gg.h, w, gg.ld)) {
                if (gb[k] && npf < 4) pf[npf++] = gb[k] + x0 * gg.ld;
                if (xb[k] && npf < 4) pf[npf++] = xb[k] + x0 * gi.ld;
            }
        }
        if (full && interior && nt == 6)
            bwd_tile_full(a, sk, &sb, dx + (row * w + x0) * 16, g + (row * w + x0) * 16, in + (row * w + x0) * 16,
                          gk, xk, 6, wt, taps, nx);
        else if (full && interior)
            bwd_tile_full(a, sk, &sb, dx + (row * w + x0) * 16, g + (row * w + x0) * 16, in + (row * w + x0) * 16,
                          gk, xk, 4, wt, taps, nx);
        else
            bwd_tile_16(a, sk, &sb, dx + (row * w + x0) * gx.ld, gx.ld, g + (row * w + x0) * gg.ld, gg.ld,
                        in + (row * w + x0) * gi.ld, gi.ld, gk, xk, nt, wt, taps, cin, cout, m, nx, pf, npf, neg);
        since += nx;
        if (since >= WG_FLUSH || x0 + nx >= w) {
#pragma GCC unroll 16
            for (int q = 0; q < 16; q++)
                if (q < cout) {
                    add_f64(dw + q * 16, a[q]);
                    a[q] = _mm512_setzero_ps();
                }
#pragma GCC unroll 6
            for (int k = 0; k < 6; k++)
                if (k < nt) {
                    add_f64(ds + k * 16, sk[k]); /* zero where the tap's rows are outside: nothing was added */
                    sk[k] = _mm512_setzero_ps();
                }
            add_f64(db, sb);
            sb = _mm512_setzero_ps();
            since = 0;
        }
    }
}

/* The stride-1 backward of the lean convolution in one pass over the rows, for up to 32 channels in and out: dx
 * (= W^T g + the adjoint taps on g, as lean_tile_f32's adjoint) and dW, dS, db (as lean_wgrad_f32) with g read
 * from memory once instead of twice. Up to 16 channels, one loop per voxel (bwd_row_16); else per row lean_tile's
 * row with the adjoint's arguments, then lean_wgrad's row while that row of g is still in cache. dx (grid gx =
 * gi's with cin channels); wt (cout, NB * 16) is W zero-padded to NB = ceil(cin / 16) blocks, taps (nt, NB * 16)
 * S^T padded likewise; zeros as lean_tile_f32's; sign the forward signs (the adjoint's are
 * their negation); partial as lean_wgrad_f32's. */
void lean_bwd_f32(double *partial, float *dx, grid_t gx, const float *g, grid_t gg, const float *in, grid_t gi,
                  const float *wt, const float *taps, const float *zeros, const int64_t *axis, const int64_t *sign,
                  int64_t nt, int64_t cin, int64_t cout, int64_t m, int nthreads) {
    int64_t rows = gg.n * gg.d * gg.h, cinp = (cin + 15) / 16 * 16, coutp = (cout + 15) / 16 * 16;
    int64_t size = cout * cinp + nt * coutp + coutp;
    int64_t nsign[6];
    for (int k = 0; k < nt; k++) nsign[k] = -sign[k];
    _Pragma("omp parallel num_threads(nthreads)")
    {
        double *restrict dw = partial + (int64_t)omp_get_thread_num() * size;
        double *restrict ds = dw + cout * cinp, *restrict db = ds + nt * coutp;
        _Pragma("omp for schedule(static)")
        for (int64_t row = 0; row < rows; row++) {
            if (cinp == 16 && coutp == 16) {
                bwd_row_16(dw, ds, db, dx, gx, g, gg, in, gi, row, wt, taps, axis, sign, nt, cin, cout, m);
                continue;
            }
            (cinp == 16 ? tile_row_1 : tile_row_2)(dx + row * gx.w * gx.ld, gx, g, gg, row, wt, NULL, taps, zeros,
                                                   axis, nsign, (int)nt, cout, cin, m, 1, NULL, 0);
            wgrad_row(dw, ds, db, g, gg, in, gi, row, axis, sign, nt, cin, cout, m, 1);
        }
    }
}
#endif /* LEAN_SIMD */
