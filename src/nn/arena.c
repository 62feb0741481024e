/* Arena packing (arena.h): first fit by decreasing size, as in TFLite's and PyTorch's
 * static memory planners; the items of resnet20 (values, gradient buffers, per-op
 * workspaces, saved states) number about 150, so the quadratic search is nothing. */
#include "nn/arena.h"

/* Do items a and b share a time? */
static int conflict(const pn_arena_item *a, const pn_arena_item *b, const int *iv)
{
    for (int i = a->iv; i < a->iv + a->niv; i++)
        for (int j = b->iv; j < b->iv + b->niv; j++)
            if (iv[2 * i] <= iv[2 * j + 1] && iv[2 * j] <= iv[2 * i + 1]) return 1;
    return 0;
}

size_t pn_arena_pack(pn_arena_item *it, int n, const int *iv, int *order)
{
    size_t total = 0;
    /* order: by size, largest first, stable (insertion sort: n is small) */
    for (int i = 0; i < n; i++) {
        int j = i;
        while (j > 0 && it[order[j - 1]].size < it[i].size) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    for (int a = 0; a < n; a++) {
        pn_arena_item *x = &it[order[a]];
        if (x->size == 0) {
            x->off = 0;
            continue;
        }
        /* the lowest offset clear of every placed, conflicting item: scan candidates (0
         * and the ends of those items) in increasing order */
        size_t off = 0;
        for (;;) {
            size_t next = off;
            for (int b = 0; b < a; b++) {
                const pn_arena_item *y = &it[order[b]];
                if (y->size == 0 || y->off >= off + x->size || y->off + y->size <= off) continue;
                if (!conflict(x, y, iv)) continue;
                if (y->off + y->size > next) next = y->off + y->size;
            }
            if (next == off) break;
            off = next;
        }
        x->off = off;
        if (off + x->size > total) total = off + x->size;
    }
    return total;
}

size_t pn_arena_peak_live(const pn_arena_item *it, int n, const int *iv)
{
    int t0 = 0, t1 = -1, first = 1;
    for (int i = 0; i < n; i++)
        for (int k = it[i].iv; k < it[i].iv + it[i].niv; k++) {
            if (first || iv[2 * k] < t0) t0 = iv[2 * k];
            if (first || iv[2 * k + 1] > t1) t1 = iv[2 * k + 1];
            first = 0;
        }
    size_t peak = 0;
    for (int t = t0; t <= t1; t++) {
        size_t live = 0;
        for (int i = 0; i < n; i++)
            for (int k = it[i].iv; k < it[i].iv + it[i].niv; k++)
                if (iv[2 * k] <= t && t <= iv[2 * k + 1]) {
                    live += it[i].size;
                    break;
                }
        if (live > peak) peak = live;
    }
    return peak;
}
