/* Conditional DiT with adaLN-Zero (src/dit/README.md §1, §2): parameter table, initialisation, forward and
 * backward. Matrix products go through ds_gemm / ds_linear (fp32 BLIS, or bf16 operands with
 * train.precision bf16: src/dit/README.md §2), everything else through the kernel table (ds_k,
 * src/dit/README.md §2.1, §2.2): the tiled attention, the adaLN modulation (LayerNorm without affine,
 * then each sample's scale and shift, whose backward yields d(scale) and d(shift) directly), the gated
 * residuals and the activations, each over the whole batch in one call.
 * Rows are the B*T tokens of a batch, row-major [B, T, d].
 *
 * Shapes: B batch (samples), an image [C, I, I] (C channels, I input size, n = C I I floats), p patch
 * size, G = I / p patch grid, T = G^2 tokens, BT = B T rows, P = C p p floats of a patch vector,
 * D hidden (d), H heads, dh = D / H head size, R = mlp_ratio D MLP width, K classes (label table of
 * K + 1 rows), 256 timestep features. Weights are [out, in] as in torch.nn.Linear; attention keeps
 * only the log-sum-exp of each query [B, H, T] (the tiled kernels never form the T x T scores); adaLN
 * modulations [B, 6 D] per block (shift, scale, gate for attention, then MLP). */
#include "dreamstate/dit.h"
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/diffusion.h"
#include "dreamstate/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- parameter table */

/* The chunks of a block's modulation row [6 D] (src/dit/README.md §1.3), in units of D; the final
 * layer's [2 D] row holds shift, scale. The adaLN kernels read them per sample at stride 6 D (2 D). */
enum { SHIFT_MSA, SCALE_MSA, GATE_MSA, SHIFT_MLP, SCALE_MLP, GATE_MLP, N_MOD };

#define GLOBAL(field) -1, offsetof(ds_dit_weights, field)
#define BLOCK(field) l, offsetof(ds_dit_block, field)

static void check_dims(const ds_dit_dims *d) {
    if (d->in_channels < 1 || d->input_size < 1 || d->patch_size < 1 || d->input_size % d->patch_size)
        ds_die(DS_EXIT_BAD_INPUT, "dit: input [%d, %d, %d] with patch %d: need the patch size to divide the size",
               d->in_channels, d->input_size, d->input_size, d->patch_size);
    if (d->heads < 1 || d->hidden < 4 || d->hidden % d->heads || d->hidden % 4)
        ds_die(DS_EXIT_BAD_INPUT, "dit: hidden %d must be a multiple of 4 and of the %d heads", d->hidden, d->heads);
    if (d->depth < 0 || d->mlp_ratio < 1 || d->num_classes < 0 || d->cond_dim < 0)
        ds_die(DS_EXIT_BAD_INPUT, "dit: depth %d, mlp ratio %d, classes %d, condition %d: negative or zero ratio",
               d->depth, d->mlp_ratio, d->num_classes, d->cond_dim);
}

void ds_dit_param_table(ds_param_table *t, const ds_dit_dims *d) {
    check_dims(d);
    int64_t D = d->hidden, C = d->in_channels, p = d->patch_size, R = (int64_t)d->mlp_ratio * D;
    ds_param_add(t, GLOBAL(patch_w), 4, (int64_t[]){D, C, p, p}, "x_embedder.proj.weight");
    ds_param_add(t, GLOBAL(patch_b), 1, &D, "x_embedder.proj.bias");
    ds_param_add(t, GLOBAL(t_w1), 2, (int64_t[]){D, DS_DIT_FREQ_DIM}, "t_embedder.mlp.0.weight");
    ds_param_add(t, GLOBAL(t_b1), 1, &D, "t_embedder.mlp.0.bias");
    ds_param_add(t, GLOBAL(t_w2), 2, (int64_t[]){D, D}, "t_embedder.mlp.2.weight");
    ds_param_add(t, GLOBAL(t_b2), 1, &D, "t_embedder.mlp.2.bias");
    if (d->num_classes > 0)
        ds_param_add(t, GLOBAL(label_table), 2, (int64_t[]){d->num_classes + 1, D},
                     "y_embedder.embedding_table.weight");
    if (d->cond_dim > 0) {
        ds_param_add(t, GLOBAL(cond_w), 2, (int64_t[]){D, d->cond_dim}, "c_embedder.proj.weight");
        ds_param_add(t, GLOBAL(cond_b), 1, &D, "c_embedder.proj.bias");
        ds_param_add(t, GLOBAL(cond_null), 1, &D, "c_embedder.null");
    }
    for (int l = 0; l < d->depth; l++) {
#define MAT(field, key, r, c) ds_param_add(t, BLOCK(field), 2, (int64_t[]){r, c}, "blocks.%d." key, l)
#define VEC(field, key, n) ds_param_add(t, BLOCK(field), 1, (int64_t[]){n}, "blocks.%d." key, l)
        MAT(qkv_w, "attn.qkv.weight", 3 * D, D); VEC(qkv_b, "attn.qkv.bias", 3 * D);
        MAT(proj_w, "attn.proj.weight", D, D); VEC(proj_b, "attn.proj.bias", D);
        MAT(fc1_w, "mlp.fc1.weight", R, D); VEC(fc1_b, "mlp.fc1.bias", R);
        MAT(fc2_w, "mlp.fc2.weight", D, R); VEC(fc2_b, "mlp.fc2.bias", D);
        MAT(ada_w, "adaLN_modulation.1.weight", N_MOD * D, D); VEC(ada_b, "adaLN_modulation.1.bias", N_MOD * D);
#undef MAT
#undef VEC
    }
    ds_param_add(t, GLOBAL(final_ada_w), 2, (int64_t[]){2 * D, D}, "final_layer.adaLN_modulation.1.weight");
    ds_param_add(t, GLOBAL(final_ada_b), 1, (int64_t[]){2 * D}, "final_layer.adaLN_modulation.1.bias");
    ds_param_add(t, GLOBAL(final_w), 2, (int64_t[]){p * p * C, D}, "final_layer.linear.weight");
    ds_param_add(t, GLOBAL(final_b), 1, (int64_t[]){p * p * C}, "final_layer.linear.bias");
}

/* Fixed 2-D sin-cos table (src/dit/README.md §1.1): the first d/2 dims encode the column, the last d/2 the row; each
 * half is [sin(pos w_k)]_k || [cos(pos w_k)]_k with w_k = 10000^(-k / (d/4)), k < d/4. */
static void build_pos_embed(float *pos, int G, int D) {
    int quarter = D / 4;
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            float *row = pos + ((int64_t)i * G + j) * D;
            int coord[2] = {j, i};
            for (int half = 0; half < 2; half++)
                for (int k = 0; k < quarter; k++) {
                    double w = pow(10000.0, -(double)k / quarter), a = coord[half] * w;
                    row[half * 2 * quarter + k] = (float)sin(a);
                    row[half * 2 * quarter + quarter + k] = (float)cos(a);
                }
        }
}

void ds_dit_create_in(ds_dit *m, const ds_dit_dims *d, float *params, float *grads) {
    ds_param_table t = {0};
    ds_dit_param_table(&t, d);
    memset(m, 0, sizeof *m);
    m->d = *d;
    m->grid = d->input_size / d->patch_size;
    m->tokens = m->grid * m->grid;
    m->patch_dim = d->in_channels * d->patch_size * d->patch_size;
    m->external = ds_param_arrays(&t, params, grads, &m->params, &m->grads);
    m->w.blocks = ds_param_bind(&t, m->params, &m->w, d->depth, sizeof(ds_dit_block));
    m->g.blocks = ds_param_bind(&t, m->grads, &m->g, d->depth, sizeof(ds_dit_block));
    m->tensors = ds_param_take(&t, &m->n_tensors, &m->n_params);
    m->pos_embed = ds_alloc(sizeof(float) * m->tokens * d->hidden);
    build_pos_embed(m->pos_embed, m->grid, d->hidden);
}

void ds_dit_create(ds_dit *m, const ds_dit_dims *d) { ds_dit_create_in(m, d, NULL, NULL); }

void ds_dit_zero_grad(ds_dit *m) { ds_zero_floats(m->grads, m->n_params); }

/* ---------------------------------------------------------------- initialisation (src/dit/README.md §1.5) */

static void fill_xavier(float *W, int rows, int cols, uint64_t seed, uint64_t stream) {
    double bound = sqrt(6.0 / (rows + cols));
    for (int64_t i = 0; i < (int64_t)rows * cols; i++)
        W[i] = (float)(bound * (2.0 * ds_rng_uniform(seed, stream, i) - 1.0));
}

void ds_dit_init_weights(ds_dit *m, uint64_t seed) {
    const ds_dit_dims *d = &m->d;
    int D = d->hidden, R = d->mlp_ratio * D;
    memset(m->params, 0, sizeof(float) * m->n_params);  /* biases, adaLN and the final layer stay 0 */
    uint64_t stream = 0;
    fill_xavier(m->w.patch_w, D, m->patch_dim, seed, ++stream);
    ds_fill_normal(m->w.t_w1, (int64_t)D * DS_DIT_FREQ_DIM, 0.02, seed, ++stream);
    ds_fill_normal(m->w.t_w2, (int64_t)D * D, 0.02, seed, ++stream);
    if (d->num_classes > 0)
        ds_fill_normal(m->w.label_table, (int64_t)(d->num_classes + 1) * D, 0.02, seed, ++stream);
    if (d->cond_dim > 0) {
        fill_xavier(m->w.cond_w, D, d->cond_dim, seed, ++stream);
        ds_fill_normal(m->w.cond_null, D, 0.02, seed, ++stream);
    }
    for (int l = 0; l < d->depth; l++) {
        ds_dit_block *b = &m->w.blocks[l];
        fill_xavier(b->qkv_w, 3 * D, D, seed, ++stream);
        fill_xavier(b->proj_w, D, D, seed, ++stream);
        fill_xavier(b->fc1_w, R, D, seed, ++stream);
        fill_xavier(b->fc2_w, D, R, seed, ++stream);
    }
}

/* ---------------------------------------------------------------- activations */

typedef struct {
    float *x_in, *ln1_mean, *ln1_rstd, *u1, *qkv, *lse, *o, *att_out;
    float *x1, *ln2_mean, *ln2_rstd, *u2, *z, *act, *mlp_out, *mod;
} block_acts;

typedef struct {
    block_acts *blocks;
    float *patches, *freq, *t_pre, *t_hid, *c, *sc;               /* embeddings */
    float *x_final, *lnf_mean, *lnf_rstd, *uf, *mod_f, *out;      /* final layer */
    float *eps_hat, *d_eps;                                       /* [B, C, I, I] */
    /* scratch, forward and backward */
    float *y_vec, *dx, *du, *dqkv, *d_o, *dF, *dz, *dact;
    float *dmod, *dsc, *dc, *dt_hid, *dt_pre, *d_out, *d_patches;
    int32_t *labels;
    float *vec;
    uint8_t *vec_null;
    int B, has_targets;
} acts_table;

/* Lays out every activation in one block: called with base == NULL to count, then to assign. */
static int64_t layout(const ds_dit_dims *d, int B, float *base, acts_table *at) {
    int64_t G = d->input_size / d->patch_size, T = G * G, BT = (int64_t)B * T, D = d->hidden;
    int64_t R = (int64_t)d->mlp_ratio * D, P = (int64_t)d->in_channels * d->patch_size * d->patch_size;
    int64_t H = d->heads, off = 0;
#define TAKE(ptr, n) do { (ptr) = base ? base + off : NULL; off += ((n) + 15) & ~(int64_t)15; } while (0)
    for (int l = 0; l < d->depth; l++) {
        block_acts *ba = &at->blocks[l];
        TAKE(ba->x_in, BT * D); TAKE(ba->ln1_mean, BT); TAKE(ba->ln1_rstd, BT); TAKE(ba->u1, BT * D);
        TAKE(ba->qkv, BT * 3 * D); TAKE(ba->lse, B * H * T); TAKE(ba->o, BT * D); TAKE(ba->att_out, BT * D);
        TAKE(ba->x1, BT * D); TAKE(ba->ln2_mean, BT); TAKE(ba->ln2_rstd, BT); TAKE(ba->u2, BT * D);
        TAKE(ba->z, BT * R); TAKE(ba->act, BT * R); TAKE(ba->mlp_out, BT * D); TAKE(ba->mod, B * N_MOD * D);
    }
    TAKE(at->patches, BT * P); TAKE(at->freq, B * DS_DIT_FREQ_DIM); TAKE(at->t_pre, B * D);
    TAKE(at->t_hid, B * D); TAKE(at->c, B * D); TAKE(at->sc, B * D);
    TAKE(at->x_final, BT * D); TAKE(at->lnf_mean, BT); TAKE(at->lnf_rstd, BT); TAKE(at->uf, BT * D);
    TAKE(at->mod_f, B * 2 * D); TAKE(at->out, BT * P);
    TAKE(at->eps_hat, BT * P); TAKE(at->d_eps, BT * P);
    TAKE(at->y_vec, B * D); TAKE(at->dx, BT * D); TAKE(at->du, BT * D);
    TAKE(at->dqkv, BT * 3 * D); TAKE(at->d_o, BT * D); TAKE(at->dF, BT * D); TAKE(at->dz, BT * R);
    TAKE(at->dact, BT * R); TAKE(at->dmod, B * N_MOD * D);
    TAKE(at->dsc, B * D); TAKE(at->dc, B * D); TAKE(at->dt_hid, B * D); TAKE(at->dt_pre, B * D);
    TAKE(at->d_out, BT * P); TAKE(at->d_patches, BT * P);
#undef TAKE
    return off;
}

static void free_acts(ds_dit *m) {
    acts_table *at = m->act;
    if (at) {
        ds_free(at->blocks); ds_free(at->labels); ds_free(at->vec); ds_free(at->vec_null); ds_free(at);
    }
    ds_free(m->acts);
    m->act = NULL;
    m->acts = NULL;
}

void ds_dit_reserve(ds_dit *m, int B) {
    if (m->acts && B <= m->act_B) return;
    free_acts(m);
    acts_table *at = ds_alloc(sizeof *at);
    at->blocks = ds_alloc(sizeof(block_acts) * (m->d.depth > 0 ? m->d.depth : 1));
    m->acts_numel = layout(&m->d, B, NULL, at);
    m->acts = ds_alloc(sizeof(float) * m->acts_numel);
    at->labels = ds_alloc(sizeof(int32_t) * B);
    at->vec = ds_alloc(sizeof(float) * B * (m->d.cond_dim > 0 ? m->d.cond_dim : 1));
    at->vec_null = ds_alloc((size_t)B);
    m->act = at;
    m->act_B = B;
}

int64_t ds_dit_activation_floats(const ds_dit_dims *d, int B) {
    acts_table at = {.blocks = ds_alloc(sizeof(block_acts) * (d->depth > 0 ? d->depth : 1))};
    int64_t n = layout(d, B, NULL, &at);
    ds_free(at.blocks);
    return n;
}

int64_t ds_dit_n_params(const ds_dit_dims *d) {
    ds_param_table t = {0};
    ds_dit_param_table(&t, d);
    int64_t n = t.n_floats;
    ds_param_table_free(&t);
    return n;
}

void ds_dit_destroy(ds_dit *m) {
    free_acts(m);
    ds_free(m->tensors);
    if (!m->external) { ds_free(m->params); ds_free(m->grads); }
    ds_free(m->w.blocks); ds_free(m->g.blocks); ds_free(m->pos_embed);
    memset(m, 0, sizeof *m);
}

/* ---------------------------------------------------------------- patch layouts */

/* Element (c, row, col) of the image <-> (token, position in the patch vector), both orders. */
static inline int64_t patch_index(int C, int G, int p, int channels_last, int c, int row, int col) {
    int token = (row / p) * G + col / p, u = row % p, v = col % p;
    int64_t within = channels_last ? ((int64_t)u * p + v) * C + c : ((int64_t)c * p + u) * p + v;
    return (int64_t)token * C * p * p + within;
}

void ds_dit_image_to_patches(int C, int I, int p, int channels_last, const float *img, float *patches) {
    int G = I / p;
    for (int c = 0; c < C; c++)
        for (int row = 0; row < I; row++)
            for (int col = 0; col < I; col++)
                patches[patch_index(C, G, p, channels_last, c, row, col)] = img[((int64_t)c * I + row) * I + col];
}

void ds_dit_patches_to_image(int C, int I, int p, int channels_last, const float *patches, float *img) {
    int G = I / p;
    for (int c = 0; c < C; c++)
        for (int row = 0; row < I; row++)
            for (int col = 0; col < I; col++)
                img[((int64_t)c * I + row) * I + col] = patches[patch_index(C, G, p, channels_last, c, row, col)];
}

/* ---------------------------------------------------------------- building blocks */

/* ---------------------------------------------------------------- forward */

/* q, k, v interleaved per token as the qkv Linear writes them ([B, T, 3, H, dh]); o [B, T, H, dh]. */
static void attention_layouts(const ds_dit *m, ds_attn_layout *qkv, ds_attn_layout *o) {
    int T = m->tokens, D = m->d.hidden, dh = D / m->d.heads;
    *qkv = (ds_attn_layout){(int64_t)T * 3 * D, dh, 3 * D};
    *o = (ds_attn_layout){(int64_t)T * D, dh, D};
}

static void attention_forward(const ds_dit *m, int B, block_acts *ba) {
    int D = m->d.hidden;
    ds_attn_layout in, out;
    attention_layouts(m, &in, &out);
    ds_k.attention_forward(B, m->d.heads, m->tokens, D / m->d.heads, ba->qkv, ba->qkv + D, ba->qkv + 2 * D, in,
                           ba->o, out, ba->lse);
}

static void block_forward(const ds_dit *m, int B, const ds_dit_block *p, block_acts *ba, acts_table *at,
                          float *x_out) {
    int T = m->tokens, D = m->d.hidden, R = m->d.mlp_ratio * D;
    int64_t BT = (int64_t)B * T;
    /* modulation (shift, scale, gate) x (msa, mlp) from SiLU(c) */
    ds_linear(B, D, N_MOD * D, at->sc, p->ada_w, p->ada_b, ba->mod);
    ds_k.modulate_forward(B, T, D, DS_DIT_LN_EPS, ba->x_in, ba->mod + SHIFT_MSA * D, ba->mod + SCALE_MSA * D, N_MOD * D,
                          ba->u1, ba->ln1_mean, ba->ln1_rstd);
    ds_linear(BT, D, 3 * D, ba->u1, p->qkv_w, p->qkv_b, ba->qkv);
    attention_forward(m, B, ba);
    ds_linear(BT, D, D, ba->o, p->proj_w, p->proj_b, ba->att_out);
    ds_k.gated_residual_forward(B, T, D, ba->x_in, ba->att_out, ba->mod + GATE_MSA * D, N_MOD * D, ba->x1);
    ds_k.modulate_forward(B, T, D, DS_DIT_LN_EPS, ba->x1, ba->mod + SHIFT_MLP * D, ba->mod + SCALE_MLP * D, N_MOD * D,
                          ba->u2, ba->ln2_mean, ba->ln2_rstd);
    ds_linear(BT, D, R, ba->u2, p->fc1_w, p->fc1_b, ba->z);
    ds_k.act_forward(DS_ACT_GELU_TANH, BT * R, ba->z, ba->act);
    ds_linear(BT, R, D, ba->act, p->fc2_w, p->fc2_b, ba->mlp_out);
    ds_k.gated_residual_forward(B, T, D, ba->x1, ba->mlp_out, ba->mod + GATE_MLP * D, N_MOD * D, x_out);
}

/* 256 sinusoidal features of the integer timestep (src/dit/README.md §1.2): cos block first, f_k = 10000^(-k/128). */
static void timestep_features(int B, const int32_t *t, float *freq) {
    enum { half = DS_DIT_FREQ_DIM / 2 };
    double f[half];
    for (int k = 0; k < half; k++) f[k] = exp(-log(10000.0) * k / half);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            double a = t[b] * f[k];
            freq[(int64_t)b * DS_DIT_FREQ_DIM + k] = (float)cos(a);
            freq[(int64_t)b * DS_DIT_FREQ_DIM + half + k] = (float)sin(a);
        }
}

/* c = t_emb + y and SiLU(c). */
static void embed_condition(ds_dit *m, int B, const int32_t *t, const ds_dit_cond *cond, acts_table *at) {
    const ds_dit_dims *d = &m->d;
    int D = d->hidden;
    timestep_features(B, t, at->freq);
    ds_linear(B, DS_DIT_FREQ_DIM, D, at->freq, m->w.t_w1, m->w.t_b1, at->t_pre);
    ds_k.act_forward(DS_ACT_SILU, (int64_t)B * D, at->t_pre, at->t_hid);
    ds_linear(B, D, D, at->t_hid, m->w.t_w2, m->w.t_b2, at->c);
    if (d->num_classes > 0)
        for (int b = 0; b < B; b++) {
            at->labels[b] = cond->labels[b];
            ds_k.axpy(D, 1.0f, m->w.label_table + (int64_t)cond->labels[b] * D, at->c + (int64_t)b * D);
        }
    if (d->cond_dim > 0) {
        memcpy(at->vec, cond->vec, sizeof(float) * B * d->cond_dim);
        for (int b = 0; b < B; b++) at->vec_null[b] = cond->vec_null && cond->vec_null[b];
        ds_linear(B, d->cond_dim, D, at->vec, m->w.cond_w, m->w.cond_b, at->y_vec);
        for (int b = 0; b < B; b++)
            ds_k.axpy(D, 1.0f, at->vec_null[b] ? m->w.cond_null : at->y_vec + (int64_t)b * D, at->c + (int64_t)b * D);
    }
    ds_k.act_forward(DS_ACT_SILU, (int64_t)B * D, at->c, at->sc);
}

/* All input checks come before any computation (so a bad input never leaves half-made activations). */
static void check_inputs(const ds_dit_dims *d, int B, const int32_t *t, const ds_dit_cond *cond) {
    if (B < 1) ds_die(DS_EXIT_BAD_INPUT, "dit: batch of %d samples", B);
    for (int b = 0; b < B; b++)
        if (t[b] < 0) ds_die(DS_EXIT_BAD_INPUT, "dit: timestep %d of sample %d is negative", t[b], b);
    if (d->num_classes > 0) {
        if (!cond || !cond->labels) ds_die(DS_EXIT_BAD_INPUT, "dit: the model is label-conditioned but no labels were given");
        for (int b = 0; b < B; b++)
            if (cond->labels[b] < 0 || cond->labels[b] > d->num_classes)
                ds_die(DS_EXIT_BAD_INPUT, "dit: label %d of sample %d outside [0, %d] (%d = null)", cond->labels[b], b,
                       d->num_classes, d->num_classes);
    }
    if (d->cond_dim > 0 && (!cond || !cond->vec))
        ds_die(DS_EXIT_BAD_INPUT, "dit: the model takes a condition vector but none was given");
}

double ds_dit_forward(ds_dit *m, int B, const float *x_t, const int32_t *t, const ds_dit_cond *cond,
                      const float *noise, float *eps_out) {
    const ds_dit_dims *d = &m->d;
    check_inputs(d, B, t, cond);
    ds_dit_reserve(m, B);
    acts_table *at = m->act;
    layout(&m->d, B, m->acts, at);
    at->B = B;
    int T = m->tokens, D = d->hidden, P = m->patch_dim, C = d->in_channels, I = d->input_size, p = d->patch_size;
    int64_t BT = (int64_t)B * T, n = (int64_t)C * I * I;
    embed_condition(m, B, t, cond, at);
    /* patch embed + fixed position table */
    for (int b = 0; b < B; b++) ds_dit_image_to_patches(C, I, p, 0, x_t + b * n, at->patches + b * T * P);
    float *x = d->depth > 0 ? at->blocks[0].x_in : at->x_final;
    ds_linear(BT, P, D, at->patches, m->w.patch_w, m->w.patch_b, x);
    for (int b = 0; b < B; b++) ds_k.axpy((int64_t)T * D, 1.0f, m->pos_embed, x + (int64_t)b * T * D);
    for (int l = 0; l < d->depth; l++)
        block_forward(m, B, &m->w.blocks[l], &at->blocks[l], at, l + 1 < d->depth ? at->blocks[l + 1].x_in : at->x_final);
    /* final layer: adaLN (shift, scale), Linear to p p C per token, unpatchify */
    ds_linear(B, D, 2 * D, at->sc, m->w.final_ada_w, m->w.final_ada_b, at->mod_f);
    ds_k.modulate_forward(B, T, D, DS_DIT_LN_EPS, at->x_final, at->mod_f, at->mod_f + D, 2 * D, at->uf, at->lnf_mean,
                          at->lnf_rstd);
    ds_linear(BT, D, P, at->uf, m->w.final_w, m->w.final_b, at->out);
    for (int b = 0; b < B; b++) ds_dit_patches_to_image(C, I, p, 1, at->out + b * T * P, at->eps_hat + b * n);
    if (eps_out) memcpy(eps_out, at->eps_hat, sizeof(float) * B * n);
    at->has_targets = noise != NULL;
    return noise ? ds_eps_mse(B * n, at->eps_hat, noise, at->d_eps) : 0.0;
}

/* ---------------------------------------------------------------- backward */

/* at->d_o holds dL/dO; writes the q, k, v gradients into at->dqkv. */
static void attention_backward(const ds_dit *m, int B, const block_acts *ba, acts_table *at) {
    int D = m->d.hidden;
    ds_attn_layout in, out;
    attention_layouts(m, &in, &out);
    memset(at->dqkv, 0, sizeof(float) * B * m->tokens * 3 * D);  /* the kernel accumulates */
    ds_k.attention_backward(B, m->d.heads, m->tokens, D / m->d.heads, ba->qkv, ba->qkv + D, ba->qkv + 2 * D, in,
                            ba->o, at->d_o, out, ba->lse, at->dqkv, at->dqkv + D, at->dqkv + 2 * D);
}

/* at->dx holds dL/d(block output) on entry and dL/d(block input) on exit; dsc accumulates. */
static void block_backward(const ds_dit *m, int B, const ds_dit_block *p, ds_dit_block *g, const block_acts *ba,
                           acts_table *at) {
    int T = m->tokens, D = m->d.hidden, R = m->d.mlp_ratio * D;
    int64_t BT = (int64_t)B * T;
    float *dmod = at->dmod;
    memset(dmod, 0, sizeof(float) * B * N_MOD * D);
    /* MLP branch: x2 = x1 + g2 M, M = fc2(GELU(fc1(u2))), u2 = LN(x1)(1 + scale2) + shift2 */
    memset(at->dF, 0, sizeof(float) * BT * D);
    ds_k.gated_residual_backward(B, T, D, at->dx, ba->mlp_out, ba->mod + GATE_MLP * D, N_MOD * D, at->dF,
                                 dmod + GATE_MLP * D);
    ds_linear_backward(BT, R, D, ba->act, p->fc2_w, at->dF, g->fc2_w, g->fc2_b, at->dact, 0);
    memset(at->dz, 0, sizeof(float) * BT * R);
    ds_k.act_backward(DS_ACT_GELU_TANH, BT * R, ba->z, at->dact, at->dz);
    ds_linear_backward(BT, D, R, ba->u2, p->fc1_w, at->dz, g->fc1_w, g->fc1_b, at->du, 0);
    ds_k.modulate_backward(B, T, D, at->du, ba->x1, ba->ln2_mean, ba->ln2_rstd, ba->mod + SCALE_MLP * D, N_MOD * D,
                           at->dx, dmod + SHIFT_MLP * D, dmod + SCALE_MLP * D);
    /* attention branch: x1 = x + g1 Att, Att = proj(attention(qkv(u1))) */
    memset(at->dF, 0, sizeof(float) * BT * D);
    ds_k.gated_residual_backward(B, T, D, at->dx, ba->att_out, ba->mod + GATE_MSA * D, N_MOD * D, at->dF,
                                 dmod + GATE_MSA * D);
    ds_linear_backward(BT, D, D, ba->o, p->proj_w, at->dF, g->proj_w, g->proj_b, at->d_o, 0);
    attention_backward(m, B, ba, at);
    ds_linear_backward(BT, D, 3 * D, ba->u1, p->qkv_w, at->dqkv, g->qkv_w, g->qkv_b, at->du, 0);
    ds_k.modulate_backward(B, T, D, at->du, ba->x_in, ba->ln1_mean, ba->ln1_rstd, ba->mod + SCALE_MSA * D, N_MOD * D,
                           at->dx, dmod + SHIFT_MSA * D, dmod + SCALE_MSA * D);
    /* adaLN head: dmod -> weights and SiLU(c) */
    ds_linear_backward(B, D, N_MOD * D, at->sc, p->ada_w, dmod, g->ada_w, g->ada_b, at->dsc, 1);
}

/* dc (gradient of c = t_emb + y) into the timestep MLP, the label table and the condition projection;
 * d_vec (NULL: not wanted) receives dL/dvec [B, cond_dim], 0 for dropped samples. */
static void embed_condition_backward(ds_dit *m, int B, acts_table *at, float *d_vec) {
    const ds_dit_dims *d = &m->d;
    int D = d->hidden;
    ds_linear_backward(B, D, D, at->t_hid, m->w.t_w2, at->dc, m->g.t_w2, m->g.t_b2, at->dt_hid, 0);
    memset(at->dt_pre, 0, sizeof(float) * B * D);
    ds_k.act_backward(DS_ACT_SILU, (int64_t)B * D, at->t_pre, at->dt_hid, at->dt_pre);
    ds_linear_backward(B, DS_DIT_FREQ_DIM, D, at->freq, m->w.t_w1, at->dt_pre, m->g.t_w1, m->g.t_b1, NULL, 0);
    if (d->num_classes > 0)  /* scatter-add in sample order (deterministic) */
        for (int b = 0; b < B; b++)
            ds_k.axpy(D, 1.0f, at->dc + (int64_t)b * D, m->g.label_table + (int64_t)at->labels[b] * D);
    if (d->cond_dim > 0) {
        /* dropped samples feed the null vector; the others the projection (their rows of dy_vec) */
        float *dy_vec = at->dt_hid;  /* free again */
        for (int b = 0; b < B; b++) {
            float *row = dy_vec + (int64_t)b * D;
            if (at->vec_null[b]) {
                ds_k.axpy(D, 1.0f, at->dc + (int64_t)b * D, m->g.cond_null);
                memset(row, 0, sizeof(float) * D);
            } else {
                memcpy(row, at->dc + (int64_t)b * D, sizeof(float) * D);
            }
        }
        ds_linear_backward(B, d->cond_dim, D, at->vec, m->w.cond_w, dy_vec, m->g.cond_w, m->g.cond_b, d_vec, 0);
    }
}

void ds_dit_scale_loss(ds_dit *m, float scale) {
    acts_table *at = m->act;
    if (!at || !at->has_targets) ds_die(DS_EXIT_FAIL, "dit: scale_loss without a forward that had a noise target");
    ds_k.scale((int64_t)at->B * m->d.in_channels * m->d.input_size * m->d.input_size, at->d_eps, scale);
}

/* The backward proper: at->d_eps holds dL/d(eps_hat). */
static void backward(ds_dit *m, float *dx_out, float *d_vec) {
    acts_table *at = m->act;
    const ds_dit_dims *d = &m->d;
    int B = at->B, T = m->tokens, D = d->hidden, P = m->patch_dim, C = d->in_channels, I = d->input_size,
        p = d->patch_size;
    int64_t BT = (int64_t)B * T, n = (int64_t)C * I * I;
    /* final layer */
    for (int b = 0; b < B; b++) ds_dit_image_to_patches(C, I, p, 1, at->d_eps + b * n, at->d_out + b * T * P);
    ds_linear_backward(BT, D, P, at->uf, m->w.final_w, at->d_out, m->g.final_w, m->g.final_b, at->du, 0);
    memset(at->dx, 0, sizeof(float) * BT * D);
    memset(at->dmod, 0, sizeof(float) * B * 2 * D);
    ds_k.modulate_backward(B, T, D, at->du, at->x_final, at->lnf_mean, at->lnf_rstd, at->mod_f + D, 2 * D, at->dx,
                           at->dmod, at->dmod + D);
    memset(at->dsc, 0, sizeof(float) * B * D);
    ds_linear_backward(B, D, 2 * D, at->sc, m->w.final_ada_w, at->dmod, m->g.final_ada_w, m->g.final_ada_b, at->dsc, 1);
    for (int l = d->depth - 1; l >= 0; l--) block_backward(m, B, &m->w.blocks[l], &m->g.blocks[l], &at->blocks[l], at);
    /* SiLU(c) gathered from every block and the final layer, then the embeddings */
    memset(at->dc, 0, sizeof(float) * B * D);
    ds_k.act_backward(DS_ACT_SILU, (int64_t)B * D, at->c, at->dsc, at->dc);
    embed_condition_backward(m, B, at, d_vec);
    /* patch embed (the position table is constant) */
    ds_linear_backward(BT, P, D, at->patches, m->w.patch_w, at->dx, m->g.patch_w, m->g.patch_b,
                    dx_out ? at->d_patches : NULL, 0);
    if (dx_out)
        for (int b = 0; b < B; b++) ds_dit_patches_to_image(C, I, p, 0, at->d_patches + b * T * P, dx_out + b * n);
}

void ds_dit_backward(ds_dit *m, float *dx_out) {
    acts_table *at = m->act;
    if (!at || !at->has_targets) ds_die(DS_EXIT_FAIL, "dit backward: the last forward had no noise target");
    backward(m, dx_out, NULL);
}

void ds_dit_backward_from(ds_dit *m, const float *d_eps, float *dx_out, float *d_vec) {
    acts_table *at = m->act;
    if (!at || at->B < 1) ds_die(DS_EXIT_FAIL, "dit backward: no forward to differentiate");
    if (d_vec && m->d.cond_dim < 1) ds_die(DS_EXIT_FAIL, "dit backward: a condition-vector gradient of a DiT without one");
    memcpy(at->d_eps, d_eps, sizeof(float) * at->B * m->d.in_channels * m->d.input_size * m->d.input_size);
    backward(m, dx_out, d_vec);
}

double ds_dit_forward_flops(const ds_dit_dims *d) {
    double D = d->hidden, R = d->mlp_ratio * D, p = d->patch_size, G = d->input_size / d->patch_size, T = G * G;
    double P = d->in_channels * p * p;
    double block = T * (4 * D * D + 2 * R * D) + 2 * T * T * D + 6 * D * D;
    double mac = T * P * D + d->depth * block + 2 * D * D + T * D * P + DS_DIT_FREQ_DIM * D + D * D + d->cond_dim * D;
    return 2.0 * mac;
}
