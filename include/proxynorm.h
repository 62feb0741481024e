/*
 * proxynorm.h — batch-independent normalization kernels for CNNs.
 *
 * Conventions (every kernel below):
 *   - Tensors are float32, NCHW, contiguous, owned by the caller. HW = H*W.
 *   - A forward saves exactly what its backward needs (mean, rstd, proxy m, s) in
 *     small caller-owned buffers whose shapes are given in each comment.
 *   - Backward: the input gradient is WRITTEN (=); parameter gradients are
 *     ACCUMULATED (+=), so gradients of micro-batches add up for free.
 *     Parameter-gradient pointers may be NULL when the parameter is absent.
 *   - Reductions accumulate in double. Results are identical run to run for a
 *     given thread count (OpenMP, static partitions, fixed reduction order).
 *   - Every function returns PN_OK (0) or a negative pn_status; on error nothing
 *     is written and pn_last_error() gives a readable message.
 *
 * Normalization families:
 *   GroupNorm  statistics over (C/G)*HW per (sample, group). LayerNorm = G 1,
 *              InstanceNorm = G C. Biased variance.
 *   BatchNorm  statistics over (g, HW) per channel for each consecutive chunk of
 *              g samples ("normalization batch"; g = N is ordinary BN).
 *   PN-Act     Proxy Normalization: affine + activation + normalization by the
 *              mean and variance of a Gaussian proxy passed through the same
 *              affine and activation (docs/proxy-norm.md).
 */
#ifndef PROXYNORM_H
#define PROXYNORM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PN_VERSION "0.1.0"

/* ---------------------------------------------------------------- errors */
typedef enum {
    PN_OK = 0,
    PN_ERR_ARG = -1,     /* invalid argument (shape, NULL pointer, value)   */
    PN_ERR_NOMEM = -2,   /* allocation failed                               */
    PN_ERR_IO = -3,      /* read/write/open failed                          */
    PN_ERR_FORMAT = -4,  /* malformed file or data                          */
    PN_ERR_NUMERIC = -5, /* NaN or Inf where a finite value was required    */
} pn_status;

/* Message describing the last error raised in this thread ("" if none). */
const char *pn_last_error(void);
/* Short name of a status code ("invalid argument", ...). */
const char *pn_status_str(int status);

/* Number of OpenMP threads used by the kernels and OpenBLAS (<= 0: all cores).
 * Sets both so that they never oversubscribe the cores. */
void pn_set_threads(int n);
int pn_get_threads(void);

/* ----------------------------------------------------------- activations */
typedef enum {
    PN_ACT_IDENTITY = 0,
    PN_ACT_RELU = 1,
    PN_ACT_SILU = 2,
    PN_ACT_GELU = 3, /* exact (erf) form: x * Phi(x) */
} pn_act;

/* "identity", "relu", "silu", "gelu"; parse returns -1 if unknown. */
const char *pn_act_name(pn_act act);
int pn_act_parse(const char *name);

/* Scalar activation and derivative. */
float pn_act_f(pn_act act, float x);
float pn_act_df(pn_act act, float x);

/* out = phi(inp). inp, out are (n); may alias. */
int pn_act_forward(float *out, const float *inp, size_t n, pn_act act);
/* dinp = dout * phi'(inp). all (n). dinp may alias dout. */
int pn_act_backward(float *dinp, const float *dout, const float *inp, size_t n, pn_act act);

/* ------------------------------------------------ GroupNorm / LN / IN */
/* inp, out are (N,C,HW); mean, rstd are (N,G); weight, bias are (C) or NULL
 * (no affine). out = (inp - mean) * rstd * weight + bias. Requires C % G == 0.
 * rstd = 1/sqrt(var + eps), var biased. */
int pn_groupnorm_forward(float *out, float *mean, float *rstd,
                         const float *inp, const float *weight, const float *bias,
                         int N, int C, int HW, int G, float eps);
/* dout, inp, dinp are (N,C,HW); mean, rstd (N,G) from the forward.
 * dweight, dbias (C) accumulate; either may be NULL. weight NULL = no affine. */
int pn_groupnorm_backward(float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *weight,
                          int N, int C, int HW, int G);

/* ------------------------------------------------------------ BatchNorm */
/* Training mode. inp, out (N,C,HW); norm_batch g divides N (g <= 0 means N);
 * mean, rstd are (N/g, C): statistics of each chunk of g consecutive samples.
 * running_mean, running_var (C) or NULL: updated once per chunk, in order, as
 * PyTorch does for one call on that chunk:
 *   running = (1 - momentum) * running + momentum * stat,
 * with the unbiased variance (count/(count-1)) for running_var. weight, bias (C)
 * or NULL. A chunk with a single element (g*HW == 1) is an error. */
int pn_batchnorm_forward_train(float *out, float *mean, float *rstd,
                               float *running_mean, float *running_var,
                               const float *inp, const float *weight, const float *bias,
                               int N, int C, int HW, int norm_batch,
                               float momentum, float eps);
/* Evaluation mode with the running statistics. */
int pn_batchnorm_forward_eval(float *out, const float *inp,
                              const float *running_mean, const float *running_var,
                              const float *weight, const float *bias,
                              int N, int C, int HW, float eps);
/* Backward of training mode (exact, through the batch statistics). */
int pn_batchnorm_backward(float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *weight,
                          int N, int C, int HW, int norm_batch);

/* --------------------------------------------------------------- PN-Act */
#define PN_PROXY_POINTS 200
#define PN_PROXY_EPS 0.03f

/* The N = PN_PROXY_POINTS fixed proxy points z_i = Phi^-1((i + 1/2)/N). */
const float *pn_proxy_points(void);

/* Parameters of one PN-Act layer, each (C): beta, gamma (affine; init 0, 1),
 * beta_t, gamma_t (proxy shift/scale offsets; init 0, 0). */
typedef struct {
    const float *gamma, *beta, *gamma_t, *beta_t;
} pn_pnact_params;
typedef struct {
    float *dgamma, *dbeta, *dgamma_t, *dbeta_t; /* each (C), accumulated */
} pn_pnact_grads;

/* Proxy statistics m, s (C) from the parameters only: cost O(C * 200). */
int pn_pnact_stats(float *m, float *s, pn_pnact_params p, int C, pn_act act, float eps);

/* out = (phi(gamma*inp + beta) - m) * s per channel. inp, out (N,C,HW) (may
 * alias); m, s (C) are written (save them for the backward). */
int pn_pnact_forward(float *out, float *m, float *s, const float *inp,
                     pn_pnact_params p, int N, int C, int HW, pn_act act, float eps);
/* Exact backward, through m and s into all four parameters. dinp (N,C,HW) is
 * written; grads accumulate (any may be NULL). phi(a) is recomputed from inp. */
int pn_pnact_backward(float *dinp, pn_pnact_grads g, const float *dout, const float *inp,
                      const float *m, const float *s, pn_pnact_params p,
                      int N, int C, int HW, pn_act act);
/* Inference folding: out = scale * phi(gamma*inp + beta) + shift, (C) each. */
int pn_pnact_fold(float *scale, float *shift, pn_pnact_params p, int C, pn_act act, float eps);

/* Fused GroupNorm (no affine) followed by PN-Act, one pass over the data each
 * way. out (N,C,HW); mean, rstd (N,G); m, s (C). The backward recomputes the
 * normalized input from inp, mean, rstd (nothing else is stored). */
int pn_gn_pnact_forward(float *out, float *mean, float *rstd, float *m, float *s,
                        const float *inp, pn_pnact_params p,
                        int N, int C, int HW, int G, float gn_eps, pn_act act, float pn_eps);
int pn_gn_pnact_backward(float *dinp, pn_pnact_grads g, const float *dout, const float *inp,
                         const float *mean, const float *rstd, const float *m, const float *s,
                         pn_pnact_params p, int N, int C, int HW, int G, pn_act act);

/* ------------------------------------------------ Weight Standardization */
/* w, w_hat are (O, K) (K = fan-in = Cin/groups*kh*kw); mean, rstd (O).
 * w_hat = (w - mean) * rstd, rstd = 1/sqrt(var + eps), var biased. */
int pn_ws_forward(float *w_hat, float *mean, float *rstd, const float *w, int O, int K, float eps);
/* dw (O,K) is ACCUMULATED (it is a parameter gradient) from dw_hat. */
int pn_ws_backward(float *dw, const float *dw_hat, const float *w,
                   const float *mean, const float *rstd, int O, int K);

#ifdef __cplusplus
}
#endif
#endif /* PROXYNORM_H */
