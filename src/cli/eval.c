/* `dreamstate eval CONFIG --checkpoint FILE`: held-out loss of a language model. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"

static const cli_spec spec = {
    .cmd = "eval",
    .usage = "usage: dreamstate eval CONFIG --checkpoint FILE [--set section.key=value]...\n"
             "FILE is a .ckpt of this project or a .safetensors with official RWKV-LM names.\n",
    .config = 1,
    .mpi = 1,
    .options = {{"--checkpoint", CLI_REQUIRED}},
};

int cmd_eval(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_config cfg;
    cli_load_config(&a, &cfg);
    int rc = ds_eval_lm(&cfg, cli_value(&a, "--checkpoint"));
    cli_args_free(&a);
    ds_dist_finalize();
    return rc;
}
