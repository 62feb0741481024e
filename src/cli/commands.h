/* Subcommands of the `proxynorm` command line. Each takes the arguments after
 * the program name (argv[0] is the subcommand's name) and returns the process
 * exit status: 0 success, 1 failure, 2 usage error. */
#ifndef PN_CLI_COMMANDS_H
#define PN_CLI_COMMANDS_H

/* proxynorm power: the power decomposition of normalized activations of the
 * paper's random network (src/diag/power.h, docs/power.md). */
int pn_cmd_power(int argc, char **argv);

/* Fuzzing hook (fuzz/fuzz_cli.c): when non-zero, every command returns 0 right
 * after its options are parsed and checked, before loading data, building a model
 * or computing anything. 0 in the program. */
extern int pn_cli_parse_only;

#endif
