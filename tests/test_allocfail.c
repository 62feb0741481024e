/* Allocation failure: this program replaces malloc, calloc, realloc and free (glibc
 * lets a program do that) with counting wrappers that can fail every allocation
 * from the k-th on. Each operation that reads outside input or writes a checkpoint
 * is first run to count its allocations, then run once per allocation with that
 * one and all later ones failing. Every run must return an error with a message
 * (or succeed), free everything it allocated (the live-allocation count returns
 * to where it was), and leave the checkpoint it would overwrite loadable: the
 * old file, byte for byte, or (if only the directory sync after the rename
 * failed) the complete new one.
 *
 * Allocations by libgomp and OpenBLAS are never failed: libgomp ends the process
 * on an allocation failure by design. ASan replaces malloc itself, so the
 * sanitizer build skips this program (the normal build runs it). */
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "harness.h"
#include "synth_idx.h"
#include "cli_util.h"
#include "data/data.h"
#include "kernels/common.h"
#include "nn/model.h"
#include "train/trainer.h"

#if defined(__SANITIZE_ADDRESS__)
int main(void)
{
    (void)harness_cur, (void)harness_cur_failed, (void)write_idx; /* unused in this build */
    printf("skipped: AddressSanitizer replaces malloc (the normal build runs this test)\n");
    printf("RESULT 0 0\n");
    return 0;
}
#else

/* ------------------------------------------------------- the allocator */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static int armed;           /* count (and maybe fail) allocations */
static long fail_from = -1; /* fail allocation number fail_from and later (-1: never) */
static long counted;        /* allocations counted while armed */
static long injected;       /* allocations failed */
static long live;           /* allocations not yet freed (all of them) */

/* Should this allocation, called from `caller`, fail? */
static int fail_now(void *caller)
{
    if (!armed) return 0;
    Dl_info info;
    armed = 0; /* dladdr must not recurse into us */
    int skip = dladdr(caller, &info) && info.dli_fname &&
               (strstr(info.dli_fname, "libgomp") || strstr(info.dli_fname, "openblas"));
    armed = 1;
    if (skip) return 0;
    long k = counted++;
    if (fail_from >= 0 && k >= fail_from) {
        injected++;
        errno = ENOMEM;
        return 1;
    }
    return 0;
}

void *malloc(size_t n)
{
    if (fail_now(__builtin_return_address(0))) return NULL;
    void *p = __libc_malloc(n);
    if (p) live++;
    return p;
}

void *calloc(size_t a, size_t b)
{
    if (fail_now(__builtin_return_address(0))) return NULL;
    void *p = __libc_calloc(a, b);
    if (p) live++;
    return p;
}

void *realloc(void *q, size_t n)
{
    if (!q) return malloc(n);
    if (n == 0) {
        free(q);
        return NULL;
    }
    if (fail_now(__builtin_return_address(0))) return NULL;
    return __libc_realloc(q, n);
}

void free(void *p)
{
    if (p) live--;
    __libc_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (fail_now(__builtin_return_address(0))) return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p) return ENOMEM;
    live++;
    *out = p;
    return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
    if (fail_now(__builtin_return_address(0))) return NULL;
    void *p = __libc_memalign(align, n);
    if (p) live++;
    return p;
}

void *memalign(size_t align, size_t n) { return aligned_alloc(align, n); }

/* ------------------------------------------------------------ fixtures */

static char tmpdir[256], idxdir[300], gzdir[300], cifardir[300], ck[320], ck_out[320],
    ck_new[320];
static pn_dataset train_set, test_set;
static pn_train_config ck_cfg;
static long total_points;

static int op_idx(void)
{
    pn_dataset d;
    int rc = pn_dataset_load(&d, idxdir, 1, 0);
    if (rc == 0) pn_dataset_free(&d);
    return rc;
}

static int op_idx_gz(void)
{
    pn_dataset d;
    int rc = pn_dataset_load(&d, gzdir, 0, 0);
    if (rc == 0) pn_dataset_free(&d);
    return rc;
}

static int op_cifar(void)
{
    pn_dataset d;
    int rc = pn_dataset_load(&d, cifardir, 0, 3);
    if (rc == 0) pn_dataset_free(&d);
    return rc;
}

static int op_safetensors(void)
{
    pn_st_file *f = NULL;
    int rc = pn_safetensors_read(&f, ck);
    pn_safetensors_close(f);
    return rc;
}

static int op_read_config(void)
{
    pn_train_config c;
    long step;
    return pn_checkpoint_read_config(ck, &c, &step);
}

static int op_load_model(void)
{
    pn_model *m = NULL;
    int rc = pn_checkpoint_load_model(&m, ck);
    pn_model_free(m);
    return rc;
}

/* Resume from ck, one update, save over ck_out (a copy of ck). */
static int op_resume_step_save(void)
{
    pn_train_config c = ck_cfg;
    long step = 0;
    int rc = pn_checkpoint_read_config(ck, &c, &step);
    if (rc) return rc;
    c.stop_at = step + 1;
    snprintf(c.save_path, sizeof c.save_path, "%s", ck_out);
    pn_trainer *t = NULL;
    if ((rc = pn_trainer_create(&t, &c, &train_set, &test_set)) == 0 &&
        (rc = pn_trainer_load(t, ck)) == 0)
        rc = pn_train_run(t, NULL, NULL);
    pn_trainer_free(t);
    return rc;
}

/* Runs op once counting its allocations, then once per allocation point with it
 * and the later ones failing. check_out: ck_out must stay loadable (the old bytes
 * of ck, or the new checkpoint ck_new of the successful run). */
static void sweep(const char *name, int (*op)(void), int check_out)
{
    if (check_out) {
        char cmd[800];
        snprintf(cmd, sizeof cmd, "cp %s %s", ck, ck_out);
        CHECK(system(cmd) == 0, "cp");
    }
    long base = live;
    counted = 0;
    fail_from = -1;
    armed = 1;
    int rc = op();
    armed = 0;
    long n = counted;
    CHECK(rc == 0, "%s: the run without failures failed: %s", name, pn_last_error());
    CHECK(live == base, "%s: %ld allocations not freed by a successful run", name, live - base);
    if (check_out) {
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "cp %s %s && cp %s %s", ck_out, ck_new, ck, ck_out);
        CHECK(system(cmd) == 0, "cp");
    }
    if (harness_cur_failed) return;
    /* Every point; for long operations (PN_ALLOCFAIL_FULL unset) the first and last
     * 100 and every stride-th one between, about 400 runs. */
    const char *full = getenv("PN_ALLOCFAIL_FULL");
    long stride = (full && *full) || n <= 400 ? 1 : (n - 200) / 200 + 1;
    int errors = 0, oks = 0;
    long tried = 0;
    for (long k = 0; k < n; k += (k < 100 || k >= n - 100) ? 1 : stride) {
        tried++;
        pn_clear_error();
        base = live;
        counted = 0;
        fail_from = k;
        armed = 1;
        rc = op();
        armed = 0;
        fail_from = -1;
        total_points++;
        if (rc != 0) {
            errors++;
            const char *m = pn_last_error();
            CHECK(m && m[0], "%s: allocation %ld failing: error %d without a message", name, k,
                  rc);
        } else {
            oks++;
        }
        CHECK(live == base, "%s: allocation %ld failing: %ld allocations leaked (rc %d: %s)",
              name, k, live - base, rc, pn_last_error());
        if (check_out) {
            pn_train_config c;
            long step;
            int loads = pn_checkpoint_read_config(ck_out, &c, &step) == PN_OK;
            /* The new one: its tensors (the metadata hold the elapsed time). */
            int old = cu_same_bytes(ck_out, ck), new_ = !old && cu_same_tensors(ck_out, ck_new);
            CHECK(loads && (old || new_), "%s: allocation %ld failing: the checkpoint on disk "
                  "is %s", name, k, !loads ? "corrupt" : "neither the old nor the new one");
            if (!old) {
                char cmd[800];
                snprintf(cmd, sizeof cmd, "cp %s %s", ck, ck_out);
                CHECK(system(cmd) == 0, "cp");
            }
            char tmp[400];
            snprintf(tmp, sizeof tmp, "%s.tmp", ck_out);
            CHECK(access(tmp, F_OK) != 0, "%s: allocation %ld failing: %s left behind", name, k,
                  tmp);
        }
        if (harness_cur_failed) break;
    }
    printf("  %s: %ld of its %ld allocation points failed in turn: %d errors, %d successes\n",
           name, tried, n, errors, oks);
}

TEST(idx_plain) { sweep("IDX", op_idx, 0); }
TEST(idx_gzip) { sweep("IDX .gz", op_idx_gz, 0); }
TEST(cifar) { sweep("CIFAR-10", op_cifar, 0); }
TEST(safetensors_read) { sweep("safetensors read", op_safetensors, 0); }
TEST(checkpoint_config) { sweep("checkpoint config", op_read_config, 0); }
TEST(checkpoint_model) { sweep("checkpoint model", op_load_model, 0); }
TEST(resume_step_save) { sweep("resume + update + save", op_resume_step_save, 1); }

static int write_gz(const char *dir, const char *name, const char *src)
{
    size_t n = 0;
    unsigned char *b = cu_read_all(src, &n);
    if (!b) return -1;
    char p[700];
    snprintf(p, sizeof p, "%s/%s.gz", dir, name);
    gzFile g = gzopen(p, "wb");
    int rc = (g && gzwrite(g, b, (unsigned)n) == (int)n) ? 0 : -1;
    if (g && gzclose(g) != Z_OK) rc = -1;
    free(b);
    return rc;
}

int main(void)
{
    pn_set_threads(1);
    strcpy(tmpdir, "/tmp/pn_test_allocfail_XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    snprintf(idxdir, sizeof idxdir, "%s/idx", tmpdir);
    snprintf(gzdir, sizeof gzdir, "%s/gz", tmpdir);
    snprintf(cifardir, sizeof cifardir, "%s/cifar", tmpdir);
    snprintf(ck, sizeof ck, "%s/ck.safetensors", tmpdir);
    snprintf(ck_out, sizeof ck_out, "%s/out.safetensors", tmpdir);
    snprintf(ck_new, sizeof ck_new, "%s/new.safetensors", tmpdir);
    mkdir(idxdir, 0755);
    mkdir(gzdir, 0755);
    mkdir(cifardir, 0755);
    int bad = write_idx(idxdir, "train", 16, 8, 1) || write_idx(idxdir, "t10k", 8, 8, 2);
    char a[700], b[720];
    snprintf(a, sizeof a, "%s/t10k-images-idx3-ubyte", idxdir);
    bad = bad || write_gz(gzdir, "t10k-images-idx3-ubyte", a);
    snprintf(a, sizeof a, "%s/t10k-labels-idx1-ubyte", idxdir);
    bad = bad || write_gz(gzdir, "t10k-labels-idx1-ubyte", a);
    snprintf(b, sizeof b, "%s/test_batch.bin", cifardir);
    FILE *f = fopen(b, "wb");
    for (int r = 0; f && r < 4; r++) {
        fputc(r % 10, f);
        for (int i = 0; i < 3072; i++) fputc((i * 7 + r) & 255, f);
    }
    bad = bad || !f || fclose(f) != 0;
    /* A training checkpoint at step 2 of a tiny run. */
    bad = bad || pn_dataset_load(&train_set, idxdir, 1, 0) || pn_dataset_load(&test_set, idxdir, 0, 0);
    pn_trainer *t = NULL;
    if (!bad) {
        pn_train_config_default(&ck_cfg);
        snprintf(ck_cfg.model.arch, sizeof ck_cfg.model.arch, "resnet8");
        ck_cfg.model.width = 4;
        ck_cfg.model.groups = 2;
        ck_cfg.model.image = 8;
        ck_cfg.model.classes = 10;
        ck_cfg.batch = ck_cfg.micro_batch = 4;
        ck_cfg.epochs = 2;
        ck_cfg.stop_at = 2;
        snprintf(ck_cfg.save_path, sizeof ck_cfg.save_path, "%s", ck);
        bad = pn_trainer_create(&t, &ck_cfg, &train_set, &test_set) || pn_train_run(t, NULL, NULL);
        pn_trainer_free(t);
    }
    if (bad) {
        printf("FAIL setup: %s\nRESULT 0 1\n", pn_last_error());
        return 1;
    }
    /* Warm up (thread pools, stdio buffers) before counting. */
    printf("allocation-failure sweeps\n");
    fflush(stdout);
    op_resume_step_save();
    RUN(idx_plain);
    RUN(idx_gzip);
    RUN(cifar);
    RUN(safetensors_read);
    RUN(checkpoint_config);
    RUN(checkpoint_model);
    RUN(resume_step_save);
    printf("  %ld allocation failures injected in all\n", total_points);
    pn_dataset_free(&train_set);
    pn_dataset_free(&test_set);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return harness_summary();
}
#endif
