/* Helpers shared by the libFuzzer harnesses (fuzz/README.md): a private scratch
 * directory (on /dev/shm when it exists) and whole-file writes. */
#ifndef PN_FUZZ_UTIL_H
#define PN_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

static char fuzz_dir[256];
static const char *fuzz_files[16];
static int fuzz_nfiles;

static inline void fuzz_cleanup(void)
{
    char p[512];
    for (int i = 0; i < fuzz_nfiles; i++) {
        snprintf(p, sizeof p, "%s/%s", fuzz_dir, fuzz_files[i]);
        if (unlink(p) != 0) rmdir(p); /* a subdirectory (listed after its files) */
    }
    if (fuzz_dir[0]) rmdir(fuzz_dir);
}

/* Creates the scratch directory once; `names` lists every file (or subdirectory,
 * last) the harness may create there, so that they are removed at exit. */
static inline const char *fuzz_scratch(const char *const *names, int n)
{
    if (fuzz_dir[0]) return fuzz_dir;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/pn_fuzz_XXXXXX", base);
    if (!mkdtemp(fuzz_dir)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    for (int i = 0; i < n && i < 16; i++) fuzz_files[fuzz_nfiles++] = names[i];
    atexit(fuzz_cleanup);
    return fuzz_dir;
}

/* dir/name := data (plain). Aborts on failure: the harness itself is broken. */
static inline void fuzz_write(const char *name, const uint8_t *data, size_t size)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(p);
        abort();
    }
}

/* dir/name := gzip(data), fast compression. */
static inline void fuzz_write_gz(const char *name, const uint8_t *data, size_t size)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir, name);
    gzFile g = gzopen(p, "wb1");
    if (!g || (size && gzwrite(g, data, (unsigned)size) != (int)size) || gzclose(g) != Z_OK) {
        fprintf(stderr, "fuzz: cannot write %s\n", p);
        abort();
    }
}

static inline void fuzz_remove(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir, name);
    unlink(p);
}

#endif
