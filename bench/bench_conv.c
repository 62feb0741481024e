/* bench_conv — the 3x3 stride-1 convolutions of resnet20 (28x28 input, width 16) at batch
 * 128: Winograd F(2x2, 3x3) and the direct kernel (conv_direct.c) against im2col + OpenBLAS
 * sgemm, measured in the same run.
 *
 *   build/bench/bench_conv [-t "1 2"] [-r REPS] [-s N,Cin,H,W,Cout ...]
 * (-s: other 3x3 stride-1 pad-1 shapes instead of resnet20's, up to 8)
 *
 * Per shape and thread count: GFLOP/s of the forward (2*MACs of the direct convolution,
 * also for Winograd: effective GFLOP/s) and of the backward (dinp and dweight: 4*MACs),
 * fastest of REPS calls after one warm-up, the three paths alternating call by call, and
 * the ratios winograd / direct (w/d) and direct / gemm (d/g) (> 1: the first is faster).
 * Winograd is forced (pn_dconv_winograd_enable(2)) so that every shape shows it; by default
 * the library uses it at 32 channels and more only (conv_direct.c).
 * Also OpenBLAS's large square sgemm (2048^3) as the peak of the machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/layers.h"
#include "proxynorm.h"
#include "bench_util.h"

static float *filled(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_conv: out of memory\n");
        exit(1);
    }
    unsigned s = 12345;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
    return p;
}

enum { NPATH = 3 };

/* Path d: 0 Winograd (at any channel count), 1 the direct kernel, 2 im2col + sgemm. */
static void set_path(int d)
{
    pn_dconv_enable(d < 2);
    pn_dconv_winograd_enable(d == 0 ? 2 : 0);
}

/* Fastest of reps forward (bwd = 0) or backward calls, for each path (t[d]), the paths
 * alternating call by call so that all see the same state of the machine (on a shared or
 * throttled machine, medians of separate blocks of calls differ by 20% from run to run). */
static void time_conv(const pn_conv_shape *s, int bwd, int reps, double t[NPATH])
{
    int Ho, Wo;
    pn_conv_out_hw(s, &Ho, &Wo);
    const size_t nx = (size_t)s->N * s->Cin * s->H * s->W, ny = (size_t)s->N * s->Cout * Ho * Wo;
    const size_t nw = (size_t)s->Cout * s->Cin * s->KH * s->KW;
    size_t nwork = 0;
    for (int d = 0; d < NPATH; d++) {
        set_path(d);
        size_t k = pn_conv2d_workspace(s);
        if (k > nwork) nwork = k;
    }
    float *x = filled(nx), *w = filled(nw), *y = filled(ny), *dx = filled(nx), *dw = filled(nw);
    float *work = filled(nwork);
    for (int d = 0; d < NPATH; d++) t[d] = 1e30;
    for (int r = -1; r < reps; r++)
        for (int d = 0; d < NPATH; d++) {
            set_path(d);
            double t0 = pn_now_s();
            int rc = bwd ? pn_conv2d_backward(dx, dw, NULL, y, x, w, s, work)
                         : pn_conv2d_forward(y, x, w, NULL, s, work);
            if (rc != PN_OK) {
                fprintf(stderr, "bench_conv: %s\n", pn_last_error());
                exit(1);
            }
            double dt = pn_now_s() - t0;
            if (r >= 0 && dt < t[d]) t[d] = dt;
        }
    pn_dconv_enable(1);
    pn_dconv_winograd_enable(1);
    free(x); free(w); free(y); free(dx); free(dw); free(work);
}

int main(int argc, char **argv)
{
    const char *threads = "1 2";
    int reps = 15, ns = 3;
    pn_conv_shape shapes[8] = {
        { 128, 16, 28, 28, 16, 3, 3, 1, 1, 1 },
        { 128, 32, 14, 14, 32, 3, 3, 1, 1, 1 },
        { 128, 64, 7, 7, 64, 3, 3, 1, 1, 1 },
    };
    int custom = 0;
    for (int i = 1; i < argc; i++) {
        pn_conv_shape c = { 0, 0, 0, 0, 0, 3, 3, 1, 1, 1 };
        if (i + 1 < argc && !strcmp(argv[i], "-t")) threads = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "-r")) reps = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "-s") && custom < 8 &&
                 sscanf(argv[++i], "%d,%d,%d,%d,%d", &c.N, &c.Cin, &c.H, &c.W, &c.Cout) == 5 &&
                 c.N > 0 && c.Cin > 0 && c.H > 0 && c.W > 0 && c.Cout > 0)
            shapes[custom++] = c;
        else {
            fprintf(stderr, "usage: bench_conv [-t \"1 2\"] [-r REPS] [-s N,Cin,H,W,Cout ...]\n");
            return 2;
        }
    }
    if (custom) ns = custom;
    if (reps < 1) reps = 1;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", threads);
    printf("%-22s %3s | %8s %8s %8s %6s %6s | %8s %8s %8s %6s %6s | %s\n", "shape (N,Cin,H,W,Cout)", "thr",
           "fwd wino", "dir", "gemm", "w/d", "d/g", "bwd wino", "dir", "gemm", "w/d", "d/g",
           "GFLOP/s; peak = OpenBLAS sgemm 2048^3");
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
        const int T = atoi(tok);
        if (T < 1) continue;
        pn_set_threads(T);
        for (int k = 0; k < ns; k++) {
            const pn_conv_shape *s = &shapes[k];
            const double macs = (double)s->N * s->Cout * s->Cin * 9 * s->H * s->W;
            double g[NPATH][2];
            for (int b = 0; b < 2; b++) {
                double t[NPATH];
                time_conv(s, b, reps, t);
                for (int d = 0; d < NPATH; d++) g[d][b] = (b ? 4 : 2) * macs / t[d] * 1e-9;
            }
            char name[32];
            snprintf(name, sizeof name, "%d,%d,%d,%d,%d", s->N, s->Cin, s->H, s->W, s->Cout);
            printf("%-22s %3d | %8.1f %8.1f %8.1f %6.2f %6.2f | %8.1f %8.1f %8.1f %6.2f %6.2f |\n", name, T,
                   g[0][0], g[1][0], g[2][0], g[0][0] / g[1][0], g[1][0] / g[2][0], g[0][1], g[1][1], g[2][1],
                   g[0][1] / g[1][1], g[1][1] / g[2][1]);
        }
        printf("%-22s %3d | peak %.1f GFLOP/s\n", "sgemm 2048^3", T, bench_sgemm_peak());
    }
    return 0;
}
