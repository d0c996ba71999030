/* `dreamstate extract-states`: the final RWKV-7 state of every labelled context, under mpirun or alone. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"
#include "dreamstate/dist.h"
#include "dreamstate/states.h"
#include "dreamstate/train.h"

static const cli_spec spec = {
    .cmd = "extract-states",
    .usage = "usage: dreamstate extract-states CONFIG (--checkpoint FILE | --random-init) --contexts FILE.jsonl\n"
             "                                 --out DIR [--max-tokens N] [--labels-from INDEX] [--ln-out]\n"
             "                                 [--format dreamstate|rwkv-state] [--set section.key=value]...\n"
             "Runs the model (model.*, data.tokenizer) with the weights in FILE over every context from the zero\n"
             "state and writes DIR/states-rRRRRR-of-SSSSS.bin (one shard per MPI rank) and DIR/index.txt.\n"
             "  --random-init        no checkpoint: the model of the config's model.* keys, initialised as\n"
             "                       `train` initialises it with run.seed (the random-network control of\n"
             "                       analyze-states --control; the index's checkpoint reads random-init:seed=S)\n"
             "  --ln-out             also store the last token's final hidden state ln_out(x) (the head's input)\n"
             "                       as a third part of each record's condition (flag DS_COND_LAST_HIDDEN):\n"
             "                       analyze-states scores it as the 'last-hidden' control\n"
             "  --max-tokens N       keep each context's first N tokens (default 512)\n"
             "  --labels-from INDEX  use the label list (and ids) of another state dataset, e.g. the train\n"
             "                       set's when extracting a held-out set\n"
             "  --format rwkv-state  also write each record as DIR/rwkv-states/<context index>-<label>.safetensors,\n"
             "                       an RWKV-PEFT state file (WKV only; '/' in a label becomes '_'; metadata\n"
             "                       label=, context=, model=). The dataset itself is written as always: the state\n"
             "                       DiT trains on it. Default dreamstate: the dataset only.\n"
             "Formats: include/dreamstate/states.h.\n",
    .config = 1,
    .mpi = 1,
    .options = {{"--checkpoint"}, {"--contexts", CLI_REQUIRED}, {"--out", CLI_REQUIRED}, {"--max-tokens"},
                {"--labels-from"}, {"--format"}, {"--random-init", CLI_SWITCH}, {"--ln-out", CLI_SWITCH}},
};

int cmd_extract_states(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_extract_options opt = {.checkpoint = cli_value(&a, "--checkpoint"), .contexts = cli_value(&a, "--contexts"),
                              .out_dir = cli_value(&a, "--out"), .labels_from = cli_value(&a, "--labels-from"),
                              .max_tokens = (int)cli_int(&a, "--max-tokens", 1, 1 << 24, 512),
                              .rwkv_state_files = cli_state_format(&a, NULL) == DS_STATE_FILE_RWKV,
                              .random_init = cli_count(&a, "--random-init") > 0, .ln_out = cli_count(&a, "--ln-out") > 0};
    ds_config cfg;
    cli_load_config(&a, &cfg);
    int rc = ds_extract_states(&cfg, &opt);
    cli_args_free(&a);
    ds_dist_finalize();
    return rc;
}
