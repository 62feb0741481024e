/* bench_train — images per second and memory of full training steps of the model.
 *
 *   build/bench/bench_train -n NORM -t THREADS -m MICRO [-b BATCH] [-s STEPS] [-a ARCH] [-w MODE]
 *                           [-x SETTING]
 *   build/bench/bench_train -p            sgemm peak of OpenBLAS (threads 1 and 2)
 *
 * One step = zero_grad, then for each micro-batch of MICRO images (BATCH/MICRO of them):
 * forward (training mode), cross-entropy loss, backward (scale 1/BATCH), by
 * pn_model_train_pass as the trainer runs them (gn and gn+pn with 2 threads: the
 * micro-batches, or at batch 128 the images, split over two copies of the model); then one
 * SGD step
 * (momentum 0.9, weight decay 5e-4, lr 0.05), i.e. PyTorch's optimizer.step().
 * Model: resnet20 (width 16), 1x28x28 inputs, 10 classes, NORM = bn | gn | gn+pn.
 * One process per configuration so that the memory figures are its own:
 *   mem_before  VmRSS just before the first step (model, parameters, data allocated)
 *   peak        VmHWM after the last step
 *   train_mem   peak - mem_before (activations, workspaces, gradients of the step)
 * Prints
 *   RESULT ours NORM MICRO THREADS IMG_S_MEDIAN IMG_S_MAX STEPS TRAIN_MEM_KB MACS_PER_IMAGE PEAK
 * (PEAK: OpenBLAS's sgemm GFLOP/s at THREADS, measured right after the steps)
 *   PEAK sgemm THREADS GFLOPS            (-p)
 * Steps: 1 warm-up step, then STEPS timed steps (default 6); images/s from the median and
 * from the fastest step. -w: pn_dconv_winograd_enable(MODE) (0 never, 1 default, 2 at any
 * channel count), to compare the convolution paths in whole steps.
 * -x SETTING: an A/B comparison in one process, for effects smaller than this machine's
 * drift between runs (up to 20%): the steps alternate between the library's defaults (even
 * steps) and SETTING (odd steps), 2*STEPS timed steps after one warm-up step of each; prints
 *   AB NORM MICRO THREADS SETTING IMG_S_DEFAULT IMG_S_SETTING RATIO Q1 Q3 PAIRS
 * with the medians of the two sets and of the per-pair step-time ratios setting / default
 * (< 1: SETTING is faster) and their quartiles. SETTING: wino0, wino2 (Winograd never, at
 * any channel count), winodw0 (the direct weight gradient under Winograd), stride2off (the
 * stride-2 convolutions by GEMM). (Not the direct kernel itself: the model plans its unstored
 * norm outputs for the direct kernel's input planes, so switching it off needs a new plan.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/layers.h"
#include "nn/model.h"
#include "proxynorm.h"
#include "bench_util.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* kB of VmRSS or VmHWM from /proc/self/status. */
static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static unsigned long long rng_state = 0x243F6A8885A308D3ULL;
static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0) + 1e-300;
}

/* PyTorch's SGD (momentum, weight decay on the decay tensors only). */
static void sgd(float *p, const float *g, float *v, const pn_tensor_info *t, int nt, float lr,
                float mu, float wd)
{
    for (int i = 0; i < nt; i++) {
        float d = t[i].decay ? wd : 0.0f;
        float *pp = p + t[i].offset, *vv = v + t[i].offset;
        const float *gg = g + t[i].offset;
        for (size_t j = 0; j < t[i].numel; j++) {
            float gj = gg[j] + d * pp[j];
            vv[j] = mu * vv[j] + gj;
            pp[j] -= lr * vv[j];
        }
    }
}

/* -x: the library setting `name` on (the A side is the defaults); -1 for an unknown name. */
static int apply_setting(const char *name, int on)
{
    if (!strcmp(name, "wino0")) pn_dconv_winograd_enable(on ? 0 : 1);
    else if (!strcmp(name, "wino2")) pn_dconv_winograd_enable(on ? 2 : 1);
    else if (!strcmp(name, "winodw0")) pn_dconv_winograd_dw_enable(!on);
    else if (!strcmp(name, "stride2off")) pn_conv_stride2_enable(!on);
    else return -1;
    return 0;
}

static double quantile(const double *sorted, int n, double q)
{
    const double pos = q * (n - 1);
    const int i = (int)pos;
    return i + 1 < n ? sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]) : sorted[n - 1];
}

static int sgemm_peak(void)
{
    for (int t = 1; t <= 2; t++) {
        pn_set_threads(t);
        const double g = bench_sgemm_peak();
        if (g < 0) return 1;
        printf("PEAK sgemm %d %.1f\n", t, g);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *norm = "gn+pn", *arch = "resnet20", *setting = NULL;
    int threads = 1, micro = 128, batch = 128, steps = 6, wino = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p")) return sgemm_peak();
        if (i + 1 >= argc) goto usage;
        if (!strcmp(argv[i], "-n")) norm = argv[++i];
        else if (!strcmp(argv[i], "-t")) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-m")) micro = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-b")) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s")) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-a")) arch = argv[++i];
        else if (!strcmp(argv[i], "-w")) wino = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-x")) setting = argv[++i];
        else goto usage;
    }
    if (micro < 1 || batch < 1 || batch % micro || steps < 1 || threads < 1 || wino < 0 || wino > 2)
        goto usage;
    if (setting && (wino != 1 || apply_setting(setting, 0) != 0)) goto usage;
    pn_set_threads(threads);
    pn_dconv_winograd_enable(wino);
    const int ab = setting != NULL, nsteps = ab ? 2 * steps : steps;

    pn_model_config cfg;
    pn_model_config_default(&cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "%s", arch);
    int nk = pn_norm_parse(norm);
    if (nk < 0) goto usage;
    cfg.norm = (pn_norm_kind)nk;
    pn_model *m = NULL;
    if (pn_model_create(&m, &cfg, 1) != PN_OK) {
        fprintf(stderr, "bench_train: %s\n", pn_last_error());
        return 1;
    }
    int nt;
    const pn_tensor_info *tab = pn_model_param_table(m, &nt);
    size_t np = pn_model_num_params(m);
    float *vel = calloc(np, sizeof(float));
    const size_t img = 28 * 28;
    float *x = malloc((size_t)batch * img * sizeof(float));
    int *y = malloc((size_t)batch * sizeof(int));
    double *dt = malloc((size_t)nsteps * sizeof(double));
    if (!vel || !x || !y || !dt) return 1;
    for (size_t i = 0; i < (size_t)batch * img; i++) x[i] = (float)rng_uniform();
    for (int i = 0; i < batch; i++) y[i] = (int)(rng_uniform() * 10) % 10;

    long rss0 = status_kb("VmRSS");
    for (int s = ab ? -2 : -1; s < nsteps; s++) {
        if (ab) apply_setting(setting, s & 1);
        double t0 = pn_now_s();
        pn_model_zero_grad(m);
        double loss;
        int corr;
        if (pn_model_train_pass(m, x, y, batch, micro, 0.0f, 1.0f / (float)batch, &loss, &corr) != PN_OK) {
            fprintf(stderr, "bench_train: %s\n", pn_last_error());
            return 1;
        }
        sgd(pn_model_params(m), pn_model_grads(m), vel, tab, nt, 0.05f, 0.9f, 5e-4f);
        if (s >= 0) dt[s] = pn_now_s() - t0;
    }
    if (ab) {
        apply_setting(setting, 0);
        double *a = malloc((size_t)steps * sizeof(double)), *b = malloc((size_t)steps * sizeof(double)),
               *r = malloc((size_t)steps * sizeof(double));
        if (!a || !b || !r) return 1;
        for (int k = 0; k < steps; k++) {
            a[k] = dt[2 * k];
            b[k] = dt[2 * k + 1];
            r[k] = b[k] / a[k];
        }
        qsort(a, (size_t)steps, sizeof *a, cmp_double);
        qsort(b, (size_t)steps, sizeof *b, cmp_double);
        qsort(r, (size_t)steps, sizeof *r, cmp_double);
        printf("AB %s %d %d %s %.1f %.1f %.3f %.3f %.3f %d\n", norm, micro, threads, setting,
               batch / quantile(a, steps, 0.5), batch / quantile(b, steps, 0.5), quantile(r, steps, 0.5),
               quantile(r, steps, 0.25), quantile(r, steps, 0.75), steps);
        free(a);
        free(b);
        free(r);
        free(vel);
        free(x);
        free(y);
        free(dt);
        pn_model_free(m);
        return 0;
    }
    long hwm = status_kb("VmHWM");
    qsort(dt, (size_t)steps, sizeof *dt, cmp_double);
    const double med = quantile(dt, steps, 0.5);
    const double macs = pn_model_macs(m);
    free(vel);
    free(x);
    free(y);
    pn_model_free(m);
    /* the peak right after the steps, in the same state of the machine (after VmHWM: its
     * 48 MB of matrices would count as training memory) */
    const double peak = bench_sgemm_peak();
    printf("RESULT ours %s %d %d %.1f %.1f %d %ld %.0f %.1f\n", norm, micro, threads, batch / med,
           batch / dt[0], steps, hwm - rss0, macs, peak);
    free(dt);
    return 0;
usage:
    fprintf(stderr, "usage: bench_train -n bn|gn|gn+pn -t THREADS -m MICRO [-b BATCH] [-s STEPS] "
                    "[-a ARCH] [-w 0|1|2] [-x wino0|wino2|winodw0|stride2off] | -p\n");
    return 2;
}
