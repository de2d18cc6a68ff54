/* leanseg's CPU kernels: the lean convolution, instance norm + activation, linear upsampling and sliding-window
 * blending, on channels-last data. Built as one shared library (leanseg_cpu.c includes the other files) and called
 * through ctypes (leanseg/nn/_cext.py, whose signature table mirrors this header; a test checks the two agree).
 *
 * Conventions, for every function below:
 * - Layout: tensors are channels-last (N, D, H, W, C), the C values of a voxel contiguous; 2D data is D = 1. A
 *   grid_t gives a tensor's sizes and ld, the elements between consecutive voxels (>= the channels used, so a
 *   kernel can read or write the first channels of a wider tensor).
 * - Types: each kernel exists per storage type, named by a suffix, with an accumulator type A:
 *   _f32 float (A float), _f64 double (A double), _bf16 bfloat16 stored as uint16_t (A float). Per-channel
 *   coefficients are passed in A. Sums that outlive a block of voxels are float64.
 * - Partial sums: a `double *partial` (or `stats`) argument holds one slice per OpenMP thread, laid out as stated
 *   per function; the caller zeroes it and sums it over the threads. NULL stats: no statistics.
 * - Taps: `axis` and `sign` (ntaps int64 each, ntaps = 4 in 2D, 6 in 3D) give tap k's offset sign[k] * e_axis[k],
 *   axes counted in the (D, H, W) view; `taps` is (ntaps, m): tap k's coefficient for each of the first m
 *   channels. `zeros` is a row of at least max(channels) zeros that taps falling outside the input read.
 * - Source of output voxel q along an axis: r = (q * mul + shift) / div, used only when the division is exact
 *   and r is inside the input: forward at stride s is mul = s, div = 1; the adjoint (dx from dy) is mul = 1,
 *   div = s with the signs negated by the caller.
 * - Threads: `nthreads` is the OpenMP team size of the call (1 for small tensors). No function allocates memory
 *   that outlives the call, keeps a pointer, or returns an error: shapes are checked by the caller (Python).
 */
#ifndef LEANSEG_CPU_H
#define LEANSEG_CPU_H

#include <stdint.h>

typedef struct {
    int64_t n, d, h, w; /* grid of this tensor */
    int64_t ld;         /* elements between consecutive voxels (the tensor's channel count) */
} grid_t;

/* Which optional code this build has (1) or not (0): the AVX512-BF16 bf16 loops, and the AVX-512 float32
 * kernels lean_tile_f32, lean_wgrad_f32 and lean_bwd_f32 (absent, not just slower, when 0). */
int bf16_simd(void);
int lean_simd(void);

/* ---- lean convolution, forward and adjoint (lean_forward.c) ----
 * stencil_gather: out[q, c] += sum_k taps[k, c] * in[r_k(q), c] for c < m, in place on the output of the 1x1.
 *   stats: NULL, or (nthreads, 2, N, cs) sums then sums of squares of out's first cs channels after the update. */
void stencil_gather_f32(float *out, grid_t go, const float *in, grid_t gi, const float *taps, const float *zeros,
                        const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m, int64_t mul, int64_t div,
                        double *stats, int64_t cs, int nthreads);
void stencil_gather_f64(double *out, grid_t go, const double *in, grid_t gi, const double *taps,
                        const double *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m,
                        int64_t mul, int64_t div, double *stats, int64_t cs, int nthreads);
void stencil_gather_bf16(uint16_t *out, grid_t go, const uint16_t *in, grid_t gi, const uint16_t *taps,
                         const uint16_t *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m,
                         int64_t mul, int64_t div, double *stats, int64_t cs, int nthreads);

/* lean_direct: out = 1x1(in) + stencil(in) (+ bias) in one pass, for few channels. wt (cin, coutp) is the 1x1 as
 *   input-major rows zero-padded to a multiple of 16 columns (W^T forward, W for the adjoint); bias NULL or cout
 *   values; taps (ntaps, m); zeros max(cin, m) long. stats: NULL or (nthreads, 2, N, cout), as stencil_gather's. */
void lean_direct_f32(float *out, grid_t go, const float *in, grid_t gi, const float *wt, const float *bias,
                     const float *taps, const float *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps,
                     int64_t cin, int64_t cout, int64_t m, int64_t mul, int64_t div, double *stats, int nthreads);
void lean_direct_f64(double *out, grid_t go, const double *in, grid_t gi, const double *wt, const double *bias,
                     const double *taps, const double *zeros, const int64_t *axis, const int64_t *sign,
                     int64_t ntaps, int64_t cin, int64_t cout, int64_t m, int64_t mul, int64_t div, double *stats,
                     int nthreads);
void lean_direct_bf16(uint16_t *out, grid_t go, const uint16_t *in, grid_t gi, const float *wt, const float *bias,
                      const float *taps, const uint16_t *zeros, const int64_t *axis, const int64_t *sign,
                      int64_t ntaps, int64_t cin, int64_t cout, int64_t m, int64_t mul, int64_t div, double *stats,
                      int nthreads);

/* ---- AVX-512 float32 tiles, forward and stride-1 adjoint (lean_tiles_avx512.c; only when lean_simd()) ----
 * lean_tile_f32: as lean_direct_f32 with div = 1 and cout <= 64, but wt (cin, NB * 16), taps (ntaps, NB * 16)
 *   and bias (NB * 16) zero-padded to NB = ceil(cout / 16) blocks, zeros max(cin, m) + 16 long. stream: write
 *   with non-temporal stores (out 64-byte aligned, go.ld == cout, a multiple of 16). */
void lean_tile_f32(float *out, grid_t go, const float *in, grid_t gi, const float *wt, const float *bias,
                   const float *taps, const float *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps,
                   int64_t cin, int64_t cout, int64_t m, int64_t mul, double *stats, int stream, int nthreads);

/* ---- lean convolution, backward (lean_backward.c) ----
 * stencil_grad: dS[k, c] = sum_q g[q, c] * in[s q + e_k, c] for c < m. partial (nthreads, ntaps, m). */
void stencil_grad_f32(double *partial, const float *g, grid_t gg, const float *in, grid_t gi, const float *zeros,
                      const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m, int64_t stride,
                      int nthreads);
void stencil_grad_f64(double *partial, const double *g, grid_t gg, const double *in, grid_t gi,
                      const double *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m,
                      int64_t stride, int nthreads);
void stencil_grad_bf16(double *partial, const uint16_t *g, grid_t gg, const uint16_t *in, grid_t gi,
                       const uint16_t *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m,
                       int64_t stride, int nthreads);

/* lean_wgrad_f32 (only when lean_simd()): dW, dS and dbias in one pass over g (grid gg, cout channels) and the
 *   input (grid gi, cin channels) at the given stride. partial (nthreads, cout * cinp + ntaps * coutp + coutp)
 *   with cinp, coutp the channel counts rounded up to 16: dW's rows cinp long, then dS's rows, then dbias. */
void lean_wgrad_f32(double *partial, const float *g, grid_t gg, const float *in, grid_t gi, const int64_t *axis,
                    const int64_t *sign, int64_t ntaps, int64_t cin, int64_t cout, int64_t m, int64_t stride,
                    int nthreads);

/* lean_bwd_f32 (only when lean_simd()): the whole stride-1 backward for up to 32 channels, g read once: dx (grid
 *   gx) as lean_tile_f32's adjoint and the partial sums as lean_wgrad_f32's. wt (cout, NB * 16) is W zero-padded
 *   to NB = ceil(cin / 16) blocks, taps (ntaps, NB * 16) S^T likewise; sign the forward signs. */
void lean_bwd_f32(double *partial, float *dx, grid_t gx, const float *g, grid_t gg, const float *in, grid_t gi,
                  const float *wt, const float *taps, const float *zeros, const int64_t *axis, const int64_t *sign,
                  int64_t ntaps, int64_t cin, int64_t cout, int64_t m, int nthreads);

/* ---- instance norm + activation on (N, V, C) data (norm_act.c) ----
 * channel_sums: partial (nthreads, 2, N, C): sum_v a, then sum_v a * b, per (n, c).
 * affine2: out = p * u + q * v + r, coefficients (N, C); v and q may be NULL.
 * norm_act: out = act(p * u + r), act(t) = t > 0 ? t : slope * t; out may be u.
 * norm_act_grad_sums: with g = da * act'(p * z + r), partial (nthreads, 2, N, C): sum_v g, then sum_v g * z.
 * norm_act_grad: out = P * g + Q * z + R with g as above; out may be da or z. */
void channel_sums_f32(double *partial, const float *a, const float *b, int64_t n, int64_t v, int64_t c,
                      int nthreads);
void channel_sums_f64(double *partial, const double *a, const double *b, int64_t n, int64_t v, int64_t c,
                      int nthreads);
void channel_sums_bf16(double *partial, const uint16_t *a, const uint16_t *b, int64_t n, int64_t v, int64_t c,
                       int nthreads);
void affine2_f32(float *out, const float *u, const float *v_, const float *p, const float *q, const float *r,
                 int64_t n, int64_t v, int64_t c, int nthreads);
void affine2_f64(double *out, const double *u, const double *v_, const double *p, const double *q, const double *r,
                 int64_t n, int64_t v, int64_t c, int nthreads);
void affine2_bf16(uint16_t *out, const uint16_t *u, const uint16_t *v_, const float *p, const float *q,
                  const float *r, int64_t n, int64_t v, int64_t c, int nthreads);
void norm_act_f32(float *out, const float *u, const float *p, const float *r, float slope, int64_t n, int64_t v,
                  int64_t c, int nthreads);
void norm_act_f64(double *out, const double *u, const double *p, const double *r, double slope, int64_t n,
                  int64_t v, int64_t c, int nthreads);
void norm_act_bf16(uint16_t *out, const uint16_t *u, const float *p, const float *r, float slope, int64_t n,
                   int64_t v, int64_t c, int nthreads);
void norm_act_grad_sums_f32(double *partial, const float *da, const float *z, const float *p, const float *r,
                            float slope, int64_t n, int64_t v, int64_t c, int nthreads);
void norm_act_grad_sums_f64(double *partial, const double *da, const double *z, const double *p, const double *r,
                            double slope, int64_t n, int64_t v, int64_t c, int nthreads);
void norm_act_grad_sums_bf16(double *partial, const uint16_t *da, const uint16_t *z, const float *p,
                             const float *r, float slope, int64_t n, int64_t v, int64_t c, int nthreads);
void norm_act_grad_f32(float *out, const float *da, const float *z, const float *p, const float *r, float slope,
                       const float *P, const float *Q, const float *R, int64_t n, int64_t v, int64_t c,
                       int nthreads);
void norm_act_grad_f64(double *out, const double *da, const double *z, const double *p, const double *r,
                       double slope, const double *P, const double *Q, const double *R, int64_t n, int64_t v,
                       int64_t c, int nthreads);
void norm_act_grad_bf16(uint16_t *out, const uint16_t *da, const uint16_t *z, const float *p, const float *r,
                        float slope, const float *P, const float *Q, const float *R, int64_t n, int64_t v, int64_t c,
                        int nthreads);

/* ---- linear upsampling (upsample.c) ----
 * upsample_linear: out (grid go) = linear interpolation of in (grid gi), align_corners=False. iz, iy, ix
 *   (2 * go.d, 2 * go.h, 2 * go.w) are each output coordinate's two source indices, wz, wy, wx their weights. */
void upsample_linear_f32(float *out, grid_t go, const float *in, grid_t gi, const int64_t *iz, const int64_t *iy,
                         const int64_t *ix, const float *wz, const float *wy, const float *wx, int nthreads);
void upsample_linear_f64(double *out, grid_t go, const double *in, grid_t gi, const int64_t *iz, const int64_t *iy,
                         const int64_t *ix, const double *wz, const double *wy, const double *wx, int nthreads);
void upsample_linear_bf16(uint16_t *out, grid_t go, const uint16_t *in, grid_t gi, const int64_t *iz,
                          const int64_t *iy, const int64_t *ix, const float *wz, const float *wy, const float *wx,
                          int nthreads);

/* ---- sliding-window blending (stitch.c; channels-first, not channels-last) ----
 * stitch_add: acc[c, z0 + z, y0 + y, x0 + x] += act(y)[c, z, y, x] * wt[z, y, x] for the window y (k, d, h, w)
 *   read through its strides (sc, sz, sy, sx), acc (k, D, H, W) and wt (d, h, w) contiguous; act 0: none,
 *   1: softmax over the k channels, 2: sigmoid. */
void stitch_add_f32(float *acc, int64_t k, int64_t D, int64_t H, int64_t W, const float *y, int64_t d, int64_t h,
                    int64_t w, int64_t sc, int64_t sz, int64_t sy, int64_t sx, int64_t z0, int64_t y0, int64_t x0,
                    const float *wt, int act, int nthreads);
void stitch_add_f64(double *acc, int64_t k, int64_t D, int64_t H, int64_t W, const double *y, int64_t d, int64_t h,
                    int64_t w, int64_t sc, int64_t sz, int64_t sy, int64_t sx, int64_t z0, int64_t y0, int64_t x0,
                    const double *wt, int act, int nthreads);

#endif /* LEANSEG_CPU_H */
