/* Using a trained state DiT (dreamstate.md 2.5, 2.6): sample-state, interpolate-state, edit-state.
 * States travel as state files (states.h) of the RWKV-7 the model was trained on; only the modelled
 * layers' WKV matrices come from the DiT, the rest of a generated state is zero (2.7). */
#include "dreamstate/args.h"
#include "dreamstate/common.h"
#include "dreamstate/state_diffusion.h"
#include "dreamstate/state_dit_file.h"
#include "dreamstate/states.h"
#include "dreamstate/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What every command shares: the model, the RWKV-7 dims of its states, and sampler options. */
typedef struct {
    const char *cmd;
    ds_state_dit sd;
    ds_rwkv7_dims dims;
    ds_state_sampler sampler;
    double guidance;
} state_ctx;

static void open_model(state_ctx *c, const char *cmd, const char *path) {
    c->cmd = cmd;
    char *meta;
    ds_state_dit_load(&c->sd, path, &meta);
    ds_state_dit_rwkv_dims(path, meta, &c->dims);
    free(meta);
}

/* --sampler, --steps, --eta, --guidance, --seed, --clip, --temperature (NULL = default). */
static void sampler_options(state_ctx *c, const char *sampler, const char *steps, const char *eta, const char *guidance,
                            const char *seed, const char *clip, const char *temperature) {
    c->sampler = (ds_state_sampler){.steps = 50, .seed = 1234, .temperature = 1.0};
    if (clip) c->sampler.clip_x0 = ds_arg_number(c->cmd, "--clip", clip, 0, 1e6);
    if (temperature) c->sampler.temperature = ds_arg_number(c->cmd, "--temperature", temperature, 0, 1e6);
    if (sampler && strcmp(sampler, "ddpm") == 0) c->sampler.ddpm = 1;
    else if (sampler && strcmp(sampler, "ddim") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "%s: --sampler '%s' is not ddim or ddpm", c->cmd, sampler);
    if (c->sampler.ddpm) c->sampler.steps = 250;
    if (steps) c->sampler.steps = (int)ds_arg_int(c->cmd, "--steps", steps, 2, DS_DIFFUSION_STEPS);
    if (eta) c->sampler.eta = ds_arg_number(c->cmd, "--eta", eta, 0, 1);
    c->guidance = guidance ? ds_arg_number(c->cmd, "--guidance", guidance, -100, 100) : 1.0;
    if (seed) c->sampler.seed = ds_arg_seed(c->cmd, "--seed", seed);
}

/* Condition terms of B samples under label `label` with guidance w (plus the null term when w != 1),
 * each scaled by `weight`; appended to terms, returns the new count. */
static int label_terms(const state_ctx *c, int32_t *labels, int32_t *nulls, int B, int label, double weight,
                       double guidance, int n,
                       ds_state_cond_term *terms) {
    if (c->sd.cond_kind != DS_STATE_COND_LABEL)
        ds_die(DS_EXIT_BAD_INPUT, "%s: the model is conditioned on %s vectors, not labels", c->cmd,
               ds_state_cond_kind_name(c->sd.cond_kind));
    for (int b = 0; b < B; b++) {
        labels[b] = label;
        nulls[b] = c->sd.n_labels;
    }
    terms[n++] = (ds_state_cond_term){.labels = labels, .weight = weight * guidance};
    if (guidance != 1.0) terms[n++] = (ds_state_cond_term){.labels = nulls, .weight = weight * (1.0 - guidance)};
    return n;
}

/* Decodes x [B, x_floats] and writes each sample as a state file (path, or path-<b> for B > 1). */
static void write_states(const state_ctx *c, int B, const float *x, const char *path, int label, const char *meta) {
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &c->dims, 1);
    float *rec = ds_alloc(sizeof(float) * ds_state_floats(&c->sd.shape));
    for (int b = 0; b < B; b++) {
        ds_state_dit_decode(&c->sd, x + b * c->sd.x_floats, rec);
        ds_state_unpack(&c->sd.shape, rec, &st, 0);
        char file[DS_PATH_MAX + 32], text[512];
        if (B > 1) snprintf(file, sizeof file, "%s-%d", path, b);
        else snprintf(file, sizeof file, "%s", path);
        if (label >= 0) snprintf(text, sizeof text, "label=%s\n%s\n", c->sd.labels[label], meta);
        else snprintf(text, sizeof text, "%s\n", meta);
        ds_state_file_save(file, &c->dims, &st, 0, label, text);
    }
    ds_free(rec);
    ds_rwkv7_state_destroy(&st);
}

/* A state file as the model's normalised x, and its label id from the metadata (-1 if none). */
static int read_state(const state_ctx *c, const char *path, float *x) {
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &c->dims, 1);
    char *meta = NULL, name[DS_LABEL_MAX];
    ds_state_file_load(path, &c->dims, &st, &meta);
    float *rec = ds_alloc(sizeof(float) * ds_state_floats(&c->sd.shape));
    ds_state_pack(&c->sd.shape, &st, 0, rec);
    ds_state_dit_encode(&c->sd, rec, x);
    int label = -1;
    if (ds_ckpt_meta_value(meta, "label", name, sizeof name))
        label = ds_label_lookup(path, name, c->sd.n_labels, c->sd.labels);
    ds_free(rec);
    free(meta);
    ds_rwkv7_state_destroy(&st);
    return label;
}

static int label_arg(const state_ctx *c, const char *flag, const char *name) {
    char where[96];
    snprintf(where, sizeof where, "%s: %s", c->cmd, flag);
    return ds_label_lookup(where, name, c->sd.n_labels, c->sd.labels);
}

/* ---- sample-state ---- */

static const char *sample_usage =
    "usage: dreamstate sample-state MODEL.ckpt --label NAME --out FILE [--n N] [--sampler ddim|ddpm]\n"
    "                               [--steps K] [--eta E] [--guidance W] [--seed S] [--clip C] [--temperature T]\n"
    "Draws N states from the state DiT (EMA weights) under a label and writes them as state files for\n"
    "`generate --state` (FILE, or FILE-0 .. FILE-<N-1> when N > 1). Defaults: DDIM, 50 steps, eta 0,\n"
    "guidance 1 (off; DiT's sampler uses 4, its best FID 1.5), seed 1234; DDPM: 250 steps. --clip C\n"
    "clips the predicted x0 to [-C, C] in normalised units (a guard for an under-trained DiT; default off);\n"
    "--temperature T scales the initial noise (default 1; below 1 pulls samples towards the class mean).\n";

int ds_sample_state_main(int argc, char **argv) {
    static const char *const flags[] = {"--label", "--out", "--n", "--sampler", "--steps", "--eta", "--guidance", "--seed",
                                        "--clip", "--temperature"};
    const char *v[10] = {0}, *pos[1];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(sample_usage, stdout); return 0; }
    if (ds_args_scan("sample-state", argc, argv, 10, flags, v, 1, pos, NULL, NULL) != 1 || !v[0] || !v[1])
        ds_die(DS_EXIT_BAD_INPUT, "sample-state: needs MODEL.ckpt, --label and --out (see --help)");
    state_ctx c;
    open_model(&c, "sample-state", pos[0]);
    sampler_options(&c, v[3], v[4], v[5], v[6], v[7], v[8], v[9]);
    int label = label_arg(&c, "--label", v[0]);
    int B = v[2] ? (int)ds_arg_int(c.cmd, "--n", v[2], 1, 4096) : 1;
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
    write_states(&c, B, x, v[1], label, meta);
    ds_log("sample-state: %d state(s) of '%s' in %.2fs -> %s%s", B, v[0], ds_now_seconds() - t0, v[1], B > 1 ? "-*" : "");
    ds_free(x); ds_free(labels); ds_free(nulls);
    ds_state_dit_destroy(&c.sd);
    return 0;
}

/* ---- interpolate-state ---- */

static const char *interpolate_usage =
    "usage: dreamstate interpolate-state MODEL.ckpt --from A.state --to B.state --out PREFIX\n"
    "                                    [--space state|noise] [--mode linear|slerp] [--points N]\n"
    "                                    [--steps K] [--guidance W]\n"
    "Writes PREFIX-0 .. PREFIX-<N-1> (default N = 11, lambda = i / (N-1)) between two state files:\n"
    "  --space state  interpolates the modelled WKV states directly;\n"
    "  --space noise  (default) DDIM-inverts both under their own labels (metadata label=), interpolates\n"
    "                 the noise, and decodes under the mixture (1-lambda) eps(a) + lambda eps(b).\n"
    "  --mode slerp (default for noise) or linear.\n";

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

int ds_interpolate_state_main(int argc, char **argv) {
    static const char *const flags[] = {"--from", "--to", "--out", "--space", "--mode", "--points", "--steps", "--guidance"};
    const char *v[8] = {0}, *pos[1];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(interpolate_usage, stdout); return 0; }
    if (ds_args_scan("interpolate-state", argc, argv, 8, flags, v, 1, pos, NULL, NULL) != 1 || !v[0] || !v[1] || !v[2])
        ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: needs MODEL.ckpt, --from, --to and --out (see --help)");
    int noise_space = !v[3] || strcmp(v[3], "noise") == 0;
    if (v[3] && !noise_space && strcmp(v[3], "state") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: --space '%s' is not state or noise", v[3]);
    int slerp = v[4] ? strcmp(v[4], "slerp") == 0 : noise_space;
    if (v[4] && !slerp && strcmp(v[4], "linear") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: --mode '%s' is not linear or slerp", v[4]);
    state_ctx c;
    open_model(&c, "interpolate-state", pos[0]);
    sampler_options(&c, NULL, v[6], NULL, v[7], NULL, NULL, NULL);
    int points = v[5] ? (int)ds_arg_int(c.cmd, "--points", v[5], 2, 1000) : 11;
    int64_t X = c.sd.x_floats;
    float *xa = ds_alloc(sizeof(float) * X), *xb = ds_alloc(sizeof(float) * X), *x = ds_alloc(sizeof(float) * X);
    int la = read_state(&c, v[0], xa), lb = read_state(&c, v[1], xb);
    int32_t lab[4], nul[4];
    if (noise_space) {
        if (la < 0 || lb < 0)
            ds_die(DS_EXIT_BAD_INPUT, "interpolate-state: %s has no label= in its metadata (noise space needs both labels)",
                   la < 0 ? v[0] : v[1]);
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
        snprintf(path, sizeof path, "%s-%d", v[2], i);
        snprintf(meta, sizeof meta, "lambda=%.6f\nspace=%s\nmode=%s", lambda, noise_space ? "noise" : "state",
                 slerp ? "slerp" : "linear");
        write_states(&c, 1, x, path, lambda < 0.5 ? la : lb, meta);
    }
    ds_log("interpolate-state: %d states -> %s-0 .. %s-%d", points, v[2], v[2], points - 1);
    ds_free(xa); ds_free(xb); ds_free(x);
    ds_state_dit_destroy(&c.sd);
    return 0;
}

/* ---- edit-state ---- */

static const char *edit_usage =
    "usage: dreamstate edit-state MODEL.ckpt --state A.state --to-label NAME --out FILE\n"
    "                             [--method invert|sdedit] [--strength T] [--steps K] [--guidance W] [--seed S]\n"
    "Moves a state to another condition (2.6): invert (default) DDIM-inverts it under its own label\n"
    "(metadata label=) and decodes under NAME; sdedit noises it to base step T (default 500) and denoises\n"
    "under NAME. With NAME = its own label, invert reproduces the state (the round trip of 6.1 A2).\n";

int ds_edit_state_main(int argc, char **argv) {
    static const char *const flags[] = {"--state", "--to-label", "--out", "--method", "--strength", "--steps",
                                        "--guidance", "--seed"};
    const char *v[8] = {0}, *pos[1];
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { fputs(edit_usage, stdout); return 0; }
    if (ds_args_scan("edit-state", argc, argv, 8, flags, v, 1, pos, NULL, NULL) != 1 || !v[0] || !v[1] || !v[2])
        ds_die(DS_EXIT_BAD_INPUT, "edit-state: needs MODEL.ckpt, --state, --to-label and --out (see --help)");
    int sdedit = v[3] && strcmp(v[3], "sdedit") == 0;
    if (v[3] && !sdedit && strcmp(v[3], "invert") != 0)
        ds_die(DS_EXIT_BAD_INPUT, "edit-state: --method '%s' is not invert or sdedit", v[3]);
    state_ctx c;
    open_model(&c, "edit-state", pos[0]);
    sampler_options(&c, NULL, v[5], NULL, v[6], v[7], NULL, NULL);
    int target = label_arg(&c, "--to-label", v[1]);
    float *x = ds_alloc(sizeof(float) * c.sd.x_floats);
    int source = read_state(&c, v[0], x);
    int32_t lab[2], nul[2];
    ds_state_cond_term terms[2];
    int from = c.sampler.steps - 1;
    if (sdedit) {
        int strength = v[4] ? (int)ds_arg_int(c.cmd, "--strength", v[4], 0, DS_DIFFUSION_STEPS - 1) : 500;
        from = ds_state_dit_noise_to(&c.sd, 1, &c.sampler, strength, x);
    } else {
        if (source < 0) ds_die(DS_EXIT_BAD_INPUT, "edit-state: %s has no label= in its metadata (invert needs it)", v[0]);
        ds_state_dit_invert(&c.sd, 1, &c.sampler, label_terms(&c, lab, nul, 1, source, 1.0, 1.0, 0, terms), terms, x);
    }
    ds_state_dit_sample(&c.sd, 1, &c.sampler, from, 0,
                        label_terms(&c, lab + 1, nul + 1, 1, target, 1.0, c.guidance, 0, terms),
                        terms, x);
    char meta[256];
    snprintf(meta, sizeof meta, "edited_from=%s\nmethod=%s", source >= 0 ? c.sd.labels[source] : "?",
             sdedit ? "sdedit" : "invert");
    write_states(&c, 1, x, v[2], target, meta);
    ds_log("edit-state: %s (%s) -> %s (%s, %s)", v[0], source >= 0 ? c.sd.labels[source] : "?", v[2], v[1],
           sdedit ? "sdedit" : "invert");
    ds_free(x);
    ds_state_dit_destroy(&c.sd);
    return 0;
}
