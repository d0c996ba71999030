/* `dreamstate prepare-data [options] --out DIR INPUT...`: text files to token shards. */
#include "args.h"
#include "commands.h"

#include "dreamstate/common.h"
#include "dreamstate/data.h"

#include <math.h>

static const cli_spec spec = {
    .cmd = "prepare-data",
    .usage =
        "usage: dreamstate prepare-data [options] --out DIR INPUT...\n"
        "Tokenizes text into token shards DIR/train.bin and DIR/valid.bin (format: include/dreamstate/data.h).\n"
        "INPUT: a text file, a .gz file (read with gzip -dc), or a directory (walked recursively, sorted by\n"
        "name; hidden entries and symbolic links skipped). Each file is one document unless --split-on.\n"
        "  --tokenizer byte|world   byte: id = byte value (vocab 256, default); world: RWKV World vocab\n"
        "  --vocab FILE             rwkv_vocab_v20230424.txt, required with --tokenizer world\n"
        "  --split-on LINE          documents end at lines equal to LINE (e.g. %; \"\" = blank lines)\n"
        "  --valid-fraction F       share of documents held out, 0 <= F < 1 (default 0.05)\n"
        "  --seed N                 seed of the deterministic per-document split (default 1234)\n"
        "  --out DIR                output directory (created if missing)\n"
        "  --help                   this text\n",
    .positional = "INPUT",
    .any_positionals = 1,
    .options = {{"--tokenizer"}, {"--vocab"}, {"--out"}, {"--split-on"}, {"--valid-fraction"}, {"--seed"}},
};

int cmd_prepare_data(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_prepare_options o = ds_prepare_defaults();
    o.tokenizer = cli_string(&a, "--tokenizer", o.tokenizer);
    o.vocab = cli_value(&a, "--vocab");
    o.split_on = cli_value(&a, "--split-on");
    o.valid_fraction = cli_number(&a, "--valid-fraction", -HUGE_VAL, HUGE_VAL, o.valid_fraction);
    if (!(o.valid_fraction >= 0 && o.valid_fraction < 1))
        ds_die(DS_EXIT_BAD_INPUT, "prepare-data: --valid-fraction '%s' must be a number in [0, 1)",
               cli_value(&a, "--valid-fraction"));
    o.seed = cli_seed(&a, "--seed", o.seed);
    o.out_dir = cli_value(&a, "--out");
    if (!o.out_dir) ds_die(DS_EXIT_BAD_INPUT, "prepare-data: --out DIR is required (see --help)");
    if (a.n_positional == 0) ds_die(DS_EXIT_BAD_INPUT, "prepare-data: no INPUT given (see --help)");
    o.n_inputs = a.n_positional;
    o.inputs = a.positional;
    int rc = ds_prepare_data(&o);
    cli_args_free(&a);
    return rc;
}
