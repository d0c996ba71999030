/* `dreamstate interpolate-state`: states between two state files, in state or noise space. */
#include "args.h"
#include "commands.h"
#include "state_model.h"

#include "dreamstate/common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const cli_spec spec = {
    .cmd = "interpolate-state",
    .usage =
        "usage: dreamstate interpolate-state MODEL.ckpt --from A.state --to B.state --out PREFIX\n"
        "                                    [--space state|noise] [--mode linear|slerp] [--points N]\n"
        "                                    [--steps K] [--guidance W] [--format dreamstate|rwkv-state]\n"
        "Writes PREFIX-0 .. PREFIX-<N-1> (default N = 11, lambda = i / (N-1)) between two state files\n"
        "(X-0.safetensors .. for a PREFIX X.safetensors):\n"
        "  --space state  interpolates the modelled WKV states directly;\n"
        "  --space noise  (default) DDIM-inverts both under their own labels (metadata label=), interpolates\n"
        "                 the noise, and decodes under the mixture (1-lambda) eps(a) + lambda eps(b).\n"
        "  --mode slerp (default for noise) or linear.\n"
        "  --format dreamstate (default) or rwkv-state (RWKV-PEFT safetensors, WKV only; the default for a\n"
        "                 PREFIX ending in .safetensors). --from and --to take either format.\n",
    .positional = "MODEL.ckpt",
    .options = {{"--from"}, {"--to"}, {"--out"}, {"--space"}, {"--mode"}, {"--points"}, {"--steps"}, {"--guidance"},
                {"--format"}},
};

static void interpolate(int slerp, int64_t n, const float *a, const float *b, double lambda, float *out) {
    double wa = 1 - lambda, wb = lambda;
    if (slerp) {
        double dot = 0, na = 0, nb = 0;
        for (int64_t j = 0; j < n; j++) {
            dot += (double)a[j] * b[j];
            na += (double)a[j] * a[j];
            nb += (double)b[j] * b[j];
        }
        double omega = acos(fmax(-1.0, fmin(1.0, dot / sqrt(na * nb))));
        if (omega > 1e-6) {
            wa = sin((1 - lambda) * omega) / sin(omega);
            wb = sin(lambda * omega) / sin(omega);
        }
    }
    for (int64_t j = 0; j < n; j++) out[j] = (float)(wa * a[j] + wb * b[j]);
}

int cmd_interpolate_state(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    const char *from = cli_value(&a, "--from"), *to = cli_value(&a, "--to"), *out = cli_value(&a, "--out");
    const char *space = cli_value(&a, "--space"), *mode = cli_value(&a, "--mode");
    if (a.n_positional != 1 || !from || !to || !out)
        ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: needs MODEL.ckpt, --from, --to and --out (see --help)");
    const char *model = a.positional[0];
    int noise_space = !space || strcmp(space, "noise") == 0;
    if (space && !noise_space && strcmp(space, "state") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: --space '%s' is not state or noise", space);
    int slerp = mode ? strcmp(mode, "slerp") == 0 : noise_space;
    if (mode && !slerp && strcmp(mode, "linear") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: --mode '%s' is not linear or slerp", mode);
    state_ctx c;
    open_model(&c, "interpolate-state", model, cli_state_format(&a, out));
    sampler_options(&c, NULL, cli_value(&a, "--steps"), NULL, cli_value(&a, "--guidance"), NULL, NULL, NULL);
    int points = (int)cli_int(&a, "--points", 2, 1000, 11);
    int64_t X = c.sd.x_floats;
    float *xa = ds_alloc(sizeof(float) * X), *xb = ds_alloc(sizeof(float) * X), *x = ds_alloc(sizeof(float) * X);
    int la = read_state(&c, from, xa), lb = read_state(&c, to, xb);
    int32_t lab[4], nul[4];
    if (noise_space) {
        if (la < 0 || lb < 0)
            ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: %s has no label= in its metadata (noise space needs both labels)",
                   la < 0 ? from : to);
        ds_state_cond_term terms[2];
        /* inversion runs under the plain conditional model (guidance 1) */
        ds_state_dit_invert(&c.sd, 1, &c.sampler, label_terms(&c, lab, nul, 1, la, 1.0, 1.0, 0, terms), terms, xa);
        ds_state_dit_invert(&c.sd, 1, &c.sampler, label_terms(&c, lab + 1, nul + 1, 1, lb, 1.0, 1.0, 0, terms), terms,
                            xb);
    }
    for (int i = 0; i < points; i++) {
        double lambda = (double)i / (points - 1);
        interpolate(slerp, X, xa, xb, lambda, x);
        if (noise_space) {
            ds_state_cond_term terms[4];
            int n = label_terms(&c, lab, nul, 1, la, 1 - lambda, c.guidance, 0, terms);
            n = label_terms(&c, lab + 2, nul + 2, 1, lb, lambda, c.guidance, n, terms);
            ds_state_dit_sample(&c.sd, 1, &c.sampler, c.sampler.steps - 1, 0, n, terms, x);
        }
        char path[DS_PATH_MAX + 32], meta[128];
        numbered_path(out, i, path, sizeof path);
        snprintf(meta, sizeof meta, "lambda=%.6f\nspace=%s\nmode=%s", lambda, noise_space ? "noise" : "state",
                 slerp ? "slerp" : "linear");
        write_states(&c, 1, x, path, lambda < 0.5 ? la : lb, meta);
    }
    char first[DS_PATH_MAX + 32], last[DS_PATH_MAX + 32];
    numbered_path(out, 0, first, sizeof first);
    numbered_path(out, points - 1, last, sizeof last);
    ds_log("interpolate-state: %d states -> %s .. %s", points, first, last);
    ds_free(xa); ds_free(xb); ds_free(x);
    ds_state_dit_destroy(&c.sd);
    cli_args_free(&a);
    return 0;
}
