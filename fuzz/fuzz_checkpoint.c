/* libFuzzer harness: proxynorm checkpoints (src/train/trainer.c) -- the metadata
 * checks of a training checkpoint (pn_checkpoint_read_config, what `train
 * --resume` reads first) and building + loading the model a checkpoint describes
 * (pn_checkpoint_load_model, what `eval` does). Both take a path: the input is
 * written to a memfd and read back as /proc/self/fd/N. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nn/model.h"
#include "proxynorm.h"
#include "train/trainer.h"

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0) {
        pn_set_threads(1);
        fd = memfd_create("pn_fuzz_checkpoint", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();

    pn_train_config cfg;
    long step = -1;
    if (pn_checkpoint_read_config(path, &cfg, &step) == 0) {
        if (step < 0 || cfg.epochs < 1 || cfg.batch < 1 || cfg.micro_batch < 1) abort();
    }
    pn_model *m = NULL;
    if (pn_checkpoint_load_model(&m, path) == 0) {
        if (!m) abort();
        pn_model_free(m);
    } else if (m) {
        abort();
    }
    return 0;
}
