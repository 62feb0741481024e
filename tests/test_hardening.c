/* Hardening of the command line (run as a child) and of the checkpoint reader:
 *   - the command line under valgrind (train, eval, info and error paths): no
 *     memory error, no leak;
 *   - a full disk while saving (a small tmpfs mounted for the test; we run as
 *     root, also in CI): a clear message, exit 1, the previous checkpoint intact;
 *   - a memory limit (RLIMIT_AS): a clear message, exit 1, the checkpoint intact;
 *   - a huge learning rate: stops at the first non-finite loss, exit 3, message
 *     naming the step;
 *   - regressions of the fuzzing work (fuzz/): checkpoints whose metadata
 *     describe a giant model are refused before it is built; every truncation of a
 *     checkpoint is refused; reading from memory and from a file agree.
 * The valgrind and memory-limit tests need the normal build (ASan reserves
 * terabytes of address space and cannot run under valgrind): the sanitizer build
 * skips them, saying so. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "synth_idx.h"
#include "cli_util.h"
#include "kernels/common.h"
#include "nn/model.h"
#include "train/trainer.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static char datadir[300], mnt[300];
static int mounted;

/* proxynorm ARGS (prefix: e.g. "valgrind ..." or "prlimit ..."); exit status. */
static int run(const char *prefix, const char *args)
{
    static char cmd[16384];
    snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1 %s %s %s", prefix,
             cu_bin, args);
    return cu_system(cmd, cu_tp("stdout"), cu_tp("stderr"), cu_out, cu_err, sizeof cu_out);
}

#define TINY "--model resnet8 --width 2 --groups 2 --batch 8 --threads 1 "

static void unmount(void)
{
    if (mounted && umount2(mnt, MNT_DETACH) == 0) mounted = 0;
}

/* ------------------------------------------------------------- valgrind */

#define VG "valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible"

TEST(cli_under_valgrind)
{
    char a[2048];
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 1 --limit-train 16 --save %s --log %s",
             datadir, cu_tp("vg.safetensors"), cu_tp("vg.log"));
    int rc = run(VG, a);
    CHECK(rc == 0 && strstr(cu_err, "==") == NULL, "train under valgrind: exit %d\n%s", rc,
          cu_err);
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s --threads 1", cu_tp("vg.safetensors"),
             datadir);
    rc = run(VG, a);
    CHECK(rc == 0 && strstr(cu_out, "test accuracy") && !strstr(cu_err, "=="),
          "eval under valgrind: exit %d\n%s", rc, cu_err);
    rc = run(VG, "info --model resnet8 --norm gn+pn --channels 1 --image 8 --classes 4");
    CHECK(rc == 0 && strstr(cu_out, "\"params\"") && !strstr(cu_err, "=="),
          "info under valgrind: exit %d\n%s", rc, cu_err);
    /* Error paths: a corrupt checkpoint, a missing data set, a bad option. */
    FILE *f = fopen(cu_tp("bad.safetensors"), "wb");
    if (f) {
        fputs("\x10\0\0\0\0\0\0\0{\"a\":[1,2", f);
        fclose(f);
    }
    snprintf(a, sizeof a, "eval --checkpoint %s --data %s", cu_tp("bad.safetensors"), datadir);
    rc = run(VG, a);
    CHECK(rc == 1 && strstr(cu_err, "cannot load") && !strstr(cu_err, "=="),
          "eval of a corrupt checkpoint under valgrind: exit %d\n%s", rc, cu_err);
    snprintf(a, sizeof a, "train --data %s " TINY, cu_tp("nonexistent"));
    rc = run(VG, a);
    CHECK(rc == 1 && !strstr(cu_err, "=="), "train without data under valgrind: exit %d\n%s",
          rc, cu_err);
    rc = run(VG, "train --lr nan");
    CHECK(rc == 2 && !strstr(cu_err, "=="), "bad option under valgrind: exit %d\n%s", rc,
          cu_err);
}

/* ------------------------------------------------------------ disk full */

/* Fills the file system of dir with dir/filler until ENOSPC; bytes written. */
static long fill(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    static char block[4096];
    long total = 0;
    for (;;) {
        ssize_t k = write(fd, block, sizeof block);
        if (k <= 0) break;
        total += k;
    }
    close(fd);
    return total;
}

TEST(disk_full_while_saving)
{
    char ck[400], bak[400], filler[400], tmpf[420], a[2048];
    snprintf(ck, sizeof ck, "%s/ck.safetensors", mnt);
    snprintf(tmpf, sizeof tmpf, "%s.tmp", ck);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    snprintf(bak, sizeof bak, "%s", cu_tp("ck.backup"));
    /* A checkpoint at step 2 on the small file system. */
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 3 --stop-at 2 --save %s", datadir, ck);
    int rc = run("", a);
    CHECK(rc == 0, "first run: exit %d: %s", rc, cu_err);
    snprintf(a, sizeof a, "cp %s %s", ck, bak);
    CHECK(rc == 0 && system(a) == 0, "cannot copy %s", ck);
    if (harness_cur_failed) return;
    size_t cksize = 0;
    free(cu_read_all(bak, &cksize));

    /* Case 1: not a byte left. Case 2: room for about half a checkpoint. */
    long filled = fill(filler);
    CHECK(filled > 0, "cannot fill %s", mnt);
    for (int c = 0; c < 2 && !harness_cur_failed; c++) {
        if (c == 1) CHECK(truncate(filler, filled - (long)cksize / 2) == 0, "truncate");
        snprintf(a, sizeof a, "train --data %s --resume %s --save-every 1 --threads 1", datadir, ck);
        rc = run("", a);
        CHECK(rc == 1 && strstr(cu_err, "No space left on device"),
              "case %d: saving to a full disk: exit %d, stderr %s", c + 1, rc, cu_err);
        CHECK(cu_same_bytes(ck, bak), "case %d: the previous checkpoint changed", c + 1);
        CHECK(access(tmpf, F_OK) != 0, "case %d: %s left behind", c + 1, tmpf);
        pn_train_config cfg;
        long step = 0;
        CHECK(pn_checkpoint_read_config(ck, &cfg, &step) == PN_OK && step == 2,
              "case %d: the previous checkpoint does not load: %s", c + 1, pn_last_error());
    }
    /* With room again, the run resumes from it and finishes. */
    unlink(filler);
    snprintf(a, sizeof a, "train --data %s --resume %s --threads 1", datadir, ck);
    rc = run("", a);
    CHECK(rc == 0, "resume after freeing space: exit %d: %s", rc, cu_err);
    printf("  2 disk-full cases (0 bytes free, %zu bytes free for a %zu-byte checkpoint)\n",
           cksize / 2, cksize);
}

/* ----------------------------------------------------------- memory limit */

TEST(memory_limit)
{
    char a[2048], ck[400], bak[400];
    snprintf(ck, sizeof ck, "%s", cu_tp("mem.safetensors"));
    snprintf(bak, sizeof bak, "%s", cu_tp("mem.backup"));
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 1 --save %s", datadir, ck);
    int rc = run("", a);
    CHECK(rc == 0, "first run: exit %d: %s", rc, cu_err);
    snprintf(a, sizeof a, "cp %s %s", ck, bak);
    CHECK(system(a) == 0, "cp");
    /* 512 MB of address space: enough for the program and OpenBLAS, not for a
     * width-1024 ResNet (its last convolution alone is 600 MB). OpenBLAS itself
     * retries forever when its own buffers cannot be had, so the limit leaves it
     * room: what is tested is our allocations failing. */
    snprintf(a, sizeof a, "train --data %s --model resnet8 --width 1024 --groups 2 --batch 8 "
             "--threads 1 --epochs 1 --save %s", datadir, ck);
    rc = run("timeout 120 prlimit --as=536870912", a);
    CHECK(rc == 1 && strstr(cu_err, "out of memory"), "under a memory limit: exit %d, stderr %s",
          rc, cu_err);
    CHECK(cu_same_bytes(ck, bak), "the previous checkpoint changed");
}

/* -------------------------------------------------------- huge step size */

TEST(huge_learning_rate_stops_at_first_nan)
{
    char a[2048];
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 5 --lr 1e6 --warmup 0 --save %s "
             "--save-every 1", datadir, cu_tp("lr.safetensors"));
    int rc = run("", a);
    CHECK(rc == 3, "--lr 1e6: exit %d, want 3: %s", rc, cu_err);
    const char *s = strstr(cu_err, "at step ");
    CHECK(strstr(cu_err, "diverged") && s, "message: %s", cu_err);
    if (!s) return;
    long bad = atol(s + 8);
    /* Saved after every update: the checkpoint on disk is the last finite one. */
    pn_train_config c;
    long saved = -1;
    if (bad > 1) {
        CHECK(pn_checkpoint_read_config(cu_tp("lr.safetensors"), &c, &saved) == PN_OK &&
              saved == bad - 1, "non-finite at step %ld, checkpoint at step %ld", bad, saved);
    } else {
        CHECK(access(cu_tp("lr.safetensors"), F_OK) != 0, "checkpoint written after a NaN");
    }
    printf("  --lr 1e6: stopped at step %ld\n", bad);
}

/* ------------------------------------------------- checkpoint regressions */

/* A checkpoint whose metadata are valid but describe (arch, width) with only
 * one small tensor in it. */
static int write_bomb(const char *path, const char *arch, const char *width)
{
    static float bias[10];
    pn_st_tensor t = { "fc.bias", 1, { 10 }, bias };
    const pn_st_meta meta[] = {
        { "format", "proxynorm-checkpoint" }, { "arch", arch }, { "norm", "gn+pn" },
        { "groups", "4" }, { "norm_batch", "0" }, { "width", width }, { "in_channels", "1" },
        { "image", "8" }, { "classes", "10" }, { "step", "1" }, { "epochs", "1" },
        { "batch", "8" }, { "micro_batch", "8" }, { "lr", "0.1" }, { "wd", "0" },
        { "momentum", "0.9" }, { "nesterov", "1" }, { "warmup", "0" },
        { "label_smoothing", "0" }, { "augment", "0" }, { "limit_train", "0" },
        { "seed", "0" },
    };
    return pn_safetensors_write(path, &t, 1, meta, (int)(sizeof meta / sizeof meta[0]));
}

/* Found while writing fuzz/fuzz_checkpoint.c: a few hundred bytes of metadata
 * (width 4096, or resnet99999998) made eval / train --resume build the model --
 * allocating and initializing gigabytes -- before the tensors were compared. */
TEST(giant_model_metadata_refused)
{
    static const char *const cases[][2] = { { "resnet8", "4096" }, { "resnet99999998", "1" },
                                            { "bottleneck_1", "4096" }, { "effnet_b0", "4096" } };
    for (int i = 0; i < 4; i++) {
        const char *p = cu_tp("bomb.safetensors");
        CHECK(write_bomb(p, cases[i][0], cases[i][1]) == PN_OK, "write: %s", pn_last_error());
        pn_model *m = NULL;
        int rc = pn_checkpoint_load_model(&m, p);
        CHECK(rc == PN_ERR_FORMAT && !m && strstr(pn_last_error(), "holds only"),
              "%s width %s: load_model %d: %s", cases[i][0], cases[i][1], rc, pn_last_error());
        pn_model_free(m);
        pn_train_config c;
        long step;
        rc = pn_checkpoint_read_config(p, &c, &step);
        CHECK(rc == PN_ERR_FORMAT, "%s width %s: read_config %d", cases[i][0], cases[i][1], rc);
        char a[1024];
        snprintf(a, sizeof a, "eval --checkpoint %s --data %s", p, datadir);
        rc = run("timeout 60", a);
        CHECK(rc == 1 && strstr(cu_err, "holds only"), "eval: exit %d: %s", rc, cu_err);
    }
    /* A genuine checkpoint still loads. */
    char a[1024];
    snprintf(a, sizeof a, "train --data %s " TINY "--epochs 1 --save %s", datadir,
             cu_tp("real.safetensors"));
    CHECK(run("", a) == 0, "train: %s", cu_err);
    pn_model *m = NULL;
    CHECK(pn_checkpoint_load_model(&m, cu_tp("real.safetensors")) == PN_OK, "%s", pn_last_error());
    pn_model_free(m);
    /* ... and so do small checkpoints of the other families (the size bound is a true lower
     * bound for each: a one-stage bottleneck net has far fewer values than a resnet's). */
    static const char *const small[] = { "bottleneck_1", "resnext_1_2x32d", "effnet_b0" };
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "train --data %s --model %s --width 4 --groups 2 --batch 8 --threads 1 "
                 "--epochs 1 --save %s", datadir, small[i], cu_tp("small.safetensors"));
        CHECK(run("", a) == 0, "train %s: %s", small[i], cu_err);
        m = NULL;
        CHECK(pn_checkpoint_load_model(&m, cu_tp("small.safetensors")) == PN_OK, "%s: %s", small[i],
              pn_last_error());
        pn_model_free(m);
    }
}

/* Every prefix of a real checkpoint is refused with PN_ERR_FORMAT (every length
 * through the header, then every 7th); the whole file parses the same from
 * memory and from disk. */
TEST(truncated_checkpoints_refused)
{
    size_t n = 0;
    unsigned char *b = cu_read_all(cu_tp("real.safetensors"), &n);
    CHECK(b && n > 64, "no checkpoint (giant_model_metadata_refused makes it)");
    if (!b) return;
    uint64_t hlen = 0;
    for (int k = 0; k < 8; k++) hlen |= (uint64_t)b[k] << (8 * k);
    int tried = 0;
    for (size_t len = 0; len < n; len += (len < 8 + hlen + 64) ? 1 : 7) {
        pn_st_file *f = NULL;
        int rc = pn_safetensors_read_mem(&f, b, len, "prefix");
        tried++;
        if (rc != PN_ERR_FORMAT || f) {
            CHECK(0, "prefix of %zu of %zu bytes: rc %d", len, n, rc);
            pn_safetensors_close(f);
            break;
        }
    }
    pn_st_file *fm = NULL, *fd = NULL;
    CHECK(pn_safetensors_read_mem(&fm, b, n, NULL) == PN_OK &&
          pn_safetensors_read(&fd, cu_tp("real.safetensors")) == PN_OK &&
          pn_safetensors_count(fm) == pn_safetensors_count(fd), "memory vs file");
    for (int i = 0; fm && fd && i < pn_safetensors_count(fm); i++) {
        const float *x, *y;
        int64_t sh[PN_ST_MAX_DIMS];
        int nd;
        const char *name = pn_safetensors_name(fm, i);
        CHECK(pn_safetensors_get(fm, name, &nd, sh, &x) == PN_OK &&
              pn_safetensors_get(fd, name, NULL, NULL, &y) == PN_OK, "%s", name);
        size_t numel = 1;
        for (int d = 0; d < nd; d++) numel *= (size_t)sh[d];
        CHECK(memcmp(x, y, numel * sizeof(float)) == 0, "tensor %s differs", name);
    }
    pn_safetensors_close(fm);
    pn_safetensors_close(fd);
    free(b);
    printf("  %d prefixes refused\n", tried);
}

int main(void)
{
    if (cu_find_bin() != 0) {
        printf("FAIL setup: %s not found (the Makefile builds it before the tests)\nRESULT 0 1\n",
               cu_bin);
        return 1;
    }
    if (cu_make_tmpdir("hardening")) return 1;
    snprintf(datadir, sizeof datadir, "%s/data", cu_tmpdir);
    snprintf(mnt, sizeof mnt, "%s/mnt", cu_tmpdir);
    mkdir(mnt, 0755);
    if (cu_write_data(datadir, 32, 16, 8)) {
        printf("RESULT 0 1\n");
        return 1;
    }
    unsetenv("PROXYNORM_DATA");
    atexit(unmount);

    if (SANITIZED) {
        printf("SKIP cli_under_valgrind, memory_limit: not in the sanitizer build (the normal "
               "build runs them)\n");
    } else if (system("valgrind --version >/dev/null 2>&1") != 0) {
        printf("FAIL cli_under_valgrind: valgrind not installed (scripts/install-deps.sh --test)\n");
        harness_failed++;
    } else {
        RUN(cli_under_valgrind);
    }
    if (!SANITIZED) RUN(memory_limit);

    /* A 256 KiB tmpfs for the disk-full test (root, CAP_SYS_ADMIN). */
    if (mount("pn_test_tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k") == 0) {
        mounted = 1;
        RUN(disk_full_while_saving);
        unmount();
        CHECK(!mounted, "cannot unmount %s", mnt);
    } else {
        printf("SKIP disk_full_while_saving: cannot mount a tmpfs on %s (%s; needs root with "
               "CAP_SYS_ADMIN) -- not counted\n", mnt, strerror(errno));
    }
    RUN(huge_learning_rate_stops_at_first_nan);
    RUN(giant_model_metadata_refused);
    RUN(truncated_checkpoints_refused);

    if (!mounted) cu_remove_tmpdir(); /* never under a still-mounted tmpfs */
    return harness_summary();
}
