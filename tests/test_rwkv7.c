/* RWKV-7 model tests in C: state-passing identities (src/rwkv7/README.md §9.7), init statistics
 * (src/rwkv7/README.md §9.8), parameter count (src/rwkv7/README.md §1), determinism, and the frozen
 * backward's state gradient (§9.11), per-sequence projections (§9.12), activation checkpointing (§9.13).
 * With `--dump FILE L C T B V SEED [fp32|bf16] [state]` it instead
 * writes weights, inputs, loss, logits and every gradient (the initial state's included), computed with
 * fp32 or bf16 matrix products (blas.h), for tests/ref/test_rwkv7_torch.py, and with `--dump-tuner ...` a
 * state-tuning batch for tests/ref/test_state_tuning_torch.py; both compare them against an independent
 * PyTorch implementation. */
#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "dreamstate/rwkv7.h"
#include "test.h"

#include <math.h>
#include <string.h>

static void make_model(ds_rwkv7 *m, int L, int C, int V, uint64_t seed, float noise) {
    ds_rwkv7_dims d = {.n_layer = L, .n_embd = C, .vocab_size = V};
    ds_rwkv7_default_ranks(&d, "released");
    ds_rwkv7_create(m, &d);
    ds_rwkv7_init_weights(m, seed);
    /* perturb every parameter so that no gradient path is trivially zero (att.output, ffn.value
     * and the LoRA down-projections start at zero) */
    for (int64_t i = 0; i < m->n_params; i++) m->params[i] += noise * (float)ds_rng_normal(seed, 999, i);
}

static void random_tokens(int32_t *x, int64_t n, int V, uint64_t seed, uint64_t stream) {
    for (int64_t i = 0; i < n; i++) x[i] = (int32_t)(ds_rng_u64(seed, stream, i) % V);
}

static void random_state(ds_rwkv7_state *s, uint64_t seed, float scale) {
    for (int64_t i = 0; i < s->numel; i++) s->data[i] = scale * (float)ds_rng_normal(seed, 77, i);
}

static FILE *dump_open(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    fwrite("DSDUMP01", 1, 8, f);
    return f;
}

static void dump_close(FILE *f) {
    uint32_t end = 0;
    fwrite(&end, 4, 1, f);
    fclose(f);
}

/* dims, then every weight under its official name */
static void dump_model(FILE *f, const ds_rwkv7 *m) {
    int32_t dims[7] = {m->d.n_layer, m->d.n_embd, m->d.vocab_size, m->d.dim_w, m->d.dim_a, m->d.dim_v, m->d.dim_g};
    int64_t s7[1] = {7};
    test_dump_tensor(f, "dims", 1, s7, 1, dims);
    for (int i = 0; i < m->n_tensors; i++)
        test_dump_tensor(f, m->tensors[i].name, m->tensors[i].ndim, m->tensors[i].shape, 0, m->params + m->tensors[i].offset);
}

/* The three parts of a state [L, B, ...] as PREFIX.att_x, PREFIX.wkv, PREFIX.ffn_x. */
static void dump_state(FILE *f, const char *prefix, const ds_rwkv7_state *s, const ds_rwkv7_dims *d) {
    int64_t L = d->n_layer, C = d->n_embd, x_shape[3] = {L, s->B, C}, wkv_shape[5] = {L, s->B, C / 64, 64, 64};
    char name[64];
    snprintf(name, sizeof name, "%s.att_x", prefix), test_dump_tensor(f, name, 3, x_shape, 0, s->att_x);
    snprintf(name, sizeof name, "%s.wkv", prefix), test_dump_tensor(f, name, 5, wkv_shape, 0, s->wkv);
    snprintf(name, sizeof name, "%s.ffn_x", prefix), test_dump_tensor(f, name, 3, x_shape, 0, s->ffn_x);
}

/* --dump FILE L C T B V SEED [fp32|bf16] [state]: weights, inputs, loss, logits and every gradient, with
 * fp32 or bf16 matrix products; with `state`, the forward starts from a random state (every part) and its
 * gradient is dumped too. */
static int dump_mode(int argc, char **argv) {
    int with_state = 0, bf16 = 0, bad = argc < 9;
    for (int i = 9; i < argc; i++) {
        if (strcmp(argv[i], "state") == 0) with_state = 1;
        else if (strcmp(argv[i], "bf16") == 0) bf16 = 1;
        else if (strcmp(argv[i], "fp32") != 0) bad = 1;
    }
    if (bad || argc > 11) {
        fprintf(stderr, "usage: test_rwkv7 --dump FILE L C T B V SEED [fp32|bf16] [state]\n");
        return 2;
    }
    int L = atoi(argv[3]), C = atoi(argv[4]), T = atoi(argv[5]), B = atoi(argv[6]), V = atoi(argv[7]);
    uint64_t seed = strtoull(argv[8], NULL, 10);
    ds_blas_set_precision(bf16 ? DS_PRECISION_BF16 : DS_PRECISION_FP32);
    ds_rwkv7 m;
    make_model(&m, L, C, V, seed, 0.05f);
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T);
    random_tokens(tok, (int64_t)B * T, V, seed, 1);
    random_tokens(tgt, (int64_t)B * T, V, seed, 2);
    tgt[3] = -1; /* an ignored position */
    float *logits = malloc(sizeof(float) * B * T * V);
    ds_rwkv7_state s0, ds0;
    ds_rwkv7_state_create(&s0, &m.d, B);
    ds_rwkv7_state_create(&ds0, &m.d, B);
    random_state(&s0, seed, 0.5f);
    ds_rwkv7_zero_grad(&m);
    float loss = (float)ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, with_state ? &s0 : NULL, NULL, logits);
    ds_rwkv7_backward_state(&m, &ds0);
    FILE *f = dump_open(argv[2]);
    int64_t sBT[2] = {B, T}, sL[3] = {B, T, V}, s1[1] = {1};
    dump_model(f, &m);
    test_dump_tensor(f, "tokens", 2, sBT, 1, tok);
    test_dump_tensor(f, "targets", 2, sBT, 1, tgt);
    test_dump_tensor(f, "loss", 1, s1, 0, &loss);
    test_dump_tensor(f, "logits", 3, sL, 0, logits);
    char name[96];
    for (int i = 0; i < m.n_tensors; i++) {
        const ds_param_tensor *t = &m.tensors[i];
        snprintf(name, sizeof name, "grad.%s", t->name);
        test_dump_tensor(f, name, t->ndim, t->shape, 0, m.grads + t->offset);
    }
    if (with_state) dump_state(f, "state", &s0, &m.d);
    dump_state(f, "grad.state", &ds0, &m.d);
    dump_close(f);
    ds_rwkv7_state_destroy(&s0); ds_rwkv7_state_destroy(&ds0);
    free(tok); free(tgt); free(logits);
    ds_rwkv7_destroy(&m);
    return 0;
}

/* --dump-tuner FILE L C T B V SEED SETS: state tuning of a frozen model (ds_rwkv7_tuner_run): B sequences
 * over SETS random sets of initial WKV states, sequence b from set b mod SETS; the last sequence is a
 * short text padded with ignored targets. Dumps the weights, sets, inputs, the summed CE and the
 * gradient of (summed CE) x scale with respect to every set. */
static int dump_tuner_mode(int argc, char **argv) {
    if (argc != 10) { fprintf(stderr, "usage: test_rwkv7 --dump-tuner FILE L C T B V SEED SETS\n"); return 2; }
    int L = atoi(argv[3]), C = atoi(argv[4]), T = atoi(argv[5]), B = atoi(argv[6]), V = atoi(argv[7]);
    uint64_t seed = strtoull(argv[8], NULL, 10);
    int sets = atoi(argv[9]);
    ds_rwkv7 m;
    make_model(&m, L, C, V, seed, 0.05f);
    ds_rwkv7_tuner tuner;
    ds_rwkv7_tuner_init(&tuner, &m);
    int64_t F = tuner.set_floats;
    float *states = malloc(sizeof(float) * sets * F), *grads = calloc((size_t)(sets * F), sizeof(float));
    for (int64_t i = 0; i < sets * F; i++) states[i] = 0.5f * (float)ds_rng_normal(seed, 78, i);
    int32_t *tok = malloc(sizeof(int32_t) * B * T), *tgt = malloc(sizeof(int32_t) * B * T), *set = malloc(sizeof(int32_t) * B);
    random_tokens(tok, (int64_t)B * T, V, seed, 1);
    random_tokens(tgt, (int64_t)B * T, V, seed, 2);
    for (int t = T / 2; t < T; t++) tgt[(int64_t)(B - 1) * T + t] = -1;  /* padding of a short text */
    for (int b = 0; b < B; b++) set[b] = b % sets;
    float scale = 1.0f / ((float)B * T), l2wrap = 1e-4f;
    float ce = (float)ds_rwkv7_tuner_run(&tuner, B, T, tok, tgt, set, states, grads, scale, l2wrap);
    FILE *f = dump_open(argv[2]);
    int64_t sBT[2] = {B, T}, sB[1] = {B}, s1[1] = {1}, sS[5] = {sets, L, C / 64, 64, 64};
    dump_model(f, &m);
    test_dump_tensor(f, "tokens", 2, sBT, 1, tok);
    test_dump_tensor(f, "targets", 2, sBT, 1, tgt);
    test_dump_tensor(f, "set", 1, sB, 1, set);
    test_dump_tensor(f, "scale", 1, s1, 0, &scale);
    test_dump_tensor(f, "l2wrap", 1, s1, 0, &l2wrap);
    test_dump_tensor(f, "ce_sum", 1, s1, 0, &ce);
    test_dump_tensor(f, "states", 5, sS, 0, states);
    test_dump_tensor(f, "grad.states", 5, sS, 0, grads);
    dump_close(f);
    free(states); free(grads); free(tok); free(tgt); free(set);
    ds_rwkv7_tuner_destroy(&tuner);
    ds_rwkv7_destroy(&m);
    return 0;
}

/* Running A then B with the carried state equals running A||B at once (logits of the B part and the
 * final state), and token-by-token (RNN mode) equals the sequence (GPT mode). */
static void test_state_passing(void) {
    int L = 2, C = 128, V = 97, B = 2, T1 = 21, T2 = 19, T = T1 + T2;
    ds_rwkv7 m;
    make_model(&m, L, C, V, 7, 0.05f);
    int32_t tok[2 * 40], ta[2 * 21], tb[2 * 19];
    random_tokens(tok, B * T, V, 7, 3);
    for (int b = 0; b < B; b++) {
        memcpy(ta + b * T1, tok + b * T, sizeof(int32_t) * T1);
        memcpy(tb + b * T2, tok + b * T + T1, sizeof(int32_t) * T2);
    }
    float *full = malloc(sizeof(float) * B * T * V), *part = malloc(sizeof(float) * B * T2 * V);
    ds_rwkv7_state s_full, s_part;
    ds_rwkv7_state_create(&s_full, &m.d, B);
    ds_rwkv7_state_create(&s_part, &m.d, B);
    ds_rwkv7_forward(&m, B, T, tok, NULL, 1, 0, NULL, &s_full, full);
    ds_rwkv7_forward(&m, B, T1, ta, NULL, 1, 0, NULL, &s_part, NULL);
    ds_rwkv7_forward(&m, B, T2, tb, NULL, 1, 0, &s_part, &s_part, part);
    double worst = 0;
    for (int b = 0; b < B; b++) {
        double e = test_rel_err(part + (int64_t)b * T2 * V, full + ((int64_t)b * T + T1) * V, (int64_t)T2 * V);
        if (e > worst) worst = e;
    }
    CHECK(worst < 1e-5, "A then B (carried state) vs A||B logits: rel err %.3g", worst);
    double es = test_rel_err(s_part.data, s_full.data, s_full.numel);
    CHECK(es < 1e-5, "final state A then B vs A||B: rel err %.3g", es);

    /* only the WKV part carried (x_prev zeroed) must differ: the x_prev state matters */
    ds_rwkv7_forward(&m, B, T1, ta, NULL, 1, 0, NULL, &s_part, NULL);
    memset(s_part.att_x, 0, sizeof(float) * L * B * C);
    memset(s_part.ffn_x, 0, sizeof(float) * L * B * C);
    ds_rwkv7_forward(&m, B, T2, tb, NULL, 1, 0, &s_part, &s_part, part);
    double ediff = test_rel_err(part, full + (int64_t)T1 * V, (int64_t)T2 * V);
    CHECK(ediff > 1e-3, "zeroing x_prev must change the logits (rel diff %.3g)", ediff);

    /* RNN mode: one token at a time from the zero state */
    ds_rwkv7_state s_rnn;
    ds_rwkv7_state_create(&s_rnn, &m.d, 1);
    float *step = malloc(sizeof(float) * V);
    double worst_rnn = 0;
    for (int t = 0; t < T; t++) {
        ds_rwkv7_forward(&m, 1, 1, tok + t, NULL, 1, 0, &s_rnn, &s_rnn, step);
        double e = 0;
        for (int v = 0; v < V; v++) e = fmax(e, fabs(step[v] - full[(int64_t)t * V + v]));
        if (e > worst_rnn) worst_rnn = e;
    }
    CHECK(worst_rnn < 1e-4, "RNN mode vs GPT mode logits: max abs diff %.3g", worst_rnn);
    free(step); free(full); free(part);
    ds_rwkv7_state_destroy(&s_rnn); ds_rwkv7_state_destroy(&s_full); ds_rwkv7_state_destroy(&s_part);
    ds_rwkv7_destroy(&m);
}

/* Orthogonality W W^T = gain^2 I (or W^T W) and the zero-initialised tensors (src/rwkv7/README.md §9.8). */
static double orthogonality_error(const float *W, int rows, int cols, float gain) {
    int tall = rows >= cols, n = tall ? cols : rows;
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < (tall ? rows : cols); k++)
                s += tall ? (double)W[(int64_t)k * cols + i] * W[(int64_t)k * cols + j]
                          : (double)W[(int64_t)i * cols + k] * W[(int64_t)j * cols + k];
            worst = fmax(worst, fabs(s / (gain * gain) - (i == j)));
        }
    return worst;
}

static void test_init(void) {
    ds_rwkv7 m;
    ds_rwkv7_dims d = {.n_layer = 3, .n_embd = 128, .vocab_size = 300};
    ds_rwkv7_default_ranks(&d, "released");
    CHECK(d.dim_w == 32 && d.dim_a == 32 && d.dim_v == 32 && d.dim_g == 32, "ranks for C=128");
    ds_rwkv7_create(&m, &d);
    ds_rwkv7_init_weights(&m, 42);
    const ds_rwkv7_layer *p = &m.w.layers[1];
    int C = 128;
    double zero_max = 0;
    for (int64_t i = 0; i < (int64_t)C * C; i++) zero_max = fmax(zero_max, fabs(p->Wo[i]));
    for (int64_t i = 0; i < (int64_t)C * 4 * C; i++) zero_max = fmax(zero_max, fabs(p->Vf[i]));
    CHECK(zero_max == 0, "att.output and ffn.value start at zero");
    CHECK(orthogonality_error(p->Wr, C, C, 1.0f) < 1e-5, "receptance orthogonal");
    CHECK(orthogonality_error(p->Wk, C, C, 0.1f) < 1e-5, "key orthogonal, gain 0.1");
    CHECK(orthogonality_error(p->Kf, 4 * C, C, 1.0f) < 1e-5, "ffn.key columns orthonormal");
    CHECK(orthogonality_error(p->w2, d.dim_w, C, 0.1f) < 1e-5, "w2 rows orthonormal x0.1");
    CHECK(orthogonality_error(m.w.head, 300, C, 0.5f * sqrtf(300.0f / C)) < 1e-5, "head orthogonal");
    /* parameter count formula of src/rwkv7/README.md §1 (layer-0 v-LoRA counted) */
    double Cd = C, L = 3, V = 300;
    double formula = 2 * V * Cd + 4 * Cd + L * (19 * Cd + 12 * Cd * Cd + 2 * Cd * (d.dim_w + d.dim_a + d.dim_v + d.dim_g));
    int64_t counted = 0;
    for (int i = 0; i < m.n_tensors; i++) counted += m.tensors[i].numel;
    CHECK(counted == (int64_t)formula, "parameter count %lld vs formula %.0f", (long long)counted, formula);
    ds_rwkv7_dims big = {.n_layer = 24, .n_embd = 2048};
    ds_rwkv7_default_ranks(&big, "released");
    CHECK(big.dim_w == 96 && big.dim_a == 96 && big.dim_v == 64 && big.dim_g == 256, "1.5B ranks");
    const ds_param_tensor *t = ds_param_find(m.n_tensors, m.tensors, "blocks.2.att.w0");
    CHECK(t && t->lr_scale == 2.0f && !t->weight_decay, "w0: 2x lr, no decay");
    t = ds_param_find(m.n_tensors, m.tensors, "blocks.0.att.key.weight");
    CHECK(t && t->weight_decay && t->shape[0] == C && t->shape[1] == C, "key.weight decayed, [C,C]");
    t = ds_param_find(m.n_tensors, m.tensors, "blocks.0.att.w1");
    CHECK(t && !t->weight_decay, "LoRA not decayed");
    ds_rwkv7_destroy(&m);
}

static uint32_t init_crc(int L, int C, int V, int threads, int frozen, int *grads_zero) {
    ds_blas_init(threads);
    ds_rwkv7 m;
    ds_rwkv7_dims d = {.n_layer = L, .n_embd = C, .vocab_size = V};
    ds_rwkv7_default_ranks(&d, "released");
    ds_rwkv7_create(&m, &d);
    m.frozen = frozen;  /* the QR's scratch: memory of its own, not the gradient buffer */
    ds_rwkv7_init_weights(&m, 42);
    uint32_t crc = ds_crc32c(0, m.params, sizeof(float) * m.n_params);
    for (int64_t i = 0; i < m.n_params; i++) *grads_zero &= m.grads[i] == 0 && !signbit(m.grads[i]);
    ds_rwkv7_destroy(&m);
    return crc;
}

/* The init's weights do not depend on the thread count (its matrices run in parallel, each on one BLIS
 * thread, or the largest on all: src/rwkv7/README.md §4.1) nor on the kernels that draw its normals
 * (libm's, or the AVX-512 twin's), and equal, bit for bit, those of the serial init they replaced (the
 * CRCs recorded from it, with Debian 12's glibc log and cos). L1 V4000: the head is more than half the
 * work, so it takes the all-threads path. The QR's scratch is the gradient buffer: it comes back zero. */
static void test_init_thread_independent(void) {
    const ds_kernel_table *tables[] = {&ds_kernels_reference, &ds_kernels_avx512};
    for (int k = 0; k < (ds_cpu_has_avx512() ? 2 : 1); k++) {
        ds_k = *tables[k];
        /* the init's batched draws are the single draws, bit for bit */
        enum { N = 1500 };
        double batch[N];
        float filled[N];
        ds_rng_normals(batch, N, 42, 9, 7);
        ds_fill_normal(filled, N, 0.3, 42, 9);
        int same = 1;
        for (int i = 0; i < N; i++)
            same &= batch[i] == ds_rng_normal(42, 9, 7 + (uint64_t)i) && filled[i] == (float)(0.3 * ds_rng_normal(42, 9, i));
        CHECK(same, "%s kernels: ds_rng_normals and ds_fill_normal equal ds_rng_normal", ds_k.name);
        static const struct { int L, C, V; uint32_t crc; } shapes[] = {{3, 128, 300, 0x6b4712af}, {1, 128, 4000, 0x9f9d7d4f}};
        for (int s = 0; s < 2; s++) {
            int grads_zero = 1;
            uint32_t one = init_crc(shapes[s].L, shapes[s].C, shapes[s].V, 1, 0, &grads_zero);
            uint32_t two = init_crc(shapes[s].L, shapes[s].C, shapes[s].V, 2, 0, &grads_zero);
            uint32_t three = init_crc(shapes[s].L, shapes[s].C, shapes[s].V, 3, 0, &grads_zero);
            uint32_t frozen = init_crc(shapes[s].L, shapes[s].C, shapes[s].V, 2, 1, &grads_zero);
            CHECK(one == two && two == three && three == frozen,
                  "%s kernels: init L%d C%d V%d: 1, 2, 3 threads and a frozen model give the same bytes (%08x %08x %08x %08x)",
                  ds_k.name, shapes[s].L, shapes[s].C, shapes[s].V, one, two, three, frozen);
            CHECK(one == shapes[s].crc, "%s kernels: init L%d C%d V%d: CRC %08x, the serial init's was %08x", ds_k.name,
                  shapes[s].L, shapes[s].C, shapes[s].V, one, shapes[s].crc);
            CHECK(grads_zero, "%s kernels: init L%d C%d V%d leaves the gradients +0", ds_k.name, shapes[s].L, shapes[s].C,
                  shapes[s].V);
        }
    }
    ds_kernels_init();
    ds_blas_init(0);
}

/* Same inputs, same result: no schedule-dependent reductions. */
static void test_determinism(void) {
    ds_rwkv7 m;
    make_model(&m, 2, 128, 61, 5, 0.05f);
    int B = 2, T = 33;
    int32_t tok[66], tgt[66];
    random_tokens(tok, B * T, 61, 5, 1);
    random_tokens(tgt, B * T, 61, 5, 2);
    float *g1 = malloc(sizeof(float) * m.n_params);
    ds_rwkv7_zero_grad(&m);
    double l1 = ds_rwkv7_forward(&m, B, T, tok, tgt, 1, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    memcpy(g1, m.grads, sizeof(float) * m.n_params);
    ds_rwkv7_zero_grad(&m);
    double l2 = ds_rwkv7_forward(&m, B, T, tok, tgt, 1, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    CHECK(l1 == l2 && memcmp(g1, m.grads, sizeof(float) * m.n_params) == 0, "repeat run bit-identical");
    free(g1);
    ds_rwkv7_destroy(&m);
}

/* Activation checkpointing (src/rwkv7/README.md §3.6) recomputes each block with the same kernels on
 * the same input: loss, logits and every gradient equal the run without it bit for bit, with fewer
 * activations; a forward from a state (state_in == state_out) gives the same logits and final state,
 * and a backward from a state the same initial-state gradient, with frozen weights too (§3.4). */
static void test_grad_checkpoint(void) {
    ds_rwkv7 m;
    make_model(&m, 3, 128, 61, 9, 0.05f);
    int B = 2, T = 37, V = 61;  /* T: two whole WKV chunks and a partial one */
    int32_t tok[74], tgt[74];
    random_tokens(tok, B * T, V, 9, 1);
    random_tokens(tgt, B * T, V, 9, 2);
    tgt[5] = -1;
    size_t gbytes = sizeof(float) * m.n_params, lbytes = sizeof(float) * B * T * V;
    float *grads[2] = {malloc(gbytes), malloc(gbytes)}, *logits[2] = {malloc(lbytes), malloc(lbytes)};
    double loss[2];
    int64_t numel[2];
    for (int cp = 0; cp < 2; cp++) {
        m.grad_checkpoint = cp;
        ds_rwkv7_zero_grad(&m);
        loss[cp] = ds_rwkv7_forward(&m, B, T, tok, tgt, 1, 1e-4f, NULL, NULL, logits[cp]);
        ds_rwkv7_backward(&m);
        memcpy(grads[cp], m.grads, gbytes);
        numel[cp] = m.acts_numel;
    }
    CHECK(loss[0] == loss[1] && memcmp(logits[0], logits[1], lbytes) == 0, "checkpointing: same loss and logits");
    CHECK(memcmp(grads[0], grads[1], gbytes) == 0, "checkpointing: every gradient bit-identical");
    CHECK(numel[1] == ds_rwkv7_activation_floats(&m.d, B, T, 1) && numel[1] < 0.6 * numel[0],
          "checkpointing keeps fewer activations: %lld of %lld floats", (long long)numel[1], (long long)numel[0]);

    /* from a state, written back in place */
    ds_rwkv7_state st[2];
    size_t sbytes = 0;
    for (int cp = 0; cp < 2; cp++) {
        m.grad_checkpoint = cp;
        ds_rwkv7_state_create(&st[cp], &m.d, B);
        sbytes = sizeof(float) * st[cp].numel;
        ds_rwkv7_forward(&m, B, 20, tok, NULL, 1, 0, NULL, &st[cp], NULL);
        ds_rwkv7_forward(&m, B, 17, tok + 20, NULL, 1, 0, &st[cp], &st[cp], logits[cp]);
    }
    CHECK(memcmp(logits[0], logits[1], sizeof(float) * B * 17 * V) == 0 && memcmp(st[0].data, st[1].data, sbytes) == 0,
          "checkpointing: the same logits and final state from an initial state");

    /* the backward from a random initial state */
    random_state(&st[0], 9, 0.5f);
    ds_rwkv7_state d_state[2];
    for (int frozen = 0; frozen < 2; frozen++) {
        m.frozen = frozen;
        for (int cp = 0; cp < 2; cp++) {
            m.grad_checkpoint = cp;
            ds_rwkv7_state_create(&d_state[cp], &m.d, B);
            ds_rwkv7_zero_grad(&m);
            loss[cp] = ds_rwkv7_forward(&m, B, T, tok, tgt, 1, 1e-4f, &st[0], NULL, NULL);
            ds_rwkv7_backward_state(&m, &d_state[cp]);
            memcpy(grads[cp], m.grads, gbytes);
        }
        CHECK(loss[0] == loss[1] && memcmp(d_state[0].data, d_state[1].data, sbytes) == 0 &&
              (frozen || memcmp(grads[0], grads[1], gbytes) == 0),
              "checkpointing: the same loss, initial-state gradient%s from a random state%s", frozen ? "" : " and weight "
              "gradients", frozen ? " with frozen weights" : "");
        for (int cp = 0; cp < 2; cp++) ds_rwkv7_state_destroy(&d_state[cp]);
    }
    m.frozen = 0;
    for (int cp = 0; cp < 2; cp++) ds_rwkv7_state_destroy(&st[cp]);
    for (int i = 0; i < 2; i++) { free(grads[i]); free(logits[i]); }
    ds_rwkv7_destroy(&m);
}

static int64_t count_nonzero(const float *x, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += x[i] != 0;
    return k;
}

/* Frozen weights (state tuning) skip the weight-gradient products but give the same initial-state
 * gradient, bit for bit, from the zero state and from a given one. */
static void test_frozen_state_gradient(void) {
    ds_rwkv7 m;
    make_model(&m, 2, 128, 61, 9, 0.05f);
    int B = 2, T = 23;
    int32_t tok[46], tgt[46];
    random_tokens(tok, B * T, 61, 9, 1);
    random_tokens(tgt, B * T, 61, 9, 2);
    ds_rwkv7_state s0, full, frozen;
    ds_rwkv7_state_create(&s0, &m.d, B);
    ds_rwkv7_state_create(&full, &m.d, B);
    ds_rwkv7_state_create(&frozen, &m.d, B);
    random_state(&s0, 9, 0.5f);
    for (int from_state = 0; from_state < 2; from_state++) {
        const ds_rwkv7_state *in = from_state ? &s0 : NULL;
        m.frozen = 0;
        ds_rwkv7_zero_grad(&m);
        ds_rwkv7_forward(&m, B, T, tok, tgt, 1, 1e-4f, in, NULL, NULL);
        ds_rwkv7_backward_state(&m, &full);
        int64_t head_full = count_nonzero(m.g.head, (int64_t)m.d.vocab_size * m.d.n_embd);
        m.frozen = 1;
        ds_rwkv7_zero_grad(&m);
        ds_rwkv7_forward(&m, B, T, tok, tgt, 1, 1e-4f, in, NULL, NULL);
        ds_rwkv7_backward_state(&m, &frozen);
        int64_t nonzero = count_nonzero(frozen.data, frozen.numel);
        CHECK(memcmp(full.data, frozen.data, sizeof(float) * full.numel) == 0 && nonzero > frozen.numel / 2,
              "frozen backward: the same state gradient (%s initial state; %lld of %lld non-zero)",
              from_state ? "a random" : "the zero", (long long)nonzero, (long long)frozen.numel);
        int64_t head_frozen = count_nonzero(m.g.head, (int64_t)m.d.vocab_size * m.d.n_embd);
        CHECK(head_full > 0 && head_frozen == 0, "frozen backward leaves the head's weight gradient unwritten (%lld "
              "non-zero when not frozen)", (long long)head_full);
    }
    ds_rwkv7_state_destroy(&s0); ds_rwkv7_state_destroy(&full); ds_rwkv7_state_destroy(&frozen);
    ds_rwkv7_destroy(&m);
}

/* Per-sequence projections (seq_weights, src/rwkv7/README.md §3.5) on a batch equal one forward and
 * backward per sequence with that sequence's matrices swapped into the model: loss, each sequence's
 * matrix gradient and every model gradient, to fp32 rounding; nothing reaches the model's own gradient
 * of a replaced matrix; frozen, the per-sequence gradients are the same bits and the head's is unwritten. */
static void test_seq_weights(void) {
    enum { B = 3, T = 19, L = 2, C = 128, V = 61 };
    const int layer[2] = {1, 0}, mat[2] = {0, 2};  /* W_r of layer 1, W_v of layer 0 */
    int64_t CC = C * C;
    ds_rwkv7 m;
    make_model(&m, L, C, V, 13, 0.05f);
    int32_t tok[B * T], tgt[B * T];
    random_tokens(tok, B * T, V, 13, 1);
    random_tokens(tgt, B * T, V, 13, 2);
    tgt[T + 4] = -1;  /* an unscored position: sequences count differently */
    float *W[2], *G[2], *Gref[2];
    ds_rwkv7_seq_weight table[L * 3] = {{0}};
    for (int i = 0; i < 2; i++) {
        ds_rwkv7_layer *p = &m.w.layers[layer[i]];
        const float *own = mat[i] == 0 ? p->Wr : p->Wv;
        W[i] = ds_alloc(sizeof(float) * B * CC);
        G[i] = ds_alloc(sizeof(float) * B * CC);
        Gref[i] = ds_alloc(sizeof(float) * B * CC);
        for (int64_t j = 0; j < B * CC; j++) W[i][j] = own[j % CC] + 0.05f * (float)ds_rng_normal(13, 50 + i, j);
        table[3 * layer[i] + mat[i]] = (ds_rwkv7_seq_weight){W[i], G[i], 0};
    }
    /* one sequence at a time, the matrices swapped in: each scored token weighs 1 / (the batch's count) */
    float *gref = ds_alloc(sizeof(float) * m.n_params);
    float *keep_w[2] = {m.w.layers[1].Wr, m.w.layers[0].Wv}, *keep_g[2] = {m.g.layers[1].Wr, m.g.layers[0].Wv};
    int count = 0;
    for (int i = 0; i < B * T; i++) count += tgt[i] >= 0;
    double nats = 0;
    ds_rwkv7_zero_grad(&m);
    for (int b = 0; b < B; b++) {
        int count_b = 0;
        for (int t = 0; t < T; t++) count_b += tgt[b * T + t] >= 0;
        m.w.layers[1].Wr = W[0] + b * CC, m.g.layers[1].Wr = Gref[0] + b * CC;
        m.w.layers[0].Wv = W[1] + b * CC, m.g.layers[0].Wv = Gref[1] + b * CC;
        memset(Gref[0] + b * CC, 0, sizeof(float) * CC), memset(Gref[1] + b * CC, 0, sizeof(float) * CC);
        nats += ds_rwkv7_forward(&m, 1, T, tok + b * T, tgt + b * T, (float)count_b / count, 1e-4f, NULL, NULL, NULL) * count_b;
        ds_rwkv7_backward(&m);
    }
    for (int i = 0; i < 2; i++) {
        float **wp = i == 0 ? &m.w.layers[1].Wr : &m.w.layers[0].Wv, **gp = i == 0 ? &m.g.layers[1].Wr : &m.g.layers[0].Wv;
        *wp = keep_w[i], *gp = keep_g[i];
    }
    memcpy(gref, m.grads, sizeof(float) * m.n_params);
    /* the batch at once */
    m.seq_weights = table;
    ds_rwkv7_zero_grad(&m);
    for (int i = 0; i < 2; i++) memset(G[i], 0, sizeof(float) * B * CC);
    double loss = ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    double eg = test_rel_err(m.grads, gref, m.n_params), e0 = test_rel_err(G[0], Gref[0], B * CC),
           e1 = test_rel_err(G[1], Gref[1], B * CC);
    int64_t own = count_nonzero(m.g.layers[1].Wr, CC) + count_nonzero(m.g.layers[0].Wv, CC);
    CHECK(fabs(loss - nats / count) < 1e-6 * loss && eg < 1e-5 && e0 < 1e-5 && e1 < 1e-5 && own == 0 &&
          count_nonzero(G[0], B * CC) > B * CC / 2,
          "per-sequence W_r, W_v on %d sequences = one call per sequence: loss %.7f vs %.7f, gradients rel err %.1e, "
          "per-sequence matrices %.1e, %.1e; their own gradient slots untouched", B, loss, nats / count, eg, e0, e1);
    /* frozen: the same per-sequence gradients, no weight gradient */
    float *g0 = ds_alloc(sizeof(float) * B * CC), *gbatch = ds_alloc(sizeof(float) * m.n_params);
    memcpy(g0, G[0], sizeof(float) * B * CC);
    memcpy(gbatch, m.grads, sizeof(float) * m.n_params);
    m.frozen = 1;
    ds_rwkv7_zero_grad(&m);
    for (int i = 0; i < 2; i++) memset(G[i], 0, sizeof(float) * B * CC);
    ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    CHECK(memcmp(g0, G[0], sizeof(float) * B * CC) == 0 && count_nonzero(m.g.head, (int64_t)V * C) == 0,
          "frozen: the same per-sequence gradients bit for bit, no head weight gradient");
    /* activation checkpointing (§3.6) recomputes the blocks with the per-sequence matrices */
    m.frozen = 0;
    m.grad_checkpoint = 1;
    ds_rwkv7_zero_grad(&m);
    for (int i = 0; i < 2; i++) memset(G[i], 0, sizeof(float) * B * CC);
    double loss_cp = ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    CHECK(loss_cp == loss && memcmp(g0, G[0], sizeof(float) * B * CC) == 0 &&
          memcmp(gbatch, m.grads, sizeof(float) * m.n_params) == 0,
          "grad_checkpoint: the same loss, per-sequence and model gradients bit for bit");
    m.grad_checkpoint = 0;
    m.seq_weights = NULL;
    for (int i = 0; i < 2; i++) ds_free(W[i]), ds_free(G[i]), ds_free(Gref[i]);
    ds_free(gref), ds_free(g0), ds_free(gbatch);
    ds_rwkv7_destroy(&m);
}

/* A shared caller matrix (seq_weights .shared, src/rwkv7/README.md §3.5) acts as the model's own: with the
 * model frozen, a copy of its W_k of layer 1 gives the same loss and, in the caller's array, the same
 * weight gradient as the trainable model, bit for bit. ds_rwkv7_forward_hidden returns the ln_out rows
 * whose head product is the forward's logits, bit for bit. */
static void test_shared_weight_and_hidden(void) {
    enum { B = 2, T = 11, L = 2, C = 128, V = 53 };
    int64_t CC = C * C;
    ds_rwkv7 m;
    make_model(&m, L, C, V, 17, 0.05f);
    int32_t tok[B * T], tgt[B * T];
    random_tokens(tok, B * T, V, 17, 1);
    random_tokens(tgt, B * T, V, 17, 2);
    ds_rwkv7_zero_grad(&m);
    double loss = ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    float *W = ds_alloc(sizeof(float) * CC), *G = ds_alloc(sizeof(float) * CC), *want = ds_alloc(sizeof(float) * CC);
    memcpy(W, m.w.layers[1].Wk, sizeof(float) * CC);
    memcpy(want, m.g.layers[1].Wk, sizeof(float) * CC);
    ds_rwkv7_seq_weight table[L * 3] = {{0}};
    table[3 * 1 + 1] = (ds_rwkv7_seq_weight){W, G, 1};
    m.seq_weights = table;
    m.frozen = 1;
    ds_rwkv7_zero_grad(&m);
    double shared = ds_rwkv7_forward(&m, B, T, tok, tgt, 1.0f, 1e-4f, NULL, NULL, NULL);
    ds_rwkv7_backward(&m);
    CHECK(shared == loss && memcmp(G, want, sizeof(float) * CC) == 0 && count_nonzero(G, CC) > CC / 2 &&
          count_nonzero(m.g.layers[1].Wk, CC) == 0 && count_nonzero(m.g.head, (int64_t)V * C) == 0,
          "a shared caller W_k on a frozen model: loss %.7f and its weight gradient bit-identical to the trainable "
          "model's; no other weight gradient", shared);
    m.seq_weights = NULL;
    m.frozen = 0;
    float *logits = ds_alloc(sizeof(float) * B * T * V), *again = ds_alloc(sizeof(float) * B * T * V);
    ds_rwkv7_forward(&m, B, T, tok, NULL, 1.0f, 0.0f, NULL, NULL, logits);
    const float *ln_out = ds_rwkv7_forward_hidden(&m, B, T, tok);
    ds_linear(B * T, C, V, ln_out, m.w.head, NULL, again);
    CHECK(memcmp(logits, again, sizeof(float) * B * T * V) == 0, "forward_hidden: ln_out x head = the logits, bit for bit");
    ds_free(W), ds_free(G), ds_free(want), ds_free(logits), ds_free(again);
    ds_rwkv7_destroy(&m);
}

int main(int argc, char **argv) {
    ds_blas_init(0);
    ds_kernels_init();
    if (argc > 1 && strcmp(argv[1], "--dump") == 0) return dump_mode(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--dump-tuner") == 0) return dump_tuner_mode(argc, argv);
    test_init();
    test_init_thread_independent();
    test_state_passing();
    test_determinism();
    test_grad_checkpoint();
    test_frozen_state_gradient();
    test_seq_weights();
    test_shared_weight_and_hidden();
    return test_summary("test_rwkv7");
}
