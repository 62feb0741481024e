/* Optimizer, schedule, training loop (micro-batches, resume, NaN stop),
 * checkpoints and a short real training run on Fashion-MNIST (if installed). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "proxynorm.h"
#include "train/train.h"
#include "train/trainer.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

/* ------------------------------------------------------------ optimizer */

TEST(sgd_matches_hand_computation)
{
    /* Two tensors: "w" (decay) and "b" (no decay), two steps. */
    pn_tensor_info tab[2];
    memset(tab, 0, sizeof tab);
    strcpy(tab[0].name, "w"); tab[0].ndim = 1; tab[0].shape[0] = 2; tab[0].offset = 0; tab[0].numel = 2; tab[0].decay = 1;
    strcpy(tab[1].name, "b"); tab[1].ndim = 1; tab[1].shape[0] = 1; tab[1].offset = 2; tab[1].numel = 1; tab[1].decay = 0;
    const float p0[3] = { 1.0f, -2.0f, 0.5f };
    const float g1[3] = { 0.5f, 0.25f, -1.0f };
    const float g2[3] = { -0.5f, 1.0f, 2.0f };
    const float lr = 0.1f, mu = 0.9f, wd = 0.01f;
    for (int nest = 0; nest <= 1; nest++) {
        float p[3], v[3] = { 0, 0, 0 };
        memcpy(p, p0, sizeof p);
        pn_sgd_config c = { 99.0f /* unused: the lr argument wins */, mu, wd, nest };
        pn_sgd_step(p, g1, v, tab, 2, &c, lr);
        pn_sgd_step(p, g2, v, tab, 2, &c, lr);
        /* Hand computation (double), PyTorch's formulas. */
        for (int i = 0; i < 3; i++) {
            double wdi = i < 2 ? wd : 0.0;
            double pp = p0[i], vv = 0.0;
            const float *gs[2] = { g1, g2 };
            for (int s = 0; s < 2; s++) {
                double d = gs[s][i] + wdi * pp;
                vv = mu * vv + d;
                double u = nest ? d + mu * vv : vv;
                pp -= lr * u;
            }
            CHECK_NEAR(p[i], pp, 1e-6);
            CHECK_NEAR(v[i], vv, 1e-6);
        }
    }
    /* Explicit numbers for one case: w[0], nesterov, step 1: d = 0.5 + 0.01 = 0.51,
     * v = 0.51, u = 0.51 + 0.9*0.51 = 0.969, p = 1 - 0.0969 = 0.9031. */
    float p[3], v[3] = { 0, 0, 0 };
    memcpy(p, p0, sizeof p);
    pn_sgd_config c = { 0.1f, mu, wd, 1 };
    pn_sgd_step(p, g1, v, tab, 2, &c, lr);
    CHECK_NEAR(p[0], 0.9031, 1e-6);
    CHECK_NEAR(v[0], 0.51, 1e-6);
    /* b has no decay: d = -1, v = -1, u = -1.9, p = 0.5 + 0.19 = 0.69. */
    CHECK_NEAR(p[2], 0.69, 1e-6);
    /* No momentum: plain SGD with decay, velocity untouched. */
    memcpy(p, p0, sizeof p);
    float v0[3] = { 7, 7, 7 };
    pn_sgd_config c0 = { 0.1f, 0.0f, wd, 0 };
    pn_sgd_step(p, g1, v0, tab, 2, &c0, lr);
    CHECK_NEAR(p[1], -2.0 - 0.1 * (0.25 + 0.01 * -2.0), 1e-6);
    CHECK_NEAR(p[2], 0.5 - 0.1 * -1.0, 1e-6);
    CHECK(v0[0] == 7 && v0[2] == 7, "velocity changed without momentum");
}

TEST(lr_schedule)
{
    const float base = 0.1f;
    /* Warm-up over 10 steps: linear (step+1)/10 * base. */
    CHECK_NEAR(pn_lr_at(base, 0, 10, 110), 0.01, 1e-7);
    CHECK_NEAR(pn_lr_at(base, 4, 10, 110), 0.05, 1e-7);
    CHECK_NEAR(pn_lr_at(base, 9, 10, 110), 0.1, 1e-7);
    /* Cosine: start at base, half-way base/2, last step close to 0. */
    CHECK_NEAR(pn_lr_at(base, 10, 10, 110), 0.1, 1e-7);
    CHECK_NEAR(pn_lr_at(base, 60, 10, 110), 0.05, 1e-6);
    float last = pn_lr_at(base, 109, 10, 110);
    CHECK(last > 0 && last < 1e-4f, "last lr %g", (double)last);
    float prev = 1.0f;
    int mono = 1;
    for (long s = 10; s < 110; s++) {
        float l = pn_lr_at(base, s, 10, 110);
        if (l > prev) mono = 0;
        prev = l;
    }
    CHECK(mono, "cosine part is not non-increasing");
    /* No warm-up. */
    CHECK_NEAR(pn_lr_at(base, 0, 0, 100), 0.1, 1e-7);
    CHECK_NEAR(pn_lr_at(base, 50, 0, 100), 0.05, 1e-6);
}

/* ------------------------------------------------------- synthetic data */

/* n images (c, hw, hw) whose mean brightness in one quadrant depends on the label. */
static void make_synth(pn_dataset *d, int n, int c, int hw, int classes, unsigned long long seed)
{
    memset(d, 0, sizeof *d);
    d->n = n; d->c = c; d->h = hw; d->w = hw; d->classes = classes;
    strcpy(d->name, "synthetic");
    d->images = malloc((size_t)n * c * hw * hw * sizeof(float));
    d->labels = malloc((size_t)n * sizeof(int));
    harness_seed(seed);
    for (int i = 0; i < n; i++) {
        int y = (int)(harness_uniform() * classes) % classes;
        d->labels[i] = y;
        float *x = d->images + (size_t)i * c * hw * hw;
        for (int k = 0; k < c * hw * hw; k++) x[k] = (float)(0.5 * harness_normal());
        for (int ch = 0; ch < c; ch++)
            for (int r = 0; r < hw / 2; r++)
                for (int q = 0; q < hw / 2; q++)
                    x[(size_t)ch * hw * hw + (size_t)(r + (y & 1) * hw / 2) * hw + q + (y >> 1) * hw / 2] += 1.0f;
    }
}

static void free_synth(pn_dataset *d)
{
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

static pn_train_config tiny_config(pn_norm_kind norm, int batch, int micro)
{
    pn_train_config c;
    pn_train_config_default(&c);
    strcpy(c.model.arch, "resnet8");
    c.model.norm = norm;
    c.model.width = 4;
    c.model.groups = 2;
    c.model.in_channels = 1;
    c.model.image = 8;
    c.model.classes = 4;
    c.epochs = 3;
    c.batch = batch;
    c.micro_batch = micro;
    c.lr = 0.05f;
    c.warmup = 0.5f;
    c.seed = 42;
    return c;
}

/* Largest |a-b| relative to the largest |b|. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d == d)) return INFINITY;
        if (d > md) md = d;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return mb > 0 ? md / mb : md;
}

/* One update with micro-batch `micro` on a fresh model; returns the velocity
 * (= first gradient incl. decay) copied into a new buffer. */
static float *one_update(pn_norm_kind norm, int micro, const pn_dataset *d, size_t *n, size_t *act_bytes)
{
    pn_train_config c = tiny_config(norm, 32, micro);
    pn_trainer *t = NULL;
    if (pn_trainer_create(&t, &c, d, NULL) != PN_OK) {
        printf("  create: %s\n", pn_last_error());
        return NULL;
    }
    double loss;
    int rc = pn_trainer_step(t, &loss);
    if (rc) printf("  step: %s\n", pn_last_error());
    *n = pn_model_num_params(pn_trainer_model(t));
    float *v = malloc(*n * sizeof(float));
    memcpy(v, pn_trainer_velocity(t), *n * sizeof(float));
    if (act_bytes) *act_bytes = pn_model_activation_bytes(pn_trainer_model(t));
    pn_trainer_free(t);
    return rc ? (free(v), NULL) : v;
}

TEST(micro_batches_equal_full_batch_for_gn_pn_not_bn)
{
    pn_dataset d;
    make_synth(&d, 64, 1, 8, 4, 7);
    size_t n1 = 0, n2 = 0, a1 = 0, a2 = 0;
    float *v4 = one_update(PN_NORM_GN_PN, 4, &d, &n1, &a1);
    float *v32 = one_update(PN_NORM_GN_PN, 32, &d, &n2, &a2);
    CHECK(v4 && v32 && n1 == n2, "updates failed");
    if (v4 && v32) {
        double r = rel_diff(v4, v32, n1);
        printf("  gn+pn: micro-batch 4 vs 32, max gradient difference / max |gradient| = %.3g\n", r);
        CHECK(r < 1e-5, "gn+pn: micro-batch 4 vs 32 gradient relative difference %g", r);
        CHECK(a1 < a2, "activation memory with micro-batch 4 (%zu) not below micro-batch 32 (%zu)", a1, a2);
    }
    free(v4); free(v32);
    v4 = one_update(PN_NORM_BN, 4, &d, &n1, NULL);
    v32 = one_update(PN_NORM_BN, 32, &d, &n2, NULL);
    CHECK(v4 && v32 && n1 == n2, "bn updates failed");
    if (v4 && v32) {
        double r = rel_diff(v4, v32, n1);
        printf("  bn:    micro-batch 4 vs 32, max gradient difference / max |gradient| = %.3g\n", r);
        CHECK(r > 1e-2, "bn: micro-batch 4 vs 32 should differ (relative difference %g)", r);
    }
    free(v4); free(v32);
    free_synth(&d);
}

/* ------------------------------------------------- checkpoints, resume */

static int same_state(pn_trainer *a, pn_trainer *b)
{
    pn_model *ma = pn_trainer_model(a), *mb = pn_trainer_model(b);
    size_t np = pn_model_num_params(ma), nb = pn_model_num_buffers(ma);
    if (np != pn_model_num_params(mb) || nb != pn_model_num_buffers(mb)) return 0;
    if (memcmp(pn_model_params(ma), pn_model_params(mb), np * sizeof(float))) return 0;
    if (nb && memcmp(pn_model_buffers(ma), pn_model_buffers(mb), nb * sizeof(float))) return 0;
    if (memcmp(pn_trainer_velocity(a), pn_trainer_velocity(b), np * sizeof(float))) return 0;
    return pn_trainer_step_count(a) == pn_trainer_step_count(b);
}

TEST(checkpoint_round_trip)
{
    pn_dataset d;
    make_synth(&d, 64, 1, 8, 4, 11);
    pn_train_config c = tiny_config(PN_NORM_BN, 16, 8);
    pn_trainer *a = NULL, *b = NULL;
    CHECK(pn_trainer_create(&a, &c, &d, NULL) == PN_OK, "%s", pn_last_error());
    CHECK(pn_trainer_create(&b, &c, &d, NULL) == PN_OK, "%s", pn_last_error());
    if (!a || !b) goto out;
    for (int i = 0; i < 3; i++) CHECK(pn_trainer_step(a, NULL) == PN_OK, "%s", pn_last_error());
    const char *path = tmp_path("rt.safetensors");
    CHECK(pn_trainer_save(a, path) == PN_OK, "save: %s", pn_last_error());
    CHECK(!same_state(a, b), "states equal before loading");
    CHECK(pn_trainer_load(b, path) == PN_OK, "load: %s", pn_last_error());
    CHECK(same_state(a, b), "loaded state differs");
    CHECK(pn_model_num_buffers(pn_trainer_model(a)) > 0, "bn model has no buffers");

    /* Model-only loading builds the right model. */
    pn_model *m = NULL;
    CHECK(pn_checkpoint_load_model(&m, path) == PN_OK, "%s", pn_last_error());
    if (m) {
        size_t np = pn_model_num_params(m);
        CHECK(np == pn_model_num_params(pn_trainer_model(a)) &&
                  !memcmp(pn_model_params(m), pn_model_params(pn_trainer_model(a)), np * sizeof(float)),
              "load_model parameters differ");
        pn_model_free(m);
    }
    /* The configuration round-trips. */
    pn_train_config r;
    long step = -1;
    CHECK(pn_checkpoint_read_config(path, &r, &step) == PN_OK, "%s", pn_last_error());
    CHECK(step == 3 && r.batch == 16 && r.micro_batch == 8 && r.lr == c.lr && r.wd == c.wd &&
              r.seed == 42 && r.model.norm == PN_NORM_BN && r.model.width == 4 && r.epochs == 3 &&
              r.warmup == c.warmup && r.nesterov == 1 && r.augment == 1,
          "config differs after reading back");

    /* Another width: the error names the tensor. */
    pn_train_config c8 = c;
    c8.model.width = 8;
    pn_trainer *w8 = NULL;
    CHECK(pn_trainer_create(&w8, &c8, &d, NULL) == PN_OK, "%s", pn_last_error());
    if (w8) {
        int rc = pn_trainer_load(w8, path);
        CHECK(rc != PN_OK, "loading a width-4 checkpoint into width 8 succeeded");
        pn_st_file *f = NULL;
        CHECK(pn_safetensors_read(&f, path) == PN_OK, "%s", pn_last_error());
        if (f) {
            rc = pn_checkpoint_load_into(f, path, pn_trainer_model(w8), NULL);
            CHECK(rc == PN_ERR_FORMAT && strstr(pn_last_error(), "shape") &&
                      strstr(pn_last_error(), "weight\""),
                  "width mismatch: rc %d, message \"%s\"", rc, pn_last_error());
            pn_safetensors_close(f);
        }
        pn_trainer_free(w8);
    }
    /* Another depth: a tensor the smaller model lacks / the larger model needs. */
    pn_train_config c14 = c;
    strcpy(c14.model.arch, "resnet14");
    pn_model *m14 = NULL;
    CHECK(pn_model_create(&m14, &c14.model, 1) == PN_OK, "%s", pn_last_error());
    if (m14) {
        pn_st_file *f = NULL;
        CHECK(pn_safetensors_read(&f, path) == PN_OK, "%s", pn_last_error());
        if (f) {
            int rc = pn_checkpoint_load_into(f, path, m14, NULL);
            CHECK(rc == PN_ERR_FORMAT && strstr(pn_last_error(), "no tensor \""),
                  "depth mismatch: rc %d, message \"%s\"", rc, pn_last_error());
            pn_safetensors_close(f);
        }
        const char *p14 = tmp_path("r14.safetensors");
        CHECK(pn_checkpoint_save(p14, m14, NULL, NULL, 0) == PN_OK, "%s", pn_last_error());
        CHECK(pn_safetensors_read(&f, p14) == PN_OK, "%s", pn_last_error());
        if (f) {
            int rc = pn_checkpoint_load_into(f, p14, pn_trainer_model(b), NULL);
            CHECK(rc == PN_ERR_FORMAT && strstr(pn_last_error(), "does not exist in this model"),
                  "extra tensor: rc %d, message \"%s\"", rc, pn_last_error());
            pn_safetensors_close(f);
        }
        /* A model-only checkpoint cannot be resumed. */
        CHECK(pn_trainer_load(b, p14) != PN_OK && strstr(pn_last_error(), "training state"),
              "resuming a model-only checkpoint: \"%s\"", pn_last_error());
        pn_model_free(m14);
    }
    /* Another training configuration cannot resume. */
    pn_train_config clr = c;
    clr.lr = 0.2f;
    pn_trainer *tl = NULL;
    CHECK(pn_trainer_create(&tl, &clr, &d, NULL) == PN_OK, "%s", pn_last_error());
    if (tl) {
        CHECK(pn_trainer_load(tl, path) == PN_ERR_ARG && strstr(pn_last_error(), "lr"),
              "lr mismatch: \"%s\"", pn_last_error());
        pn_trainer_free(tl);
    }
    /* A truncated file is refused. */
    {
        FILE *in = fopen(path, "rb");
        const char *bad = tmp_path("bad.safetensors");
        FILE *out = fopen(bad, "wb");
        char buf[300];
        size_t k = in ? fread(buf, 1, sizeof buf, in) : 0;
        if (out) { fwrite(buf, 1, k, out); fclose(out); }
        if (in) fclose(in);
        CHECK(pn_trainer_load(b, bad) != PN_OK, "truncated checkpoint loaded");
        CHECK(same_state(a, b), "a failed load modified the trainer");
    }
out:
    pn_trainer_free(a);
    pn_trainer_free(b);
    free_synth(&d);
}

static void resume_case(pn_norm_kind norm)
{
    pn_dataset d;
    make_synth(&d, 72, 1, 8, 4, 5); /* 72 / 16 = 4 steps per epoch, 8 images dropped */
    pn_train_config c = tiny_config(norm, 16, 8);
    c.epochs = 2;
    const int K = 6; /* crosses the epoch boundary after step 4 */
    pn_trainer *a = NULL, *b = NULL, *r = NULL;
    CHECK(pn_trainer_create(&a, &c, &d, NULL) == PN_OK, "%s", pn_last_error());
    CHECK(pn_trainer_create(&b, &c, &d, NULL) == PN_OK, "%s", pn_last_error());
    CHECK(pn_trainer_create(&r, &c, &d, NULL) == PN_OK, "%s", pn_last_error());
    if (!a || !b || !r) goto out;
    double la[8] = { 0 }, lb[8] = { 0 };
    for (int i = 0; i < K; i++) CHECK(pn_trainer_step(a, &la[i]) == PN_OK, "%s", pn_last_error());
    for (int i = 0; i < K / 2; i++) CHECK(pn_trainer_step(b, &lb[i]) == PN_OK, "%s", pn_last_error());
    const char *path = tmp_path("resume.safetensors");
    CHECK(pn_trainer_save(b, path) == PN_OK, "%s", pn_last_error());
    CHECK(pn_trainer_load(r, path) == PN_OK, "%s", pn_last_error());
    for (int i = K / 2; i < K; i++) CHECK(pn_trainer_step(r, &lb[i]) == PN_OK, "%s", pn_last_error());
    CHECK(same_state(a, r), "%s: resumed run differs from the straight run", pn_norm_name(norm));
    for (int i = 0; i < K; i++) CHECK(la[i] == lb[i], "loss %d: %.9g vs %.9g", i, la[i], lb[i]);
    CHECK(la[K - 1] < la[0] * 2 && la[0] > 0, "losses not sane");
out:
    pn_trainer_free(a);
    pn_trainer_free(b);
    pn_trainer_free(r);
    free_synth(&d);
}

TEST(resume_is_exact_gn_pn) { resume_case(PN_NORM_GN_PN); }
TEST(resume_is_exact_bn) { resume_case(PN_NORM_BN); }

/* pn_train_run with evaluation, log, save-every and stop-at; then resume to the end. */
static int count_lines(const char *path, char last[512])
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) { n++; strcpy(last, line); }
    fclose(f);
    return n;
}

TEST(train_run_log_and_stop_resume)
{
    pn_dataset tr, te;
    make_synth(&tr, 64, 1, 8, 4, 21);
    make_synth(&te, 30, 1, 8, 4, 22);
    pn_train_config c = tiny_config(PN_NORM_GN_PN, 16, 8); /* 4 steps/epoch, 12 steps */
    strcpy(c.log_path, tmp_path("a.jsonl"));
    strcpy(c.save_path, tmp_path("a.safetensors"));
    pn_trainer *a = NULL, *b = NULL, *r = NULL;
    pn_train_status fa, fb;
    CHECK(pn_trainer_create(&a, &c, &tr, &te) == PN_OK, "%s", pn_last_error());
    if (!a) goto out;
    CHECK(pn_train_run(a, NULL, &fa) == PN_OK, "%s", pn_last_error());
    CHECK(pn_trainer_step_count(a) == 12, "steps %ld", pn_trainer_step_count(a));
    CHECK(fa.test_acc >= 0 && fa.test_acc <= 1 && isfinite(fa.test_loss), "final %g %g", fa.test_acc, fa.test_loss);
    char last[512] = "";
    CHECK(count_lines(c.log_path, last) == 3, "log should have one line per epoch");
    cJSON *j = cJSON_Parse(last);
    CHECK(j != NULL, "log line is not JSON: %s", last);
    if (j) {
        const char *keys[] = { "epoch", "step", "train_loss", "test_loss", "test_acc", "img_per_s",
                               "seconds", "peak_rss_mb", "lr" };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            CHECK(cJSON_IsNumber(cJSON_GetObjectItem(j, keys[i])), "log lacks %s", keys[i]);
        cJSON *acc = cJSON_GetObjectItem(j, "test_acc");
        if (acc) CHECK_NEAR(acc->valuedouble, fa.test_acc, 1e-6);
        cJSON *st = cJSON_GetObjectItem(j, "step");
        if (st) CHECK(st->valueint == 12, "last step %d", st->valueint);
        cJSON_Delete(j);
    }
    /* Stop after 5 steps (mid-epoch), then resume in a new trainer. */
    pn_train_config cb = c;
    strcpy(cb.log_path, tmp_path("b.jsonl"));
    strcpy(cb.save_path, tmp_path("b.safetensors"));
    cb.stop_at = 5;
    CHECK(pn_trainer_create(&b, &cb, &tr, &te) == PN_OK, "%s", pn_last_error());
    if (!b) goto out;
    CHECK(pn_train_run(b, NULL, &fb) == PN_OK, "%s", pn_last_error());
    CHECK(pn_trainer_step_count(b) == 5, "stopped at %ld", pn_trainer_step_count(b));
    cb.stop_at = 0;
    CHECK(pn_trainer_create(&r, &cb, &tr, &te) == PN_OK, "%s", pn_last_error());
    if (!r) goto out;
    CHECK(pn_trainer_load(r, cb.save_path) == PN_OK, "%s", pn_last_error());
    CHECK(pn_train_run(r, NULL, &fb) == PN_OK, "%s", pn_last_error());
    CHECK(same_state(a, r), "stop + resume differs from the straight run");
    CHECK(fa.test_loss == fb.test_loss && fa.test_acc == fb.test_acc, "final metrics differ");
    /* The resumed log continues (appended) with the same train/test losses. */
    char lb[512] = "";
    CHECK(count_lines(cb.log_path, lb) == 3, "resumed log should have 3 lines");
    cJSON *ja = cJSON_Parse(last), *jb = cJSON_Parse(lb);
    if (ja && jb) {
        CHECK(cJSON_GetObjectItem(ja, "train_loss")->valuedouble ==
                  cJSON_GetObjectItem(jb, "train_loss")->valuedouble,
              "train_loss differs after resume");
        CHECK(cJSON_GetObjectItem(ja, "test_loss")->valuedouble ==
                  cJSON_GetObjectItem(jb, "test_loss")->valuedouble,
              "test_loss differs after resume");
    }
    cJSON_Delete(ja);
    cJSON_Delete(jb);
out:
    pn_trainer_free(a);
    pn_trainer_free(b);
    pn_trainer_free(r);
    free_synth(&tr);
    free_synth(&te);
}

TEST(evaluate_is_batch_independent_for_gn)
{
    pn_dataset d;
    make_synth(&d, 37, 1, 8, 4, 3);
    pn_train_config c = tiny_config(PN_NORM_GN_PN, 8, 8);
    pn_model *m = NULL;
    CHECK(pn_model_create(&m, &c.model, 1) == PN_OK, "%s", pn_last_error());
    if (!m) { free_synth(&d); return; }
    double l1, a1, l2, a2;
    CHECK(pn_evaluate(m, &d, 37, &l1, &a1) == PN_OK, "%s", pn_last_error());
    CHECK(pn_evaluate(m, &d, 5, &l2, &a2) == PN_OK, "%s", pn_last_error());
    CHECK_NEAR(l1, l2, 1e-5 * fabs(l1));
    CHECK(a1 == a2, "accuracy %g vs %g", a1, a2);
    CHECK(l1 > 0 && a1 >= 0 && a1 <= 1, "loss %g acc %g", l1, a1);
    /* Wrong image shape is refused. */
    pn_dataset d2;
    make_synth(&d2, 4, 1, 10, 4, 3);
    CHECK(pn_evaluate(m, &d2, 4, &l1, &a1) == PN_ERR_ARG, "shape mismatch accepted");
    free_synth(&d2);
    pn_model_free(m);
    free_synth(&d);
}

TEST(config_validation)
{
    pn_dataset d;
    make_synth(&d, 16, 1, 8, 4, 3);
    pn_train_config c = tiny_config(PN_NORM_GN_PN, 16, 5);
    pn_trainer *t = NULL;
    CHECK(pn_trainer_create(&t, &c, &d, NULL) == PN_ERR_ARG && strstr(pn_last_error(), "divide"),
          "micro-batch 5 of 16: \"%s\"", pn_last_error());
    c = tiny_config(PN_NORM_GN_PN, 32, 8);
    CHECK(pn_trainer_create(&t, &c, &d, NULL) == PN_ERR_ARG && strstr(pn_last_error(), "larger"),
          "batch larger than data: \"%s\"", pn_last_error());
    c = tiny_config(PN_NORM_BN, 16, 8);
    c.model.norm_batch = 3;
    CHECK(pn_trainer_create(&t, &c, &d, NULL) == PN_ERR_ARG, "norm-batch 3 of 8 accepted");
    c = tiny_config(PN_NORM_GN_PN, 16, 8);
    c.epochs = 0;
    CHECK(pn_trainer_create(&t, &c, &d, NULL) == PN_ERR_ARG, "epochs 0 accepted");
    c = tiny_config(PN_NORM_GN_PN, 16, 8);
    c.model.image = 28;
    CHECK(pn_trainer_create(&t, &c, &d, NULL) == PN_ERR_ARG && strstr(pn_last_error(), "expects"),
          "data/model mismatch: \"%s\"", pn_last_error());
    CHECK(t == NULL, "trainer returned on error");
    free_synth(&d);
}

/* --------------------------------------------------------- NaN handling */

TEST(nan_loss_stops_without_saving)
{
    pn_dataset d;
    make_synth(&d, 64, 1, 8, 4, 9);
    pn_train_config c = tiny_config(PN_NORM_GN_PN, 16, 16);
    c.lr = 1e30f;
    c.warmup = 0;
    c.epochs = 5;
    c.save_every = 1;
    strcpy(c.save_path, tmp_path("nan.safetensors"));
    pn_trainer *t = NULL;
    CHECK(pn_trainer_create(&t, &c, &d, NULL) == PN_OK, "%s", pn_last_error());
    if (!t) { free_synth(&d); return; }
    int rc = pn_train_run(t, NULL, NULL);
    CHECK(rc == PN_ERR_NUMERIC, "run returned %d (%s)", rc, pn_last_error());
    CHECK(strstr(pn_last_error(), "step ") != NULL, "message does not name the step: %s", pn_last_error());
    long s = pn_trainer_step_count(t);
    CHECK(s < pn_trainer_total_steps(t), "diverging run finished");
    /* The checkpoint on disk is the last good step, with finite parameters. */
    if (s > 0) {
        pn_train_config r;
        long step = -1;
        CHECK(pn_checkpoint_read_config(c.save_path, &r, &step) == PN_OK, "%s", pn_last_error());
        CHECK(step == s, "checkpoint at step %ld, last good step %ld", step, s);
        pn_model *m = NULL;
        CHECK(pn_checkpoint_load_model(&m, c.save_path) == PN_OK, "%s", pn_last_error());
        if (m) {
            const float *p = pn_model_params(m);
            int finite = 1;
            for (size_t i = 0; i < pn_model_num_params(m); i++) finite &= isfinite(p[i]) != 0;
            CHECK(finite, "checkpoint has non-finite parameters");
            pn_model_free(m);
        }
    }
    /* A failed step leaves the state unchanged and keeps failing. */
    size_t np = pn_model_num_params(pn_trainer_model(t));
    float *before = malloc(np * sizeof(float));
    memcpy(before, pn_model_params(pn_trainer_model(t)), np * sizeof(float));
    rc = pn_trainer_step(t, NULL);
    CHECK(rc == PN_ERR_NUMERIC, "step after divergence returned %d", rc);
    CHECK(pn_trainer_step_count(t) == s, "step count moved");
    CHECK(!memcmp(before, pn_model_params(pn_trainer_model(t)), np * sizeof(float)), "params changed");
    free(before);
    pn_trainer_free(t);
    free_synth(&d);
}

/* ------------------------------------------------------ real training */

TEST(fashion_mnist_short_run)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    if (access(dir, R_OK) != 0) {
        printf("  (skipped: %s not installed)\n", dir);
        return;
    }
    pn_dataset tr, te;
    int rc = pn_dataset_load(&tr, dir, 1, 8000);
    CHECK(rc == PN_OK, "%s", pn_last_error());
    if (rc) return;
    rc = pn_dataset_load(&te, dir, 0, 1000);
    CHECK(rc == PN_OK, "%s", pn_last_error());
    if (rc) { pn_dataset_free(&tr); return; }
    pn_train_config c;
    pn_train_config_default(&c);
    strcpy(c.model.arch, "resnet8");
    c.model.norm = PN_NORM_GN_PN;
    c.model.width = 8;
    c.model.in_channels = 1;
    c.model.image = 28;
    c.model.classes = 10;
    c.epochs = 1;
    c.batch = 32;
    c.micro_batch = 16;
    /* lr 0.05: at 0.1 this short run is unstable (62-78% over seeds 1-3, measured with
     * proxynorm train and the same settings); at 0.05 it gave 77.2, 76.5, 73.8%. */
    c.lr = 0.05f;
    c.warmup = 0.1f;
    c.augment = 0; /* converges faster in a short run */
    c.seed = 1;
    pn_trainer *t = NULL;
    CHECK(pn_trainer_create(&t, &c, &tr, &te) == PN_OK, "%s", pn_last_error());
    pn_train_status fin;
    if (t) {
        CHECK(pn_train_run(t, NULL, &fin) == PN_OK, "%s", pn_last_error());
        printf("  resnet8 w8 gn+pn, 250 steps of 32 (micro-batch 16) on 8000 images: test acc %.2f%%, loss %.4f, %.0f img/s, %.1f s\n",
               100 * fin.test_acc, fin.test_loss, fin.img_per_s, fin.seconds);
        CHECK(fin.test_acc > 0.66, "test accuracy %.2f%% <= 66%% (measured 73.8-77.2%% over seeds)", 100 * fin.test_acc);
        pn_trainer_free(t);
    }
    pn_dataset_free(&tr);
    pn_dataset_free(&te);
}

int main(void)
{
    pn_set_threads(1);
    strcpy(tmpdir, "/tmp/pn_test_train_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    char cmd[600];
    RUN(sgd_matches_hand_computation);
    RUN(lr_schedule);
    RUN(micro_batches_equal_full_batch_for_gn_pn_not_bn);
    RUN(checkpoint_round_trip);
    RUN(resume_is_exact_gn_pn);
    RUN(resume_is_exact_bn);
    RUN(train_run_log_and_stop_resume);
    RUN(evaluate_is_batch_independent_for_gn);
    RUN(config_validation);
    RUN(nan_loss_stops_without_saving);
    RUN(fashion_mnist_short_run);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return harness_summary();
}
