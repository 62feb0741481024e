/* The arena planner (src/nn/arena.h, pn_arena_pack) and its use by the model
 * (src/nn/model.c, plan; pn_model_set_retain_activations): items live at a common time never
 * share memory, the packing is no larger than the items laid end to end and no smaller
 * than what is live at the busiest time, and a model's arena shrinks when the activations are not retained.
 * (Training with and without sharing is bit for bit the same: tests/test_recompute.c.) */
#include "harness.h"

#include "nn/arena.h"
#include "nn/build.h"
#include "nn/model.h"

static int live_together(const pn_arena_item *a, const pn_arena_item *b, const int *iv)
{
    for (int i = a->iv; i < a->iv + a->niv; i++)
        for (int j = b->iv; j < b->iv + b->niv; j++)
            if (iv[2 * i] <= iv[2 * j + 1] && iv[2 * j] <= iv[2 * i + 1]) return 1;
    return 0;
}

static int overlap(const pn_arena_item *a, const pn_arena_item *b)
{
    return a->size && b->size && a->off < b->off + b->size && b->off < a->off + a->size;
}

/* Random item sets: every pair live together is apart in memory; the packing never needs
 * more than the sum and at least the live peak. */
TEST(pack_random)
{
    enum { MAXN = 40 };
    pn_arena_item it[MAXN];
    int iv[2 * 3 * MAXN], order[MAXN];
    int bad = 0, shared_somewhere = 0;
    harness_seed(77);
    for (int trial = 0; trial < 2000 && !bad; trial++) {
        const int n = 1 + (int)(harness_uniform() * MAXN) % MAXN;
        int niv = 0;
        size_t sum = 0;
        for (int i = 0; i < n; i++) {
            it[i].size = 16 * (size_t)(harness_uniform() * 100); /* some 0 */
            it[i].iv = niv;
            it[i].niv = 1 + (int)(harness_uniform() * 3) % 3;
            for (int k = 0; k < it[i].niv; k++, niv++) {
                const int a = -1 + (int)(harness_uniform() * 60), len = (int)(harness_uniform() * 20);
                iv[2 * niv] = a;
                iv[2 * niv + 1] = a + len;
            }
            sum += it[i].size;
        }
        const size_t total = pn_arena_pack(it, n, iv, order);
        const size_t peak = pn_arena_peak_live(it, n, iv);
        if (total > sum || total < peak) {
            CHECK(0, "trial %d: total %zu, sum %zu, live peak %zu", trial, total, sum, peak);
            bad = 1;
        }
        for (int i = 0; i < n && !bad; i++) {
            if (it[i].off + it[i].size > total || it[i].off % 16) {
                CHECK(0, "trial %d: item %d at %zu + %zu outside %zu", trial, i, it[i].off, it[i].size, total);
                bad = 1;
            }
            for (int j = 0; j < i && !bad; j++)
                if (overlap(&it[i], &it[j])) {
                    if (live_together(&it[i], &it[j], iv)) {
                        CHECK(0, "trial %d: items %d and %d overlap", trial, i, j);
                        bad = 1;
                    }
                    shared_somewhere = 1;
                }
        }
    }
    CHECK(shared_somewhere, "no two items ever shared memory");
}

/* Small cases with a known answer. */
TEST(pack_known)
{
    /* A [0,3] 64, B [4,9] 64: one place; C [2,5] 32 meets both: after them */
    pn_arena_item it[3] = { { 64, 0, 1, 0 }, { 64, 1, 1, 0 }, { 32, 2, 1, 0 } };
    const int iv[6] = { 0, 3, 4, 9, 2, 5 };
    int order[3];
    size_t total = pn_arena_pack(it, 3, iv, order);
    CHECK(total == 96 && it[0].off == 0 && it[1].off == 0 && it[2].off == 64, "total %zu, offsets %zu %zu %zu",
          total, it[0].off, it[1].off, it[2].off);
    CHECK(pn_arena_peak_live(it, 3, iv) == 96, "live peak %zu", pn_arena_peak_live(it, 3, iv));
    /* an item live twice ([0,1] and [8,9]) around a larger one ([3,6]): the same place */
    pn_arena_item t2[2] = { { 32, 0, 2, 0 }, { 48, 2, 1, 0 } };
    const int iv2[6] = { 0, 1, 8, 9, 3, 6 };
    total = pn_arena_pack(t2, 2, iv2, order);
    CHECK(total == 48 && t2[0].off == 0 && t2[1].off == 0, "total %zu", total);
}

/* resnet20 bn on Fashion-MNIST shapes, batches 8 and 64: the arena is within 5% of the
 * live peak of its plan, and smaller than with the activations retained by at least one
 * of the largest gradient buffers (the first stage's backward runs in the memory of the
 * later stages' values). */
static void arena_sizes(int B)
{
    pn_model_config c;
    pn_model_config_default(&c);
    c.norm = PN_NORM_BN;
    pn_model *on = NULL, *off = NULL;
    float *x = NULL;
    int *lab = NULL;
    if (pn_model_create(&on, &c, 3) != PN_OK || pn_model_create(&off, &c, 3) != PN_OK) {
        CHECK(0, "create: %s", pn_last_error());
        goto done;
    }
    pn_model_set_retain_activations(off, 1);
    const size_t nx = (size_t)B * c.in_channels * c.image * c.image;
    x = calloc(nx, sizeof *x);
    lab = calloc(B, sizeof *lab);
    if (!x || !lab) {
        CHECK(0, "oom");
        goto done;
    }
    harness_seed(3);
    for (size_t i = 0; i < nx; i++) x[i] = (float)harness_uniform();
    const float *lg;
    double l;
    for (int k = 0; k < 2; k++) {
        pn_model *m = k ? off : on;
        CHECK(pn_model_forward(m, x, B, 1, &lg) == PN_OK && pn_model_loss(m, lab, 0, &l, NULL) == PN_OK &&
                  pn_model_backward(m, 1.0f) == PN_OK,
              "step: %s", pn_last_error());
    }
    size_t largest = 0; /* the largest value, floats per image */
    for (int v = 0; v < on->nvals; v++) {
        const size_t nv = (size_t)on->vals[v].C * on->vals[v].H * on->vals[v].W;
        if (nv > largest) largest = nv;
    }
    const double bon = (double)pn_model_activation_bytes(on), boff = (double)pn_model_activation_bytes(off);
    const double big = (double)B * largest * sizeof(float);
    const double peak = (double)pn_arena_peak_live(on->items, on->nitems, on->item_iv) * sizeof(float);
    printf("  resnet20 bn, batch %d, 28x28: arena %.0f bytes (live peak %.0f), %.0f with the activations "
           "retained (largest value %.0f)\n", B, bon, peak, boff, big);
    CHECK(bon >= peak && bon <= 1.05 * peak, "arena %.0f bytes, live peak %.0f", bon, peak);
    CHECK(bon <= boff - big, "arena %.0f bytes, retained %.0f", bon, boff);
done:
    free(x);
    free(lab);
    pn_model_free(on);
    pn_model_free(off);
}

TEST(model_arena_shrinks)
{
    arena_sizes(8);
    arena_sizes(64);
}

int main(void)
{
    RUN(pack_random);
    RUN(pack_known);
    RUN(model_arena_shrinks);
    return harness_summary();
}
