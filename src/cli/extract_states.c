/* `dreamstate extract-states`: the final RWKV-7 state of every labelled context, under mpirun or alone. */
#include "args.h"
#include "commands.h"

#include "dreamstate/config.h"
#include "dreamstate/dist.h"
#include "dreamstate/states.h"
#include "dreamstate/train.h"

static const cli_spec spec = {
    .cmd = "extract-states",
    .usage = "usage: dreamstate extract-states CONFIG --checkpoint FILE --contexts FILE.jsonl --out DIR\n"
             "                                 [--max-tokens N] [--labels-from INDEX]\n"
             "                                 [--format dreamstate|rwkv-state] [--set section.key=value]...\n"
             "Runs the model (model.*, data.tokenizer) with the weights in FILE over every context from the zero\n"
             "state and writes DIR/states-rRRRRR-of-SSSSS.bin (one shard per MPI rank) and DIR/index.txt.\n"
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
    .options = {{"--checkpoint", CLI_REQUIRED}, {"--contexts", CLI_REQUIRED}, {"--out", CLI_REQUIRED}, {"--max-tokens"},
                {"--labels-from"}, {"--format"}},
};

int cmd_extract_states(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_extract_options opt = {.checkpoint = cli_value(&a, "--checkpoint"), .contexts = cli_value(&a, "--contexts"),
                              .out_dir = cli_value(&a, "--out"), .labels_from = cli_value(&a, "--labels-from"),
                              .max_tokens = (int)cli_int(&a, "--max-tokens", 1, 1 << 24, 512),
                              .rwkv_state_files = cli_state_format(&a, NULL) == DS_STATE_FILE_RWKV};
    ds_config cfg;
    cli_load_config(&a, &cfg);
    int rc = ds_extract_states(&cfg, &opt);
    cli_args_free(&a);
    ds_dist_finalize();
    return rc;
}
