/* Synthetic IDX data sets for the command-line tests: n side x side images whose
 * bright quadrant encodes the label (0..3), written as DIR/PREFIX-images-idx3-ubyte and
 * DIR/PREFIX-labels-idx1-ubyte. Uses the harness RNG (harness.h first). */
#ifndef PN_SYNTH_IDX_H
#define PN_SYNTH_IDX_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

/* IDX files of n side x side images whose bright quadrant encodes the label (0..3). */
static int write_idx(const char *dir, const char *prefix, int n, int side, unsigned long long seed)
{
    char p[700];
    harness_seed(seed);
    unsigned char *img = malloc((size_t)n * side * side), *lab = malloc((size_t)n);
    if (!img || !lab) { free(img); free(lab); return -1; }
    for (int i = 0; i < n; i++) {
        int y = (int)(harness_uniform() * 4) % 4;
        lab[i] = (unsigned char)y;
        for (int r = 0; r < side; r++)
            for (int c = 0; c < side; c++) {
                int bright = (r < side / 2) == ((y & 1) == 0) && (c < side / 2) == ((y & 2) == 0);
                double v = (bright ? 160 : 60) + 40 * harness_normal();
                img[(size_t)i * side * side + r * side + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
    unsigned char h[16];
    int rc = 0;
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *f = fopen(p, "wb");
    if (f) {
        be32(h, 0x803); be32(h + 4, (uint32_t)n); be32(h + 8, (uint32_t)side); be32(h + 12, (uint32_t)side);
        fwrite(h, 1, 16, f);
        fwrite(img, 1, (size_t)n * side * side, f);
        rc |= fclose(f);
    } else rc = -1;
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, prefix);
    f = fopen(p, "wb");
    if (f) {
        be32(h, 0x801); be32(h + 4, (uint32_t)n);
        fwrite(h, 1, 8, f);
        fwrite(lab, 1, (size_t)n, f);
        rc |= fclose(f);
    } else rc = -1;
    free(img);
    free(lab);
    return rc;
}

#endif
