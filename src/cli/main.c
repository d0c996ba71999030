/* dreamstate command line: one binary, one subcommand per job (src/cli/<command>.c). */
#include "commands.h"

#include "dreamstate/common.h"

#include <stdio.h>
#include <string.h>

static const char *usage =
    "usage: dreamstate COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  train CONFIG [--set section.key=value]...      train (task from run.task; resumes from the newest\n"
    "                                                 valid checkpoint in checkpoint.dir)\n"
    "  eval CONFIG --checkpoint FILE [--set k=v]...   held-out loss, perplexity, bits per byte\n"
    "  prepare-data [OPTIONS] --out DIR INPUT...      text files -> token shards (see prepare-data --help)\n"
    "  export CONFIG --checkpoint FILE --out F.safetensors    weights with official RWKV-LM key names\n"
    "  import CONFIG --safetensors FILE [--set k=v]...        start a run from external weights\n"
    "  build-contexts --out FILE.jsonl [OPTIONS]      labelled contexts from pinned Debian text (see --help)\n"
    "  extract-states CONFIG --checkpoint FILE --contexts FILE.jsonl --out DIR [OPTIONS]\n"
    "                                                 final RWKV-7 state of every context (see --help)\n"
    "  analyze-states INDEX [--test INDEX] [--out DIR] [OPTIONS]\n"
    "                                                 per-layer PCA, kNN/silhouette/probe vs shuffled labels\n"
    "                                                 and t-SNE plots of a state dataset (see --help)\n"
    "  generate CONFIG --checkpoint FILE [--state FILE] [--prompt TEXT] [OPTIONS]\n"
    "                                                 continue text from a state, streamed to stdout (see --help)\n"
    "  sample-state MODEL.ckpt --label NAME --out FILE [OPTIONS]   states from a trained state DiT\n"
    "  interpolate-state MODEL.ckpt --from A --to B --out PREFIX    between two states (state or noise space)\n"
    "  edit-state MODEL.ckpt --state A --to-label NAME --out FILE   DDIM inversion or SDEdit to another label\n"
    "  eval-states MODEL.ckpt --states INDEX --held-out INDEX [OPTIONS]\n"
    "                                                 part A numbers: denoising loss, label recovery of generated\n"
    "                                                 states, continuation loss from injected states (see --help)\n"
    "  plan CONFIG --nodes N[,N...] [OPTIONS]         predicted step time, communication, memory per rank\n"
    "  config-help                                    every config key with its default\n"
    "\n"
    "Run 'dreamstate COMMAND --help' for one command. Options take their value as '--flag value' or\n"
    "'--flag=value'. Exit codes: 0 ok, 1 failure, 2 bad input.\n";

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"train", cmd_train},
    {"eval", cmd_eval},
    {"prepare-data", cmd_prepare_data},
    {"export", cmd_export},
    {"import", cmd_import},
    {"build-contexts", cmd_build_contexts},
    {"extract-states", cmd_extract_states},
    {"analyze-states", cmd_analyze_states},
    {"generate", cmd_generate},
    {"sample-state", cmd_sample_state},
    {"interpolate-state", cmd_interpolate_state},
    {"edit-state", cmd_edit_state},
    {"eval-states", cmd_eval_states},
    {"plan", cmd_plan},
    {"config-help", cmd_config_help},
};

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? DS_EXIT_BAD_INPUT : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    ds_die(DS_EXIT_BAD_INPUT, "unknown command '%s' (see dreamstate --help)", argv[1]);
}
