/* The architectures the model engine can build. To add one: write src/nn/arch_NAME.c
 * defining `const pn_arch pn_arch_NAME` (see nn/build.h) and add one X(NAME) line here.
 * pn_arch_find returns the first family (in this order) whose match() accepts a name. */
#include <string.h>

#include "nn/build.h"

#define PN_ARCH_LIST \
    X(resnet)        \
    X(bottleneck)    \
    X(effnet)

#define X(n) extern const pn_arch pn_arch_##n;
PN_ARCH_LIST
#undef X

static const pn_arch *const archs[] = {
#define X(n) &pn_arch_##n,
    PN_ARCH_LIST
#undef X
};

int pn_arch_count(void) { return (int)(sizeof archs / sizeof *archs); }

const pn_arch *pn_arch_get(int i) { return i >= 0 && i < pn_arch_count() ? archs[i] : NULL; }

const pn_arch *pn_arch_find(const char *arch)
{
    if (!arch || !*arch) return NULL;
    for (int i = 0; i < pn_arch_count(); i++)
        if (archs[i]->match(arch)) return archs[i];
    return NULL;
}
