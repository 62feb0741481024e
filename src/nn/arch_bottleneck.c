/* Pre-activation bottleneck ResNet (ResNet v2, He et al. 2016) and ResNeXt, sized by a
 * base width w (--width; torchvision's networks are w = 64).
 *
 * Names: resnet50 (blocks 3-4-6-3), resnet101 (3-4-23-3), resnet152 (3-8-36-3),
 *        resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, and any layout as
 *        bottleneck_A-B-C-D / resnext_A-B-C-D_GxDd (1 to 4 stages, e.g. bottleneck_1-1,
 *        resnext_1-1-1-1_2x32d).
 *
 *   stem   images >= 64 px: conv7x7 stride 2 pad 3 (in -> w), max pool 3x3 stride 2 pad 1
 *          smaller images:  conv3x3 stride 1 (in -> w)
 *          (pre-activation: no norm in the stem; the first block's NA1 normalizes)
 *   stage s = 1..4: planes p = w * 2^(s-1), out channels 4p; the first block of stages
 *          2..4 has stride 2 (on its 3x3 conv, as torchvision's "v1.5")
 *     block  h = NA1(x); sc = projection ? conv1x1(h, stride) : x
 *            out = conv3(NA3(conv2(NA2(conv1(h))))) + sc
 *            conv1 1x1 (-> c), conv2 3x3 stride, groups G (c -> c), conv3 1x1 (c -> 4p)
 *            c = p for ResNet; c = floor(p * D / 64) * G for ResNeXt GxDd (torchvision's
 *            int(planes * base_width / 64) * groups), so resnext50_32x4d at w = 64 has
 *            c = 128, 256, 512, 1024.
 *            projection when the stride is 2 or the channels change (first block of every stage)
 *   final  NA -> global average pool -> linear(4 * 8w -> classes)
 *
 * NA = norm + ReLU, or GroupNorm/LayerNorm (no affine) + PN-Act for the "+pn" kinds.
 * Every norm of a pre-activation network is followed by an activation, so every norm
 * is Norm -> PN-Act: the convolutions that feed a residual add (conv3 and the projection
 * shortcut) are followed by no norm at all (the next block's NA1 comes after the add).
 * The "plain norm with a scale and no shift" of docs/proxy-norm.md (pn_b_norm) is for
 * post-activation networks (e.g. an MBConv projection); it does not occur here.
 *
 * Parameter names: stem.conv.weight, stage1.block0.{norm1.*, conv1.weight, norm2.*,
 * conv2.weight, norm3.*, conv3.weight, shortcut.weight}, ..., final.norm.*, fc.*. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/build.h"

typedef struct {
    int nstages, blocks[4];
    int groups, dpg; /* ResNeXt: groups and width per group at base 64; 0 for ResNet */
} layout;

/* Reads "A-B-C-D" (1..4 counts, each 1..64) at *s; advances *s. */
static int parse_counts(const char **s, layout *L)
{
    const char *p = *s;
    L->nstages = 0;
    for (;;) {
        if (*p < '1' || *p > '9') return -1;
        errno = 0;
        char *end;
        long v = strtol(p, &end, 10);
        if (errno || v < 1 || v > 64 || L->nstages == 4) return -1;
        L->blocks[L->nstages++] = (int)v;
        p = end;
        if (*p != '-') break;
        p++;
    }
    *s = p;
    return 0;
}

/* Reads "_GxDd" at s to the end. */
static int parse_card(const char *s, layout *L)
{
    if (*s++ != '_') return -1;
    if (*s < '1' || *s > '9') return -1;
    char *end;
    errno = 0;
    long g = strtol(s, &end, 10);
    if (errno || g < 1 || g > 1024 || *end != 'x') return -1;
    s = end + 1;
    if (*s < '1' || *s > '9') return -1;
    long d = strtol(s, &end, 10);
    if (errno || d < 1 || d > 4096 || strcmp(end, "d") != 0) return -1;
    L->groups = (int)g;
    L->dpg = (int)d;
    return 0;
}

static int parse_arch(const char *arch, layout *L)
{
    static const struct { const char *name; int b[4]; int g, d; } known[] = {
        { "resnet50", { 3, 4, 6, 3 }, 0, 0 },
        { "resnet101", { 3, 4, 23, 3 }, 0, 0 },
        { "resnet152", { 3, 8, 36, 3 }, 0, 0 },
        { "resnext50_32x4d", { 3, 4, 6, 3 }, 32, 4 },
        { "resnext101_32x8d", { 3, 4, 23, 3 }, 32, 8 },
        { "resnext101_64x4d", { 3, 4, 23, 3 }, 64, 4 },
    };
    memset(L, 0, sizeof *L);
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(arch, known[i].name) == 0) {
            L->nstages = 4;
            memcpy(L->blocks, known[i].b, sizeof L->blocks);
            L->groups = known[i].g;
            L->dpg = known[i].d;
            return 0;
        }
    const char *s;
    if (strncmp(arch, "bottleneck_", 11) == 0) {
        s = arch + 11;
        if (parse_counts(&s, L) != 0) return -1;
        return *s == '\0' ? 0 : -1;
    }
    if (strncmp(arch, "resnext_", 8) == 0) {
        s = arch + 8;
        if (parse_counts(&s, L) != 0) return -1;
        return parse_card(s, L);
    }
    return -1;
}

static int match(const char *arch)
{
    layout L;
    return parse_arch(arch, &L) == 0;
}

static int default_width(const char *arch, int image)
{
    (void)arch;
    return image >= 64 ? 64 : 16;
}

static int build(pn_builder *b, const pn_model_config *c)
{
    layout L;
    if (parse_arch(c->arch, &L) != 0) return pn_b_fail(b, PN_ERR_ARG, "model: unknown arch '%s'", c->arch);
    const int w = c->width;
    pn_val x;
    if (c->image >= 64) {
        x = pn_b_conv(b, pn_b_input(b), "stem.conv", w, 7, 2, 1, 0);
        x = pn_b_maxpool(b, x, 3, 2, 1);
    } else {
        x = pn_b_conv(b, pn_b_input(b), "stem.conv", w, 3, 1, 1, 0);
    }
    int cin = w;
    for (int st = 0; st < L.nstages; st++) {
        const long planes = (long)w << st, cout = 4 * planes;
        long mid = planes;
        if (L.groups) {
            mid = planes * L.dpg / 64 * L.groups;
            if (mid < 1)
                return pn_b_fail(b, PN_ERR_ARG,
                                 "model: %s with width %d: stage %d has a bottleneck of floor(%ld * %d / 64) = 0 "
                                 "channels per group (use a larger --width)",
                                 c->arch, w, st + 1, planes, L.dpg);
        }
        if (cout > 65536 || mid > 65536)
            return pn_b_fail(b, PN_ERR_ARG, "model: %s with width %d is too wide", c->arch, w);
        for (int i = 0; i < L.blocks[st]; i++) {
            const int stride = (st > 0 && i == 0) ? 2 : 1;
            char pre[64], nm[96];
            snprintf(pre, sizeof pre, "stage%d.block%d", st + 1, i);
            snprintf(nm, sizeof nm, "%s.norm1", pre);
            pn_val h = pn_b_norm_act(b, x, nm, PN_ACT_RELU);
            snprintf(nm, sizeof nm, "%s.conv1", pre);
            pn_val t = pn_b_conv(b, h, nm, (int)mid, 1, 1, 1, 0);
            snprintf(nm, sizeof nm, "%s.norm2", pre);
            t = pn_b_norm_act(b, t, nm, PN_ACT_RELU);
            snprintf(nm, sizeof nm, "%s.conv2", pre);
            t = pn_b_conv(b, t, nm, (int)mid, 3, stride, L.groups ? L.groups : 1, 0);
            snprintf(nm, sizeof nm, "%s.norm3", pre);
            t = pn_b_norm_act(b, t, nm, PN_ACT_RELU);
            snprintf(nm, sizeof nm, "%s.conv3", pre);
            t = pn_b_conv(b, t, nm, (int)cout, 1, 1, 1, 0);
            pn_val sc = x;
            if (stride != 1 || cin != cout) {
                snprintf(nm, sizeof nm, "%s.shortcut", pre);
                sc = pn_b_conv(b, h, nm, (int)cout, 1, stride, 1, 0);
            }
            x = pn_b_add(b, t, sc);
            cin = (int)cout;
        }
    }
    x = pn_b_norm_act(b, x, "final.norm", PN_ACT_RELU);
    x = pn_b_gap(b, x);
    pn_b_linear(b, x, "fc", c->classes);
    return pn_b_status(b);
}

const pn_arch pn_arch_bottleneck = {
    "bottleneck",
    "resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d, "
    "bottleneck_A-B-C-D, resnext_A-B-C-D_GxDd (pre-activation bottleneck blocks, 1-4 stages)",
    match, build, default_width,
};
