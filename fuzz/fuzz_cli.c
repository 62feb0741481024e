/* libFuzzer harness: the command line's option parsing and checking
 * (src/cli/args.c, the option tables and checks of train/eval/info in
 * src/cli/main.c, and src/cli/cmd_power.c). main.c is compiled with
 * -Dmain=pn_cli_main; pn_cli_parse_only makes each command return once its options
 * are checked, before it loads data or computes anything.
 *
 * Input: the arguments after the program name, separated by NUL bytes (at most
 * 64). stdout/stderr of the commands are discarded (-close_fd_mask=3). */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"

int pn_cli_main(int argc, char **argv);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        pn_cli_parse_only = 1;
        setenv("OMP_WAIT_POLICY", "passive", 1); /* no re-exec (main.c) */
        unsetenv("OMPI_COMM_WORLD_SIZE"); /* never "launched by mpirun" */
        unsetenv("PMIX_SIZE");
        unsetenv("PMI_SIZE");
        init = 1;
    }
    /* A private NUL-terminated copy, split into arguments. */
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[66];
    int argc = 0;
    argv[argc++] = "proxynorm";
    for (size_t i = 0; i <= size && argc < 65;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    if (size == 0) argc = 1;
    argv[argc] = NULL;
    int rc = pn_cli_main(argc, argv);
    if (rc < 0 || rc > 3) abort(); /* the documented exit statuses of option errors */
    free(buf);
    return 0;
}
