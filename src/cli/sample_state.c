/* `dreamstate sample-state`: states drawn from a trained state DiT under a label. */
#include "args.h"
#include "commands.h"
#include "state_model.h"

#include "dreamstate/common.h"
#include "dreamstate/progress.h"

#include <stdio.h>

static const cli_spec spec = {
    .cmd = "sample-state",
    .usage =
        "usage: dreamstate sample-state MODEL.ckpt --label NAME --out FILE [--n N] [--sampler ddim|ddpm]\n"
        "                               [--steps K] [--eta E] [--guidance W] [--seed S] [--clip C] [--temperature T]\n"
        "                               [--format dreamstate|rwkv-state]\n"
        "Draws N states from the state DiT (EMA weights) under a label and writes them as state files for\n"
        "`generate --state` (FILE, or FILE-0 .. FILE-<N-1> when N > 1; X-0.safetensors .. for X.safetensors).\n"
        "Defaults: DDIM, 50 steps, eta 0, guidance 1 (off; DiT's sampler uses 4, its best FID 1.5), seed 1234;\n"
        "DDPM: 250 steps. --clip C clips the predicted x0 to [-C, C] in normalised units (a guard for an\n"
        "under-trained DiT; default off);\n"
        "--temperature T scales the initial noise (default 1; below 1 pulls samples towards the class mean).\n"
        "--format rwkv-state writes RWKV-PEFT state files (safetensors, WKV only, metadata label=; the default\n"
        "for FILE ending in .safetensors); dreamstate (the default) the whole state.\n",
    .positional = "MODEL.ckpt",
    .options = {{"--label"}, {"--out"}, {"--n"}, {"--sampler"}, {"--steps"}, {"--eta"}, {"--guidance"}, {"--seed"},
                {"--clip"}, {"--temperature"}, {"--format"}},
};

int cmd_sample_state(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    const char *label_name = cli_value(&a, "--label"), *out = cli_value(&a, "--out");
    if (a.n_positional != 1 || !label_name || !out)
        ds_die(DS_EXIT_BAD_INPUT, "sample-state: needs MODEL.ckpt, --label and --out (see --help)");
    const char *model = a.positional[0];
    state_ctx c;
    open_model(&c, "sample-state", model, cli_state_format(&a, out));
    sampler_options(&c, cli_value(&a, "--sampler"), cli_value(&a, "--steps"), cli_value(&a, "--eta"),
                    cli_value(&a, "--guidance"), cli_value(&a, "--seed"), cli_value(&a, "--clip"),
                    cli_value(&a, "--temperature"));
    int label = label_arg(&c, "--label", label_name);
    int B = (int)cli_int(&a, "--n", 1, 4096, 1);
    int32_t *labels = ds_alloc(sizeof(int32_t) * B), *nulls = ds_alloc(sizeof(int32_t) * B);
    ds_state_cond_term terms[2];
    int n = label_terms(&c, labels, nulls, B, label, 1.0, c.guidance, 0, terms);
    float *x = ds_alloc(sizeof(float) * B * c.sd.x_floats);
    double t0 = ds_now_seconds();
    ds_progress progress;
    ds_progress_begin(&progress, "sample-state", "steps", c.sampler.steps);
    c.sampler.progress = &progress;
    double clipped = ds_state_dit_sample(&c.sd, B, &c.sampler, c.sampler.steps - 1, 1, n, terms, x);
    ds_progress_end(&progress);
    if (c.sampler.clip_x0 > 0) ds_log("sample-state: %.2f%% of predicted x0 values clipped", 100 * clipped);
    char meta[256];
    snprintf(meta, sizeof meta, "sampler=%s\nsteps=%d\nguidance=%g\nseed=%llu", c.sampler.ddpm ? "ddpm" : "ddim",
             c.sampler.steps, c.guidance, (unsigned long long)c.sampler.seed);
    write_states(&c, B, x, out, label, meta);
    char first[DS_PATH_MAX + 32], last[DS_PATH_MAX + 32];
    numbered_path(out, 0, first, sizeof first);
    numbered_path(out, B - 1, last, sizeof last);
    ds_log("sample-state: %d state(s) of '%s' in %.2fs -> %s%s%s", B, label_name, ds_now_seconds() - t0,
           B > 1 ? first : out, B > 1 ? " .. " : "", B > 1 ? last : "");
    ds_free(x); ds_free(labels); ds_free(nulls);
    ds_state_dit_destroy(&c.sd);
    cli_args_free(&a);
    return 0;
}
