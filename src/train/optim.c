/* SGD with momentum (PyTorch semantics) and the cosine learning-rate schedule. */
#include "train/train.h"

#include <math.h>

/* PyTorch's torch.optim.SGD (dampening 0), per element:
 *   d = g + wd * p            (only for tensors whose table entry has decay = 1)
 *   v = mu * v + d            (PyTorch starts with v = d; identical from v = 0)
 *   u = nesterov ? d + mu * v : v
 *   p = p - lr * u
 * With mu = 0 the velocity is left untouched and u = d. */
void pn_sgd_step(float *params, const float *grads, float *velocity, const pn_tensor_info *table,
                 int ntable, const pn_sgd_config *c, float lr)
{
    if (!params || !grads || !table || !c || ntable <= 0) return;
    const float mu = c->momentum;
    const int use_mom = mu != 0.0f && velocity != NULL;
    const int nesterov = c->nesterov && use_mom;
    for (int t = 0; t < ntable; t++) {
        float *p = params + table[t].offset;
        const float *g = grads + table[t].offset;
        float *v = use_mom ? velocity + table[t].offset : NULL;
        const float wd = table[t].decay ? c->wd : 0.0f;
        const size_t n = table[t].numel;
        for (size_t i = 0; i < n; i++) {
            float d = g[i];
            if (wd != 0.0f) d += wd * p[i];
            float u = d;
            if (use_mom) {
                float vi = mu * v[i] + d;
                v[i] = vi;
                u = nesterov ? d + mu * vi : vi;
            }
            p[i] -= lr * u;
        }
    }
}

/* Linear warm-up from base/warmup to base over steps [0, warmup), then half a
 * cosine from base down towards 0 over [warmup, total): the last step's rate is
 * base * (1 - cos(pi / (total - warmup))) / 2, close to 0. */
float pn_lr_at(float base_lr, long step, long warmup_steps, long total_steps)
{
    if (step < 0) step = 0;
    if (warmup_steps < 0) warmup_steps = 0;
    if (warmup_steps > 0 && step < warmup_steps)
        return (float)((double)base_lr * (double)(step + 1) / (double)warmup_steps);
    long span = total_steps - warmup_steps;
    if (span <= 0) return base_lr;
    double progress = (double)(step - warmup_steps) / (double)span;
    if (progress > 1.0) progress = 1.0;
    return (float)((double)base_lr * 0.5 * (1.0 + cos(3.14159265358979323846 * progress)));
}
