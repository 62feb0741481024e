/* Shared by the benchmarks: the machine's sgemm peak, measured in the same run. */
#ifndef PN_BENCH_UTIL_H
#define PN_BENCH_UTIL_H

#include <stdlib.h>

#include <cblas.h>

#include "kernels/common.h"

/* GFLOP/s of OpenBLAS's 2048^3 sgemm at the current thread count: fastest of 7 calls
 * after a warm-up; a negative value when out of memory. */
static inline double bench_sgemm_peak(void)
{
    const int n = 2048;
    const size_t nn = (size_t)n * n;
    float *a = malloc(nn * sizeof(float)), *b = malloc(nn * sizeof(float)), *c = malloc(nn * sizeof(float));
    double best = 1e30;
    if (a && b && c) {
        unsigned s = 12345;
        for (size_t i = 0; i < nn; i++) {
            s = s * 1664525u + 1013904223u;
            a[i] = (float)(s >> 8) * (1.0f / 16777216.0f);
            b[i] = 1.0f - a[i];
        }
        for (int r = 0; r < 8; r++) { /* the best of 7 after a warm-up call */
            double t0 = pn_now_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double dt = pn_now_s() - t0;
            if (r > 0 && dt < best) best = dt;
        }
    }
    free(a);
    free(b);
    free(c);
    return best < 1e30 ? 2.0 * nn * (double)n / best * 1e-9 : -1.0;
}

#endif
