/* `dreamstate prepare-data [options] --out DIR INPUT...`: text or JSONL to token shards or binidx. */
#include "args.h"
#include "commands.h"

#include "dreamstate/common.h"
#include "dreamstate/data.h"

#include <math.h>

static const cli_spec spec = {
    .cmd = "prepare-data",
    .usage =
        "usage: dreamstate prepare-data [options] --out DIR INPUT...\n"
        "Tokenizes text into training data in DIR: token shards train.bin and valid.bin (format:\n"
        "include/dreamstate/data.h), or with --format binidx, RWKV-LM's binidx pairs train.bin + train.idx\n"
        "and valid.bin + valid.idx (Megatron's MMIDIDX index; uint16 ids, int32 past 65536; one sequence\n"
        "per document, its ids then 0, as make_data.py writes them; no valid pair with --valid-fraction 0).\n"
        "Train on binidx with --set data.train=DIR/train --set data.valid=DIR/valid.\n"
        "INPUT: a text file, a JSONL file (*.jsonl), either gzipped (*.gz, read with gzip -dc), or a directory\n"
        "(walked recursively, sorted by name; hidden entries and symbolic links skipped). A text file is one\n"
        "document unless --split-on. A JSONL file holds one document per line, {\"text\": \"...\"} (other keys\n"
        "ignored, blank lines skipped, as RWKV-LM's make_data.py reads it, but in input order, unshuffled);\n"
        "a bad line is refused as FILE:LINE. Empty documents are dropped.\n"
        "  --tokenizer byte|world   byte: id = byte value (vocab 256, default); world: RWKV World vocab\n"
        "  --vocab FILE             another World vocabulary file (default: the built-in\n"
        "                           rwkv_vocab_v20230424.txt)\n"
        "  --format shards|binidx   output format (default shards)\n"
        "  --split-on LINE          text files: documents end at lines equal to LINE (e.g. %; \"\" = blank lines)\n"
        "  --valid-fraction F       share of documents held out, 0 <= F < 1 (default 0.05)\n"
        "  --seed N                 seed of the deterministic per-document split (default 1234)\n"
        "  --out DIR                output directory (created if missing)\n"
        "  --help                   this text\n",
    .positional = "INPUT",
    .any_positionals = 1,
    .options = {{"--tokenizer"}, {"--vocab"}, {"--format"}, {"--out"}, {"--split-on"}, {"--valid-fraction"}, {"--seed"}},
};

int cmd_prepare_data(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_prepare_options o = ds_prepare_defaults();
    o.tokenizer = cli_string(&a, "--tokenizer", o.tokenizer);
    o.vocab = cli_value(&a, "--vocab");
    o.format = cli_string(&a, "--format", o.format);
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
