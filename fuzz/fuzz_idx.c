/* libFuzzer harness: IDX data sets (src/data/idx.c, through pn_dataset_load's
 * format detection in src/data/dataset.c), plain and gzipped.
 *
 * Input: byte 0 = mode, bytes 1-2 = where the rest splits into the images file
 * and the labels file (little-endian, modulo the rest's length), then the bytes.
 *   mode bit 0: images file gzipped      bit 1: labels file gzipped
 *   bit 2: gzipped files hold the raw bytes (fuzzes the decompression) instead
 *          of a valid gzip stream of them
 *   bit 3: test split (t10k-*) instead of train-*
 *   bits 4-5: image limit: all, 1, 3, 100 */
#include <stdint.h>
#include <stddef.h>

#include "data/data.h"
#include "fuzz_util.h"

static const char *const names[] = {
    "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
    "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz",
};

static void put(const char *base, int gz, int raw, const uint8_t *p, size_t n)
{
    char gzname[64];
    snprintf(gzname, sizeof gzname, "%s.gz", base);
    if (gz) {
        fuzz_remove(base);
        if (raw) fuzz_write(gzname, p, n);
        else fuzz_write_gz(gzname, p, n);
    } else {
        fuzz_remove(gzname);
        fuzz_write(base, p, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    const char *dir = fuzz_scratch(names, (int)(sizeof names / sizeof names[0]));
    int mode = data[0];
    size_t rest = size - 3;
    size_t split = rest ? (size_t)(data[1] | data[2] << 8) % (rest + 1) : 0;
    const uint8_t *p = data + 3;
    int train = !(mode & 8);
    static const long limits[4] = { 0, 1, 3, 100 };
    long limit = limits[(mode >> 4) & 3];
    /* Only the split being loaded is present. */
    for (int i = 0; i < 8; i++)
        if ((i < 4) != train) fuzz_remove(names[i]);
    put(train ? names[0] : names[4], mode & 1, mode & 4, p, split);
    put(train ? names[2] : names[6], mode & 2, mode & 4, p + split, rest - split);

    pn_dataset d;
    memset(&d, 0, sizeof d);
    if (pn_dataset_load(&d, dir, train, limit) == 0) {
        /* What was loaded must be consistent. */
        if (d.n < 1 || d.c != 1 || d.h < 1 || d.w < 1 || !d.images || !d.labels) abort();
        if (limit > 0 && d.n > limit) abort();
        for (int i = 0; i < d.n; i++)
            if (d.labels[i] < 0 || d.labels[i] >= d.classes) abort();
        volatile float sink = d.images[(size_t)d.n * d.h * d.w - 1];
        (void)sink;
        pn_dataset_free(&d);
    }
    return 0;
}
