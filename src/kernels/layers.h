/* Internal kernels for the layers of a CNN (not part of the public header).
 * Same conventions as proxynorm.h: NCHW float32, caller-owned buffers, input
 * gradients written (=), parameter gradients accumulated (+=), PN_OK or a
 * negative pn_status with pn_last_error() set. Golden-tested against PyTorch. */
#ifndef PN_LAYERS_H
#define PN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "proxynorm.h"
#include "rng.h"

/* ---------------------------------------------------------- convolution */
/* inp (N,Cin,H,W); weight (Cout, Cin/groups, KH, KW); bias (Cout) or NULL;
 * out (N,Cout,Ho,Wo) with Ho = (H + 2*pad - KH)/stride + 1 (same for W).
 * Cin and Cout divisible by groups (groups = Cin = Cout: depthwise). Zero padding. */
typedef struct {
    int N, Cin, H, W, Cout, KH, KW, stride, pad, groups;
} pn_conv_shape;

int pn_conv_out_hw(const pn_conv_shape *s, int *Ho, int *Wo);
/* Floats of scratch space `work` the forward and backward need (0 if none), for up to
 * pn_get_threads() threads: it depends on the thread count at the time of the call, so
 * query it again after pn_set_threads. */
size_t pn_conv2d_workspace(const pn_conv_shape *s);
int pn_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                      const pn_conv_shape *s, float *work);
/* dinp (N,Cin,H,W) written, or NULL when not needed (first layer);
 * dweight (Cout,Cin/groups,KH,KW) and dbias (Cout, or NULL) accumulated. */
int pn_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, const pn_conv_shape *s, float *work);

/* An input given by a function instead of a tensor (the model's norm outputs that are
 * never stored, src/nn/model.c): plane(ctx, n, c, dst, ld) writes channel c of image n
 * (H rows of W floats) to dst, its rows ld floats apart. */
typedef struct {
    void (*plane)(const void *ctx, int n, int c, float *dst, int ld);
    const void *ctx;
} pn_conv_src;

/* The forward and backward above with the input from src (the direct kernel fills its
 * padded planes from it, so the input is never stored). Only for the shapes of the direct
 * kernel (pn_conv2d_src_ok; PN_ERR_ARG otherwise). The same results, bit for bit, as the
 * calls above on the tensor that src describes. */
int pn_conv2d_forward_src(float *out, const pn_conv_src *src, const float *weight,
                          const float *bias, const pn_conv_shape *s, float *work);
int pn_conv2d_backward_src(float *dinp, float *dweight, float *dbias, const float *dout,
                           const pn_conv_src *src, const float *weight, const pn_conv_shape *s,
                           float *work);
int pn_conv2d_src_ok(const pn_conv_shape *s);

/* Direct 3x3 convolution (conv_direct.c), used by the two calls above for the shapes
 * pn_dconv_ok accepts (stride 1 or 2, groups 1, pad <= 2, Cout a multiple of 8, at most 64
 * channels; none when built without AVX2 + FMA). Its backward computes the input gradient
 * only where pn_dconv_dinp_ok (Cin a multiple of 8; stride 2 unless
 * pn_conv_stride2_enable(0)); otherwise the caller passes
 * dx = NULL and computes it itself. One image per call; scratch: pn_dconv_scratch floats
 * per thread (padded planes, dout transposed); first = 1 on the first image of a call with
 * this scratch (zeroes the padding once); the backward's k: the image's index among the
 * call's images on this scratch (k == 0: first), last: 1 on the call's last image (the
 * Winograd weight gradient may hold images back to run them in one GEMM: dWp is complete
 * after the last image only). The input image is x, or image n of src when src is not NULL
 * (x unused).
 * wp: weights packed by pn_dconv_pack_fwd (forward) or pn_dconv_pack_bwd (dinp), each
 * pn_dconv_wpack_floats floats (the same pn_dconv_wino_ok state at packing and use), in
 * nparts calls part = 0 .. nparts - 1 (disjoint output-channel blocks: threads share it). The
 * backward: dWp = beta * dWp + this image's weight gradient in the packed layout
 * (Cout/8, Cin, 3, 3, 8), or where pn_dconv_wino_dw_ok its untransformed Winograd sums
 * (16, Cout/8, Cin, 8) (pn_dconv_dw_floats floats; beta 0 or 1); dx written (or NULL).
 * pn_dconv_dw_reduce: dweight[co] += sum over u < nslices of the packed gradients at
 * dWp + u * stride (in double, in order u = 0, 1, ...; Winograd's then transformed by
 * G^T . G in double; also the 1x1 strided kernel's (Cout/8, Cin, 8), pn_dconv_pw_ok), for
 * output channels [co_lo, co_hi). */
int pn_dconv_ok(const pn_conv_shape *s);
int pn_dconv_dinp_ok(const pn_conv_shape *s);
/* 0: every convolution takes the im2col + sgemm path (benchmarks, tests); 1 (default): the
 * direct kernel where pn_dconv_ok. Not thread-safe; query workspaces again after it. */
void pn_dconv_enable(int on);
/* 1 (default): the stride-2 paths, the direct input gradient of 3x3 stride-2 convolutions
 * (four phases, conv_direct.c) and the direct 1x1 strided convolution (pn_dconv_pw_ok);
 * 0: those take GEMM (+ col2im) as before (benchmarks, tests). Not thread-safe; query
 * workspaces again after it. */
void pn_conv_stride2_enable(int on);
/* Winograd F(2x2, 3x3) for the stride-1 uses (forward and input gradient) where
 * pn_dconv_wino_ok: the direct kernel's shapes at stride 1 with Cin a multiple of 8, and
 * mode 1 (default): at least 32 input and output channels (where it is faster); 2: at any
 * channel count (tests, benchmarks); 0: never (the direct kernel). Not thread-safe; query
 * workspaces again after it. */
void pn_dconv_winograd_enable(int mode);
int pn_dconv_wino_ok(const pn_conv_shape *s);
/* The weight gradient by Winograd too (1, default) where pn_dconv_wino_ok, or by the direct
 * kernel (0: tests, benchmarks). pn_dconv_wino_dw_ok: both switches and the shape. Not
 * thread-safe; query workspaces again after it. */
void pn_dconv_winograd_dw_enable(int on);
int pn_dconv_wino_dw_ok(const pn_conv_shape *s);
/* Floats of one packed weight gradient (pn_dconv_bwd_image's dWp): Cin * Cout * 9 (direct)
 * or * 16 (Winograd: the untransformed (16, Cout/8, Cin, 8) sums). */
size_t pn_dconv_dw_floats(const pn_conv_shape *s);
size_t pn_dconv_scratch(const pn_conv_shape *s, int backward);
/* Floats of the packed weights: Cin * Cout * 9 (direct) or * 16 (Winograd, U = G g G^T). */
size_t pn_dconv_wpack_floats(const pn_conv_shape *s);
void pn_dconv_pack_fwd(float *wp, const float *w, const pn_conv_shape *s, int part, int nparts);
void pn_dconv_pack_bwd(float *wp, const float *w, const pn_conv_shape *s, int part, int nparts);
void pn_dconv_fwd_image(float *y, const float *x, const pn_conv_src *src, int n, const float *wp,
                        const pn_conv_shape *s, float *scratch, int first);
void pn_dconv_dw_reduce(float *dweight, const float *dWp, size_t stride, int nslices, int co_lo,
                        int co_hi, const pn_conv_shape *s);
void pn_dconv_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                        const pn_conv_src *src, int n, const float *wpb, const pn_conv_shape *s,
                        float *scratch, int k, int last);
/* 1x1 convolutions at stride 2 or more, pad 0, groups 1, Cin and Cout multiples of 8 up to
 * 64 (pn_dconv_pw_ok; resnet's projection shortcuts): direct kernels on the input subsampled
 * once per image (conv_direct.c), called by conv.c. One image per call. Weights packed by
 * pn_dconv_pw_pack: (Cout, Cin) as they are (bwd 0, forward) or transposed (bwd 1, input
 * gradient), Cin * Cout floats each. Backward: dWp (Cout/8, Cin, 8) = beta * dWp + this
 * image's weight gradient (beta 0 or 1); dx written (zeros at the pixels the stride skips)
 * or NULL. scratch (both): pn_dconv_pw_scratch floats. */
int pn_dconv_pw_ok(const pn_conv_shape *s);
size_t pn_dconv_pw_scratch(const pn_conv_shape *s);
void pn_dconv_pw_pack(float *wp, const float *w, const pn_conv_shape *s, int bwd);
void pn_dconv_pw_fwd_image(float *y, const float *x, const float *wp, const pn_conv_shape *s, float *scratch);
void pn_dconv_pw_bwd_image(float *dx, float *dWp, float beta, const float *dy, const float *x,
                           const float *wpb, const pn_conv_shape *s, float *scratch);

/* --------------------------------------------------------------- linear */
/* inp (N,In); weight (Out,In); bias (Out) or NULL; out (N,Out). */
int pn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                      int N, int In, int Out);
int pn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, int N, int In, int Out);

/* -------------------------------------------------------------- pooling */
/* Max pooling, window k, stride, pad (padded positions never win).
 * inp (N,C,H,W), out (N,C,Ho,Wo), argmax (N,C,Ho,Wo) index into H*W saved for the backward. */
int pn_maxpool_forward(float *out, int32_t *argmax, const float *inp,
                       int N, int C, int H, int W, int k, int stride, int pad);
int pn_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax,
                        int N, int C, int H, int W, int k, int stride, int pad);
/* Average pooling, padding counted in the divisor (PyTorch's count_include_pad=True). */
int pn_avgpool_forward(float *out, const float *inp,
                       int N, int C, int H, int W, int k, int stride, int pad);
int pn_avgpool_backward(float *dinp, const float *dout,
                        int N, int C, int H, int W, int k, int stride, int pad);
/* Global average pooling: inp (N,C,HW) -> out (N,C). */
int pn_gap_forward(float *out, const float *inp, int N, int C, int HW);
int pn_gap_backward(float *dinp, const float *dout, int N, int C, int HW);

/* ----------------------------------------------------------- loss etc. */
/* Softmax cross-entropy with label smoothing eps (target = (1-eps) onehot + eps/K).
 * logits (N,K); labels (N) in [0,K); probs (N,K) saved for the backward.
 * *loss = SUM over the N samples of the per-sample loss (the caller divides);
 * *correct (may be NULL) = number of samples whose argmax equals the label. */
int pn_xent_forward(double *loss, int *correct, float *probs, const float *logits,
                    const int *labels, int N, int K, float smoothing);
/* dlogits (N,K) = scale * (probs - target). scale is 1/B for a mean over B samples. */
int pn_xent_backward(float *dlogits, const float *probs, const int *labels,
                     int N, int K, float smoothing, float scale);

/* out = a + b, n elements (out may alias a or b). */
void pn_add(float *out, const float *a, const float *b, size_t n);
/* out += a, n elements. */
void pn_add_inplace(float *out, const float *a, size_t n);

/* ------------------------------------------- squeeze-and-excitation (se.c) */
/* x (N,C,HW) -> s = GAP(x) (N,C) -> h = s W1^T + b1 (N,Cr) -> r = act(h) ->
 * g = sigmoid(r W2^T + b2) (N,C) -> out = x * g[:, :, None] (N,C,HW).
 * W1 (Cr,C), b1 (Cr), W2 (C,Cr), b2 (C) (PyTorch's 1x1 conv weights, flattened).
 * EfficientNet: act = SiLU, Cr = max(1, Cin_block / 4). No normalization inside.
 * Forward saves s (N,C), h (N,Cr), r (N,Cr), g (N,C); out must not alias inp. */
int pn_se_forward(float *out, float *s, float *h, float *r, float *g, const float *inp,
                  const float *W1, const float *b1, const float *W2, const float *b2,
                  int N, int C, int HW, int Cr, pn_act act);
/* Floats of scratch `work` for the backward: N*C + N*Cr (0 for bad sizes). */
size_t pn_se_workspace(int N, int C, int Cr);
/* dinp (N,C,HW) written (may alias dout); dW1, db1, dW2, db2 accumulated. */
int pn_se_backward(float *dinp, float *dW1, float *db1, float *dW2, float *db2,
                   const float *dout, const float *inp, const float *s, const float *h,
                   const float *r, const float *g, const float *W1, const float *W2,
                   int N, int C, int HW, int Cr, pn_act act, float *work);

/* -------------------------------------- stochastic depth / drop path (droppath.c) */
/* Per-sample mask (N): training: 1/(1-p) with probability 1-p, else 0 (one uniform
 * draw per sample from rng); evaluation (training = 0) or p = 0: all 1. p in [0, 1]. */
#define PN_STREAM_DROPPATH 5
/* The stream for (seed, optimizer step, block index): deterministic, so a resumed
 * run draws the same masks as an uninterrupted one. */
pn_rng pn_droppath_stream(uint64_t seed, uint64_t step, uint64_t block);
int pn_droppath_mask(float *mask, int N, float drop_prob, int training, pn_rng *rng);
/* out (N,D) = residual + branch * mask[n] (residual may be NULL: no add).
 * out may alias branch or residual. */
int pn_droppath_forward(float *out, const float *branch, const float *residual,
                        const float *mask, int N, size_t D);
/* dbranch (N,D) = dout * mask[n] (may alias dout); the residual's gradient is dout. */
int pn_droppath_backward(float *dbranch, const float *dout, const float *mask, int N, size_t D);

#endif
