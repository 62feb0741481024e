/* Private helpers shared by idx.c, cifar.c and dataset.c (not part of the API). */
#ifndef PN_DATA_INTERNAL_H
#define PN_DATA_INTERNAL_H

#include <stddef.h>

#include "data/data.h"

/* Loaders for one split. Preconditions: d is zeroed, dir is non-NULL. On error
 * they free what they allocated and leave *d zeroed. */
int pn_idx_load(pn_dataset *d, const char *dir, int train, long limit);
int pn_cifar_load(pn_dataset *d, const char *dir, int train, long limit);

/* 1 if path names an existing regular file. */
int pn_data_is_file(const char *path);
/* snprintf(buf, size, "%s/%s", dir, name); 0 on success, -1 if it does not fit. */
int pn_data_join(char *buf, size_t size, const char *dir, const char *name);

/* lut[v] = (float)((v / 255 - mean) / std) for v in 0..255. */
void pn_data_lut(float lut[256], double mean, double std);

#define PN_DATA_PATH_MAX 4096

#endif
