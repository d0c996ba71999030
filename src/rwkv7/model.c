/* RWKV-7 forward and backward (src/rwkv7/README.md §2 and §3). Every matrix product goes through
 * ds_gemm / ds_linear (fp32 or bf16 operands, src/rwkv7/README.md §4.6), every standard op through the
 * kernel table (ds_k, fp32); the model-specific element-wise glue (decay, keys, value residual, bonus)
 * is here, in fp32. Rows are the B*T tokens of a batch.
 *
 * Shapes: B batch (sequences), T time (tokens per sequence), BT = B T rows, C channels (n_embd),
 * H heads = C / N, N head size (64), V vocabulary, L layers; Dw, Da, Dv, Dg the ranks of the decay,
 * in-context learning rate, value residual and gate LoRAs. Activations are row-major [B, T, C] (per
 * head [B, T, H, N]); the WKV state of a head is [N, N]. */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/rwkv7.h"

#include <math.h>
#include <string.h>

#define N DS_HEAD_SIZE
#define LN_EPS 1e-5f
#define GN_EPS 64e-5f
#define DECAY_SCALE 0.6065306597f /* e^{-1/2} */

/* Saved activations of one layer (everything the backward reads; src/rwkv7/README.md §3.3). */
typedef struct {
    float *x_in, *ln1_mean, *ln1_rstd, *a;             /* residual in, ln1 stats, ln1 output */
    float *xr, *xw, *xk, *xv, *xa, *xg;               /* token-shift mixes */
    float *r, *k0, *vraw;                             /* projections */
    float *w_lo, *w_hid, *z, *decay;                  /* decay LoRA: xw.w1, tanh, pre-sigmoid, decay */
    float *a_lo, *a_pre, *aic;                        /* in-context learning rate */
    float *v_lo, *nu_pre, *nu;                        /* value residual gate */
    float *g_lo, *g_hid, *gate;                       /* output gate */
    float *kk, *kk_norm, *kr, *v, *alpha, *beta;      /* keys, final value, WKV inputs */
    float *y, *ckpt, *gn_mean, *gn_rstd, *gn_out;     /* WKV output, checkpoints, GroupNorm */
    float *bonus, *p, *pg;                            /* per-head bonus u_h, p, p * gate */
    float *x_mid, *ln2_mean, *ln2_rstd, *b2, *xkf, *hpre, *hact; /* channel-mix */
} layer_acts;

/* Gradient scratch shared by all layers (the backward handles one layer at a time). */
typedef struct {
    float *dx, *dxm, *d_a, *d_b2, *dxkf, *dhact, *dhpre;
    float *dxr, *dxw, *dxk, *dxv, *dxa, *dxg;
    float *dpg, *dp, *dgate, *dg_hid, *dg_lo, *dy;
    float *dr, *ddecay, *dkr, *dv, *dalpha, *dbeta, *dkk, *daic, *dk0, *dvraw, *dnu;
    float *dz, *dsig, *dw_hid, *dw_lo, *da_lo, *dv_lo, *dv_first, *d_lnout, *d_emb_rows;
} grad_scratch;

typedef struct {
    layer_acts *layers;
    grad_scratch gs;
    int32_t *tokens, *targets;
    float *emb_rows, *ln0_mean, *ln0_rstd, *v_first, *x_final, *lnout_mean, *lnout_rstd, *lnout;
    float *logits, *losses;
    /* the forward's initial state, kept for the backward (state_out may overwrite the caller's): its
     * token-shift parts [L, B, C] always, its WKV part only with grad_checkpoint (the recomputation
     * starts from it; otherwise each layer's ckpt holds it) */
    ds_rwkv7_state state_in;
    int B, T, has_targets, has_state_in, grad_checkpoint;
} acts_table;

/* Lays out every activation in one block: called with base == NULL to count, then to assign. With
 * grad_checkpoint every layer keeps its own input x_in but all share layer 0's internals, which the
 * backward recomputes layer by layer (src/rwkv7/README.md §3.6). */
static int64_t layout(const ds_rwkv7_dims *d, int B, int T, int grad_checkpoint, float *base, acts_table *at) {
    int64_t BT = (int64_t)B * T, C = d->n_embd, H = C / N, V = d->vocab_size, off = 0;
    int64_t nchunk = (T + DS_WKV_CHUNK - 1) / DS_WKV_CHUNK;
#define TAKE(ptr, n) do { (ptr) = base ? base + off : NULL; off += ((n) + 15) & ~(int64_t)15; } while (0)
    for (int l = 0; l < d->n_layer; l++) {
        layer_acts *la = &at->layers[l];
        if (grad_checkpoint && l > 0) {
            *la = at->layers[0];
            TAKE(la->x_in, BT * C);
            continue;
        }
        TAKE(la->x_in, BT * C); TAKE(la->ln1_mean, BT); TAKE(la->ln1_rstd, BT); TAKE(la->a, BT * C);
        TAKE(la->xr, BT * C); TAKE(la->xw, BT * C); TAKE(la->xk, BT * C);
        TAKE(la->xv, BT * C); TAKE(la->xa, BT * C); TAKE(la->xg, BT * C);
        TAKE(la->r, BT * C); TAKE(la->k0, BT * C); TAKE(la->vraw, BT * C);
        TAKE(la->w_lo, BT * d->dim_w); TAKE(la->w_hid, BT * d->dim_w); TAKE(la->z, BT * C); TAKE(la->decay, BT * C);
        TAKE(la->a_lo, BT * d->dim_a); TAKE(la->a_pre, BT * C); TAKE(la->aic, BT * C);
        TAKE(la->v_lo, BT * d->dim_v); TAKE(la->nu_pre, BT * C); TAKE(la->nu, BT * C);
        TAKE(la->g_lo, BT * d->dim_g); TAKE(la->g_hid, BT * d->dim_g); TAKE(la->gate, BT * C);
        TAKE(la->kk, BT * C); TAKE(la->kk_norm, BT * H); TAKE(la->kr, BT * C); TAKE(la->v, BT * C);
        TAKE(la->alpha, BT * C); TAKE(la->beta, BT * C);
        TAKE(la->y, BT * C); TAKE(la->ckpt, B * H * nchunk * N * N);
        TAKE(la->gn_mean, BT * H); TAKE(la->gn_rstd, BT * H); TAKE(la->gn_out, BT * C);
        TAKE(la->bonus, BT * H); TAKE(la->p, BT * C); TAKE(la->pg, BT * C);
        TAKE(la->x_mid, BT * C); TAKE(la->ln2_mean, BT); TAKE(la->ln2_rstd, BT); TAKE(la->b2, BT * C);
        TAKE(la->xkf, BT * C); TAKE(la->hpre, BT * 4 * C); TAKE(la->hact, BT * 4 * C);
    }
    TAKE(at->emb_rows, BT * C); TAKE(at->ln0_mean, BT); TAKE(at->ln0_rstd, BT); TAKE(at->v_first, BT * C);
    TAKE(at->x_final, BT * C); TAKE(at->lnout_mean, BT); TAKE(at->lnout_rstd, BT); TAKE(at->lnout, BT * C);
    TAKE(at->logits, BT * V); TAKE(at->losses, BT);
    int64_t L = d->n_layer;
    at->state_in = (ds_rwkv7_state){.B = B};
    TAKE(at->state_in.att_x, L * B * C); TAKE(at->state_in.ffn_x, L * B * C);
    if (grad_checkpoint) TAKE(at->state_in.wkv, L * B * C * N);  /* [L,B,H,N,N]: H N = C */
    int64_t Dmax = d->dim_w > d->dim_a ? d->dim_w : d->dim_a;
    if (d->dim_v > Dmax) Dmax = d->dim_v;
    if (d->dim_g > Dmax) Dmax = d->dim_g;
    grad_scratch *g = &at->gs;
    float **bt_c[] = {&g->dx, &g->dxm, &g->d_a, &g->d_b2, &g->dxkf, &g->dxr, &g->dxw, &g->dxk, &g->dxv,
                      &g->dxa, &g->dxg, &g->dpg, &g->dp, &g->dgate, &g->dy, &g->dr, &g->ddecay,
                      &g->dkr, &g->dv, &g->dalpha, &g->dbeta, &g->dkk, &g->daic, &g->dk0, &g->dvraw,
                      &g->dnu, &g->dz, &g->dsig, &g->dv_first, &g->d_lnout, &g->d_emb_rows};
    for (size_t i = 0; i < sizeof bt_c / sizeof bt_c[0]; i++) TAKE(*bt_c[i], BT * C);
    TAKE(g->dhact, BT * 4 * C); TAKE(g->dhpre, BT * 4 * C);
    float **bt_d[] = {&g->dg_hid, &g->dg_lo, &g->dw_hid, &g->dw_lo, &g->da_lo, &g->dv_lo};
    for (size_t i = 0; i < sizeof bt_d / sizeof bt_d[0]; i++) TAKE(*bt_d[i], BT * Dmax);
#undef TAKE
    return off;
}

static void free_acts(ds_rwkv7 *m) {
    acts_table *at = m->act;
    if (at) { ds_free(at->layers); ds_free(at->tokens); ds_free(at->targets); ds_free(at); }
    ds_free(m->acts);
    m->act = NULL;
    m->acts = NULL;
}

void ds_rwkv7_reserve(ds_rwkv7 *m, int B, int T) {
    int cp = m->grad_checkpoint != 0;
    if (m->acts && B <= m->act_B && T <= m->act_T && cp == ((acts_table *)m->act)->grad_checkpoint) return;
    free_acts(m);
    acts_table *at = ds_alloc(sizeof *at);
    at->layers = ds_alloc(sizeof(layer_acts) * m->d.n_layer);
    at->grad_checkpoint = cp;
    m->acts_numel = layout(&m->d, B, T, cp, NULL, at);
    m->acts = ds_alloc(sizeof(float) * m->acts_numel);
    at->tokens = ds_alloc(sizeof(int32_t) * B * T);
    at->targets = ds_alloc(sizeof(int32_t) * B * T);
    m->act = at;
    m->act_B = B;
    m->act_T = T;
}

int64_t ds_rwkv7_activation_floats(const ds_rwkv7_dims *d, int B, int T, int grad_checkpoint) {
    acts_table at = {.layers = ds_alloc(sizeof(layer_acts) * d->n_layer)};
    int64_t n = layout(d, B, T, grad_checkpoint != 0, NULL, &at);
    ds_free(at.layers);
    return n;
}

double ds_rwkv7_bf16_operand_bytes(const ds_rwkv7_dims *d, int B, int T) {
    double F = d->vocab_size > 4 * d->n_embd ? d->vocab_size : 4.0 * d->n_embd;
    return 2.0 * ((double)B * T * F + F * d->n_embd);
}

void ds_rwkv7_destroy(ds_rwkv7 *m) {
    free_acts(m);
    ds_free(m->tensors);
    ds_free(m->layer_begin);
    if (!m->external) { ds_free(m->params); ds_free(m->grads); }
    ds_free(m->w.layers); ds_free(m->g.layers);
    memset(m, 0, sizeof *m);
}

void ds_rwkv7_state_create(ds_rwkv7_state *s, const ds_rwkv7_dims *d, int B) {
    int64_t L = d->n_layer, C = d->n_embd;
    s->B = B;
    s->numel = L * B * (2 * C + C * N);
    s->data = ds_alloc(sizeof(float) * s->numel);
    s->att_x = s->data;
    s->ffn_x = s->att_x + L * B * C;
    s->wkv = s->ffn_x + L * B * C;
}

void ds_rwkv7_state_destroy(ds_rwkv7_state *s) { ds_free(s->data); memset(s, 0, sizeof *s); }

/* LoRA half y = x A (A [in,out], no transpose) and its backward. */
static void lora(int64_t rows, int in, int out, const float *x, const float *A, float *y) {
    ds_gemm(0, 0, rows, out, in, 1.0f, x, in, A, out, 0.0f, y, out);
}
static void lora_backward(int64_t rows, int in, int out, const float *x, const float *A, const float *dy,
                          float *dx, float *dA) {
    if (dA) ds_gemm(1, 0, in, out, rows, 1.0f, x, in, dy, out, 1.0f, dA, out);
    ds_gemm(0, 1, rows, in, out, 1.0f, dy, out, A, out, 1.0f, dx, in);
}

/* out[r, c] = bias[c] + in[r, c] for rows r: adds a per-channel bias. */
static void add_bias(int64_t rows, int C, const float *bias, const float *in, float *out) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) out[r * C + c] = in[r * C + c] + bias[c];
}

static void zero(float *p, int64_t n) { memset(p, 0, sizeof(float) * n); }

/* The caller's per-sequence matrices of projection mat (0 r, 1 k, 2 v) of layer l, or NULL: the model's own. */
static const ds_rwkv7_seq_weight *seq_weight(const ds_rwkv7 *m, int l, int mat) {
    const ds_rwkv7_seq_weight *s = m->seq_weights ? &m->seq_weights[3 * l + mat] : NULL;
    return s && s->w ? s : NULL;
}

/* y = x W^T for projection mat of layer l over the B T rows (the model's matrix or the caller's shared one),
 * or sequence by sequence (T rows each) with the caller's matrices (seq_weights, src/rwkv7/README.md §3.5). */
static void projection(const ds_rwkv7 *m, int l, int mat, int B, int T, const float *x, const float *W, float *y) {
    const ds_rwkv7_seq_weight *sw = seq_weight(m, l, mat);
    int C = m->d.n_embd;
    int64_t TC = (int64_t)T * C, CC = (int64_t)C * C;
    if (!sw || sw->shared) {
        ds_linear((int64_t)B * T, C, C, x, sw ? sw->w : W, NULL, y);
        return;
    }
    for (int b = 0; b < B; b++) ds_linear(T, C, C, x + b * TC, sw->w + b * CC, NULL, y + b * TC);
}

static void time_mix_forward(ds_rwkv7 *m, int l, layer_acts *la, acts_table *at, int B, int T,
                             const float *att_prev, const float *wkv_in, float *wkv_out) {
    const ds_rwkv7_dims *d = &m->d;
    const ds_rwkv7_layer *p = &m->w.layers[l];
    int C = d->n_embd, H = C / N;
    int64_t BT = (int64_t)B * T, n = BT * C;
    ds_k.shift_mix_forward(B, T, C, la->a, att_prev, p->x_r, la->xr);
    ds_k.shift_mix_forward(B, T, C, la->a, att_prev, p->x_w, la->xw);
    ds_k.shift_mix_forward(B, T, C, la->a, att_prev, p->x_k, la->xk);
    ds_k.shift_mix_forward(B, T, C, la->a, att_prev, p->x_v, la->xv);
    ds_k.shift_mix_forward(B, T, C, la->a, att_prev, p->x_a, la->xa);
    ds_k.shift_mix_forward(B, T, C, la->a, att_prev, p->x_g, la->xg);
    projection(m, l, 0, B, T, la->xr, p->Wr, la->r);
    projection(m, l, 1, B, T, la->xk, p->Wk, la->k0);
    projection(m, l, 2, B, T, la->xv, p->Wv, la->vraw);
    /* decay = exp(-e^{-1/2} sigmoid(w0 + tanh(xw w1) w2)) */
    lora(BT, C, d->dim_w, la->xw, p->w1, la->w_lo);
    ds_k.act_forward(DS_ACT_TANH, BT * d->dim_w, la->w_lo, la->w_hid);
    lora(BT, d->dim_w, C, la->w_hid, p->w2, la->decay);
    add_bias(BT, C, p->w0, la->decay, la->z);
    ds_k.act_forward(DS_ACT_SIGMOID, n, la->z, la->decay);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) la->decay[i] = expf(-DECAY_SCALE * la->decay[i]);
    /* in-context learning rate a = sigmoid(a0 + (xa a1) a2) */
    lora(BT, C, d->dim_a, la->xa, p->a1, la->a_lo);
    lora(BT, d->dim_a, C, la->a_lo, p->a2, la->aic);
    add_bias(BT, C, p->a0, la->aic, la->a_pre);
    ds_k.act_forward(DS_ACT_SIGMOID, n, la->a_pre, la->aic);
    /* value residual */
    if (l == 0) {
        memcpy(la->v, la->vraw, sizeof(float) * n);
        memcpy(at->v_first, la->vraw, sizeof(float) * n);
    } else {
        lora(BT, C, d->dim_v, la->xv, p->v1, la->v_lo);
        lora(BT, d->dim_v, C, la->v_lo, p->v2, la->nu);
        add_bias(BT, C, p->v0, la->nu, la->nu_pre);
        ds_k.act_forward(DS_ACT_SIGMOID, n, la->nu_pre, la->nu);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) la->v[i] = la->vraw[i] + (at->v_first[i] - la->vraw[i]) * la->nu[i];
    }
    /* output gate g = sigmoid(xg g1) g2 */
    lora(BT, C, d->dim_g, la->xg, p->g1, la->g_lo);
    ds_k.act_forward(DS_ACT_SIGMOID, BT * d->dim_g, la->g_lo, la->g_hid);
    lora(BT, d->dim_g, C, la->g_hid, p->g2, la->gate);
    /* removal key (per-head L2-normalised k0*k_k), replacement key, WKV inputs alpha, beta */
#pragma omp parallel for schedule(static)
    for (int64_t rh = 0; rh < BT * H; rh++) {
        int64_t base = rh * N;
        int c0 = (int)(base % C);
        double ss = 0;
        for (int j = 0; j < N; j++) {
            float kap = la->k0[base + j] * p->k_k[c0 + j];
            la->kk[base + j] = kap;
            ss += (double)kap * kap;
        }
        float norm = fmaxf((float)sqrt(ss), 1e-12f);
        la->kk_norm[rh] = norm;
        for (int j = 0; j < N; j++) {
            int64_t i = base + j;
            float a = la->aic[i];
            la->kk[i] /= norm;
            la->kr[i] = la->k0[i] * (1.0f + (a - 1.0f) * p->k_a[c0 + j]);
            la->alpha[i] = -la->kk[i];
            la->beta[i] = la->kk[i] * a;
        }
    }
    ds_k.wkv7_forward(B, T, H, la->r, la->decay, la->kr, la->v, la->alpha, la->beta, wkv_in, la->y, wkv_out,
                      la->ckpt);
    ds_k.norm_forward((int)BT, C, N, GN_EPS, la->y, p->lnx_w, p->lnx_b, la->gn_out, la->gn_mean, la->gn_rstd);
    /* bonus u_h = sum_n r k r_k, p = GN(y) + u_h v; output (p * gate) Wo^T added to the residual */
#pragma omp parallel for schedule(static)
    for (int64_t rh = 0; rh < BT * H; rh++) {
        int64_t base = rh * N;
        int h = (int)(rh % H);
        float u = 0;
        for (int j = 0; j < N; j++) u += la->r[base + j] * la->kr[base + j] * p->r_k[h * N + j];
        la->bonus[rh] = u;
        for (int j = 0; j < N; j++) {
            la->p[base + j] = la->gn_out[base + j] + u * la->v[base + j];
            la->pg[base + j] = la->p[base + j] * la->gate[base + j];
        }
    }
    memcpy(la->x_mid, la->x_in, sizeof(float) * n);
    ds_gemm(0, 1, BT, C, C, 1.0f, la->pg, C, p->Wo, C, 1.0f, la->x_mid, C);
}

static void channel_mix_forward(ds_rwkv7 *m, int l, layer_acts *la, int B, int T, const float *ffn_prev,
                                float *x_out) {
    const ds_rwkv7_layer *p = &m->w.layers[l];
    int C = m->d.n_embd;
    int64_t BT = (int64_t)B * T;
    ds_k.norm_forward((int)BT, C, C, LN_EPS, la->x_mid, p->ln2_w, p->ln2_b, la->b2, la->ln2_mean, la->ln2_rstd);
    ds_k.shift_mix_forward(B, T, C, la->b2, ffn_prev, p->ffn_x_k, la->xkf);
    ds_linear(BT, C, 4 * C, la->xkf, p->Kf, NULL, la->hpre);
    ds_k.act_forward(DS_ACT_RELU_SQ, BT * 4 * C, la->hpre, la->hact);
    memcpy(x_out, la->x_mid, sizeof(float) * BT * C);
    ds_gemm(0, 1, BT, C, 4 * C, 1.0f, la->hact, 4 * C, p->Vf, 4 * C, 1.0f, x_out, C);
}

/* Copies row t = T-1 of each sequence of x [B,T,C] into out [B,C]. */
static void last_rows(int B, int T, int C, const float *x, float *out) {
    for (int b = 0; b < B; b++) memcpy(out + (int64_t)b * C, x + ((int64_t)b * T + T - 1) * C, sizeof(float) * C);
}

/* Block l from its input at->layers[l].x_in: ln1, time mix, channel mix, its output written to the next
 * block's input (or x_final). state_in (NULL = zero) is read, state_out (NULL = not wanted) written. */
static void block_forward(ds_rwkv7 *m, acts_table *at, int l, const ds_rwkv7_state *state_in,
                          ds_rwkv7_state *state_out) {
    int B = at->B, T = at->T, C = m->d.n_embd;
    int64_t BT = (int64_t)B * T, row = (int64_t)l * B * C;
    layer_acts *la = &at->layers[l];
    const ds_rwkv7_layer *p = &m->w.layers[l];
    ds_k.norm_forward((int)BT, C, C, LN_EPS, la->x_in, p->ln1_w, p->ln1_b, la->a, la->ln1_mean, la->ln1_rstd);
    const float *att_prev = state_in ? state_in->att_x + row : NULL;
    const float *ffn_prev = state_in ? state_in->ffn_x + row : NULL;
    const float *wkv_in = state_in ? state_in->wkv + row * N : NULL;  /* [L,B,H,N,N]: H N = C */
    float *wkv_out = state_out ? state_out->wkv + row * N : NULL;
    time_mix_forward(m, l, la, at, B, T, att_prev, wkv_in, wkv_out);
    float *x_out = l + 1 < m->d.n_layer ? at->layers[l + 1].x_in : at->x_final;
    channel_mix_forward(m, l, la, B, T, ffn_prev, x_out);
    if (state_out) {  /* written after all reads of state_in, so in == out is allowed */
        last_rows(B, T, C, la->a, state_out->att_x + row);
        last_rows(B, T, C, la->b2, state_out->ffn_x + row);
    }
}

/* Embedding, ln0, the blocks and ln_out of tokens [B,T] into the activations (at->lnout). */
static acts_table *forward_to_ln_out(ds_rwkv7 *m, int B, int T, const int32_t *tokens, const ds_rwkv7_state *state_in,
                                     ds_rwkv7_state *state_out) {
    const ds_rwkv7_dims *d = &m->d;
    ds_rwkv7_reserve(m, B, T);
    acts_table *at = m->act;
    layout(d, B, T, at->grad_checkpoint, m->acts, at);
    at->B = B;
    at->T = T;
    int C = d->n_embd, V = d->vocab_size, L = d->n_layer;
    int64_t BT = (int64_t)B * T;
    memcpy(at->tokens, tokens, sizeof(int32_t) * BT);
    for (int64_t i = 0; i < BT; i++) {
        if (tokens[i] < 0 || tokens[i] >= V) ds_die(DS_EXIT_BAD_INPUT, "token id %d out of range [0, %d)", tokens[i], V);
        memcpy(at->emb_rows + i * C, m->w.emb + (int64_t)tokens[i] * C, sizeof(float) * C);
    }
    ds_k.norm_forward((int)BT, C, C, LN_EPS, at->emb_rows, m->w.ln0_w, m->w.ln0_b, at->layers[0].x_in,
                      at->ln0_mean, at->ln0_rstd);
    if (state_in) {  /* kept for the backward, and with grad_checkpoint for its recomputation */
        size_t part = sizeof(float) * L * B * C;
        memcpy(at->state_in.att_x, state_in->att_x, part);
        memcpy(at->state_in.ffn_x, state_in->ffn_x, part);
        if (at->grad_checkpoint) memcpy(at->state_in.wkv, state_in->wkv, part * N);
    }
    for (int l = 0; l < L; l++) block_forward(m, at, l, state_in, state_out);
    ds_k.norm_forward((int)BT, C, C, LN_EPS, at->x_final, m->w.ln_out_w, m->w.ln_out_b, at->lnout,
                      at->lnout_mean, at->lnout_rstd);
    at->has_targets = 0;
    at->has_state_in = state_in != NULL;
    return at;
}

const float *ds_rwkv7_forward_hidden(ds_rwkv7 *m, int B, int T, const int32_t *tokens) {
    return forward_to_ln_out(m, B, T, tokens, NULL, NULL)->lnout;
}

double ds_rwkv7_forward(ds_rwkv7 *m, int B, int T, const int32_t *tokens, const int32_t *targets,
                        float loss_scale, float l2wrap, const ds_rwkv7_state *state_in,
                        ds_rwkv7_state *state_out, float *logits_out) {
    acts_table *at = forward_to_ln_out(m, B, T, tokens, state_in, state_out);
    int C = m->d.n_embd, V = m->d.vocab_size;
    int64_t BT = (int64_t)B * T;
    ds_linear(BT, C, V, at->lnout, m->w.head, NULL, at->logits);
    if (logits_out) memcpy(logits_out, at->logits, sizeof(float) * BT * V);
    at->has_targets = targets != NULL;
    if (!targets) return 0.0;
    int64_t count = 0;
    for (int64_t i = 0; i < BT; i++) {
        at->targets[i] = targets[i];
        if (targets[i] >= V) ds_die(DS_EXIT_BAD_INPUT, "target id %d out of range [0, %d)", targets[i], V);
        count += targets[i] >= 0;
    }
    if (count == 0) count = 1;
    ds_k.softmax_xent((int)BT, V, at->logits, at->targets, loss_scale / (float)count, l2wrap, at->losses);
    double loss = 0;
    for (int64_t i = 0; i < BT; i++) loss += at->losses[i];
    return loss / (double)count;
}

const float *ds_rwkv7_ln_out(const ds_rwkv7 *m) {
    return ((const acts_table *)m->act)->lnout;
}

/* A weight's gradient array, or NULL when the weights are frozen: the matrix products that would fill it
 * are skipped. */
static float *weight_grad(const ds_rwkv7 *m, float *g) { return m->frozen ? NULL : g; }

/* Backward of projection: dx += dy W and the weight gradient: the model's dW += dy^T x (skipped when
 * frozen), or the caller's (shared: into g; else each sequence's into g + b C C), also when frozen: it is
 * what the caller asked for. */
static void projection_backward(const ds_rwkv7 *m, int l, int mat, int B, int T, const float *x, const float *W,
                                const float *dy, float *dW, float *dx) {
    const ds_rwkv7_seq_weight *sw = seq_weight(m, l, mat);
    int C = m->d.n_embd;
    int64_t TC = (int64_t)T * C, CC = (int64_t)C * C;
    if (!sw || sw->shared) {
        ds_linear_backward((int64_t)B * T, C, C, x, sw ? sw->w : W, dy, sw ? sw->g : weight_grad(m, dW), NULL, dx, 1);
        return;
    }
    for (int b = 0; b < B; b++)
        ds_linear_backward(T, C, C, x + b * TC, sw->w + b * CC, dy + b * TC, sw->g + b * CC, NULL, dx + b * TC, 1);
}

/* att_prev [B,C]: the token-shift state the forward started from (NULL = zero); d_att [B,C] and d_wkv
 * [B,H,N,N] (NULL = not wanted) receive (+=) the gradient of this layer's part of the initial state. */
static void time_mix_backward(ds_rwkv7 *m, int l, layer_acts *la, acts_table *at, int B, int T,
                              const float *att_prev, float *d_att, float *d_wkv) {
    const ds_rwkv7_dims *d = &m->d;
    const ds_rwkv7_layer *p = &m->w.layers[l];
    ds_rwkv7_layer *g = &m->g.layers[l];
    grad_scratch *s = &at->gs;
    int C = d->n_embd, H = C / N;
    int64_t BT = (int64_t)B * T, n = BT * C;
    /* s->dxm holds dL/dx_mid; output projection and gate */
    ds_linear_backward(BT, C, C, la->pg, p->Wo, s->dxm, weight_grad(m, g->Wo), NULL, s->dpg, 0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        s->dp[i] = s->dpg[i] * la->gate[i];
        s->dgate[i] = s->dpg[i] * la->p[i];
    }
    float *dxs[6] = {s->dxr, s->dxw, s->dxk, s->dxv, s->dxa, s->dxg};
    for (int i = 0; i < 6; i++) zero(dxs[i], n);
    zero(s->dg_hid, BT * d->dim_g);
    zero(s->dg_lo, BT * d->dim_g);
    lora_backward(BT, d->dim_g, C, la->g_hid, p->g2, s->dgate, s->dg_hid, weight_grad(m, g->g2));
    ds_k.act_backward(DS_ACT_SIGMOID, BT * d->dim_g, la->g_lo, s->dg_hid, s->dg_lo);
    lora_backward(BT, C, d->dim_g, la->xg, p->g1, s->dg_lo, s->dxg, weight_grad(m, g->g1));
    /* bonus: p = GN(y) + u_h v, u_h = sum r k r_k */
    zero(s->dr, n); zero(s->dkr, n); zero(s->ddecay, n); zero(s->dalpha, n); zero(s->dbeta, n); zero(s->dy, n);
#pragma omp parallel for schedule(static)
    for (int64_t rh = 0; rh < BT * H; rh++) {
        int64_t base = rh * N;
        int h = (int)(rh % H);
        float du = 0, u = la->bonus[rh];
        for (int j = 0; j < N; j++) du += s->dp[base + j] * la->v[base + j];
        for (int j = 0; j < N; j++) {
            int64_t i = base + j;
            s->dv[i] = s->dp[i] * u;
            s->dr[i] = du * la->kr[i] * p->r_k[h * N + j];
            s->dkr[i] = du * la->r[i] * p->r_k[h * N + j];
            s->dnu[i] = du * la->r[i] * la->kr[i];  /* per-element r_k gradient, summed below */
        }
    }
    ds_sum_rows(BT, C, s->dnu, g->r_k);  /* r_k [H,N] is one value per channel */
    ds_k.norm_backward((int)BT, C, N, s->dp, la->y, la->gn_mean, la->gn_rstd, p->lnx_w, s->dy, g->lnx_w, g->lnx_b);
    ds_k.wkv7_backward(B, T, H, la->r, la->decay, la->kr, la->v, la->alpha, la->beta, la->ckpt, s->dy, NULL,
                       s->dr, s->ddecay, s->dkr, s->dv, s->dalpha, s->dbeta, d_wkv);
    /* keys: kk = normalise(k0 k_k), kr = k0 (1 + (a-1) k_a), alpha = -kk, beta = kk a */
#pragma omp parallel for schedule(static)
    for (int64_t rh = 0; rh < BT * H; rh++) {
        int64_t base = rh * N;
        int c0 = (int)(base % C);
        float dot = 0;
        for (int j = 0; j < N; j++) {
            int64_t i = base + j;
            s->dkk[i] = -s->dalpha[i] + s->dbeta[i] * la->aic[i];
            s->daic[i] = s->dbeta[i] * la->kk[i] + s->dkr[i] * la->k0[i] * p->k_a[c0 + j];
            dot += la->kk[i] * s->dkk[i];
        }
        float inv = 1.0f / la->kk_norm[rh];
        for (int j = 0; j < N; j++) {
            int64_t i = base + j;
            float dkap = (s->dkk[i] - la->kk[i] * dot) * inv;  /* d(k0 * k_k) */
            s->dkk[i] = dkap;
            s->dk0[i] = s->dkr[i] * (1.0f + (la->aic[i] - 1.0f) * p->k_a[c0 + j]) + dkap * p->k_k[c0 + j];
        }
    }
    /* k_a, k_k per-channel reductions */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double ska = 0, skk = 0;
        for (int64_t r = 0; r < BT; r++) {
            int64_t i = r * C + c;
            ska += (double)s->dkr[i] * la->k0[i] * (la->aic[i] - 1.0f);
            skk += (double)s->dkk[i] * la->k0[i];
        }
        g->k_a[c] += (float)ska;
        g->k_k[c] += (float)skk;
    }
    /* a = sigmoid(a_pre): reuse daic as d(a_pre) */
    zero(s->dz, n);
    ds_k.act_backward(DS_ACT_SIGMOID, n, la->a_pre, s->daic, s->dz);
    ds_sum_rows(BT, C, s->dz, g->a0);
    zero(s->da_lo, BT * d->dim_a);
    lora_backward(BT, d->dim_a, C, la->a_lo, p->a2, s->dz, s->da_lo, weight_grad(m, g->a2));
    lora_backward(BT, C, d->dim_a, la->xa, p->a1, s->da_lo, s->dxa, weight_grad(m, g->a1));
    /* value residual */
    if (l == 0) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) s->dvraw[i] = s->dv[i] + s->dv_first[i];
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float nu = la->nu[i];
            s->dvraw[i] = s->dv[i] * (1.0f - nu);
            s->dv_first[i] += s->dv[i] * nu;
            s->dnu[i] = s->dv[i] * (at->v_first[i] - la->vraw[i]);
        }
        zero(s->dz, n);
        ds_k.act_backward(DS_ACT_SIGMOID, n, la->nu_pre, s->dnu, s->dz);
        ds_sum_rows(BT, C, s->dz, g->v0);
        zero(s->dv_lo, BT * d->dim_v);
        lora_backward(BT, d->dim_v, C, la->v_lo, p->v2, s->dz, s->dv_lo, weight_grad(m, g->v2));
        lora_backward(BT, C, d->dim_v, la->xv, p->v1, s->dv_lo, s->dxv, weight_grad(m, g->v1));
    }
    /* decay = exp(-c sigmoid(z)): dz = ddecay * decay * (-c) * sigmoid'(z) */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) s->dsig[i] = s->ddecay[i] * la->decay[i] * (-DECAY_SCALE);
    zero(s->dz, n);
    ds_k.act_backward(DS_ACT_SIGMOID, n, la->z, s->dsig, s->dz);
    ds_sum_rows(BT, C, s->dz, g->w0);
    zero(s->dw_hid, BT * d->dim_w);
    zero(s->dw_lo, BT * d->dim_w);
    lora_backward(BT, d->dim_w, C, la->w_hid, p->w2, s->dz, s->dw_hid, weight_grad(m, g->w2));
    ds_k.act_backward(DS_ACT_TANH, BT * d->dim_w, la->w_lo, s->dw_hid, s->dw_lo);
    lora_backward(BT, C, d->dim_w, la->xw, p->w1, s->dw_lo, s->dxw, weight_grad(m, g->w1));
    /* projections */
    projection_backward(m, l, 0, B, T, la->xr, p->Wr, s->dr, g->Wr, s->dxr);
    projection_backward(m, l, 1, B, T, la->xk, p->Wk, s->dk0, g->Wk, s->dxk);
    projection_backward(m, l, 2, B, T, la->xv, p->Wv, s->dvraw, g->Wv, s->dxv);
    /* six token shifts into d(ln1 output), then ln1 into the residual gradient */
    zero(s->d_a, n);
    const float *mus[6] = {p->x_r, p->x_w, p->x_k, p->x_v, p->x_a, p->x_g};
    float *dmus[6] = {g->x_r, g->x_w, g->x_k, g->x_v, g->x_a, g->x_g};
    for (int i = 0; i < 6; i++) ds_k.shift_mix_backward(B, T, C, la->a, att_prev, mus[i], dxs[i], s->d_a, d_att, dmus[i]);
    memcpy(s->dx, s->dxm, sizeof(float) * n);
    ds_k.norm_backward((int)BT, C, C, s->d_a, la->x_in, la->ln1_mean, la->ln1_rstd, p->ln1_w, s->dx, g->ln1_w, g->ln1_b);
}

/* ffn_prev [B,C]: the forward's initial ffn token-shift state (NULL = zero); d_ffn [B,C] (NULL = not
 * wanted) receives (+=) its gradient. */
static void channel_mix_backward(ds_rwkv7 *m, int l, layer_acts *la, acts_table *at, int B, int T,
                                 const float *ffn_prev, float *d_ffn) {
    const ds_rwkv7_layer *p = &m->w.layers[l];
    ds_rwkv7_layer *g = &m->g.layers[l];
    grad_scratch *s = &at->gs;
    int C = m->d.n_embd;
    int64_t BT = (int64_t)B * T, n = BT * C;
    /* s->dx holds dL/d(layer output) */
    ds_linear_backward(BT, 4 * C, C, la->hact, p->Vf, s->dx, weight_grad(m, g->Vf), NULL, s->dhact, 0);
    zero(s->dhpre, BT * 4 * C);
    ds_k.act_backward(DS_ACT_RELU_SQ, BT * 4 * C, la->hpre, s->dhact, s->dhpre);
    zero(s->dxkf, n);
    ds_linear_backward(BT, C, 4 * C, la->xkf, p->Kf, s->dhpre, weight_grad(m, g->Kf), NULL, s->dxkf, 1);
    zero(s->d_b2, n);
    ds_k.shift_mix_backward(B, T, C, la->b2, ffn_prev, p->ffn_x_k, s->dxkf, s->d_b2, d_ffn, g->ffn_x_k);
    memcpy(s->dxm, s->dx, sizeof(float) * n);
    ds_k.norm_backward((int)BT, C, C, s->d_b2, la->x_mid, la->ln2_mean, la->ln2_rstd, p->ln2_w, s->dxm, g->ln2_w, g->ln2_b);
}

static void grads_ready(ds_rwkv7 *m, int64_t begin, int64_t end) {
    if (m->grads_ready && !m->frozen) m->grads_ready(m->grads_ready_ctx, begin, end - begin);
}

static void backward(ds_rwkv7 *m, ds_rwkv7_state *d_state) {
    acts_table *at = m->act;
    if (!at || !at->has_targets) ds_die(DS_EXIT_FAIL, "rwkv7 backward: the last forward had no targets");
    const ds_rwkv7_dims *d = &m->d;
    grad_scratch *s = &at->gs;
    int B = at->B, T = at->T, C = d->n_embd, V = d->vocab_size;
    int64_t BT = (int64_t)B * T, n = BT * C;
    if (d_state) {
        if (d_state->B != B) ds_die(DS_EXIT_FAIL, "rwkv7 backward: a state gradient for %d sequences, the forward had %d",
                                    d_state->B, B);
        memset(d_state->data, 0, sizeof(float) * d_state->numel);
    }
    /* head and ln_out; at->logits holds dlogits after the fused softmax-xent */
    ds_linear_backward(BT, C, V, at->lnout, m->w.head, at->logits, weight_grad(m, m->g.head), NULL, s->d_lnout, 0);
    zero(s->dx, n);
    ds_k.norm_backward((int)BT, C, C, s->d_lnout, at->x_final, at->lnout_mean, at->lnout_rstd, m->w.ln_out_w,
                       s->dx, m->g.ln_out_w, m->g.ln_out_b);
    grads_ready(m, m->layer_begin[d->n_layer], m->n_params);
    zero(s->dv_first, n);
    for (int l = d->n_layer - 1; l >= 0; l--) {
        layer_acts *la = &at->layers[l];
        int64_t row = (int64_t)l * B * C;
        const ds_rwkv7_state *in = at->has_state_in ? &at->state_in : NULL;
        /* the same kernels on the same input: the internals equal the forward's bit for bit */
        if (at->grad_checkpoint) block_forward(m, at, l, in, NULL);
        const float *att_prev = in ? in->att_x + row : NULL, *ffn_prev = in ? in->ffn_x + row : NULL;
        channel_mix_backward(m, l, la, at, B, T, ffn_prev, d_state ? d_state->ffn_x + row : NULL);
        time_mix_backward(m, l, la, at, B, T, att_prev, d_state ? d_state->att_x + row : NULL,
                          d_state ? d_state->wkv + row * N : NULL);  /* [L,B,H,N,N]: H N = C */
        grads_ready(m, m->layer_begin[l], m->layer_begin[l + 1]);
    }
    if (m->frozen) return;  /* what is left reaches the embedding and ln0 only */
    zero(s->d_emb_rows, n);
    ds_k.norm_backward((int)BT, C, C, s->dx, at->emb_rows, at->ln0_mean, at->ln0_rstd, m->w.ln0_w, s->d_emb_rows,
                       m->g.ln0_w, m->g.ln0_b);
    /* scatter rows into the embedding gradient in token order (deterministic) */
    for (int64_t i = 0; i < BT; i++) {
        float *ge = m->g.emb + (int64_t)at->tokens[i] * C;
        const float *dr = s->d_emb_rows + i * C;
        for (int c = 0; c < C; c++) ge[c] += dr[c];
    }
    grads_ready(m, 0, m->layer_begin[0]);
}

void ds_rwkv7_backward(ds_rwkv7 *m) { backward(m, NULL); }

void ds_rwkv7_backward_state(ds_rwkv7 *m, ds_rwkv7_state *d_state) { backward(m, d_state); }

/* Matrix-product FLOPs per token of one forward are 2x this. */
static double matmul_params(const ds_rwkv7_dims *d) {
    double C = d->n_embd, L = d->n_layer, V = d->vocab_size;
    return L * (12.0 * C * C + 2.0 * C * (d->dim_w + d->dim_a + d->dim_v + d->dim_g)) + V * C;
}

/* WKV: ~9 N^2 flops per head per token forward; backward with replay ~3x that */
static double wkv_flops(const ds_rwkv7_dims *d) { return d->n_layer * 4.0 * 9.0 * N * d->n_embd; }

double ds_rwkv7_flops_per_token(const ds_rwkv7_dims *d, int T) {
    (void)T;
    return 6.0 * matmul_params(d) + wkv_flops(d);
}

double ds_rwkv7_frozen_flops_per_token(const ds_rwkv7_dims *d) { return 4.0 * matmul_params(d) + wkv_flops(d); }

double ds_rwkv7_recompute_flops_per_token(const ds_rwkv7_dims *d) {
    double head = (double)d->vocab_size * d->n_embd;
    return 2.0 * (matmul_params(d) - head) + wkv_flops(d) / 4.0;
}
