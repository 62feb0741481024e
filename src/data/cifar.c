/* CIFAR-10 binary version: each file is a sequence of 3073-byte records,
 * 1 label byte (0..9) then 32x32 red, green, blue planes (row-major), which is
 * already CHW. Train: data_batch_1.bin .. data_batch_5.bin, test: test_batch.bin,
 * in DIR or DIR/cifar-10-batches-bin. Every file of the split must be present
 * with a size that is a non-zero multiple of the record size (checked from the
 * sizes on disk before anything is read); with a limit only the records kept
 * are read. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "kernels/common.h"

#define CIFAR_SIDE 32
#define CIFAR_PIX (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_REC (1 + CIFAR_PIX)
#define CIFAR_CHUNK 64 /* records per fread */

static const double cifar_mean[3] = { 0.4914, 0.4822, 0.4465 };
static const double cifar_std[3] = { 0.2470, 0.2435, 0.2616 };

/* Reads `count` records of file `path` into images/labels (already offset). */
static int cifar_read_file(const char *path, size_t count, float *images, int *labels,
                           const float lut[3][256], unsigned char *buf)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return pn_error(PN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = PN_OK;
    for (size_t i = 0; i < count;) {
        size_t m = count - i < CIFAR_CHUNK ? count - i : CIFAR_CHUNK;
        size_t got = fread(buf, CIFAR_REC, m, fp);
        if (got != m) {
            if (ferror(fp))
                rc = pn_error(PN_ERR_IO, "%s: read error: %s", path, strerror(errno));
            else
                rc = pn_error(PN_ERR_FORMAT, "%s: truncated: ends after %zu records",
                              path, i + got);
            break;
        }
        for (size_t r = 0; r < m; r++) {
            const unsigned char *rec = buf + r * CIFAR_REC;
            if (rec[0] >= 10) {
                rc = pn_error(PN_ERR_FORMAT, "%s: label %u of record %zu out of range [0, 10)",
                              path, rec[0], i + r);
                goto done;
            }
            labels[i + r] = rec[0];
            float *o = images + (i + r) * CIFAR_PIX;
            for (int c = 0; c < 3; c++) {
                const unsigned char *src = rec + 1 + c * CIFAR_SIDE * CIFAR_SIDE;
                float *dst = o + c * CIFAR_SIDE * CIFAR_SIDE;
                for (int k = 0; k < CIFAR_SIDE * CIFAR_SIDE; k++) dst[k] = lut[c][src[k]];
            }
        }
        i += m;
    }
done:
    fclose(fp);
    return rc;
}

int pn_cifar_load(pn_dataset *d, const char *dir, int train, long limit)
{
    char base[PN_DATA_PATH_MAX], path[6][PN_DATA_PATH_MAX];
    size_t recs[6];
    int nfiles = train ? 5 : 1;
    float *images = NULL;
    int *labels = NULL;
    unsigned char *buf = NULL;
    int rc;

    /* Files directly in dir, or in the subfolder the archive extracts to. */
    if (pn_data_join(base, sizeof base, dir, "cifar-10-batches-bin") != 0)
        return pn_error(PN_ERR_ARG, "data directory path too long: %s", dir);
    if (pn_data_join(path[0], sizeof path[0], dir, "data_batch_1.bin") == 0 &&
        pn_data_join(path[1], sizeof path[1], dir, "test_batch.bin") == 0 &&
        (pn_data_is_file(path[0]) || pn_data_is_file(path[1])))
        snprintf(base, sizeof base, "%s", dir);

    size_t total = 0;
    for (int f = 0; f < nfiles; f++) {
        char name[32];
        if (train) snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        else snprintf(name, sizeof name, "test_batch.bin");
        if (pn_data_join(path[f], sizeof path[f], base, name) != 0)
            return pn_error(PN_ERR_ARG, "data directory path too long: %s", dir);
        struct stat st;
        if (stat(path[f], &st) != 0)
            return pn_error(PN_ERR_IO, "%s: %s", path[f],
                            errno == ENOENT ? "not found" : strerror(errno));
        if (!S_ISREG(st.st_mode))
            return pn_error(PN_ERR_IO, "%s: not a regular file", path[f]);
        if (st.st_size == 0 || st.st_size % CIFAR_REC != 0)
            return pn_error(PN_ERR_FORMAT, "%s: size %lld is not a non-zero multiple of the "
                            "%d-byte CIFAR-10 record (1 label + %d pixel bytes)", path[f],
                            (long long)st.st_size, CIFAR_REC, CIFAR_PIX);
        recs[f] = (size_t)(st.st_size / CIFAR_REC);
        total += recs[f];
    }
    if (total > INT_MAX)
        return pn_error(PN_ERR_FORMAT, "%s: too many records (%zu)", base, total);

    size_t keep = (limit > 0 && (unsigned long)limit < total) ? (size_t)limit : total;
    images = malloc(keep * CIFAR_PIX * sizeof(float));
    labels = malloc(keep * sizeof(int));
    buf = malloc((size_t)CIFAR_CHUNK * CIFAR_REC);
    if (!images || !labels || !buf) {
        rc = pn_error(PN_ERR_NOMEM, "%s: out of memory for %zu images", base, keep);
        goto fail;
    }
    float lut[3][256];
    for (int c = 0; c < 3; c++) pn_data_lut(lut[c], cifar_mean[c], cifar_std[c]);

    size_t at = 0;
    for (int f = 0; f < nfiles && at < keep; f++) {
        size_t m = keep - at < recs[f] ? keep - at : recs[f];
        rc = cifar_read_file(path[f], m, images + at * CIFAR_PIX, labels + at,
                             (const float(*)[256])lut, buf);
        if (rc) goto fail;
        at += m;
    }

    free(buf);
    d->n = (int)keep;
    d->c = 3;
    d->h = d->w = CIFAR_SIDE;
    d->classes = 10;
    d->images = images;
    d->labels = labels;
    for (int c = 0; c < 3; c++) {
        d->mean[c] = (float)cifar_mean[c];
        d->std[c] = (float)cifar_std[c];
    }
    snprintf(d->name, sizeof d->name, "cifar10");
    return PN_OK;

fail:
    free(images);
    free(labels);
    free(buf);
    return rc;
}
