/* IDX files (MNIST, Fashion-MNIST), plain or gzipped. zlib's gzread reads both:
 * a file without the gzip magic is read "transparently".
 *
 *   images: 0x00000803, n, rows, cols (big-endian uint32), then n*rows*cols bytes
 *   labels: 0x00000801, n, then n bytes
 *
 * A file must hold exactly what its header announces. For plain files that is
 * checked from the size on disk before anything is read; for gzipped files while
 * reading (a short gzread means truncated) and, when the whole file is read
 * (no limit), by checking that nothing follows. With a limit only the images
 * kept are decompressed, so damage after them goes unnoticed. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "kernels/common.h"

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAX_SIDE 4096u
/* Deflate never compresses better than 1032:1; a gzipped file of s bytes
 * cannot hold more than this many bytes (plus a generous allowance). */
#define GZ_MAX_RATIO 1032u

typedef struct {
    gzFile gz;
    char path[PN_DATA_PATH_MAX];
    int direct;        /* not compressed: sizes checked from the file size */
    long long fsize;   /* size on disk */
} idx_file;

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Finds dir/name or dir/name.gz (plain preferred) and opens it. */
static int idx_open(idx_file *f, const char *dir, const char *name)
{
    memset(f, 0, sizeof *f);
    char gzname[PN_DATA_PATH_MAX];
    if (pn_data_join(f->path, sizeof f->path, dir, name) != 0)
        return pn_error(PN_ERR_ARG, "data directory path too long: %s", dir);
    if (!pn_data_is_file(f->path)) {
        int k = snprintf(gzname, sizeof gzname, "%s.gz", f->path);
        if (k < 0 || (size_t)k >= sizeof gzname)
            return pn_error(PN_ERR_ARG, "data directory path too long: %s", dir);
        if (!pn_data_is_file(gzname))
            return pn_error(PN_ERR_IO, "%s: not found (nor %s.gz)", f->path, name);
        memcpy(f->path, gzname, sizeof f->path);
    }
    struct stat st;
    if (stat(f->path, &st) != 0)
        return pn_error(PN_ERR_IO, "%s: %s", f->path, strerror(errno));
    f->fsize = (long long)st.st_size;
    errno = 0;
    f->gz = gzopen(f->path, "rb");
    if (!f->gz)
        return pn_error(PN_ERR_IO, "%s: cannot open: %s", f->path,
                        errno ? strerror(errno) : "out of memory");
    gzbuffer(f->gz, 1u << 17);
    return PN_OK;
}

static void idx_close(idx_file *f)
{
    if (f->gz) gzclose_r(f->gz);
    f->gz = NULL;
}

/* gzerror's message without the "PATH: " prefix zlib puts in front. */
static const char *gz_msg(const idx_file *f, const char *msg)
{
    if (!msg || !msg[0]) return "zlib error";
    size_t n = strlen(f->path);
    if (strncmp(msg, f->path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') return msg + n + 2;
    return msg;
}

/* Reads exactly len bytes. `what` describes the data for messages; `done` is the
 * number of bytes of that data already read (for the message on truncation). */
static int idx_read(idx_file *f, void *buf, size_t len, const char *what, size_t done,
                    size_t total)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < len) {
        size_t want = len - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f->gz, p + got, (unsigned)want);
        if (r < 0) {
            int err;
            const char *msg = gzerror(f->gz, &err);
            if (err == Z_ERRNO)
                return pn_error(PN_ERR_IO, "%s: read error: %s", f->path, strerror(errno));
            return pn_error(PN_ERR_FORMAT, "%s: corrupt or truncated compressed data (%s)",
                            f->path, gz_msg(f, msg));
        }
        if (r == 0) {
            /* gzread returns short at end of input; a truncated deflate stream
             * shows up either here or as the error above. */
            int err;
            const char *msg = gzerror(f->gz, &err);
            if (err != Z_OK && err != Z_STREAM_END)
                return pn_error(PN_ERR_FORMAT, "%s: corrupt or truncated compressed data (%s)",
                                f->path, gz_msg(f, msg));
            return pn_error(PN_ERR_FORMAT, "%s: truncated: %s ends after %zu of %zu bytes",
                            f->path, what, done + got, total);
        }
        got += (size_t)r;
    }
    return PN_OK;
}

/* After the whole announced content was read: nothing may follow. */
static int idx_expect_eof(idx_file *f)
{
    unsigned char extra;
    int r = gzread(f->gz, &extra, 1);
    if (r < 0) {
        int err;
        const char *msg = gzerror(f->gz, &err);
        if (err == Z_ERRNO)
            return pn_error(PN_ERR_IO, "%s: read error: %s", f->path, strerror(errno));
        return pn_error(PN_ERR_FORMAT, "%s: corrupt compressed data (%s)", f->path,
                        gz_msg(f, msg));
    }
    if (r > 0)
        return pn_error(PN_ERR_FORMAT, "%s: trailing data after the announced content",
                        f->path);
    return PN_OK;
}

/* Checks that a file announcing `total` bytes (header included) can hold them. */
static int idx_check_size(const idx_file *f, unsigned long long total)
{
    if (f->direct) {
        if ((unsigned long long)f->fsize < total)
            return pn_error(PN_ERR_FORMAT,
                            "%s: truncated: header announces %llu bytes, file has %lld",
                            f->path, total, f->fsize);
        if ((unsigned long long)f->fsize > total)
            return pn_error(PN_ERR_FORMAT,
                            "%s: size mismatch: header announces %llu bytes, file has %lld "
                            "(trailing data)", f->path, total, f->fsize);
    } else if (total > (unsigned long long)f->fsize * GZ_MAX_RATIO + 1024) {
        return pn_error(PN_ERR_FORMAT,
                        "%s: truncated: header announces %llu bytes, more than a %lld-byte "
                        "gzip file can hold", f->path, total, f->fsize);
    }
    return PN_OK;
}

static int has_fashion(const char *dir)
{
    static const char key[] = "fashion";
    size_t n = strlen(dir), k = sizeof key - 1;
    for (size_t i = 0; i + k <= n; i++) {
        size_t j = 0;
        while (j < k) {
            char c = dir[i + j];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (c != key[j]) break;
            j++;
        }
        if (j == k) return 1;
    }
    return 0;
}

int pn_idx_load(pn_dataset *d, const char *dir, int train, long limit)
{
    const char *img_name = train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
    const char *lab_name = train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
    idx_file fi, fl;
    unsigned char hdr[16];
    unsigned char *buf = NULL;
    float *images = NULL;
    int *labels = NULL;
    int rc;

    memset(&fl, 0, sizeof fl);
    rc = idx_open(&fi, dir, img_name);
    if (rc) goto fail;
    rc = idx_open(&fl, dir, lab_name);
    if (rc) goto fail;

    /* Headers. */
    rc = idx_read(&fi, hdr, 16, "header", 0, 16);
    if (rc) goto fail;
    fi.direct = gzdirect(fi.gz);
    uint32_t magic = be32(hdr), n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
    if (magic != IDX_MAGIC_IMAGES) {
        rc = pn_error(PN_ERR_FORMAT, "%s: bad magic 0x%08x (expected 0x%08x, IDX unsigned-byte "
                      "3-d images)", fi.path, magic, IDX_MAGIC_IMAGES);
        goto fail;
    }
    if (n == 0 || n > INT_MAX || rows == 0 || cols == 0 || rows > IDX_MAX_SIDE ||
        cols > IDX_MAX_SIDE) {
        rc = pn_error(PN_ERR_FORMAT, "%s: bad dimensions %u x %u x %u (need 1..%d images of "
                      "1..%u x 1..%u pixels)", fi.path, n, rows, cols, INT_MAX, IDX_MAX_SIDE,
                      IDX_MAX_SIDE);
        goto fail;
    }
    size_t pix = (size_t)rows * cols;
    rc = idx_check_size(&fi, 16ull + (unsigned long long)n * pix);
    if (rc) goto fail;

    rc = idx_read(&fl, hdr, 8, "header", 0, 8);
    if (rc) goto fail;
    fl.direct = gzdirect(fl.gz);
    uint32_t lmagic = be32(hdr), ln = be32(hdr + 4);
    if (lmagic != IDX_MAGIC_LABELS) {
        rc = pn_error(PN_ERR_FORMAT, "%s: bad magic 0x%08x (expected 0x%08x, IDX unsigned-byte "
                      "1-d labels)", fl.path, lmagic, IDX_MAGIC_LABELS);
        goto fail;
    }
    rc = idx_check_size(&fl, 8ull + ln);
    if (rc) goto fail;
    if (ln != n) {
        rc = pn_error(PN_ERR_FORMAT, "count mismatch: %s has %u images but %s has %u labels",
                      fi.path, n, fl.path, ln);
        goto fail;
    }

    size_t keep = (limit > 0 && (unsigned long)limit < n) ? (size_t)limit : n;
    int whole = keep == n;
    if (keep > SIZE_MAX / sizeof(float) / pix) {
        rc = pn_error(PN_ERR_NOMEM, "%s: %zu images of %zu pixels do not fit in memory",
                      fi.path, keep, pix);
        goto fail;
    }
    images = malloc(keep * pix * sizeof(float));
    labels = malloc(keep * sizeof(int));
    size_t chunk = 1u << 16;
    buf = malloc(chunk > pix ? chunk : pix);
    if (!images || !labels || !buf) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory for %zu images", fi.path, keep);
        goto fail;
    }

    /* Labels. */
    for (size_t i = 0; i < keep;) {
        size_t m = keep - i < chunk ? keep - i : chunk;
        rc = idx_read(&fl, buf, m, "label data", i, n);
        if (rc) goto fail;
        for (size_t j = 0; j < m; j++) {
            if (buf[j] >= 10) {
                rc = pn_error(PN_ERR_FORMAT, "%s: label %u of image %zu out of range [0, 10)",
                              fl.path, buf[j], i + j);
                goto fail;
            }
            labels[i + j] = buf[j];
        }
        i += m;
    }
    if (whole) {
        rc = idx_expect_eof(&fl);
        if (rc) goto fail;
    }

    /* Images, normalized through a lookup table. */
    int fashion = has_fashion(dir);
    double mean = fashion ? 0.2860 : 0.1307, std = fashion ? 0.3530 : 0.3081;
    float lut[256];
    pn_data_lut(lut, mean, std);
    size_t per = chunk / pix ? chunk / pix : 1; /* images per read */
    for (size_t i = 0; i < keep;) {
        size_t m = keep - i < per ? keep - i : per;
        rc = idx_read(&fi, buf, m * pix, "image data", i * pix, (size_t)n * pix);
        if (rc) goto fail;
        float *o = images + i * pix;
        for (size_t j = 0; j < m * pix; j++) o[j] = lut[buf[j]];
        i += m;
    }
    if (whole) {
        rc = idx_expect_eof(&fi);
        if (rc) goto fail;
    }

    free(buf);
    idx_close(&fi);
    idx_close(&fl);
    d->n = (int)keep;
    d->c = 1;
    d->h = (int)rows;
    d->w = (int)cols;
    d->classes = 10;
    d->images = images;
    d->labels = labels;
    d->mean[0] = (float)mean;
    d->std[0] = (float)std;
    d->mean[1] = d->mean[2] = 0.0f;
    d->std[1] = d->std[2] = 1.0f;
    snprintf(d->name, sizeof d->name, "%s", fashion ? "fashion-mnist" : "mnist");
    return PN_OK;

fail:
    free(buf);
    free(images);
    free(labels);
    idx_close(&fi);
    idx_close(&fl);
    return rc;
}
