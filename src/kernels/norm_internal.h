/* Internal pieces shared by the normalization kernels. */
#ifndef PN_NORM_INTERNAL_H
#define PN_NORM_INTERNAL_H

#include <stddef.h>

#include "proxynorm.h"

/* PN_CHECK_PTR with the function name given (internal variants report the public name). */
#define PN_CHECK_PTR_FN(fn, p) PN_CHECK((p) != NULL, "%s: %s is NULL", fn, #p)

/* Mean and reciprocal standard deviation of each (sample, group):
 * inp (N,C,HW), groups of C/G consecutive channels; mean, rstd (N,G).
 * One pass in double about the group's first value (pn_sum_shifted: as exact as two
 * passes, e.g. for inputs like randn*0.01 + 100); biased variance;
 * rstd = 1/sqrt(var + eps). Parallel over N*G (each statistic by one thread). */
void pn_group_stats(float *mean, float *rstd, const float *inp, int N, int C, int HW, int G,
                    float eps);

/* Sums in double over 8 fixed lanes: the lanes vectorize without -ffast-math and the
 * summation order depends only on n (not on alignment or thread count). */
#define PN_LANES 8

/* sum(x[0..n)). */
static inline double pn_sum(const float *x, size_t n)
{
    double a[PN_LANES] = {0};
    size_t i = 0;
    for (; i + PN_LANES <= n; i += PN_LANES)
        for (int k = 0; k < PN_LANES; k++) a[k] += x[i + k];
    double s = 0;
    for (; i < n; i++) s += x[i];
    for (int k = 0; k < PN_LANES; k++) s += a[k];
    return s;
}

/* sum((x - mu)^2) over x[0..n). */
static inline double pn_sum_sqdev(const float *x, size_t n, double mu)
{
    double a[PN_LANES] = {0};
    size_t i = 0;
    for (; i + PN_LANES <= n; i += PN_LANES)
        for (int k = 0; k < PN_LANES; k++) {
            double d = x[i + k] - mu;
            a[k] += d * d;
        }
    double s = 0;
    for (; i < n; i++) {
        double d = x[i] - mu;
        s += d * d;
    }
    for (int k = 0; k < PN_LANES; k++) s += a[k];
    return s;
}

/* Mean of x[0..n) in double, then sum of squared deviations (two passes, 8-lane sums). */
static inline void pn_mean_m2(const float *x, size_t n, double *mean, double *m2)
{
    double mu = pn_sum(x, n) / (double)n;
    *mean = mu;
    *m2 = pn_sum_sqdev(x, n, mu);
}

/* One-pass moments about a shift k (a value of the data, e.g. its first element):
 * *s1 += sum(x - k), *s2 += sum((x - k)^2) over x[0..n), 8 double lanes. Then
 * mean = k + s1/M and M2 = s2 - s1^2/M (pn_shifted_moments). With k one of the values,
 * (k - mean)^2 <= M2, so the subtraction loses at most log2(M) of double's 53 bits:
 * as exact as the two-pass form for float data, in one pass over memory. */
static inline void pn_sum_shifted(const float *x, size_t n, double k, double *s1, double *s2)
{
    double a[PN_LANES] = {0}, b[PN_LANES] = {0};
    size_t i = 0;
    for (; i + PN_LANES <= n; i += PN_LANES)
        for (int l = 0; l < PN_LANES; l++) {
            double d = x[i + l] - k;
            a[l] += d;
            b[l] += d * d;
        }
    double s = 0, t = 0;
    for (; i < n; i++) {
        double d = x[i] - k;
        s += d;
        t += d * d;
    }
    for (int l = 0; l < PN_LANES; l++) {
        s += a[l];
        t += b[l];
    }
    *s1 += s;
    *s2 += t;
}

/* Mean and sum of squared deviations of `count` values from their shifted sums. */
static inline void pn_shifted_moments(double k, double s1, double s2, double count, double *mean,
                                      double *m2)
{
    const double d = s1 / count, q = s2 - s1 * d;
    *mean = k + d;
    *m2 = q > 0 ? q : 0.0;
}

/* *sdy += sum(dy), *sdyx += sum(dy * (x - mu)) over [0..n): the two sums every
 * normalization backward needs (centred, so no cancellation for large means). */
static inline void pn_sum_dy_dyx(const float *dy, const float *x, size_t n, double mu,
                                 double *sdy, double *sdyx)
{
    double a[PN_LANES] = {0}, b[PN_LANES] = {0};
    size_t i = 0;
    for (; i + PN_LANES <= n; i += PN_LANES)
        for (int k = 0; k < PN_LANES; k++) {
            double g = dy[i + k];
            a[k] += g;
            b[k] += g * (x[i + k] - mu);
        }
    double s = 0, t = 0;
    for (; i < n; i++) {
        double g = dy[i];
        s += g;
        t += g * (x[i] - mu);
    }
    for (int k = 0; k < PN_LANES; k++) {
        s += a[k];
        t += b[k];
    }
    *sdy += s;
    *sdyx += t;
}

/* y[i] = (x[i] - m) * a + b over [0..n), then max(., 0) when relu (NaN -> 0, as the
 * model's separate ReLU pass did). The normalize pass of BN and the GroupNorm family. */
static inline void pn_affine_row(float *y, const float *x, int n, float m, float a, float b,
                                 int relu)
{
    if (relu) {
        #pragma omp simd
        for (int i = 0; i < n; i++) {
            const float v = (x[i] - m) * a + b;
            y[i] = v > 0.0f ? v : 0.0f;
        }
    } else {
        #pragma omp simd
        for (int i = 0; i < n; i++) y[i] = (x[i] - m) * a + b;
    }
}

/* pn_affine_row over a plane of H rows of W (src contiguous) into rows ld floats apart:
 * element for element the same floats as pn_affine_row over the whole plane (no
 * reduction, no contraction), so a convolution can read a norm's output straight from its
 * input (pn_conv_src, the model's unstored norm outputs). */
static inline void pn_affine_plane(float *dst, int ld, const float *src, int H, int W, float m,
                                   float a, float b, int relu)
{
    for (int h = 0; h < H; h++) pn_affine_row(dst + (size_t)h * ld, src + (size_t)h * W, W, m, a, b, relu);
}

/* dx[i] = c1 * dy[i] + c2 * (x[i] - m) + c3. dx may alias dy or x (each element is read
 * before it is written). */
static inline void pn_norm_dx_row(float *dx, const float *dy, const float *x, int n, float m,
                                  float c1, float c2, float c3)
{
    #pragma omp simd
    for (int i = 0; i < n; i++) dx[i] = c1 * dy[i] + c2 * (x[i] - m) + c3;
}

/* The ReLU mask of pn_affine_row recomputed from its input: (x - m) * a + b > 0, the same
 * float expression, so the same mask as the forward's output > 0 (NaN: false, as there). */
static inline float pn_relu_x_mask(float dy, float x, float m, float a, float b)
{
    const float v = (x - m) * a + b;
    return v > 0.0f ? dy : 0.0f;
}

/* pn_sum_dy_dyx on dy masked by the ReLU after the norm, the mask recomputed from x
 * (pn_relu_x_mask): the masked dy in float first, so both loops vectorize. */
static inline void pn_sum_dy_dyx_relux(const float *dy, const float *x, size_t n, float m, float a,
                                       float b, double *sdy, double *sdyx)
{
    double s1[PN_LANES] = {0}, s2[PN_LANES] = {0};
    const double mu = m;
    size_t i = 0;
    for (; i + PN_LANES <= n; i += PN_LANES) {
        float gm[PN_LANES];
        for (int k = 0; k < PN_LANES; k++) gm[k] = pn_relu_x_mask(dy[i + k], x[i + k], m, a, b);
        for (int k = 0; k < PN_LANES; k++) {
            const double g = gm[k];
            s1[k] += g;
            s2[k] += g * (x[i + k] - mu);
        }
    }
    double s = 0, t = 0;
    for (; i < n; i++) {
        double g = pn_relu_x_mask(dy[i], x[i], m, a, b);
        s += g;
        t += g * (x[i] - mu);
    }
    for (int k = 0; k < PN_LANES; k++) {
        s += s1[k];
        t += s2[k];
    }
    *sdy += s;
    *sdyx += t;
}

/* pn_norm_dx_row on dy masked as above (pn_relu_x_mask). dx may alias dy or x. */
static inline void pn_norm_dx_row_relux(float *dx, const float *dy, const float *x, int n, float m,
                                        float a, float b, float c1, float c2, float c3)
{
    #pragma omp simd
    for (int i = 0; i < n; i++) {
        const float g = pn_relu_x_mask(dy[i], x[i], m, a, b);
        dx[i] = c1 * g + c2 * (x[i] - m) + c3;
    }
}

/* ------------------------------------------------------------------------------------
 * Internal variants of the public normalization kernels (same arguments and checks;
 * the public functions call them with relu = 0 / work = NULL).
 *   relu:     the output is max(norm(x), 0): the model's norm + ReLU in one pass.
 *   _relux:   the backward of that norm + ReLU: dout masked by the ReLU as it is read, the
 *             mask recomputed from x with the forward's coefficients (no output needed).
 *   work:     caller-owned scratch of pn_groupnorm_backward_work(N, C) doubles (NULL:
 *             the kernel allocates it for the call). */
int pn_batchnorm_forward_train_ex(float *out, float *mean, float *rstd, float *running_mean,
                                  float *running_var, const float *inp, const float *weight,
                                  const float *bias, int N, int C, int HW, int norm_batch,
                                  float momentum, float eps, int relu);
/* The training forward with the multiplier a = rstd*weight of each (chunk, channel)
 * written to scale (N/g, C) (NULL: not written), for pn_batchnorm_apply. out NULL:
 * statistics only (running statistics updated; the output is applied later from
 * mean, scale and bias, e.g. by pn_affine_plane). */
int pn_batchnorm_forward_train_save(float *out, float *mean, float *rstd, float *scale,
                                    float *running_mean, float *running_var,
                                    const float *inp, const float *weight, const float *bias,
                                    int N, int C, int HW, int norm_batch,
                                    float momentum, float eps, int relu);
int pn_batchnorm_forward_eval_ex(float *out, const float *inp, const float *running_mean,
                                 const float *running_var, const float *weight, const float *bias,
                                 int N, int C, int HW, float eps, int relu);
/* The backward of max(BN(x), 0) without the output: the mask is recomputed from x with the
 * forward's coefficients (scale (N/g, C) from pn_batchnorm_forward_train_save, bias (C) or
 * NULL): pn_batchnorm_backward on the masked dout, bit for bit. */
int pn_batchnorm_backward_relux(float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *mean, const float *rstd,
                                const float *scale, const float *bias, const float *weight, int N,
                                int C, int HW, int norm_batch);
/* The GN-family backward of norm + ReLU with the mask recomputed from x with the forward's
 * coefficients (mean, rstd * weight, bias): pn_groupnorm_backward on the masked dout, bit
 * for bit. */
int pn_groupnorm_backward_relux(float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *mean, const float *rstd,
                                const float *weight, const float *bias, int N, int C, int HW,
                                int G, double *work);
int pn_groupnorm_forward_ex(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, int N, int C, int HW, int G,
                            float eps, int relu);
size_t pn_groupnorm_backward_work(int N, int C);
int pn_groupnorm_backward_ex(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int N, int C, int HW, int G, double *work);
/* Apply passes: the output of the last forward again, from its input and the saved
 * statistics (no new statistics, running statistics untouched), bit for bit what the
 * forward wrote (the forwards run these same passes). The model recomputes norm outputs
 * with them in the backward instead of keeping them (src/nn/model.c).
 *   pn_batchnorm_apply: mean, scale (N/g, C) from pn_batchnorm_forward_train_save.
 *   pn_groupnorm_apply: mean, rstd (N, G) from pn_groupnorm_forward(_ex).
 *   pn_gn_pnact_apply:  mean, rstd (N, G), m, s (C) from pn_gn_pnact_forward. */
int pn_batchnorm_apply(float *out, const float *inp, const float *mean, const float *scale,
                       const float *bias, int N, int C, int HW, int norm_batch, int relu);
int pn_groupnorm_apply(float *out, const float *inp, const float *mean, const float *rstd,
                       const float *weight, const float *bias, int N, int C, int HW, int G,
                       int relu);
int pn_gn_pnact_apply(float *out, const float *inp, const float *mean, const float *rstd,
                      const float *m, const float *s, pn_pnact_params p, int N, int C, int HW,
                      int G, pn_act act);
/* pn_gn_pnact_forward's statistics only (mean, rstd (N, G), m, s (C)), and its output
 * pass for one (sample n, channel c) plane: src (H, W) into dst rows ld apart, with
 * mu = mean[n*G + c/(C/G)], rs = rstd[same], gm = gamma[c], bt = beta[c], mm = m[c],
 * ss = s[c]; the same floats as the forward for ReLU and identity (elementwise). */
int pn_gn_pnact_stats(float *mean, float *rstd, float *m, float *s, const float *inp,
                      pn_pnact_params p, int N, int C, int HW, int G, float gn_eps, pn_act act,
                      float pn_eps);
void pn_gn_pnact_plane(float *dst, int ld, const float *src, int H, int W, float mu, float rs,
                       float gm, float bt, float mm, float ss, pn_act act);
/* pn_gn_pnact_backward with caller-owned scratch for its (N, C, 4) row sums. */
size_t pn_gn_pnact_backward_work(int N, int C);
int pn_gn_pnact_backward_ex(float *dinp, pn_pnact_grads g, const float *dout, const float *inp,
                            const float *mean, const float *rstd, const float *m, const float *s,
                            pn_pnact_params p, int N, int C, int HW, int G, pn_act act,
                            double *work);

#endif
