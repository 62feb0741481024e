/* Pre-activation ResNet v2 for small images, basic blocks: "resnetD", D = 6n + 2
 * (resnet8, resnet20, resnet56, ...; not resnet50 / resnet152, which name the
 * bottleneck networks of arch_bottleneck.c).
 *
 *   stem   conv3x3(in -> w)
 *   stage1..3 (widths w, 2w, 4w; n blocks each; first block of stages 2, 3 has stride 2)
 *     block  h = NA1(x); sc = projection ? conv1x1(h, stride) : x
 *            out = conv2(NA2(conv1(h))) + sc
 *   final  NA -> global average pool -> linear(4w -> classes)
 *
 * NA = norm + ReLU, or GroupNorm/LayerNorm (no affine) + PN-Act for the "+pn" kinds.
 * Parameter names: stem.conv.weight, stage2.block0.{norm1.*, conv1.weight, norm2.*,
 * conv2.weight, shortcut.weight}, final.norm.*, fc.weight, fc.bias. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/build.h"

/* "resnetD" with D = 6n + 2, n >= 1. Returns n, or -1. */
static int parse_arch(const char *arch)
{
    if (strncmp(arch, "resnet", 6) != 0) return -1;
    const char *p = arch + 6;
    if (*p < '1' || *p > '9') return -1;
    errno = 0;
    char *end;
    long d = strtol(p, &end, 10);
    if (errno || *end != '\0' || d < 8 || d > 6002 || (d - 2) % 6 != 0) return -1;
    if (d == 50 || d == 152) return -1; /* the bottleneck ResNets */
    return (int)((d - 2) / 6);
}

static int match(const char *arch) { return parse_arch(arch) >= 1; }

static int build(pn_builder *b, const pn_model_config *c)
{
    const int n = parse_arch(c->arch), w = c->width;
    pn_val x = pn_b_conv(b, pn_b_input(b), "stem.conv", w, 3, 1, 1, 0);
    int cin = w;
    for (int st = 0; st < 3; st++) {
        const int cout = w << st;
        for (int i = 0; i < n; i++) {
            const int stride = (st > 0 && i == 0) ? 2 : 1;
            char pre[64], nm[96];
            snprintf(pre, sizeof pre, "stage%d.block%d", st + 1, i);
            snprintf(nm, sizeof nm, "%s.norm1", pre);
            pn_val h = pn_b_norm_act(b, x, nm, PN_ACT_RELU);
            snprintf(nm, sizeof nm, "%s.conv1", pre);
            pn_val t = pn_b_conv(b, h, nm, cout, 3, stride, 1, 0);
            snprintf(nm, sizeof nm, "%s.norm2", pre);
            t = pn_b_norm_act(b, t, nm, PN_ACT_RELU);
            snprintf(nm, sizeof nm, "%s.conv2", pre);
            t = pn_b_conv(b, t, nm, cout, 3, 1, 1, 0);
            pn_val sc = x;
            if (stride != 1 || cin != cout) {
                snprintf(nm, sizeof nm, "%s.shortcut", pre);
                sc = pn_b_conv(b, h, nm, cout, 1, stride, 1, 0);
            }
            x = pn_b_add(b, t, sc);
            cin = cout;
        }
    }
    x = pn_b_norm_act(b, x, "final.norm", PN_ACT_RELU);
    x = pn_b_gap(b, x);
    pn_b_linear(b, x, "fc", c->classes);
    return pn_b_status(b);
}

const pn_arch pn_arch_resnet = {
    "resnet", "resnetD with D = 6n+2 >= 8 (basic blocks, 3 stages; resnet8, resnet20, resnet56, ...)",
    match, build, NULL,
};
