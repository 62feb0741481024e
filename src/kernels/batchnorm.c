/* BatchNorm with "ghost" normalization batches: training forward, evaluation
 * forward and exact training backward.
 *
 * The batch of N samples is cut into N/g consecutive chunks of g samples; each
 * chunk k is normalized with its own per-channel statistics over (g, HW), saved
 * as mean, rstd (N/g, C) at [k*C + c]. Work is split over channels (OpenMP,
 * static); inside a channel, chunks run in order, so the running statistics see
 * the same sequence of updates as N/g PyTorch calls on consecutive chunks.
 *
 * Backward per (chunk k, channel c), M = g*HW, xc = x - mean, gamma = weight_c:
 *   sdy = sum dy, sdyx = sum dy * xc                                  (double)
 *   dx = gamma*rstd*dy - gamma*rstd^3*sdyx/M * xc - gamma*rstd*sdy/M
 *   dweight_c += sum_k rstd_k * sdyx_k,  dbias_c += sum_k sdy_k  (chunk order). */
#include <math.h>

#include "common.h"
#include "norm_internal.h"

static int bn_check(const char *fn, int N, int C, int HW, int g)
{
    if (N <= 0 || C <= 0 || HW <= 0)
        return pn_error(PN_ERR_ARG, "%s: N, C, HW must be > 0 (got N=%d C=%d HW=%d)",
                        fn, N, C, HW);
    if (g <= 0) g = N;
    if (N % g != 0)
        return pn_error(PN_ERR_ARG, "%s: norm_batch %d does not divide the batch size N=%d",
                        fn, g, N);
    if ((long long)g * HW == 1)
        return pn_error(PN_ERR_ARG,
                        "%s: a normalization batch of one value per channel (g*HW = 1) has "
                        "no variance; use norm_batch > 1 or HW > 1",
                        fn);
    return PN_OK;
}

// inp, out (N,C,HW); mean, rstd (N/g,C); running_mean, running_var, weight, bias (C) or NULL
int pn_batchnorm_forward_train(float *out, float *mean, float *rstd,
                               float *running_mean, float *running_var,
                               const float *inp, const float *weight, const float *bias,
                               int N, int C, int HW, int norm_batch,
                               float momentum, float eps)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(mean);
    PN_CHECK_PTR(rstd);
    PN_CHECK_PTR(inp);
    int rc = bn_check(__func__, N, C, HW, norm_batch);
    if (rc) return rc;
    PN_CHECK(eps >= 0.0f, "%s: eps must be >= 0 (got %g)", __func__, (double)eps);
    PN_CHECK(momentum >= 0.0f && momentum <= 1.0f, "%s: momentum must be in [0, 1] (got %g)",
             __func__, (double)momentum);
    PN_CHECK((running_mean == NULL) == (running_var == NULL),
             "%s: running_mean and running_var must both be given or both be NULL", __func__);

    const int g = norm_batch <= 0 ? N : norm_batch, chunks = N / g;
    const double count = (double)g * HW;
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        for (int k = 0; k < chunks; k++) {
            const size_t base = (size_t)k * g * C + c; /* (n, c) index of the chunk's first sample */
            double s = 0, q = 0;
            for (int n = 0; n < g; n++) s += pn_sum(inp + (base + (size_t)n * C) * HW, HW);
            const double mu = s / count;
            for (int n = 0; n < g; n++) q += pn_sum_sqdev(inp + (base + (size_t)n * C) * HW, HW, mu);
            const double var = q / count, r = 1.0 / sqrt(var + (double)eps);
            mean[(size_t)k * C + c] = (float)mu;
            rstd[(size_t)k * C + c] = (float)r;
            if (running_mean) {
                const double mom = momentum;
                running_mean[c] = (float)((1.0 - mom) * running_mean[c] + mom * mu);
                running_var[c] = (float)((1.0 - mom) * running_var[c] + mom * q / (count - 1.0));
            }
            const float m = (float)mu;
            const float a = (float)(weight ? r * weight[c] : r);
            const float b = bias ? bias[c] : 0.0f;
            for (int n = 0; n < g; n++) {
                const float *x = inp + (base + (size_t)n * C) * HW;
                float *y = out + (base + (size_t)n * C) * HW;
                #pragma omp simd
                for (int i = 0; i < HW; i++) y[i] = (x[i] - m) * a + b;
            }
        }
    }
    return PN_OK;
}

// inp, out (N,C,HW); running_mean, running_var (C); weight, bias (C) or NULL
int pn_batchnorm_forward_eval(float *out, const float *inp,
                              const float *running_mean, const float *running_var,
                              const float *weight, const float *bias,
                              int N, int C, int HW, float eps)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(running_mean);
    PN_CHECK_PTR(running_var);
    PN_CHECK(N > 0 && C > 0 && HW > 0, "%s: N, C, HW must be > 0 (got N=%d C=%d HW=%d)",
             __func__, N, C, HW);
    PN_CHECK(eps >= 0.0f, "%s: eps must be >= 0 (got %g)", __func__, (double)eps);

    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const int c = (int)(nc % C);
        const double r = 1.0 / sqrt((double)running_var[c] + (double)eps);
        const float m = running_mean[c];
        const float a = (float)(weight ? r * weight[c] : r);
        const float b = bias ? bias[c] : 0.0f;
        const float *x = inp + (size_t)nc * HW;
        float *y = out + (size_t)nc * HW;
        #pragma omp simd
        for (int i = 0; i < HW; i++) y[i] = (x[i] - m) * a + b;
    }
    return PN_OK;
}

// dout, inp, dinp (N,C,HW); mean, rstd (N/g,C); weight (C) or NULL; dweight, dbias (C) or NULL
int pn_batchnorm_backward(float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *weight,
                          int N, int C, int HW, int norm_batch)
{
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(mean);
    PN_CHECK_PTR(rstd);
    int rc = bn_check(__func__, N, C, HW, norm_batch);
    if (rc) return rc;

    const int g = norm_batch <= 0 ? N : norm_batch, chunks = N / g;
    const double inv_m = 1.0 / ((double)g * HW);
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const double gam = weight ? weight[c] : 1.0;
        double dw = 0, db = 0;
        for (int k = 0; k < chunks; k++) {
            const size_t base = (size_t)k * g * C + c;
            const float m = mean[(size_t)k * C + c];
            const double r = rstd[(size_t)k * C + c];
            double sdy = 0, sdyx = 0;
            for (int n = 0; n < g; n++) {
                const size_t off = (base + (size_t)n * C) * HW;
                pn_sum_dy_dyx(dout + off, inp + off, HW, m, &sdy, &sdyx);
            }
            dw += r * sdyx;
            db += sdy;
            const float c1 = (float)(gam * r);
            const float c2 = (float)(-gam * r * r * r * sdyx * inv_m);
            const float c3 = (float)(-gam * r * sdy * inv_m);
            for (int n = 0; n < g; n++) {
                const size_t off = (base + (size_t)n * C) * HW;
                const float *dy = dout + off, *x = inp + off;
                float *dx = dinp + off;
                #pragma omp simd
                for (int i = 0; i < HW; i++) dx[i] = c1 * dy[i] + c2 * (x[i] - m) + c3;
            }
        }
        if (dweight) dweight[c] += (float)dw;
        if (dbias) dbias[c] += (float)db;
    }
    return PN_OK;
}
