/* `dreamstate export CONFIG --checkpoint FILE --out OUT.safetensors`: weights with official RWKV-LM names. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"
#include "dreamstate/weights.h"

static const cli_spec spec = {
    .cmd = "export",
    .usage = "usage: dreamstate export CONFIG --checkpoint FILE --out OUT.safetensors\n",
    .config = 1,
    .options = {{"--checkpoint", CLI_REQUIRED}, {"--out", CLI_REQUIRED}},
};

int cmd_export(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_config cfg;
    cli_load_config(&a, &cfg);
    int rc = ds_export_safetensors(&cfg, cli_value(&a, "--checkpoint"), cli_value(&a, "--out"));
    cli_args_free(&a);
    return rc;
}
