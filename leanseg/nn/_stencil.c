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
 * The gather can also accumulate the per-(n, c) sums and sums of squares of what it writes (every output channel),
 * so that an instance norm after the convolution needs no pass of its own over the output.
 * Each kernel is instantiated per storage type T with an accumulator type A: float/float, double/double and
 * bfloat16/float (bf16 is stored as uint16_t and converted by hand: portable C, and GCC vectorises it).
 * Written in C rather than with torch.compile: inductor recompiles per shape and layout (10-40 s each on two
 * cores), while this file compiles once in about a second and serves every shape.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

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

/* Which bf16 loops this build has: 1 for AVX512-BF16, 0 for the portable ones. */
int bf16_simd(void) { return BF16_SIMD; }

#define LOAD_f32(x) (x)
#define STORE_f32(x) (x)
#define LOAD_f64(x) (x)
#define STORE_f64(x) (x)
#define LOAD_bf16(x) bf16_load(x)
#define STORE_bf16(x) bf16_store(x)

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

/* The per-voxel and per-row inner loops over channels, one set per storage type: portable loops that GCC
 * vectorises, and for bf16 on CPUs with AVX512-BF16 the same arithmetic in 16-channel vectors.
 * voxel_gather: o[c] += sum_k tp[k, c] * p[k][c] for c < m (the stencil update of one output voxel); with rs,
 *   also rs[c] += o[c], rs[cs + c] += o[c]^2 for every c < cs, of the stored values (bf16 statistics describe
 *   the bf16 data).
 * row_norm_act: po[c] = act(pp[c] * pu[c] + pr[c]); po may be pu.
 * block_sums: bs[k] += sum_j pa[j, k], bs[c + k] += sum_j pa[j, k] * pb[j, k] over nv voxels of c channels. */
#define DEFINE_ROWS(T, A, SUFFIX)                                                                             \
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
}                                                                                                             \
                                                                                                              \
static inline void row_norm_act_##SUFFIX(T *po, const T *pu, const A *restrict pp, const A *restrict pr,      \
                                         A slope, int64_t c) {                                                \
    _Pragma("omp simd")                                                                                       \
    for (int64_t k = 0; k < c; k++) {                                                                         \
        A t = pp[k] * LOAD_##SUFFIX(pu[k]) + pr[k];                                                           \
        po[k] = STORE_##SUFFIX(t > 0 ? t : slope * t);                                                        \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
static inline void block_sums_##SUFFIX(A *restrict bs, const T *restrict pa, const T *restrict pb, int64_t nv, \
                                       int64_t c) {                                                           \
    for (int64_t j = 0; j < nv; j++) {                                                                        \
        _Pragma("omp simd")                                                                                   \
        for (int64_t k = 0; k < c; k++) {                                                                     \
            A va = LOAD_##SUFFIX(pa[j * c + k]);                                                              \
            bs[k] += va;                                                                                      \
            bs[c + k] += va * LOAD_##SUFFIX(pb[j * c + k]);                                                   \
        }                                                                                                     \
    }                                                                                                         \
}
DEFINE_ROWS(float, float, f32)
DEFINE_ROWS(double, double, f64)
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

static inline void row_norm_act_bf16(uint16_t *po, const uint16_t *pu, const float *restrict pp,
                                     const float *restrict pr, float slope, int64_t c) {
    __m512 vs = _mm512_set1_ps(slope);
    for (int64_t j = 0; j < c; j += 16) {
        __mmask16 k = tail_mask(c - j);
        __m512 t = _mm512_fmadd_ps(f32x16_load(pp + j, k), bf16x16_load(pu + j, k),
                                   f32x16_load(pr + j, k));
        __mmask16 pos = _mm512_cmp_ps_mask(t, _mm512_setzero_ps(), _CMP_GT_OQ);
        bf16x16_store(po + j, _mm512_mask_blend_ps(pos, _mm512_mul_ps(vs, t), t), k, NULL);
    }
}

/* each 16-channel chunk summed over the block's voxels in registers: the same additions in the same order */
static inline void block_sums_bf16(float *restrict bs, const uint16_t *restrict pa, const uint16_t *restrict pb,
                                   int64_t nv, int64_t c) {
    for (int64_t j = 0; j < c; j += 16) {
        __mmask16 k = tail_mask(c - j);
        __m512 s1 = f32x16_load(bs + j, k), s2 = f32x16_load(bs + c + j, k);
        for (int64_t i = 0; i < nv; i++) {
            __m512 va = bf16x16_load(pa + i * c + j, k);
            s1 = _mm512_add_ps(s1, va);
            s2 = _mm512_fmadd_ps(va, bf16x16_load(pb + i * c + j, k), s2);
        }
        f32x16_store(bs + j, k, s1);
        f32x16_store(bs + c + j, k, s2);
    }
}
#else
DEFINE_ROWS(uint16_t, float, bf16)
#endif

/* stats: NULL, or (nthreads, 2, N, cs) float64 partial sums of the output after the update (channels c < cs of
 * every output voxel, sums then sums of squares), zeroed and reduced over threads by the caller. */
#define DEFINE_KERNELS(T, A, SUFFIX, NT)                                                                        \
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
            ROW_SETUP(NT, go, gi, mul, div)                                                                   \
            if (rs)                                                                                           \
                for (int64_t c = 0; c < 2 * cs; c++) rs[c] = 0;                                               \
            for (int64_t x = 0; x < go.w; x++) {                                                              \
                VOXEL_SOURCES(NT, gi, mul, div)                                                               \
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
}                                                                                                             \
                                                                                                              \
/* partial: (nthreads, NT, m) float64, zeroed by the caller and summed over threads by the caller. Each row   \
 * is summed in A (a few hundred terms), then added to the float64 partial sums: fast and accurate.  */       \
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
            ROW_SETUP(NT, gg, gi, stride, 1)                                                                  \
            for (int64_t i = 0; i < NT * m; i++) racc[i] = 0;                                                 \
            for (int64_t x = 0; x < gg.w; x++) {                                                              \
                VOXEL_SOURCES(NT, gi, stride, 1)                                                              \
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
            ROW_SETUP(NT, go, gi, mul, div)                                                                   \
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
                    VOXEL_SOURCES(NT, gi, mul, div)                                                           \
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

#define DEFINE_ENTRY_POINTS(T, A, SUFFIX)                                                                       \
DEFINE_KERNELS(T, A, SUFFIX, 4)                                                                               \
DEFINE_KERNELS(T, A, SUFFIX, 6)                                                                               \
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
}                                                                                                             \
void stencil_grad_##SUFFIX(double *partial, const T *g, grid_t gg, const T *in, grid_t gi, const T *zeros,    \
                           const int64_t *axis, const int64_t *sign, int64_t ntaps, int64_t m, int64_t stride, \
                           int nthreads) {                                                                    \
    (ntaps == 4 ? grad_##SUFFIX##_4 : grad_##SUFFIX##_6)(partial, g, gg, in, gi, zeros, axis, sign, m, stride, \
                                                       nthreads);                                             \
}

#define T float
DEFINE_ENTRY_POINTS(float, float, f32)
#undef T
#define T double
DEFINE_ENTRY_POINTS(double, double, f64)
#undef T
#define T uint16_t
DEFINE_ENTRY_POINTS(uint16_t, float, bf16)
#undef T

/* The one-pass lean convolution and its weight gradients in float32 with AVX-512 intrinsics, for up to 64 output
 * channels: the direct kernel above spends most of its time per voxel (a buffer of the 1x1 results, a pointer per
 * tap chosen per voxel, loops of run-time length), which at 16-32 channels costs 3-5x a copy of the data. Here one
 * tile of DX voxels of a row keeps its DX x NB vectors of 16 outputs in registers from the 1x1 (a broadcast of each
 * input channel times a row of W^T) through the taps to the store; W^T stays in L1; the voxels whose x-taps leave
 * the input (the ends of a row) take the same code one at a time with those taps reading zeros. Rows whose taps
 * leave the input drop those taps. Stride 1 and 2 forward and the stride-1 adjoint (dx) share it (mul = stride or
 * 1); the stride-2 adjoint keeps the direct kernel. Without AVX-512 lean_simd() is 0 and the caller uses the
 * direct kernel and BLAS. */
#if defined(__AVX512F__) && !defined(LEANSEG_NO_LEAN_SIMD)
#include <immintrin.h>
#define LEAN_SIMD 1

static inline __mmask16 lane_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
}

/* DX voxels starting at o (output) and s (centre source), voxel steps ostep and sstep; tk[k] the source of tap k
 * for the first voxel (the same sstep), tp[k] its coefficients (NB * 16, zero-padded). wt (cin, NB * 16) is W^T
 * zero-padded; bias NULL or NB * 16 values. mb: blocks of 16 outputs that have taps (ceil(m / 16)), mmask the
 * lanes of the last of them (the tap loads stop at channel m), omask the stored lanes of the last block. With rs
 * (2 * NB vectors), the sums and sums of squares of the stored values are added to it. */
#define DEFINE_LEAN_TILE(TNB, TDX)                                                                                    \
static inline __attribute__((always_inline)) void lean_tile_##TNB##_##TDX(float *restrict o, int64_t ostep,           \
        const float *restrict s, int64_t sstep, const float *const *tk, const float *const *tp, int nt,               \
        const float *restrict wt, const float *restrict bias, int64_t cin, int64_t mb, __mmask16 mmask,               \
        __mmask16 omask, __m512 *rs, int stream) {                                                                    \
    __m512 acc[TDX][TNB];                                                                                             \
_Pragma("GCC unroll 8")                                                                                               \
    for (int j = 0; j < TDX; j++)                                                                                     \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) acc[j][b] = bias ? _mm512_loadu_ps(bias + 16 * b) : _mm512_setzero_ps();        \
    for (int64_t c = 0; c < cin; c++) {                                                                               \
        __m512 wv[TNB];                                                                                               \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) wv[b] = _mm512_loadu_ps(wt + c * TNB * 16 + 16 * b);                            \
_Pragma("GCC unroll 8")                                                                                               \
        for (int j = 0; j < TDX; j++) {                                                                               \
            __m512 xv = _mm512_set1_ps(s[j * sstep + c]);                                                             \
_Pragma("GCC unroll 4")                                                                                               \
            for (int b = 0; b < TNB; b++) acc[j][b] = _mm512_fmadd_ps(wv[b], xv, acc[j][b]);                          \
        }                                                                                                             \
    }                                                                                                                 \
    for (int k = 0; k < nt; k++) {                                                                                    \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) {                                                                               \
            if (b >= mb) break;                                                                                       \
            __mmask16 lm = b == mb - 1 ? mmask : (__mmask16)0xFFFF;                                                   \
            __m512 t = _mm512_loadu_ps(tp[k] + 16 * b);                                                               \
_Pragma("GCC unroll 8")                                                                                               \
            for (int j = 0; j < TDX; j++)                                                                             \
                acc[j][b] = _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(lm, tk[k] + j * sstep + 16 * b), acc[j][b]);     \
        }                                                                                                             \
    }                                                                                                                 \
_Pragma("GCC unroll 8")                                                                                               \
    for (int j = 0; j < TDX; j++)                                                                                     \
_Pragma("GCC unroll 4")                                                                                               \
        for (int b = 0; b < TNB; b++) {                                                                               \
            if (stream)                                                                                               \
                _mm512_stream_ps(o + j * ostep + 16 * b, acc[j][b]);                                                  \
            else if (b < TNB - 1)                                                                                     \
                _mm512_storeu_ps(o + j * ostep + 16 * b, acc[j][b]);                                                  \
            else                                                                                                      \
                _mm512_mask_storeu_ps(o + j * ostep + 16 * b, omask, acc[j][b]);                                      \
            if (rs) {                                                                                                 \
                rs[b] = _mm512_add_ps(rs[b], acc[j][b]);                                                              \
                rs[TNB + b] = _mm512_fmadd_ps(acc[j][b], acc[j][b], rs[TNB + b]);                                     \
            }                                                                                                         \
        }                                                                                                             \
}
DEFINE_LEAN_TILE(1, 8)
DEFINE_LEAN_TILE(1, 1)
DEFINE_LEAN_TILE(2, 6)
DEFINE_LEAN_TILE(2, 1)
DEFINE_LEAN_TILE(3, 4)
DEFINE_LEAN_TILE(3, 1)
DEFINE_LEAN_TILE(4, 4)
DEFINE_LEAN_TILE(4, 1)

/* One output row (n, z, y) of lean_tile_f32: the row's taps, the row's ends one voxel at a time, tiles between. */
#define TILE_FN2(NB, DX) lean_tile_##NB##_##DX
#define TILE_FN(NB, DX) TILE_FN2(NB, DX)
#define DEFINE_TILE_ROW(NB)                                                                                     \
static void tile_row_##NB(float *restrict po, grid_t go, const float *restrict in, grid_t gi, int64_t row,     \
                          const float *wt, const float *bias, const float *taps, const float *zeros,          \
                          const int64_t *axis, const int64_t *sign, int nt0, int64_t cin, int64_t cout,       \
                          int64_t m, int64_t mul, __m512 *rs, int stream) {                                   \
    int64_t n = row / (go.d * go.h), z = (row / go.h) % go.d, y = row % go.h;                                 \
    const float *crow = in + ((n * gi.d + z * mul) * gi.h + y * mul) * gi.w * gi.ld;                          \
    const float *base[6], *tp[6];                                                                             \
    int64_t xoff[6];                                                                                          \
    int nt = 0, nf = 0;                                                                                       \
    const float *far[4];                                                                                      \
    for (int k = 0; k < nt0; k++) {                                                                           \
        int64_t rz = source_coord(z, mul, 1, axis[k] == 0 ? sign[k] : 0, gi.d);                               \
        int64_t ry = source_coord(y, mul, 1, axis[k] == 1 ? sign[k] : 0, gi.h);                               \
        if (rz < 0 || ry < 0) continue; /* a row outside the input: the tap adds nothing to this row */       \
        base[nt] = in + ((n * gi.d + rz) * gi.h + ry) * gi.w * gi.ld;                                         \
        if (mul == 1 && far_row(axis[k], gi.h, gi.w, gi.ld)) far[nf++] = base[nt]; /* stride 2: no gain */   \
        xoff[nt] = axis[k] == 2 ? sign[k] : 0;                                                                \
        tp[nt++] = taps + k * NB * 16;                                                                        \
    }                                                                                                         \
    int64_t mb = (m + 15) / 16, sstep = mul * gi.ld;                                                          \
    __mmask16 mmask = lane_mask(m - 16 * (mb - 1)), omask = lane_mask(cout - 16 * (NB - 1));                  \
    /* x in [lo, hi): every x-tap inside the input (x * mul - 1 >= 0 and x * mul + 1 < gi.w) */               \
    int64_t lo = go.w > 1 ? 1 : go.w, hi = gi.w >= 2 ? (gi.w - 2) / mul + 1 : 0;                             \
    if (hi > go.w) hi = go.w;                                                                                 \
    if (hi < lo) hi = lo;                                                                                     \
    const float *tk[6];                                                                                       \
    /* The common case of 16 channels, every tap row inside, no bias or statistics, runs the tile with constant   \
     * arguments, so its channel, tap, mask, bias and statistics tests fold away: forward through lean_conv,     \
     * in-process A/B in both orders on the 2-core AMD EPYC, two threads, 0.95x the time at 3D 64^3 and 2D 512^2  \
     * (one thread: unchanged). */                                                                            \
    int full = NB == 1 && nt == nt0 && (nt0 == 6 || nt0 == 4) && cin == 16 && m == 16 && cout == 16 && !bias && \
               !rs && sstep == 16 && go.ld == 16;                                                             \
    for (int64_t x = 0; x < go.w;) {                                                                          \
        /* the interior's last partial tile: a whole tile ending at hi, recomputing (identically) voxels already \
         * stored, instead of up to TILE - 1 single voxels; not with stats, which would count them twice */     \
        if (!rs && x >= lo && x < hi && x + TILE_##NB > hi && hi - lo >= TILE_##NB) x = hi - TILE_##NB;        \
        if (x >= lo && x + TILE_##NB <= hi) {                                                                      \
            for (int k = 0; k < nt; k++) tk[k] = base[k] + (x * mul + xoff[k]) * gi.ld;                       \
            for (int k = 0; k < nf; k++) /* each line of the tile PF_DIST tiles ahead in the far tap rows */    \
                for (int64_t f = 0; f < TILE_##NB * sstep; f += 16)                                           \
                    _mm_prefetch((const char *)(far[k] + (x + PF_DIST * TILE_##NB) * sstep + f), _MM_HINT_T0); \
            if (full && stream) /* constant arguments: the tile's tests fold away (see full) */                 \
                TILE_FN(NB, TILE_##NB)(po + x * 16, 16, crow + x * 16, 16, tk, tp, nt0 == 6 ? 6 : 4, wt, NULL, 16, \
                                       1, 0xFFFF, 0xFFFF, NULL, 1);                                           \
            else if (full)                                                                                    \
                TILE_FN(NB, TILE_##NB)(po + x * 16, 16, crow + x * 16, 16, tk, tp, nt0 == 6 ? 6 : 4, wt, NULL, 16, \
                                       1, 0xFFFF, 0xFFFF, NULL, 0);                                           \
            else                                                                                              \
                TILE_FN(NB, TILE_##NB)(po + x * go.ld, go.ld, crow + x * sstep, sstep, tk, tp, nt, wt, bias,   \
                                       cin, mb, mmask, omask, rs, stream);                                    \
            x += TILE_##NB;                                                                                    \
        } else {                                                                                              \
            for (int k = 0; k < nt; k++) {                                                                    \
                int64_t rx = x * mul + xoff[k];                                                               \
                tk[k] = rx >= 0 && rx < gi.w ? base[k] + rx * gi.ld : zeros;                                  \
            }                                                                                                 \
            lean_tile_##NB##_1(po + x * go.ld, go.ld, crow + x * sstep, sstep, tk, tp, nt, wt, bias, cin, mb, \
                               mmask, omask, rs, 0);                                                                   \
            x++;                                                                                              \
        }                                                                                                     \
    }                                                                                                         \
}
/* Tiles ahead that a row's tap rows at least PF_BYTES from its centre row are prefetched (0: not at all): those rows
 * (the z-taps' in 3D, the y-taps' of wide 2D rows) were read a plane or a long row earlier, so they come from L2. On
 * a 2-core AMD EPYC (Zen 4), in-process A/B, one thread: 3D 64^3 forward at 16-64 channels 0.92-0.95x the time,
 * 2D 512^2 at 16 and 32 channels 0.87-0.95x and 0.83-0.89x. */
#ifndef PF_DIST
#define PF_DIST 2
#endif
#ifndef PF_BYTES
#define PF_BYTES 16384
#endif
/* Whether the rows of a tap along axis (0: z, 1: y, 2: x) lie at least PF_BYTES from the row being computed, on a
 * stride-1 grid of h x w voxels of ld floats: then they come from L2 and are worth prefetching (lean_tile_f32's
 * rows in tiles PF_DIST ahead, lean_bwd_f32's one line per voxel BPF ahead). */
static inline int far_row(int64_t axis, int64_t h, int64_t w, int64_t ld) {
    return PF_DIST && axis != 2 && (axis == 0 ? h * w : w) * ld * (int64_t)sizeof(float) >= PF_BYTES;
}
/* voxels per tile for NB blocks of outputs: DX * NB accumulators, with W's NB vectors, fit the 32 registers */
#define TILE_1 8
#define TILE_2 6
#define TILE_3 4
#define TILE_4 4
DEFINE_TILE_ROW(1)
DEFINE_TILE_ROW(2)
DEFINE_TILE_ROW(3)
DEFINE_TILE_ROW(4)

/* out = 1x1(in) + stencil(in) (+ bias), as lean_direct_f32 with div = 1 and cout <= 64, but wt (cin, NB * 16),
 * taps (nt, NB * 16) and bias (NB * 16) zero-padded to NB = ceil(cout / 16) blocks; stats as lean_direct's.
 * stream: write the tiles with non-temporal stores (for outputs the caches cannot keep: no read of each line before
 * it is written); the caller guarantees out 64-byte aligned and go.ld == cout, a multiple of 16. */
void lean_tile_f32(float *out, grid_t go, const float *in, grid_t gi, const float *wt, const float *bias,
                   const float *taps, const float *zeros, const int64_t *axis, const int64_t *sign, int64_t ntaps,
                   int64_t cin, int64_t cout, int64_t m, int64_t mul, double *stats, int stream, int nthreads) {
    int64_t rows = go.n * go.d * go.h, nb = (cout + 15) / 16;
    _Pragma("omp parallel num_threads(nthreads)")
    {
        double *restrict acc = stats ? stats + (int64_t)omp_get_thread_num() * 2 * go.n * cout : NULL;
        __m512 rs[8];
        float sums[128];
        _Pragma("omp for schedule(static)")
        for (int64_t row = 0; row < rows; row++) {
            for (int b = 0; b < 8; b++) rs[b] = _mm512_setzero_ps();
            float *po = out + row * go.w * go.ld;
            __m512 *r = stats ? rs : NULL;
            if (nb == 1)
                tile_row_1(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            else if (nb == 2)
                tile_row_2(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            else if (nb == 3)
                tile_row_3(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            else
                tile_row_4(po, go, in, gi, row, wt, bias, taps, zeros, axis, sign, ntaps, cin, cout, m, mul, r,
                           stream);
            if (acc) {
                int64_t n = row / (go.d * go.h);
                for (int b = 0; b < 2 * nb; b++) _mm512_storeu_ps(sums + 16 * b, rs[b]);
                for (int64_t c = 0; c < cout; c++) {
                    acc[n * cout + c] += sums[c];
                    acc[(go.n + n) * cout + c] += sums[16 * nb + c];
                }
            }
        }
        if (stream) _mm_sfence(); /* the streamed stores are visible to every thread after the region */
    }
}

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

/* bwd_tile_full's prefetch distance in voxels. In-process A/B of whole forward + backward passes through lean_conv,
 * 3D 64^3, 16 channels, two threads, both orders: 16 and 64 voxels each 0.96x the time of none. */
#ifndef FPD
#define FPD 64
#endif
/* bwd_tile_16 for the common case, straight-line: 16 channels in and out with 16 floats a voxel, every tap inside,
 * the taps in _taps' order (-e, +e per axis; 4 in 2D, 6 in 3D). The x-taps are the centre's neighbours (+-16 floats),
 * so only the y- and z-rows need pointers: gk the adjoint taps' rows of g (k < nt - 2), xk[k] (k odd) x's rows at
 * +e. The same sums in the same order as bwd_tile_16, whose tests on whole tiles it answers; GCC does not unswitch
 * bwd_tile_16's per-channel and per-tap tests out of the voxel loop (about 190 instructions and 37 branches a voxel
 * against 84 and 1 here). In-process A/B on the 2-core AMD EPYC, one thread, 16 x 64^2 (in L3): the backward in
 * 0.85x the time; at 64^3 0.94x; a whole forward + backward through lean_conv at 32^3-64^3, two threads,
 * 0.94-1.0x. */
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
#else
#define LEAN_SIMD 0
#endif

/* Whether this build has lean_tile_f32, lean_wgrad_f32 and lean_bwd_f32 (AVX-512): 1, else 0. */
int lean_simd(void) { return LEAN_SIMD; }

/* Instance norm on channels-last (N, V, C) data, the other bandwidth-bound layer of a lean network.
 * channel_sums: sa[n, c] = sum_v a[n, v, c] and sab[n, c] = sum_v a[n, v, c] * b[n, v, c] (b = a gives the
 * second moment; a = dy, b = x gives the sums of the backward pass). Blocks of voxels are summed in A, then
 * added to float64 partial sums, one row of (2, N, C) per thread, zeroed and reduced by the caller.
 * Coefficients p, q, r (per (n, c), (N, C)) are of the accumulator type A.
 * affine2: out = p * u + q * v + r; v may be NULL (q unused).
 * norm_act: out = act(p * u + r) with act(t) = t > 0 ? t : slope * t (slope 1: none, 0: ReLU); out may be u
 *   (in place: the norm and the activation of a block in one read and one write of its output).
 * norm_act_grad_sums: with g = da * act'(p * z + r), sg[n, c] = sum_v g and sgz[n, c] = sum_v g * z: what the
 *   norm's backward needs, read from the saved pre-norm z and the incoming gradient in one pass.
 * norm_act_grad: out = P * g + Q * z + R with g as above (the norm's input gradient); out may be da or z. */
#define NORM_BLOCK 64
#define DEFINE_NORM(T, A, SUFFIX)                                                                               \
void channel_sums_##SUFFIX(double *restrict partial, const T *restrict a, const T *restrict b, int64_t n,    \
                           int64_t v, int64_t c, int nthreads) {                                              \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * 2 * n * c;                           \
        A *restrict bs = malloc(sizeof(A) * 2 * c);                                                           \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t job = 0; job < n * blocks; job++) {                                                      \
            int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                       \
            int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                           \
            for (int64_t k = 0; k < 2 * c; k++) bs[k] = 0;                                                    \
            block_sums_##SUFFIX(bs, a + (i * v + v0) * c, b + (i * v + v0) * c, v1 - v0, c);                  \
            for (int64_t k = 0; k < c; k++) {                                                                 \
                acc[i * c + k] += bs[k];                                                                      \
                acc[(n + i) * c + k] += bs[c + k];                                                            \
            }                                                                                                 \
        }                                                                                                     \
        free(bs);                                                                                             \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void affine2_##SUFFIX(T *out, const T *u, const T *v_, const A *p, const A *q, const A *r, int64_t n,        \
                      int64_t v, int64_t c, int nthreads) {                                                   \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t job = 0; job < n * blocks; job++) {                                                          \
        int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                           \
        int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                               \
        const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                           \
        for (int64_t row = i * v + v0; row < i * v + v1; row++) {                                             \
            const T *restrict pu = u + row * c;                                                               \
            T *restrict po = out + row * c;                                                                   \
            if (v_) {                                                                                         \
                const T *restrict pv = v_ + row * c;                                                          \
                const A *restrict pq = q + i * c;                                                             \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++)                                                               \
                    po[k] = STORE_##SUFFIX(pp[k] * LOAD_##SUFFIX(pu[k]) + pq[k] * LOAD_##SUFFIX(pv[k]) + pr[k]); \
            } else {                                                                                          \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++) po[k] = STORE_##SUFFIX(pp[k] * LOAD_##SUFFIX(pu[k]) + pr[k]); \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void norm_act_##SUFFIX(T *out, const T *u, const A *p, const A *r, A slope, int64_t n, int64_t v, int64_t c,  \
                       int nthreads) {                                                                        \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t job = 0; job < n * blocks; job++) {                                                          \
        int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                           \
        int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                               \
        const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                           \
        for (int64_t row = i * v + v0; row < i * v + v1; row++) {                                             \
            row_norm_act_##SUFFIX(out + row * c, u + row * c, pp, pr, slope, c);                              \
        }                                                                                                     \
    }                                                                                                         \
}                                                                                                             \
                                                                                                              \
void norm_act_grad_sums_##SUFFIX(double *restrict partial, const T *restrict da, const T *restrict z,        \
                                 const A *restrict p, const A *restrict r, A slope, int64_t n, int64_t v,    \
                                 int64_t c, int nthreads) {                                                   \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel num_threads(nthreads)")                                                             \
    {                                                                                                         \
        double *restrict acc = partial + (int64_t)omp_get_thread_num() * 2 * n * c;                           \
        A *restrict bs = malloc(sizeof(A) * 2 * c);                                                           \
        _Pragma("omp for schedule(static)")                                                                   \
        for (int64_t job = 0; job < n * blocks; job++) {                                                      \
            int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                       \
            int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                           \
            const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                       \
            for (int64_t k = 0; k < 2 * c; k++) bs[k] = 0;                                                    \
            for (int64_t j = v0; j < v1; j++) {                                                               \
                const T *restrict pa = da + (i * v + j) * c, *restrict pz = z + (i * v + j) * c;              \
                _Pragma("omp simd")                                                                           \
                for (int64_t k = 0; k < c; k++) {                                                             \
                    A zk = LOAD_##SUFFIX(pz[k]);                                                              \
                    A g = LOAD_##SUFFIX(pa[k]) * (pp[k] * zk + pr[k] > 0 ? (A)1 : slope);                     \
                    bs[k] += g;                                                                               \
                    bs[c + k] += g * zk;                                                                      \
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
void norm_act_grad_##SUFFIX(T *out, const T *da, const T *z, const A *p, const A *r, A slope, const A *P,     \
                            const A *Q, const A *R, int64_t n, int64_t v, int64_t c, int nthreads) {          \
    int64_t blocks = (v + NORM_BLOCK - 1) / NORM_BLOCK;                                                       \
    _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                        \
    for (int64_t job = 0; job < n * blocks; job++) {                                                          \
        int64_t i = job / blocks, v0 = (job % blocks) * NORM_BLOCK;                                           \
        int64_t v1 = v0 + NORM_BLOCK < v ? v0 + NORM_BLOCK : v;                                               \
        const A *restrict pp = p + i * c, *restrict pr = r + i * c;                                           \
        const A *restrict PP = P + i * c, *restrict QQ = Q + i * c, *restrict RR = R + i * c;                 \
        for (int64_t row = i * v + v0; row < i * v + v1; row++) {                                             \
            const T *pa = da + row * c, *pz = z + row * c;                                                    \
            T *po = out + row * c;                                                                            \
            _Pragma("omp simd")                                                                               \
            for (int64_t k = 0; k < c; k++) {                                                                 \
                A zk = LOAD_##SUFFIX(pz[k]);                                                                  \
                A g = LOAD_##SUFFIX(pa[k]) * (pp[k] * zk + pr[k] > 0 ? (A)1 : slope);                         \
                po[k] = STORE_##SUFFIX(PP[k] * g + QQ[k] * zk + RR[k]);                                       \
            }                                                                                                 \
        }                                                                                                     \
    }                                                                                                         \
}

DEFINE_NORM(float, float, f32)
DEFINE_NORM(double, double, f64)
DEFINE_NORM(uint16_t, float, bf16)

/* Linear interpolation of channels-last (N, Di, Hi, Wi, C) data to (N, Do, Ho, Wo, C) (2D: D = 1), for the decoder's
 * upsampling: ATen's bfloat16 kernel converts element by element and took 3.4x the time of a copy of its output.
 * Per output coordinate along each axis the caller gives the two source indices and their weights (ATen's rule
 * for align_corners=False): iz, iy, ix (2 * Do, 2 * Ho, 2 * Wo) int64 and wz, wy, wx the same in A. The
 * eight products are summed in A and rounded once. row_lerp: one output row of w voxels from four source rows
 * (weights r[4] for the (z, y) pairs). */
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
