/* DiT tests in C (src/dit/README.md §1, §5.2, §5.3): initialisation (identity blocks, zero output, the
 * init distributions of src/dit/README.md §1.5, parameter count), patch orders against a direct convolution, batch
 * independence, determinism, per-tensor directional finite differences of the loss, bad input, and
 * the overfit test: 8 random states with 8 labels, trained with
 * AdamW, then regenerated from noise by DDIM-50 at guidance 1 to under 5% relative error each.
 * With `--dump FILE C I P D DEPTH HEADS K COND B SEED [fp32|bf16]` it instead writes weights, inputs,
 * loss, output, dL/dx_t and every gradient, with fp32 or bf16 matrix products (blas.h), for
 * tests/ref/test_dit_torch.py, which compares them against an independent PyTorch implementation. */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/diffusion.h"
#include "dreamstate/dit.h"
#include "dreamstate/kernels.h"
#include "test.h"

#include <omp.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* A DiT with the init of src/dit/README.md §1.5, then every parameter moved by noise * N(0, 1) so that the zero-initialised
 * adaLN and final layers do not hide the attention and MLP gradients (src/dit/README.md §5.1). */
static void make_model(ds_dit *m, const ds_dit_dims *d, uint64_t seed, float noise) {
    ds_dit_create(m, d);
    ds_dit_init_weights(m, seed);
    for (int64_t i = 0; i < m->n_params; i++) m->params[i] += noise * (float)ds_rng_normal(seed, 999, i);
}

static float *randn(int64_t n, uint64_t seed, uint64_t stream) {
    float *x = ds_alloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)ds_rng_normal(seed, stream, i);
    return x;
}

/* Inputs of a test batch: x_t, t, labels (sample 1 gets the null label), vectors (sample 0 dropped),
 * noise. */
typedef struct {
    float *x, *noise, *vec;
    int32_t *t, *labels;
    uint8_t *vec_null;
    ds_dit_cond cond;
} batch;

static void make_batch(batch *bt, const ds_dit_dims *d, int B, uint64_t seed) {
    int64_t n = (int64_t)d->in_channels * d->input_size * d->input_size;
    bt->x = randn(B * n, seed, 1);
    bt->noise = randn(B * n, seed, 2);
    bt->vec = randn((int64_t)B * (d->cond_dim > 0 ? d->cond_dim : 1), seed, 3);
    bt->t = ds_alloc(sizeof(int32_t) * B);
    bt->labels = ds_alloc(sizeof(int32_t) * B);
    bt->vec_null = ds_alloc((size_t)B);
    for (int b = 0; b < B; b++) {
        bt->t[b] = (int32_t)(ds_rng_u64(seed, 4, b) % DS_DIFFUSION_STEPS);
        bt->labels[b] = d->num_classes > 0 ? (b == 1 ? d->num_classes : (int32_t)(ds_rng_u64(seed, 5, b) % d->num_classes)) : 0;
        bt->vec_null[b] = b == 0;
    }
    bt->cond = (ds_dit_cond){d->num_classes > 0 ? bt->labels : NULL, d->cond_dim > 0 ? bt->vec : NULL,
                             d->cond_dim > 0 ? bt->vec_null : NULL};
}

static void free_batch(batch *bt) {
    ds_free(bt->x), ds_free(bt->noise), ds_free(bt->vec), ds_free(bt->t), ds_free(bt->labels), ds_free(bt->vec_null);
}

/* ---------------------------------------------------------------- dump for the PyTorch reference */

static int dump_mode(int argc, char **argv) {
    if (argc != 13 && argc != 14) {
        fprintf(stderr, "usage: test_dit --dump FILE C I P D DEPTH HEADS K COND B SEED [fp32|bf16]\n");
        return 2;
    }
    ds_blas_set_precision(argc == 14 && strcmp(argv[13], "bf16") == 0 ? DS_PRECISION_BF16 : DS_PRECISION_FP32);
    ds_dit_dims d = {.in_channels = atoi(argv[3]), .input_size = atoi(argv[4]), .patch_size = atoi(argv[5]),
                     .hidden = atoi(argv[6]), .depth = atoi(argv[7]), .heads = atoi(argv[8]), .mlp_ratio = 4,
                     .num_classes = atoi(argv[9]), .cond_dim = atoi(argv[10])};
    int B = atoi(argv[11]);
    uint64_t seed = strtoull(argv[12], NULL, 10);
    ds_dit m;
    make_model(&m, &d, seed, 0.05f);
    batch bt;
    make_batch(&bt, &d, B, seed);
    int64_t n = (int64_t)d.in_channels * d.input_size * d.input_size;
    float *eps = ds_alloc(sizeof(float) * B * n), *dx = ds_alloc(sizeof(float) * B * n);
    float *d_eps = ds_alloc(sizeof(float) * B * n), *dvec = ds_alloc(sizeof(float) * B * (d.cond_dim + 1));
    ds_dit_zero_grad(&m);
    float loss = (float)ds_dit_forward(&m, B, bt.x, bt.t, &bt.cond, bt.noise, eps);
    if (d.cond_dim > 0) {  /* the MSE's own gradient, through the entry point that gives the vectors' gradient */
        ds_eps_mse(B * n, eps, bt.noise, d_eps);
        ds_dit_backward_from(&m, d_eps, dx, dvec);
    } else {
        ds_dit_backward(&m, dx);
    }
    ds_atomic_file af;
    if (ds_atomic_open(&af, argv[2]) != 0) ds_die(DS_EXIT_BAD_INPUT, "cannot write %s", argv[2]);
    FILE *f = af.fp;
    fwrite("DSDUMP01", 1, 8, f);
    int32_t dims[10] = {d.in_channels, d.input_size, d.patch_size, d.hidden, d.depth, d.heads, d.mlp_ratio,
                        d.num_classes, d.cond_dim, B};
    int32_t *vec_null = ds_alloc(sizeof(int32_t) * B);
    for (int b = 0; b < B; b++) vec_null[b] = bt.vec_null[b];
    int64_t s10[1] = {10}, sB[1] = {B}, sX[4] = {B, d.in_channels, d.input_size, d.input_size}, s1[1] = {1};
    int64_t sV[2] = {B, d.cond_dim > 0 ? d.cond_dim : 1};
    test_dump_tensor(f, "dims", 1, s10, 1, dims);
    test_dump_tensor(f, "x_t", 4, sX, 0, bt.x);
    test_dump_tensor(f, "t", 1, sB, 1, bt.t);
    test_dump_tensor(f, "labels", 1, sB, 1, bt.labels);
    test_dump_tensor(f, "vec", 2, sV, 0, bt.vec);
    test_dump_tensor(f, "vec_null", 1, sB, 1, vec_null);
    test_dump_tensor(f, "noise", 4, sX, 0, bt.noise);
    test_dump_tensor(f, "loss", 1, s1, 0, &loss);
    test_dump_tensor(f, "eps", 4, sX, 0, eps);
    test_dump_tensor(f, "dx", 4, sX, 0, dx);
    if (d.cond_dim > 0) test_dump_tensor(f, "dvec", 2, sV, 0, dvec);
    char name[96];
    for (int i = 0; i < m.n_tensors; i++) {
        const ds_param_tensor *t = &m.tensors[i];
        test_dump_tensor(f, t->name, t->ndim, t->shape, 0, m.params + t->offset);
        snprintf(name, sizeof name, "grad.%s", t->name);
        test_dump_tensor(f, name, t->ndim, t->shape, 0, m.grads + t->offset);
    }
    uint32_t end = 0;
    fwrite(&end, 4, 1, f);
    if (ds_atomic_commit(&af) != 0) ds_die(DS_EXIT_FAIL, "cannot write %s", argv[2]);
    ds_free(eps), ds_free(dx), ds_free(d_eps), ds_free(dvec), ds_free(vec_null);
    free_batch(&bt);
    ds_dit_destroy(&m);
    return 0;
}

/* ---------------------------------------------------------------- structure and initialisation */

static const ds_dit_dims small = {.in_channels = 4, .input_size = 16, .patch_size = 4, .hidden = 64, .depth = 2,
                                  .heads = 4, .mlp_ratio = 4, .num_classes = 5, .cond_dim = 7};

static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static void test_init(void) {
    ds_dit m;
    ds_dit_create(&m, &small);
    ds_dit_init_weights(&m, 11);
    int D = 64, P = 64, R = 256, K = 5, E = 7, L = 2;
    /* parameter count from the architecture */
    int64_t want = (int64_t)D * P + D + D * 256 + D + D * D + D + (K + 1) * D + D * E + 2 * D +
                   L * ((int64_t)3 * D * D + 3 * D + D * D + D + R * D + R + D * R + D + 6 * D * D + 6 * D) +
                   2 * D * D + 2 * D + P * D + P;
    int64_t counted = 0;
    for (int i = 0; i < m.n_tensors; i++) counted += m.tensors[i].numel;
    CHECK(counted == want, "parameter count %lld vs architecture %lld", (long long)counted, (long long)want);
    /* zero-initialised: every adaLN Linear and the final Linear (src/dit/README.md §1.5); biases */
    double zero = max_abs(m.w.final_ada_w, 2 * D * D) + max_abs(m.w.final_w, P * D) + max_abs(m.w.final_b, P);
    for (int l = 0; l < L; l++) zero += max_abs(m.w.blocks[l].ada_w, 6 * D * D) + max_abs(m.w.blocks[l].ada_b, 6 * D) +
                                        max_abs(m.w.blocks[l].qkv_b, 3 * D) + max_abs(m.w.blocks[l].fc1_b, R);
    CHECK(zero == 0, "adaLN, final layer and biases start at zero");
    /* Xavier-uniform bounds and the N(0, 0.02^2) tables */
    double b_qkv = sqrt(6.0 / (4 * D)), b_fc1 = sqrt(6.0 / (D + R));
    double mq = max_abs(m.w.blocks[1].qkv_w, 3 * D * D), mf = max_abs(m.w.blocks[0].fc1_w, R * D);
    CHECK(mq <= b_qkv && mq > 0.95 * b_qkv && mf <= b_fc1 && mf > 0.95 * b_fc1,
          "Xavier-uniform qkv max %.4f (bound %.4f), fc1 max %.4f (bound %.4f)", mq, b_qkv, mf, b_fc1);
    double sq = 0;
    for (int i = 0; i < D * 256; i++) sq += (double)m.w.t_w1[i] * m.w.t_w1[i];
    double sd = sqrt(sq / (D * 256));
    CHECK(fabs(sd - 0.02) < 0.001, "timestep MLP weights std %.5f (0.02)", sd);
    const ds_param_tensor *t = ds_param_find(m.n_tensors, m.tensors, "y_embedder.embedding_table.weight");
    CHECK(t && t->shape[0] == K + 1 && t->shape[1] == D, "label table has K + 1 rows (null label)");
    t = ds_param_find(m.n_tensors, m.tensors, "x_embedder.proj.weight");
    CHECK(t && t->ndim == 4 && t->shape[1] == 4 && t->shape[2] == 4 && t->weight_decay, "patch embed [d, C, p, p]");
    CHECK(ds_param_find(m.n_tensors, m.tensors, "blocks.1.adaLN_modulation.1.weight") &&
          !ds_param_find(m.n_tensors, m.tensors, "blocks.2.attn.qkv.weight"), "DiT state-dict names");
    /* forward cost against the published DiT counts (src/dit/README.md §2) (GMAC = 1e9 multiply-adds; the
     * ImageNet models there learn sigma, 2x output channels, < 0.1% of their count) */
    ds_dit_dims xl2 = {4, 32, 2, 1152, 28, 16, 4, 1000, 0}, s4 = {4, 32, 4, 384, 12, 6, 4, 1000, 0},
                b4_state = {12, 64, 4, 768, 12, 12, 4, 8, 0};
    double g_xl2 = ds_dit_forward_flops(&xl2) / 2e9, g_s4 = ds_dit_forward_flops(&s4) / 2e9,
           g_b4 = ds_dit_forward_flops(&b4_state) / 2e9;
    CHECK(fabs(g_xl2 / 118.62 - 1) < 1e-3 && fabs(g_s4 / 1.41 - 1) < 5e-3 && fabs(g_b4 / 23.1 - 1) < 5e-3,
          "forward GMAC: DiT-XL/2 %.2f (118.62), DiT-S/4 %.3f (1.41), state DiT-B/4 %.2f (23.1)", g_xl2, g_s4, g_b4);

    /* src/dit/README.md §5.2: at init the output is exactly 0 */
    batch bt;
    make_batch(&bt, &small, 3, 5);
    float *eps = ds_alloc(sizeof(float) * 3 * 1024);
    ds_dit_forward(&m, 3, bt.x, bt.t, &bt.cond, NULL, eps);
    CHECK(max_abs(eps, 3 * 1024) == 0, "output is exactly 0 at init");

    /* src/dit/README.md §5.2: each block is the identity. Give the final layer and the embeddings non-zero values, then
     * the depth-2 model must equal the depth-0 model with the same non-block tensors, bit for bit. */
    for (int i = 0; i < m.n_tensors; i++)
        if (strncmp(m.tensors[i].name, "blocks.", 7) != 0)
            for (int64_t j = 0; j < m.tensors[i].numel; j++)
                m.params[m.tensors[i].offset + j] += 0.05f * (float)ds_rng_normal(3, i, j);
    ds_dit_dims d0 = small;
    d0.depth = 0;
    ds_dit m0;
    ds_dit_create(&m0, &d0);
    for (int i = 0; i < m0.n_tensors; i++) {
        const ds_param_tensor *src = ds_param_find(m.n_tensors, m.tensors, m0.tensors[i].name);
        memcpy(m0.params + m0.tensors[i].offset, m.params + src->offset, sizeof(float) * src->numel);
    }
    float *eps0 = ds_alloc(sizeof(float) * 3 * 1024);
    ds_dit_forward(&m, 3, bt.x, bt.t, &bt.cond, NULL, eps);
    ds_dit_forward(&m0, 3, bt.x, bt.t, &bt.cond, NULL, eps0);
    CHECK(max_abs(eps, 3 * 1024) > 0 && !memcmp(eps, eps0, sizeof(float) * 3 * 1024),
          "zero-initialised adaLN: depth 2 equals depth 0 bit for bit (blocks are the identity)");
    ds_free(eps), ds_free(eps0);
    free_batch(&bt);
    ds_dit_destroy(&m0);
    ds_dit_destroy(&m);
}

/* src/dit/README.md §5.3: patch orders. Output order (row, col, channel) and input order (channel, row, col) both
 * invert exactly; the input order times the [d, C, p, p] weight equals a direct convolution with
 * kernel = stride = p. */
static void test_patches(void) {
    int ps[3] = {2, 4, 8}, Cs[3] = {4, 12, 432};
    int exact = 1;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            int p = ps[a], C = Cs[b], I = C == 432 ? 16 : 64;
            int64_t n = (int64_t)C * I * I;
            float *img = randn(n, 7, (uint64_t)(a * 3 + b)), *pt = ds_alloc(sizeof(float) * n), *back = ds_alloc(sizeof(float) * n);
            for (int order = 0; order < 2; order++) {
                ds_dit_image_to_patches(C, I, p, order, img, pt);
                ds_dit_patches_to_image(C, I, p, order, pt, back);
                exact &= !memcmp(img, back, sizeof(float) * n);
            }
            /* spot checks of the two orders: pixel (c, r, q) in token (r/p, q/p) */
            int c = C - 1, r = I - 1, q = p + 1, G = I / p, tok = (r / p) * G + q / p, u = r % p, v = q % p;
            float pix = img[((int64_t)c * I + r) * I + q];
            ds_dit_image_to_patches(C, I, p, 1, img, pt);
            exact &= pt[(int64_t)tok * C * p * p + (u * p + v) * C + c] == pix;
            ds_dit_image_to_patches(C, I, p, 0, img, pt);
            exact &= pt[(int64_t)tok * C * p * p + ((int64_t)c * p + u) * p + v] == pix;
            ds_free(img), ds_free(pt), ds_free(back);
        }
    CHECK(exact, "patch orders (p = 2, 4, 8; C = 4, 12, 432) invert exactly and place pixels as in src/dit/README.md §1.1");

    int C = 3, I = 8, p = 4, G = 2, D = 5, P = C * p * p;
    float *img = randn(C * I * I, 8, 1), *W = randn(D * P, 8, 2), *pt = ds_alloc(sizeof(float) * G * G * P);
    ds_dit_image_to_patches(C, I, p, 0, img, pt);
    double worst = 0;
    for (int gr = 0; gr < G; gr++)
        for (int gc = 0; gc < G; gc++)
            for (int o = 0; o < D; o++) {
                double conv = 0, lin = 0;
                for (int c = 0; c < C; c++)
                    for (int u = 0; u < p; u++)
                        for (int v = 0; v < p; v++)
                            conv += (double)W[((o * C + c) * p + u) * p + v] * img[(c * I + gr * p + u) * I + gc * p + v];
                for (int k = 0; k < P; k++) lin += (double)W[o * P + k] * pt[(gr * G + gc) * P + k];
                worst = fmax(worst, fabs(conv - lin));
            }
    CHECK(worst < 1e-12, "patch embed in input order equals a direct stride-p convolution (%.2e)", worst);
    ds_free(img), ds_free(W), ds_free(pt);
}

/* Samples do not interact: a batch of 4 equals four batches of 1 (loss and gradients add up). */
static void test_batch_independence(void) {
    ds_dit m;
    make_model(&m, &small, 21, 0.05f);
    const int B = 4;
    int64_t n = 1024;
    batch bt;
    make_batch(&bt, &small, B, 9);
    float *eps = ds_alloc(sizeof(float) * B * n), *one = ds_alloc(sizeof(float) * B * n);
    float *g_batch = ds_alloc(sizeof(float) * m.n_params), *dx = ds_alloc(sizeof(float) * B * n),
          *dx1 = ds_alloc(sizeof(float) * B * n);
    ds_dit_zero_grad(&m);
    double loss = ds_dit_forward(&m, B, bt.x, bt.t, &bt.cond, bt.noise, eps);
    ds_dit_backward(&m, dx);
    memcpy(g_batch, m.grads, sizeof(float) * m.n_params);
    ds_dit_zero_grad(&m);
    double loss_sum = 0;
    for (int b = 0; b < B; b++) {
        ds_dit_cond c = {bt.labels + b, bt.vec + b * 7, bt.vec_null + b};
        /* the per-sample loss is a mean over n instead of B n: scale by 1/B via the sum */
        loss_sum += ds_dit_forward(&m, 1, bt.x + b * n, bt.t + b, &c, bt.noise + b * n, one + b * n) / B;
        ds_dit_backward(&m, dx1 + b * n);
    }
    ds_k.scale(m.n_params, m.grads, 1.0f / B);
    ds_k.scale(B * n, dx1, 1.0f / B);
    double eo = test_rel_err(one, eps, B * n), eg = test_rel_err(m.grads, g_batch, m.n_params),
           ed = test_rel_err(dx1, dx, B * n);
    CHECK(eo < 1e-5 && fabs(loss_sum - loss) < 1e-6 * loss && eg < 1e-5 && ed < 1e-5,
          "batch of 4 vs 4 batches of 1: output %.2e, loss %.2e, gradients %.2e, dx %.2e", eo,
          fabs(loss_sum - loss) / loss, eg, ed);
    /* determinism: the same batch again gives the same bits */
    float *g2 = ds_alloc(sizeof(float) * m.n_params);
    ds_dit_zero_grad(&m);
    double l2 = ds_dit_forward(&m, B, bt.x, bt.t, &bt.cond, bt.noise, NULL);
    ds_dit_backward(&m, NULL);
    memcpy(g2, m.grads, sizeof(float) * m.n_params);
    CHECK(l2 == loss && !memcmp(g2, g_batch, sizeof(float) * m.n_params), "repeat run bit-identical");
    ds_free(eps), ds_free(one), ds_free(g_batch), ds_free(dx), ds_free(dx1), ds_free(g2);
    free_batch(&bt);
    ds_dit_destroy(&m);
}

/* Directional derivative per tensor (and for x_t): <grad, v> against the central difference of the
 * float32 loss along a random +-1 direction v. A coarse check that needs no Python; the PyTorch
 * comparison (tests/ref/test_dit_torch.py) is the precise one. */
static void test_directional_derivatives(void) {
    ds_dit m;
    make_model(&m, &small, 31, 0.05f);
    const int B = 3;
    int64_t n = 1024;
    batch bt;
    make_batch(&bt, &small, B, 13);
    float *dx = ds_alloc(sizeof(float) * B * n);
    ds_dit_zero_grad(&m);
    ds_dit_forward(&m, B, bt.x, bt.t, &bt.cond, bt.noise, NULL);
    ds_dit_backward(&m, dx);
    const double h = 1e-3;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i <= m.n_tensors; i++) {
        float *base = i < m.n_tensors ? m.params + m.tensors[i].offset : bt.x;
        const float *grad = i < m.n_tensors ? m.grads + m.tensors[i].offset : dx;
        int64_t numel = i < m.n_tensors ? m.tensors[i].numel : B * n;
        float *keep = ds_alloc(sizeof(float) * numel);
        memcpy(keep, base, sizeof(float) * numel);
        double analytic = 0, gnorm = 0;
        for (int64_t j = 0; j < numel; j++) {
            double v = (ds_rng_u64(77, i, j) & 1) ? 1.0 : -1.0;
            analytic += v * grad[j];
            gnorm += fabs(grad[j]);
        }
        double L[2];
        for (int s = 0; s < 2; s++) {
            for (int64_t j = 0; j < numel; j++)
                base[j] = keep[j] + (float)((s ? -h : h) * ((ds_rng_u64(77, i, j) & 1) ? 1.0 : -1.0));
            L[s] = ds_dit_forward(&m, B, bt.x, bt.t, &bt.cond, bt.noise, NULL);
        }
        memcpy(base, keep, sizeof(float) * numel);
        ds_free(keep);
        /* relative to the l1 norm of the gradient: a random-sign sum can cancel to near 0 */
        double e = fabs((L[0] - L[1]) / (2 * h) - analytic) / gnorm;
        if (e > worst) worst = e, worst_name = i < m.n_tensors ? m.tensors[i].name : "x_t";
    }
    printf("directional derivatives vs central differences (float32): worst %.2e (%s)\n", worst, worst_name);
    CHECK(worst < 1e-3, "directional derivatives of all %d tensors and x_t vs central differences: worst %.2e (%s)",
          m.n_tensors, worst, worst_name);
    ds_free(dx);
    free_batch(&bt);
    ds_dit_destroy(&m);
}

/* ---------------------------------------------------------------- bad input */

static void bad_patch(void) {
    ds_dit m;
    ds_dit_dims d = small;
    d.patch_size = 3;
    ds_dit_create(&m, &d);
}
static void bad_label(void) {
    ds_dit m;
    ds_dit_create(&m, &small);
    batch bt;
    make_batch(&bt, &small, 2, 1);
    bt.labels[0] = small.num_classes + 1;
    ds_dit_forward(&m, 2, bt.x, bt.t, &bt.cond, NULL, NULL);
}
static void missing_vec(void) {
    ds_dit m;
    ds_dit_create(&m, &small);
    batch bt;
    make_batch(&bt, &small, 2, 1);
    bt.cond.vec = NULL;
    ds_dit_forward(&m, 2, bt.x, bt.t, &bt.cond, NULL, NULL);
}
static void test_bad_input(void) {
    CHECK(test_exit_code(bad_patch) == DS_EXIT_BAD_INPUT, "patch 3 of size 16 exits with 2");
    CHECK(test_exit_code(bad_label) == DS_EXIT_BAD_INPUT, "label K + 1 exits with 2");
    CHECK(test_exit_code(missing_vec) == DS_EXIT_BAD_INPUT, "missing condition vector exits with 2");
}

/* ---------------------------------------------------------------- overfit */

typedef struct {
    ds_dit *m;
    int B;
    const int32_t *labels;
    int32_t *t;
} eps_model_ctx;

/* The sampler's epsilon model: the DiT on the whole batch at one network timestep (guidance 1 = the
 * conditional prediction alone). */
static void dit_eps(void *ctx, int t, const float *x, float *eps) {
    eps_model_ctx *e = ctx;
    for (int b = 0; b < e->B; b++) e->t[b] = t;
    ds_dit_cond c = {e->labels, NULL, NULL};
    ds_dit_forward(e->m, e->B, x, e->t, &c, NULL, eps);
}

/* 8 random N(0, 1) states [4 heads, 8, 8] with labels 0..7. Training as in src/dit/README.md §3.5 (uniform t, drawn
 * stratified over the batch; epsilon MSE; label dropout 0.1) with AdamW (lr 6e-3, 50 warm-up steps,
 * cosine to 1e-4, beta2 0.99: a memorisation run, not the DiT recipe), then DDIM-50 (eta 0) from
 * N(0, I) noise under each label must land within 5% (relative L2) of that label's state. */
static void test_overfit(void) {
    const ds_dit_dims d = {.in_channels = 4, .input_size = 8, .patch_size = 2, .hidden = 96, .depth = 2,
                           .heads = 2, .mlp_ratio = 4, .num_classes = 8};
    const int S = 8, B = 16, steps = 2500, warmup = 50;
    const double lr_max = 6e-3, lr_min = 1e-4;
    const int64_t n = 4 * 8 * 8;
    ds_dit m;
    ds_dit_create(&m, &d);
    ds_dit_init_weights(&m, 1);
    float *states = randn(S * n, 5, 1), *x0 = ds_alloc(sizeof(float) * B * n), *noise = ds_alloc(sizeof(float) * B * n);
    float *xt = ds_alloc(sizeof(float) * B * n), *adam_m = ds_alloc(sizeof(float) * m.n_params),
          *adam_v = ds_alloc(sizeof(float) * m.n_params);
    int32_t t[16], labels[16];
    ds_diffusion diff;
    ds_diffusion_create(&diff, DS_SCHEDULE_LINEAR, DS_DIFFUSION_STEPS);
    double t0 = ds_now_seconds(), first = 0, avg = 0;
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            int k = b % S, stratum = (b + 5 * step) % B;  /* every state visits every stratum */
            memcpy(x0 + b * n, states + k * n, sizeof(float) * n);
            t[b] = (int32_t)((stratum + ds_rng_uniform(7, step, b)) * DS_DIFFUSION_STEPS / B);
            labels[b] = ds_rng_uniform(8, step, b) < 0.1 ? d.num_classes : k;
        }
        for (int64_t i = 0; i < B * n; i++) noise[i] = (float)ds_rng_normal(9, step, i);
        ds_q_sample(&diff, B, n, t, x0, noise, xt);
        ds_dit_cond c = {labels, NULL, NULL};
        ds_dit_zero_grad(&m);
        double loss = ds_dit_forward(&m, B, xt, t, &c, noise, NULL);
        ds_dit_backward(&m, NULL);
        if (step == 0) first = loss;
        avg = step ? 0.99 * avg + 0.01 * loss : loss;
        double lr = step < warmup ? lr_max * (step + 1) / warmup
                                  : lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(M_PI * (step - warmup) / (steps - warmup)));
        ds_k.adamw(m.n_params, m.params, m.grads, adam_m, adam_v, (float)lr, 0.9f, 0.99f, 1e-8f, 0.0f, step + 1);
    }
    double train_s = ds_now_seconds() - t0;

    ds_diffusion ddim;
    ds_diffusion_respace(&ddim, &diff, 50);
    float *x = randn(S * n, 11, 2);
    int32_t sample_labels[8], sample_t[8];
    for (int k = 0; k < S; k++) sample_labels[k] = k;
    eps_model_ctx ctx = {&m, S, sample_labels, sample_t};
    ds_ddim_sample(&ddim, ddim.T - 1, 0.0, S * n, dit_eps, &ctx, 1, x);
    double worst = 0;
    printf("overfit: %d params, %d steps in %.1f s (loss %.3f -> %.4f), DDIM-50 relative errors:", (int)m.n_params,
           steps, train_s, first, avg);
    for (int k = 0; k < S; k++) {
        double num = 0, den = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = (double)x[k * n + i] - states[k * n + i];
            num += e * e, den += (double)states[k * n + i] * states[k * n + i];
        }
        worst = fmax(worst, sqrt(num / den));
        printf(" %.4f", sqrt(num / den));
    }
    printf(" (%.1f s total)\n", ds_now_seconds() - t0);
    CHECK(worst < 0.05, "overfit: DDIM-50 regenerates all 8 states within 5%% (worst %.4f)", worst);
    ds_free(states), ds_free(x0), ds_free(noise), ds_free(xt), ds_free(adam_m), ds_free(adam_v), ds_free(x);
    ds_diffusion_destroy(&ddim);
    ds_diffusion_destroy(&diff);
    ds_dit_destroy(&m);
}

int main(int argc, char **argv) {
    /* One thread: the test models are tiny, and on a shared, oversubscribed 2-core machine the thread
     * barriers of BLIS and OpenMP made 2-thread runs up to ~8x slower. */
    omp_set_num_threads(1);
    ds_blas_init(1);
    ds_kernels_init();
    if (argc > 1 && strcmp(argv[1], "--dump") == 0) return dump_mode(argc, argv);
    test_init();
    test_patches();
    test_batch_independence();
    test_directional_derivatives();
    test_bad_input();
    test_overfit();
    return test_summary("test_dit");
}
