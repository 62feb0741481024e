/* bench_norm — forward + backward time of the normalization kernels.
 *
 *   build/bench/bench_norm [-t THREADS,...] [-q]
 *
 * Ops (fwd + bwd, NCHW float32):
 *   gn    pn_groupnorm_forward/backward, G = 4, affine
 *   ln    pn_groupnorm_forward/backward, G = 1, affine
 *   bn    pn_batchnorm_forward_train (running stats, g = N) / pn_batchnorm_backward, affine
 *   gnpn  pn_gn_pnact_forward/backward: GroupNorm G = 4 (no affine) + PN-Act (ReLU), fused
 * Shapes (N,C,H,W): 128x16x28x28, 128x64x7x7, 8x256x14x14; threads 1 and 2 (pn_set_threads).
 *
 * One line per measurement, for bench/bench_norm.sh:
 *   RESULT ours OP NxCxHxW THREADS MEDIAN_MS MIN_MS REPS BYTES
 * BYTES is what the op must move at least: forward reads x and writes y, backward reads dy
 * and x and writes dx: 5 tensors of N*C*H*W floats = 20 bytes per element.
 * Median of the repetitions after 2 warm-up iterations; repetitions fill ~0.6 s (-q: ~0.1 s),
 * between 5 and 60. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxynorm.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static unsigned long long rng_state = 0x243F6A8885A308D3ULL;
static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0) + 1e-300;
}
static void fill_normal(float *x, size_t n, double mean, double std)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(mean + std * sqrt(-2.0 * log(rng_uniform())) * cos(6.283185307179586 * rng_uniform()));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int N, C, HW, G;
    float *x, *y, *dy, *dx, *mean, *rstd, *w, *b, *dw, *db, *rm, *rv;
    float *m, *s, *pg[4], *pgrad[4];
} bufs;

enum { OP_GN, OP_LN, OP_BN, OP_GNPN, OP_COUNT };
static const char *op_name[OP_COUNT] = {"gn", "ln", "bn", "gnpn"};

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_norm: %s failed: %s (%s)\n", what, pn_status_str(rc), pn_last_error());
    exit(1);
}

/* One forward + backward. */
static void step(int op, bufs *B)
{
    int rc, N = B->N, C = B->C, HW = B->HW;
    pn_pnact_params p = {B->pg[0], B->pg[1], B->pg[2], B->pg[3]};
    pn_pnact_grads g = {B->pgrad[0], B->pgrad[1], B->pgrad[2], B->pgrad[3]};
    switch (op) {
    case OP_GN:
    case OP_LN: {
        int G = op == OP_GN ? 4 : 1;
        rc = pn_groupnorm_forward(B->y, B->mean, B->rstd, B->x, B->w, B->b, N, C, HW, G, 1e-5f);
        if (rc) die("pn_groupnorm_forward", rc);
        rc = pn_groupnorm_backward(B->dx, B->dw, B->db, B->dy, B->x, B->mean, B->rstd, B->w, N, C, HW, G);
        if (rc) die("pn_groupnorm_backward", rc);
        break;
    }
    case OP_BN:
        rc = pn_batchnorm_forward_train(B->y, B->mean, B->rstd, B->rm, B->rv, B->x, B->w, B->b,
                                        N, C, HW, N, 0.1f, 1e-5f);
        if (rc) die("pn_batchnorm_forward_train", rc);
        rc = pn_batchnorm_backward(B->dx, B->dw, B->db, B->dy, B->x, B->mean, B->rstd, B->w, N, C, HW, N);
        if (rc) die("pn_batchnorm_backward", rc);
        break;
    case OP_GNPN:
        rc = pn_gn_pnact_forward(B->y, B->mean, B->rstd, B->m, B->s, B->x, p, N, C, HW, 4, 1e-3f,
                                 PN_ACT_RELU, PN_PROXY_EPS);
        if (rc) die("pn_gn_pnact_forward", rc);
        rc = pn_gn_pnact_backward(B->dx, g, B->dy, B->x, B->mean, B->rstd, B->m, B->s, p, N, C, HW, 4,
                                  PN_ACT_RELU);
        if (rc) die("pn_gn_pnact_backward", rc);
        break;
    }
}

static float *xalloc(size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (!p) { fprintf(stderr, "bench_norm: out of memory\n"); exit(1); }
    return p;
}

int main(int argc, char **argv)
{
    int threads[8] = {1, 2}, nthreads = 2, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q")) quick = 1;
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            nthreads = 0;
            for (char *tok = strtok(argv[++i], ","); tok && nthreads < 8; tok = strtok(NULL, ","))
                threads[nthreads++] = atoi(tok);
        } else {
            fprintf(stderr, "usage: %s [-t THREADS,...] [-q]\n", argv[0]);
            return 2;
        }
    }
    static const int shapes[][4] = {{128, 16, 28, 28}, {128, 64, 7, 7}, {8, 256, 14, 14}};
    const double budget = quick ? 0.1 : 0.6;
    printf("# bench_norm: fwd+bwd, median ms; bytes = 20 per element (x,y fwd; dy,x,dx bwd)\n");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        bufs B;
        memset(&B, 0, sizeof B);
        B.N = shapes[si][0];
        B.C = shapes[si][1];
        B.HW = shapes[si][2] * shapes[si][3];
        size_t n = (size_t)B.N * B.C * B.HW, C = (size_t)B.C, NC = (size_t)B.N * B.C;
        B.x = xalloc(n); B.y = xalloc(n); B.dy = xalloc(n); B.dx = xalloc(n);
        B.mean = xalloc(NC); B.rstd = xalloc(NC); /* >= (N,G) and (N/g,C) */
        B.w = xalloc(C); B.b = xalloc(C); B.dw = xalloc(C); B.db = xalloc(C);
        B.rm = xalloc(C); B.rv = xalloc(C); B.m = xalloc(C); B.s = xalloc(C);
        for (int k = 0; k < 4; k++) { B.pg[k] = xalloc(C); B.pgrad[k] = xalloc(C); }
        fill_normal(B.x, n, 0.5, 2.0);
        fill_normal(B.dy, n, 0.0, 1.0);
        fill_normal(B.w, C, 1.0, 0.2);
        fill_normal(B.b, C, 0.0, 0.2);
        fill_normal(B.pg[0], C, 1.0, 0.2);
        fill_normal(B.pg[1], C, 0.0, 0.2);
        fill_normal(B.pg[2], C, 0.0, 0.1);
        fill_normal(B.pg[3], C, 0.0, 0.1);
        for (size_t c = 0; c < C; c++) {
            B.dw[c] = B.db[c] = B.rm[c] = 0.0f;
            B.rv[c] = 1.0f;
            for (int k = 0; k < 4; k++) B.pgrad[k][c] = 0.0f;
        }
        char shape[64];
        snprintf(shape, sizeof shape, "%dx%dx%dx%d", shapes[si][0], shapes[si][1], shapes[si][2], shapes[si][3]);
        for (int ti = 0; ti < nthreads; ti++) {
            pn_set_threads(threads[ti]);
            for (int op = 0; op < OP_COUNT; op++) {
                step(op, &B);
                double t0 = now_s();
                step(op, &B);
                double first = now_s() - t0;
                int reps = (int)(budget / (first > 1e-6 ? first : 1e-6));
                if (reps < 5) reps = 5;
                if (reps > 60) reps = 60;
                double times[60];
                for (int r = 0; r < reps; r++) {
                    t0 = now_s();
                    step(op, &B);
                    times[r] = now_s() - t0;
                }
                qsort(times, reps, sizeof times[0], cmp_double);
                double med = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
                printf("RESULT ours %s %s %d %.4f %.4f %d %zu\n", op_name[op], shape, threads[ti],
                       1e3 * med, 1e3 * times[0], reps, 20 * n);
                fflush(stdout);
            }
        }
        free(B.x); free(B.y); free(B.dy); free(B.dx); free(B.mean); free(B.rstd);
        free(B.w); free(B.b); free(B.dw); free(B.db); free(B.rm); free(B.rv); free(B.m); free(B.s);
        for (int k = 0; k < 4; k++) { free(B.pg[k]); free(B.pgrad[k]); }
    }
    return 0;
}
