/* bench_conv_s2 — resnet20's stride-2 convolutions (28x28 input, width 16) at batch 128:
 * the 3x3 ones (16->32 on 28x28, 32->64 on 14x14) and the 1x1 projections of the same
 * shapes. Three paths, alternating call by call: "new" the stride-2 paths of conv_direct.c
 * (the 3x3 input gradient by four phase correlations, the direct 1x1 strided kernels),
 * "old" the same shapes with pn_conv_stride2_enable(0) (the 3x3 input gradient by
 * GEMM + col2im, the 1x1 by im2col + sgemm; the 3x3 forward and weight gradient are the
 * direct kernel's in both), "gemm" im2col + sgemm only (pn_dconv_enable(0)).
 *
 *   build/bench/bench_conv_s2 [-t "1 2"] [-r REPS] [-s N,Cin,H,W,Cout,stride,k ...]
 * (-s: other shapes instead of resnet20's, up to 8; pad k/2)
 *
 * Per shape and thread count: GFLOP/s of the forward (2*MACs) and of the backward (dinp
 * and dweight: 4*MACs), fastest of REPS calls after one warm-up, and the ratios new / old
 * (n/o) and old / gemm (o/g) (> 1: the first is faster). Also OpenBLAS's large square sgemm
 * (2048^3) as the peak of the machine (on a shared machine it shows how contended the run
 * was). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/layers.h"
#include "proxynorm.h"
#include "bench_util.h"

enum { NPATH = 3 };

/* Path d: 0 new, 1 old, 2 gemm (see the top comment). */
static void set_path(int d)
{
    pn_dconv_enable(d < 2);
    pn_conv_stride2_enable(d == 0);
}

/* bench_time_conv for this program's paths, then the default path back. */
static void time_conv(const pn_conv_shape *s, int bwd, int reps, double t[NPATH])
{
    bench_time_conv(s, bwd, reps, NPATH, NPATH, set_path, t, "bench_conv_s2");
    set_path(0);
}

int main(int argc, char **argv)
{
    const char *threads = "1 2";
    int reps = 15, ns = 4;
    pn_conv_shape shapes[8] = {
        { 128, 16, 28, 28, 32, 3, 3, 2, 1, 1 },
        { 128, 32, 14, 14, 64, 3, 3, 2, 1, 1 },
        { 128, 16, 28, 28, 32, 1, 1, 2, 0, 1 },
        { 128, 32, 14, 14, 64, 1, 1, 2, 0, 1 },
    };
    int custom = 0;
    for (int i = 1; i < argc; i++) {
        pn_conv_shape c = { 0, 0, 0, 0, 0, 3, 3, 2, 1, 1 };
        int st = 0, k = 0;
        if (i + 1 < argc && !strcmp(argv[i], "-t")) threads = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "-r")) reps = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "-s") && custom < 8 &&
                 sscanf(argv[++i], "%d,%d,%d,%d,%d,%d,%d", &c.N, &c.Cin, &c.H, &c.W, &c.Cout, &st, &k) == 7 &&
                 c.N > 0 && c.Cin > 0 && c.H > 0 && c.W > 0 && c.Cout > 0 && st > 0 && k > 0 && k <= c.H &&
                 k <= c.W) {
            c.stride = st;
            c.KH = c.KW = k;
            c.pad = k / 2;
            shapes[custom++] = c;
        } else {
            fprintf(stderr, "usage: bench_conv_s2 [-t \"1 2\"] [-r REPS] [-s N,Cin,H,W,Cout,stride,k ...]\n");
            return 2;
        }
    }
    if (custom) ns = custom;
    if (reps < 1) reps = 1;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", threads);
    printf("%-26s %3s | %8s %8s %8s %6s %6s | %8s %8s %8s %6s %6s | %s\n", "shape (N,Cin,H,W,Cout,s,k)", "thr",
           "fwd new", "old", "gemm", "n/o", "o/g", "bwd new", "old", "gemm", "n/o", "o/g",
           "GFLOP/s; peak = OpenBLAS sgemm 2048^3");
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " ")) {
        const int T = atoi(tok);
        if (T < 1) continue;
        pn_set_threads(T);
        for (int k = 0; k < ns; k++) {
            const pn_conv_shape *s = &shapes[k];
            int Ho, Wo;
            pn_conv_out_hw(s, &Ho, &Wo);
            const double macs = (double)s->N * s->Cout * s->Cin * s->KH * s->KW * Ho * Wo;
            double g[NPATH][2];
            for (int b = 0; b < 2; b++) {
                double t[NPATH];
                time_conv(s, b, reps, t);
                for (int d = 0; d < NPATH; d++) g[d][b] = (b ? 4 : 2) * macs / t[d] * 1e-9;
            }
            char name[48];
            snprintf(name, sizeof name, "%d,%d,%d,%d,%d,%d,%d", s->N, s->Cin, s->H, s->W, s->Cout, s->stride,
                     s->KH);
            printf("%-26s %3d | %8.1f %8.1f %8.1f %6.2f %6.2f | %8.1f %8.1f %8.1f %6.2f %6.2f |\n", name, T,
                   g[0][0], g[1][0], g[2][0], g[0][0] / g[1][0], g[1][0] / g[2][0], g[0][1], g[1][1], g[2][1],
                   g[0][1] / g[1][1], g[1][1] / g[2][1]);
        }
        printf("%-26s %3d | peak %.1f GFLOP/s\n", "sgemm 2048^3", T, bench_sgemm_peak());
    }
    return 0;
}
