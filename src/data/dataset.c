/* Data set loading (format detection), batches with augmentation, permutations. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"
#include "kernels/common.h"

const char *pn_default_data_dir(void)
{
    const char *env = getenv("PROXYNORM_DATA");
    return (env && env[0]) ? env : "/usr/share/datasets/fashion-mnist";
}

int pn_data_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int pn_data_join(char *buf, size_t size, const char *dir, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

void pn_data_lut(float lut[256], double mean, double std)
{
    for (int v = 0; v < 256; v++) lut[v] = (float)((v / 255.0 - mean) / std);
}

/* 1 if dir/name or dir/name.gz is a file. */
static int exists_maybe_gz(const char *dir, const char *name)
{
    char p[PN_DATA_PATH_MAX];
    if (pn_data_join(p, sizeof p, dir, name) != 0) return 0;
    if (pn_data_is_file(p)) return 1;
    size_t n = strlen(p);
    if (n + 4 > sizeof p) return 0;
    memcpy(p + n, ".gz", 4);
    return pn_data_is_file(p);
}

static int exists_in(const char *dir, const char *sub, const char *name)
{
    char a[PN_DATA_PATH_MAX], p[PN_DATA_PATH_MAX];
    if (sub) {
        if (pn_data_join(a, sizeof a, dir, sub) != 0) return 0;
        dir = a;
    }
    return pn_data_join(p, sizeof p, dir, name) == 0 && pn_data_is_file(p);
}

int pn_dataset_load(pn_dataset *d, const char *dir, int train, long limit)
{
    PN_CHECK_PTR(d);
    memset(d, 0, sizeof *d);
    if (!dir) dir = pn_default_data_dir();
    if (strlen(dir) + 64 > PN_DATA_PATH_MAX)
        return pn_error(PN_ERR_ARG, "data directory path too long: %s", dir);

    static const char *const idx_names[4] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    };
    int is_idx = 0, is_cifar = 0;
    for (int i = 0; i < 4; i++) is_idx |= exists_maybe_gz(dir, idx_names[i]);
    for (int s = 0; s < 2 && !is_idx; s++) {
        const char *sub = s ? "cifar-10-batches-bin" : NULL;
        is_cifar |= exists_in(dir, sub, "data_batch_1.bin") || exists_in(dir, sub, "test_batch.bin");
    }

    int rc;
    if (is_idx) {
        rc = pn_idx_load(d, dir, train, limit);
    } else if (is_cifar) {
        rc = pn_cifar_load(d, dir, train, limit);
    } else {
        struct stat st;
        if (stat(dir, &st) != 0)
            return pn_error(PN_ERR_IO, "data directory %s: %s", dir, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return pn_error(PN_ERR_IO, "data directory %s: not a directory", dir);
        return pn_error(PN_ERR_IO, "%s: no data set found (expected IDX files "
                        "train-images-idx3-ubyte[.gz] ... t10k-labels-idx1-ubyte[.gz], or CIFAR-10 "
                        "data_batch_1..5.bin and test_batch.bin, possibly in "
                        "cifar-10-batches-bin/)", dir);
    }
    if (rc != PN_OK) memset(d, 0, sizeof *d);
    return rc;
}

void pn_dataset_free(pn_dataset *d)
{
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

static int check_batch(const char *fn, float *out, const pn_dataset *d, const int *idx, int B)
{
    if (!out || !d || !idx) return pn_error(PN_ERR_ARG, "%s: NULL argument", fn);
    if (B < 0) return pn_error(PN_ERR_ARG, "%s: B must be >= 0 (got %d)", fn, B);
    if (!d->images || !d->labels || d->n <= 0 || d->c <= 0 || d->h <= 0 || d->w <= 0)
        return pn_error(PN_ERR_ARG, "%s: empty data set", fn);
    for (int b = 0; b < B; b++)
        if (idx[b] < 0 || idx[b] >= d->n)
            return pn_error(PN_ERR_ARG, "%s: idx[%d] = %d out of range [0, %d)", fn, b, idx[b],
                            d->n);
    return PN_OK;
}

int pn_gather_batch(float *out, int *labels_out, const pn_dataset *d, const int *idx, int B)
{
    int rc = check_batch(__func__, out, d, idx, B);
    if (rc) return rc;
    size_t chw = (size_t)d->c * d->h * d->w;
    for (int b = 0; b < B; b++) {
        memcpy(out + (size_t)b * chw, d->images + (size_t)idx[b] * chw, chw * sizeof(float));
        if (labels_out) labels_out[b] = d->labels[idx[b]];
    }
    return PN_OK;
}

/* Per image, in this order: dy, dx in [-pad, pad] (only if pad > 0), then the flip
 * decision (only if flip). out(c, y, x) = src(c, y + dy, x' + dx) with
 * x' = w - 1 - x when flipped else x, and 0 outside the source image. */
int pn_augment_batch(float *out, int *labels_out, const pn_dataset *d, const int *idx, int B,
                     int pad, int flip, pn_rng *rng)
{
    int rc = check_batch(__func__, out, d, idx, B);
    if (rc) return rc;
    const int C = d->c, H = d->h, W = d->w;
    if (pad < 0 || pad > H || pad > W)
        return pn_error(PN_ERR_ARG, "%s: pad must be in [0, %d] (got %d)", __func__,
                        H < W ? H : W, pad);
    if (!rng && (pad > 0 || flip))
        return pn_error(PN_ERR_ARG, "%s: rng is NULL", __func__);
    size_t chw = (size_t)C * H * W;
    for (int b = 0; b < B; b++) {
        int dy = 0, dx = 0, fl = 0;
        if (pad > 0) {
            dy = (int)pn_rng_below(rng, 2u * (uint32_t)pad + 1) - pad;
            dx = (int)pn_rng_below(rng, 2u * (uint32_t)pad + 1) - pad;
        }
        if (flip) fl = (int)pn_rng_below(rng, 2);
        const float *src = d->images + (size_t)idx[b] * chw;
        float *dst = out + (size_t)b * chw;
        for (int c = 0; c < C; c++) {
            const float *s = src + (size_t)c * H * W;
            float *o = dst + (size_t)c * H * W;
            for (int y = 0; y < H; y++) {
                float *orow = o + (size_t)y * W;
                int sy = y + dy;
                if (sy < 0 || sy >= H) {
                    memset(orow, 0, (size_t)W * sizeof(float));
                    continue;
                }
                const float *srow = s + (size_t)sy * W;
                for (int x = 0; x < W; x++) {
                    int sx = (fl ? W - 1 - x : x) + dx;
                    orow[x] = (sx >= 0 && sx < W) ? srow[sx] : 0.0f;
                }
            }
        }
        if (labels_out) labels_out[b] = d->labels[idx[b]];
    }
    return PN_OK;
}

void pn_permutation(int *perm, int n, pn_rng *rng)
{
    if (!perm || n <= 0) return;
    for (int i = 0; i < n; i++) perm[i] = i;
    if (!rng) return;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)pn_rng_below(rng, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
