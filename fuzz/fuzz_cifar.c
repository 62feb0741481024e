/* libFuzzer harness: CIFAR-10 binary batches (src/data/cifar.c, through
 * pn_dataset_load's format detection in src/data/dataset.c).
 *
 * Input: byte 0 = mode, then the bytes of the first file.
 *   mode bit 0: training split (data_batch_1..5.bin, each holding the bytes)
 *               instead of test_batch.bin
 *   bit 4: (training split) data_batch_5.bin loses its last byte
 *   bit 1: files inside the cifar-10-batches-bin/ subfolder
 *   bits 2-3: image limit: all, 1, 65, 1000 */
#include <stdint.h>
#include <stddef.h>
#include <sys/stat.h>

#include "data/data.h"
#include "fuzz_util.h"

static const char *const names[] = {
    "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
    "data_batch_5.bin", "test_batch.bin",
    "cifar-10-batches-bin/data_batch_1.bin", "cifar-10-batches-bin/data_batch_2.bin",
    "cifar-10-batches-bin/data_batch_3.bin", "cifar-10-batches-bin/data_batch_4.bin",
    "cifar-10-batches-bin/data_batch_5.bin", "cifar-10-batches-bin/test_batch.bin",
    "cifar-10-batches-bin",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *dir = fuzz_scratch(names, (int)(sizeof names / sizeof names[0]));
    static int made;
    if (!made) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", dir);
        mkdir(sub, 0700);
        made = 1;
    }
    int mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    int train = mode & 1, sub = (mode >> 1) & 1;
    static const long limits[4] = { 0, 1, 65, 1000 };
    long limit = limits[(mode >> 2) & 3];
    for (int i = 0; i < 12; i++) fuzz_remove(names[i]);
    const char *const *set = names + (sub ? 6 : 0);
    if (train) {
        for (int i = 0; i < 5; i++)
            fuzz_write(set[i], p, (i == 4 && (mode & 16) && n > 0) ? n - 1 : n);
    } else {
        fuzz_write(set[5], p, n);
    }

    pn_dataset d;
    memset(&d, 0, sizeof d);
    if (pn_dataset_load(&d, dir, train, limit) == 0) {
        if (d.n < 1 || d.c != 3 || d.h != 32 || d.w != 32 || !d.images || !d.labels) abort();
        if (limit > 0 && d.n > limit) abort();
        for (int i = 0; i < d.n; i++)
            if (d.labels[i] < 0 || d.labels[i] >= d.classes) abort();
        volatile float sink = d.images[(size_t)d.n * 3 * 32 * 32 - 1];
        (void)sink;
        pn_dataset_free(&d);
    }
    return 0;
}
