/* Per-(sample, group) statistics shared by GroupNorm/LayerNorm/InstanceNorm and
 * the fused GN + PN-Act kernel. */
#include <math.h>

#include "norm_internal.h"

// inp is (N,C,HW); mean, rstd are (N,G)
void pn_group_stats(float *mean, float *rstd, const float *inp, int N, int C, int HW, int G,
                    float eps)
{
    const size_t group_size = (size_t)(C / G) * (size_t)HW;
    #pragma omp parallel for schedule(static)
    for (long ng = 0; ng < (long)N * G; ng++) {
        const float *x = inp + (size_t)ng * group_size;
        const double k = x[0];
        double s1 = 0, s2 = 0, mu, m2;
        pn_sum_shifted(x, group_size, k, &s1, &s2);
        pn_shifted_moments(k, s1, s2, (double)group_size, &mu, &m2);
        mean[ng] = (float)mu;
        rstd[ng] = (float)(1.0 / sqrt(m2 / (double)group_size + (double)eps));
    }
}
