/* Data-parallel training under mpirun (build/proxynorm next to build/tests/, or
 * $PROXYNORM_BIN): 2 ranks x 64 images reach the parameters of 1 process x 128,
 * checkpoints resume at any rank count, differing configurations and dead ranks
 * end the job with an error (never a hang). A build without MPI must refuse
 * --distributed and mpirun with a clear message. Synthetic IDX data. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist/syncbn.h"
#include "harness.h"
#include "synth_idx.h"
#include "cli_util.h"
#include "io/safetensors.h"
#include "nn/model.h"
#include "proxynorm.h"

static char bin[PATH_MAX], tmpdir[64], datadir[128];
static char out_buf[1 << 16];
static int sanitized; /* the binary is a sanitizer build */

static const char *tp(const char *name)
{
    static char p[8][256];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

/* Runs a shell command (stdout+stderr into out_buf) under a 90 s limit;
 * returns its exit status, 124 on time-out, -1 if it did not exit. */
static int sh(const char *cmd)
{
    static char full[32768];
    const char *asan = sanitized ? "ASAN_OPTIONS=detect_leaks=0 " : ""; /* Open MPI's own leaks */
    if ((size_t)snprintf(full, sizeof full, "%stimeout -k 5 90 sh -c '%s' >%s 2>&1 </dev/null", asan,
                         cmd, tp("out")) >= sizeof full)
        return -1;
    int st = system(full);
    FILE *f = fopen(tp("out"), "rb");
    size_t k = f ? fread(out_buf, 1, sizeof out_buf - 1, f) : 0;
    out_buf[k] = '\0';
    if (f) fclose(f);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe --bind-to none "
#define TINY "--model resnet8 --width 4 --groups 2 --lr 0.05 --warmup 0.5 --threads 1 --epochs 2 --limit-test 32 "


#ifdef PN_HAVE_MPI
/* Largest |a - b| / (1 + |a|) over the tensors of a (velocity included) whose
 * name does not contain skip (NULL: all), -1 if a tensor is missing or
 * the files cannot be read. *n receives the number of tensors compared. */
static double max_diff(const char *pa, const char *pb, const char *skip, int *n)
{
    pn_st_file *a = NULL, *b = NULL;
    double worst = -1.0;
    *n = 0;
    if (pn_safetensors_read(&a, pa) != PN_OK || pn_safetensors_read(&b, pb) != PN_OK) goto done;
    worst = 0.0;
    for (int i = 0; i < pn_safetensors_count(a); i++) {
        const char *name = pn_safetensors_name(a, i);
        if (skip && strstr(name, skip)) continue;
        int da = 0, db = 0;
        int64_t sa[PN_ST_MAX_DIMS], sb[PN_ST_MAX_DIMS];
        const float *xa, *xb;
        if (pn_safetensors_get(a, name, &da, sa, &xa) != PN_OK ||
            pn_safetensors_get(b, name, &db, sb, &xb) != PN_OK || da != db) {
            worst = -1.0;
            goto done;
        }
        size_t numel = 1;
        for (int d = 0; d < da; d++) {
            if (sa[d] != sb[d]) { worst = -1.0; goto done; }
            numel *= (size_t)sa[d];
        }
        for (size_t k = 0; k < numel; k++) {
            double e = fabs((double)xa[k] - xb[k]) / (1.0 + fabs((double)xa[k]));
            if (!(e <= worst)) worst = e; /* NaN counts as worst */
        }
        (*n)++;
    }
done:
    pn_safetensors_close(a);
    pn_safetensors_close(b);
    return worst;
}

static int count(const char *s, const char *sub)
{
    int c = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) c++;
    return c;
}
#endif

/* The sync-BN kernels on one process equal the built-in BatchNorm (outputs,
 * gradients, running statistics): runs in every build. */
TEST(syncbn_one_process_equals_builtin_bn)
{
    pn_model_config mc;
    pn_model_config_default(&mc);
    snprintf(mc.arch, sizeof mc.arch, "resnet8");
    mc.norm = PN_NORM_BN;
    mc.width = 4;
    mc.in_channels = 1;
    mc.image = 8;
    mc.classes = 4;
    pn_model *a = NULL, *b = NULL;
    CHECK(pn_model_create(&a, &mc, 5) == PN_OK && pn_model_create(&b, &mc, 5) == PN_OK, "create");
    if (!a || !b) { pn_model_free(a); pn_model_free(b); return; }
    pn_syncbn s;
    pn_bn_override o;
    pn_dist d = { 0, 1, 1, NULL, NULL, NULL, NULL };
    pn_syncbn_override(&s, &d, &o);
    CHECK(pn_model_set_bn_override(b, &o) == PN_OK, "override: %s", pn_last_error());
    enum { B = 6 };
    float x[B * 64];
    int y[B];
    harness_seed(11);
    for (int i = 0; i < B * 64; i++) x[i] = (float)harness_normal();
    for (int i = 0; i < B; i++) y[i] = i % 4;
    for (int it = 0; it < 2; it++) {
        pn_model *ms[2] = { a, b };
        const float *lg[2];
        for (int k = 0; k < 2; k++) {
            double ls;
            int cor;
            CHECK(pn_model_forward(ms[k], x, B, 1, &lg[k]) == PN_OK, "forward %d", k);
            CHECK(pn_model_loss(ms[k], y, 0.0f, &ls, &cor) == PN_OK, "loss %d", k);
            CHECK(pn_model_backward(ms[k], 1.0f / B) == PN_OK, "backward %d", k);
        }
        double e = 0;
        for (int i = 0; i < B * 4; i++) e = fmax(e, fabs((double)lg[0][i] - lg[1][i]));
        CHECK(e < 1e-5, "logits differ by %g", e);
        const float *ga = pn_model_grads(a), *gb = pn_model_grads(b);
        e = 0;
        double gmax = 0;
        for (size_t i = 0; i < pn_model_num_params(a); i++) {
            e = fmax(e, fabs((double)ga[i] - gb[i]));
            gmax = fmax(gmax, fabs((double)ga[i]));
        }
        CHECK(e < 1e-5 * (1 + gmax) && gmax > 0, "gradients differ by %g (max %g)", e, gmax);
        const float *ba = pn_model_buffers(a), *bb = pn_model_buffers(b);
        e = 0;
        for (size_t i = 0; i < pn_model_num_buffers(a); i++) e = fmax(e, fabs((double)ba[i] - bb[i]));
        CHECK(e < 1e-6 && pn_model_num_buffers(a) > 0, "running statistics differ by %g", e);
    }
    CHECK(s.bytes > 0, "sync-bn counted no bytes");
    CHECK(pn_model_set_bn_override(b, NULL) == PN_OK, "reset");
    /* Only for BN over the whole micro-batch. */
    mc.norm_batch = 2;
    pn_model *c = NULL;
    if (pn_model_create(&c, &mc, 5) == PN_OK)
        CHECK(pn_model_set_bn_override(c, &o) != PN_OK, "override accepted with norm-batch 2");
    pn_model_free(c);
    pn_model_free(a);
    pn_model_free(b);
    pn_syncbn_free(&s);
}

#ifdef PN_HAVE_MPI

static char cmd[16384];

/* 2 ranks x B/2 against 1 process x B (same update, float summation order aside), after
 * `epochs` epochs of TINY (4 updates each). The summation order changes the weights by
 * ~1e-8 relative; through the ReLUs that difference is amplified chaotically once a
 * pre-activation near 0 changes sign in one run and not in the other (its gradient term
 * appears or vanishes: ~1e-4 of a weight gradient at this size). Within one epoch no
 * crossing happened in either build (4e-8); over two, the sanitizer build's gn+pn run
 * crossed at update 5 (velocity 1.2e-3, weights 3.8e-5). Hence tight tolerances for one
 * epoch, and a loose one for the epoch boundary (reshuffle, evaluation). */
static void same_as_one_process(const char *norm, int single_mb, int rank_mb, const char *extra,
                                const char *skip, double tol, int epochs)
{
    char one[64], two[64];
    snprintf(one, sizeof one, "one_%c%s.safetensors", norm[0], *extra ? "s" : "");
    snprintf(two, sizeof two, "two_%c%s.safetensors", norm[0], *extra ? "s" : "");
    snprintf(cmd, sizeof cmd, "%s train --data %s " TINY "--epochs %d --norm %s --batch 128 --micro-batch %d "
             "--save %s --log %s", bin, datadir, epochs, norm, single_mb, tp(one), tp("one.log"));
    int rc = sh(cmd);
    CHECK(rc == 0, "%s: 1 process: exit %d: %s", norm, rc, out_buf);
    snprintf(cmd, sizeof cmd,
             MPIRUN "-np 2 %s train --data %s " TINY "--epochs %d --norm %s --batch 128 --micro-batch %d "
             "--save %s --log %s %s", bin, datadir, epochs, norm, rank_mb, tp(two), tp("two.log"), extra);
    rc = sh(cmd);
    CHECK(rc == 0, "%s: 2 ranks: exit %d: %s", norm, rc, out_buf);
    /* Rank 0 alone reports. */
    CHECK(count(out_buf, "test accuracy") == 1 && count(out_buf, "x 2 ranks") == 1,
          "%s: one report expected: %s", norm, out_buf);
    int n = 0;
    double d = max_diff(tp(one), tp(two), skip, &n);
    CHECK(d >= 0 && d < tol && n > 10, "%s: %d epochs: 2 ranks vs 1 process: max rel. diff %g over %d tensors",
          norm, epochs, d, n);
    /* Not a tautology: a different seed is far away. */
    snprintf(cmd, sizeof cmd, "%s train --data %s " TINY "--epochs %d --norm %s --batch 128 --micro-batch %d "
             "--seed 9 --save %s", bin, datadir, epochs, norm, single_mb, tp("seed9.safetensors"));
    CHECK(sh(cmd) == 0, "%s: seed 9: %s", norm, out_buf);
    double far = max_diff(tp("seed9.safetensors"), tp(two), skip, &n);
    CHECK(far > 10 * tol, "%s: another seed differs by only %g", norm, far);
    FILE *f = fopen(tp("two.log"), "r");
    char line[1024] = "", line1[1024] = "";
    CHECK(f && fgets(line, sizeof line, f) && strstr(line, "\"ranks\": 2") && strstr(line, "\"comm_bytes\": "),
          "%s: log line %s", norm, line);
    if (f) fclose(f);
    /* The sharded evaluation gives the single-process test loss and accuracy
     * (when every tensor agrees: not for BN's running statistics without sync). */
    if (!skip) {
        f = fopen(tp("one.log"), "r");
        CHECK(f && fgets(line1, sizeof line1, f), "%s: no single-process log", norm);
        if (f) fclose(f);
        const char *a1 = strstr(line1, "\"test_loss\": "), *a2 = strstr(line, "\"test_loss\": ");
        const char *c1 = strstr(line1, "\"test_acc\": "), *c2 = strstr(line, "\"test_acc\": ");
        CHECK(a1 && a2 && c1 && c2 && fabs(atof(a1 + 13) - atof(a2 + 13)) < 1e-5 &&
              atof(c1 + 12) == atof(c2 + 12) && atof(a1 + 13) > 0,
              "%s: test loss/accuracy: 1 process %s, 2 ranks %s", norm, line1, line);
    }
    printf("%s%s, %d epochs: max rel. diff 2 ranks vs 1 process %.3g (another seed %.3g); log %s", norm, extra,
           epochs, d, far, line);
}

TEST(gnpn_two_ranks_equal_one_process)
{
    /* Augmentation on: rank 1 draws the crops a single process draws for its images.
     * Micro-batches of 32 on both sides: gn+pn does not depend on the micro-batch, and
     * with the same micro-batches only the order of the final gradient sum differs (the
     * direct convolution sums a weight gradient over a micro-batch's images in its own
     * order, and 8 updates of this tiny gn+pn net amplified that difference to 1.2e-3
     * between micro-batches of 128 and 32 in the sanitizer build). Two epochs with the
     * loose tolerance (see same_as_one_process), then one epoch with the tight one (its
     * one_g.safetensors is resume_at_another_rank_count's reference). */
    same_as_one_process("gn+pn", 32, 32, "", NULL, 1e-2, 2);
    same_as_one_process("gn+pn", 32, 32, "", NULL, 2e-5, 1);
}

TEST(bn_two_ranks_equal_one_process_micro_batches)
{
    /* BN normalizes per rank: equals one process with micro-batches of B/2 = 64
     * split the same way (parameters and momentum; the running statistics are
     * averaged over ranks rather than updated one after the other). */
    same_as_one_process("bn", 64, 64, "", "running", 2e-5, 1);
}

TEST(sync_bn_two_ranks_equal_one_process)
{
    /* --sync-bn: 2 ranks x 64 normalize like 1 process x 128, running statistics included. */
    same_as_one_process("bn", 128, 64, " --sync-bn", NULL, 2e-5, 1);
    /* Only for BN. */
    snprintf(cmd, sizeof cmd, MPIRUN "-np 2 %s train --data %s " TINY "--batch 128 --micro-batch 64 --sync-bn",
             bin, datadir);
    int rc = sh(cmd);
    CHECK(rc == 2 && strstr(out_buf, "--sync-bn needs --norm bn"), "sync-bn with gn+pn: exit %d: %s", rc, out_buf);
}

TEST(resume_at_another_rank_count)
{
    /* 2 ranks stop after 3 updates; 1 process resumes to the end = 1 process throughout
     * (one_g: one epoch, micro-batches of 32, as here). */
    snprintf(cmd, sizeof cmd,
             MPIRUN "-np 2 %s train --data %s " TINY "--epochs 1 --norm gn+pn --batch 128 --micro-batch 32 "
             "--save %s --stop-at 3", bin, datadir, tp("r.safetensors"));
    int rc = sh(cmd);
    CHECK(rc == 0 && strstr(out_buf, "stopped at step 3"), "2 ranks --stop-at 3: exit %d: %s", rc, out_buf);
    snprintf(cmd, sizeof cmd, "%s train --data %s --threads 1 --resume %s", bin, datadir, tp("r.safetensors"));
    rc = sh(cmd);
    CHECK(rc == 0, "resume with 1 process: exit %d: %s", rc, out_buf);
    int n = 0;
    double d = max_diff(tp("one_g.safetensors"), tp("r.safetensors"), NULL, &n);
    CHECK(d >= 0 && d < 2e-5 && n > 10, "resumed vs uninterrupted: %g over %d tensors", d, n);
}

TEST(configuration_mismatch_is_an_error)
{
    /* Each rank a different seed: detected at start, one clear message, no hang. */
    snprintf(cmd, sizeof cmd,
             MPIRUN "-np 2 sh -c \"exec %s train --data %s " TINY "--batch 128 --micro-batch 64 "
             "--seed \\$OMPI_COMM_WORLD_RANK\"", bin, datadir);
    int rc = sh(cmd);
    CHECK(rc != 0 && rc != 124 && count(out_buf, "do not have the same configuration") == 1,
          "different seeds: exit %d: %s", rc, out_buf);
    /* A different model per rank. */
    snprintf(cmd, sizeof cmd,
             MPIRUN "-np 2 sh -c \"exec %s train --data %s " TINY "--batch 128 --micro-batch 64 "
             "--model resnet\\$((8 + 6 * OMPI_COMM_WORLD_RANK))\"", bin, datadir);
    rc = sh(cmd);
    CHECK(rc != 0 && rc != 124 && strstr(out_buf, "do not have the same configuration"),
          "different models: exit %d: %s", rc, out_buf);
    /* The batch must split into whole micro-batches per rank. */
    snprintf(cmd, sizeof cmd, MPIRUN "-np 2 %s train --data %s " TINY "--batch 128 --micro-batch 128",
             bin, datadir);
    rc = sh(cmd);
    CHECK(rc == 2 && count(out_buf, "multiple of ranks x micro-batch (256)") == 1,
          "batch not split: exit %d: %s", rc, out_buf);
}

static long ckpt_step(const char *path)
{
    pn_st_file *f = NULL;
    if (pn_safetensors_read(&f, path) != PN_OK) return -1;
    const char *v = pn_safetensors_meta(f, "step");
    long st = v ? atol(v) : -1;
    pn_safetensors_close(f);
    return st;
}

TEST(sigterm_saves_and_resumes)
{
    /* SIGTERM to mpirun (forwarded to the ranks): all stop after the same update,
     * rank 0 saves; the run resumes at 2 ranks. */
    snprintf(cmd, sizeof cmd,
             MPIRUN "-np 2 %s train --data %s " TINY "--epochs 100000 --batch 128 --micro-batch 64 "
             "--save %s --save-every 1 & MP=$!; while [ ! -e %s ]; do sleep 0.1; done; sleep 0.3; "
             "kill -TERM $MP; wait $MP", bin, datadir, tp("sig.safetensors"), tp("sig.safetensors"));
    int rc = sh(cmd);
    long st = ckpt_step(tp("sig.safetensors"));
    CHECK(rc != 124 && strstr(out_buf, "interrupted at step") && st >= 1,
          "SIGTERM: exit %d, checkpoint step %ld: %.3000s", rc, st, out_buf);
    if (st < 1) return;
    snprintf(cmd, sizeof cmd, MPIRUN "-np 2 %s train --data %s --threads 1 --resume %s --stop-at %ld",
             bin, datadir, tp("sig.safetensors"), st + 2);
    rc = sh(cmd);
    CHECK(rc == 0 && ckpt_step(tp("sig.safetensors")) == st + 2, "resume after SIGTERM: exit %d: %s",
          rc, out_buf);
}

TEST(dead_rank_ends_the_job)
{
    /* Rank 1 is killed mid-run: the job ends (non-zero), rank 0 does not wait forever. */
    snprintf(cmd, sizeof cmd,
             MPIRUN "-np 2 sh -c \"if [ \\$OMPI_COMM_WORLD_RANK = 1 ]; then exec timeout -s KILL 2 %s train "
             "--data %s " TINY "--epochs 100000 --batch 128 --micro-batch 64; else exec %s train --data %s "
             TINY "--epochs 100000 --batch 128 --micro-batch 64; fi\"", bin, datadir, bin, datadir);
    int rc = sh(cmd);
    CHECK(rc != 0 && rc != 124, "killed rank: exit %d (124: hang): %.2000s", rc, out_buf);
}

#else

TEST(no_mpi_build_refuses_distributed)
{
    static char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s train --data %s " TINY "--distributed", bin, datadir);
    int rc = sh(cmd);
    CHECK(rc == 2 && strstr(out_buf, "--distributed, but this build has no MPI"), "exit %d: %s", rc, out_buf);
    snprintf(cmd, sizeof cmd, "OMPI_COMM_WORLD_SIZE=2 %s train --data %s " TINY, bin, datadir);
    rc = sh(cmd);
    CHECK(rc == 2 && strstr(out_buf, "started by mpirun, but this build has no MPI"), "exit %d: %s", rc, out_buf);
    /* One process (mpirun -np 1) trains as usual. */
    snprintf(cmd, sizeof cmd, "OMPI_COMM_WORLD_SIZE=1 %s train --data %s " TINY "--batch 128 --epochs 1", bin, datadir);
    rc = sh(cmd);
    CHECK(rc == 0 && strstr(out_buf, "test accuracy"), "exit %d: %s", rc, out_buf);
}

#endif

/* cu_find_bin (cli_util.h), then whether that binary is the sanitizer build's. */
static int find_bin(void)
{
    int rc = cu_find_bin();
    snprintf(bin, sizeof bin, "%s", cu_bin);
    if (rc != 0) return rc;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", bin);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    size_t l = strlen(dir);
    sanitized = l >= 4 && strcmp(dir + l - 4, "-san") == 0;
    return 0;
}

int main(void)
{
    if (find_bin() != 0) {
        printf("FAIL setup: %s not found (the Makefile builds it before the tests)\nRESULT 0 1\n", bin);
        return 1;
    }
    strcpy(tmpdir, "/tmp/pn_test_mpi_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    snprintf(datadir, sizeof datadir, "%s/data", tmpdir);
    mkdir(datadir, 0755);
    if (write_idx(datadir, "train", 512, 12, 1) || write_idx(datadir, "t10k", 32, 12, 2)) {
        printf("FAIL setup: cannot write data\nRESULT 0 1\n");
        return 1;
    }
    RUN(syncbn_one_process_equals_builtin_bn);
#ifdef PN_HAVE_MPI
    RUN(gnpn_two_ranks_equal_one_process);
    RUN(bn_two_ranks_equal_one_process_micro_batches);
    RUN(sync_bn_two_ranks_equal_one_process);
    RUN(resume_at_another_rank_count);
    RUN(configuration_mismatch_is_an_error);
    RUN(sigterm_saves_and_resumes);
    RUN(dead_rank_ends_the_job);
#else
    RUN(no_mpi_build_refuses_distributed);
#endif
    char rm[256];
    snprintf(rm, sizeof rm, "rm -rf %s", tmpdir);
    if (system(rm) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
    return harness_summary();
}
