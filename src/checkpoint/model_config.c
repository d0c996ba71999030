/* Model shapes from a run configuration: the RWKV-7's (model.*) and the hybrid's (src/hybrid/README.md
 * §1 and §6; config keys hybrid.*, dit.*, diffusion.schedule / p_uncond, optim.l2wrap). */
#include "dreamstate/weights.h"
#include "dreamstate/common.h"

#include <string.h>

ds_rwkv7_dims ds_rwkv7_dims_from_config(const ds_config *cfg) {
    ds_rwkv7_dims d = {.n_layer = cfg->model.n_layer, .n_embd = cfg->model.n_embd,
                       .vocab_size = cfg->model.vocab_size, .dim_w = cfg->model.dim_w,
                       .dim_a = cfg->model.dim_a, .dim_v = cfg->model.dim_v, .dim_g = cfg->model.dim_g};
    ds_rwkv7_default_ranks(&d, cfg->model.lora_formula);
    return d;
}

void ds_hybrid_dims_from_config(ds_hybrid_dims *d, const ds_config *cfg) {
    const ds_hybrid_config *hc = &cfg->hybrid;
    memset(d, 0, sizeof *d);
    if (strcmp(hc->matrices, "none") == 0 && !hc->train_static)
        ds_die(DS_EXIT_BAD_INPUT, "%s: hybrid.matrices none (the static fine-tuning baseline) needs hybrid.train_static 1",
               cfg->source);
    d->model = hc->init[0] ? ds_model_dims_for_weights(cfg, hc->init) : ds_rwkv7_dims_from_config(cfg);
    char why[256];
    int *layers = ds_alloc(sizeof(int) * d->model.n_layer);
    int n = ds_config_parse_layers(hc->layers, d->model.n_layer, layers, why, sizeof why);
    if (n < 0) ds_die(DS_EXIT_BAD_INPUT, "hybrid.layers: %s", why);
    if (n > DS_HYBRID_MAX_TARGETS)
        ds_die(DS_EXIT_BAD_INPUT, "hybrid.layers: %d layers targeted, at most %d", n, DS_HYBRID_MAX_TARGETS);
    d->n_targets = strcmp(hc->matrices, "none") == 0 ? 0 : n;  /* none: the static fine-tuning baseline */
    memcpy(d->targets, layers, sizeof(int) * d->n_targets);
    for (const char *c = hc->matrices; *c; c++)
        d->matrices |= *c == 'r' ? DS_HYBRID_R : *c == 'k' ? DS_HYBRID_K : *c == 'v' ? DS_HYBRID_V : 0;
    if (strcmp(hc->static_scope, "targeted") == 0) {  /* the generated matrices, or W_r, W_k, W_v with none */
        if (!hc->train_static)
            ds_die(DS_EXIT_BAD_INPUT, "%s: hybrid.static_scope targeted needs hybrid.train_static 1", cfg->source);
        d->n_static_layers = n;
        memcpy(d->static_layers, layers, sizeof(int) * n);
        d->static_matrices = d->n_targets > 0 ? d->matrices : DS_HYBRID_R | DS_HYBRID_K | DS_HYBRID_V;
    }
    ds_free(layers);
    d->param = strcmp(hc->param, "lowrank") == 0 ? DS_HYBRID_LOWRANK : DS_HYBRID_FULL;
    d->generator = strcmp(hc->generator, "direct") == 0 ? DS_HYBRID_DIRECT : DS_HYBRID_DIFFUSION;
    d->rank = hc->rank;
    d->u0_seed = DS_HYBRID_U0_SEED;
    d->condition = strcmp(hc->condition, "mean_prefix") == 0     ? DS_HYBRID_MEAN_PREFIX
                   : strcmp(hc->condition, "attn_prefix") == 0   ? DS_HYBRID_ATTN_PREFIX
                   : strcmp(hc->condition, "ln_out_prefix") == 0 ? DS_HYBRID_LN_OUT_PREFIX
                                                                  : DS_HYBRID_FIRST_TOKEN;
    d->prefix = hc->prefix;
    d->learn_alpha = strcmp(hc->alpha, "learned") == 0;
    d->alpha_init = hc->alpha_init;
    d->alpha_lr_scale = hc->alpha_lr_scale;
    d->lambda_lm = hc->lambda_lm;
    d->lambda_pd = hc->lambda_pd;
    d->t_star = hc->t_star;
    d->p_uncond = cfg->diffusion.p_uncond;
    d->schedule = strcmp(cfg->diffusion.schedule, "cosine") == 0 ? DS_SCHEDULE_COSINE : DS_SCHEDULE_LINEAR;
    d->train_static = hc->train_static;
    d->l2wrap = (float)cfg->optim.l2wrap;
    d->dit = (ds_dit_dims){.hidden = cfg->dit.hidden, .depth = cfg->dit.depth, .heads = cfg->dit.heads,
                           .patch_size = cfg->dit.patch_size, .mlp_ratio = cfg->dit.mlp_ratio};
}
