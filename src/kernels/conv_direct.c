/* Direct 3x3 convolution (stride 1 or 2, up to 64 channels), one image at a time (used by
 * conv.c); and 1x1 convolutions at stride 2 or more (the pointwise section at the end).
 *
 * Why: the 3x3 convolutions of a CIFAR/MNIST ResNet have 16 to 64 channels on 7x7 to
 * 32x32 planes. im2col + sgemm writes a column matrix 9x the input, which OpenBLAS then
 * packs once more; with such short GEMMs that traffic and the packing cost about as much
 * as a third of the multiply-adds (perf on a resnet20 step: sgemm kernel 45%, im2col and
 * its memcpy 17%, OpenBLAS packing 15%). Here the input is copied once into a zero-padded
 * plane and the multiply-adds read it in place.
 *
 * Vectorized over output channels, 8 to a lane group (AVX2 + FMA; built without them, the
 * kernel is left out and every convolution takes im2col + sgemm): an output pixel's 8 channels
 * are one vector, the input pixel is broadcast, the weights of (ci, kh, kw) for 8 output
 * channels are one vector of a packed copy of the weights. Register block: 2 vectors of
 * output channels x 6 output pixels = 12 accumulators. Pixels are numbered flat over the
 * output plane (a block may span two rows), each with its offset into the padded plane,
 * so 7x7 outputs do not waste lanes.
 *
 * Three uses:
 *   forward   y = conv(x, W)              packed weights (Cout/8, Cin, 3, 3, 8)
 *   dinp      (stride 1) dx = conv(dy, W') with W' the weights transposed and rotated by 180
 *             degrees and padding 2 - pad: the same kernel (packed (Cin/8, Cout, 3, 3, 8));
 *             at stride 2 four phase correlations of dy with subsets of those taps (s2_dinp,
 *             below; the kernel with a tap list, core_tl); with input channels not a multiple
 *             of 8 conv.c computes it by GEMM + col2im
 *   dweight   dW[co][ci][kh][kw] = sum_p dy[co][p] * xpad[ci][p + kh*Wp + kw]: vectors
 *             of 8 output channels of dy (transposed to (P, Cout)) times broadcasts of
 *             the input; 9 accumulators, one per tap.
 * At stride 1 with 32 to 64 channels, forward, dinp and dweight take Winograd F(2x2, 3x3)
 * instead (below, wino_*; pn_dconv_winograd_enable, pn_dconv_winograd_dw_enable).
 * Sums are in float, as in the GEMM this replaces; the weight gradient is summed in float
 * over a thread's images (packed layout, or Winograd's untransformed 16 per channel pair),
 * and pn_dconv_dw_reduce adds the threads' sums in double (and transforms Winograd's). */
#include <stddef.h>
#include <string.h>

#include "layers.h"

static int dc_enabled = 1;
static int s2_enabled = 1; /* the stride-2 input gradient and the 1x1 strided kernel */

void pn_dconv_enable(int on) { dc_enabled = on != 0; }
void pn_conv_stride2_enable(int on) { s2_enabled = on != 0; }

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

enum { DC_K = 3, DC_T = 9, DC_NP = 6 };

/* Up to 64 channels: there the direct kernel ran at 0.97x to 1.42x of im2col + sgemm in
 * isolation (bench/bench_conv.c on resnet20's shapes, mostly 1.1x to 1.3x; more in a whole
 * training step, docs/RESULTS.md); at 128 to 512 channels sgemm's blocking wins or ties
 * (bench_conv -s ...: 0.74x to 1.15x), so those stay on the GEMM. */
int pn_dconv_ok(const pn_conv_shape *s)
{
    return dc_enabled && s->KH == DC_K && s->KW == DC_K && (s->stride == 1 || s->stride == 2) &&
           s->groups == 1 && s->pad <= 2 && s->Cout % 8 == 0 && s->Cin <= 64 && s->Cout <= 64;
}

/* The input gradient by the direct kernel needs input channels in multiples of 8 (its
 * output channels); at stride 1 it is a convolution of dout, at stride 2 four (the phases,
 * s2_dinp below, unless pn_conv_stride2_enable(0)). */
int pn_dconv_dinp_ok(const pn_conv_shape *s)
{
    return pn_dconv_ok(s) && (s->stride == 1 || s2_enabled) && s->Cin % 8 == 0;
}

/* Padded plane of an input of H x W with padding pad (all sides). */
static size_t pplane(int H, int W, int pad) { return (size_t)(H + 2 * pad) * (size_t)(W + 2 * pad); }

static int out_size(int n, int pad, int st) { return (n + 2 * pad - DC_K) / st + 1; }

/* Zero C padded planes of Hq x Wq. The borders stay zero because pad_copy writes
 * interiors only. */
static void pad_zero(float *xp, int C, int Hq, int Wq)
{
    memset(xp, 0, (size_t)C * Hq * Wq * sizeof(float));
}

/* x (C, H, W) -> interior of xp (C, Hq, Wq) at row and column pad (Hq >= H + 2 pad,
 * Wq >= W + 2 pad: the Winograd path's planes have a row and a column more when the
 * output size is odd). */
static void pad_copy(float *xp, const float *x, int C, int H, int W, int pad, int Hq, int Wq)
{
    const int Wp = Wq;
    const size_t ps = (size_t)Hq * Wq;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++) {
            /* rows of 7 to 32 floats: an inline loop, not a memcpy call per row */
            float *d = xp + c * ps + (size_t)(h + pad) * Wp + pad;
            const float *r = x + ((size_t)c * H + h) * W;
            int i = 0;
            for (; i + 8 <= W; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(r + i));
            if (i + 4 <= W) { /* 7 and 14 wide: 4 + 3, 8 + 4 + 2 */
                _mm_storeu_ps(d + i, _mm_loadu_ps(r + i));
                i += 4;
            }
            for (; i < W; i++) d[i] = r[i];
        }
}

/* The interior of xp from image n of src (or from x): pad_copy or the source's planes. */
static void pad_fill(float *xp, const float *x, const pn_conv_src *src, int n, int C, int H, int W,
                     int pad, int Hq, int Wq)
{
    if (!src) {
        pad_copy(xp, x, C, H, W, pad, Hq, Wq);
        return;
    }
    const int Wp = Wq;
    const size_t ps = (size_t)Hq * Wq;
    for (int c = 0; c < C; c++) src->plane(src->ctx, n, c, xp + c * ps + (size_t)pad * Wp + pad, Wp);
}

/* r[j][l] -> r[l][j] for an 8x8 block of floats. */
static inline void transpose8(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

/* Pixel j's 8 channels in r_j (j < 6) -> channel l's pixels 0..7 at y + l * ld (pixels 6
 * and 7 are written as zeros: the caller's next block overwrites them). */
static inline void store8x6(float *y, size_t ld, __m256 r0, __m256 r1, __m256 r2, __m256 r3,
                            __m256 r4, __m256 r5)
{
    __m256 r[8] = { r0, r1, r2, r3, r4, r5, _mm256_setzero_ps(), _mm256_setzero_ps() };
    transpose8(r);
    for (int l = 0; l < 8; l++) _mm256_storeu_ps(y + l * ld, r[l]);
}

/* The same for the last block of a plane: only pixels 0..np-1 of each channel. */
static inline void store8x6_masked(float *y, size_t ld, int np, __m256 r0, __m256 r1, __m256 r2,
                                   __m256 r3, __m256 r4, __m256 r5)
{
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(np), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 r[8] = { r0, r1, r2, r3, r4, r5, _mm256_setzero_ps(), _mm256_setzero_ps() };
    transpose8(r);
    for (int l = 0; l < 8; l++) _mm256_maskstore_ps(y + l * ld, mask, r[l]);
}

/* One step of the 16 x 6 register blocks (core, the Winograd GEMMs, dweight): for j = 0..5,
 * b = broadcast(*X(j)), a<j>0 += v0 * b, a<j>1 += v1 * b; a00..a51, v0 and v1 in scope. */
#define BLOCK16X6_STEP(X)                                                                   \
    do {                                                                                    \
        __m256 b_;                                                                          \
        b_ = _mm256_broadcast_ss(X(0)); a00 = _mm256_fmadd_ps(v0, b_, a00); a01 = _mm256_fmadd_ps(v1, b_, a01); \
        b_ = _mm256_broadcast_ss(X(1)); a10 = _mm256_fmadd_ps(v0, b_, a10); a11 = _mm256_fmadd_ps(v1, b_, a11); \
        b_ = _mm256_broadcast_ss(X(2)); a20 = _mm256_fmadd_ps(v0, b_, a20); a21 = _mm256_fmadd_ps(v1, b_, a21); \
        b_ = _mm256_broadcast_ss(X(3)); a30 = _mm256_fmadd_ps(v0, b_, a30); a31 = _mm256_fmadd_ps(v1, b_, a31); \
        b_ = _mm256_broadcast_ss(X(4)); a40 = _mm256_fmadd_ps(v0, b_, a40); a41 = _mm256_fmadd_ps(v1, b_, a41); \
        b_ = _mm256_broadcast_ss(X(5)); a50 = _mm256_fmadd_ps(v0, b_, a50); a51 = _mm256_fmadd_ps(v1, b_, a51); \
    } while (0)

/* The core: y (Cout, Ho*Wo) = sum over (ci, t) of wp x xp at stride st, the taps t < nt at
 * offsets tap[t] in a plane: y[co][p] = sum_ci sum_t wp[co/8][ci][t][co%8] *
 * xp[ci * Hp * Wp + off(p) + tap[t]], off(p) = oh * st * Wp + ow * st, the sum over t inside
 * the sum over ci (a fixed order).
 * xp (Cin, Hp, Wp) padded input, every off(p) + tap[t] inside the plane (3x3:
 * (Ho - 1) * st + 3 <= Hp, same for W); wp (Cout/8, Cin, nt, 8).
 * Per block the fixed work (offsets, transposes, stores) is kept small, since with 8 or 16
 * input channels a block has only 72 or 144 steps of 12 multiply-adds: the pixel offsets
 * advance row by row without divisions, and the 8 channels of a vector go out as whole
 * 8-pixel stores (the 2 pixels past the block are written again by the next block; the
 * last block of a plane, which has no next block to fix them, uses masked stores). */
static inline __attribute__((always_inline)) void
core_tl(float *y, const float *xp, const float *wp, int Cin, int Cout, int Ho, int Wo, int Hp, int Wp,
        int st, const int *tap, int nt)
{
    const int P = Ho * Wo;
    const size_t ps = (size_t)Hp * Wp;
    for (int cb = 0; cb < Cout; cb += 16) {
        const int nv = Cout - cb >= 16 ? 2 : 1; /* vectors of 8 output channels */
        const float *w0 = wp + (size_t)(cb / 8) * Cin * nt * 8;
        const float *w1 = w0 + (size_t)Cin * nt * 8;
        int oh = 0, ow = 0; /* the first pixel of the block */
        for (int p0 = 0; p0 < P; p0 += DC_NP) {
            const int np = P - p0 < DC_NP ? P - p0 : DC_NP;
            int off[DC_NP];
            {
                int h = oh, w = ow;
                for (int j = 0; j < DC_NP; j++) {
                    off[j] = h * st * Wp + w * st;
                    if (j + 1 < np && ++w == Wo) { w = 0; h++; }
                }
                if (np == DC_NP) { oh = h; ow = w + 1; if (ow == Wo) { ow = 0; oh++; } }
            }
            /* the output lines 3 to 4 blocks ahead, for writing: the 8 or 16 rows of y go to
             * memory out of cache (an activation of the batch) in 32-byte pieces, and without
             * this the stores waited for each line (+10-15% on a 16-channel 28x28 forward from
             * memory, 2-4% on a whole step) */
            if (p0 + 24 < P) {
                const float *yq = y + (size_t)cb * P + p0 + 24;
                for (int l = 0; l < 8 * nv; l++) __builtin_prefetch(yq + (size_t)l * P, 1, 3);
            }
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                   a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            const float *wa = w0, *wb = nv == 2 ? w1 : w0;
            for (int ci = 0; ci < Cin; ci++) {
                const float *xc = xp + ci * ps;
                for (int t = 0; t < nt; t++, wa += 8, wb += 8) {
                    const float *xt = xc + tap[t];
                    const __m256 v0 = _mm256_loadu_ps(wa), v1 = _mm256_loadu_ps(wb);
#define DC_X(j) (xt + off[j])
                    BLOCK16X6_STEP(DC_X);
#undef DC_X
                }
            }
            /* (pixel, channel) -> (channel, pixel): 8x8 transposes (rows 6 and 7 unused) */
            float *yb = y + (size_t)cb * P + p0;
            if (p0 + 8 <= P) {
                store8x6(yb, (size_t)P, a00, a10, a20, a30, a40, a50);
                if (nv == 2) store8x6(yb + (size_t)8 * P, (size_t)P, a01, a11, a21, a31, a41, a51);
            } else {
                store8x6_masked(yb, (size_t)P, np, a00, a10, a20, a30, a40, a50);
                if (nv == 2) store8x6_masked(yb + (size_t)8 * P, (size_t)P, np, a01, a11, a21, a31, a41, a51);
            }
        }
    }
}

/* core_tl for a tap list known at run time only (the stride-2 input gradient's phases, the
 * 1x1 kernel); core_tl is inlined into core with its 9 taps as constants. */
static __attribute__((noinline)) void core_taps(float *y, const float *xp, const float *wp, int Cin,
                                                int Cout, int Ho, int Wo, int Hp, int Wp, int st,
                                                const int *tap, int nt)
{
    /* the tap counts of the uses as constants (the tap loop unrolled) */
    switch (nt) {
    case 1: core_tl(y, xp, wp, Cin, Cout, Ho, Wo, Hp, Wp, st, tap, 1); break;
    case 2: core_tl(y, xp, wp, Cin, Cout, Ho, Wo, Hp, Wp, st, tap, 2); break;
    case 4: core_tl(y, xp, wp, Cin, Cout, Ho, Wo, Hp, Wp, st, tap, 4); break;
    default: core_tl(y, xp, wp, Cin, Cout, Ho, Wo, Hp, Wp, st, tap, nt); break;
    }
}

/* The 3x3 convolution: core_tl with the 9 taps (kh, kw) in row-major order;
 * wp (Cout/8, Cin, 3, 3, 8). */
static void core(float *y, const float *xp, const float *wp, int Cin, int Cout, int Ho, int Wo,
                 int Hp, int Wp, int st)
{
    const int tap[DC_T] = { 0, 1, 2, Wp, Wp + 1, Wp + 2, 2 * Wp, 2 * Wp + 1, 2 * Wp + 2 };
    core_tl(y, xp, wp, Cin, Cout, Ho, Wo, Hp, Wp, st, tap, DC_T);
}

/* The first n (1 to 8) floats of v to d (no masked store: slow on some processors, e.g.
 * AMD Zen, where it took a third of the output transform's time). */
static inline void store_n(float *d, __m256 v, int n)
{
    if (n == 8) {
        _mm256_storeu_ps(d, v);
        return;
    }
    __m128 h = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(d, h);
        h = _mm256_extractf128_ps(v, 1);
        d += 4;
        n -= 4;
    }
    if (n >= 2) {
        _mm_storel_pi((__m64 *)d, h);
        h = _mm_movehl_ps(h, h);
        d += 2;
        n -= 2;
    }
    if (n) _mm_store_ss(d, h);
}

/* The core for few input channels (Cin < 8) at stride 1, e.g. the first layer of an image
 * network: there a block of core has only Cin * 9 steps for its fixed work (offsets, 8x8
 * transposes; resnet20's 1 -> 16 layer ran at a tenth of the kernel's rate), so instead 8
 * output pixels of a row share a vector: loads of the padded input row, the weight
 * broadcast, no transposes. Each output is the same chain of multiply-adds in the same
 * order (ci, then tap) as in core (carried from one input channel to the next through y,
 * exactly), so the same bits. Arguments as core's (Wp = Wo + 2). */
static void core_px(float *y, const float *xp, const float *wp, int Cin, int Cout, int Ho, int Wo,
                    int Hp, int Wp)
{
    const size_t ps = (size_t)Hp * Wp, P = (size_t)Ho * Wo;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int co = 0; co < Cout; co++) {
        float *yc = y + (size_t)co * P;
        for (int ci = 0; ci < Cin; ci++) { /* the chains go on through y from ci to ci + 1 */
            const float *wc = wp + ((size_t)(co / 8) * Cin + ci) * DC_T * 8 + co % 8;
            __m256 w[DC_T];
            for (int t = 0; t < DC_T; t++) w[t] = _mm256_broadcast_ss(wc + t * 8);
            for (int oh = 0; oh < Ho; oh++) {
                const float *x0 = xp + ci * ps + (size_t)oh * Wp, *x1 = x0 + Wp, *x2 = x1 + Wp;
                float *yr = yc + (size_t)oh * Wo;
                for (int ow = 0; ow < Wo; ow += 8) {
                    const int nw = Wo - ow < 8 ? Wo - ow : 8;
                    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nw), lane);
#define PX_LD(p) (nw == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m))
                    __m256 acc = ci == 0 ? _mm256_setzero_ps() : PX_LD(yr + ow);
                    acc = _mm256_fmadd_ps(w[0], PX_LD(x0 + ow), acc);
                    acc = _mm256_fmadd_ps(w[1], PX_LD(x0 + ow + 1), acc);
                    acc = _mm256_fmadd_ps(w[2], PX_LD(x0 + ow + 2), acc);
                    acc = _mm256_fmadd_ps(w[3], PX_LD(x1 + ow), acc);
                    acc = _mm256_fmadd_ps(w[4], PX_LD(x1 + ow + 1), acc);
                    acc = _mm256_fmadd_ps(w[5], PX_LD(x1 + ow + 2), acc);
                    acc = _mm256_fmadd_ps(w[6], PX_LD(x2 + ow), acc);
                    acc = _mm256_fmadd_ps(w[7], PX_LD(x2 + ow + 1), acc);
                    acc = _mm256_fmadd_ps(w[8], PX_LD(x2 + ow + 2), acc);
#undef PX_LD
                    if (nw == 8) _mm256_storeu_ps(yr + ow, acc);
                    else store_n(yr + ow, acc, nw);
                }
            }
        }
    }
}

/* ------------------------------------------------------- Winograd F(2x2, 3x3), stride 1
 *
 * A stride-1 3x3 convolution of Ci input channels into Co output channels (both multiples
 * of 8) on a plane of Ho x Wo outputs, in 2x2 output tiles (th x tw of them; a 7x7 output
 * has a last row and column of tiles half outside: the input plane gets one zero row and
 * column more, the tiles' extra outputs are computed and dropped). Per tile
 *   d (4x4 input patch at (2i, 2j) of the padded plane), V = B^T d B,
 *   g (3x3 weights), U = G g G^T (once per call, in the packing),
 *   M[xi] = sum over ci of U[xi] V[xi] (xi = 0..15: 16 GEMMs (Co x Ci) x (Ci x tiles)),
 *   Y (2x2) = A^T M A,
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5;
 * 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]: 16 multiply-adds per tile and channel pair instead
 * of 36. Layouts (channels in the vector lanes throughout, transposed at entry and exit):
 *   xq (Ci, Hq, Wq) padded planes, Hq = 2 th + 2, Wq = 2 tw + 2
 *   xt (Hq * Wq, Ci) the same, channels last
 *      (from x directly; from a pn_conv_src through xq)
 *   V  (16, TC, Ci) and M (16, TC, Co) (each xi padded by 16 floats) for a chunk of TC
 *      tiles, whole tile rows (so that V and M stay within about 150 KB, in L2)
 *   y  (Co, Ho*Wo) written by the output transform, 8 tiles x 8 channels transposed at a
 *      time
 *   U  (16, Co/8, Ci, 8) transformed packed weights
 * The GEMM's register block is that of core: 2 vectors of 8 output channels x 6 tiles. */

static int wino_mode = 1;

void pn_dconv_winograd_enable(int mode) { wino_mode = mode <= 0 ? 0 : mode >= 2 ? 2 : 1; }

/* Mode 1 (default): at 32 input and output channels or more only. With 16 (and 8) the
 * transforms cost about as much as the multiply-adds they save: bench_conv on a quiet
 * machine, 8 and 16 channels at 28x28 and 32x32, forward and backward 0.87x to 1.07x of the
 * direct kernel, mostly below 1 (docs/RESULTS.md), against 1.1x to 1.3x at 32 and 64. */
int pn_dconv_wino_ok(const pn_conv_shape *s)
{
    return wino_mode && pn_dconv_dinp_ok(s) && s->stride == 1 && (wino_mode == 2 || (s->Cin >= 32 && s->Cout >= 32));
}

static int wino_dw_on = 1;

void pn_dconv_winograd_dw_enable(int on) { wino_dw_on = on != 0; }

int pn_dconv_wino_dw_ok(const pn_conv_shape *s) { return wino_dw_on && pn_dconv_wino_ok(s); }

typedef struct {
    int Ho, Wo, th, tw, Hq, Wq, T, TC;
    size_t vs, ms; /* floats between the V[xi] (the M[xi]) */
    size_t xq, xt, V, M, total; /* offsets in floats */
} wino_geom;

/* The geometry for an input of Ci channels and Hi x Wi with padding pad, Co outputs. */
static wino_geom wino_plan(int Ci, int Co, int Hi, int Wi, int pad)
{
    wino_geom g;
    g.Ho = Hi + 2 * pad - 2;
    g.Wo = Wi + 2 * pad - 2;
    g.th = (g.Ho + 1) / 2;
    g.tw = (g.Wo + 1) / 2;
    g.Hq = 2 * g.th + 2;
    g.Wq = 2 * g.tw + 2;
    g.T = g.th * g.tw;
    /* chunks of whole tile rows, about 6 * 384 / (Ci + Co) tiles */
    const int tc = 6 * (384 / (Ci + Co) > 1 ? 384 / (Ci + Co) : 1), R = tc / g.tw > 1 ? tc / g.tw : 1;
    g.TC = (R < g.th ? R : g.th) * g.tw;
    const size_t plane = (size_t)Ci * g.Hq * g.Wq;
    g.xq = 0;
    g.xt = (plane + 15) & ~(size_t)15;
    g.V = g.xt + ((plane + 15) & ~(size_t)15);
    /* 16 floats more per xi: the 16 V[xi] (M[xi]) are read and written together, and at
     * strides of 4 KB (64 channels x 16 tiles) they would all fall in the same L1 sets */
    g.vs = (size_t)g.TC * Ci + 16;
    g.ms = (size_t)g.TC * Co + 16;
    g.M = g.V + 16 * g.vs;
    g.total = g.M + 16 * g.ms;
    return g;
}

/* Winograd F(2x2, 3x3)'s G (WG: the weight transform; its transpose transforms the weight
 * gradient back in pn_dconv_dw_reduce). */
static const double WG[4][3] = { { 1, 0, 0 }, { .5, .5, .5 }, { .5, -.5, .5 }, { 0, 0, 1 } };

/* g_j (3x3, element (k, l) at g_j[k * sk + l * sl]), j = 0..3 -> U[xi * ustride + j] =
 * (G g_j G^T)[xi], in double (4 pairs a vector) and rounded once. */
static void wino_wtrans4(float *U, size_t ustride, const float *const g[4], int sk, int sl)
{
    __m256d gv[3][3], t[4][3];
    for (int k = 0; k < 3; k++)
        for (int l = 0; l < 3; l++) {
            const int o = k * sk + l * sl;
            gv[k][l] = _mm256_setr_pd(g[0][o], g[1][o], g[2][o], g[3][o]);
        }
    for (int a = 0; a < 4; a++)
        for (int l = 0; l < 3; l++)
            t[a][l] = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(WG[a][0]), gv[0][l]),
                                                  _mm256_mul_pd(_mm256_set1_pd(WG[a][1]), gv[1][l])),
                                    _mm256_mul_pd(_mm256_set1_pd(WG[a][2]), gv[2][l]));
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            const __m256d u = _mm256_add_pd(_mm256_add_pd(_mm256_mul_pd(t[a][0], _mm256_set1_pd(WG[b][0])),
                                                          _mm256_mul_pd(t[a][1], _mm256_set1_pd(WG[b][1]))),
                                            _mm256_mul_pd(t[a][2], _mm256_set1_pd(WG[b][2])));
            _mm_storeu_ps(U + (size_t)(a * 4 + b) * ustride, _mm256_cvtpd_ps(u));
        }
}

/* xq (Ci, P) -> xt (P, Ci), Ci a multiple of 8. */
static void to_chlast(float *xt, const float *xq, int Ci, int P)
{
    for (int c0 = 0; c0 < Ci; c0 += 8) {
        const float *src = xq + (size_t)c0 * P;
        int p = 0;
        for (; p + 8 <= P; p += 8) {
            __m256 r[8];
            for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(src + (size_t)l * P + p);
            transpose8(r);
            for (int l = 0; l < 8; l++) _mm256_storeu_ps(xt + (size_t)(p + l) * Ci + c0, r[l]);
        }
        for (; p < P; p++)
            for (int l = 0; l < 8; l++) xt[(size_t)p * Ci + c0 + l] = src[(size_t)l * P + p];
    }
}

/* x (Ci, Hi, Wi) -> the interior of xt (Hq, Wq, Ci) at row and column pad (the padding
 * and the rest of the plane are left as they are: zero). 8 channels x 8 columns at a time,
 * the last columns of a row by masked loads. */
__attribute__((noinline)) static void pad_chlast(float *xt, const float *x, int Ci, int Hi, int Wi, int pad, int Wq)
{
    const size_t ps = (size_t)Hi * Wi;
    for (int c0 = 0; c0 < Ci; c0 += 8)
        for (int h = 0; h < Hi; h++) {
            const float *src = x + (size_t)c0 * ps + (size_t)h * Wi;
            if (c0 + 8 < Ci) { /* the next 8 planes, a 1/Hi share of them per row: 8 rows
                                * read side by side defeated the hardware prefetch (perf:
                                * a third of the Winograd weight gradient's time waiting on
                                * these loads, the input coming from L3 or memory) */
                const char *nb = (const char *)(x + (size_t)(c0 + 8) * ps);
                const size_t len = 8 * ps * sizeof(float);
                for (size_t o = len * h / Hi & ~(size_t)63; o < len * (h + 1) / Hi; o += 64)
                    _mm_prefetch(nb + o, _MM_HINT_T0);
            }
            if (c0 == 0 && h + 2 < Hi) /* the first planes: 2 rows ahead */
                for (int l = 0; l < 8; l++) {
                    const char *r = (const char *)(src + l * ps + 2 * Wi);
                    _mm_prefetch(r, _MM_HINT_T0);
                    _mm_prefetch(r + Wi * sizeof(float) - 1, _MM_HINT_T0);
                }
            float *dst = xt + ((size_t)(h + pad) * Wq + pad) * Ci + c0;
            for (int w = 0; w < Wi; w += 8) {
                const int nw = Wi - w < 8 ? Wi - w : 8;
                __m256 r[8];
                if (nw == 8)
                    for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(src + l * ps + w);
                else {
                    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nw), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                    for (int l = 0; l < 8; l++) r[l] = _mm256_maskload_ps(src + l * ps + w, m);
                }
                transpose8(r);
                for (int l = 0; l < nw; l++) _mm256_storeu_ps(dst + (size_t)(w + l) * Ci, r[l]);
            }
        }
}

/* V (16, TC, Ci) for tiles [t0, t0 + nt) from xt. */
__attribute__((noinline)) static void wino_itrans(float *V, const float *xt, const wino_geom *g, int Ci, int t0, int nt)
{
    const size_t xs = g->vs, rs = (size_t)g->Wq * Ci;
    for (int k = 0; k < nt; k++) {
        const int t = t0 + k, i = t / g->tw, j = t % g->tw;
        const float *base = xt + ((size_t)2 * i * g->Wq + 2 * j) * Ci;
        float *v = V + (size_t)k * Ci;
        for (int c0 = 0; c0 < Ci; c0 += 8) {
            __m256 r[4][4];
            /* columns: r[a][c] = (B^T d)[a][c] */
            for (int c = 0; c < 4; c++) {
                const float *b = base + (size_t)c * Ci + c0;
                const __m256 d0 = _mm256_loadu_ps(b), d1 = _mm256_loadu_ps(b + rs),
                             d2 = _mm256_loadu_ps(b + 2 * rs), d3 = _mm256_loadu_ps(b + 3 * rs);
                r[0][c] = _mm256_sub_ps(d0, d2);
                r[1][c] = _mm256_add_ps(d1, d2);
                r[2][c] = _mm256_sub_ps(d2, d1);
                r[3][c] = _mm256_sub_ps(d1, d3);
            }
            /* rows: V[a][b] = (r B)[a][b] */
            for (int a = 0; a < 4; a++) {
                float *o = v + (size_t)a * 4 * xs + c0;
                _mm256_storeu_ps(o, _mm256_sub_ps(r[a][0], r[a][2]));
                _mm256_storeu_ps(o + xs, _mm256_add_ps(r[a][1], r[a][2]));
                _mm256_storeu_ps(o + 2 * xs, _mm256_sub_ps(r[a][2], r[a][1]));
                _mm256_storeu_ps(o + 3 * xs, _mm256_sub_ps(r[a][1], r[a][3]));
            }
        }
    }
}

/* M[xi] (nt, Co) = V[xi] (nt, Ci) x U[xi]^T for the 16 xi; U (16, Co/8, Ci, 8).
 * noinline: inlined into wino_conv, GCC 12 kept the tile pointers on the stack (5 more loads
 * per 12 multiply-adds, ~15% slower). The transforms are kept apart too (profiles). */
__attribute__((noinline)) static void wino_gemm(float *M, const float *V, const float *U, const wino_geom *g, int Ci, int Co,
                      int nt)
{
    for (int xi = 0; xi < 16; xi++) {
        const float *Ux = U + (size_t)xi * Co * Ci, *Vx = V + (size_t)xi * g->vs;
        float *Mx = M + (size_t)xi * g->ms;
        for (int cb = 0; cb < Co; cb += 16) {
            const int nv = Co - cb >= 16 ? 2 : 1;
            const float *w0 = Ux + (size_t)(cb / 8) * Ci * 8, *w1 = nv == 2 ? w0 + (size_t)Ci * 8 : w0;
            for (int k0 = 0; k0 < nt; k0 += DC_NP) {
                const int np = nt - k0 < DC_NP ? nt - k0 : DC_NP;
                __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                       a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
                const float *wa = w0, *wb = w1;
#define WG_LOOP                                             \
    for (int ci = 0; ci < Ci; ci++, wa += 8, wb += 8) {     \
        const __m256 v0 = _mm256_loadu_ps(wa), v1 = _mm256_loadu_ps(wb); \
        BLOCK16X6_STEP(WG_X);                               \
    }
                if (np == DC_NP) { /* the 6 tiles' rows of V at one base and stride Ci */
                    const float *xb = Vx + (size_t)k0 * Ci;
                    const size_t ld = (size_t)Ci;
#define WG_X(j) (xb + (j) * ld + ci)
                    WG_LOOP
#undef WG_X
                } else { /* the last block: its last tile repeated */
                    const float *x[DC_NP];
                    for (int j = 0; j < DC_NP; j++) x[j] = Vx + (size_t)(k0 + (j < np ? j : np - 1)) * Ci;
#define WG_X(j) (x[j] + ci)
                    WG_LOOP
#undef WG_X
                }
#undef WG_LOOP
                const __m256 acc[2][DC_NP] = { { a00, a10, a20, a30, a40, a50 },
                                               { a01, a11, a21, a31, a41, a51 } };
                for (int j = 0; j < np; j++) {
                    float *m = Mx + (size_t)(k0 + j) * Co + cb;
                    _mm256_storeu_ps(m, acc[0][j]);
                    if (nv == 2) _mm256_storeu_ps(m + 8, acc[1][j]);
                }
            }
        }
    }
}

/* y (Co, Ho * Wo) for the tile rows [i0, i0 + rows) (the chunk's tiles, M (16, TC, Co)):
 * Y = A^T M A. Per 8 tiles of a row and 8 channels: the 2x2 outputs of each tile (8 channels
 * a vector), transposed to 8 tiles a vector and interleaved into 16 pixels of a row of y;
 * the pixels past Wo and the rows past Ho (partial tiles) are not written. */
__attribute__((noinline)) static void wino_otrans(float *y, const float *M, const wino_geom *g, int Co, int i0, int rows)
{
    const size_t xs = g->ms, P = (size_t)g->Ho * g->Wo;
    for (int ir = 0; ir < rows; ir++) {
        const int i = i0 + ir;
        for (int j0 = 0; j0 < g->tw; j0 += 8) {
            const int nj = g->tw - j0 < 8 ? g->tw - j0 : 8;
            const int nv = g->Wo - 2 * j0 < 16 ? g->Wo - 2 * j0 : 16; /* valid pixels */
            for (int c0 = 0; c0 < Co; c0 += 8) {
                __m256 o[2][2][8]; /* [r][s][tile] */
                for (int t = 0; t < 8; t++) {
                    if (t >= nj) {
                        o[0][0][t] = o[0][1][t] = o[1][0][t] = o[1][1][t] = _mm256_setzero_ps();
                        continue;
                    }
                    const float *m = M + ((size_t)ir * g->tw + j0 + t) * Co + c0;
                    __m256 r[2][4]; /* (A^T M)[r][b] */
                    for (int b = 0; b < 4; b++) {
                        const float *q = m + (size_t)b * xs;
                        const __m256 q0 = _mm256_loadu_ps(q), q1 = _mm256_loadu_ps(q + 4 * xs),
                                     q2 = _mm256_loadu_ps(q + 8 * xs), q3 = _mm256_loadu_ps(q + 12 * xs);
                        r[0][b] = _mm256_add_ps(_mm256_add_ps(q0, q1), q2);
                        r[1][b] = _mm256_sub_ps(_mm256_sub_ps(q1, q2), q3);
                    }
                    for (int a = 0; a < 2; a++) {
                        o[a][0][t] = _mm256_add_ps(_mm256_add_ps(r[a][0], r[a][1]), r[a][2]);
                        o[a][1][t] = _mm256_sub_ps(_mm256_sub_ps(r[a][1], r[a][2]), r[a][3]);
                    }
                }
                for (int a = 0; a < 2 && 2 * i + a < g->Ho; a++) {
                    transpose8(o[a][0]);
                    transpose8(o[a][1]);
                    float *dst = y + (size_t)c0 * P + (size_t)(2 * i + a) * g->Wo + 2 * j0;
                    for (int l = 0; l < 8; l++, dst += P) {
                        const __m256 lo = _mm256_unpacklo_ps(o[a][0][l], o[a][1][l]),
                                     hi = _mm256_unpackhi_ps(o[a][0][l], o[a][1][l]);
                        const __m256 p0 = _mm256_permute2f128_ps(lo, hi, 0x20),
                                     p1 = _mm256_permute2f128_ps(lo, hi, 0x31);
                        if (nv == 16) {
                            _mm256_storeu_ps(dst, p0);
                            _mm256_storeu_ps(dst + 8, p1);
                        } else if (nv > 8) {
                            _mm256_storeu_ps(dst, p0);
                            store_n(dst + 8, p1, nv - 8);
                        } else
                            store_n(dst, p0, nv);
                    }
                }
            }
        }
    }
}

/* xt (Hq, Wq, Ci) of scratch (geometry g) = the padded input x, or image n of src; first:
 * zero the padded planes. */
static void wino_input(float *scratch, const wino_geom *g, const float *x, const pn_conv_src *src, int n,
                       int Ci, int Hi, int Wi, int pad, int first)
{
    float *xq = scratch + g->xq, *xt = scratch + g->xt;
    if (src) { /* the source's planes, then transposed */
        if (first) pad_zero(xq, Ci, g->Hq, g->Wq);
        pad_fill(xq, x, src, n, Ci, Hi, Wi, pad, g->Hq, g->Wq);
        to_chlast(xt, xq, Ci, g->Hq * g->Wq);
    } else {
        if (first) pad_zero(xt, Ci, g->Hq, g->Wq);
        pad_chlast(xt, x, Ci, Hi, Wi, pad, g->Wq);
    }
}

/* y (Co, Ho*Wo) = the stride-1 convolution of an input of Ci x Hi x Wi (x, or image n of
 * src) padded by pad, with U from wino_pack. scratch: wino_plan(...).total floats; first:
 * zero the padded planes. */
static void wino_conv(float *y, const float *x, const pn_conv_src *src, int n, const float *U,
                      int Ci, int Co, int Hi, int Wi, int pad, float *scratch, int first)
{
    const wino_geom g = wino_plan(Ci, Co, Hi, Wi, pad);
    float *xt = scratch + g.xt, *V = scratch + g.V, *M = scratch + g.M;
    wino_input(scratch, &g, x, src, n, Ci, Hi, Wi, pad, first);
    const int R = g.TC / g.tw; /* tile rows per chunk */
    for (int i0 = 0; i0 < g.th; i0 += R) {
        const int rows = g.th - i0 < R ? g.th - i0 : R, nt = rows * g.tw;
        wino_itrans(V, xt, &g, Ci, i0 * g.tw, nt);
        wino_gemm(M, V, U, &g, Ci, Co, nt);
        wino_otrans(y, M, &g, Co, i0, rows);
    }
}

/* ------------------------------------------------------- Winograd weight gradient
 *
 * The forward's output is the trilinear form sum over tiles and xi of
 * (A^T .. A)(U[xi] V[xi]) with U = G g G^T, so its derivative in g is
 *   dW[co][ci] (3x3) = G^T [ sum over tiles of Ydy[xi] V[xi] ] G,  Ydy = A dy A^T,
 * dy the tile's 2x2 output gradient (zero past Ho and Wo: the half-outside tiles of odd
 * sizes), A = (A^T)^T (4x2), V = B^T d B exactly as in the forward. Per xi the sum over
 * tiles is a GEMM dWh[xi] (Co x Ci) += Ydy[xi] (Co x tiles) x V[xi]^T (tiles x Ci): 16
 * multiply-adds per tile and channel pair instead of 36. dWh (16, Co/8, Ci, 8) is summed
 * over a thread's images in float (it is linear, so the 4x4 -> 3x3 transform comes once,
 * in pn_dconv_dw_reduce, in double after the threads' sums). Layouts: the forward's scratch
 * (xq, xt, V; its M holds Ydy (16, TC, Co); larger chunks, wino_dw_plan), then dyt
 * (2 th, 2 tw, Co): dy channels last with a zero row and column more for odd sizes. */

/* Y (16, TC, Co) = A dy A^T for tiles [t0, t0 + nt) from dyt (2 th, 2 tw, Co). */
__attribute__((noinline)) static void wino_dytrans(float *Y, const float *dyt, const wino_geom *g, int Co, int t0,
                                                   int nt)
{
    const size_t ys = g->ms, rs = (size_t)2 * g->tw * Co;
    const __m256 z = _mm256_setzero_ps();
    for (int k = 0; k < nt; k++) {
        const int t = t0 + k, i = t / g->tw, j = t % g->tw;
        const float *base = dyt + ((size_t)2 * i * 2 * g->tw + 2 * j) * Co;
        float *y = Y + (size_t)k * Co;
        for (int c0 = 0; c0 < Co; c0 += 8) {
            const float *b = base + c0;
            const __m256 d00 = _mm256_loadu_ps(b), d01 = _mm256_loadu_ps(b + Co),
                         d10 = _mm256_loadu_ps(b + rs), d11 = _mm256_loadu_ps(b + rs + Co);
            /* columns: r[a][s] = (A dy)[a][s], A = [1 0; 1 1; 1 -1; 0 -1] */
            const __m256 r[4][2] = { { d00, d01 },
                                     { _mm256_add_ps(d00, d10), _mm256_add_ps(d01, d11) },
                                     { _mm256_sub_ps(d00, d10), _mm256_sub_ps(d01, d11) },
                                     { _mm256_sub_ps(z, d10), _mm256_sub_ps(z, d11) } };
            /* rows: Ydy[a][b] = (r A^T)[a][b] */
            for (int a = 0; a < 4; a++) {
                float *o = y + (size_t)a * 4 * ys + c0;
                _mm256_storeu_ps(o, r[a][0]);
                _mm256_storeu_ps(o + ys, _mm256_add_ps(r[a][0], r[a][1]));
                _mm256_storeu_ps(o + 2 * ys, _mm256_sub_ps(r[a][0], r[a][1]));
                _mm256_storeu_ps(o + 3 * ys, _mm256_sub_ps(z, r[a][1]));
            }
        }
    }
}

/* dWh[xi] (Co/8, Ci, 8) += sum over the nt tiles of Y[xi][t][co] V[xi][t][ci], for the 16 xi.
 * Register block: 2 vectors of 8 output channels (Y) x 6 input channels (broadcasts of V),
 * reduced over the tiles; a last group of fewer than 6 input channels is shifted back to
 * end at Ci (Ci >= 8) and stores only its new columns. (4 vectors x 3 input channels, no
 * ragged group at 32 and 64 channels, ran 15-30% slower.) */
__attribute__((noinline)) static void wino_dwgemm(float *dWh, const float *V, const float *Y, const wino_geom *g,
                                                  int Ci, int Co, int nt)
{
    for (int xi = 0; xi < 16; xi++) {
        const float *Vx = V + (size_t)xi * g->vs, *Yx = Y + (size_t)xi * g->ms;
        float *Dx = dWh + (size_t)xi * Co * Ci;
        for (int cb = 0; cb < Co; cb += 16) {
            const int nv = Co - cb >= 16 ? 2 : 1;
            const float *y0 = Yx + cb, *y1 = nv == 2 ? y0 + 8 : y0;
            float *dst[2] = { Dx + (size_t)(cb / 8) * Ci * 8, Dx + (size_t)(cb / 8 + 1) * Ci * 8 };
            for (int c = 0; c < Ci; c += DC_NP) {
                const int ci0 = Ci - c < DC_NP ? Ci - DC_NP : c, jlo = c - ci0;
                __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                       a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
                const float *ya = y0, *yb = y1, *xb = Vx + ci0;
                for (int k = 0; k < nt; k++, ya += Co, yb += Co, xb += Ci) {
                    const __m256 v0 = _mm256_loadu_ps(ya), v1 = _mm256_loadu_ps(yb);
#define DG_X(j) (xb + (j))
                    BLOCK16X6_STEP(DG_X);
#undef DG_X
                }
                const __m256 acc[2][DC_NP] = { { a00, a10, a20, a30, a40, a50 },
                                               { a01, a11, a21, a31, a41, a51 } };
                for (int v = 0; v < nv; v++)
                    for (int j = jlo; j < DC_NP; j++) {
                        float *p = dst[v] + (size_t)(ci0 + j) * 8;
                        _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), acc[v][j]));
                    }
            }
        }
    }
}

/* The forward's geometry with larger chunks: up to 64K floats (256 KB) of V and Ydy, whole
 * tile rows, or whole images where one image takes at most half of that (7x7: 16 tiles an
 * image, 2 images a chunk at 64 channels). The weight gradient's GEMM is reduced over the
 * chunk's tiles and adds its 12 accumulators to dWh at the end of each, so short chunks cost
 * (14x14: one chunk of 49 tiles instead of 35 + 14); per xi it reads only nt x (Ci + Co)
 * floats of V and Ydy. *G: images per chunk (0: chunks of tile rows of one image). */
static wino_geom wino_dw_plan(int Ci, int Co, int Hi, int Wi, int pad, int *G)
{
    wino_geom g = wino_plan(Ci, Co, Hi, Wi, pad);
    const long per_tile = 16L * (Ci + Co), cap = 65536;
    const long imgs = cap / (per_tile * g.T);
    *G = 0;
    int TC = g.TC;
    if (imgs >= 2) {
        *G = (int)imgs;
        TC = (int)imgs * g.T;
    } else {
        const long r = cap / (per_tile * g.tw);
        const int R = r < 1 ? 1 : r < g.th ? (int)r : g.th;
        if (R * g.tw > TC) TC = R * g.tw;
    }
    if (TC != g.TC) {
        g.TC = TC;
        g.vs = (size_t)g.TC * Ci + 16;
        g.ms = (size_t)g.TC * Co + 16;
        g.M = g.V + 16 * g.vs;
        g.total = g.M + 16 * g.ms;
    }
    return g;
}

/* Floats of wino_dw's scratch: the forward's (wino_dw_plan), then dyt. */
static size_t wino_dw_scratch(int Ci, int Co, int Hi, int Wi, int pad)
{
    int G;
    const wino_geom g = wino_dw_plan(Ci, Co, Hi, Wi, pad, &G);
    return g.total + (size_t)Co * 4 * g.th * g.tw;
}

/* dWh (16, Co/8, Ci, 8) = beta * dWh + the untransformed weight gradient of one image:
 * input Ci x Hi x Wi (x, or image n of src) padded by pad, dy (Co, Ho*Wo); beta 0 or 1.
 * scratch: wino_dw_scratch floats; k: the image's index among the call's images on this
 * scratch (0: zero the padded planes), last: the call's last image. With several images a
 * chunk (wino_dw_plan), image k's tiles go to slot k % G of V and Ydy and the GEMM runs
 * when the chunk is full or at the last image: dWh is complete after the last image only. */
static void wino_dw(float *dWh, float beta, const float *dy, const float *x, const pn_conv_src *src, int n,
                    int Ci, int Co, int Hi, int Wi, int pad, float *scratch, int k, int last)
{
    int G;
    const wino_geom g = wino_dw_plan(Ci, Co, Hi, Wi, pad, &G);
    float *xt = scratch + g.xt, *V = scratch + g.V, *Y = scratch + g.M, *dyt = scratch + g.total;
    wino_input(scratch, &g, x, src, n, Ci, Hi, Wi, pad, k == 0);
    if (k == 0) memset(dyt, 0, (size_t)Co * 4 * g.th * g.tw * sizeof(float));
    pad_chlast(dyt, dy, Co, g.Ho, g.Wo, 0, 2 * g.tw);
    if (beta == 0.0f) memset(dWh, 0, (size_t)16 * Co * Ci * sizeof(float));
    if (G) { /* whole images, G to a chunk */
        const int slot = k % G;
        wino_itrans(V + (size_t)slot * g.T * Ci, xt, &g, Ci, 0, g.T);
        wino_dytrans(Y + (size_t)slot * g.T * Co, dyt, &g, Co, 0, g.T);
        if (slot == G - 1 || last) wino_dwgemm(dWh, V, Y, &g, Ci, Co, (slot + 1) * g.T);
        return;
    }
    const int R = g.TC / g.tw;
    for (int i0 = 0; i0 < g.th; i0 += R) {
        const int rows = g.th - i0 < R ? g.th - i0 : R, nt = rows * g.tw;
        wino_itrans(V, xt, &g, Ci, i0 * g.tw, nt);
        wino_dytrans(Y, dyt, &g, Co, i0 * g.tw, nt);
        wino_dwgemm(dWh, V, Y, &g, Ci, Co, nt);
    }
}

/* Blocks [nb * part / nparts, nb * (part + 1) / nparts) of the nb = ceil(outputs / 8)
 * blocks of 8 output channels (of the forward: Cout; of dinp: Cin). */
static void part_range(int C, int part, int nparts, int *lo, int *hi)
{
    const int nb = (C + 7) / 8;
    *lo = nb * part / nparts * 8;
    *hi = nb * (part + 1) / nparts * 8;
    if (*hi > C) *hi = C;
}

/* w (Cout, Cin, 3, 3) -> U (16, Co/8, Ci, 8) for the forward (Co = Cout, Ci = Cin) or, bwd,
 * for the input gradient (Co = Cin, Ci = Cout, the weights rotated by 180 degrees).
 * 8 outputs x up to WP_CI inputs at a time into a local block, then copied out as one run per
 * xi: written pair by pair, the 16 values of a pair lay Co * Ci floats apart (16 KB at 64
 * channels, the same L1 set) and the pack of a 64-channel layer took 0.34 ms, serial. */
enum { WP_CI = 32 };
static void wino_pack(float *U, const float *w, int Cin, int Cout, int bwd, int part, int nparts)
{
    const int Co = bwd ? Cin : Cout, Ci = bwd ? Cout : Cin;
    const size_t us = (size_t)Co * Ci;
    float blk[16 * WP_CI * 8];
    int lo, hi;
    part_range(Co, part, nparts, &lo, &hi);
    for (int ob = lo; ob < hi; ob += 8)
        for (int i0 = 0; i0 < Ci; i0 += WP_CI) {
            const int ni = Ci - i0 < WP_CI ? Ci - i0 : WP_CI;
            for (int i = 0; i < ni; i++)
                for (int o4 = 0; o4 < 8; o4 += 4) {
                    const float *g[4];
                    for (int j = 0; j < 4; j++) {
                        const int o = ob + o4 + j, co = bwd ? i0 + i : o, ci = bwd ? o : i0 + i;
                        g[j] = w + ((size_t)co * Cin + ci) * DC_T + (bwd ? 8 : 0);
                    }
                    if (bwd) wino_wtrans4(blk + (size_t)i * 8 + o4, (size_t)ni * 8, g, -3, -1);
                    else wino_wtrans4(blk + (size_t)i * 8 + o4, (size_t)ni * 8, g, 3, 1);
                }
            for (int xi = 0; xi < 16; xi++)
                memcpy(U + xi * us + ((size_t)(ob / 8) * Ci + i0) * 8, blk + (size_t)xi * ni * 8,
                       (size_t)ni * 8 * sizeof(float));
        }
}

/* ------------------------------------------------ stride 2: the input gradient by phases
 *
 * dx[ci][h][w] = sum over (co, kh, kw) with h = 2 oh - pad + kh, w = 2 ow - pad + kw of
 * W[co][ci][kh][kw] dy[co][oh][ow]. Split dx by the parities (rh, rw) of (h, w): on the
 * phase plane of the pixels h = 2a + rh, w = 2b + rw only the taps with kh = rh + pad and
 * kw = rw + pad (mod 2) contribute, tap (kh, kw) from dy[co][a + dh][b + dw] with
 * dh = (rh + pad - kh) / 2, dw = (rw + pad - kw) / 2, both in {-1, 0, 1}: a stride-1
 * correlation of dy with 4, 2, 2 and 1 taps over the four phases (9 in all), which core_taps
 * computes on dy padded by a zero row and column before it and enough after (no wasted
 * multiply-adds, unlike dx = conv(dy dilated by zeros, W')). Per phase the taps in (kh, kw)
 * row-major order, inside the sum over co: a fixed order. The phases are written to
 * scratch, then interleaved into dx row by row.
 * Packed weights (pn_dconv_pack_bwd): the four phases (rh, rw) = (0,0), (0,1), (1,0), (1,1)
 * one after another, each (Cin/8, Cout, nt, 8), Cin * Cout * 9 floats in all. */

/* The taps (kh, kw) of phase (rh, rw) in row-major order; returns their count (1 to 4). */
static int s2_taps(int rh, int rw, int pad, int kh[4], int kw[4])
{
    int n = 0;
    for (int a = 0; a < DC_K; a++)
        for (int b = 0; b < DC_K; b++)
            if (((rh + pad - a) & 1) == 0 && ((rw + pad - b) & 1) == 0) {
                kh[n] = a;
                kw[n] = b;
                n++;
            }
    return n;
}

/* The padded dy plane: Hq x Wq, dy's interior at row and column 1. */
static void s2_plane(const pn_conv_shape *s, int Ho, int Wo, int *Hq, int *Wq)
{
    const int hr = (s->H + 1) / 2, wr = (s->W + 1) / 2; /* rows, columns of phase 0 */
    *Hq = (Ho > hr ? Ho : hr) + 2;
    *Wq = (Wo > wr ? Wo : wr) + 2;
}

/* Scratch of s2_dinp: the padded dy planes, then the phase planes (Cin * H * W floats). */
static size_t s2_scratch(const pn_conv_shape *s, int Ho, int Wo)
{
    int Hq, Wq;
    s2_plane(s, Ho, Wo, &Hq, &Wq);
    return (((size_t)s->Cout * Hq * Wq + 15) & ~(size_t)15) + (size_t)s->Cin * s->H * s->W;
}

// w (Cout, Cin, 3, 3) -> wp: per phase (Cin/8, Cout, nt, 8), wp[ci/8][co][t][ci%8] = w[co][ci][kh_t][kw_t],
// for the input channels [lo, hi) (the packing split over the threads)
static void s2_pack_bwd(float *wp, const float *w, const pn_conv_shape *s, int lo, int hi)
{
    const int Cin = s->Cin, Cout = s->Cout;
    for (int r = 0; r < 4; r++) {
        int kh[4], kw[4];
        const int nt = s2_taps(r >> 1, r & 1, s->pad, kh, kw);
        for (int co = 0; co < Cout; co++)
            for (int ci = lo; ci < hi; ci++)
                for (int t = 0; t < nt; t++)
                    wp[(((size_t)(ci / 8) * Cout + co) * nt + t) * 8 + ci % 8] =
                        w[((size_t)co * Cin + ci) * DC_T + kh[t] * DC_K + kw[t]];
        wp += (size_t)Cin * Cout * nt;
    }
}

/* A row d of W floats from the phase rows p0 (its columns 2b) and p1 (columns 2b + 1; zeros
 * when p1 is NULL). */
static inline void s2_interleave_row(float *restrict d, const float *restrict p0, const float *restrict p1,
                                     int W)
{
    int b = 0;
    for (; 2 * b + 16 <= W; b += 8) {
        const __m256 a = _mm256_loadu_ps(p0 + b), c = p1 ? _mm256_loadu_ps(p1 + b) : _mm256_setzero_ps();
        const __m256 lo = _mm256_unpacklo_ps(a, c), hi = _mm256_unpackhi_ps(a, c);
        _mm256_storeu_ps(d + 2 * b, _mm256_permute2f128_ps(lo, hi, 0x20));
        _mm256_storeu_ps(d + 2 * b + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    if (2 * b + 8 <= W) { /* 14-wide rows: one 4 + 4 step, then 3 pairs */
        const __m128 a = _mm_loadu_ps(p0 + b), c = p1 ? _mm_loadu_ps(p1 + b) : _mm_setzero_ps();
        _mm_storeu_ps(d + 2 * b, _mm_unpacklo_ps(a, c));
        _mm_storeu_ps(d + 2 * b + 4, _mm_unpackhi_ps(a, c));
        b += 4;
    }
    for (; 2 * b < W; b++) {
        d[2 * b] = p0[b];
        if (2 * b + 1 < W) d[2 * b + 1] = p1 ? p1[b] : 0.0f;
    }
}

/* d[0, n) = 0 (rows of 7 to 28 floats: inline stores rather than a memset call) */
static inline void zero_row(float *d, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_setzero_ps());
    for (; i < n; i++) d[i] = 0.0f;
}

/* dx (Cin, H, W) written: the input gradient of image dy (Cout, Ho, Wo) of a stride-2
 * convolution, wpb from s2_pack_bwd; scratch: s2_scratch floats; first: zero the padding. */
static void s2_dinp(float *dx, const float *dy, const float *wpb, const pn_conv_shape *s, float *scratch,
                    int first)
{
    const int Ho = out_size(s->H, s->pad, 2), Wo = out_size(s->W, s->pad, 2);
    const int Cin = s->Cin, Cout = s->Cout, H = s->H, W = s->W;
    int Hq, Wq;
    s2_plane(s, Ho, Wo, &Hq, &Wq);
    float *dyp = scratch, *ph = scratch + (((size_t)Cout * Hq * Wq + 15) & ~(size_t)15);
    if (first) pad_zero(dyp, Cout, Hq, Wq);
    pad_copy(dyp, dy, Cout, Ho, Wo, 1, Hq, Wq);
    /* phase r's planes (Cin, Hr, Wr) at ph + Cin * (sum of the earlier phases' Hr * Wr) */
    float *pr[4];
    int Wr[4];
    const float *wp = wpb;
    float *q = ph;
    for (int r = 0; r < 4; r++) {
        const int rh = r >> 1, rw = r & 1, Hr = (H - rh + 1) / 2;
        int kh[4], kw[4], tap[4];
        const int nt = s2_taps(rh, rw, s->pad, kh, kw);
        Wr[r] = (W - rw + 1) / 2;
        for (int t = 0; t < nt; t++)
            tap[t] = (1 + (rh + s->pad - kh[t]) / 2) * Wq + 1 + (rw + s->pad - kw[t]) / 2;
        pr[r] = q;
        if (Hr > 0 && Wr[r] > 0) core_taps(q, dyp, wp, Cout, Cin, Hr, Wr[r], Hq, Wq, 1, tap, nt);
        q += (size_t)Cin * Hr * Wr[r];
        wp += (size_t)Cin * Cout * nt;
    }
    for (int ci = 0; ci < Cin; ci++)
        for (int h = 0; h < H; h++) {
            const int rh = h & 1, a = h >> 1, Hr = (H - rh + 1) / 2;
            const float *p0 = pr[2 * rh] + ((size_t)ci * Hr + a) * Wr[2 * rh];
            const float *p1 = pr[2 * rh + 1] + ((size_t)ci * Hr + a) * Wr[2 * rh + 1];
            s2_interleave_row(dx + ((size_t)ci * H + h) * W, p0, p1, W);
        }
}

/* ------------------------------------------------------- entry points */

size_t pn_dconv_scratch(const pn_conv_shape *s, int backward)
{
    const int Ho = out_size(s->H, s->pad, s->stride), Wo = out_size(s->W, s->pad, s->stride);
    const int wino = pn_dconv_wino_ok(s);
    size_t n = (size_t)s->Cin * pplane(s->H, s->W, s->pad);
    size_t f = wino ? wino_plan(s->Cin, s->Cout, s->H, s->W, s->pad).total : n;
    if (!backward) return f;
    if (pn_dconv_wino_dw_ok(s)) { /* wino_dw's scratch, then the input gradient's */
        n = wino_dw_scratch(s->Cin, s->Cout, s->H, s->W, s->pad) +
            wino_plan(s->Cout, s->Cin, Ho, Wo, 2 - s->pad).total;
        return n > f ? n : f;
    }
    n += (size_t)Ho * Wo * s->Cout;
    if (wino) n += wino_plan(s->Cout, s->Cin, Ho, Wo, 2 - s->pad).total;
    else if (pn_dconv_dinp_ok(s) && s->stride == 2) n += s2_scratch(s, Ho, Wo);
    else if (pn_dconv_dinp_ok(s)) n += (size_t)s->Cout * pplane(Ho, Wo, 2 - s->pad);
    return n > f ? n : f; /* the forward uses the same slices */
}

size_t pn_dconv_dw_floats(const pn_conv_shape *s)
{
    return (size_t)s->Cin * s->Cout * (pn_dconv_wino_dw_ok(s) ? 16 : DC_T);
}

size_t pn_dconv_wpack_floats(const pn_conv_shape *s)
{
    return (size_t)s->Cin * s->Cout * (pn_dconv_wino_ok(s) ? 16 : DC_T);
}

// w (Cout, Cin, 3, 3) -> wp (Cout/8, Cin, 3, 3, 8), or U (16, Cout/8, Cin, 8) (Winograd)
void pn_dconv_pack_fwd(float *wp, const float *w, const pn_conv_shape *s, int part, int nparts)
{
    const int Cin = s->Cin, Cout = s->Cout;
    if (pn_dconv_wino_ok(s)) {
        wino_pack(wp, w, Cin, Cout, 0, part, nparts);
        return;
    }
    int lo, hi;
    part_range(Cout, part, nparts, &lo, &hi);
    for (int co = lo; co < hi; co++)
        for (int ci = 0; ci < Cin; ci++)
            for (int t = 0; t < DC_T; t++)
                wp[(((size_t)(co / 8) * Cin + ci) * DC_T + t) * 8 + co % 8] =
                    w[((size_t)co * Cin + ci) * DC_T + t];
}

// w (Cout, Cin, 3, 3) -> wp (Cin/8, Cout, 3, 3, 8): wp[ci/8][co][t][ci%8] = w[co][ci][8 - t],
// or U (16, Cin/8, Cout, 8) of the rotated weights (Winograd)
void pn_dconv_pack_bwd(float *wp, const float *w, const pn_conv_shape *s, int part, int nparts)
{
    const int Cin = s->Cin, Cout = s->Cout;
    if (pn_dconv_wino_ok(s)) {
        wino_pack(wp, w, Cin, Cout, 1, part, nparts);
        return;
    }
    int lo, hi;
    part_range(Cin, part, nparts, &lo, &hi);
    if (s->stride == 2) {
        s2_pack_bwd(wp, w, s, lo, hi);
        return;
    }
    for (int co = 0; co < Cout; co++)
        for (int ci = lo; ci < hi; ci++)
            for (int t = 0; t < DC_T; t++)
                wp[(((size_t)(ci / 8) * Cout + co) * DC_T + t) * 8 + ci % 8] =
                    w[((size_t)co * Cin + ci) * DC_T + (DC_T - 1 - t)];
}

void pn_dconv_fwd_image(float *y, const float *x, const pn_conv_src *src, int n, const float *wp,
                        const pn_conv_shape *s, float *scratch, int first)
{
    const int Ho = out_size(s->H, s->pad, s->stride), Wo = out_size(s->W, s->pad, s->stride);
    const int Hp = s->H + 2 * s->pad, Wp = s->W + 2 * s->pad;
    if (pn_dconv_wino_ok(s)) {
        wino_conv(y, x, src, n, wp, s->Cin, s->Cout, s->H, s->W, s->pad, scratch, first);
        return;
    }
    if (first) pad_zero(scratch, s->Cin, Hp, Wp);
    pad_fill(scratch, x, src, n, s->Cin, s->H, s->W, s->pad, Hp, Wp);
    if (s->stride == 1 && s->Cin < 8) core_px(y, scratch, wp, s->Cin, s->Cout, Ho, Wo, Hp, Wp);
    else core(y, scratch, wp, s->Cin, s->Cout, Ho, Wo, Hp, Wp, s->stride);
}

/* dWp (Cout/8, Cin, 3, 3, 8) = beta * dWp + sum_p dyT[p][co] * xp[ci][off(p) + tap]
 * (packed: the accumulators are added as vectors, no transposition per image).
 * dyT (Cout/8, P, 8): 8 output channels of a pixel contiguous; xp (Cin, Hp, Wp) read at
 * stride st; beta 0 or 1.
 * A GEMM dW (Cout, Cin*9) = dy (Cout, P) x X^T with X the unformed column matrix: the
 * register block is 2 vectors of 8 output channels x 6 columns (ci, tap) = 12 accumulators,
 * per pixel 2 loads of dy, 6 broadcasts of x and 12 multiply-adds (the forward's ratio). The
 * columns are numbered k = ci * 9 + tap; a last group of fewer than 6 repeats its last
 * column and stores only the valid ones. Each accumulator is one 8-channel vector of the
 * packed layout. */
static void dweight(float *dWp, float beta, const float *dyT, const float *xp, int Cin, int Cout,
                    int Ho, int Wo, int Hp, int Wp, int st)
{
    const size_t ps = (size_t)Hp * Wp, P = (size_t)Ho * Wo;
    const int tap[DC_T] = { 0, 1, 2, Wp, Wp + 1, Wp + 2, 2 * Wp, 2 * Wp + 1, 2 * Wp + 2 };
    const int K = Cin * DC_T;
    for (int cb = 0; cb < Cout; cb += 16) {
        const int nv = Cout - cb >= 16 ? 2 : 1;
        const float *d0 = dyT + (size_t)(cb / 8) * P * 8, *d1 = nv == 2 ? d0 + P * 8 : d0;
        for (int k0 = 0; k0 < K; k0 += DC_NP) {
            const int nk = K - k0 < DC_NP ? K - k0 : DC_NP;
            size_t co[DC_NP];  /* offset of column k0 + j in xp (for pixel 0) */
            size_t dst[DC_NP]; /* its vector in the packed dWp, for the first 8 channels */
            for (int j = 0; j < DC_NP; j++) {
                const int k = k0 + (j < nk ? j : nk - 1), ci = k / DC_T, t = k % DC_T;
                co[j] = ci * ps + (size_t)tap[t];
                dst[j] = (((size_t)(cb / 8) * Cin + ci) * DC_T + t) * 8;
            }
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                   a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            const float *g0 = d0, *g1 = d1;
            for (int oh = 0; oh < Ho; oh++) {
                const float *xr = xp + (size_t)oh * st * Wp;
                for (int ow = 0; ow < Wo; ow++, g0 += 8, g1 += 8) {
                    const float *xt = xr + ow * st;
                    const __m256 v0 = _mm256_loadu_ps(g0), v1 = _mm256_loadu_ps(g1);
#define DW_X(j) (xt + co[j])
                    BLOCK16X6_STEP(DW_X);
#undef DW_X
                }
            }
            const __m256 acc[2][DC_NP] = { { a00, a10, a20, a30, a40, a50 },
                                           { a01, a11, a21, a31, a41, a51 } };
            for (int v = 0; v < nv; v++)
                for (int j = 0; j < nk; j++) {
                    float *dp = dWp + dst[j] + (size_t)v * Cin * DC_T * 8;
                    __m256 r = acc[v][j];
                    if (beta != 0.0f) r = _mm256_add_ps(r, _mm256_loadu_ps(dp));
                    _mm256_storeu_ps(dp, r);
                }
        }
    }
}

/* Winograd's weight gradient of (co, ci): dweight[co][ci] (3x3) += G^T m G, m (4x4) the sum
 * of the nslices slices of p (p[u * stride + xi * xs], xi = 4 a + b), all in double. */
static void wino_reduce1(float *dweight, const float *p, size_t stride, int nslices, size_t xs, int Cin,
                         int co, int ci)
{
    double m[4][4], t[3][4];
    for (int xi = 0; xi < 16; xi++) {
        double acc = 0.0;
        for (int u = 0; u < nslices; u++) acc += p[(size_t)u * stride + (size_t)xi * xs];
        m[xi / 4][xi % 4] = acc;
    }
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 4; b++)
            t[k][b] = WG[0][k] * m[0][b] + WG[1][k] * m[1][b] + WG[2][k] * m[2][b] + WG[3][k] * m[3][b];
    float *d = dweight + ((size_t)co * Cin + ci) * DC_T;
    for (int k = 0; k < 3; k++)
        for (int l = 0; l < 3; l++)
            d[k * 3 + l] += (float)(t[k][0] * WG[0][l] + t[k][1] * WG[1][l] + t[k][2] * WG[2][l] +
                                    t[k][3] * WG[3][l]);
}

/* wino_reduce1 for the 8 output channels of group cg and the input channels [c0, c0 + nc)
 * (nc <= 16): first the sums of the slices for every xi, row by row, then the transform, 4
 * channels a double vector, the 9 taps of each channel out by 4x4 transposes. The same
 * operations in the same order as wino_reduce1, so the same bits. It runs once per
 * micro-batch: one pair at a time it was 4.9% of a micro-batch-8 step in perf, now 2-3%
 * (64 x 64 channels, 2 slices: 164 -> 121 us). */
static void wino_reduce8(float *dweight, const float *dWp, size_t stride, int nslices, size_t xs, int Cin,
                         int cg, int c0, int nc)
{
    double m[16][16][8]; /* [ci - c0][xi][co % 8] */
    for (int xi = 0; xi < 16; xi++) {
        const float *row = dWp + (size_t)xi * xs + ((size_t)cg * Cin + c0) * 8;
        for (int ci = 0; ci < nc; ci++)
            for (int h = 0; h < 2; h++) {
                __m256d acc = _mm256_setzero_pd();
                for (int u = 0; u < nslices; u++)
                    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm_loadu_ps(row + (size_t)u * stride + ci * 8 + 4 * h)));
                _mm256_storeu_pd(m[ci][xi] + 4 * h, acc);
            }
    }
    for (int ci = 0; ci < nc; ci++)
        for (int h = 0; h < 2; h++) {
            __m256d t[3][4];
            for (int k = 0; k < 3; k++)
                for (int b = 0; b < 4; b++) {
                    __m256d v = _mm256_mul_pd(_mm256_set1_pd(WG[0][k]), _mm256_loadu_pd(m[ci][b] + 4 * h));
                    for (int a = 1; a < 4; a++)
                        v = _mm256_add_pd(v, _mm256_mul_pd(_mm256_set1_pd(WG[a][k]), _mm256_loadu_pd(m[ci][4 * a + b] + 4 * h)));
                    t[k][b] = v;
                }
            __m128 o[DC_T + 3]; /* [tap] 4 output channels; 3 more for the transposes */
            for (int k = 0; k < 3; k++)
                for (int l = 0; l < 3; l++) {
                    __m256d v = _mm256_mul_pd(t[k][0], _mm256_set1_pd(WG[0][l]));
                    for (int b = 1; b < 4; b++) v = _mm256_add_pd(v, _mm256_mul_pd(t[k][b], _mm256_set1_pd(WG[b][l])));
                    o[k * 3 + l] = _mm256_cvtpd_ps(v);
                }
            o[9] = o[10] = o[11] = _mm_setzero_ps();
            /* taps 0-3, 4-7 and 8 of each channel contiguous (4x4 transposes): dweight is
             * (Cout, Cin, 9) */
            _MM_TRANSPOSE4_PS(o[0], o[1], o[2], o[3]);
            _MM_TRANSPOSE4_PS(o[4], o[5], o[6], o[7]);
            _MM_TRANSPOSE4_PS(o[8], o[9], o[10], o[11]);
            for (int j = 0; j < 4; j++) {
                float *d = dweight + ((size_t)(cg * 8 + 4 * h + j) * Cin + c0 + ci) * DC_T;
                _mm_storeu_ps(d, _mm_add_ps(_mm_loadu_ps(d), o[j]));
                _mm_storeu_ps(d + 4, _mm_add_ps(_mm_loadu_ps(d + 4), o[4 + j]));
                d[8] += _mm_cvtss_f32(o[8 + j]);
            }
        }
}

void pn_dconv_dw_reduce(float *dweight, const float *dWp, size_t stride, int nslices, int co_lo,
                        int co_hi, const pn_conv_shape *s)
{
    const int Cin = s->Cin;
    if (pn_dconv_wino_dw_ok(s)) { /* dWh (16, Cout/8, Cin, 8): dW = G^T (sum of slices) G */
        const size_t xs = (size_t)s->Cout * Cin;
        /* whole groups of 8 output channels by wino_reduce8, the channels of a group cut by
         * [co_lo, co_hi) one at a time */
        for (int co = co_lo; co < co_hi;) {
            if (co % 8 == 0 && co + 8 <= co_hi) {
                for (int c0 = 0; c0 < Cin; c0 += 16)
                    wino_reduce8(dweight, dWp, stride, nslices, xs, Cin, co / 8, c0, Cin - c0 < 16 ? Cin - c0 : 16);
                co += 8;
                continue;
            }
            for (int ci = 0; ci < Cin; ci++)
                wino_reduce1(dweight, dWp + ((size_t)(co / 8) * Cin + ci) * 8 + co % 8, stride, nslices, xs, Cin,
                             co, ci);
            co++;
        }
        return;
    }
    const int nt = pn_dconv_pw_ok(s) ? 1 : DC_T; /* taps: the 1x1 kernel's (Cout/8, Cin, 8) */
    for (int co = co_lo; co < co_hi; co++)
        for (int ci = 0; ci < Cin; ci++) {
            const float *p = dWp + ((size_t)(co / 8) * Cin + ci) * nt * 8 + co % 8;
            float *d = dweight + ((size_t)co * Cin + ci) * nt;
            for (int t = 0; t < nt; t++) {
                double acc = 0.0;
                for (int u = 0; u < nslices; u++) acc += p[(size_t)u * stride + (size_t)t * 8];
                d[t] += (float)acc;
            }
        }
}

/* dy (C, P) -> dyT (C/8, P, 8), C a multiple of 8: 8x8 transposes, the last P % 8
 * pixels one by one. */
static void to_blocked8(float *dyT, const float *dy, int C, int P)
{
    for (int c0 = 0; c0 < C; c0 += 8) {
        const float *src = dy + (size_t)c0 * P;
        float *dst = dyT + (size_t)c0 * P;
        int p = 0;
        for (; p + 8 <= P; p += 8) {
            __m256 r[8];
            for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(src + (size_t)l * P + p);
            transpose8(r);
            for (int l = 0; l < 8; l++) _mm256_storeu_ps(dst + (size_t)(p + l) * 8, r[l]);
        }
        for (; p < P; p++)
            for (int l = 0; l < 8; l++) dst[(size_t)p * 8 + l] = src[(size_t)l * P + p];
    }
}

void pn_dconv_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                        const pn_conv_src *src, int n, const float *wpb, const pn_conv_shape *s,
                        float *scratch, int k, int last)
{
    const int Ho = out_size(s->H, s->pad, s->stride), Wo = out_size(s->W, s->pad, s->stride);
    const int q = 2 - s->pad, P = Ho * Wo, Cout = s->Cout, Hp = s->H + 2 * s->pad, Wp = s->W + 2 * s->pad;
    float *xp = scratch, *dyT = xp + (size_t)s->Cin * pplane(s->H, s->W, s->pad);
    float *dyp = dyT + (size_t)P * Cout;
    const int first = k == 0;
    if (pn_dconv_wino_dw_ok(s)) { /* Winograd for both (wino_dw's scratch, then dx's) */
        wino_dw(dWp, beta, dy, x, src, n, s->Cin, Cout, s->H, s->W, s->pad, scratch, k, last);
        if (dx)
            wino_conv(dx, dy, NULL, 0, wpb, Cout, s->Cin, Ho, Wo, q,
                      scratch + wino_dw_scratch(s->Cin, Cout, s->H, s->W, s->pad), first);
        return;
    }
    const int wino = dx && pn_dconv_wino_ok(s);
    if (first) {
        pad_zero(xp, s->Cin, Hp, Wp);
        if (dx && !wino && s->stride == 1) pad_zero(dyp, Cout, Ho + 2 * q, Wo + 2 * q);
    }
    pad_fill(xp, x, src, n, s->Cin, s->H, s->W, s->pad, Hp, Wp);
    to_blocked8(dyT, dy, Cout, P);
    dweight(dWp, beta, dyT, xp, s->Cin, Cout, Ho, Wo, Hp, Wp, s->stride);
    if (!dx) return;
    if (wino) {
        wino_conv(dx, dy, NULL, 0, wpb, Cout, s->Cin, Ho, Wo, q, dyp, first);
        return;
    }
    if (s->stride == 2) {
        s2_dinp(dx, dy, wpb, s, dyp, first);
        return;
    }
    pad_copy(dyp, dy, Cout, Ho, Wo, q, Ho + 2 * q, Wo + 2 * q);
    core(dx, dyp, wpb, Cout, s->Cin, s->H, s->W, Ho + 2 * q, Wo + 2 * q, 1);
}

/* ------------------------------------------------- 1x1 convolution at stride 2 or more
 *
 * resnet's projection shortcuts (1x1, stride 2, pad 0). By im2col + sgemm the strided
 * gather of the input and the BLAS's zeroing and packing of GEMMs this small (16 to 64
 * channels, 49 to 196 output pixels per image) cost as much as the multiply-adds (perf: im2col
 * 38%, sgemm_beta 21%, the sgemm kernel 25% of the forward). Here, per image:
 *   xs (Cin, P8) = x subsampled at the stride (pw_subsample, vectorized at stride 2), each
 *      plane of P = Ho*Wo pixels padded to P8 (a multiple of 8, the padding zero)
 *   forward   y (Cout, P) = W (Cout, Cin) x xs  (pw_gemm: no transposes, rows of y stored
 *             as they are)
 *   dweight   dW (Cout/8, Cin, 8) += dy xs^T  (pw_dweight: dweight's register block with
 *             one column per input channel, dy transposed to (Cout/8, P, 8))
 *   dinp      ph (Cin, P) = W^T (Cin, Cout) x dy  (pw_gemm on dy copied to rows of P8),
 *             scattered to the pixels the forward read (zeros elsewhere).
 * (core_taps with one tap reading x in place at the stride waited on memory, 16 to 64
 * planes read at once: the forward of resnet20's first projection was slower than
 * im2col + sgemm.) */

int pn_dconv_pw_ok(const pn_conv_shape *s)
{
    return dc_enabled && s2_enabled && s->KH == 1 && s->KW == 1 && s->stride >= 2 && s->pad == 0 &&
           s->groups == 1 && s->Cin % 8 == 0 && s->Cout % 8 == 0 && s->Cin <= 64 && s->Cout <= 64;
}

/* Output pixels of an image and their count rounded up to 8. */
static void pw_sizes(const pn_conv_shape *s, int *P, int *P8)
{
    *P = ((s->H - 1) / s->stride + 1) * ((s->W - 1) / s->stride + 1);
    *P8 = (*P + 7) & ~7;
}

/* Forward: xs; backward: xs (then ph), and dy transposed (then dy in rows of P8); 16 floats
 * more that pw_gemm may read past the last row. */
size_t pn_dconv_pw_scratch(const pn_conv_shape *s)
{
    int P, P8;
    pw_sizes(s, &P, &P8);
    return (size_t)P8 * (size_t)(s->Cin + s->Cout) + 16;
}

// w (Cout, Cin) -> wp = w (bwd = 0) or its transpose (Cin, Cout) (bwd = 1)
void pn_dconv_pw_pack(float *wp, const float *w, const pn_conv_shape *s, int bwd)
{
    const int Cin = s->Cin, Cout = s->Cout;
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++) wp[bwd ? (size_t)ci * Cout + co : (size_t)co * Cin + ci] = w[(size_t)co * Cin + ci];
}

/* xs (C, ld) rows: plane c at xs + c * ld, pixel (oh, ow) at oh * Wo + ow, = x (C, H, W) at
 * (oh * st, ow * st); the ld - Ho * Wo floats after each plane zeroed. */
static void pw_subsample(float *xs, size_t ld, const float *x, int C, int H, int W, int st, int Ho, int Wo)
{
    for (int c = 0; c < C; c++) {
        float *dc = xs + (size_t)c * ld;
        for (int oh = 0; oh < Ho; oh++) {
            const float *r = x + ((size_t)c * H + (size_t)oh * st) * W;
            float *d = dc + (size_t)oh * Wo;
            int ow = 0;
            if (st == 2)
                for (; 2 * ow + 16 <= W; ow += 8) {
                    const __m256 a = _mm256_loadu_ps(r + 2 * ow), b = _mm256_loadu_ps(r + 2 * ow + 8);
                    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
                    _mm256_storeu_ps(d + ow, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
                }
            for (; ow < Wo; ow++) d[ow] = r[(size_t)ow * st];
        }
        for (size_t i = (size_t)Ho * Wo; i < ld; i++) dc[i] = 0.0f;
    }
}

/* Columns [0, n) of a 4 x 24 block (n 1..24): the 3 vectors of row i in c[3 i .. 3 i + 2]. */
static inline void pw_store(float *y, size_t ldy, const __m256 c[12], int n)
{
    for (int v = 0; v < 3; v++) {
        const int k = n - 8 * v;
        if (k <= 0) break;
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int i = 0; i < 4; i++) {
            float *d = y + (size_t)i * ldy + 8 * v;
            if (k >= 8) _mm256_storeu_ps(d, c[3 * i + v]);
            else _mm256_maskstore_ps(d, mask, c[3 * i + v]);
        }
    }
}

/* y (M, P) rows P apart = a (M, K) x b (K rows, ldb apart): columns [0, P) stored, b read
 * up to 24 columns per block (past P, and up to 16 floats past the last row: the caller's
 * buffer has them; those lanes are never stored). M a multiple of 4. Register block 4 rows
 * x 3 vectors of 8 columns, the last columns 8 rows x 1 vector; each output's sum over k in
 * order. */
static void pw_gemm(float *y, const float *a, const float *b, size_t ldb, int M, int K, int P)
{
    for (int i = 0; i < M; i += 4) {
        const float *a0 = a + (size_t)i * K, *a1 = a0 + K, *a2 = a1 + K, *a3 = a2 + K;
        for (int j = 0; j + 8 < P; j += 24) {
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00,
                   c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
            const float *bk = b + j;
            for (int k = 0; k < K; k++, bk += ldb) {
                const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8), b2 = _mm256_loadu_ps(bk + 16);
                __m256 w = _mm256_broadcast_ss(a0 + k);
                c00 = _mm256_fmadd_ps(w, b0, c00); c01 = _mm256_fmadd_ps(w, b1, c01); c02 = _mm256_fmadd_ps(w, b2, c02);
                w = _mm256_broadcast_ss(a1 + k);
                c10 = _mm256_fmadd_ps(w, b0, c10); c11 = _mm256_fmadd_ps(w, b1, c11); c12 = _mm256_fmadd_ps(w, b2, c12);
                w = _mm256_broadcast_ss(a2 + k);
                c20 = _mm256_fmadd_ps(w, b0, c20); c21 = _mm256_fmadd_ps(w, b1, c21); c22 = _mm256_fmadd_ps(w, b2, c22);
                w = _mm256_broadcast_ss(a3 + k);
                c30 = _mm256_fmadd_ps(w, b0, c30); c31 = _mm256_fmadd_ps(w, b1, c31); c32 = _mm256_fmadd_ps(w, b2, c32);
            }
            const __m256 c[12] = { c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32 };
            pw_store(y + (size_t)i * P + j, (size_t)P, c, P - j < 24 ? P - j : 24);
        }
    }
    /* The last 1 to 8 columns (P = 49: 24 + 24 + 1, 196: 8 x 24 + 4), one vector per row:
     * 8 rows at a time (8 independent chains of multiply-adds; 4 waited on their latency). */
    int j = 0;
    while (j + 8 < P) j += 24; /* where the blocks above stopped */
    if (j >= P) return;
    const int n = P - j;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int i = 0; i < M; i += 8) {
        const int nr = M - i < 8 ? M - i : 8; /* 4 or 8 (M a multiple of 4) */
        const float *ai = a + (size_t)i * K;
        /* named accumulators: GCC kept an array of them in memory */
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
        const float *bk = b + j;
#define PW_T(r, c) c = _mm256_fmadd_ps(_mm256_broadcast_ss(ai + (size_t)(r) * K + k), b0, c)
        if (nr == 8)
            for (int k = 0; k < K; k++, bk += ldb) {
                const __m256 b0 = _mm256_loadu_ps(bk);
                PW_T(0, c0); PW_T(1, c1); PW_T(2, c2); PW_T(3, c3); PW_T(4, c4); PW_T(5, c5); PW_T(6, c6); PW_T(7, c7);
            }
        else
            for (int k = 0; k < K; k++, bk += ldb) {
                const __m256 b0 = _mm256_loadu_ps(bk);
                PW_T(0, c0); PW_T(1, c1); PW_T(2, c2); PW_T(3, c3);
            }
#undef PW_T
        const __m256 c[8] = { c0, c1, c2, c3, c4, c5, c6, c7 };
        for (int r = 0; r < nr; r++) {
            float *d = y + (size_t)(i + r) * P + j;
            if (n == 8) _mm256_storeu_ps(d, c[r]);
            else _mm256_maskstore_ps(d, mask, c[r]);
        }
    }
}

void pn_dconv_pw_fwd_image(float *y, const float *x, const float *wp, const pn_conv_shape *s, float *scratch)
{
    const int st = s->stride, Ho = (s->H - 1) / st + 1, Wo = (s->W - 1) / st + 1;
    int P, P8;
    pw_sizes(s, &P, &P8);
    pw_subsample(scratch, (size_t)P8, x, s->Cin, s->H, s->W, st, Ho, Wo);
    memset(scratch + (size_t)s->Cin * P8, 0, 16 * sizeof(float)); /* read by pw_gemm, not used */
    pw_gemm(y, wp, scratch, (size_t)P8, s->Cout, s->Cin, P);
}

/* dWp (Cout/8, Cin, 8) = beta * dWp + sum_p dyT[p][co] * xs[ci][p]; dyT (Cout/8, P, 8), xs
 * planes ps apart. The register block of dweight (2 vectors of 8 output channels x 6 input
 * channels), one column per input channel. */
static void pw_dweight(float *dWp, float beta, const float *dyT, const float *xs, int Cin, int Cout,
                       int P, size_t ps)
{
    for (int cb = 0; cb < Cout; cb += 16) {
        const int nv = Cout - cb >= 16 ? 2 : 1;
        const float *d0 = dyT + (size_t)(cb / 8) * P * 8, *d1 = nv == 2 ? d0 + (size_t)P * 8 : d0;
        for (int k0 = 0; k0 < Cin; k0 += DC_NP) {
            const int nk = Cin - k0 < DC_NP ? Cin - k0 : DC_NP;
            size_t co[DC_NP]; /* plane of column k0 + j (the last one repeated) */
            for (int j = 0; j < DC_NP; j++) co[j] = (size_t)(k0 + (j < nk ? j : nk - 1)) * ps;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00,
                   a21 = a00, a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
            const float *g0 = d0, *g1 = d1;
            for (int p = 0; p < P; p++, g0 += 8, g1 += 8) {
                const float *xt = xs + p;
                const __m256 v0 = _mm256_loadu_ps(g0), v1 = _mm256_loadu_ps(g1);
#define PW_X(j) (xt + co[j])
                BLOCK16X6_STEP(PW_X);
#undef PW_X
            }
            const __m256 acc[2][DC_NP] = { { a00, a10, a20, a30, a40, a50 },
                                           { a01, a11, a21, a31, a41, a51 } };
            for (int v = 0; v < nv; v++)
                for (int j = 0; j < nk; j++) {
                    float *dp = dWp + ((size_t)(cb / 8 + v) * Cin + k0 + j) * 8;
                    __m256 r = acc[v][j];
                    if (beta != 0.0f) r = _mm256_add_ps(r, _mm256_loadu_ps(dp));
                    _mm256_storeu_ps(dp, r);
                }
        }
    }
}

void pn_dconv_pw_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                           const float *wpb, const pn_conv_shape *s, float *scratch)
{
    const int st = s->stride, H = s->H, W = s->W, Ho = (H - 1) / st + 1, Wo = (W - 1) / st + 1;
    const int Cin = s->Cin, Cout = s->Cout;
    int P, P8;
    pw_sizes(s, &P, &P8);
    /* xs, then ph (after pw_dweight); dyT, then dy padded (the same) */
    float *xs = scratch, *ph = xs, *dyT = scratch + (size_t)Cin * P8, *dyp = dyT;
    to_blocked8(dyT, dy, Cout, P);
    pw_subsample(xs, (size_t)P8, x, Cin, H, W, st, Ho, Wo);
    pw_dweight(dWp, beta, dyT, xs, Cin, Cout, P, (size_t)P8);
    if (!dx) return;
    for (int co = 0; co < Cout; co++) {
        memcpy(dyp + (size_t)co * P8, dy + (size_t)co * P, (size_t)P * sizeof(float));
        for (int p = P; p < P8; p++) dyp[(size_t)co * P8 + p] = 0.0f;
    }
    memset(dyp + (size_t)Cout * P8, 0, 16 * sizeof(float)); /* read by pw_gemm, not used */
    pw_gemm(ph, wpb, dyp, (size_t)P8, Cin, Cout, P);
    /* row oh * st from ph's row oh, the st - 1 rows after it (those in the plane) zero */
    for (int ci = 0; ci < Cin; ci++)
        for (int oh = 0; oh < Ho; oh++) {
            float *d = dx + ((size_t)ci * H + (size_t)oh * st) * W;
            const float *p = ph + ((size_t)ci * Ho + oh) * Wo;
            if (st == 2) {
                s2_interleave_row(d, p, NULL, W);
            } else {
                zero_row(d, W);
                for (int ow = 0; ow < Wo; ow++) d[(size_t)ow * st] = p[ow];
            }
            const int nz = H - oh * st - 1 < st - 1 ? H - oh * st - 1 : st - 1;
            zero_row(d + W, nz * W);
        }
}

#else /* no AVX2 + FMA at compile time: im2col + sgemm does every convolution (a portable
       * C version of this kernel ran far slower than OpenBLAS, e.g. in the sanitizer build). */

int pn_dconv_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}

int pn_dconv_dinp_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}

/* Never called: conv.c asks pn_dconv_ok first. */
size_t pn_dconv_scratch(const pn_conv_shape *s, int backward)
{
    (void)s;
    (void)backward;
    return 0;
}
void pn_dconv_winograd_enable(int on) { (void)on; }
int pn_dconv_wino_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}
void pn_dconv_winograd_dw_enable(int on) { (void)on; }
int pn_dconv_wino_dw_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}
size_t pn_dconv_dw_floats(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}
size_t pn_dconv_wpack_floats(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}
void pn_dconv_pack_fwd(float *wp, const float *w, const pn_conv_shape *s, int part, int nparts)
{
    (void)wp; (void)w; (void)s; (void)part; (void)nparts;
}
void pn_dconv_pack_bwd(float *wp, const float *w, const pn_conv_shape *s, int part, int nparts)
{
    (void)wp; (void)w; (void)s; (void)part; (void)nparts;
}
void pn_dconv_fwd_image(float *y, const float *x, const pn_conv_src *src, int n, const float *wp,
                        const pn_conv_shape *s, float *scratch, int first)
{
    (void)y; (void)x; (void)src; (void)n; (void)wp; (void)s; (void)scratch; (void)first;
}
void pn_dconv_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                        const pn_conv_src *src, int n, const float *wpb, const pn_conv_shape *s,
                        float *scratch, int k, int last)
{
    (void)dx; (void)dWp; (void)beta; (void)dy; (void)x; (void)src; (void)n; (void)wpb; (void)s;
    (void)scratch; (void)k; (void)last;
}
void pn_dconv_dw_reduce(float *dweight, const float *dWp, size_t stride, int nslices, int co_lo,
                        int co_hi, const pn_conv_shape *s)
{
    (void)dweight; (void)dWp; (void)stride; (void)nslices; (void)co_lo; (void)co_hi; (void)s;
}
int pn_dconv_pw_ok(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}
size_t pn_dconv_pw_scratch(const pn_conv_shape *s)
{
    (void)s;
    return 0;
}
void pn_dconv_pw_pack(float *wp, const float *w, const pn_conv_shape *s, int bwd)
{
    (void)wp; (void)w; (void)s; (void)bwd;
}
void pn_dconv_pw_fwd_image(float *y, const float *x, const float *wp, const pn_conv_shape *s, float *scratch)
{
    (void)y; (void)x; (void)wp; (void)s; (void)scratch;
}
void pn_dconv_pw_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                           const float *wpb, const pn_conv_shape *s, float *scratch)
{
    (void)dx; (void)dWp; (void)beta; (void)dy; (void)x; (void)wpb; (void)s; (void)scratch;
}
#endif
