/* libFuzzer harness: the safetensors reader (src/io/safetensors.c), header JSON
 * and tensors, through the from-memory entry point that pn_safetensors_read
 * shares. Every tensor handed out is read in full and every metadata key looked
 * up, so that a pointer or a size out of bounds shows up under ASan. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pn_st_file *f = NULL;
    if (pn_safetensors_read_mem(&f, data, size, "fuzz") != 0) {
        if (f) abort(); /* an error leaves nothing to close */
        return 0;
    }
    int n = pn_safetensors_count(f);
    volatile float sink = 0;
    for (int i = 0; i < n; i++) {
        const char *name = pn_safetensors_name(f, i);
        int ndim = -1;
        int64_t shape[PN_ST_MAX_DIMS];
        const float *x = NULL;
        if (!name || pn_safetensors_get(f, name, &ndim, shape, &x) != 0) abort();
        if (ndim < 0 || ndim > PN_ST_MAX_DIMS) abort();
        size_t numel = 1;
        for (int d = 0; d < ndim; d++) {
            if (shape[d] < 0) abort();
            numel *= (size_t)shape[d];
        }
        for (size_t k = 0; k < numel; k++) sink += x[k];
    }
    if (pn_safetensors_name(f, n) || pn_safetensors_name(f, -1)) abort();
    static const char *const keys[] = { "format", "arch", "width", "step", "", "__metadata__" };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *v = pn_safetensors_meta(f, keys[k]);
        if (v) sink += (float)strlen(v);
    }
    (void)sink;
    pn_safetensors_close(f);
    return 0;
}
