/* `dreamstate config-help`: every config key with its default. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"

#include <stdio.h>

static const cli_spec spec = {
    .cmd = "config-help",
    .usage = "usage: dreamstate config-help\n"
             "Prints every config key with its default and what it means.\n",
};

int cmd_config_help(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    cli_args_free(&a);
    ds_config_print_help(stdout);
    return 0;
}
