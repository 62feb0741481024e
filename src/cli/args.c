/* Option parsing for the command line (see args.h). */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

arg_opt *args_find(arg_opt *opts, int nopts, const char *name)
{
    for (int i = 0; i < nopts; i++)
        if (strcmp(opts[i].name, name) == 0) return &opts[i];
    return NULL;
}

int args_given(arg_opt *opts, int nopts, const char *name)
{
    arg_opt *o = args_find(opts, nopts, name);
    if (!o) return 0;
    if (o->set) return 1;
    if (!o->key) return 0;
    for (int i = 0; i < nopts; i++)
        if (opts[i].set && opts[i].key && strcmp(opts[i].key, o->key) == 0) return 1;
    return 0;
}

static int parse_value(arg_opt *o, const char *v, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case ARG_INT:
    case ARG_LONG: {
        long x = strtol(v, &end, 10);
        if (end == v || *end || errno) {
            snprintf(err, errlen, "%s: \"%s\" is not an integer", o->name, v);
            return 1;
        }
        if ((double)x < o->lo || (double)x > o->hi) {
            snprintf(err, errlen, "%s: %ld is out of range [%.0f, %.0f]", o->name, x, o->lo, o->hi);
            return 1;
        }
        if (o->type == ARG_INT) *(int *)o->dst = (int)x;
        else *(long *)o->dst = x;
        return 0;
    }
    case ARG_U64: {
        const char *s = v;
        while (*s == ' ' || *s == '\t') s++;
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno || *s == '-' || *s == '+') {
            snprintf(err, errlen, "%s: \"%s\" is not a non-negative integer", o->name, v);
            return 1;
        }
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case ARG_FLOAT: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x)) {
            snprintf(err, errlen, "%s: \"%s\" is not a finite number", o->name, v);
            return 1;
        }
        if (x < o->lo || x > o->hi) {
            snprintf(err, errlen, "%s: %g is out of range [%g, %g]", o->name, x, o->lo, o->hi);
            return 1;
        }
        *(float *)o->dst = (float)x;
        return 0;
    }
    case ARG_STR:
        if (!*v) {
            snprintf(err, errlen, "%s: empty value", o->name);
            return 1;
        }
        *(const char **)o->dst = v;
        return 0;
    case ARG_FLAG:
        break;
    }
    return 1;
}

int args_parse(arg_opt *opts, int nopts, int argc, char **argv, int first, int *help, char *err,
               size_t errlen)
{
    *help = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            snprintf(err, errlen, "unexpected argument \"%s\"", a);
            return 1;
        }
        char name[64];
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        if (len >= sizeof name) {
            snprintf(err, errlen, "unknown option \"%.40s...\"", a);
            return 1;
        }
        memcpy(name, a, len);
        name[len] = '\0';
        arg_opt *o = args_find(opts, nopts, name);
        if (!o) {
            snprintf(err, errlen, "unknown option \"%s\"", name);
            return 1;
        }
        if (o->type == ARG_FLAG) {
            if (eq) {
                snprintf(err, errlen, "%s takes no value", name);
                return 1;
            }
            *(int *)o->dst = o->flag_value;
            o->set = 1;
            continue;
        }
        const char *v;
        if (eq) v = eq + 1;
        else if (i + 1 < argc) v = argv[++i];
        else {
            snprintf(err, errlen, "%s needs a value", name);
            return 1;
        }
        if (parse_value(o, v, err, errlen)) return 1;
        o->set = 1;
    }
    return 0;
}
