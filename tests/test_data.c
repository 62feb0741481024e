/* Data loading (IDX plain/gzip, CIFAR-10 binary), every malformed-input case,
 * augmentation and permutations. Synthetic files go to a mkdtemp directory under
 * /tmp that is removed at the end. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/data.h"
#include "harness.h"
#include "kernels/common.h"

static char g_root[64];

/* ----------------------------------------------------------- file helpers */

static void path_in(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

/* Makes g_root/name and returns its path in out. */
static void make_dir(char *out, size_t size, const char *name)
{
    path_in(out, size, g_root, name);
    mkdir(out, 0700);
}

static int write_bytes(const char *path, const unsigned char *p, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f) return -1;
        int ok = n == 0 || gzwrite(f, p, (unsigned)n) == (int)n;
        return (gzclose(f) == Z_OK && ok) ? 0 : -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(p, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Keeps only the first `keep` bytes of a file (to damage a gzip stream). */
static void truncate_file(const char *path, long keep)
{
    CHECK(truncate(path, keep) == 0, "truncate %s", path);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static unsigned char idx_pixel(size_t i, size_t k) { return (unsigned char)((i * 31 + k * 7 + 3) % 256); }
static int idx_label(size_t i) { return (int)((i * 3 + 1) % 10); }

typedef struct {
    uint32_t img_magic, lab_magic;
    uint32_t n_img, n_lab, rows, cols; /* announced in the headers */
    long img_delta, lab_delta;         /* bytes added (>0) or cut (<0) at the end */
    int gz;
    long bad_label_at;                 /* -1: none, else that label is 10 */
} idx_spec;

static idx_spec idx_default(uint32_t n)
{
    idx_spec s = { 0x803, 0x801, n, n, 4, 3, 0, 0, 0, -1 };
    return s;
}

/* Writes the images and labels of one split as the spec says. */
static void write_idx(const char *dir, int train, const idx_spec *s)
{
    char p[512];
    size_t pix = (size_t)s->rows * s->cols, n = s->n_img;
    if (pix > 64) pix = 64; /* absurd dims: the header lies, the data stays small */
    size_t len = 16 + n * pix;
    unsigned char *b = calloc(len + 64, 1);
    put_be32(b, s->img_magic); put_be32(b + 4, s->n_img);
    put_be32(b + 8, s->rows); put_be32(b + 12, s->cols);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < pix; k++) b[16 + i * pix + k] = idx_pixel(i, k);
    path_in(p, sizeof p, dir, train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte");
    if (s->gz) strcat(p, ".gz");
    CHECK(write_bytes(p, b, (size_t)((long)len + s->img_delta), s->gz) == 0, "write %s", p);
    free(b);

    len = 8 + (size_t)s->n_lab;
    b = calloc(len + 64, 1);
    put_be32(b, s->lab_magic); put_be32(b + 4, s->n_lab);
    for (size_t i = 0; i < s->n_lab; i++) b[8 + i] = (unsigned char)idx_label(i);
    if (s->bad_label_at >= 0) b[8 + s->bad_label_at] = 10;
    path_in(p, sizeof p, dir, train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte");
    if (s->gz) strcat(p, ".gz");
    CHECK(write_bytes(p, b, (size_t)((long)len + s->lab_delta), s->gz) == 0, "write %s", p);
    free(b);
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return 0;
    return 1;
}

/* Loads and expects failure with `status`, a message containing `needle` (and
 * `needle2` if non-NULL), and *d left zeroed. */
static void expect_fail(const char *dir, int train, long limit, int status, const char *needle,
                        const char *needle2)
{
    pn_dataset d;
    memset(&d, 0xAB, sizeof d);
    pn_clear_error();
    int rc = pn_dataset_load(&d, dir, train, limit);
    CHECK(rc == status, "%s: status %d, expected %d (%s)", dir, rc, status, pn_last_error());
    CHECK(strstr(pn_last_error(), needle) != NULL, "message '%s' lacks '%s'", pn_last_error(),
          needle);
    if (needle2)
        CHECK(strstr(pn_last_error(), needle2) != NULL, "message '%s' lacks '%s'",
              pn_last_error(), needle2);
    if (getenv("PN_SHOW")) /* PN_SHOW=1: print every error message */
        printf("  msg: %s\n", pn_last_error());
    CHECK(all_zero(&d, sizeof d), "dataset not left zeroed after an error");
    if (rc == PN_OK) pn_dataset_free(&d);
}

static void check_idx_content(const pn_dataset *d, size_t n, double mean, double std)
{
    CHECK(d->n == (int)n && d->c == 1 && d->h == 4 && d->w == 3 && d->classes == 10,
          "shape n %d c %d h %d w %d classes %d", d->n, d->c, d->h, d->w, d->classes);
    if (d->n != (int)n) return;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK(d->labels[i] == idx_label(i), "label %zu = %d", i, d->labels[i]);
        for (size_t k = 0; k < 12; k++) {
            double want = (idx_pixel(i, k) / 255.0 - mean) / std;
            double e = fabs(d->images[i * 12 + k] - want);
            if (e > worst) worst = e;
        }
    }
    CHECK(worst < 1e-6, "normalized pixels off by %g", worst);
    CHECK_NEAR(d->mean[0], mean, 1e-7);
    CHECK_NEAR(d->std[0], std, 1e-7);
}

/* ------------------------------------------------------------------ IDX */

TEST(idx_plain_fashion_name)
{
    char dir[256];
    make_dir(dir, sizeof dir, "My-FashIon_plain");
    idx_spec tr = idx_default(5), te = idx_default(3);
    write_idx(dir, 1, &tr);
    write_idx(dir, 0, &te);
    pn_dataset d;
    CHECK(pn_dataset_load(&d, dir, 1, 0) == PN_OK, "load: %s", pn_last_error());
    CHECK(strcmp(d.name, "fashion-mnist") == 0, "name %s", d.name);
    check_idx_content(&d, 5, 0.2860, 0.3530);
    pn_dataset_free(&d);
    CHECK(all_zero(&d, sizeof d), "free leaves the struct zeroed");
    CHECK(pn_dataset_load(&d, dir, 0, 0) == PN_OK, "load test: %s", pn_last_error());
    check_idx_content(&d, 3, 0.2860, 0.3530);
    pn_dataset_free(&d);
    pn_dataset_free(&d); /* twice is harmless */
    pn_dataset_free(NULL);
}

TEST(idx_gz_mnist_name)
{
    char dir[256];
    make_dir(dir, sizeof dir, "digits_gz");
    idx_spec tr = idx_default(6);
    tr.gz = 1;
    write_idx(dir, 1, &tr);
    pn_dataset d;
    CHECK(pn_dataset_load(&d, dir, 1, -1) == PN_OK, "load: %s", pn_last_error());
    CHECK(strcmp(d.name, "mnist") == 0, "name %s", d.name);
    check_idx_content(&d, 6, 0.1307, 0.3081);
    pn_dataset_free(&d);
    /* The test split is absent: an I/O error naming the missing file. */
    expect_fail(dir, 0, 0, PN_ERR_IO, "t10k-images-idx3-ubyte", "not found");
}

TEST(idx_limit)
{
    char dir[256], dirgz[256];
    make_dir(dir, sizeof dir, "limit_plain");
    make_dir(dirgz, sizeof dirgz, "limit_gz");
    idx_spec s = idx_default(7);
    write_idx(dir, 1, &s);
    s.gz = 1;
    write_idx(dirgz, 1, &s);
    const char *dirs[2] = { dir, dirgz };
    for (int k = 0; k < 2; k++) {
        pn_dataset d;
        CHECK(pn_dataset_load(&d, dirs[k], 1, 2) == PN_OK, "load: %s", pn_last_error());
        check_idx_content(&d, 2, 0.1307, 0.3081);
        pn_dataset_free(&d);
        CHECK(pn_dataset_load(&d, dirs[k], 1, 100) == PN_OK, "load: %s", pn_last_error());
        check_idx_content(&d, 7, 0.1307, 0.3081);
        pn_dataset_free(&d);
    }
}

TEST(idx_missing)
{
    char dir[256];
    expect_fail("/nonexistent/pn_no_such_dir", 1, 0, PN_ERR_IO, "/nonexistent/pn_no_such_dir",
                NULL);
    make_dir(dir, sizeof dir, "empty");
    expect_fail(dir, 1, 0, PN_ERR_IO, dir, "no data set found");
    /* Images without labels. */
    make_dir(dir, sizeof dir, "nolabels");
    idx_spec s = idx_default(4);
    write_idx(dir, 1, &s);
    char p[512];
    path_in(p, sizeof p, dir, "train-labels-idx1-ubyte");
    unlink(p);
    expect_fail(dir, 1, 0, PN_ERR_IO, "train-labels-idx1-ubyte", "not found");
    /* NULL arguments. */
    CHECK(pn_dataset_load(NULL, dir, 1, 0) == PN_ERR_ARG, "NULL dataset accepted");
}

/* One malformed-IDX case per call: a fresh directory, the spec, the expectation. */
static void idx_bad(const char *name, const idx_spec *s, long limit, const char *file,
                    const char *what)
{
    char dir[256];
    make_dir(dir, sizeof dir, name);
    write_idx(dir, 1, s);
    expect_fail(dir, 1, limit, PN_ERR_FORMAT, file, what);
}

TEST(idx_truncated)
{
    for (int gz = 0; gz < 2; gz++) {
        char name[64];
        idx_spec s = idx_default(5);
        s.gz = gz;
        s.img_delta = -5;
        snprintf(name, sizeof name, "trunc_img_%d", gz);
        idx_bad(name, &s, 0, "train-images-idx3-ubyte", "truncated");
        s = idx_default(5);
        s.gz = gz;
        s.lab_delta = -1;
        snprintf(name, sizeof name, "trunc_lab_%d", gz);
        idx_bad(name, &s, 0, "train-labels-idx1-ubyte", "truncated");
        /* Only the header, and not even all of it. */
        s = idx_default(5);
        s.gz = gz;
        s.img_delta = -(long)(5 * 12 + 6);
        snprintf(name, sizeof name, "trunc_hdr_%d", gz);
        idx_bad(name, &s, 0, "train-images-idx3-ubyte", "truncated");
        /* Trailing bytes after the announced content. */
        s = idx_default(5);
        s.gz = gz;
        s.img_delta = 3;
        snprintf(name, sizeof name, "trailing_%d", gz);
        idx_bad(name, &s, 0, "train-images-idx3-ubyte", "trailing");
    }
    /* Plain files are checked against their size even when a limit is given. */
    idx_spec s = idx_default(5);
    s.img_delta = -5;
    idx_bad("trunc_limit", &s, 2, "train-images-idx3-ubyte", "truncated");

    /* A gzip stream cut in the middle. Large enough to span several blocks. */
    char dir[256], p[512];
    make_dir(dir, sizeof dir, "cut_gz");
    s = idx_default(3000);
    s.gz = 1;
    write_idx(dir, 1, &s);
    path_in(p, sizeof p, dir, "train-images-idx3-ubyte.gz");
    struct stat st;
    stat(p, &st);
    truncate_file(p, (long)st.st_size / 2);
    expect_fail(dir, 1, 0, PN_ERR_FORMAT, "train-images-idx3-ubyte.gz", NULL);

    /* A tiny gzip file announcing a billion images: rejected before allocating. */
    s = idx_default(5);
    s.gz = 1;
    s.n_img = s.n_lab = 1000000000u;
    s.img_delta = 0;
    {
        make_dir(dir, sizeof dir, "huge_gz");
        /* write_idx would try to write n images: write the header by hand. */
        unsigned char h[16 + 60];
        put_be32(h, 0x803); put_be32(h + 4, s.n_img); put_be32(h + 8, 4); put_be32(h + 12, 3);
        memset(h + 16, 7, 60);
        path_in(p, sizeof p, dir, "train-images-idx3-ubyte.gz");
        write_bytes(p, h, sizeof h, 1);
        unsigned char l[8 + 5];
        put_be32(l, 0x801); put_be32(l + 4, s.n_lab);
        memset(l + 8, 1, 5);
        path_in(p, sizeof p, dir, "train-labels-idx1-ubyte.gz");
        write_bytes(p, l, sizeof l, 1);
        expect_fail(dir, 1, 0, PN_ERR_FORMAT, "train-images-idx3-ubyte.gz", "truncated");
    }
}

TEST(idx_bad_headers)
{
    idx_spec s = idx_default(5);
    s.img_magic = 0x802;
    idx_bad("magic_img", &s, 0, "train-images-idx3-ubyte", "magic");
    s = idx_default(5);
    s.lab_magic = 0x803;
    s.gz = 1;
    idx_bad("magic_lab", &s, 0, "train-labels-idx1-ubyte.gz", "magic");
    s = idx_default(5);
    s.img_magic = 0x03080000; /* little-endian writer */
    idx_bad("magic_swapped", &s, 0, "train-images-idx3-ubyte", "magic");

    s = idx_default(5);
    s.rows = 0;
    idx_bad("dims_zero", &s, 0, "train-images-idx3-ubyte", "dimensions");
    s = idx_default(5);
    s.cols = 100000;
    idx_bad("dims_huge", &s, 0, "train-images-idx3-ubyte", "dimensions");
    s = idx_default(5);
    s.n_img = s.n_lab = 0;
    idx_bad("dims_noimages", &s, 0, "train-images-idx3-ubyte", "dimensions");

    s = idx_default(5);
    s.n_lab = 4;
    idx_bad("count_mismatch", &s, 0, "train-labels-idx1-ubyte", "mismatch");
    s = idx_default(5);
    s.n_lab = 6;
    s.gz = 1;
    idx_bad("count_mismatch_gz", &s, 0, "train-labels-idx1-ubyte", "mismatch");

    s = idx_default(5);
    s.bad_label_at = 3;
    idx_bad("label_range", &s, 0, "train-labels-idx1-ubyte", "out of range");
    s.gz = 1;
    idx_bad("label_range_gz", &s, 0, "train-labels-idx1-ubyte.gz", "out of range");
}

/* ---------------------------------------------------------------- CIFAR */

#define CREC 3073

static unsigned char cifar_pixel(size_t g, size_t k) { return (unsigned char)((g * 13 + k * 5 + 1) % 256); }

/* Records first..first+n-1; extra trailing bytes; record bad (global index) gets label 10. */
static void write_cifar(const char *dir, const char *name, size_t first, size_t n, int extra,
                        long bad)
{
    char p[512];
    path_in(p, sizeof p, dir, name);
    size_t len = n * CREC + (size_t)extra;
    unsigned char *b = calloc(len + 1, 1);
    for (size_t r = 0; r < n; r++) {
        size_t g = first + r;
        b[r * CREC] = (unsigned char)((long)g == bad ? 10 : g % 10);
        for (size_t k = 0; k < 3072; k++) b[r * CREC + 1 + k] = cifar_pixel(g, k);
    }
    CHECK(write_bytes(p, b, len, 0) == 0, "write %s", p);
    free(b);
}

static const size_t cifar_counts[5] = { 2, 3, 1, 2, 2 };

/* A full CIFAR layout (5 train files + test) in dir; returns the train count. */
static size_t write_cifar_set(const char *dir, long bad)
{
    size_t g = 0;
    for (int f = 0; f < 5; f++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", f + 1);
        write_cifar(dir, name, g, cifar_counts[f], 0, bad);
        g += cifar_counts[f];
    }
    write_cifar(dir, "test_batch.bin", 1000, 3, 0, -1);
    return g;
}

static void check_cifar(const pn_dataset *d, size_t n, size_t first)
{
    static const double mean[3] = { 0.4914, 0.4822, 0.4465 }, std[3] = { 0.2470, 0.2435, 0.2616 };
    CHECK(d->n == (int)n && d->c == 3 && d->h == 32 && d->w == 32 && d->classes == 10,
          "shape n %d c %d h %d w %d", d->n, d->c, d->h, d->w);
    CHECK(strcmp(d->name, "cifar10") == 0, "name %s", d->name);
    for (int c = 0; c < 3; c++) {
        CHECK_NEAR(d->mean[c], mean[c], 1e-7);
        CHECK_NEAR(d->std[c], std[c], 1e-7);
    }
    if (d->n != (int)n) return;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        size_t g = first + i;
        CHECK(d->labels[i] == (int)(g % 10), "label %zu = %d", i, d->labels[i]);
        for (size_t k = 0; k < 3072; k++) {
            int c = (int)(k / 1024);
            double want = (cifar_pixel(g, k) / 255.0 - mean[c]) / std[c];
            double e = fabs(d->images[i * 3072 + k] - want);
            if (e > worst) worst = e;
        }
    }
    CHECK(worst < 1e-6, "normalized pixels off by %g", worst);
}

TEST(cifar_load)
{
    char dir[256], sub[512];
    make_dir(dir, sizeof dir, "cifar_direct");
    size_t n = write_cifar_set(dir, -1);
    pn_dataset d;
    CHECK(pn_dataset_load(&d, dir, 1, 0) == PN_OK, "load: %s", pn_last_error());
    check_cifar(&d, n, 0);
    pn_dataset_free(&d);
    CHECK(pn_dataset_load(&d, dir, 0, 0) == PN_OK, "load test: %s", pn_last_error());
    check_cifar(&d, 3, 1000);
    pn_dataset_free(&d);
    /* A limit that ends inside the second file. */
    CHECK(pn_dataset_load(&d, dir, 1, 4) == PN_OK, "load: %s", pn_last_error());
    check_cifar(&d, 4, 0);
    pn_dataset_free(&d);

    /* The archive's own layout: dir/cifar-10-batches-bin/. */
    make_dir(dir, sizeof dir, "cifar_archive");
    path_in(sub, sizeof sub, dir, "cifar-10-batches-bin");
    mkdir(sub, 0700);
    write_cifar_set(sub, -1);
    CHECK(pn_dataset_load(&d, dir, 1, 0) == PN_OK, "load: %s", pn_last_error());
    check_cifar(&d, n, 0);
    pn_dataset_free(&d);
}

TEST(cifar_bad)
{
    char dir[256], p[512];
    /* A file whose size is not a multiple of the record. */
    make_dir(dir, sizeof dir, "cifar_size");
    write_cifar_set(dir, -1);
    write_cifar(dir, "data_batch_4.bin", 6, 2, 100, -1);
    expect_fail(dir, 1, 0, PN_ERR_FORMAT, "data_batch_4.bin", "multiple");
    expect_fail(dir, 1, 1, PN_ERR_FORMAT, "data_batch_4.bin", "multiple");
    /* An empty file. */
    make_dir(dir, sizeof dir, "cifar_empty");
    write_cifar_set(dir, -1);
    write_cifar(dir, "test_batch.bin", 0, 0, 0, -1);
    expect_fail(dir, 0, 0, PN_ERR_FORMAT, "test_batch.bin", "multiple");
    /* A missing batch. */
    make_dir(dir, sizeof dir, "cifar_missing");
    write_cifar_set(dir, -1);
    path_in(p, sizeof p, dir, "data_batch_3.bin");
    unlink(p);
    expect_fail(dir, 1, 0, PN_ERR_IO, "data_batch_3.bin", "not found");
    /* A label out of range (record 7 lives in data_batch_4.bin). */
    make_dir(dir, sizeof dir, "cifar_label");
    write_cifar_set(dir, 7);
    expect_fail(dir, 1, 0, PN_ERR_FORMAT, "data_batch_4.bin", "out of range");
}

/* --------------------------------------------------------- augmentation */

/* A small in-memory data set with distinct non-zero pixels. */
static pn_dataset synth(int n, int c, int h, int w)
{
    pn_dataset d;
    memset(&d, 0, sizeof d);
    d.n = n; d.c = c; d.h = h; d.w = w; d.classes = 10;
    d.images = malloc(sizeof(float) * (size_t)n * c * h * w);
    d.labels = malloc(sizeof(int) * (size_t)n);
    for (size_t i = 0; i < (size_t)n * c * h * w; i++) d.images[i] = 1.0f + (float)i;
    for (int i = 0; i < n; i++) d.labels[i] = (i * 7) % 10;
    return d;
}

/* Expected augmented pixel for shift (dy, dx) and flip fl. */
static float aug_ref(const pn_dataset *d, int i, int c, int y, int x, int dy, int dx, int fl)
{
    int sy = y + dy, sx = (fl ? d->w - 1 - x : x) + dx;
    if (sy < 0 || sy >= d->h || sx < 0 || sx >= d->w) return 0.0f;
    return d->images[(((size_t)i * d->c + c) * d->h + sy) * d->w + sx];
}

static int matches(const pn_dataset *d, const float *out, int i, int dy, int dx, int fl)
{
    for (int c = 0; c < d->c; c++)
        for (int y = 0; y < d->h; y++)
            for (int x = 0; x < d->w; x++)
                if (out[((size_t)c * d->h + y) * d->w + x] != aug_ref(d, i, c, y, x, dy, dx, fl))
                    return 0;
    return 1;
}

TEST(augment_copy_and_gather)
{
    pn_dataset d = synth(4, 2, 5, 4);
    int idx[3] = { 2, 0, 2 }, lab[3];
    size_t chw = 2 * 5 * 4;
    float out[3 * 40], out2[3 * 40];
    pn_rng r = pn_rng_stream(1, PN_STREAM_AUGMENT, 0);
    uint64_t s0 = r.s;
    CHECK(pn_augment_batch(out, lab, &d, idx, 3, 0, 0, &r) == PN_OK, "%s", pn_last_error());
    CHECK(r.s == s0, "pad 0 without flip must not draw random numbers");
    for (int b = 0; b < 3; b++) {
        CHECK(memcmp(out + b * chw, d.images + idx[b] * chw, chw * sizeof(float)) == 0,
              "image %d not copied", b);
        CHECK(lab[b] == d.labels[idx[b]], "label %d", b);
    }
    CHECK(pn_augment_batch(out, NULL, &d, idx, 3, 0, 0, NULL) == PN_OK, "NULL rng, no randomness");
    CHECK(pn_gather_batch(out2, lab, &d, idx, 3) == PN_OK, "%s", pn_last_error());
    CHECK(memcmp(out, out2, sizeof out) == 0, "gather differs from the plain copy");
    /* Bad arguments. */
    int bad[2] = { 1, 4 };
    CHECK(pn_gather_batch(out, lab, &d, bad, 2) == PN_ERR_ARG, "index out of range accepted");
    bad[1] = -1;
    CHECK(pn_augment_batch(out, lab, &d, bad, 2, 1, 1, &r) == PN_ERR_ARG, "negative index");
    CHECK(pn_augment_batch(out, lab, &d, idx, 3, 5, 0, &r) == PN_ERR_ARG, "pad > width");
    CHECK(pn_augment_batch(out, lab, &d, idx, 3, -1, 0, &r) == PN_ERR_ARG, "negative pad");
    CHECK(pn_augment_batch(out, lab, &d, idx, 3, 0, 1, NULL) == PN_ERR_ARG, "flip without rng");
    CHECK(pn_augment_batch(out, lab, NULL, idx, 3, 0, 0, &r) == PN_ERR_ARG, "NULL dataset");
    pn_dataset_free(&d);
}

TEST(augment_flip)
{
    pn_dataset d = synth(3, 2, 5, 4);
    enum { B = 40 };
    int idx[B];
    for (int b = 0; b < B; b++) idx[b] = b % 3;
    float *out = malloc(sizeof(float) * B * 40);
    pn_rng r = pn_rng_stream(7, PN_STREAM_AUGMENT, 3), replay = r;
    CHECK(pn_augment_batch(out, NULL, &d, idx, B, 0, 1, &r) == PN_OK, "%s", pn_last_error());
    int flipped = 0;
    for (int b = 0; b < B; b++) {
        int fl = (int)pn_rng_below(&replay, 2);
        flipped += fl;
        CHECK(matches(&d, out + b * 40, idx[b], 0, 0, fl), "image %d: not the %s image", b,
              fl ? "mirrored" : "original");
    }
    CHECK(flipped > 5 && flipped < B - 5, "%d of %d flipped", flipped, B);
    CHECK(r.s == replay.s, "unexpected number of draws");
    /* An explicit mirrored pixel: row 0 of image 0, channel 0 is 1 2 3 4. */
    for (int b = 0; b < B; b++) {
        if (idx[b] != 0) continue;
        float first = out[b * 40];
        CHECK(first == 1.0f || first == 4.0f, "first pixel %g", first);
    }
    free(out);
    pn_dataset_free(&d);
}

TEST(augment_crop)
{
    pn_dataset d = synth(3, 2, 6, 5);
    enum { B = 50 };
    int idx[B];
    for (int b = 0; b < B; b++) idx[b] = (b * 2) % 3;
    size_t chw = 2 * 6 * 5;
    float *out = malloc(sizeof(float) * B * chw), *out2 = malloc(sizeof(float) * B * chw);
    int pad = 2;
    pn_rng r = pn_rng_stream(11, PN_STREAM_AUGMENT, 0), replay = r, again = r;
    CHECK(pn_augment_batch(out, NULL, &d, idx, B, pad, 1, &r) == PN_OK, "%s", pn_last_error());
    int shifted = 0, seen_dy[5] = { 0 }, seen_dx[5] = { 0 };
    for (int b = 0; b < B; b++) {
        int dy = (int)pn_rng_below(&replay, 2 * pad + 1) - pad;
        int dx = (int)pn_rng_below(&replay, 2 * pad + 1) - pad;
        int fl = (int)pn_rng_below(&replay, 2);
        seen_dy[dy + pad] = seen_dx[dx + pad] = 1;
        shifted += dy != 0 || dx != 0;
        CHECK(matches(&d, out + b * chw, idx[b], dy, dx, fl), "image %d: not shifted by "
              "(%d, %d) flip %d", b, dy, dx, fl);
        /* The zero border has the size the shift implies. */
        int zeros = 0;
        for (size_t k = 0; k < chw; k++) zeros += out[b * chw + k] == 0.0f;
        int want = 2 * (6 * 5 - (6 - abs(dy)) * (5 - abs(dx)));
        CHECK(zeros == want, "image %d: %d zeros, expected %d", b, zeros, want);
    }
    CHECK(shifted > B / 2, "only %d of %d images shifted", shifted, B);
    for (int k = 0; k < 5; k++) CHECK(seen_dy[k] && seen_dx[k], "shift %d never drawn", k - pad);
    /* Same generator state: same batch. Another stream: another batch. */
    CHECK(pn_augment_batch(out2, NULL, &d, idx, B, pad, 1, &again) == PN_OK, "%s",
          pn_last_error());
    CHECK(memcmp(out, out2, sizeof(float) * B * chw) == 0, "not deterministic");
    pn_rng other = pn_rng_stream(12, PN_STREAM_AUGMENT, 0);
    CHECK(pn_augment_batch(out2, NULL, &d, idx, B, pad, 1, &other) == PN_OK, "%s",
          pn_last_error());
    CHECK(memcmp(out, out2, sizeof(float) * B * chw) != 0, "different streams, same batch");
    free(out);
    free(out2);
    pn_dataset_free(&d);
}

TEST(permutation)
{
    enum { N = 1000 };
    int *p = malloc(sizeof(int) * N), *q = malloc(sizeof(int) * N), *seen = calloc(N, sizeof(int));
    pn_rng r = pn_rng_stream(5, PN_STREAM_SHUFFLE, 0), r2 = r;
    pn_permutation(p, N, &r);
    int fixed = 0, ok = 1;
    for (int i = 0; i < N; i++) {
        if (p[i] < 0 || p[i] >= N || seen[p[i]]++) ok = 0;
        fixed += p[i] == i;
    }
    CHECK(ok, "not a permutation");
    CHECK(fixed < 10, "%d fixed points: not shuffled", fixed);
    pn_permutation(q, N, &r2);
    CHECK(memcmp(p, q, sizeof(int) * N) == 0, "same state, different permutation");
    pn_permutation(q, N, &r);
    CHECK(memcmp(p, q, sizeof(int) * N) != 0, "next draw gave the same permutation");
    int one = 42;
    pn_permutation(&one, 1, &r);
    CHECK(one == 0, "n = 1 gives %d", one);
    free(p);
    free(q);
    free(seen);
}

TEST(default_dir)
{
    const char *old = getenv("PROXYNORM_DATA");
    char *saved = old ? strdup(old) : NULL;
    setenv("PROXYNORM_DATA", "/some/where", 1);
    CHECK(strcmp(pn_default_data_dir(), "/some/where") == 0, "%s", pn_default_data_dir());
    unsetenv("PROXYNORM_DATA");
    CHECK(strcmp(pn_default_data_dir(), "/usr/share/datasets/fashion-mnist") == 0, "%s",
          pn_default_data_dir());
    if (saved) setenv("PROXYNORM_DATA", saved, 1);
    free(saved);
}

TEST(real_fashion_mnist)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    struct stat st;
    if (stat(dir, &st) != 0) {
        printf("note: %s absent, real data set not checked\n", dir);
        return;
    }
    pn_dataset d;
    for (int train = 1; train >= 0; train--) {
        long limit = train ? 100 : 0; /* the whole test split: checks it end to end */
        int rc = pn_dataset_load(&d, dir, train, limit);
        CHECK(rc == PN_OK, "load: %s", pn_last_error());
        if (rc) return;
        int want = train ? 100 : 10000;
        CHECK(d.n == want && d.c == 1 && d.h == 28 && d.w == 28, "n %d c %d h %d w %d", d.n,
              d.c, d.h, d.w);
        CHECK(strcmp(d.name, "fashion-mnist") == 0, "name %s", d.name);
        int counts[10] = { 0 }, ok = 1;
        for (int i = 0; i < d.n; i++) {
            if (d.labels[i] < 0 || d.labels[i] >= 10) ok = 0;
            else counts[d.labels[i]]++;
        }
        CHECK(ok, "label out of range");
        if (!train)
            for (int k = 0; k < 10; k++) CHECK(counts[k] == 1000, "class %d: %d", k, counts[k]);
        float lo = (0 - 0.2860f) / 0.3530f, hi = (1 - 0.2860f) / 0.3530f;
        double sum = 0;
        for (size_t i = 0; i < (size_t)d.n * 784; i++) {
            if (d.images[i] < lo - 1e-5f || d.images[i] > hi + 1e-5f) ok = 0;
            sum += d.images[i];
        }
        CHECK(ok, "pixel outside the normalized range");
        /* Normalized with the set's own mean: the average is near 0. */
        CHECK(fabs(sum / ((double)d.n * 784)) < 0.1, "mean of normalized pixels %g",
              sum / ((double)d.n * 784));
        pn_dataset_free(&d);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/pn_test_data_XXXXXX");
    if (!mkdtemp(g_root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(idx_plain_fashion_name);
    RUN(idx_gz_mnist_name);
    RUN(idx_limit);
    RUN(idx_missing);
    RUN(idx_truncated);
    RUN(idx_bad_headers);
    RUN(cifar_load);
    RUN(cifar_bad);
    RUN(augment_copy_and_gather);
    RUN(augment_flip);
    RUN(augment_crop);
    RUN(permutation);
    RUN(default_dir);
    RUN(real_fashion_mnist);
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return harness_summary();
}
