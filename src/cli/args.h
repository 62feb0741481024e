/* Command-line option tables: "--name VALUE", "--name=VALUE" and flags.
 * Numbers are parsed completely (strtol/strtod with an end-pointer check) and
 * range-checked; every error is a message in err and a non-zero return. */
#ifndef PN_CLI_ARGS_H
#define PN_CLI_ARGS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { ARG_INT, ARG_LONG, ARG_U64, ARG_FLOAT, ARG_STR, ARG_FLAG } arg_type;

typedef struct {
    const char *name;  /* "--epochs" */
    arg_type type;
    void *dst;         /* int*, long*, uint64_t*, float*, const char**, int* (FLAG) */
    double lo, hi;     /* inclusive range for numbers */
    int flag_value;    /* value a FLAG stores */
    int set;           /* out: 1 if given */
    const char *key;   /* options sharing a key conflict-check together (e.g. --nesterov/--no-nesterov) */
} arg_opt;

/* Parses argv[first..argc). Returns 0, or 1 with a message in err. "--help"/"-h"
 * sets *help and stops. */
int args_parse(arg_opt *opts, int nopts, int argc, char **argv, int first, int *help, char *err,
               size_t errlen);
/* The option named name (or NULL). */
arg_opt *args_find(arg_opt *opts, int nopts, const char *name);
/* 1 if the option (or any option sharing its key) was given. */
int args_given(arg_opt *opts, int nopts, const char *name);

#endif
