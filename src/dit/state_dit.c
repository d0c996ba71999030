/* State-diffusion model of DREAMSTATE part A: normalisation, state <-> DiT image, EMA, and the
 * samplers with condition mixtures (classifier-free guidance, interpolation).
 *
 * Shapes: B samples; an image [channels, N, N] with channels = chosen layers x H heads (channel c:
 * layer slot c / H, head c % H), N = 64 the head size (row = value index, column = key index);
 * x_floats = channels N N, a batch [B, x_floats]; n_stats = channels (per-channel statistics) or
 * x_floats (per element). */
#include "dreamstate/state_dit.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { STATE_SIZE = 64 };
/* rng stream of the initial noise of a sample; the samplers use streams 0..999 for their steps */
#define RNG_STREAM_INIT_NOISE 0x494e4954ull /* "INIT" */

ds_state_cond_kind ds_state_cond_kind_parse(const char *name) {
    if (strcmp(name, "first_token") == 0) return DS_STATE_COND_FIRST_TOKEN;
    if (strcmp(name, "mean_token") == 0) return DS_STATE_COND_MEAN_TOKEN;
    if (strcmp(name, "label") == 0) return DS_STATE_COND_LABEL;
    ds_die(DS_EXIT_BAD_INPUT, "unknown state condition '%s' (label, first_token, mean_token)", name);
}

const char *ds_state_cond_kind_name(ds_state_cond_kind kind) {
    return kind == DS_STATE_COND_FIRST_TOKEN ? "first_token" : kind == DS_STATE_COND_MEAN_TOKEN ? "mean_token" : "label";
}

ds_dit_dims ds_state_dit_dims(const ds_state_shape *shape, const int *layers, int n_layers, ds_state_cond_kind kind,
                              int n_labels, const ds_dit_dims *arch) {
    if (shape->head_size != STATE_SIZE) ds_die(DS_EXIT_BAD_INPUT, "state DiT: head size %d, need 64", shape->head_size);
    if (n_layers < 1 || n_layers > DS_STATE_DIT_MAX_LAYERS)
        ds_die(DS_EXIT_BAD_INPUT, "state DiT: %d layers chosen (1..%d)", n_layers, DS_STATE_DIT_MAX_LAYERS);
    for (int i = 0; i < n_layers; i++)
        if (layers[i] < 0 || layers[i] >= shape->n_layer)
            ds_die(DS_EXIT_BAD_INPUT, "state DiT: layer %d outside the state's %d layers", layers[i], shape->n_layer);
    if (kind != DS_STATE_COND_LABEL) {
        uint32_t bit = kind == DS_STATE_COND_FIRST_TOKEN ? DS_COND_FIRST_TOKEN : DS_COND_MEAN_TOKEN;
        if (!(shape->flags & bit))
            ds_die(DS_EXIT_BAD_INPUT, "state DiT: condition %s is not stored in the state dataset (flags %u)",
                   ds_state_cond_kind_name(kind), shape->flags);
    } else if (n_labels < 1) {
        ds_die(DS_EXIT_BAD_INPUT, "state DiT: a label condition needs at least one label");
    }
    ds_dit_dims d = *arch;
    d.in_channels = n_layers * shape->n_head;
    d.input_size = STATE_SIZE;
    d.num_classes = kind == DS_STATE_COND_LABEL ? n_labels : 0;
    d.cond_dim = kind == DS_STATE_COND_LABEL ? 0 : shape->n_embd;
    return d;
}

void ds_state_dit_create(ds_state_dit *s, const ds_state_shape *shape, const int *layers, int n_layers,
                         ds_state_cond_kind kind, int n_labels, char *const *labels, const ds_dit_dims *arch,
                         ds_schedule schedule) {
    memset(s, 0, sizeof *s);
    ds_dit_dims d = ds_state_dit_dims(shape, layers, n_layers, kind, n_labels, arch);
    s->shape = *shape;
    s->n_layers = n_layers;
    memcpy(s->layers, layers, sizeof(int) * n_layers);
    s->channels = d.in_channels;
    s->x_floats = (int64_t)s->channels * STATE_SIZE * STATE_SIZE;
    s->cond_kind = kind;
    /* the record's condition holds the parts of shape->flags in bit order, C floats each */
    if (kind == DS_STATE_COND_MEAN_TOKEN && (shape->flags & DS_COND_FIRST_TOKEN)) s->cond_offset = shape->n_embd;
    s->n_labels = n_labels;
    s->labels = ds_alloc(sizeof(char *) * (n_labels > 0 ? n_labels : 1));
    for (int i = 0; i < n_labels; i++) {
        s->labels[i] = malloc(strlen(labels[i]) + 1);
        strcpy(s->labels[i], labels[i]);
    }
    s->schedule = schedule;
    ds_diffusion_create(&s->process, schedule, DS_DIFFUSION_STEPS);
    ds_dit_create(&s->dit, &d);
    s->ema = ds_alloc(sizeof(float) * s->dit.n_params);
    ds_state_dit_set_normalisation(s, 0);
}

void ds_state_dit_destroy(ds_state_dit *s) {
    for (int i = 0; i < s->n_labels; i++) free(s->labels[i]);
    ds_free(s->labels);
    ds_diffusion_destroy(&s->process);
    ds_free(s->mean);
    ds_free(s->std);
    ds_free(s->ema);
    ds_dit_destroy(&s->dit);
    memset(s, 0, sizeof *s);
}

/* The WKV matrix of channel c inside a record state. */
static const float *channel_of(const ds_state_dit *s, const float *state, int c) {
    const ds_state_shape *sh = &s->shape;
    return ds_state_wkv(sh, state, s->layers[c / sh->n_head]) + (int64_t)(c % sh->n_head) * STATE_SIZE * STATE_SIZE;
}

void ds_state_dit_set_normalisation(ds_state_dit *s, int per_element) {
    s->per_element = per_element;
    s->n_stats = per_element ? s->x_floats : s->channels;
    ds_free(s->mean);
    ds_free(s->std);
    s->mean = ds_alloc(sizeof(float) * s->n_stats);
    s->std = ds_alloc(sizeof(float) * s->n_stats);
    for (int64_t i = 0; i < s->n_stats; i++) s->std[i] = 1.0f;
}

/* Statistic index of element j of channel c. */
static int64_t stat_of(const ds_state_dit *s, int c, int j) {
    return s->per_element ? (int64_t)c * STATE_SIZE * STATE_SIZE + j : c;
}

void ds_state_dit_norm_accumulate(const ds_state_dit *s, const float *state, double *sums) {
    for (int c = 0; c < s->channels; c++) {
        const float *w = channel_of(s, state, c);
        for (int j = 0; j < STATE_SIZE * STATE_SIZE; j++) {
            int64_t i = stat_of(s, c, j);
            sums[2 * i] += w[j];
            sums[2 * i + 1] += (double)w[j] * w[j];
        }
    }
}

void ds_state_dit_norm_finish(ds_state_dit *s, const double *sums, int64_t n_records) {
    double n = (double)n_records * (s->per_element ? 1 : STATE_SIZE * STATE_SIZE);
    for (int64_t i = 0; i < s->n_stats; i++) {
        double mean = sums[2 * i] / n, var = sums[2 * i + 1] / n - mean * mean;
        s->mean[i] = (float)mean;
        s->std[i] = (float)sqrt(fmax(var, 0.0));
    }
    /* an entry that (nearly) never varies, e.g. all-zero, would divide by ~0: floor every std at 1e-3
     * of its channel's root-mean-square std (1 if the whole channel is constant) */
    int64_t per_channel = s->n_stats / s->channels;
    for (int c = 0; c < s->channels; c++) {
        float *sd = s->std + (int64_t)c * per_channel;
        double ms = 0;
        for (int64_t i = 0; i < per_channel; i++) ms += (double)sd[i] * sd[i];
        double floor = ms > 0 ? 1e-3 * sqrt(ms / per_channel) : 1.0;
        for (int64_t i = 0; i < per_channel; i++)
            if (sd[i] < floor) sd[i] = (float)floor;
    }
}

void ds_state_dit_encode(const ds_state_dit *s, const float *state, float *x) {
    for (int c = 0; c < s->channels; c++) {
        const float *w = channel_of(s, state, c);
        float *o = x + (int64_t)c * STATE_SIZE * STATE_SIZE;
        for (int j = 0; j < STATE_SIZE * STATE_SIZE; j++) {
            int64_t i = stat_of(s, c, j);
            o[j] = (w[j] - s->mean[i]) / s->std[i];
        }
    }
}

void ds_state_dit_decode(const ds_state_dit *s, const float *x, float *state) {
    memset(state, 0, sizeof(float) * ds_state_floats(&s->shape));
    for (int c = 0; c < s->channels; c++) {
        float *w = (float *)channel_of(s, state, c);
        const float *in = x + (int64_t)c * STATE_SIZE * STATE_SIZE;
        for (int j = 0; j < STATE_SIZE * STATE_SIZE; j++) {
            int64_t i = stat_of(s, c, j);
            w[j] = in[j] * s->std[i] + s->mean[i];
        }
    }
}

void ds_state_dit_record_cond(const ds_state_dit *s, const ds_state_record *r, int32_t *label, float *vec) {
    if (s->cond_kind == DS_STATE_COND_LABEL) {
        if (r->label < 0 || r->label >= s->n_labels)
            ds_die(DS_EXIT_BAD_INPUT, "state DiT: record of context %d has label %d outside [0, %d)", r->context,
                   r->label, s->n_labels);
        *label = r->label;
    } else {
        memcpy(vec, r->cond + s->cond_offset, sizeof(float) * s->shape.n_embd);
    }
}

void ds_state_dit_target(const ds_state_dit *s, int B, const int32_t *t, const float *x0, float *eps) {
    if (!s->v_prediction) return;
    for (int b = 0; b < B; b++) {
        double ab = ds_alpha_bar(&s->process, t[b]);
        float a = (float)sqrt(ab), sd = (float)sqrt(1 - ab);
        float *e = eps + b * s->x_floats;
        const float *x = x0 + b * s->x_floats;
        for (int64_t j = 0; j < s->x_floats; j++) e[j] = a * e[j] - sd * x[j];
    }
}

double ds_state_dit_eps_mse_of_loss(const ds_state_dit *s, int t, double loss) {
    return s->v_prediction ? ds_alpha_bar(&s->process, t) * loss : loss;
}

void ds_state_dit_swap_ema(ds_state_dit *s) {
    for (int64_t i = 0; i < s->dit.n_params; i++) {
        float t = s->dit.params[i];
        s->dit.params[i] = s->ema[i];
        s->ema[i] = t;
    }
}

void ds_state_dit_update_ema(ds_state_dit *s, double decay) {
    float a = (float)decay, b = (float)(1.0 - decay);
    for (int64_t i = 0; i < s->dit.n_params; i++) s->ema[i] = a * s->ema[i] + b * s->dit.params[i];
}

/* ---- epsilon model with condition mixtures ---- */

void ds_state_dit_eps(ds_state_dit *s, int B, int t, const float *x, int n_terms, const ds_state_cond_term *terms,
                      float *eps) {
    const ds_dit_dims *d = &s->dit.d;
    int N = B * n_terms;
    int64_t n = s->x_floats;
    float *xs = ds_alloc(sizeof(float) * N * n), *out = ds_alloc(sizeof(float) * N * n);
    int32_t *ts = ds_alloc(sizeof(int32_t) * N), *labels = ds_alloc(sizeof(int32_t) * N);
    float *vec = d->cond_dim ? ds_alloc(sizeof(float) * N * d->cond_dim) : NULL;
    uint8_t *vec_null = ds_alloc((size_t)N);
    for (int k = 0; k < n_terms; k++) {
        memcpy(xs + (int64_t)k * B * n, x, sizeof(float) * B * n);
        for (int b = 0; b < B; b++) {
            int i = k * B + b;
            ts[i] = t;
            if (terms[k].labels) labels[i] = terms[k].labels[b];
            if (vec) {
                if (terms[k].vec) memcpy(vec + (int64_t)i * d->cond_dim, terms[k].vec + (int64_t)b * d->cond_dim,
                                         sizeof(float) * d->cond_dim);
                vec_null[i] = !terms[k].vec || (terms[k].vec_null && terms[k].vec_null[b]);
            }
        }
    }
    ds_dit_cond cond = {.labels = d->num_classes ? labels : NULL, .vec = vec, .vec_null = vec_null};
    ds_dit_forward(&s->dit, N, xs, ts, &cond, NULL, out);
    if (s->v_prediction) {  /* eps = sqrt(1 - ab) x_t + sqrt(ab) v */
        double ab = ds_alpha_bar(&s->process, t);
        float a = (float)sqrt(ab), sd = (float)sqrt(1 - ab);
        for (int64_t j = 0; j < (int64_t)N * n; j++) out[j] = sd * xs[j] + a * out[j];
    }
    memset(eps, 0, sizeof(float) * B * n);
    for (int k = 0; k < n_terms; k++) ds_k.axpy(B * n, (float)terms[k].weight, out + (int64_t)k * B * n, eps);
    ds_free(xs); ds_free(out); ds_free(ts); ds_free(labels); ds_free(vec); ds_free(vec_null);
}

typedef struct {
    ds_state_dit *s;
    int B, n_terms;
    const ds_state_cond_term *terms;
    double clip;
    int64_t clipped, predicted;
    ds_progress *progress;
    int64_t calls;
} eps_ctx;

static void eps_callback(void *ctx, int t, const float *x, float *eps) {
    eps_ctx *c = ctx;
    ds_state_dit_eps(c->s, c->B, t, x, c->n_terms, c->terms, eps);
    if (c->progress) ds_progress_update(c->progress, ++c->calls);
    if (c->clip <= 0) return;
    /* x0 = (x - sqrt(1 - ab) eps) / sqrt(ab); where it leaves [-clip, clip], clip it and solve for eps */
    double ab = ds_alpha_bar(&c->s->process, t), sa = sqrt(ab), sb = sqrt(1 - ab);
    int64_t n = (int64_t)c->B * c->s->x_floats, clipped = 0;
    for (int64_t j = 0; j < n; j++) {
        double x0 = (x[j] - sb * eps[j]) / sa;
        if (fabs(x0) <= c->clip) continue;
        eps[j] = (float)((x[j] - sa * copysign(c->clip, x0)) / sb);
        clipped++;
    }
    c->clipped += clipped;
    c->predicted += n;
}

static void check_sampler(const ds_state_sampler *opt) {
    if (opt->steps < 2 || opt->steps > DS_DIFFUSION_STEPS)
        ds_die(DS_EXIT_BAD_INPUT, "sampler: steps %d outside [2, %d]", opt->steps, DS_DIFFUSION_STEPS);
    if (!(opt->eta >= 0 && opt->eta <= 1)) ds_die(DS_EXIT_BAD_INPUT, "sampler: eta %g outside [0, 1]", opt->eta);
    if (!(opt->temperature >= 0)) ds_die(DS_EXIT_BAD_INPUT, "sampler: temperature %g is negative", opt->temperature);
}

double ds_state_dit_sample(ds_state_dit *s, int B, const ds_state_sampler *opt, int from, int fill_noise, int n_terms,
                           const ds_state_cond_term *terms, float *x) {
    check_sampler(opt);
    int64_t n = (int64_t)B * s->x_floats;
    if (fill_noise) ds_fill_normal(x, n, opt->temperature, opt->seed, RNG_STREAM_INIT_NOISE);
    ds_diffusion proc;
    ds_diffusion_respace(&proc, &s->process, opt->steps);
    eps_ctx ctx = {s, B, n_terms, terms, opt->clip_x0, 0, 0, opt->progress, 0};
    if (opt->ddpm) ds_ddpm_sample(&proc, from, DS_VARIANCE_SMALL, n, eps_callback, &ctx, opt->seed, x);
    else ds_ddim_sample(&proc, from, opt->eta, n, eps_callback, &ctx, opt->seed, x);
    ds_diffusion_destroy(&proc);
    return ctx.predicted ? (double)ctx.clipped / ctx.predicted : 0.0;
}

int ds_state_dit_noise_to(const ds_state_dit *s, int B, const ds_state_sampler *opt, int base_step, float *x) {
    check_sampler(opt);
    ds_diffusion proc;
    ds_diffusion_respace(&proc, &s->process, opt->steps);
    int best = 0;
    for (int i = 1; i < proc.T; i++)
        if (abs(proc.timesteps[i] - base_step) < abs(proc.timesteps[best] - base_step)) best = i;
    int64_t n = (int64_t)B * s->x_floats;
    float *noise = ds_alloc(sizeof(float) * n);
    ds_fill_normal(noise, n, 1.0, opt->seed, RNG_STREAM_INIT_NOISE);
    int32_t *steps = ds_alloc(sizeof(int32_t) * B);
    for (int b = 0; b < B; b++) steps[b] = best;
    ds_q_sample(&proc, B, s->x_floats, steps, x, noise, x);
    ds_free(noise); ds_free(steps);
    ds_diffusion_destroy(&proc);
    return best;
}

void ds_state_dit_invert(ds_state_dit *s, int B, const ds_state_sampler *opt, int n_terms,
                         const ds_state_cond_term *terms, float *x) {
    check_sampler(opt);
    ds_diffusion proc;
    ds_diffusion_respace(&proc, &s->process, opt->steps);
    eps_ctx ctx = {s, B, n_terms, terms, 0, 0, 0, opt->progress, 0};
    ds_ddim_invert(&proc, proc.T - 1, (int64_t)B * s->x_floats, eps_callback, &ctx, x);
    ds_diffusion_destroy(&proc);
}
