/* dreamstate command line: one binary, one subcommand per job. */
#include "dreamstate/analysis.h"
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"
#include "dreamstate/plan.h"
#include "dreamstate/state_diffusion.h"
#include "dreamstate/states.h"
#include "dreamstate/train.h"
#include "dreamstate/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ds_generate_main(int argc, char **argv);  /* src/cli/generate.c */

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
    "  build-contexts --out FILE.jsonl [OPTIONS]      labelled contexts from this system's text (see --help)\n"
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
    "Run 'dreamstate COMMAND --help' for one command. Exit codes: 0 ok, 1 failure, 2 bad input.\n";

static int wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    return 0;
}

/* Parses "CONFIG [--set k=v]... [--FLAG VALUE]..." where FLAG is one of `flags`; values go to `out`. */
static void parse_config_args(int argc, char **argv, const char *cmd, ds_config *cfg, int n_flags,
                              const char **flags, const char **out) {
    const char *config = NULL;
    char **sets = calloc((size_t)argc, sizeof(char *));
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0) {
            if (i + 1 >= argc) ds_die(DS_EXIT_BAD_INPUT, "%s: --set needs section.key=value", cmd);
            sets[n_sets++] = argv[++i];
            continue;
        }
        int matched = 0;
        for (int f = 0; f < n_flags; f++) {
            if (strcmp(argv[i], flags[f]) == 0) {
                if (i + 1 >= argc) ds_die(DS_EXIT_BAD_INPUT, "%s: %s needs a value", cmd, flags[f]);
                out[f] = argv[++i];
                matched = 1;
            }
        }
        if (matched) continue;
        if (argv[i][0] == '-') ds_die(DS_EXIT_BAD_INPUT, "%s: unknown option '%s' (see --help)", cmd, argv[i]);
        if (config) ds_die(DS_EXIT_BAD_INPUT, "%s: more than one config file ('%s', '%s')", cmd, config, argv[i]);
        config = argv[i];
    }
    if (!config) ds_die(DS_EXIT_BAD_INPUT, "%s: missing CONFIG (see --help)", cmd);
    for (int f = 0; f < n_flags; f++)
        if (!out[f]) ds_die(DS_EXIT_BAD_INPUT, "%s: missing %s (see --help)", cmd, flags[f]);
    ds_config_load(cfg, config, n_sets, sets);
    free(sets);
}

static int cmd_train(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        printf("usage: dreamstate train CONFIG [--set section.key=value]...\n"
               "Trains as configured; writes OUT/config.yaml (resolved), OUT/train.jsonl (one line per step)\n"
               "and checkpoints to checkpoint.dir. Rerunning resumes from the newest valid checkpoint.\n"
               "SIGUSR1/SIGTERM/SIGINT: finish the step, write a checkpoint, exit 0.\n");
        return 0;
    }
    ds_config cfg;
    ds_dist_init();
    parse_config_args(argc, argv, "train", &cfg, 0, NULL, NULL);
    int rc;
    if (strcmp(cfg.run.task, "lm") == 0) rc = ds_train_lm(&cfg);
    else if (strcmp(cfg.run.task, "state_diffusion") == 0) rc = ds_train_state_diffusion(&cfg);
    else rc = ds_train_hybrid(&cfg);  /* the config accepts no other run.task */
    ds_dist_finalize();
    return rc;
}

static int cmd_eval(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        printf("usage: dreamstate eval CONFIG --checkpoint FILE [--set section.key=value]...\n"
               "FILE is a .ckpt of this project or a .safetensors with official RWKV-LM names.\n");
        return 0;
    }
    ds_config cfg;
    const char *flags[] = {"--checkpoint"}, *vals[1] = {NULL};
    ds_dist_init();
    parse_config_args(argc, argv, "eval", &cfg, 1, flags, vals);
    int rc = ds_eval_lm(&cfg, vals[0]);
    ds_dist_finalize();
    return rc;
}

static int cmd_export(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        printf("usage: dreamstate export CONFIG --checkpoint FILE --out OUT.safetensors\n");
        return 0;
    }
    ds_config cfg;
    const char *flags[] = {"--checkpoint", "--out"}, *vals[2] = {NULL, NULL};
    parse_config_args(argc, argv, "export", &cfg, 2, flags, vals);
    return ds_export_safetensors(&cfg, vals[0], vals[1]);
}

static int cmd_import(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        printf("usage: dreamstate import CONFIG --safetensors FILE [--set section.key=value]...\n"
               "Writes FILE's weights as the step-0 checkpoint of the configured run; 'train' starts there.\n"
               "Convert an official RWKV-LM .pth first: /usr/bin/python3 src/tools/pth_to_safetensors.py\n");
        return 0;
    }
    ds_config cfg;
    const char *flags[] = {"--safetensors"}, *vals[1] = {NULL};
    parse_config_args(argc, argv, "import", &cfg, 1, flags, vals);
    return ds_import_safetensors(&cfg, vals[0]);
}

static int cmd_extract_states(int argc, char **argv) {
    if (wants_help(argc, argv)) {
        printf("usage: dreamstate extract-states CONFIG --checkpoint FILE --contexts FILE.jsonl --out DIR\n"
               "                                 [--max-tokens N] [--labels-from INDEX] [--set section.key=value]...\n"
               "Runs the model (model.*, data.tokenizer) with the weights in FILE over every context from the zero\n"
               "state and writes DIR/states-rRRRRR-of-SSSSS.bin (one shard per MPI rank) and DIR/index.txt.\n"
               "  --max-tokens N       keep each context's first N tokens (default 512)\n"
               "  --labels-from INDEX  use the label list (and ids) of another state dataset, e.g. the train\n"
               "                       set's when extracting a held-out set\n"
               "Formats: include/dreamstate/states.h.\n");
        return 0;
    }
    /* The optional flags are taken out here; the common parser requires all of its flags. */
    ds_extract_options opt = {.max_tokens = 512};
    char **rest = calloc((size_t)argc, sizeof(char *));
    int n_rest = 0;
    for (int i = 0; i < argc; i++) {
        int max_tokens = i > 0 && strcmp(argv[i], "--max-tokens") == 0;
        if (!max_tokens && !(i > 0 && strcmp(argv[i], "--labels-from") == 0)) { rest[n_rest++] = argv[i]; continue; }
        if (i + 1 >= argc) ds_die(DS_EXIT_BAD_INPUT, "extract-states: %s needs a value", argv[i]);
        char *end;
        if (max_tokens) {
            long v = strtol(argv[i + 1], &end, 10);
            if (end == argv[i + 1] || *end || v < 1 || v > (1 << 24))
                ds_die(DS_EXIT_BAD_INPUT, "extract-states: --max-tokens '%s' must be an integer in [1, %d]", argv[i + 1], 1 << 24);
            opt.max_tokens = (int)v;
        } else {
            opt.labels_from = argv[i + 1];
        }
        i++;
    }
    ds_config cfg;
    const char *flags[] = {"--checkpoint", "--contexts", "--out"}, *vals[3] = {NULL, NULL, NULL};
    ds_dist_init();
    parse_config_args(n_rest, rest, "extract-states", &cfg, 3, flags, vals);
    opt.checkpoint = vals[0];
    opt.contexts = vals[1];
    opt.out_dir = vals[2];
    int rc = ds_extract_states(&cfg, &opt);
    free(rest);
    ds_dist_finalize();
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? DS_EXIT_BAD_INPUT : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "prepare-data") == 0) return ds_prepare_data_main(argc - 1, argv + 1);
    if (strcmp(cmd, "export") == 0) return cmd_export(argc - 1, argv + 1);
    if (strcmp(cmd, "import") == 0) return cmd_import(argc - 1, argv + 1);
    if (strcmp(cmd, "build-contexts") == 0) return ds_build_contexts_main(argc - 1, argv + 1);
    if (strcmp(cmd, "extract-states") == 0) return cmd_extract_states(argc - 1, argv + 1);
    if (strcmp(cmd, "analyze-states") == 0) return ds_analyze_states_main(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0) return ds_generate_main(argc - 1, argv + 1);
    if (strcmp(cmd, "sample-state") == 0) return ds_sample_state_main(argc - 1, argv + 1);
    if (strcmp(cmd, "interpolate-state") == 0) return ds_interpolate_state_main(argc - 1, argv + 1);
    if (strcmp(cmd, "edit-state") == 0) return ds_edit_state_main(argc - 1, argv + 1);
    if (strcmp(cmd, "eval-states") == 0) return ds_eval_states_main(argc - 1, argv + 1);
    if (strcmp(cmd, "plan") == 0) return ds_plan_main(argc - 1, argv + 1);
    if (strcmp(cmd, "config-help") == 0) { ds_config_print_help(stdout); return 0; }
    ds_die(DS_EXIT_BAD_INPUT, "unknown command '%s' (see dreamstate --help)", cmd);
}
