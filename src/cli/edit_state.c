/* `dreamstate edit-state`: a state moved to another label by DDIM inversion or SDEdit. */
#include "args.h"
#include "commands.h"
#include "state_model.h"

#include "dreamstate/common.h"

#include <stdio.h>
#include <string.h>

static const cli_spec spec = {
    .cmd = "edit-state",
    .usage =
        "usage: dreamstate edit-state MODEL.ckpt --state A.state --to-label NAME --out FILE\n"
        "                             [--method invert|sdedit] [--strength T] [--steps K] [--guidance W] [--seed S]\n"
        "                             [--format dreamstate|rwkv-state]\n"
        "Moves a state to another condition (src/dit/README.md §3.6): invert (default) DDIM-inverts it under its own label\n"
        "(metadata label=) and decodes under NAME; sdedit noises it to base step T (default 500) and denoises\n"
        "under NAME. With NAME = its own label, invert reproduces the state (the round trip of A2, src/eval/README.md §2).\n"
        "--state takes either format (one without label=, as RWKV-PEFT writes them, needs sdedit). --format of --out:\n"
        "dreamstate (default) or rwkv-state (RWKV-PEFT safetensors, WKV only; the default for a .safetensors FILE).\n",
    .positional = "MODEL.ckpt",
    .options = {{"--state"}, {"--to-label"}, {"--out"}, {"--method"}, {"--strength"}, {"--steps"}, {"--guidance"},
                {"--seed"}, {"--format"}},
};

int cmd_edit_state(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    const char *state = cli_value(&a, "--state"), *to_label = cli_value(&a, "--to-label");
    const char *out = cli_value(&a, "--out"), *method = cli_value(&a, "--method");
    if (a.n_positional != 1 || !state || !to_label || !out)
        ds_die(DS_EXIT_BAD_INPUT, "edit-state: needs MODEL.ckpt, --state, --to-label and --out (see --help)");
    const char *model = a.positional[0];
    int sdedit = method && strcmp(method, "sdedit") == 0;
    if (method && !sdedit && strcmp(method, "invert") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "edit-state: --method '%s' is not invert or sdedit", method);
    state_ctx c;
    open_model(&c, "edit-state", model, cli_state_format(&a, out));
    sampler_options(&c, NULL, cli_value(&a, "--steps"), NULL, cli_value(&a, "--guidance"), cli_value(&a, "--seed"), NULL,
                    NULL);
    int target = label_arg(&c, "--to-label", to_label);
    float *x = ds_alloc(sizeof(float) * c.sd.x_floats);
    int source = read_state(&c, state, x);
    int32_t lab[2], nul[2];
    ds_state_cond_term terms[2];
    int from = c.sampler.steps - 1;
    if (sdedit) {
        int strength = (int)cli_int(&a, "--strength", 0, DS_DIFFUSION_STEPS - 1, 500);
        from = ds_state_dit_noise_to(&c.sd, 1, &c.sampler, strength, x);
    } else {
        if (source < 0) ds_die(DS_EXIT_BAD_INPUT, "edit-state: %s has no label= in its metadata (invert needs it)", state);
        ds_state_dit_invert(&c.sd, 1, &c.sampler, label_terms(&c, lab, nul, 1, source, 1.0, 1.0, 0, terms), terms, x);
    }
    ds_state_dit_sample(&c.sd, 1, &c.sampler, from, 0,
                        label_terms(&c, lab + 1, nul + 1, 1, target, 1.0, c.guidance, 0, terms),
                        terms, x);
    char meta[256];
    snprintf(meta, sizeof meta, "edited_from=%s\nmethod=%s", source >= 0 ? c.sd.labels[source] : "?",
             sdedit ? "sdedit" : "invert");
    write_states(&c, 1, x, out, target, meta);
    ds_log("edit-state: %s (%s) -> %s (%s, %s)", state, source >= 0 ? c.sd.labels[source] : "?", out, to_label,
           sdedit ? "sdedit" : "invert");
    ds_free(x);
    ds_state_dit_destroy(&c.sd);
    cli_args_free(&a);
    return 0;
}
