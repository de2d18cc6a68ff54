/* The CPU kernel library as one translation unit: each file below does one job, and compiling them together
 * keeps GCC's inlining across them (the AVX-512 backward reuses the forward tile's rows) without link-time
 * optimisation. Build: cc -O3 -march=native -fopenmp -shared -fPIC leanseg_cpu.c (flags: leanseg/nn/_cext.py).
 * The interface and its conventions are in leanseg_cpu.h. */
#include "common.h"

/* Which bf16 loops this build has: 1 for AVX512-BF16, 0 for the portable ones. */
int bf16_simd(void) { return BF16_SIMD; }

/* Whether this build has lean_tile_f32, lean_wgrad_f32 and lean_bwd_f32 (AVX-512): 1, else 0. */
int lean_simd(void) { return LEAN_SIMD; }

#include "lean_forward.c"      /* stencil_gather_*, lean_direct_* */
#include "lean_tiles_avx512.c" /* lean_tile_f32 */
#include "lean_backward.c"     /* stencil_grad_*, lean_wgrad_f32, lean_bwd_f32 */
#include "norm_act.c"          /* channel_sums_*, affine2_*, norm_act_*, norm_act_grad_sums_*, norm_act_grad_* */
#include "upsample.c"          /* upsample_linear_* */
#include "stitch.c"            /* stitch_add_* */
