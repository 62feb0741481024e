/* Weight Standardization: each output channel's weights (one row of K = fan-in
 * values) to zero mean and unit variance.
 *   w_hat = (w - mean) * rstd,  rstd = 1/sqrt(var + eps), var biased.
 * Backward (as a normalization without affine over the row):
 *   dw += rstd * (dw_hat - mean(dw_hat) - w_hat * mean(dw_hat * w_hat)). */
#include <math.h>

#include "common.h"
#include "norm_internal.h"

// w, w_hat are (O,K) and may alias; mean, rstd are (O)
int pn_ws_forward(float *w_hat, float *mean, float *rstd, const float *w, int O, int K, float eps)
{
    PN_CHECK_PTR(w_hat);
    PN_CHECK_PTR(mean);
    PN_CHECK_PTR(rstd);
    PN_CHECK_PTR(w);
    PN_CHECK_POS(O);
    PN_CHECK_POS(K);
    PN_CHECK(eps >= 0, "pn_ws_forward: eps must be >= 0 (got %g)", (double)eps);
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < O; o++) {
        const float *x = w + (size_t)o * K;
        float *y = w_hat + (size_t)o * K;
        double mu, m2;
        pn_mean_m2(x, (size_t)K, &mu, &m2);
        const float mf = (float)mu, rs = (float)(1.0 / sqrt(m2 / K + (double)eps));
        mean[o] = mf;
        rstd[o] = rs;
        #pragma omp simd
        for (int i = 0; i < K; i++) y[i] = (x[i] - mf) * rs;
    }
    return PN_OK;
}

// dw, dw_hat, w are (O,K); mean, rstd (O) from the forward; dw accumulates
int pn_ws_backward(float *dw, const float *dw_hat, const float *w,
                   const float *mean, const float *rstd, int O, int K)
{
    PN_CHECK_PTR(dw);
    PN_CHECK_PTR(dw_hat);
    PN_CHECK_PTR(w);
    PN_CHECK_PTR(mean);
    PN_CHECK_PTR(rstd);
    PN_CHECK_POS(O);
    PN_CHECK_POS(K);
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < O; o++) {
        const float *x = w + (size_t)o * K, *g = dw_hat + (size_t)o * K;
        float *dx = dw + (size_t)o * K;
        const float mf = mean[o], rs = rstd[o];
        double sg = 0, sgy = 0;
        #pragma omp simd reduction(+:sg, sgy)
        for (int i = 0; i < K; i++) {
            sg += g[i];
            sgy += g[i] * ((x[i] - mf) * rs);
        }
        const float k1 = (float)(sg / K), k2 = (float)(sgy / K);
        #pragma omp simd
        for (int i = 0; i < K; i++) dx[i] += rs * (g[i] - k1 - ((x[i] - mf) * rs) * k2);
    }
    return PN_OK;
}
