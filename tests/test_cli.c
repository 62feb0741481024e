/* The command line, run as a program (build/proxynorm, next to build/tests/) on
 * tiny synthetic IDX data: help, info, train, eval, resume, NaN stop and every
 * kind of bad input (exit status and message). */
#include <limits.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "harness.h"
#include "cli_util.h"
#include "synth_idx.h"
#include "io/safetensors.h"
#include "nn/model.h"
#include "proxynorm.h"

static char datadir[300];

/* ------------------------------------------------------ synthetic data */


/* Common tiny training options. */
#define TINY "--model resnet8 --width 4 --groups 2 --lr 0.05 --warmup 0.5 --threads 1 "

static const char *last_line(const char *s, char *buf, size_t n)
{
    const char *end = s + strlen(s);
    while (end > s && end[-1] == '\n') end--;
    const char *b = end;
    while (b > s && b[-1] != '\n') b--;
    size_t k = (size_t)(end - b) < n - 1 ? (size_t)(end - b) : n - 1;
    memcpy(buf, b, k);
    buf[k] = '\0';
    return buf;
}

static long ckpt_step(const char *path)
{
    pn_st_file *f = NULL;
    if (pn_safetensors_read(&f, path) != PN_OK) return -1;
    const char *v = pn_safetensors_meta(f, "step");
    long s = v ? atol(v) : -1;
    pn_safetensors_close(f);
    return s;
}

/* ---------------------------------------------------------------- tests */

TEST(help_and_version)
{
    CHECK(cu_run("--help") == 0 && strstr(cu_out, "usage: proxynorm") && strstr(cu_out, "train"),
          "--help: %s", cu_out);
    CHECK(cu_run("train --help") == 0 && strstr(cu_out, "--micro-batch") && strstr(cu_out, "--resume"),
          "train --help: %s", cu_out);
    CHECK(cu_run("eval --help") == 0 && strstr(cu_out, "--checkpoint"), "eval --help");
    CHECK(cu_run("info --help") == 0 && strstr(cu_out, "--channels"), "info --help");
    CHECK(cu_run("--version") == 0 && strstr(cu_out, PN_VERSION), "--version: %s", cu_out);
    CHECK(cu_run("") == 2 && strstr(cu_err, "usage"), "no command: %s", cu_err);
    CU_EXPECT_FAIL("fly", 2, "unknown command");
}

TEST(info_json)
{
    int rc = cu_run("info --model resnet20 --norm gn+pn --channels 1 --image 28 --classes 10");
    CHECK(rc == 0, "info exit %d: %s", rc, cu_err);
    cJSON *j = cJSON_Parse(cu_out);
    CHECK(j != NULL, "not JSON: %s", cu_out);
    if (!j) return;
    cJSON *p = cJSON_GetObjectItem(j, "params"), *m = cJSON_GetObjectItem(j, "macs");
    CHECK(cJSON_IsNumber(p) && cJSON_IsNumber(m), "keys missing: %s", cu_out);
    pn_model_config c;
    pn_model_config_default(&c);
    strcpy(c.arch, "resnet20");
    c.norm = PN_NORM_GN_PN;
    c.in_channels = 1; c.image = 28; c.classes = 10;
    pn_model *mod = NULL;
    CHECK(pn_model_create(&mod, &c, 0) == PN_OK, "%s", pn_last_error());
    if (mod && p && m) {
        CHECK(p->valuedouble == (double)pn_model_num_params(mod), "params %g vs %zu", p->valuedouble,
              pn_model_num_params(mod));
        CHECK(m->valuedouble == pn_model_macs(mod), "macs %g vs %g", m->valuedouble, pn_model_macs(mod));
        CHECK(p->valuedouble > 1e5 && m->valuedouble > 1e6, "implausible %s", cu_out);
    }
    pn_model_free(mod);
    double p20 = p ? p->valuedouble : 0;
    cJSON_Delete(j);
    rc = cu_run("info --model resnet20 --norm gn+pn --channels 1 --image 28 --classes 10 --width 8");
    j = cJSON_Parse(cu_out);
    p = j ? cJSON_GetObjectItem(j, "params") : NULL;
    CHECK(rc == 0 && p && p->valuedouble < p20 / 2, "width 8 should have < half the params: %s", cu_out);
    cJSON_Delete(j);
    CU_EXPECT_FAIL("info --model resnet21 --norm gn", 2, "unknown model");
    /* torchvision's resnet50: 25,503,912 conv + linear parameters (tests/golden/param_counts.txt);
     * --width defaults to 64 at 224 px */
    rc = cu_run("info --model resnet50 --norm bn --channels 3 --image 224 --classes 1000");
    j = cJSON_Parse(cu_out);
    cJSON *cl = j ? cJSON_GetObjectItem(j, "conv_linear_params") : NULL, *w = j ? cJSON_GetObjectItem(j, "width") : NULL;
    CHECK(rc == 0 && cl && w && cl->valuedouble == 25503912.0 && w->valuedouble == 64,
          "resnet50 info: %s %s", cu_out, cu_err);
    cJSON_Delete(j);
    rc = cu_run("info --model resnet50 --norm gn+pn --channels 1 --image 28 --classes 10");
    j = cJSON_Parse(cu_out);
    w = j ? cJSON_GetObjectItem(j, "width") : NULL;
    CHECK(rc == 0 && w && w->valuedouble == 16, "resnet50 at 28 px: width 16: %s %s", cu_out, cu_err);
    cJSON_Delete(j);
    CU_EXPECT_FAIL("info --model resnext50_32x4d --norm gn --width 16 --groups 3", 1, "divisible");
    CU_EXPECT_FAIL("info --norm xn", 2, "unknown norm");
    CU_EXPECT_FAIL("info --channels 0", 2, "out of range");
    CU_EXPECT_FAIL("info --image 28x", 2, "not an integer");
}

static char full_log_last[1024], full_acc[256];

TEST(train_eval_and_log)
{
    char a[2048], line[1024];
    /* 96 images, batch 16 -> 6 steps/epoch, 2 epochs; micro-batches of 4. */
    snprintf(a, sizeof a,
             "train --data %s " TINY "--epochs 2 --batch 16 --micro-batch 4 --seed 3 --log %s --save %s",
             datadir, cu_tp("full.jsonl"), cu_tp("full.safetensors"));
    int rc = cu_run(a);
    CHECK(rc == 0, "train exit %d: %s", rc, cu_err);
    CHECK(strstr(cu_out, "test accuracy: ") != NULL, "no final line: %s", cu_out);
    snprintf(full_acc, sizeof full_acc, "%s", last_line(cu_out, line, sizeof line));
    /* Not a terminal: plain progress lines, no carriage returns. */
    CHECK(strstr(cu_err, "epoch 1/2") && strstr(cu_err, "step 6/12") && !strchr(cu_err, '\r'),
          "progress: %s", cu_err);
    char logtxt[8192];
    cu_slurp(cu_tp("full.jsonl"), logtxt, sizeof logtxt);
    int lines = 0;
    for (char *s = logtxt; (s = strchr(s, '\n')); s++) lines++;
    CHECK(lines == 2, "log lines %d: %s", lines, logtxt);
    snprintf(full_log_last, sizeof full_log_last, "%s", last_line(logtxt, line, sizeof line));
    cJSON *j = cJSON_Parse(full_log_last);
    CHECK(j != NULL, "log line not JSON: %s", full_log_last);
    if (j) {
        const char *keys[] = { "epoch", "step", "train_loss", "test_loss", "test_acc", "img_per_s",
                               "seconds", "peak_rss_mb" };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            CHECK(cJSON_IsNumber(cJSON_GetObjectItem(j, keys[i])), "log lacks %s", keys[i]);
        cJSON *acc = cJSON_GetObjectItem(j, "test_acc");
        double pct = 0;
        const char *s = strstr(cu_out, "test accuracy: ");
        if (s) pct = atof(s + 15);
        if (acc) CHECK_NEAR(100 * acc->valuedouble, pct, 0.006);
        /* Learnable data: better than chance (25%). */
        CHECK(pct > 40, "accuracy %.2f%% after 12 steps on easy data", pct);
        cJSON_Delete(j);
    }
    CHECK(ckpt_step(cu_tp("full.safetensors")) == 12, "checkpoint step %ld", ckpt_step(cu_tp("full.safetensors")));

    /* eval reads the model from the checkpoint and gets the same accuracy. */
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s --batch 7 --threads 1", cu_tp("full.safetensors"), datadir);
    rc = cu_run(a);
    CHECK(rc == 0 && strstr(cu_out, "test accuracy: "), "eval exit %d: %s %s", rc, cu_out, cu_err);
    char eline[256];
    last_line(cu_out, eline, sizeof eline);
    /* Same accuracy; loss equal to the printed precision (GN is batch-independent). */
    CHECK(strcmp(eline, full_acc) == 0, "eval \"%s\" vs train \"%s\"", eline, full_acc);
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s --limit-test 10", cu_tp("full.safetensors"), datadir);
    CHECK(cu_run(a) == 0 && strstr(cu_out, "test images: 10"), "eval --limit-test: %s", cu_out);
    /* --fold: the same accuracy, the loss to float rounding (printed to 4 decimals) */
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s --batch 7 --threads 1 --fold", cu_tp("full.safetensors"), datadir);
    rc = cu_run(a);
    CHECK(rc == 0 && strstr(cu_out, "folded norm layers: 7"), "eval --fold exit %d: %s %s", rc, cu_out, cu_err);
    {
        char fline[256];
        last_line(cu_out, fline, sizeof fline);
        const char *p1 = strstr(fline, " (loss "), *p2 = strstr(full_acc, " (loss ");
        CHECK(p1 && p2 && p1 - fline == p2 - full_acc && strncmp(fline, full_acc, (size_t)(p1 - fline)) == 0 &&
                  fabs(atof(p1 + 7) - atof(p2 + 7)) <= 2e-4,
              "eval --fold \"%s\" vs \"%s\"", fline, full_acc);
    }
    /* --eval-every: one log line per 2 updates (6 updates). */
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 1 --batch 16 --eval-every 2 --no-augment --log %s",
             datadir, cu_tp("e.jsonl"));
    rc = cu_run(a);
    cu_slurp(cu_tp("e.jsonl"), logtxt, sizeof logtxt);
    lines = 0;
    for (char *s = logtxt; (s = strchr(s, '\n')); s++) lines++;
    CHECK(rc == 0 && lines == 3 && strstr(logtxt, "\"step\": 4,"), "eval-every 2: exit %d, log %s", rc, logtxt);
    /* The default data directory comes from $PROXYNORM_DATA. */
    snprintf(a, sizeof a, "eval --checkpoint %s --threads 1", cu_tp("full.safetensors"));
    setenv("PROXYNORM_DATA", datadir, 1);
    CHECK(cu_run(a) == 0 && strstr(cu_out, "test images: 40"), "PROXYNORM_DATA: %s %s", cu_out, cu_err);
    unsetenv("PROXYNORM_DATA");
}

/* Strips "img_per_s", "seconds" and "peak_rss_mb" (timing) from a log line. */
static void strip_timing(char *s)
{
    char *p = strstr(s, "\"img_per_s\"");
    if (p) *p = '\0';
}

TEST(resume_matches_uninterrupted_run)
{
    char a[2048], line[1024];
    /* Stop mid-epoch 1 (step 4 of 12), then resume to the end. 2 threads: resume is
     * exact for a given thread count. */
    const char *opts = "--epochs 2 --batch 16 --micro-batch 4 --seed 3 ";
    snprintf(a, sizeof a, "train --data %s " TINY "%s --threads 2 --log %s --save %s", datadir, opts,
             cu_tp("s2.jsonl"), cu_tp("s2.safetensors"));
    int rc = cu_run(a);
    CHECK(rc == 0, "straight run exit %d: %s", rc, cu_err);
    char straight_acc[256];
    last_line(cu_out, straight_acc, sizeof straight_acc);
    snprintf(a, sizeof a, "train --data %s " TINY "%s --threads 2 --log %s --save %s --stop-at 4",
             datadir, opts, cu_tp("r.jsonl"), cu_tp("r.safetensors"));
    rc = cu_run(a);
    CHECK(rc == 0 && strstr(cu_out, "stopped at step 4 of 12"), "stop-at exit %d: %s %s", rc, cu_out, cu_err);
    CHECK(ckpt_step(cu_tp("r.safetensors")) == 4, "checkpoint at step %ld", ckpt_step(cu_tp("r.safetensors")));
    snprintf(a, sizeof a, "train --data %s --threads 2 --log %s --save %s --resume %s", datadir,
             cu_tp("r.jsonl"), cu_tp("r.safetensors"), cu_tp("r.safetensors"));
    rc = cu_run(a);
    CHECK(rc == 0, "resume exit %d: %s", rc, cu_err);
    CHECK(strstr(cu_err, "resuming") != NULL, "no resume message: %s", cu_err);
    char resumed_acc[256];
    last_line(cu_out, resumed_acc, sizeof resumed_acc);
    CHECK(strcmp(straight_acc, resumed_acc) == 0, "final \"%s\" vs \"%s\"", straight_acc, resumed_acc);
    CHECK(cu_same_tensors(cu_tp("s2.safetensors"), cu_tp("r.safetensors")),
          "final checkpoints differ (parameters, buffers or momentum)");
    char la[8192], lb[8192], xa[1024], xb[1024];
    cu_slurp(cu_tp("s2.jsonl"), la, sizeof la);
    cu_slurp(cu_tp("r.jsonl"), lb, sizeof lb);
    last_line(la, xa, sizeof xa);
    last_line(lb, xb, sizeof xb);
    strip_timing(xa);
    strip_timing(xb);
    CHECK(strcmp(xa, xb) == 0, "last log lines differ:\n  %s\n  %s", xa, xb);
    (void)line;
    /* A resumed run keeps the checkpoint's configuration. */
    snprintf(a, sizeof a, "train --data %s --resume %s --lr 0.3", datadir, cu_tp("s2.safetensors"));
    CU_EXPECT_FAIL(a, 2, "--lr differs from the checkpoint");
    /* Resuming a finished run just reports its accuracy. */
    snprintf(a, sizeof a, "train --data %s --threads 2 --resume %s", datadir, cu_tp("s2.safetensors"));
    rc = cu_run(a);
    last_line(cu_out, resumed_acc, sizeof resumed_acc);
    CHECK(rc == 0 && strcmp(straight_acc, resumed_acc) == 0, "finished resume: %d %s", rc, cu_out);
}

TEST(nan_stops_with_exit_3)
{
    char a[2048];
    snprintf(a, sizeof a,
             "train --data %s " TINY "--epochs 20 --batch 16 --lr 1e30 --warmup 0 --save %s --save-every 1",
             datadir, cu_tp("nan.safetensors"));
    /* TINY sets --lr 0.05 first; the later --lr 1e30 wins. */
    int rc = cu_run(a);
    CHECK(rc == 3, "exit %d: %s", rc, cu_err);
    const char *s = strstr(cu_err, "at step ");
    CHECK(strstr(cu_err, "diverged") && s, "message: %s", cu_err);
    if (s) {
        long bad = atol(s + 8);
        long saved = ckpt_step(cu_tp("nan.safetensors"));
        CHECK((bad >= 2 && saved == bad - 1) || (bad == 1 && saved == -1),
              "NaN at step %ld, checkpoint at step %ld", bad, saved);
        if (saved > 0) {
            snprintf(a, sizeof a, "eval --checkpoint %s --data %s --threads 1", cu_tp("nan.safetensors"), datadir);
            CHECK(cu_run(a) == 0, "the last good checkpoint does not evaluate: %s", cu_err);
        }
    }
}

/* CIFAR-10 binary layout (3x32x32, pad-4 crops): 5 training files of 8 records, 1 test file. */
TEST(cifar_binary_data)
{
    char dir[400], p[600], a[2048];
    snprintf(dir, sizeof dir, "%s/cifar", cu_tmpdir);
    mkdir(dir, 0755);
    harness_seed(77);
    unsigned char rec[1 + 3072];
    for (int f = 0; f <= 5; f++) {
        if (f < 5) snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, f + 1);
        else snprintf(p, sizeof p, "%s/test_batch.bin", dir);
        FILE *fp = fopen(p, "wb");
        CHECK(fp != NULL, "cannot write %s", p);
        if (!fp) return;
        for (int r = 0; r < 8; r++) {
            rec[0] = (unsigned char)(harness_uniform() * 10);
            for (int k = 0; k < 3072; k++) rec[1 + k] = (unsigned char)(harness_uniform() * 256);
            fwrite(rec, 1, sizeof rec, fp);
        }
        fclose(fp);
    }
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 1 --batch 8 --micro-batch 4 --save %s", dir,
             cu_tp("cifar.safetensors"));
    int rc = cu_run(a);
    CHECK(rc == 0 && strstr(cu_err, "cifar10: 40 train / 8 test") && strstr(cu_out, "test accuracy: "),
          "cifar train exit %d: %s %s", rc, cu_out, cu_err);
    pn_st_file *f = NULL;
    CHECK(pn_safetensors_read(&f, cu_tp("cifar.safetensors")) == PN_OK, "%s", pn_last_error());
    if (f) {
        const char *ch = pn_safetensors_meta(f, "in_channels"), *im = pn_safetensors_meta(f, "image"),
                   *pad = pn_safetensors_meta(f, "augment_pad");
        CHECK(ch && !strcmp(ch, "3") && im && !strcmp(im, "32") && pad && !strcmp(pad, "4"),
              "metadata in_channels %s image %s augment_pad %s", ch, im, pad);
        pn_safetensors_close(f);
    }
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s", cu_tp("cifar.safetensors"), dir);
    CHECK(cu_run(a) == 0 && strstr(cu_out, "test images: 8"), "cifar eval: %s %s", cu_out, cu_err);
    /* A grey-scale 8x8 model cannot evaluate colour 32x32 images. */
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s", cu_tp("full.safetensors"), dir);
    CU_EXPECT_FAIL(a, 1, "expects");
}

TEST(sigint_saves_and_exits_130)
{
    char a[8192];
    snprintf(a, sizeof a, "exec %s train --data %s " TINY "--epochs 100000 --batch 16 --save %s --save-every 1 >%s 2>%s",
             cu_bin, datadir, cu_tp("int.safetensors"), cu_tp("int.out"), cu_tp("int.err"));
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", a, (char *)NULL);
        _exit(127);
    }
    CHECK(pid > 0, "fork failed");
    if (pid <= 0) return;
    /* Wait (at most ~20 s) for the first checkpoint: the handler is installed by then. */
    struct stat st;
    for (int i = 0; i < 2000 && stat(cu_tp("int.safetensors"), &st) != 0; i++) usleep(10000);
    kill(pid, SIGINT);
    int ws = 0;
    waitpid(pid, &ws, 0);
    cu_slurp(cu_tp("int.out"), cu_out, sizeof cu_out);
    cu_slurp(cu_tp("int.err"), cu_err, sizeof cu_err);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 130, "status 0x%x, stderr %s", ws, cu_err);
    const char *s = strstr(cu_out, "interrupted at step ");
    CHECK(s != NULL, "stdout: %s", cu_out);
    if (s) {
        long at = atol(s + 20);
        CHECK(at >= 1 && ckpt_step(cu_tp("int.safetensors")) == at, "interrupted at %ld, checkpoint at %ld", at,
              ckpt_step(cu_tp("int.safetensors")));
    }
}

TEST(bad_input)
{
    char a[2048];
    const char *d = datadir;
#define BAD(code, msg, ...)                                 \
    do {                                                    \
        snprintf(a, sizeof a, __VA_ARGS__);                 \
        CU_EXPECT_FAIL(a, code, msg);                          \
    } while (0)
    BAD(2, "unknown option \"--foo\"", "train --data %s --foo 1", d);
    BAD(2, "unexpected argument", "train --data %s extra", d);
    BAD(2, "--epochs needs a value", "train --data %s --epochs", d);
    BAD(2, "--epochs: -1 is out of range", "train --data %s --epochs -1", d);
    BAD(2, "--epochs: 0 is out of range", "train --data %s --epochs 0", d);
    BAD(2, "--epochs: \"two\" is not an integer", "train --data %s --epochs two", d);
    BAD(2, "--batch: \"16.5\" is not an integer", "train --data %s --batch 16.5", d);
    BAD(2, "--lr: \"0.1x\" is not a finite number", "train --data %s --lr 0.1x", d);
    BAD(2, "--lr: \"nan\" is not a finite number", "train --data %s --lr nan", d);
    BAD(2, "--lr: -0.1 is out of range", "train --data %s --lr -0.1", d);
    BAD(2, "--wd: \"\" is not a finite number", "train --data %s --wd=", d);
    BAD(2, "--momentum: 1 is out of range", "train --data %s --momentum 1", d);
    BAD(2, "--seed: \"-3\" is not a non-negative integer", "train --data %s --seed -3", d);
    BAD(2, "--threads: 0 is out of range", "train --data %s --threads 0", d);
    BAD(2, "micro-batch 5 does not divide batch 16", "train --data %s --batch 16 --micro-batch 5", d);
    BAD(2, "unknown norm \"batchnorm\"", "train --data %s --norm batchnorm", d);
    BAD(2, "unknown model \"resnet9\"", "train --data %s --model resnet9", d);
    BAD(2, "unknown model \"vgg16\"", "train --data %s --model vgg16", d);
    BAD(2, "--norm-batch only applies to --norm bn", "train --data %s --norm gn --norm-batch 2", d);
    BAD(2, "norm-batch 3 does not divide micro-batch 8",
        "train --data %s --norm bn --batch 16 --micro-batch 8 --norm-batch 3", d);
    BAD(2, "warmup must be in [0, epochs]", "train --data %s --epochs 1 --warmup 2", d);
    BAD(2, "--save-every needs --save", "train --data %s --save-every 5", d);
    BAD(2, "--nesterov takes no value", "train --data %s --nesterov=1", d);
    BAD(2, "--nesterov needs a momentum > 0", "train --data %s --momentum 0 --nesterov", d);
    BAD(1, "cannot load the training set", "train --data %s/nowhere " TINY, d);
    BAD(1, "larger than the training set", "train --data %s " TINY "--batch 1000", d);
    BAD(1, "is not writable", "train --data %s " TINY "--save %s/no/such/dir/c.safetensors", d, d);
    BAD(1, "cannot open the log", "train --data %s " TINY "--batch 16 --log %s/no/such/dir/log.jsonl", d, d);
    BAD(2, "--checkpoint is required", "eval --data %s", d);
    BAD(2, "unknown option \"--lr\"", "eval --data %s --checkpoint x --lr 1", d);
    BAD(2, "--batch: 0 is out of range", "eval --data %s --checkpoint x --batch 0", d);
    BAD(1, "cannot load the checkpoint", "eval --data %s --checkpoint %s", d, cu_tp("missing.safetensors"));
    /* Corrupt checkpoints: garbage, truncated, a JSON header that is not ours. */
    FILE *f = fopen(cu_tp("garbage.safetensors"), "wb");
    if (f) { fputs("this is not a safetensors file at all", f); fclose(f); }
    BAD(1, "cannot load the checkpoint", "eval --data %s --checkpoint %s", d, cu_tp("garbage.safetensors"));
    BAD(1, "cannot resume", "train --data %s --resume %s", d, cu_tp("garbage.safetensors"));
    {
        char buf[65536];
        FILE *in = fopen(cu_tp("full.safetensors"), "rb");
        size_t k = in ? fread(buf, 1, sizeof buf, in) : 0;
        if (in) fclose(in);
        f = fopen(cu_tp("trunc.safetensors"), "wb");
        if (f) { fwrite(buf, 1, k > 2000 ? k - 1000 : k / 2, f); fclose(f); }
        /* Flip bytes in the middle of the JSON header. */
        if (k > 100) {
            memcpy(buf + 40, "}}}}", 4);
            f = fopen(cu_tp("badjson.safetensors"), "wb");
            if (f) { fwrite(buf, 1, k, f); fclose(f); }
        }
    }
    BAD(1, "cannot load the checkpoint", "eval --data %s --checkpoint %s", d, cu_tp("trunc.safetensors"));
    BAD(1, "cannot load the checkpoint", "eval --data %s --checkpoint %s", d, cu_tp("badjson.safetensors"));
    BAD(1, "cannot resume", "train --data %s --resume %s", d, cu_tp("trunc.safetensors"));
    /* A checkpoint whose model does not match the data (8x8 model, 10x10 images). */
    char d10[400];
    snprintf(d10, sizeof d10, "%s/ten", cu_tmpdir);
    mkdir(d10, 0755);
    if (write_idx(d10, "train", 32, 10, 5) == 0 && write_idx(d10, "t10k", 8, 10, 6) == 0) {
        BAD(1, "expects", "eval --data %s --checkpoint %s", d10, cu_tp("full.safetensors"));
        BAD(1, "expects", "train --data %s --resume %s", d10, cu_tp("full.safetensors"));
    }
#undef BAD
}

/* $PROXYNORM_BIN, else proxynorm in the parent of this program's directory
 * (build/tests/test_cli -> build/proxynorm). */
static int find_bin(const char *argv0)
{
    const char *env = getenv("PROXYNORM_BIN");
    if (env && *env) {
        snprintf(cu_bin, sizeof cu_bin, "%s", env);
        return access(cu_bin, X_OK);
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        if (!argv0) return -1;
        snprintf(self, sizeof self, "%s", argv0);
    } else {
        self[n] = '\0';
    }
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = '\0'; /* .../build/tests */
    slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = '\0'; /* .../build */
    if ((size_t)snprintf(cu_bin, sizeof cu_bin, "%.*s/proxynorm", (int)(sizeof cu_bin - 16), self) >= sizeof cu_bin)
        return -1;
    return access(cu_bin, X_OK);
}

int main(int argc, char **argv)
{
    (void)argc;
    if (find_bin(argv[0]) != 0) {
        printf("FAIL setup: %s not found (the Makefile builds it before the tests)\nRESULT 0 1\n", cu_bin);
        return 1;
    }
    if (cu_make_tmpdir("cli")) return 1;
    snprintf(datadir, sizeof datadir, "%s/data", cu_tmpdir);
    if (cu_write_data(datadir, 96, 40, 8)) {
        printf("RESULT 0 1\n");
        return 1;
    }
    unsetenv("PROXYNORM_DATA");
    RUN(help_and_version);
    RUN(info_json);
    RUN(train_eval_and_log);
    RUN(resume_matches_uninterrupted_run);
    RUN(nan_stops_with_exit_3);
    RUN(cifar_binary_data);
    RUN(sigint_saves_and_exits_130);
    RUN(bad_input);
    cu_remove_tmpdir();
    return harness_summary();
}
