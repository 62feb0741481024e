/* bench_conv — the 3x3 stride-1 convolutions of resnet20 (28x28 input, width 16) at batch
 * 128: Winograd F(2x2, 3x3) and the direct kernel (conv_direct.c) against im2col + OpenBLAS
 * sgemm, measured in the same run.
 *
 *   build/bench/bench_conv [-t "1 2"] [-r REPS] [-s N,Cin,H,W,Cout ...]
 * (-s: other 3x3 stride-1 pad-1 shapes instead of resnet20's, up to 8)
 *
 * Per shape and thread count: GFLOP/s of the forward (2*MACs of the direct convolution,
 * also for Winograd: effective GFLOP/s) and of the backward (dinp and dweight: 4*MACs),
 * fastest of REPS calls after one warm-up, the paths alternating call by call, and
 * the ratios winograd / direct (w/d) and direct / gemm (d/g) (> 1: the first is faster).
 * The backward's Winograd path computes dinp and dweight by Winograd; its column "w+d"
 * is Winograd for dinp with the direct kernel's dweight (pn_dconv_winograd_dw_enable(0)).
 * Winograd is forced (pn_dconv_winograd_enable(2)) so that every shape shows it; by default
 * the library uses it at 32 channels and more only (conv_direct.c).
 * Also OpenBLAS's large square sgemm (2048^3) as the peak of the machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/layers.h"
#include "proxynorm.h"
#include "bench_util.h"

enum { NPATH = 4 };

/* Path d: 0 Winograd (at any channel count), 1 the direct kernel, 2 im2col + sgemm, 3 (the
 * backward only) Winograd with the direct kernel's weight gradient. */
static void set_path(int d)
{
    pn_dconv_enable(d != 2);
    pn_dconv_winograd_enable(d == 0 || d == 3 ? 2 : 0);
    pn_dconv_winograd_dw_enable(d != 3);
}

/* bench_time_conv for this program's paths, then the default path back. */
static void time_conv(const pn_conv_shape *s, int bwd, int reps, double t[NPATH])
{
    bench_time_conv(s, bwd, reps, NPATH, NPATH - 1, set_path, t, "bench_conv");
    pn_dconv_enable(1);
    pn_dconv_winograd_enable(1);
    pn_dconv_winograd_dw_enable(1);
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
    printf("%-22s %3s | %8s %8s %8s %6s %6s | %8s %8s %8s %8s %6s %6s | %s\n", "shape (N,Cin,H,W,Cout)", "thr",
           "fwd wino", "dir", "gemm", "w/d", "d/g", "bwd wino", "w+d", "dir", "gemm", "w/d", "d/g",
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
            printf("%-22s %3d | %8.1f %8.1f %8.1f %6.2f %6.2f | %8.1f %8.1f %8.1f %8.1f %6.2f %6.2f |\n", name, T,
                   g[0][0], g[1][0], g[2][0], g[0][0] / g[1][0], g[1][0] / g[2][0], g[0][1], g[3][1], g[1][1],
                   g[2][1], g[0][1] / g[1][1], g[1][1] / g[2][1]);
        }
        printf("%-22s %3d | peak %.1f GFLOP/s\n", "sgemm 2048^3", T, bench_sgemm_peak());
    }
    return 0;
}
