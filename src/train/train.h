/* Training: SGD with momentum, learning-rate schedule, the training loop with
 * micro-batches, evaluation, logging and checkpoints. */
#ifndef PN_TRAIN_H
#define PN_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

typedef struct {
    float lr, momentum, wd;
    int nesterov;
} pn_sgd_config;

/* One SGD step over all parameters: decay (only where table decay = 1) is added to
 * the gradient, then momentum: v = mu*v + g; p -= lr * (nesterov ? g + mu*v : v)
 * (PyTorch's SGD). velocity has the parameters' layout. */
void pn_sgd_step(float *params, const float *grads, float *velocity, const pn_tensor_info *table,
                 int ntable, const pn_sgd_config *c, float lr);

/* Cosine schedule with linear warm-up: step in [0, total). */
float pn_lr_at(float base_lr, long step, long warmup_steps, long total_steps);

#endif
