/* `dreamstate eval-states MODEL.ckpt --states INDEX --held-out INDEX`: the numbers of DREAMSTATE part A,
 * under mpirun or alone. */
#include "args.h"
#include "commands.h"

#include "dreamstate/common.h"
#include "dreamstate/diffusion.h"
#include "dreamstate/dist.h"
#include "dreamstate/eval.h"

static const cli_spec spec = {
    .cmd = "eval-states",
    .usage =
        "usage: dreamstate eval-states MODEL.ckpt --states TRAIN_INDEX --held-out HELD_INDEX\n"
        "                              [--checkpoint RWKV_WEIGHTS] [--tuned INDEX] [--vocab FILE] [--samples-per-label N]\n"
        "                              [--steps K] [--guidance W] [--seed S] [--continuation-tokens N]\n"
        "                              [--fd-components K] [--threads N] [--out FILE.json]\n"
        "The numbers of DREAMSTATE part A (A2, A3 of src/eval/README.md) for a state-diffusion checkpoint (EMA\n"
        "weights) and the state datasets of its RWKV-7, under mpirun or alone:\n"
        " (1) epsilon-MSE at t = 49, 249, 499, 749, 949 (one fixed noise draw per record) on the held-out\n"
        "     records and on as many train records spread over the train set;\n"
        " (2) cosine kNN (k = 1, 5) fitted on the train states (the model's normalised modelled WKV channels):\n"
        "     accuracy on the held-out states and on N DDIM samples per label (condition = label); the\n"
        "     memorisation check: mean distance to the nearest train state, generated vs held-out; the Frechet\n"
        "     distance to the held-out states per modelled layer, in a K-component PCA of the train states,\n"
        "     of the generated states and (the floor) of as many train states spread over the train set,\n"
        "     all labels pooled and per label;\n"
        " (3) teacher-forced CE of the next up to N tokens after each held-out context's first max_tokens\n"
        "     tokens (the part its state came from; contexts with at least 16 more tokens) from the zero\n"
        "     state, the class-mean state, a generated state of its label and of label + 1, the true state\n"
        "     (modelled WKV only, as injected) and the full true state (= prompting), per label and pooled,\n"
        "     with 95% bootstrap CIs (1000 resamples over contexts) of the paired difference to zero; with\n"
        "     --tuned also from the state tuned for its label (the upper bar for generated states).\n"
        "  --checkpoint FILE         RWKV-7 weights (default: the model's rwkv_checkpoint=)\n"
        "  --tuned INDEX             tuned states of run.task state_tuning (its OUT/states/index.txt)\n"
        "  --vocab FILE              vocabulary file of the world tokenizer\n"
        "  --samples-per-label N     generated states per label (default 8)\n"
        "  --steps K                 DDIM steps (default 50)\n"
        "  --guidance W              classifier-free guidance (default 1: off)\n"
        "  --clip C                  clip the sampler's predicted x0 to [-C, C] (default 0: off)\n"
        "  --temperature T           scale of the sampler's initial noise (default 1)\n"
        "  --seed S                  noise of (1) (the trainer's run.seed reproduces its val_eps_mse), the\n"
        "                            samples and the bootstrap (default 1234)\n"
        "  --continuation-tokens N   default 128 (at least 16)\n"
        "  --fd-components K         PCA components of the Frechet distances (default min(32, train records - 1))\n"
        "  --threads N               threads per rank (default: cores / ranks on the node)\n"
        "  --out FILE.json           every number (default: MODEL without .ckpt + .eval-states.json)\n",
    .mpi = 1,
    .positional = "MODEL.ckpt",
    .options = {{"--states"}, {"--held-out"}, {"--checkpoint"}, {"--tuned"}, {"--vocab"}, {"--samples-per-label"}, {"--steps"},
                {"--guidance"}, {"--seed"}, {"--continuation-tokens"}, {"--threads"}, {"--out"}, {"--clip"},
                {"--temperature"}, {"--fd-components"}},
};

int cmd_eval_states(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    const char *cmd = spec.cmd;
    ds_eval_states_options o = ds_eval_states_defaults();
    o.states = cli_value(&a, "--states");
    o.held_out = cli_value(&a, "--held-out");
    if (a.n_positional != 1 || !o.states || !o.held_out)
        ds_die(DS_EXIT_BAD_INPUT, "%s: needs MODEL.ckpt, --states and --held-out (see --help)", cmd);
    o.model = a.positional[0];
    o.checkpoint = cli_value(&a, "--checkpoint");
    o.tuned = cli_value(&a, "--tuned");
    o.vocab = cli_value(&a, "--vocab");
    o.out = cli_value(&a, "--out");
    o.samples_per_label = (int)cli_int(&a, "--samples-per-label", 1, 4096, o.samples_per_label);
    o.steps = (int)cli_int(&a, "--steps", 2, DS_DIFFUSION_STEPS, o.steps);
    o.guidance = cli_number(&a, "--guidance", -100, 100, o.guidance);
    o.clip = cli_number(&a, "--clip", 0, 1e6, o.clip);
    o.temperature = cli_number(&a, "--temperature", 0, 1e6, o.temperature);
    o.seed = cli_seed(&a, "--seed", o.seed);
    o.continuation_tokens = (int)cli_int(&a, "--continuation-tokens", DS_EVAL_STATES_MIN_CONTINUATION, 1 << 20,
                                         o.continuation_tokens);
    o.threads = (int)cli_int(&a, "--threads", 1, 4096, o.threads);
    o.fd_components = (int)cli_int(&a, "--fd-components", 1, 1 << 20, o.fd_components);
    int rc = ds_eval_states(&o);
    cli_args_free(&a);
    ds_dist_finalize();
    return rc;
}
