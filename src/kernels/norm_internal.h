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

/* Sum and mean of x[0..n) in double, then sum of squared deviations. */
static inline void pn_mean_m2(const float *x, size_t n, double *mean, double *m2)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double mu = s / (double)n, q = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - mu;
        q += d * d;
    }
    *mean = mu;
    *m2 = q;
}

#endif
