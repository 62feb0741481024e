/* Helpers for tests that run the command line (build/proxynorm) as a child:
 * locating it, a temporary directory with synthetic data, running it with captured
 * output, comparing checkpoints.
 * Include after harness.h. */
#ifndef PN_TEST_CLI_UTIL_H
#define PN_TEST_CLI_UTIL_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "proxynorm.h"
#include "synth_idx.h"

static char cu_bin[PATH_MAX];

/* $PROXYNORM_BIN, else BUILD/proxynorm beside BUILD/tests/this-program. 0 if found. */
static inline int cu_find_bin(void)
{
    const char *env = getenv("PROXYNORM_BIN");
    if (env && *env) {
        snprintf(cu_bin, sizeof cu_bin, "%s", env);
        return access(cu_bin, X_OK);
    }
    char self[PATH_MAX - 32];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = '\0';
    for (int k = 0; k < 2; k++) {
        char *slash = strrchr(self, '/');
        if (!slash) return -1;
        *slash = '\0';
    }
    snprintf(cu_bin, sizeof cu_bin, "%s/proxynorm", self);
    return access(cu_bin, X_OK);
}

/* Reads a whole (small) file into buf (NUL-terminated); 0 on success. */
static inline int cu_slurp(const char *path, char *buf, size_t n)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t k = fread(buf, 1, n - 1, f);
    buf[k] = '\0';
    fclose(f);
    return 0;
}

/* Whole file into a malloc'ed buffer; NULL if missing. */
static inline unsigned char *cu_read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            unsigned char *nb = realloc(b, cap ? 2 * cap : 65536);
            if (!nb) { free(b); fclose(f); return NULL; }
            b = nb;
            cap = cap ? 2 * cap : 65536;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    fclose(f);
    *size = n;
    return b;
}

/* 1 if both files exist and have the same bytes. */
static inline int cu_same_bytes(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    unsigned char *x = cu_read_all(a, &na), *y = cu_read_all(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

/* 1 if both checkpoints load and hold the same tensors, bit for bit. */
static inline int cu_same_tensors(const char *a, const char *b)
{
    pn_st_file *fa = NULL, *fb = NULL;
    int same = pn_safetensors_read(&fa, a) == PN_OK && pn_safetensors_read(&fb, b) == PN_OK &&
               pn_safetensors_count(fa) == pn_safetensors_count(fb) &&
               pn_safetensors_count(fa) > 0;
    for (int i = 0; same && i < pn_safetensors_count(fa); i++) {
        const char *name = pn_safetensors_name(fa, i);
        int na, nb;
        int64_t sa[PN_ST_MAX_DIMS], sb[PN_ST_MAX_DIMS];
        const float *da, *db;
        same = pn_safetensors_get(fa, name, &na, sa, &da) == PN_OK &&
               pn_safetensors_get(fb, name, &nb, sb, &db) == PN_OK && na == nb;
        size_t n = 1;
        for (int d = 0; same && d < na; d++) { same = sa[d] == sb[d]; n *= (size_t)sa[d]; }
        if (same) same = memcmp(da, db, n * sizeof(float)) == 0;
        if (!same) printf("  tensor %s differs\n", name);
    }
    pn_safetensors_close(fa);
    pn_safetensors_close(fb);
    return same;
}

/* Runs `sh -c CMD` with stdout and stderr captured (up to n bytes each, files
 * OUTF/ERRF); returns the exit status, or -1 if it did not exit normally. */
static inline int cu_system(const char *cmd, const char *outf, const char *errf, char *out, char *err,
                     size_t n)
{
    char *full = malloc(strlen(cmd) + strlen(outf) + strlen(errf) + 32);
    if (!full) return -1;
    sprintf(full, "%s >%s 2>%s </dev/null", cmd, outf, errf);
    int st = system(full);
    free(full);
    if (out) cu_slurp(outf, out, n);
    if (err) cu_slurp(errf, err, n);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

/* The test's temporary directory (set by the test), paths in it, and the
 * captured stdout/stderr of the last cu_run. */
static char cu_tmpdir[256];
static char cu_out[65536], cu_err[65536];

static inline const char *cu_tp(const char *name)
{
    static char buf[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", cu_tmpdir, name);
    return buf[k];
}

/* cu_tmpdir = a new /tmp/pn_test_NAME_XXXXXX; 0 on success (else perror). */
static inline int cu_make_tmpdir(const char *name)
{
    snprintf(cu_tmpdir, sizeof cu_tmpdir, "/tmp/pn_test_%s_XXXXXX", name);
    if (mkdtemp(cu_tmpdir)) return 0;
    perror("mkdtemp");
    return -1;
}

/* Directory dir (created) with synthetic train (seed 1) and t10k (seed 2) IDX sets of
 * side x side images (synth_idx.h); 0 on success, else prints the setup failure. */
static inline int cu_write_data(const char *dir, int ntrain, int ntest, int side)
{
    mkdir(dir, 0755);
    if (write_idx(dir, "train", ntrain, side, 1) == 0 && write_idx(dir, "t10k", ntest, side, 2) == 0)
        return 0;
    printf("FAIL setup: cannot write data in %s\n", dir);
    return -1;
}

/* rm -rf cu_tmpdir. */
static inline void cu_remove_tmpdir(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cu_tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", cu_tmpdir);
}

/* Runs "proxynorm ARGS" (cu_bin) with stdout/stderr captured in cu_out/cu_err;
 * returns the exit status, or -1 if it did not exit normally (e.g. a crash). */
static inline int cu_run(const char *args)
{
    static char cmd[16384];
    if ((size_t)snprintf(cmd, sizeof cmd, "%s %s", cu_bin, args) >= sizeof cmd) return -1;
    return cu_system(cmd, cu_tp("stdout"), cu_tp("stderr"), cu_out, cu_err, sizeof cu_out);
}

/* Expects exit status `code` and `msg` somewhere in stderr. */
#define CU_EXPECT_FAIL(args, code, msg)                                                        \
    do {                                                                                       \
        int rc_ = cu_run(args);                                                                \
        CHECK(rc_ == (code) && strstr(cu_err, msg) != NULL,                                    \
              "proxynorm %s: exit %d (want %d), stderr \"%s\" (want \"%s\")", args, rc_, code, \
              cu_err, msg);                                                                    \
    } while (0)

#endif
