/* Data sets and augmentation.
 * Supported on disk (format detected from the files in DIR):
 *   IDX (MNIST, Fashion-MNIST): train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
 *                               t10k-images-idx3-ubyte[.gz],  t10k-labels-idx1-ubyte[.gz]
 *   CIFAR-10 binary:            data_batch_1.bin .. data_batch_5.bin, test_batch.bin
 *                               (also inside a cifar-10-batches-bin/ subfolder)
 * Images are stored normalized ((x/255 - mean_c) / std_c) as float (n, c, h, w). */
#ifndef PN_DATA_H
#define PN_DATA_H

#include <stdint.h>

#include "kernels/rng.h"

typedef struct {
    int n, c, h, w;   /* count and image shape */
    int classes;      /* 10 for the supported sets */
    float *images;    /* (n, c, h, w), normalized */
    int *labels;      /* (n), in [0, classes) */
    float mean[3], std[3]; /* per-channel normalization used (of the training set) */
    char name[32];    /* "fashion-mnist", "mnist" (IDX), "cifar10" */
} pn_dataset;

/* Default data directory: $PROXYNORM_DATA, else /usr/share/datasets/fashion-mnist. */
const char *pn_default_data_dir(void);

/* Loads the training (train = 1) or test (train = 0) split from dir. limit > 0 keeps
 * only the first `limit` images. Bad files (missing, truncated, wrong magic, count
 * mismatch, label out of range) return PN_ERR_IO / PN_ERR_FORMAT with a message
 * naming the file. On error *d is left empty (nothing to free). */
int pn_dataset_load(pn_dataset *d, const char *dir, int train, long limit);
void pn_dataset_free(pn_dataset *d);

/* Fills out (B, c, h, w) with images idx[0..B) of d, each randomly cropped after
 * zero-padding by `pad` pixels (pad 0: no crop) and flipped horizontally with
 * probability 1/2 if flip. Padding value is 0 in normalized units. rng drives
 * the choices. labels_out (B) receives the labels (may be NULL). */
int pn_augment_batch(float *out, int *labels_out, const pn_dataset *d, const int *idx, int B,
                     int pad, int flip, pn_rng *rng);
/* Same without augmentation (plain copy). */
int pn_gather_batch(float *out, int *labels_out, const pn_dataset *d, const int *idx, int B);

/* perm (n) = a random permutation of 0..n-1 (Fisher-Yates with rng). */
void pn_permutation(int *perm, int n, pn_rng *rng);

#endif
