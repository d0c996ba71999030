/* WKV-7 recurrence kernels (src/rwkv7/README.md §2.3, §3.1, §9): the scalar reference against a float64
 * matrix-form forward and reverse-mode backward written here (the latter itself checked by finite
 * differences), state passing, NULL/accumulate conventions, thread-count independence, and the
 * AVX-512 twin against the reference (including mixing one's checkpoints with the other's backward). */
#include <omp.h>
#include <string.h>

#include "../src/kernels/impl.h"
#include "dreamstate/common.h"
#include "dreamstate/kernels.h"
#include "test.h"

enum { N = DS_HEAD_SIZE, NN = N * N, CHUNK = DS_WKV_CHUNK };
/* Kernel inputs in the order of the backward's gradient outputs; IN_S0 is the initial state. */
enum { IN_R, IN_DECAY, IN_K, IN_V, IN_ALPHA, IN_BETA, IN_S0, NIN };
static const char *in_name[NIN] = {"r", "decay", "k", "v", "alpha", "beta", "S_init"};

typedef __typeof__(wkv7_forward_ref) *fwd_fn;
typedef __typeof__(wkv7_backward_ref) *bwd_fn;
typedef struct {
    const char *name;
    fwd_fn fwd;
    bwd_fn bwd;
} twin;
static const twin REF = {"ref", wkv7_forward_ref, wkv7_backward_ref};
static const twin AVX = {"avx512", wkv7_forward_avx512, wkv7_backward_avx512};

/* A random problem in the trainer's ranges (src/rwkv7/README.md §9.1), with the loss L = <wy, y> + <ws, S_final>,
 * i.e. dy = wy and dstate_out = ws. Float64 copies hold exactly the fp32 values. */
typedef struct {
    int B, T, H, C;
    size_t n[NIN], ny;
    double *in[NIN], *wy, *ws;
    float *inf[NIN], *wyf, *wsf;
} problem;

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static problem make_problem(int B, int T, int H, uint64_t seed) {
    problem p = {.B = B, .T = T, .H = H, .C = H * N};
    p.ny = (size_t)B * T * p.C;
    for (int a = 0; a < NIN; a++) {
        p.n[a] = a == IN_S0 ? (size_t)B * H * NN : p.ny;
        p.in[a] = ds_alloc(p.n[a] * sizeof(double));
        p.inf[a] = ds_alloc(p.n[a] * sizeof(float));
    }
    p.wy = ds_alloc(p.ny * sizeof(double));
    p.wyf = ds_alloc(p.ny * sizeof(float));
    p.ws = ds_alloc(p.n[IN_S0] * sizeof(double));
    p.wsf = ds_alloc(p.n[IN_S0] * sizeof(float));
    for (size_t x = 0; x < p.ny; x++) {
        p.inf[IN_R][x] = 6 * ds_rng_uniform(seed, 1, x) - 3;
        p.inf[IN_K][x] = 6 * ds_rng_uniform(seed, 2, x) - 3;
        p.inf[IN_V][x] = 6 * ds_rng_uniform(seed, 3, x) - 3;
        p.inf[IN_DECAY][x] = exp(-exp(-0.5) * sigmoid(12 * ds_rng_uniform(seed, 4, x) - 6));
        p.wyf[x] = 2 * ds_rng_uniform(seed, 5, x) - 1;
    }
    for (size_t row = 0; row < p.ny / N; row++) { /* kappa-hat: a random unit vector per head */
        double kap[N], norm = 0;
        for (int i = 0; i < N; i++) {
            kap[i] = ds_rng_normal(seed, 6, row * N + i);
            norm += kap[i] * kap[i];
        }
        for (int i = 0; i < N; i++) {
            double kh = kap[i] / sqrt(norm), a = sigmoid(ds_rng_normal(seed, 7, row * N + i));
            p.inf[IN_ALPHA][row * N + i] = -kh;
            p.inf[IN_BETA][row * N + i] = kh * a;
        }
    }
    for (size_t x = 0; x < p.n[IN_S0]; x++) {
        p.inf[IN_S0][x] = 2 * ds_rng_uniform(seed, 8, x) - 1;
        p.wsf[x] = 2 * ds_rng_uniform(seed, 9, x) - 1;
    }
    for (int a = 0; a < NIN; a++)
        for (size_t x = 0; x < p.n[a]; x++) p.in[a][x] = p.inf[a][x];
    for (size_t x = 0; x < p.ny; x++) p.wy[x] = p.wyf[x];
    for (size_t x = 0; x < p.n[IN_S0]; x++) p.ws[x] = p.wsf[x];
    return p;
}

static void free_problem(problem *p) {
    for (int a = 0; a < NIN; a++) {
        ds_free(p->in[a]);
        ds_free(p->inf[a]);
    }
    ds_free(p->wy);
    ds_free(p->wyf);
    ds_free(p->ws);
    ds_free(p->wsf);
}

/* ---- float64 naive reference: row-major S[i][j], matrix form of src/rwkv7/README.md §2.3 ---- */

/* Runs the recurrence with inputs `in` (layout of problem p); fills y [B,T,C] and states
 * [B,H,T+1,N,N] (S_{-1} .. S_{T-1}); returns the loss L = <wy, y> + <ws, S_final>. */
static double naive_forward(const problem *p, double *const in[NIN], double *y, double *states) {
    const int T = p->T, C = p->C;
    double loss = 0;
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) {
            const size_t bh = (size_t)b * p->H + h;
            double *S = states + bh * (T + 1) * NN;
            memcpy(S, in[IN_S0] + bh * NN, NN * sizeof(double));
            for (int t = 0; t < T; t++, S += NN) {
                const size_t o = ((size_t)b * T + t) * C + (size_t)h * N;
                const double *w = in[IN_DECAY] + o, *k = in[IN_K] + o, *v = in[IN_V] + o,
                             *al = in[IN_ALPHA] + o, *be = in[IN_BETA] + o, *r = in[IN_R] + o;
                double *Sn = S + NN;
                for (int i = 0; i < N; i++) {
                    double sigma = 0, yi = 0;
                    for (int j = 0; j < N; j++) sigma += S[i * N + j] * al[j];
                    for (int j = 0; j < N; j++) {
                        Sn[i * N + j] = S[i * N + j] * w[j] + sigma * be[j] + v[i] * k[j];
                        yi += Sn[i * N + j] * r[j];
                    }
                    y[o + i] = yi;
                    loss += p->wy[o + i] * yi;
                }
            }
            for (int x = 0; x < NN; x++) loss += p->ws[bh * NN + x] * S[x];
        }
    return loss;
}

/* Reverse mode of naive_forward (src/rwkv7/README.md §3.1 with all states stored); grad[a] are overwritten. */
static void naive_backward(const problem *p, double *const in[NIN], double *grad[NIN]) {
    const int T = p->T, C = p->C;
    double *y = ds_alloc(p->ny * sizeof(double));
    double *states = ds_alloc((size_t)p->B * p->H * (T + 1) * NN * sizeof(double));
    double *G = ds_alloc(NN * sizeof(double));
    naive_forward(p, in, y, states);
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) {
            const size_t bh = (size_t)b * p->H + h;
            memcpy(G, p->ws + bh * NN, NN * sizeof(double));
            for (int t = T - 1; t >= 0; t--) {
                const size_t o = ((size_t)b * T + t) * C + (size_t)h * N;
                const double *Sp = states + (bh * (T + 1) + t) * NN, *Sn = Sp + NN;
                const double *w = in[IN_DECAY] + o, *k = in[IN_K] + o, *v = in[IN_V] + o,
                             *al = in[IN_ALPHA] + o, *be = in[IN_BETA] + o, *r = in[IN_R] + o,
                             *dy = p->wy + o;
                double sigma[N], dsigma[N];
                for (int i = 0; i < N; i++) {
                    sigma[i] = 0;
                    for (int j = 0; j < N; j++) sigma[i] += Sp[i * N + j] * al[j];
                }
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) G[i * N + j] += dy[i] * r[j];
                for (int i = 0; i < N; i++) {
                    double dv = 0, ds = 0;
                    for (int j = 0; j < N; j++) {
                        dv += G[i * N + j] * k[j];
                        ds += G[i * N + j] * be[j];
                    }
                    grad[IN_V][o + i] = dv;
                    dsigma[i] = ds;
                }
                for (int j = 0; j < N; j++) {
                    double dr = 0, dk = 0, db = 0, da = 0, dw = 0;
                    for (int i = 0; i < N; i++) {
                        dr += Sn[i * N + j] * dy[i];
                        dk += G[i * N + j] * v[i];
                        db += G[i * N + j] * sigma[i];
                        da += Sp[i * N + j] * dsigma[i];
                        dw += G[i * N + j] * Sp[i * N + j];
                    }
                    grad[IN_R][o + j] = dr;
                    grad[IN_K][o + j] = dk;
                    grad[IN_BETA][o + j] = db;
                    grad[IN_ALPHA][o + j] = da;
                    grad[IN_DECAY][o + j] = dw;
                }
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) G[i * N + j] = G[i * N + j] * w[j] + dsigma[i] * al[j];
            }
            memcpy(grad[IN_S0] + bh * NN, G, NN * sizeof(double));
        }
    ds_free(y);
    ds_free(states);
    ds_free(G);
}

/* ---- fp32 kernel runs ---- */

typedef struct {
    float *y, *sout, *ckpt, *grad[NIN];
} result;

static result alloc_result(const problem *p) {
    result res;
    res.y = ds_alloc(p->ny * sizeof(float));
    res.sout = ds_alloc(p->n[IN_S0] * sizeof(float));
    res.ckpt = ds_alloc((size_t)p->B * p->H * ((p->T + CHUNK - 1) / CHUNK) * NN * sizeof(float));
    for (int a = 0; a < NIN; a++) res.grad[a] = ds_alloc(p->n[a] * sizeof(float));
    return res;
}

static void free_result(result *res) {
    ds_free(res->y);
    ds_free(res->sout);
    ds_free(res->ckpt);
    for (int a = 0; a < NIN; a++) ds_free(res->grad[a]);
}

static void run_forward(fwd_fn fwd, const problem *p, result *res) {
    float *const *in = p->inf;
    fwd(p->B, p->T, p->H, in[IN_R], in[IN_DECAY], in[IN_K], in[IN_V], in[IN_ALPHA], in[IN_BETA],
        in[IN_S0], res->y, res->sout, res->ckpt);
}

/* Backward from the checkpoints `ckpt`, accumulating into res->grad. */
static void run_backward(bwd_fn bwd, const problem *p, const float *ckpt, const float *dstate_out,
                         result *res, int want_dstate_in) {
    float *const *in = p->inf, **g = res->grad;
    bwd(p->B, p->T, p->H, in[IN_R], in[IN_DECAY], in[IN_K], in[IN_V], in[IN_ALPHA], in[IN_BETA], ckpt,
        p->wyf, dstate_out, g[IN_R], g[IN_DECAY], g[IN_K], g[IN_V], g[IN_ALPHA], g[IN_BETA],
        want_dstate_in ? g[IN_S0] : NULL);
}

static result run_both(const twin *tw, const problem *p) {
    result res = alloc_result(p);
    run_forward(tw->fwd, p, &res);
    run_backward(tw->bwd, p, res.ckpt, p->wsf, &res, 1);
    return res;
}

static double rel_err_d(const float *a, const double *b, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t x = 0; x < n; x++) {
        double d = fabs(a[x] - b[x]);
        if (!(d <= num)) num = d == d ? d : INFINITY;
        if (fabs(b[x]) > den) den = fabs(b[x]);
    }
    return num / den;
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* ---- tests ---- */

/* src/rwkv7/README.md §9.1: the generator's inputs respect the trainer's bounds. */
static void test_input_bounds(void) {
    problem p = make_problem(2, 40, 3, 11);
    int ok = 1;
    for (size_t x = 0; x < p.ny; x++) {
        double w = p.in[IN_DECAY][x], al = p.in[IN_ALPHA][x], a = -p.in[IN_BETA][x] / al;
        ok &= w >= 0.5452 && w < 1;
        if (fabs(al) > 1e-3) ok &= a > 0 && a < 1;
    }
    for (size_t row = 0; row < p.ny / N; row++) {
        double norm = 0;
        for (int i = 0; i < N; i++) norm += p.in[IN_ALPHA][row * N + i] * p.in[IN_ALPHA][row * N + i];
        ok &= fabs(sqrt(norm) - 1) < 1e-6;
    }
    CHECK(ok, "generated inputs out of the trainer's ranges");
    free_problem(&p);
}

/* src/rwkv7/README.md §9.2: the float64 naive backward against central differences along random directions,
 * for every input (dy and dstate_out are both non-zero through the loss weights). */
static void test_naive_backward_fd(void) {
    problem p = make_problem(2, 21, 2, 21);
    double *grad[NIN], *work[NIN];
    double *y = ds_alloc(p.ny * sizeof(double));
    double *states = ds_alloc((size_t)p.B * p.H * (p.T + 1) * NN * sizeof(double));
    for (int a = 0; a < NIN; a++) {
        grad[a] = ds_alloc(p.n[a] * sizeof(double));
        work[a] = p.in[a];
    }
    naive_backward(&p, p.in, grad);
    const double eps = 1e-5;
    double worst = 0;
    for (int a = 0; a < NIN; a++) {
        double *u = ds_alloc(p.n[a] * sizeof(double)), *pert = ds_alloc(p.n[a] * sizeof(double));
        double analytic = 0;
        for (size_t x = 0; x < p.n[a]; x++) {
            u[x] = 2 * ds_rng_uniform(99, a, x) - 1;
            analytic += grad[a][x] * u[x];
        }
        work[a] = pert;
        double loss[2];
        for (int side = 0; side < 2; side++) {
            for (size_t x = 0; x < p.n[a]; x++) pert[x] = p.in[a][x] + (side ? -eps : eps) * u[x];
            loss[side] = naive_forward(&p, work, y, states);
        }
        work[a] = p.in[a];
        double fd = (loss[0] - loss[1]) / (2 * eps), rel = fabs(fd - analytic) / fabs(analytic);
        CHECK(rel < 1e-6, "naive backward vs FD for %s: analytic %.10g fd %.10g rel %.2e", in_name[a],
              analytic, fd, rel);
        worst = fmax(worst, rel);
        ds_free(u);
        ds_free(pert);
    }
    printf("float64 naive backward vs central differences, all 7 inputs: rel err <= %.1e\n", worst);
    for (int a = 0; a < NIN; a++) ds_free(grad[a]);
    ds_free(y);
    ds_free(states);
    free_problem(&p);
}

/* src/rwkv7/README.md §9.3: fp32 replay kernels against the float64 store-all reference; the AVX-512
 * twin against the reference, also with checkpoints crossed between the twins. */
static void test_against_naive(int B, int T, int H, int have_avx) {
    problem p = make_problem(B, T, H, 1000 + 7 * T + H);
    double *y = ds_alloc(p.ny * sizeof(double));
    double *states = ds_alloc((size_t)B * H * (T + 1) * NN * sizeof(double));
    double *sfinal = ds_alloc(p.n[IN_S0] * sizeof(double)), *grad[NIN];
    for (int a = 0; a < NIN; a++) grad[a] = ds_alloc(p.n[a] * sizeof(double));
    naive_forward(&p, p.in, y, states);
    for (size_t bh = 0; bh < (size_t)B * H; bh++)
        memcpy(sfinal + bh * NN, states + (bh * (T + 1) + T) * NN, NN * sizeof(double));
    naive_backward(&p, p.in, grad);

    result ref = run_both(&REF, &p);
    double ey = rel_err_d(ref.y, y, p.ny), es = rel_err_d(ref.sout, sfinal, p.n[IN_S0]), eg = 0;
    CHECK(ey < 1e-5 && es < 1e-5, "ref forward vs float64 (B%d T%d H%d): y %.2e state %.2e", B, T, H,
          ey, es);
    for (int a = 0; a < NIN; a++) {
        double e = rel_err_d(ref.grad[a], grad[a], p.n[a]);
        CHECK(e < 1e-4, "ref d%s vs float64 (B%d T%d H%d): %.2e", in_name[a], B, T, H, e);
        if (e > eg) eg = e;
    }
    printf("B%d T%3d H%d  ref vs float64: y %.1e  state %.1e  grads <= %.1e", B, T, H, ey, es, eg);

    if (have_avx) {
        result avx = run_both(&AVX, &p);
        size_t nck = (size_t)B * H * ((T + CHUNK - 1) / CHUNK) * NN;
        double e_fwd = fmax(test_rel_err(avx.y, ref.y, p.ny), test_rel_err(avx.sout, ref.sout, p.n[IN_S0]));
        double e_ck = test_rel_err(avx.ckpt, ref.ckpt, nck), e_gr = 0, e_mix = 0;
        CHECK(e_fwd < 1e-5 && e_ck < 1e-5, "avx512 forward vs ref (T%d): y/state %.2e ckpt %.2e", T,
              e_fwd, e_ck);
        /* Crossed: avx512 checkpoints into the ref backward, ref checkpoints into the avx512 one. */
        result mix_ref = alloc_result(&p), mix_avx = alloc_result(&p);
        run_backward(REF.bwd, &p, avx.ckpt, p.wsf, &mix_ref, 1);
        run_backward(AVX.bwd, &p, ref.ckpt, p.wsf, &mix_avx, 1);
        for (int a = 0; a < NIN; a++) {
            double e = test_rel_err(avx.grad[a], ref.grad[a], p.n[a]);
            double em = fmax(test_rel_err(mix_ref.grad[a], ref.grad[a], p.n[a]),
                             test_rel_err(mix_avx.grad[a], avx.grad[a], p.n[a]));
            CHECK(e < 1e-5, "avx512 d%s vs ref (B%d T%d H%d): %.2e", in_name[a], B, T, H, e);
            CHECK(em < 1e-5, "crossed-ckpt d%s (B%d T%d H%d): %.2e", in_name[a], B, T, H, em);
            e_gr = fmax(e_gr, e);
            e_mix = fmax(e_mix, em);
        }
        printf("  |  avx512 vs ref: fwd %.1e  ckpt %.1e  grads %.1e  crossed %.1e", e_fwd, e_ck, e_gr,
               e_mix);
        free_result(&avx);
        free_result(&mix_ref);
        free_result(&mix_avx);
    }
    printf("\n");
    free_result(&ref);
    for (int a = 0; a < NIN; a++) ds_free(grad[a]);
    ds_free(y);
    ds_free(states);
    ds_free(sfinal);
    free_problem(&p);
}

/* src/rwkv7/README.md §9.4: forward(A) then forward(B, state) == forward(A||B), bitwise. */
static void test_state_passing(const twin *tw) {
    const int B = 2, H = 2, TA = 23, TB = 41, T = TA + TB, C = H * N;
    problem p = make_problem(B, T, H, 77);
    result whole = alloc_result(&p);
    run_forward(tw->fwd, &p, &whole);
    float *part[NIN], *y2 = ds_alloc(p.ny * sizeof(float)), *mid = ds_alloc(p.n[IN_S0] * sizeof(float));
    float *end = ds_alloc(p.n[IN_S0] * sizeof(float)), *ybuf = ds_alloc(p.ny * sizeof(float));
    for (int a = 0; a < IN_S0; a++) part[a] = ds_alloc(p.ny * sizeof(float));
    const int span[2][2] = {{0, TA}, {TA, TB}}; /* first step, length */
    for (int s = 0; s < 2; s++) {
        const int t0 = span[s][0], len = span[s][1];
        for (int a = 0; a < IN_S0; a++)
            for (int b = 0; b < B; b++)
                memcpy(part[a] + (size_t)b * len * C, p.inf[a] + ((size_t)b * T + t0) * C,
                       (size_t)len * C * sizeof(float));
        tw->fwd(B, len, H, part[IN_R], part[IN_DECAY], part[IN_K], part[IN_V], part[IN_ALPHA],
                part[IN_BETA], s ? mid : p.inf[IN_S0], ybuf, s ? end : mid, NULL);
        for (int b = 0; b < B; b++)
            memcpy(y2 + ((size_t)b * T + t0) * C, ybuf + (size_t)b * len * C, (size_t)len * C * sizeof(float));
    }
    CHECK(same_bits(y2, whole.y, p.ny) && same_bits(end, whole.sout, p.n[IN_S0]),
          "%s: forward(A); forward(B, state) differs from forward(A||B)", tw->name);
    for (int a = 0; a < IN_S0; a++) ds_free(part[a]);
    ds_free(y2);
    ds_free(mid);
    ds_free(end);
    ds_free(ybuf);
    free_result(&whole);
    free_problem(&p);
}

/* kernels.h conventions: NULL state_in = zero state, NULL ckpt changes nothing else, NULL
 * dstate_out = zero, NULL dstate_in = not written; gradients are accumulated (+=); the result does
 * not depend on the thread count. */
static void test_conventions(const twin *tw) {
    problem p = make_problem(2, 37, 3, 5);
    const size_t ns = p.n[IN_S0];
    float *zero_state = ds_alloc(ns * sizeof(float)), *saved_s0 = p.inf[IN_S0];

    result base = run_both(tw, &p);
    result alt = alloc_result(&p);
    p.inf[IN_S0] = zero_state;
    result zero = run_both(tw, &p);
    p.inf[IN_S0] = saved_s0;
    tw->fwd(p.B, p.T, p.H, p.inf[IN_R], p.inf[IN_DECAY], p.inf[IN_K], p.inf[IN_V], p.inf[IN_ALPHA],
            p.inf[IN_BETA], NULL, alt.y, alt.sout, alt.ckpt);
    CHECK(same_bits(alt.y, zero.y, p.ny) && same_bits(alt.sout, zero.sout, ns),
          "%s: state_in NULL differs from a zero state", tw->name);
    tw->fwd(p.B, p.T, p.H, p.inf[IN_R], p.inf[IN_DECAY], p.inf[IN_K], p.inf[IN_V], p.inf[IN_ALPHA],
            p.inf[IN_BETA], p.inf[IN_S0], alt.y, alt.sout, NULL);
    CHECK(same_bits(alt.y, base.y, p.ny) && same_bits(alt.sout, base.sout, ns),
          "%s: ckpt NULL changes the forward", tw->name);

    /* dstate_out NULL vs zeros, and dstate_in NULL: compare against explicit-zero runs. */
    result with_zero = alloc_result(&p), with_null = alloc_result(&p);
    run_backward(tw->bwd, &p, base.ckpt, zero_state, &with_zero, 1);
    run_backward(tw->bwd, &p, base.ckpt, NULL, &with_null, 0);
    int same = 1, nonzero = 0;
    for (int a = 0; a < IN_S0; a++) same &= same_bits(with_null.grad[a], with_zero.grad[a], p.n[a]);
    for (size_t x = 0; x < ns; x++) nonzero |= with_null.grad[IN_S0][x] != 0;
    CHECK(same && !nonzero, "%s: dstate_out NULL / dstate_in NULL mishandled", tw->name);

    /* Accumulate: pre-filled buffers receive prefill + gradient. */
    result acc = alloc_result(&p);
    float *expect = ds_alloc((p.ny > ns ? p.ny : ns) * sizeof(float));
    for (int a = 0; a < NIN; a++)
        for (size_t x = 0; x < p.n[a]; x++) acc.grad[a][x] = 2 * ds_rng_uniform(3, a, x) - 1;
    run_backward(tw->bwd, &p, base.ckpt, p.wsf, &acc, 1);
    for (int a = 0; a < NIN; a++) {
        for (size_t x = 0; x < p.n[a]; x++)
            expect[x] = (float)(2 * ds_rng_uniform(3, a, x) - 1) + base.grad[a][x];
        double e = test_rel_err(acc.grad[a], expect, p.n[a]);
        CHECK(e < 1e-6, "%s: d%s not accumulated (+=): rel err %.2e", tw->name, in_name[a], e);
    }

    /* Thread-count independence (3 threads also exercises oversubscription on small machines). */
    const int threads = omp_get_max_threads();
    result one = alloc_result(&p), three = alloc_result(&p);
    omp_set_num_threads(1);
    run_forward(tw->fwd, &p, &one);
    run_backward(tw->bwd, &p, one.ckpt, p.wsf, &one, 1);
    omp_set_num_threads(3);
    run_forward(tw->fwd, &p, &three);
    run_backward(tw->bwd, &p, three.ckpt, p.wsf, &three, 1);
    omp_set_num_threads(threads);
    same = same_bits(one.y, three.y, p.ny) && same_bits(one.y, base.y, p.ny);
    for (int a = 0; a < NIN; a++)
        same &= same_bits(one.grad[a], three.grad[a], p.n[a]) && same_bits(one.grad[a], base.grad[a], p.n[a]);
    CHECK(same, "%s: results depend on the thread count", tw->name);

    free_result(&base);
    free_result(&alt);
    free_result(&zero);
    free_result(&with_zero);
    free_result(&with_null);
    free_result(&acc);
    free_result(&one);
    free_result(&three);
    ds_free(expect);
    ds_free(zero_state);
    free_problem(&p);
}

/* Throughput (printed, not asserted): tokens/s of forward (with checkpoints) and backward. */
static void print_throughput(int have_avx) {
    const int H = 12, T = 512;
    for (int B = 1; B <= 2; B++) {
        problem p = make_problem(B, T, H, 3);
        result res = alloc_result(&p);
        double tps[2][2] = {{0}}; /* [twin][fwd, bwd] */
        for (int w = 0; w < 1 + have_avx; w++) {
            const twin *tw = w ? &AVX : &REF;
            const int reps = w ? 5 : 1;
            double t0 = ds_now_seconds();
            for (int i = 0; i < reps; i++) run_forward(tw->fwd, &p, &res);
            double t1 = ds_now_seconds();
            for (int i = 0; i < reps; i++) run_backward(tw->bwd, &p, res.ckpt, p.wsf, &res, 1);
            double t2 = ds_now_seconds();
            tps[w][0] = reps * (double)B * T / (t1 - t0);
            tps[w][1] = reps * (double)B * T / (t2 - t1);
        }
        printf("throughput B%d H%d T%d, %d threads: ref fwd %.0f bwd %.0f tok/s", B, H, T,
               omp_get_max_threads(), tps[0][0], tps[0][1]);
        if (have_avx)
            printf(" | avx512 fwd %.0f bwd %.0f tok/s (x%.1f, x%.1f)", tps[1][0], tps[1][1],
                   tps[1][0] / tps[0][0], tps[1][1] / tps[0][1]);
        printf("\n");
        free_result(&res);
        free_problem(&p);
    }
}

int main(void) {
    const int have_avx = ds_cpu_has_avx512();
    if (!have_avx) printf("note: CPU lacks AVX-512; avx512 twin checks skipped\n");
    test_input_bounds();
    test_naive_backward_fd();
    static const int cases[][3] = {{1, 1, 1}, {2, 15, 2}, {1, 16, 1}, {1, 17, 3}, {2, 64, 2}, {1, 100, 2}, {1, 1000, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        test_against_naive(cases[c][0], cases[c][1], cases[c][2], have_avx);
    test_state_passing(&REF);
    test_conventions(&REF);
    if (have_avx) {
        test_state_passing(&AVX);
        test_conventions(&AVX);
    }
    print_throughput(have_avx);
    return test_summary("test_wkv7");
}
