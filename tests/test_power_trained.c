/* The power decomposition of networks built from the model (src/diag/power.h,
 * pn_power_model; src/nn/model.h, pn_model_norm_output): batch accumulation
 * equals the one-shot terms, the normalized outputs are what each norm makes,
 * the four terms add up to the power in every layer, BN's channel-wise squared
 * mean is 0 with batch statistics and with running statistics equal to them,
 * nothing in the model changes; and the command line: `power --checkpoint`
 * (table, CSV, plot, bad input) and `train --power-every` (rows, and the very
 * same training as without it). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "cli_util.h"
#include "synth_idx.h"
#include "diag/power.h"
#include "io/safetensors.h"
#include "nn/model.h"


/* ------------------------------------------------------------ accumulator */

/* Adding the inputs in uneven batches gives the terms of all of them at once. */
TEST(test_acc_matches_terms)
{
    const int N = 23, C = 5, HW = 17;
    float *y = malloc((size_t)N * C * HW * sizeof *y);
    harness_seed(3);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            harness_fill_normal(y + ((size_t)n * C + c) * HW, (size_t)HW, 0.7 * c - 1 + harness_normal(),
                                0.3 + harness_uniform());
    pn_power_decomp whole, acc;
    CHECK(pn_power_terms(&whole, y, N, C, HW) == PN_OK, "%s", pn_last_error());
    const int cuts[][4] = { { 23, 0, 0, 0 }, { 1, 22, 0, 0 }, { 5, 7, 1, 10 }, { 20, 3, 0, 0 } };
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        pn_power_acc a;
        CHECK(pn_power_acc_init(&a, C) == PN_OK, "%s", pn_last_error());
        int off = 0;
        for (int j = 0; j < 4 && cuts[k][j]; j++) {
            CHECK(pn_power_acc_add(&a, y + (size_t)off * C * HW, cuts[k][j], C, HW) == PN_OK, "%s",
                  pn_last_error());
            off += cuts[k][j];
        }
        CHECK(off == N, "cut %zu covers %d inputs", k, off);
        CHECK(pn_power_acc_result(&a, &acc) == PN_OK, "%s", pn_last_error());
        CHECK_NEAR(acc.sq_mean, whole.sq_mean, 1e-12 * (1 + whole.sq_mean));
        CHECK_NEAR(acc.var_mean, whole.var_mean, 1e-12 * (1 + whole.var_mean));
        CHECK_NEAR(acc.sq_std, whole.sq_std, 1e-12 * (1 + whole.sq_std));
        CHECK_NEAR(acc.var_std, whole.var_std, 1e-12 * (1 + whole.var_std));
        CHECK_NEAR(acc.power, whole.power, 1e-12 * whole.power);
        pn_power_acc_free(&a);
    }
    CHECK(whole.var_mean > 0.05 && whole.var_std > 1e-3, "test data too tame");
    /* bad use: a clear error, no crash */
    pn_power_acc a;
    CHECK(pn_power_acc_init(&a, 0) == PN_ERR_ARG, "zero channels");
    CHECK(pn_power_acc_init(&a, C) == PN_OK, "%s", pn_last_error());
    CHECK(pn_power_acc_result(&a, &acc) == PN_ERR_ARG, "result of nothing");
    CHECK(pn_power_acc_add(&a, y, N, C + 1, HW) == PN_ERR_ARG, "channel mismatch");
    pn_power_acc_free(&a);
    pn_power_acc_free(&a); /* twice is harmless */
    free(y);
}

/* ------------------------------------------------------------ the model */

enum { IMG = 8, INC = 1, CLASSES = 4 };

static pn_model *tiny_model(pn_norm_kind norm, int norm_batch)
{
    pn_model_config c;
    pn_model_config_default(&c);
    snprintf(c.arch, sizeof c.arch, "resnet8");
    c.norm = norm;
    c.width = 4;
    c.groups = 2;
    c.norm_batch = norm_batch;
    c.in_channels = INC;
    c.image = IMG;
    c.classes = CLASSES;
    pn_model *m = NULL;
    if (pn_model_create(&m, &c, 5) != PN_OK) return NULL;
    /* move every parameter away from its init, so that affines are not identities */
    int np = 0;
    const pn_tensor_info *t = pn_model_param_table(m, &np);
    float *p = pn_model_params(m);
    harness_seed(77);
    for (int i = 0; i < np; i++)
        for (size_t j = 0; j < t[i].numel; j++) p[t[i].offset + j] += (float)(0.1 * harness_normal());
    return m;
}

static float *images(int n, unsigned long long seed)
{
    float *x = malloc((size_t)n * INC * IMG * IMG * sizeof *x);
    harness_seed(seed);
    for (int i = 0; i < n; i++)
        harness_fill_normal(x + (size_t)i * INC * IMG * IMG, INC * IMG * IMG, 0.3 * harness_normal(),
                            1.0);
    return x;
}

static const pn_norm_kind kinds[] = { PN_NORM_BN, PN_NORM_GN, PN_NORM_LN, PN_NORM_IN,
                                      PN_NORM_GN_PN, PN_NORM_LN_PN, PN_NORM_LN_WS, PN_NORM_NONE };
#define NKINDS ((int)(sizeof kinds / sizeof *kinds))

/* The normalized output of each layer has the statistics its norm imposes. */
TEST(test_norm_output)
{
    const int N = 6;
    float *x = images(N, 1);
    for (int k = 0; k < NKINDS; k++) {
        pn_model *m = tiny_model(kinds[k], 0);
        CHECK(m != NULL, "%s: %s", pn_norm_name(kinds[k]), pn_last_error());
        if (!m) continue;
        pn_norm_layer_info info;
        CHECK(pn_model_norm_output(m, 0, &info, NULL) == PN_OK, "%s", pn_last_error());
        CHECK(info.count == 7 && info.B == 0, "count %d, B %d", info.count, info.B);
        CHECK(strcmp(info.name, "stage1.block0.norm1") == 0, "name %s", info.name);
        float dummy[1];
        CHECK(pn_model_norm_output(m, 0, NULL, dummy) == PN_ERR_ARG, "y before a forward");
        CHECK(pn_model_norm_output(m, 7, &info, NULL) == PN_ERR_ARG, "layer out of range");
        CHECK(pn_model_norm_output(m, -1, &info, NULL) == PN_ERR_ARG, "negative layer");
        CHECK(pn_model_norm_output(m, 6, &info, NULL) == PN_OK && strcmp(info.name, "final.norm") == 0,
              "last name %s", info.name);
        CHECK(pn_model_norm_output(m, 3, &info, NULL) == PN_OK &&
                  strcmp(info.name, "stage2.block0.norm2") == 0 && info.C == 8 && info.HW == 16,
              "layer 4: %s C %d HW %d", info.name, info.C, info.HW);
        for (int training = 0; training <= 1; training++) {
            CHECK(pn_model_forward(m, x, N, training, NULL) == PN_OK, "%s", pn_last_error());
            for (int l = 0; l < 7; l++) {
                CHECK(pn_model_norm_output(m, l, &info, NULL) == PN_OK, "%s", pn_last_error());
                CHECK(info.B == N && info.training == training, "B %d training %d", info.B, info.training);
                const int C = info.C, HW = info.HW;
                float *y = malloc((size_t)N * C * HW * sizeof *y);
                CHECK(pn_model_norm_output(m, l, NULL, y) == PN_OK, "%s", pn_last_error());
                /* moments over the sets each norm normalizes over */
                double worst_mean = 0, worst_var = 0, spread = 0;
                const int groups = kinds[k] == PN_NORM_BN ? C : info.G;
                if (kinds[k] == PN_NORM_NONE) {
                    CHECK(groups == 0, "none has groups %d", groups);
                } else if (kinds[k] == PN_NORM_BN) {
                    CHECK(info.G == 0, "BN groups %d", info.G);
                    for (int c = 0; c < C; c++) {
                        double s = 0, q = 0;
                        for (int n = 0; n < N; n++)
                            for (int p = 0; p < HW; p++) s += y[((size_t)n * C + c) * HW + p];
                        s /= (double)N * HW;
                        for (int n = 0; n < N; n++)
                            for (int p = 0; p < HW; p++) {
                                double d = y[((size_t)n * C + c) * HW + p] - s;
                                q += d * d;
                            }
                        q /= (double)N * HW;
                        if (fabs(s) > worst_mean) worst_mean = fabs(s);
                        if (fabs(q - 1) > worst_var) worst_var = fabs(q - 1);
                        spread += fabs(s);
                    }
                } else {
                    const int cg = C / info.G;
                    for (int n = 0; n < N; n++)
                        for (int g = 0; g < info.G; g++) {
                            const float *r = y + ((size_t)n * C + (size_t)g * cg) * HW;
                            double s = 0, q = 0;
                            for (int i = 0; i < cg * HW; i++) s += r[i];
                            s /= (double)cg * HW;
                            for (int i = 0; i < cg * HW; i++) q += (r[i] - s) * (r[i] - s);
                            q /= (double)cg * HW;
                            if (fabs(s) > worst_mean) worst_mean = fabs(s);
                            /* GN eps 1e-3: var = v / (v + eps), just under 1 */
                            double off = q > 1 ? q - 1 : (q < 0.5 ? 1 - q : 0);
                            if (off > worst_var) worst_var = off;
                        }
                }
                if (kinds[k] == PN_NORM_BN && !training) {
                    /* running statistics at init (0, 1): y is the input, not centered */
                    CHECK(spread > 1e-3, "BN eval layer %d looks batch-normalized", l);
                } else if (kinds[k] != PN_NORM_NONE) {
                    CHECK(worst_mean < 1e-5, "%s %s layer %d: mean %g", pn_norm_name(kinds[k]),
                          training ? "train" : "eval", l, worst_mean);
                    CHECK(worst_var < (kinds[k] == PN_NORM_BN ? 1e-3 : 1e-4), "%s layer %d: var off by %g", pn_norm_name(kinds[k]), l,
                          worst_var);
                }
                free(y);
            }
        }
        pn_model_free(m);
    }
    free(x);
}

/* Bytes of the parameters and buffers, to check that nothing changed. */
static unsigned char *snapshot(pn_model *m, size_t *n)
{
    size_t np = pn_model_num_params(m) * sizeof(float), nb = pn_model_num_buffers(m) * sizeof(float);
    unsigned char *s = malloc(np + nb + 1);
    memcpy(s, pn_model_params(m), np);
    memcpy(s + np, pn_model_buffers(m), nb);
    *n = np + nb;
    return s;
}

static int same_snapshot(pn_model *m, const unsigned char *s, size_t n)
{
    size_t k;
    unsigned char *now = snapshot(m, &k);
    int same = k == n && memcmp(now, s, n) == 0;
    free(now);
    return same;
}

/* Every norm, both BN modes: the four terms add up to the power in every layer,
 * and the model is left as it was. */
TEST(test_power_model_sums)
{
    const int N = 10;
    float *x = images(N, 2);
    for (int k = 0; k < NKINDS; k++) {
        pn_model *m = tiny_model(kinds[k], 0);
        if (!m) { CHECK(0, "%s", pn_last_error()); continue; }
        pn_power_decomp t[7];
        for (int training = 0; training <= 1; training++) {
            size_t n;
            unsigned char *before = snapshot(m, &n);
            CHECK(pn_power_model(t, 7, m, x, N, 4, training) == PN_OK, "%s", pn_last_error());
            CHECK(same_snapshot(m, before, n), "%s: the model changed", pn_norm_name(kinds[k]));
            free(before);
            for (int l = 0; l < 7; l++) {
                double sum = t[l].sq_mean + t[l].var_mean + t[l].sq_std + t[l].var_std;
                CHECK(t[l].power > 0.01, "%s layer %d: power %g", pn_norm_name(kinds[k]), l, t[l].power);
                CHECK_NEAR(sum, t[l].power, 1e-9 * t[l].power);
                CHECK(t[l].sq_mean >= 0 && t[l].var_mean >= 0 && t[l].var_std >= 0, "negative term");
            }
            /* the GN family normalizes every (input, group) to power ~1 */
            if (kinds[k] == PN_NORM_LN || kinds[k] == PN_NORM_GN_PN)
                for (int l = 0; l < 7; l++) CHECK(t[l].power > 0.8 && t[l].power < 1.01, "power %g", t[l].power);
            /* IN: both variance terms vanish */
            if (kinds[k] == PN_NORM_IN)
                for (int l = 0; l < 7; l++)
                    CHECK(t[l].var_mean < 1e-10 && t[l].var_std < 1e-3, "IN layer %d: %g %g", l,
                          t[l].var_mean, t[l].var_std);
        }
        /* batch-independent norms: the batch size of the forward does not matter */
        if (kinds[k] != PN_NORM_BN) {
            pn_power_decomp u[7];
            CHECK(pn_power_model(u, 7, m, x, N, 3, 0) == PN_OK, "%s", pn_last_error());
            CHECK(pn_power_model(t, 7, m, x, N, N, 0) == PN_OK, "%s", pn_last_error());
            for (int l = 0; l < 7; l++) CHECK_NEAR(u[l].sq_mean, t[l].sq_mean, 1e-5 * (1e-3 + t[l].sq_mean));
        }
        CHECK(pn_power_model(t, 6, m, x, N, 4, 0) == PN_ERR_ARG, "wrong layer count");
        CHECK(pn_power_model(t, 7, m, x, 0, 4, 0) == PN_ERR_ARG, "no images");
        pn_model_free(m);
    }
    free(x);
}

/* BN's channel-wise squared mean is 0 where it must be: with the statistics of
 * the batch (one batch of all the images, or ghost batches), and at inference
 * when the running statistics are those of the data (set layer by layer). */
TEST(test_power_model_bn_sq_mean)
{
    const int N = 12;
    float *x = images(N, 3);
    pn_power_decomp t[7], e[7];
    /* batch statistics over all N at once */
    pn_model *m = tiny_model(PN_NORM_BN, 0);
    CHECK(m && pn_power_model(t, 7, m, x, N, N, 1) == PN_OK, "%s", pn_last_error());
    for (int l = 0; l < 7; l++) CHECK(t[l].sq_mean < 1e-12, "layer %d: sq_mean %g", l, t[l].sq_mean);
    /* at init the running statistics (0, 1) are not the data's: sq_mean > 0 in eval */
    CHECK(pn_power_model(e, 7, m, x, N, N, 0) == PN_OK, "%s", pn_last_error());
    double worst = 0;
    for (int l = 0; l < 7; l++) worst = e[l].sq_mean > worst ? e[l].sq_mean : worst;
    CHECK(worst > 1e-3, "eval at init: sq_mean %g everywhere", worst);

    /* running statistics := the biased batch statistics of each layer's eval input */
    int nb = 0;
    const pn_tensor_info *bt = pn_model_buffer_table(m, &nb);
    float *buf = pn_model_buffers(m);
    for (int l = 0; l < 7; l++) {
        pn_norm_layer_info info;
        pn_model_norm_output(m, l, &info, NULL);
        char nm[100];
        float *rm = NULL, *rv = NULL;
        for (int i = 0; i < nb; i++) {
            snprintf(nm, sizeof nm, "%s.running_mean", info.name);
            if (strcmp(bt[i].name, nm) == 0) rm = buf + bt[i].offset;
            snprintf(nm, sizeof nm, "%s.running_var", info.name);
            if (strcmp(bt[i].name, nm) == 0) rv = buf + bt[i].offset;
        }
        CHECK(rm && rv, "no running statistics for %s", info.name);
        if (!rm || !rv) break;
        /* y = x when mean 0 and var + eps = 1 (BN eps 1e-5) */
        for (int c = 0; c < info.C; c++) { rm[c] = 0.0f; rv[c] = 1.0f - 1e-5f; }
        CHECK(pn_model_forward(m, x, N, 0, NULL) == PN_OK, "%s", pn_last_error());
        float *y = malloc((size_t)N * info.C * info.HW * sizeof *y);
        pn_model_norm_output(m, l, NULL, y);
        for (int c = 0; c < info.C; c++) {
            double s = 0, q = 0;
            for (int n = 0; n < N; n++)
                for (int p = 0; p < info.HW; p++) s += y[((size_t)n * info.C + c) * info.HW + p];
            s /= (double)N * info.HW;
            for (int n = 0; n < N; n++)
                for (int p = 0; p < info.HW; p++) {
                    double d = y[((size_t)n * info.C + c) * info.HW + p] - s;
                    q += d * d;
                }
            rm[c] = (float)s;
            rv[c] = (float)(q / ((double)N * info.HW));
        }
        free(y);
    }
    CHECK(pn_power_model(e, 7, m, x, N, 5, 0) == PN_OK, "%s", pn_last_error());
    CHECK(pn_power_model(t, 7, m, x, N, N, 1) == PN_OK, "%s", pn_last_error());
    for (int l = 0; l < 7; l++) {
        CHECK(e[l].sq_mean < 1e-9, "eval layer %d: sq_mean %g", l, e[l].sq_mean);
        /* then inference computes what the batch statistics compute */
        CHECK_NEAR(e[l].var_mean, t[l].var_mean, 1e-4 * (1 + t[l].var_mean));
        CHECK_NEAR(e[l].sq_std, t[l].sq_std, 1e-4);
    }
    pn_model_free(m);

    /* ghost batches of 3: every 3 images are centered, so the whole set is too */
    m = tiny_model(PN_NORM_BN, 3);
    CHECK(m && pn_power_model(t, 7, m, x, N, 6, 1) == PN_OK, "%s", pn_last_error());
    for (int l = 0; l < 7; l++) CHECK(t[l].sq_mean < 1e-12, "ghost layer %d: sq_mean %g", l, t[l].sq_mean);
    CHECK(pn_power_model(t, 7, m, x, N, 4, 1) == PN_ERR_ARG, "batch 4 with norm batch 3");
    pn_model_free(m);
    free(x);
}

/* ------------------------------------------------------------ command line */



/* The log without the timing fields. */
static void log_losses(const char *path, char *buf, size_t n)
{
    cu_slurp(path, buf, n);
    char *p = buf;
    while ((p = strstr(p, "\"img_per_s\"")) != NULL) {
        char *e = strchr(p, '\n');
        size_t rest = e ? strlen(e) : 0;
        if (e) memmove(p, e, rest + 1);
        else *p = '\0';
        p++;
    }
}

#define TRAIN "train --model resnet8 --width 4 --groups 2 --lr 0.05 --threads 1 --epochs 2 " \
              "--batch 16 --micro-batch 8 --limit-test 24 "

/* --power-every: rows for steps 0, N, 2N, ... and the same training bit for bit. */
TEST(test_cli_power_every)
{
    const char *norms[] = { "gn+pn", "bn" }; /* bn last: test_cli_power_checkpoint uses it */
    char a[8192], b[8192];
    for (int k = 0; k < 2; k++) {
        char args[1024];
        snprintf(args, sizeof args, TRAIN "--norm %s --data %s --save %s --log %s", norms[k],
                 cu_tp("data"), cu_tp("plain.safetensors"), cu_tp("plain.jsonl"));
        CHECK(cu_run(args) == 0, "plain run: %s", cu_err);
        snprintf(args, sizeof args,
                 TRAIN "--norm %s --data %s --save %s --log %s --power-every 3 --power-csv %s",
                 norms[k], cu_tp("data"), cu_tp("probe.safetensors"), cu_tp("probe.jsonl"), cu_tp("probe.csv"));
        CHECK(cu_run(args) == 0, "run with --power-every: %s", cu_err);
        CHECK(cu_same_tensors(cu_tp("plain.safetensors"), cu_tp("probe.safetensors")), "%s: --power-every changed the training",
              norms[k]);
        log_losses(cu_tp("plain.jsonl"), a, sizeof a);
        log_losses(cu_tp("probe.jsonl"), b, sizeof b);
        CHECK(a[0] && strcmp(a, b) == 0, "%s: logs differ:\n%s\n%s", norms[k], a, b);
        /* 96 images / 16 = 6 steps per epoch, 12 steps: rows at 0, 3, 6, 9, 12, 7 layers each */
        FILE *f = fopen(cu_tp("probe.csv"), "r");
        CHECK(f != NULL, "no power CSV");
        if (!f) continue;
        char line[512];
        CHECK(fgets(line, sizeof line, f) &&
                  strcmp(line, "step,layer,name,sq_mean,var_mean,sq_std,var_std,power\n") == 0,
              "header %s", line);
        int rows = 0;
        while (fgets(line, sizeof line, f)) {
            long step;
            int layer;
            char name[80];
            double v[5];
            int got = sscanf(line, "%ld,%d,%79[^,],%lf,%lf,%lf,%lf,%lf", &step, &layer, name, &v[0],
                             &v[1], &v[2], &v[3], &v[4]);
            CHECK(got == 8, "row %s", line);
            if (got != 8) break;
            CHECK(step == 3 * (rows / 7) && layer == rows % 7 + 1, "row %d: %s", rows, line);
            CHECK_NEAR(v[0] + v[1] + v[2] + v[3], v[4], 1e-6 * v[4]);
            rows++;
        }
        fclose(f);
        CHECK(rows == 5 * 7, "%d power rows", rows);
    }
    /* resume appends to the same CSV */
    char args[1024];
    snprintf(args, sizeof args,
             TRAIN "--norm bn --data %s --save %s --power-every 3 --power-csv %s --stop-at 6",
             cu_tp("data"), cu_tp("half.safetensors"), cu_tp("half.csv"));
    CHECK(cu_run(args) == 0, "stopped run: %s", cu_err);
    snprintf(args, sizeof args, "train --resume %s --data %s --limit-test 24 --threads 1 "
                                "--power-every 3 --power-csv %s", cu_tp("half.safetensors"), cu_tp("data"),
             cu_tp("half.csv"));
    CHECK(cu_run(args) == 0, "resumed run: %s", cu_err);
    cu_slurp(cu_tp("half.csv"), a, sizeof a);
    cu_slurp(cu_tp("probe.csv"), b, sizeof b);
    CHECK(a[0] && strcmp(a, b) == 0, "resumed power CSV differs from the uninterrupted one");
    snprintf(args, sizeof args, TRAIN "--data %s --power-csv %s", cu_tp("data"), cu_tp("x.csv"));
    CU_EXPECT_FAIL(args, 2, "--power-csv needs --power-every");
    snprintf(args, sizeof args, TRAIN "--data %s --power-every 0", cu_tp("data"));
    CU_EXPECT_FAIL(args, 2, "--power-every");
}

static int file_has(const char *path, const char *needle)
{
    static char buf[1 << 16];
    cu_slurp(path, buf, sizeof buf);
    return strstr(buf, needle) != NULL;
}

/* power --checkpoint: the table, the CSV, the plot, and every bad input. */
TEST(test_cli_power_checkpoint)
{
    char args[2048];
    /* two checkpoints of the previous test, one panel each */
    snprintf(args, sizeof args, "power --checkpoint %s --checkpoint %s --data %s --batch 7 --csv %s",
             cu_tp("plain.safetensors"), cu_tp("probe.safetensors"), cu_tp("data"), cu_tp("ck.csv"));
    int rc = cu_run(args);
    CHECK(rc == 0, "exit %d: %s", rc, cu_err);
    CHECK(strstr(cu_out, "final.norm") && strstr(cu_out, "stage1.block0.norm1"), "table:\n%s", cu_out);
    CHECK(strstr(cu_err, "40 test images"), "the whole test split by default: %s", cu_err);
    CHECK(file_has(cu_tp("ck.csv"), "norm,layer,sq_mean,var_mean,sq_std,var_std\nplain,1,") &&
              file_has(cu_tp("ck.csv"), "\nprobe,7,"),
          "CSV");
    /* the table: the power is the sum of the four terms */
    int rows = 0;
    for (char *p = cu_out; (p = strstr(p, "\nplain ")) != NULL; p++) {
        int layer;
        char name[80];
        double v[5];
        if (sscanf(p + 1, "plain %d %79s %lf %lf %lf %lf %lf", &layer, name, &v[0], &v[1], &v[2], &v[3],
                   &v[4]) == 7) {
            CHECK_NEAR(v[0] + v[1] + v[2] + v[3], v[4], 1e-3 * v[4]);
            rows++;
        }
    }
    CHECK(rows == 7, "%d table rows for plain", rows);
    /* BN with batch statistics: the channel-wise squared mean is 0 in every layer */
    snprintf(args, sizeof args, "power --checkpoint %s --data %s --batch 8 --limit-test 32 "
                                "--bn-stats batch --csv %s", cu_tp("plain.safetensors"), cu_tp("data"), cu_tp("bn.csv"));
    rc = cu_run(args);
    CHECK(rc == 0, "exit %d: %s", rc, cu_err);
    FILE *f = fopen(cu_tp("bn.csv"), "r");
    char line[256];
    int n = 0;
    if (f && fgets(line, sizeof line, f))
        while (fgets(line, sizeof line, f)) {
            int layer;
            double v[4];
            if (sscanf(line, "%d,%lf,%lf,%lf,%lf", &layer, &v[0], &v[1], &v[2], &v[3]) == 5) {
                CHECK(v[0] < 1e-10, "BN batch statistics, layer %d: sq_mean %g", layer, v[0]);
                n++;
            }
        }
    if (f) fclose(f);
    CHECK(n == 7, "%d rows in the single-checkpoint CSV", n);
    /* the plot */
    snprintf(args, sizeof args, "power --checkpoint %s --data %s --split train --limit-test 20 --plot %s",
             cu_tp("probe.safetensors"), cu_tp("data"), cu_tp("pl"));
    rc = cu_run(args);
    CHECK(rc == 0, "exit %d: %s", rc, cu_err);
    CHECK(strstr(cu_err, "20 train images"), "train split: %s", cu_err);
    CHECK(file_has(cu_tp("pl.csv"), "layer,sq_mean"), "plot CSV");
    if (strstr(cu_err, "gnuplot not found")) {
        printf("  note: gnuplot is not installed; plot not checked\n");
    } else {
        struct stat st;
        CHECK(stat(cu_tp("pl.png"), &st) == 0 && st.st_size > 5000, "no PNG");
        CHECK(file_has(cu_tp("pl.svg"), "<svg"), "no SVG");
    }

    /* bad input */
    snprintf(args, sizeof args, "power --checkpoint %s --data %s", cu_tp("missing.safetensors"), cu_tp("data"));
    CU_EXPECT_FAIL(args, 1, "cannot load the checkpoint");
    FILE *g = fopen(cu_tp("junk.safetensors"), "wb");
    if (g) { fputs("not a safetensors file", g); fclose(g); }
    snprintf(args, sizeof args, "power --checkpoint %s --data %s", cu_tp("junk.safetensors"), cu_tp("data"));
    CU_EXPECT_FAIL(args, 1, "cannot load the checkpoint");
    snprintf(args, sizeof args, "power --checkpoint %s --data %s", cu_tp("plain.safetensors"), cu_tp("data12"));
    CU_EXPECT_FAIL(args, 1, "expects 1x8x8 images");
    snprintf(args, sizeof args, "power --checkpoint %s --data %s", cu_tp("plain.safetensors"), cu_tp("nodata"));
    CU_EXPECT_FAIL(args, 1, "cannot load the test set");
    snprintf(args, sizeof args, "power --checkpoint %s --width 8", cu_tp("plain.safetensors"));
    CU_EXPECT_FAIL(args, 2, "option of the random network");
    snprintf(args, sizeof args, "power --checkpoint %s --bn-stats sometimes", cu_tp("plain.safetensors"));
    CU_EXPECT_FAIL(args, 2, "--bn-stats must be running or batch");
    snprintf(args, sizeof args, "power --checkpoint %s --split val", cu_tp("plain.safetensors"));
    CU_EXPECT_FAIL(args, 2, "--split must be test or train");
    snprintf(args, sizeof args, "power --data %s", cu_tp("data"));
    CU_EXPECT_FAIL(args, 2, "need --checkpoint");
    snprintf(args, sizeof args, "power --checkpoint %s --checkpoint %s --data %s", cu_tp("plain.safetensors"),
             cu_tp("plain.safetensors"), cu_tp("data"));
    CU_EXPECT_FAIL(args, 2, "two checkpoints named plain");
    snprintf(args, sizeof args, "power --checkpoint %s --data %s --limit-test 0", cu_tp("plain.safetensors"), cu_tp("data"));
    CU_EXPECT_FAIL(args, 2, "--limit-test");
}

int main(void)
{
    if (cu_make_tmpdir("power_trained")) return 1;
    RUN(test_acc_matches_terms);
    RUN(test_norm_output);
    RUN(test_power_model_sums);
    RUN(test_power_model_bn_sq_mean);
    if (cu_find_bin() != 0) {
        printf("FAIL setup: %s not found (the Makefile builds it before the tests)\n", cu_bin);
        harness_failed++;
    } else {
        mkdir(cu_tp("data12"), 0755);
        if (cu_write_data(cu_tp("data"), 96, 40, 8)) {
            harness_failed++;
        } else if (write_idx(cu_tp("data12"), "train", 8, 12, 3) || write_idx(cu_tp("data12"), "t10k", 8, 12, 4)) {
            printf("FAIL setup: cannot write data\n");
            harness_failed++;
        } else {
            unsetenv("PROXYNORM_DATA");
            RUN(test_cli_power_every);
            RUN(test_cli_power_checkpoint);
        }
    }
    cu_remove_tmpdir();
    return harness_summary();
}
