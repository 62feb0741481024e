/* Shared by the benchmarks: the machine's sgemm peak, measured in the same run, and the
 * timing of convolution paths against each other (bench_conv, bench_conv_s2). */
#ifndef PN_BENCH_UTIL_H
#define PN_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include <cblas.h>

#include "kernels/common.h"
#include "kernels/layers.h"
#include "proxynorm.h"

/* n floats of a fixed pseudo-random sequence in [-0.5, 0.5); out of memory: a message
 * naming prog and exit(1). */
static inline float *bench_filled(size_t n, const char *prog)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "%s: out of memory\n", prog);
        exit(1);
    }
    unsigned s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
    return p;
}

/* Fastest of reps forward (bwd = 0) or backward calls of the paths d = 0 .. npath - 1
 * (set_path(d) selects one; the forward times only the first nfwd) into t[d], the paths
 * alternating call by call so that all see the same state of the machine (on a shared or
 * throttled machine, medians of separate blocks of calls differ by 20% from run to run).
 * The caller restores its default path afterwards. */
static inline void bench_time_conv(const pn_conv_shape *s, int bwd, int reps, int npath, int nfwd,
                                   void (*set_path)(int), double *t, const char *prog)
{
    int Ho, Wo;
    pn_conv_out_hw(s, &Ho, &Wo);
    const size_t nx = (size_t)s->N * s->Cin * s->H * s->W, ny = (size_t)s->N * s->Cout * Ho * Wo;
    const size_t nw = (size_t)s->Cout * s->Cin * s->KH * s->KW;
    size_t nwork = 0;
    for (int d = 0; d < npath; d++) {
        set_path(d);
        size_t k = pn_conv2d_workspace(s);
        if (k > nwork) nwork = k;
    }
    float *x = bench_filled(nx, prog), *w = bench_filled(nw, prog), *y = bench_filled(ny, prog);
    float *dx = bench_filled(nx, prog), *dw = bench_filled(nw, prog), *work = bench_filled(nwork, prog);
    for (int d = 0; d < npath; d++) t[d] = 1e30;
    for (int r = -1; r < reps; r++)
        for (int d = 0; d < (bwd ? npath : nfwd); d++) {
            set_path(d);
            double t0 = pn_now_s();
            int rc = bwd ? pn_conv2d_backward(dx, dw, NULL, y, x, w, s, work)
                         : pn_conv2d_forward(y, x, w, NULL, s, work);
            if (rc != PN_OK) {
                fprintf(stderr, "%s: %s\n", prog, pn_last_error());
                exit(1);
            }
            double dt = pn_now_s() - t0;
            if (r >= 0 && dt < t[d]) t[d] = dt;
        }
    free(x); free(w); free(y); free(dx); free(dw); free(work);
}

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
