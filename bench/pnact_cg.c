/* pnact_cg — a fixed, small workload for instruction counts of PN-Act's proxy
 * (valgrind --tool=callgrind; counts do not depend on the machine's load):
 *
 *   build/bench/pnact_cg stats ACT      pn_pnact_stats over 4096 channels, 20 times
 *   build/bench/pnact_cg step ACT       (ACT = silu | gelu | relu) forward + backward of
 *                                       PN-Act on (16, 256, 4x4) with 4 groups of GN
 *   build/bench/pnact_cg effnet         one training step (forward, loss, backward) of
 *                                       effnet_b0 width 8 gn+pn, 16 images 1x28x28
 *   build/bench/pnact_cg effnet-fwd     one evaluation forward of that model, 2 images
 *
 *   valgrind --tool=callgrind --callgrind-out-file=cg.out build/bench/pnact_cg effnet
 *   callgrind_annotate cg.out | head -30
 *
 * Inputs are deterministic (a fixed LCG); run with OMP_NUM_THREADS=1. Prints a checksum
 * so that the work is not optimized away. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/layers.h"
#include "nn/model.h"
#include "proxynorm.h"

static unsigned long long lcg = 12345;
static float frand(void) /* in [-1, 1) */
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((lcg >> 40) / 8388608.0 - 1.0);
}

static int parse_act(const char *s, pn_act *a)
{
    if (!strcmp(s, "silu")) *a = PN_ACT_SILU;
    else if (!strcmp(s, "gelu")) *a = PN_ACT_GELU;
    else if (!strcmp(s, "relu")) *a = PN_ACT_RELU;
    else return -1;
    return 0;
}

/* PN-Act parameters near their typical values (gamma ~ 1, small beta, beta_t, gamma_t). */
static pn_pnact_params random_params(float *g, float *b, float *gt, float *bt, int C)
{
    for (int c = 0; c < C; c++) {
        g[c] = 1.0f + 0.5f * frand();
        b[c] = 0.5f * frand();
        gt[c] = 0.2f * frand();
        bt[c] = 0.2f * frand();
    }
    return (pn_pnact_params){ g, b, gt, bt };
}

static int run_stats(pn_act act)
{
    enum { C = 4096 };
    static float g[C], b[C], gt[C], bt[C], m[C], s[C];
    pn_pnact_params p = random_params(g, b, gt, bt, C);
    double sum = 0;
    for (int r = 0; r < 20; r++) {
        if (pn_pnact_stats(m, s, p, C, act, PN_PROXY_EPS)) return 1;
        for (int c = 0; c < C; c++) sum += m[c] + s[c];
    }
    printf("checksum %.9g\n", sum);
    return 0;
}

static int run_step(pn_act act)
{
    enum { N = 16, C = 256, HW = 16, G = 4 };
    const size_t n = (size_t)N * C * HW;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *d = malloc(n * sizeof *d);
    static float g[C], b[C], gt[C], bt[C], m[C], s[C], dg[C], db[C], dgt[C], dbt[C];
    static float mean[N * G], rstd[N * G];
    if (!x || !y || !d) return 1;
    for (size_t i = 0; i < n; i++) {
        x[i] = frand();
        d[i] = frand();
    }
    pn_pnact_params p = random_params(g, b, gt, bt, C);
    pn_pnact_grads gr = { dg, db, dgt, dbt };
    int rc = pn_gn_pnact_forward(y, mean, rstd, m, s, x, p, N, C, HW, G, 1e-3f, act, PN_PROXY_EPS) ||
             pn_gn_pnact_backward(d, gr, d, x, mean, rstd, m, s, p, N, C, HW, G, act);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += y[i] + d[i];
    for (int c = 0; c < C; c++) sum += dg[c] + db[c] + dgt[c] + dbt[c];
    printf("checksum %.9g\n", sum);
    free(x);
    free(y);
    free(d);
    return rc;
}

static int run_effnet(int B, int train)
{
    pn_model_config cfg;
    pn_model_config_default(&cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "effnet_b0");
    cfg.width = 8;
    cfg.norm = PN_NORM_GN_PN;
    pn_model *m = NULL;
    if (pn_model_create(&m, &cfg, 0)) return 1;
    static float x[16 * 28 * 28];
    int y[16];
    for (int i = 0; i < B * 28 * 28; i++) x[i] = frand();
    for (int i = 0; i < B; i++) y[i] = i % 10;
    const float *logits;
    double loss = 0;
    int correct = 0;
    int rc = pn_model_forward(m, x, B, train, &logits) || pn_model_loss(m, y, 0.0f, &loss, &correct) ||
             (train && pn_model_backward(m, 1.0f / B));
    double sum = loss;
    const float *gr = pn_model_grads(m);
    for (size_t i = 0; i < pn_model_num_params(m); i++) sum += gr[i];
    printf("checksum %.9g\n", sum);
    pn_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    pn_act act = PN_ACT_SILU;
    int rc;
    if (argc == 3 && !strcmp(argv[1], "stats") && !parse_act(argv[2], &act)) rc = run_stats(act);
    else if (argc == 3 && !strcmp(argv[1], "step") && !parse_act(argv[2], &act)) rc = run_step(act);
    else if (argc == 2 && !strcmp(argv[1], "effnet")) rc = run_effnet(16, 1);
    else if (argc == 2 && !strcmp(argv[1], "effnet-fwd")) rc = run_effnet(2, 0);
    else {
        fprintf(stderr, "usage: %s stats|step silu|gelu|relu, or %s effnet|effnet-fwd\n", argv[0], argv[0]);
        return 2;
    }
    if (rc) fprintf(stderr, "pnact_cg: %s\n", pn_last_error());
    return rc ? 1 : 0;
}
