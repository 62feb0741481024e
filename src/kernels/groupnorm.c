/* GroupNorm (LayerNorm = 1 group, InstanceNorm = C groups): forward and backward.
 *
 * Forward: statistics per (sample, group) from pn_group_stats (two passes, double),
 * then out = (x - mean) * a_c + b_c with a_c = rstd * weight_c, b_c = bias_c,
 * one contiguous loop over HW per (sample, channel). Subtracting the mean first
 * keeps inputs with a large mean (x ~ 100 + 0.01 randn) exact.
 *
 * Backward (PyTorch's three phases), per (sample n, group g) with D = (C/G)*HW,
 * xc = x - mean, gamma_c = weight_c (1 without affine):
 *   1. per channel: sdy_c = sum dy, sdyx_c = sum dy * xc             (double)
 *   2. per group:   Sdy = sum_c gamma_c sdy_c, Sdyx = sum_c gamma_c sdyx_c,
 *                   c2 = -Sdyx * rstd^3 / D,  c3 = -Sdy * rstd / D
 *   3. stream:      dx = c1_c * dy + c2 * xc + c3,   c1_c = gamma_c * rstd
 * which is dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) with
 * dxhat = gamma * dy. Parameter gradients dweight_c = sum_n rstd * sdyx_c and
 * dbias_c = sum_n sdy_c are reduced over n in order 0..N-1 (deterministic). */
#include <stdlib.h>

#include "common.h"
#include "norm_internal.h"

static int gn_check_shape(const char *fn, int N, int C, int HW, int G)
{
    if (N <= 0 || C <= 0 || HW <= 0 || G <= 0)
        return pn_error(PN_ERR_ARG, "%s: N, C, HW, G must be > 0 (got N=%d C=%d HW=%d G=%d)",
                        fn, N, C, HW, G);
    if (C % G != 0)
        return pn_error(PN_ERR_ARG, "%s: C=%d is not divisible by G=%d groups", fn, C, G);
    return PN_OK;
}

// inp, out (N,C,HW); mean, rstd (N,G); weight, bias (C) or NULL
int pn_groupnorm_forward(float *out, float *mean, float *rstd,
                         const float *inp, const float *weight, const float *bias,
                         int N, int C, int HW, int G, float eps)
{
    PN_CHECK_PTR(out);
    PN_CHECK_PTR(mean);
    PN_CHECK_PTR(rstd);
    PN_CHECK_PTR(inp);
    int rc = gn_check_shape(__func__, N, C, HW, G);
    if (rc) return rc;
    PN_CHECK(eps >= 0.0f, "%s: eps must be >= 0 (got %g)", __func__, (double)eps);

    pn_group_stats(mean, rstd, inp, N, C, HW, G, eps);

    const int cpg = C / G;
    #pragma omp parallel for schedule(static)
    for (long nc = 0; nc < (long)N * C; nc++) {
        const int c = (int)(nc % C);
        const long ng = nc / C * G + c / cpg;
        const float m = mean[ng];
        const float a = weight ? rstd[ng] * weight[c] : rstd[ng];
        const float b = bias ? bias[c] : 0.0f;
        const float *x = inp + (size_t)nc * HW;
        float *y = out + (size_t)nc * HW;
        #pragma omp simd
        for (int i = 0; i < HW; i++) y[i] = (x[i] - m) * a + b;
    }
    return PN_OK;
}

// dout, inp, dinp (N,C,HW); mean, rstd (N,G); weight (C) or NULL; dweight, dbias (C) or NULL
int pn_groupnorm_backward(float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp,
                          const float *mean, const float *rstd, const float *weight,
                          int N, int C, int HW, int G)
{
    PN_CHECK_PTR(dinp);
    PN_CHECK_PTR(dout);
    PN_CHECK_PTR(inp);
    PN_CHECK_PTR(mean);
    PN_CHECK_PTR(rstd);
    int rc = gn_check_shape(__func__, N, C, HW, G);
    if (rc) return rc;

    /* per-(n,c) sums, kept for the parameter gradients: sdy at [nc], sdyx at [N*C + nc] */
    double *sums = NULL;
    if (dweight || dbias) {
        sums = malloc(2 * (size_t)N * C * sizeof *sums);
        if (!sums) return pn_error(PN_ERR_NOMEM, "%s: out of memory", __func__);
    }

    const int cpg = C / G;
    const double inv_d = 1.0 / ((double)cpg * HW);
    #pragma omp parallel for schedule(static)
    for (long ng = 0; ng < (long)N * G; ng++) {
        const long c0 = ng % G * cpg, nc0 = ng * cpg; /* first channel, first (n,c) */
        const double mu = mean[ng], r = rstd[ng];
        double Sdy = 0, Sdyx = 0;
        for (int j = 0; j < cpg; j++) {
            double sdy = 0, sdyx = 0;
            pn_sum_dy_dyx(dout + (size_t)(nc0 + j) * HW, inp + (size_t)(nc0 + j) * HW, HW, mu,
                          &sdy, &sdyx);
            const double gam = weight ? weight[c0 + j] : 1.0;
            Sdy += gam * sdy;
            Sdyx += gam * sdyx;
            if (sums) {
                sums[nc0 + j] = sdy;
                sums[(size_t)N * C + nc0 + j] = sdyx;
            }
        }
        const float c2 = (float)(-Sdyx * r * r * r * inv_d);
        const float c3 = (float)(-Sdy * r * inv_d);
        const float m = mean[ng];
        for (int j = 0; j < cpg; j++) {
            const float c1 = (float)((weight ? weight[c0 + j] : 1.0) * r);
            const float *dy = dout + (size_t)(nc0 + j) * HW, *x = inp + (size_t)(nc0 + j) * HW;
            float *dx = dinp + (size_t)(nc0 + j) * HW;
            #pragma omp simd
            for (int i = 0; i < HW; i++) dx[i] = c1 * dy[i] + c2 * (x[i] - m) + c3;
        }
    }

    if (sums) {
        #pragma omp parallel for schedule(static)
        for (int c = 0; c < C; c++) {
            double dw = 0, db = 0;
            for (int n = 0; n < N; n++) {
                const size_t nc = (size_t)n * C + c;
                db += sums[nc];
                dw += sums[(size_t)N * C + nc] * rstd[(size_t)n * G + c / cpg];
            }
            if (dweight) dweight[c] += (float)dw;
            if (dbias) dbias[c] += (float)db;
        }
        free(sums);
    }
    return PN_OK;
}
