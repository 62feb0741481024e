/* Synchronized BatchNorm for data-parallel training: the per-channel statistics
 * of the training forward (sum, then the sum of squared deviations from the
 * global mean) and the backward's sums (dy, dy * (x - mean)) are summed over
 * all ranks, so that K ranks with micro-batch b normalize exactly like one
 * process with micro-batch K b. Parameter gradients receive this rank's share
 * only (the trainer sums the gradients over the ranks afterwards).
 * Install with pn_syncbn_override + pn_model_set_bn_override. Every BN forward
 * and backward in training is then a collective: all ranks must run the same
 * number of micro-batches of the same size (the trainer guarantees it). */
#ifndef PN_SYNCBN_H
#define PN_SYNCBN_H

#include "nn/model.h"
#include "train/trainer.h"

typedef struct {
    pn_dist dist;        /* the all-reduce (allreduce_f64) */
    double *scratch;     /* grown on demand */
    size_t cap;
    double bytes;        /* bytes passed to allreduce so far */
} pn_syncbn;

/* o's callbacks use s (which must outlive the model's use of o). */
void pn_syncbn_override(pn_syncbn *s, const pn_dist *d, pn_bn_override *o);
void pn_syncbn_free(pn_syncbn *s);

#endif
