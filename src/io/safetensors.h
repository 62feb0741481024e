/* Safetensors files (https://github.com/huggingface/safetensors format):
 *   8 bytes little-endian header length L, L bytes of JSON header, raw data.
 *   header: {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..],
 *            "data_offsets": [begin, end]}, ...}
 * We write F32 tensors only; the reader accepts F32 and rejects anything malformed
 * (bad length, bad JSON, offsets out of range or overlapping, shape/size mismatch)
 * with PN_ERR_FORMAT and a message. Writes are atomic: PATH.tmp, fsync, rename,
 * fsync of the directory; a crash leaves either the old file or the new one. */
#ifndef PN_SAFETENSORS_H
#define PN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define PN_ST_MAX_DIMS 8

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[PN_ST_MAX_DIMS];
    const float *data; /* product(shape) floats */
} pn_st_tensor;

typedef struct {
    const char *key, *value;
} pn_st_meta;

int pn_safetensors_write(const char *path, const pn_st_tensor *tensors, int ntensors,
                         const pn_st_meta *meta, int nmeta);

typedef struct pn_st_file pn_st_file;
/* Reads and validates the whole file. */
int pn_safetensors_read(pn_st_file **out, const char *path);
/* Same for a file already in memory (size bytes at buf; name is used in messages,
 * NULL: "(memory)"). The data are copied: buf may be freed afterwards. */
int pn_safetensors_read_mem(pn_st_file **out, const void *buf, size_t size, const char *name);
void pn_safetensors_close(pn_st_file *f);
/* Looks up a tensor by name: PN_OK, or PN_ERR_FORMAT if absent (message names it). */
int pn_safetensors_get(const pn_st_file *f, const char *name, int *ndim,
                       int64_t shape[PN_ST_MAX_DIMS], const float **data);
/* Metadata value for key, or NULL. */
const char *pn_safetensors_meta(const pn_st_file *f, const char *key);
int pn_safetensors_count(const pn_st_file *f);
const char *pn_safetensors_name(const pn_st_file *f, int i);

#endif
