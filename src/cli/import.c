/* `dreamstate import CONFIG --safetensors FILE`: external weights as the step-0 checkpoint of a run. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"
#include "dreamstate/weights.h"

static const cli_spec spec = {
    .cmd = "import",
    .usage = "usage: dreamstate import CONFIG --safetensors FILE [--set section.key=value]...\n"
             "Writes FILE's weights as the step-0 checkpoint of the configured run; 'train' starts there.\n"
             "Refused (exit 2) where an earlier run's checkpoints or train.jsonl are; with\n"
             "--set checkpoint.resume=restart they are moved to OUT.old-N/ first.\n"
             "Convert an official RWKV-LM .pth first: /usr/bin/python3 src/tools/pth_to_safetensors.py\n",
    .config = 1,
    .options = {{"--safetensors", CLI_REQUIRED}},
};

int cmd_import(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_config cfg;
    cli_load_config(&a, &cfg);
    int rc = ds_import_safetensors(&cfg, cli_value(&a, "--safetensors"));
    cli_args_free(&a);
    return rc;
}
