/* traj_model — a short SGD trajectory of one model, written so that PyTorch can replay it
 * (bench/traj_model_torch.py): is a divergence ours or the optimization's?
 *
 *   build/bench/traj_model ARCH WIDTH NORM LR STEPS WARMUP_STEPS TOTAL_STEPS BATCH DROPPATH OUTDIR
 *
 * The first STEPS * BATCH Fashion-MNIST training images (the default data directory, in
 * order, no augmentation), one batch per step. Model seed 0. Each step as the trainer's
 * (src/train/trainer.c): zero_grad, forward, mean cross-entropy, backward with scale
 * 1/BATCH, SGD (momentum 0.9, Nesterov, weight decay 5e-4 on the tensors the table marks)
 * with lr = pn_lr_at(LR, step, WARMUP_STEPS, TOTAL_STEPS). DROPPATH 0 runs the forward
 * in evaluation mode (no stochastic depth; the same function as training mode for every
 * norm but BN, which always runs in training mode), 1 in training mode.
 * Environment TRAJ_ZERO_PROJ=1 (an experiment, EfficientNet names): project_norm.weight of
 * every block after the first of a stage (the residual blocks) starts at 0.
 * Writes OUTDIR/params.txt (name numel decay, in table order), OUTDIR/init.bin (the
 * initial parameters, float32), OUTDIR/x.bin (float32 images), OUTDIR/y.bin (int32
 * labels), and prints one line per step: "STEP k lr loss grad_norm param_norm". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "kernels/common.h"
#include "nn/model.h"
#include "train/train.h"

static int write_file(const char *dir, const char *name, const void *p, size_t bytes)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "traj_model: cannot write %s\n", path);
        return 1;
    }
    size_t n = fwrite(p, 1, bytes, f);
    int rc = fclose(f);
    if (n != bytes || rc) {
        fprintf(stderr, "traj_model: write error on %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 11) {
        fprintf(stderr, "usage: %s ARCH WIDTH NORM LR STEPS WARMUP_STEPS TOTAL_STEPS BATCH DROPPATH OUTDIR\n",
                argv[0]);
        return 2;
    }
    pn_model_config cfg;
    pn_model_config_default(&cfg);
    snprintf(cfg.arch, sizeof cfg.arch, "%s", argv[1]);
    cfg.width = atoi(argv[2]);
    int nk = pn_norm_parse(argv[3]);
    if (nk < 0) {
        fprintf(stderr, "traj_model: unknown norm %s\n", argv[3]);
        return 2;
    }
    cfg.norm = (pn_norm_kind)nk;
    const float lr0 = (float)atof(argv[4]);
    const int steps = atoi(argv[5]), warm = atoi(argv[6]), total = atoi(argv[7]), B = atoi(argv[8]);
    const int dp = atoi(argv[9]);
    const char *out = argv[10];
    if (steps < 1 || B < 1 || total < steps) {
        fprintf(stderr, "traj_model: bad STEPS / TOTAL_STEPS / BATCH\n");
        return 2;
    }
    pn_dataset d;
    if (pn_dataset_load(&d, pn_default_data_dir(), 1, (long)steps * B)) {
        fprintf(stderr, "traj_model: %s\n", pn_last_error());
        return 1;
    }
    if (d.n < steps * B) {
        fprintf(stderr, "traj_model: only %d images\n", d.n);
        pn_dataset_free(&d);
        return 1;
    }
    cfg.in_channels = d.c;
    cfg.image = d.h;
    cfg.classes = d.classes;
    pn_model *m = NULL;
    if (pn_model_create(&m, &cfg, 0)) {
        fprintf(stderr, "traj_model: %s\n", pn_last_error());
        pn_dataset_free(&d);
        return 1;
    }
    int rc = 1, ntab = 0;
    const pn_tensor_info *tab = pn_model_param_table(m, &ntab);
    const size_t np = pn_model_num_params(m), img = (size_t)d.c * d.h * d.w;
    float *vel = calloc(np, sizeof *vel);
    char path[1024];
    snprintf(path, sizeof path, "%s/params.txt", out);
    FILE *f = fopen(path, "w");
    if (!vel || !f) {
        fprintf(stderr, "traj_model: no memory or cannot write %s\n", path);
        if (f) fclose(f);
        goto done;
    }
    for (int t = 0; t < ntab; t++) fprintf(f, "%s %zu %d\n", tab[t].name, tab[t].numel, tab[t].decay);
    fclose(f);
    if (write_file(out, "init.bin", pn_model_params(m), np * sizeof(float)) ||
        write_file(out, "x.bin", d.images, (size_t)steps * B * img * sizeof(float)) ||
        write_file(out, "y.bin", d.labels, (size_t)steps * B * sizeof(int)))
        goto done;
    if (getenv("TRAJ_ZERO_PROJ")) { /* experiment: residual branches start as the identity */
        float *p = pn_model_params(m);
        for (int t = 0; t < ntab; t++) {
            int st, bl;
            char rest[80];
            if (sscanf(tab[t].name, "stage%d.block%d.%79s", &st, &bl, rest) == 3 && bl > 0 &&
                strcmp(rest, "project_norm.weight") == 0)
                memset(p + tab[t].offset, 0, tab[t].numel * sizeof *p);
        }
    }
    const int training = dp || cfg.norm == PN_NORM_BN;
    pn_sgd_config sc = { lr0, 0.9f, 5e-4f, 1 };
    for (int s = 0; s < steps; s++) {
        const float *logits;
        double ls = 0;
        int correct = 0;
        pn_model_zero_grad(m);
        pn_model_set_step(m, 0, (uint64_t)s * 65536u);
        if (pn_model_forward(m, d.images + (size_t)s * B * img, B, training, &logits) ||
            pn_model_loss(m, d.labels + (size_t)s * B, 0.0f, &ls, &correct) ||
            pn_model_backward(m, 1.0f / (float)B)) {
            fprintf(stderr, "traj_model: %s\n", pn_last_error());
            goto done;
        }
        const float *g = pn_model_grads(m), *p = pn_model_params(m);
        double gn = 0, pn = 0;
        for (size_t i = 0; i < np; i++) {
            gn += (double)g[i] * g[i];
            pn += (double)p[i] * p[i];
        }
        const float lr = pn_lr_at(lr0, s, warm, total);
        printf("STEP %d %.6g %.9g %.6g %.6g\n", s, (double)lr, ls / B, sqrt(gn), sqrt(pn));
        fflush(stdout);
        pn_sgd_step(pn_model_params(m), g, vel, tab, ntab, &sc, lr);
    }
    rc = 0;
done:
    free(vel);
    pn_model_free(m);
    pn_dataset_free(&d);
    return rc;
}
