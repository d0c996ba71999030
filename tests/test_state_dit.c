/* The state-diffusion model (include/dreamstate/state_dit.h) against float64 recomputations and the
 * closed forms of the diffusion module:
 *  - normalisation statistics = mean/std per (layer, head) over the records, in float64;
 *  - encode then decode gives back the modelled WKV matrices and zero everywhere else (src/dit/README.md §3.7);
 *  - the condition of a record: its label, or the first/mean-token part of its condition vector;
 *  - a mixture of condition terms {c, w}, {null, 1 - w} equals classifier-free guidance computed from
 *    two separate forwards (ds_cfg_combine);
 *  - with the zero-initialised DiT (eps = 0), DDIM inversion then sampling returns x0 (src/diffusion/README.md §10.4), and SDEdit's noise_to lands on the respaced step nearest the requested one with
 *    x = sqrt(ab) x0 + sqrt(1 - ab) z;
 *  - sampling is a function of the seed;
 *  - v prediction: target and the eps the samplers see, against their closed forms;
 *  - a model file is loaded back bit for bit, and one whose EMA weights hold a NaN is refused. */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/state_dit.h"
#include "dreamstate/state_dit_file.h"
#include "test.h"

enum { L = 3, C = 128, H = 2, N = 64, K = 3, RECORDS = 5 };

static ds_state_shape shape(void) {
    return (ds_state_shape){.n_layer = L, .n_embd = C, .n_head = H, .head_size = N, .cond_dim = 2 * C,
                            .flags = DS_COND_FIRST_TOKEN | DS_COND_MEAN_TOKEN};
}

static ds_dit_dims arch(void) {
    return (ds_dit_dims){.hidden = 32, .depth = 1, .heads = 2, .patch_size = 16, .mlp_ratio = 2};
}

static char *label_names[K] = {"a", "b", "c"};

static void random_records(const ds_state_shape *sh, float *states, float *conds) {
    int64_t F = ds_state_floats(sh);
    for (int r = 0; r < RECORDS; r++) {
        for (int64_t j = 0; j < F; j++) states[r * F + j] = (float)(0.3 * ds_rng_normal(1, r, j) + 0.1 * (j % 7));
        for (int j = 0; j < sh->cond_dim; j++) conds[r * sh->cond_dim + j] = (float)ds_rng_normal(2, r, j);
    }
}

static void test_norm_encode_decode(void) {
    ds_state_shape sh = shape();
    int layers[2] = {0, 2};
    ds_dit_dims a = arch();
    ds_state_dit s;
    ds_state_dit_create(&s, &sh, layers, 2, DS_STATE_COND_LABEL, K, label_names, &a, DS_SCHEDULE_LINEAR);
    CHECK(s.channels == 2 * H && s.dit.d.in_channels == 2 * H && s.dit.d.num_classes == K, "geometry");
    int64_t F = ds_state_floats(&sh);
    float *states = ds_alloc(sizeof(float) * RECORDS * F), *conds = ds_alloc(sizeof(float) * RECORDS * sh.cond_dim);
    random_records(&sh, states, conds);
    double *sums = ds_alloc(sizeof(double) * 2 * s.channels);
    for (int r = 0; r < RECORDS; r++) ds_state_dit_norm_accumulate(&s, states + r * F, sums);
    ds_state_dit_norm_finish(&s, sums, RECORDS);
    double worst = 0;
    for (int c = 0; c < s.channels; c++) {
        const int64_t lf = ds_state_layer_floats(&sh), off = layers[c / H] * lf + C + (int64_t)(c % H) * N * N;
        double sum = 0, sq = 0, n = (double)RECORDS * N * N;
        for (int r = 0; r < RECORDS; r++)
            for (int j = 0; j < N * N; j++) sum += states[r * F + off + j];
        double mean = sum / n;
        for (int r = 0; r < RECORDS; r++)
            for (int j = 0; j < N * N; j++) sq += pow(states[r * F + off + j] - mean, 2);
        double sd = sqrt(sq / n);
        worst = fmax(worst, fmax(fabs(s.mean[c] - mean) / sd, fabs(s.std[c] - sd) / sd));
    }
    CHECK(worst < 1e-6, "per-channel mean/std match a two-pass float64 recomputation (worst %.2e)", worst);

    float *x = ds_alloc(sizeof(float) * s.x_floats), *back = ds_alloc(sizeof(float) * F);
    ds_state_dit_encode(&s, states, x);
    ds_state_dit_decode(&s, x, back);
    double err = 0;
    int other_zero = 1;
    for (int l = 0; l < L; l++) {
        int modelled = l == 0 || l == 2;
        const int64_t lf = ds_state_layer_floats(&sh);
        for (int64_t j = 0; j < lf; j++) {
            int in_wkv = j >= C && j < C + H * N * N;
            float got = back[l * lf + j], want = states[l * lf + j];
            if (modelled && in_wkv) err = fmax(err, fabs(got - want));
            else if (got != 0.0f) other_zero = 0;
        }
    }
    CHECK(err < 1e-5, "decode(encode(S)) gives back the modelled WKV matrices (max abs err %.2e)", err);
    CHECK(other_zero, "decode leaves token-shift vectors and unmodelled layers zero");

    /* per element: over the records every entry of x has mean 0 and variance 1 */
    ds_state_dit_set_normalisation(&s, 1);
    CHECK(s.n_stats == s.x_floats, "per-element statistics: one per entry");
    double *esums = ds_alloc(sizeof(double) * 2 * s.n_stats);
    for (int r = 0; r < RECORDS; r++) ds_state_dit_norm_accumulate(&s, states + r * F, esums);
    ds_state_dit_norm_finish(&s, esums, RECORDS);
    float *xs = ds_alloc(sizeof(float) * RECORDS * s.x_floats);
    for (int r = 0; r < RECORDS; r++) ds_state_dit_encode(&s, states + r * F, xs + r * s.x_floats);
    double worst_mean = 0, worst_var = 0;
    for (int64_t j = 0; j < s.x_floats; j++) {
        double m = 0, v = 0;
        for (int r = 0; r < RECORDS; r++) m += xs[r * s.x_floats + j] / RECORDS;
        for (int r = 0; r < RECORDS; r++) v += pow(xs[r * s.x_floats + j] - m, 2) / RECORDS;
        worst_mean = fmax(worst_mean, fabs(m));
        worst_var = fmax(worst_var, fabs(v - 1));
    }
    CHECK(worst_mean < 1e-4 && worst_var < 1e-3, "per-element x: mean 0 (worst %.2e), variance 1 (worst %.2e)",
          worst_mean, worst_var);
    ds_state_dit_decode(&s, xs, back);
    CHECK(fabs(back[C] - states[C]) < 1e-4 * (1 + fabs(states[C])), "per-element decode inverts encode");
    ds_free(esums); ds_free(xs);

    ds_state_record rec = {.label = 2, .context = 0, .cond = conds, .state = states};
    int32_t label = -1;
    ds_state_dit_record_cond(&s, &rec, &label, NULL);
    CHECK(label == 2, "label condition of a record");
    ds_state_dit_destroy(&s);
    ds_state_dit_create(&s, &sh, layers, 2, DS_STATE_COND_MEAN_TOKEN, K, label_names, &a, DS_SCHEDULE_LINEAR);
    float vec[C];
    ds_state_dit_record_cond(&s, &rec, &label, vec);
    CHECK(s.dit.d.cond_dim == C && memcmp(vec, conds + C, sizeof vec) == 0,
          "mean-token condition is the second C floats of a first+mean record");
    ds_state_dit_destroy(&s);
    ds_free(states); ds_free(conds); ds_free(sums); ds_free(x); ds_free(back);
}

/* Non-zero weights everywhere, so that eps depends on x, t and the condition. */
static void perturb(ds_state_dit *s) {
    for (int64_t i = 0; i < s->dit.n_params; i++) s->dit.params[i] += (float)(0.05 * ds_rng_normal(9, 0, (uint64_t)i));
}

static void test_guidance_mixture(void) {
    ds_state_shape sh = shape();
    int layer = 1;
    ds_dit_dims a = arch();
    ds_state_dit s;
    ds_state_dit_create(&s, &sh, &layer, 1, DS_STATE_COND_LABEL, K, label_names, &a, DS_SCHEDULE_LINEAR);
    ds_dit_init_weights(&s.dit, 5);
    perturb(&s);
    enum { B = 2 };
    int64_t n = B * s.x_floats;
    float *x = ds_alloc(sizeof(float) * n), *mix = ds_alloc(sizeof(float) * n), *ec = ds_alloc(sizeof(float) * n),
          *eu = ds_alloc(sizeof(float) * n), *want = ds_alloc(sizeof(float) * n);
    for (int64_t j = 0; j < n; j++) x[j] = (float)ds_rng_normal(3, 0, (uint64_t)j);
    int32_t labels[B] = {0, 2}, nulls[B] = {K, K};
    const double w = 2.5;
    ds_state_cond_term terms[2] = {{.labels = labels, .weight = w}, {.labels = nulls, .weight = 1 - w}};
    ds_state_dit_eps(&s, B, 400, x, 2, terms, mix);
    ds_state_cond_term c = {.labels = labels, .weight = 1}, u = {.labels = nulls, .weight = 1};
    ds_state_dit_eps(&s, B, 400, x, 1, &c, ec);
    ds_state_dit_eps(&s, B, 400, x, 1, &u, eu);
    ds_cfg_combine(n, (float)w, ec, eu, want);
    double err = test_rel_err(mix, want, n), diff = test_rel_err(ec, eu, n);
    CHECK(err < 1e-5, "mixture {c, w}, {null, 1-w} = CFG from two forwards (rel err %.2e)", err);
    CHECK(diff > 1e-3, "the condition changes eps (conditional vs null differ by %.2e)", diff);
    ds_free(x); ds_free(mix); ds_free(ec); ds_free(eu); ds_free(want);
    ds_state_dit_destroy(&s);
}

static void test_samplers(void) {
    ds_state_shape sh = shape();
    int layer = 2;
    ds_dit_dims a = arch();
    ds_state_dit s;
    ds_state_dit_create(&s, &sh, &layer, 1, DS_STATE_COND_LABEL, K, label_names, &a, DS_SCHEDULE_LINEAR);
    ds_dit_init_weights(&s.dit, 5);  /* zero final layer: eps = 0 exactly */
    int64_t n = s.x_floats;
    float *x0 = ds_alloc(sizeof(float) * n), *x = ds_alloc(sizeof(float) * n), *y = ds_alloc(sizeof(float) * n);
    for (int64_t j = 0; j < n; j++) x0[j] = (float)ds_rng_normal(4, 0, (uint64_t)j);
    int32_t label = 1;
    ds_state_cond_term term = {.labels = &label, .weight = 1};
    ds_state_sampler opt = {.steps = 50, .seed = 7};
    memcpy(x, x0, sizeof(float) * n);
    ds_state_dit_invert(&s, 1, &opt, 1, &term, x);
    ds_state_dit_sample(&s, 1, &opt, opt.steps - 1, 0, 1, &term, x);
    double err = test_rel_err(x, x0, n);
    CHECK(err < 1e-4, "zero-eps DDIM-50 inversion then sampling returns x0 (rel err %.2e)", err);

    /* SDEdit start: nearest respaced step to base step 300 among round(i * 999 / 49) */
    memcpy(x, x0, sizeof(float) * n);
    int idx = ds_state_dit_noise_to(&s, 1, &opt, 300, x);
    int best = 0;
    for (int i = 0; i < 50; i++)
        if (abs((int)lrint(i * 999.0 / 49) - 300) < abs((int)lrint(best * 999.0 / 49) - 300)) best = i;
    CHECK(idx == best, "noise_to picks respaced index %d (want %d)", idx, best);
    double ab = ds_alpha_bar(&s.process, (int)lrint(best * 999.0 / 49));
    ds_diffusion proc;
    ds_diffusion_respace(&proc, &s.process, 50);
    double ab_r = ds_alpha_bar(&proc, idx);
    CHECK(fabs(ab - ab_r) < 1e-12, "respaced alpha_bar at the index is the base step's (%.6f)", ab_r);
    ds_diffusion_destroy(&proc);
    double resid = 0, scale = 0;
    for (int64_t j = 0; j < n; j++) {
        double zj = (x[j] - sqrt(ab) * x0[j]) / sqrt(1 - ab);  /* must be a standard normal draw */
        resid += zj * zj;
        scale += 1;
    }
    CHECK(fabs(resid / scale - 1) < 0.05, "noise_to adds unit-variance noise at that step (var %.3f)", resid / scale);

    /* seeds */
    ds_state_sampler o1 = {.steps = 10, .seed = 1, .ddpm = 1, .temperature = 1}, o2 = o1;
    o2.seed = 2;
    perturb(&s);
    ds_state_dit_sample(&s, 1, &o1, 9, 1, 1, &term, x);
    ds_state_dit_sample(&s, 1, &o1, 9, 1, 1, &term, y);
    CHECK(memcmp(x, y, sizeof(float) * n) == 0, "DDPM sampling: the same seed gives the same state");
    ds_state_dit_sample(&s, 1, &o2, 9, 1, 1, &term, y);
    CHECK(test_rel_err(x, y, n) > 0.1, "another seed gives another state");
    ds_free(x0); ds_free(x); ds_free(y);
    ds_state_dit_destroy(&s);
}

/* v prediction: the target is v = a eps - s x0, and the samplers' eps is s x_t + a v_hat (a = sqrt(ab),
 * s = sqrt(1 - ab)), so the true v gives back the true eps exactly. */
static void test_v_prediction(void) {
    ds_state_shape sh = shape();
    int layer = 0;
    ds_dit_dims a = arch();
    ds_state_dit s;
    ds_state_dit_create(&s, &sh, &layer, 1, DS_STATE_COND_LABEL, K, label_names, &a, DS_SCHEDULE_LINEAR);
    ds_dit_init_weights(&s.dit, 5);
    perturb(&s);
    s.v_prediction = 1;
    int64_t n = s.x_floats;
    float *x0 = ds_alloc(sizeof(float) * n), *eps = ds_alloc(sizeof(float) * n), *v = ds_alloc(sizeof(float) * n),
          *xt = ds_alloc(sizeof(float) * n), *raw = ds_alloc(sizeof(float) * n), *got = ds_alloc(sizeof(float) * n);
    for (int64_t j = 0; j < n; j++) {
        x0[j] = (float)ds_rng_normal(6, 0, (uint64_t)j);
        eps[j] = (float)ds_rng_normal(6, 1, (uint64_t)j);
    }
    int32_t t = 700, label = 1;
    double ab = ds_alpha_bar(&s.process, t), ca = sqrt(ab), cs = sqrt(1 - ab);
    ds_q_sample(&s.process, 1, n, &t, x0, eps, xt);
    memcpy(v, eps, sizeof(float) * n);
    ds_state_dit_target(&s, 1, &t, x0, v);
    double err_v = 0, err_eps = 0;
    for (int64_t j = 0; j < n; j++) {
        err_v = fmax(err_v, fabs(v[j] - (ca * eps[j] - cs * x0[j])));
        err_eps = fmax(err_eps, fabs(cs * xt[j] + ca * v[j] - eps[j]));
    }
    CHECK(err_v < 1e-5 && err_eps < 1e-5, "v target (err %.1e) and eps = s x_t + a v (err %.1e)", err_v, err_eps);
    ds_dit_cond cond = {.labels = &label};
    ds_dit_forward(&s.dit, 1, xt, &t, &cond, NULL, raw);
    ds_state_cond_term term = {.labels = &label, .weight = 1};
    ds_state_dit_eps(&s, 1, t, xt, 1, &term, got);
    double err = 0;
    for (int64_t j = 0; j < n; j++) err = fmax(err, fabs(got[j] - (cs * xt[j] + ca * raw[j])));
    CHECK(err < 1e-5, "a v-model's eps for the samplers is s x_t + a v_hat (err %.1e)", err);
    CHECK(fabs(ds_state_dit_eps_mse_of_loss(&s, t, 2.0) - 2.0 * ab) < 1e-15, "eps-MSE of a v loss = ab x loss");
    ds_free(x0); ds_free(eps); ds_free(v); ds_free(xt); ds_free(raw); ds_free(got);
    ds_state_dit_destroy(&s);
}

/* Writes a state-DiT model file as the training loop does; poison: a NaN in the first EMA tensor. */
static void write_model_file(ds_state_dit *s, const char *path, int poison) {
    int cap = 2 * s->dit.n_tensors + 4;
    ds_tensor *t = ds_alloc(sizeof(ds_tensor) * cap);
    char (*names)[80] = ds_alloc(sizeof(*names) * cap), sig[512], meta[4096], err[DS_ERR_LEN];
    int n = ds_state_dit_ckpt_tensors(s, t, names);
    float *moments = ds_alloc(sizeof(float) * 2 * s->dit.n_params);
    t[n++] = (ds_tensor){.name = "optim.adamw.m", .ndim = 1, .shape = {s->dit.n_params}, .data = moments};
    t[n++] = (ds_tensor){.name = "optim.adamw.v", .ndim = 1, .shape = {s->dit.n_params}, .data = moments + s->dit.n_params};
    int ema = 0;
    while (strncmp(t[ema].name, "ema.", 4) != 0) ema++;
    float kept = t[ema].data[0];
    if (poison) t[ema].data[0] = NAN;
    ds_state_dit_signature(s, sig, sizeof sig);
    int k = snprintf(meta, sizeof meta, "step=3\nmodel=%s\nseed=1\ntask=state_diffusion\n", sig);
    ds_state_dit_ckpt_meta(s, "rwkv7 L=3 C=128 V=256 Dw=32 Da=32 Dv=32 Dg=32", "none", "byte", meta + k, sizeof meta - k);
    CHECK(ds_ckpt_save(path, meta, n, t, err) == 0, "model file written: %s", err);
    t[ema].data[0] = kept;
    ds_free(moments); ds_free(t); ds_free(names);
}

static const char *model_file_path;
static void load_model_file(void *arg) {
    ds_state_dit s;
    ds_state_dit_load(&s, model_file_path, NULL);
}

static void test_model_file_nonfinite(void) {
    ds_state_shape sh = shape();
    int layer = 1;
    ds_dit_dims a = arch();
    ds_state_dit s, back;
    ds_state_dit_create(&s, &sh, &layer, 1, DS_STATE_COND_LABEL, K, label_names, &a, DS_SCHEDULE_LINEAR);
    ds_dit_init_weights(&s.dit, 5);
    perturb(&s);
    char dir[] = "/tmp/test_state_dit.XXXXXX", good[64], poisoned[64];
    CHECK(mkdtemp(dir) != NULL, "temporary directory");
    snprintf(good, sizeof good, "%s/good.ckpt", dir);
    snprintf(poisoned, sizeof poisoned, "%s/nan.ckpt", dir);
    write_model_file(&s, good, 0);
    write_model_file(&s, poisoned, 1);
    ds_state_dit_load(&back, good, NULL);  /* sampling weights = the EMA ones, which equal dit.* here */
    CHECK(back.dit.n_params == s.dit.n_params, "loaded model has %lld parameters, want %lld",
          (long long)back.dit.n_params, (long long)s.dit.n_params);
    ds_state_dit_destroy(&back);
    model_file_path = poisoned;
    test_expect_bad_input(load_model_file, NULL, "holds NaN or Inf values", "a model file with a NaN EMA weight");
    unlink(good); unlink(poisoned); rmdir(dir);
    ds_state_dit_destroy(&s);
}

int main(void) {
    ds_blas_init(1);
    ds_kernels_init();
    test_norm_encode_decode();
    test_guidance_mixture();
    test_samplers();
    test_v_prediction();
    test_model_file_nonfinite();
    return test_summary("test_state_dit");
}
