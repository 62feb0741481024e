/* Internal pieces shared by the normalization kernels. */
#ifndef PN_NORM_INTERNAL_H
#define PN_NORM_INTERNAL_H

#include <stddef.h>

/* Mean and reciprocal standard deviation of each (sample, group):
 * inp (N,C,HW), groups of C/G consecutive channels; mean, rstd (N,G).
 * Two passes in double (exact for inputs like randn*0.01 + 100); biased variance;
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

#endif
