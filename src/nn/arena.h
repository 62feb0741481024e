/* Offsets of the activation arena (src/nn/model.c's plan): every buffer of a step is an
 * item of a size, live on a union of closed intervals of the step's timeline (forward op
 * i at time i, backward op i at time 2n-1-i). Items live at a common time never overlap
 * in memory; others may share it. */
#ifndef PN_NN_ARENA_H
#define PN_NN_ARENA_H

#include <stddef.h>

typedef struct {
    size_t size; /* floats (a multiple of the arena alignment) */
    int iv, niv; /* its intervals: iv[2*k], iv[2*k+1] for k in [iv, iv + niv) of the list */
    size_t off;  /* out: floats from the arena's start */
} pn_arena_item;

/* Sets every item's offset: largest items first (ties in item order), each at the lowest
 * offset where it overlaps no placed item live at a common time. iv: the interval list, 2
 * ints (first, last time) per interval. Returns the floats the arena needs.
 * Deterministic; O(n^2) for n items. order: n ints of scratch. */
size_t pn_arena_pack(pn_arena_item *it, int n, const int *iv, int *order);

/* Floats live at the busiest time (a lower bound of any packing's size). */
size_t pn_arena_peak_live(const pn_arena_item *it, int n, const int *iv);

#endif
