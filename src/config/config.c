/* Run configuration. One table (config_keys) describes every key: its place in ds_config, type,
 * default, bounds and help. Defaults, YAML parsing (libyaml events, whose marks give line numbers),
 * --set overrides, range checks, the resolved YAML dump and the help text are all driven by it, so a
 * new key is one table line. Cross-field rules and derived defaults live in check_and_resolve. */
#include "dreamstate/config.h"

#include "dreamstate/common.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef enum { KEY_INT, KEY_INT64, KEY_DOUBLE, KEY_BOOL, KEY_STRING, KEY_ENUM } key_type;

enum {
    MIN_EXCLUSIVE = 1, /* value > min instead of >= min */
    MAX_EXCLUSIVE = 2, /* value < max instead of <= max */
    NON_EMPTY = 4,     /* strings: "" is not allowed */
};

typedef struct config_key {
    const char *section, *name;
    size_t offset, size;      /* where the value lives in ds_config */
    key_type type;
    const char *def;          /* default, as text: parsed by the same code as file values */
    double min, max;          /* numbers: bounds (all exactly representable as doubles) */
    unsigned flags;
    const char *choices;      /* KEY_ENUM: allowed values separated by '|' */
    const char *help;
} config_key;

#define KEY(sec, key) \
    .section = #sec, .name = #key, .offset = offsetof(ds_config, sec.key), .size = sizeof(((ds_config *)0)->sec.key)

/* Grouped by section, in the order of `sections` below (the dump and the help follow this order). */
static const config_key config_keys[] = {
    {KEY(run, name), .type = KEY_STRING, .def = "run", .flags = NON_EMPTY,
     .help = "name of the run; run.out_dir defaults to runs/<run.name>"},
    {KEY(run, out_dir), .type = KEY_STRING, .def = "",
     .help = "directory for the resolved config, logs and checkpoints; empty = runs/<run.name>"},
    {KEY(run, seed), .type = KEY_INT64, .def = "1234", .min = 0, .max = (double)INT64_MAX,
     .help = "seed of every random stream (initialisation, data order)"},
    {KEY(run, threads), .type = KEY_INT, .def = "0", .min = 0, .max = 4096,
     .help = "BLIS/OpenMP threads per rank; 0 = all cores"},
    {KEY(run, task), .type = KEY_ENUM, .def = "lm", .choices = "lm|state_diffusion|hybrid|state_tuning",
     .help = "what to train: a language model, state diffusion, the hybrid, or initial states (state tuning)"},

    {KEY(model, n_layer), .type = KEY_INT, .def = "2", .min = 1, .max = 1024, .help = "number of RWKV-7 blocks"},
    {KEY(model, n_embd), .type = KEY_INT, .def = "128", .min = 1, .max = 65536,
     .help = "model width C; a multiple of model.head_size"},
    {KEY(model, head_size), .type = KEY_INT, .def = "64", .min = 64, .max = 64,
     .help = "channels per head (the kernels support 64 only)"},
    {KEY(model, vocab_size), .type = KEY_INT, .def = "256", .min = 2, .max = 1 << 24,
     .help = "output classes; >= 256 for the byte tokenizer, >= 65536 (and 65536 when unset) for world"},
    {KEY(model, dim_w), .type = KEY_INT, .def = "0", .min = 0, .max = 65536,
     .help = "LoRA rank of the decay w; 0 = from model.lora_formula"},
    {KEY(model, dim_a), .type = KEY_INT, .def = "0", .min = 0, .max = 65536,
     .help = "LoRA rank of the in-context learning rate a; 0 = from model.lora_formula"},
    {KEY(model, dim_v), .type = KEY_INT, .def = "0", .min = 0, .max = 65536,
     .help = "LoRA rank of the value-residual gate v; 0 = from model.lora_formula"},
    {KEY(model, dim_g), .type = KEY_INT, .def = "0", .min = 0, .max = 65536,
     .help = "LoRA rank of the output gate g; 0 = from model.lora_formula"},
    {KEY(model, lora_formula), .type = KEY_ENUM, .def = "released", .choices = "released|current",
     .help = "LoRA rank formula (src/rwkv7/README.md §1): released models, or the current trainer's"},

    {KEY(data, tokenizer), .type = KEY_ENUM, .def = "byte", .choices = "byte|world",
     .help = "byte (256 symbols) or the RWKV World tokenizer (65536 symbols)"},
    {KEY(data, vocab_file), .type = KEY_STRING, .def = "",
     .help = "World tokenizer vocabulary file; empty = the built-in rwkv_vocab_v20230424.txt"},
    {KEY(data, train), .type = KEY_STRING, .def = "",
     .help = "token shard file, directory of shards, or binidx data (NAME, NAME.bin or NAME.idx); empty = the "
             "built-in default corpus"},
    {KEY(data, valid), .type = KEY_STRING, .def = "",
     .help = "held-out data, as data.train; empty = data.train, or the built-in default corpus's held-out part"},
    {KEY(data, sampler), .type = KEY_ENUM, .def = "random", .choices = "random|rwkv_lm",
     .help = "training windows: random (offsets drawn from run.seed and the sample number) or rwkv_lm "
             "(RWKV-LM's magic-prime order, reproduced exactly)"},
    {KEY(data, magic_prime), .type = KEY_INT64, .def = "0", .min = 0, .max = (double)INT64_MAX,
     .help = "rwkv_lm's prime P: P mod 3 = 2 and 0.9 < P / (train tokens // ctx_len) <= 1; 0 = the largest such "
             "prime below tokens // ctx_len (as RWKV-LM's make_data.py picks it)"},

    {KEY(train, ctx_len), .type = KEY_INT, .def = "64", .min = 1, .max = 1 << 20, .help = "sequence length T"},
    {KEY(train, batch_size), .type = KEY_INT, .def = "8", .min = 1, .max = 1 << 20,
     .help = "global batch: sequences per optimiser step, over all ranks"},
    {KEY(train, micro_batch), .type = KEY_INT, .def = "0", .min = 0, .max = 1 << 20,
     .help = "sequences per rank per forward/backward; 0 = batch_size / ranks (no accumulation)"},
    {KEY(train, steps), .type = KEY_INT64, .def = "200", .min = 1, .max = (double)INT64_MAX,
     .help = "optimiser steps"},
    {KEY(train, eval_every), .type = KEY_INT, .def = "50", .min = 0, .max = INT_MAX,
     .help = "steps between held-out evaluations; 0 = only at the end"},
    {KEY(train, eval_batches), .type = KEY_INT, .def = "8", .min = 1, .max = INT_MAX,
     .help = "held-out windows per evaluation = eval_batches x batch_size"},
    {KEY(train, log_every), .type = KEY_INT, .def = "1", .min = 1, .max = INT_MAX, .help = "steps between log lines"},
    {KEY(train, grad_reduce), .type = KEY_ENUM, .def = "fp64", .choices = "fp64|fp32",
     .help = "gradient accumulation and allreduce precision: fp64 trains identically on any rank count; fp32 halves traffic"},
    {KEY(train, precision), .type = KEY_ENUM, .def = "fp32", .choices = "fp32|bf16",
     .help = "matrix products: fp32, or bf16 operands with fp32 accumulation (oneDNN on CPUs with AVX512_BF16/AMX, "
             "else a reference path); weights, AdamW moments, norms, WKV state, loss and checkpoints stay fp32"},
    {KEY(train, zero_stage), .type = KEY_INT, .def = "0", .min = 0, .max = 1,
     .help = "1 = ZeRO-1: AdamW moments sharded over ranks (reduce to owner, update shard, share parameters)"},
    {KEY(train, skip_nonfinite), .type = KEY_INT, .def = "0", .min = 0, .max = INT_MAX,
     .help = "a step whose loss or gradient norm is NaN or Inf is skipped (no update) up to this many times in a "
             "row; one more stops the run (exit 1) without a checkpoint of it; 0 = stop at the first"},
    {KEY(train, grad_checkpoint), .type = KEY_BOOL, .def = "false",
     .help = "activation checkpointing per block (as RWKV-LM's --grad_cp 1): keep each block's input and "
             "recompute the block in the backward; activations of one block instead of all, identical results, "
             "about a third more compute"},
    {KEY(train, comm_timeout), .type = KEY_DOUBLE, .def = "600", .min = 0, .max = 1e9,
     .help = "seconds a rank waits in one collective (gradient allreduce, broadcast, barrier) during training "
             "before it exits 1 naming it: another rank died or the network between nodes failed; 0 = wait forever"},

    {KEY(optim, lr), .type = KEY_DOUBLE, .def = "6e-4", .min = 0, .max = HUGE_VAL, .flags = MIN_EXCLUSIVE,
     .help = "peak learning rate, reached after the warm-up"},
    {KEY(optim, lr_final), .type = KEY_DOUBLE, .def = "6e-5", .min = 0, .max = HUGE_VAL,
     .help = "learning rate at the last step (cosine decay from optim.lr)"},
    {KEY(optim, warmup_steps), .type = KEY_INT64, .def = "10", .min = 0, .max = (double)INT64_MAX,
     .help = "linear warm-up steps"},
    {KEY(optim, beta1), .type = KEY_DOUBLE, .def = "0.9", .min = 0, .max = 1, .flags = MAX_EXCLUSIVE,
     .help = "Adam first-moment decay"},
    {KEY(optim, beta2), .type = KEY_DOUBLE, .def = "0.99", .min = 0, .max = 1, .flags = MAX_EXCLUSIVE,
     .help = "Adam second-moment decay"},
    {KEY(optim, eps), .type = KEY_DOUBLE, .def = "1e-18", .min = 0, .max = HUGE_VAL, .flags = MIN_EXCLUSIVE,
     .help = "Adam epsilon"},
    {KEY(optim, weight_decay), .type = KEY_DOUBLE, .def = "0.001", .min = 0, .max = HUGE_VAL,
     .help = "decoupled weight decay, applied to matrices only"},
    {KEY(optim, grad_clip), .type = KEY_DOUBLE, .def = "1.0", .min = 0, .max = HUGE_VAL,
     .help = "clip the global gradient L2 norm to this; 0 disables"},
    {KEY(optim, l2wrap), .type = KEY_DOUBLE, .def = "1e-4", .min = 0, .max = HUGE_VAL,
     .help = "L2Wrap factor on the largest logit"},

    {KEY(checkpoint, dir), .type = KEY_STRING, .def = "",
     .help = "checkpoint directory; empty = <run.out_dir>/checkpoints"},
    {KEY(checkpoint, every), .type = KEY_INT, .def = "50", .min = 0, .max = INT_MAX,
     .help = "steps between checkpoints; 0 = only at the end"},
    {KEY(checkpoint, keep), .type = KEY_INT, .def = "3", .min = 1, .max = INT_MAX, .help = "newest checkpoints kept"},
    {KEY(checkpoint, resume), .type = KEY_ENUM, .def = "auto", .choices = "auto|never|restart",
     .help = "auto: resume from the newest valid checkpoint; never: start fresh; restart: start fresh after moving "
             "an earlier run's files to <run.out_dir>.old-N/ (auto and never refuse to start fresh over an earlier "
             "run's checkpoints or train.jsonl)"},

    {KEY(dit, hidden), .type = KEY_INT, .def = "64", .min = 4, .max = 65536,
     .help = "DiT width d (a multiple of dit.heads and of 4)"},
    {KEY(dit, depth), .type = KEY_INT, .def = "2", .min = 0, .max = 1024, .help = "DiT blocks"},
    {KEY(dit, heads), .type = KEY_INT, .def = "2", .min = 1, .max = 1024, .help = "DiT attention heads"},
    {KEY(dit, patch_size), .type = KEY_INT, .def = "8", .min = 1, .max = 64,
     .help = "DiT patch size p (divides 64): (64/p)^2 tokens"},
    {KEY(dit, mlp_ratio), .type = KEY_INT, .def = "4", .min = 1, .max = 64, .help = "DiT MLP width / d"},

    {KEY(diffusion, states), .type = KEY_STRING, .def = "",
     .help = "train state-dataset index (extract-states --out DIR gives DIR/index.txt)"},
    {KEY(diffusion, states_valid), .type = KEY_STRING, .def = "",
     .help = "held-out state-dataset index for the denoising loss; empty = none"},
    {KEY(diffusion, layers), .type = KEY_STRING, .def = "last", .flags = NON_EMPTY,
     .help = "RWKV-7 layers whose WKV states are modelled: last, all, or a list like 0,3"},
    {KEY(diffusion, condition), .type = KEY_ENUM, .def = "label", .choices = "label|first_token|mean_token",
     .help = "what the state DiT is conditioned on"},
    {KEY(diffusion, schedule), .type = KEY_ENUM, .def = "linear", .choices = "linear|cosine",
     .help = "noise schedule over 1000 steps"},
    {KEY(diffusion, normalize), .type = KEY_ENUM, .def = "head", .choices = "head|element",
     .help = "state normalisation statistics per head (channel) or per element of the 64x64 matrices"},
    {KEY(diffusion, prediction), .type = KEY_ENUM, .def = "eps", .choices = "eps|v",
     .help = "the state DiT predicts the noise eps (the paper) or v = sqrt(ab) eps - sqrt(1-ab) x0"},
    {KEY(diffusion, p_uncond), .type = KEY_DOUBLE, .def = "0.1", .min = 0, .max = 1, .flags = MAX_EXCLUSIVE,
     .help = "probability of the null condition in training (classifier-free guidance)"},
    {KEY(diffusion, shuffle_condition), .type = KEY_BOOL, .def = "false",
     .help = "control: train on the conditions of a seeded permutation of the train records (labels kept in "
             "proportion, tied to other states), so a DiT that beats it uses its condition"},
    {KEY(diffusion, ema), .type = KEY_DOUBLE, .def = "0.999", .min = 0, .max = 1, .flags = MAX_EXCLUSIVE,
     .help = "EMA decay of the weights used for sampling and evaluation"},

    {KEY(hybrid, init), .type = KEY_STRING, .def = "",
     .help = "RWKV-7 weights the hybrid starts from (.ckpt or .safetensors)"},
    {KEY(hybrid, layers), .type = KEY_STRING, .def = "last", .flags = NON_EMPTY,
     .help = "layers whose time-mix matrices are generated: last, all, or a list like 0,3"},
    {KEY(hybrid, matrices), .type = KEY_ENUM, .def = "rkv", .choices = "rkv|r|k|v|rk|rv|kv|none",
     .help = "which of W_r, W_k, W_v are generated; none: the static baseline (no DiT, needs train_static 1)"},
    {KEY(hybrid, param), .type = KEY_ENUM, .def = "full", .choices = "full|lowrank",
     .help = "generate full matrices (A1) or low-rank deltas (A2)"},
    {KEY(hybrid, rank), .type = KEY_INT, .def = "32", .min = 1, .max = 65536, .help = "rank r of the lowrank variant"},
    {KEY(hybrid, generator), .type = KEY_ENUM, .def = "diffusion", .choices = "diffusion|direct",
     .help = "diffusion: the parameter DiT with its diffusion loss; direct: the same DiT run once on the static weights "
             "without noise (a deterministic hypernetwork, L_LM only: needs lambda_pd 0)"},
    {KEY(hybrid, condition), .type = KEY_ENUM, .def = "first_token",
     .choices = "first_token|mean_prefix|attn_prefix|ln_out_prefix",
     .help = "global-context condition: first-token embedding, the mean embedding of the prefix, a learned "
             "attention pool over the prefix's embeddings, or the mean of the static RWKV-7's ln_out over the prefix"},
    {KEY(hybrid, shuffle_condition), .type = KEY_BOOL, .def = "false",
     .help = "true: each window's condition is read from another window (training: the next global sample's; "
             "held-out: the next held-out window's), a control that carries no information about the window"},
    {KEY(hybrid, prefix), .type = KEY_INT, .def = "16", .min = 1, .max = 1 << 20,
     .help = "P: the LM loss is scored from position P on; the *_prefix conditions read tokens < P"},
    {KEY(hybrid, alpha), .type = KEY_ENUM, .def = "learned", .choices = "learned|fixed",
     .help = "fusion coefficient alpha: learned (sigmoid of a logit per layer and matrix) or fixed"},
    {KEY(hybrid, alpha_init), .type = KEY_DOUBLE, .def = "0.9", .min = 0, .max = 1,
     .flags = MIN_EXCLUSIVE | MAX_EXCLUSIVE, .help = "alpha at the start (learned) or throughout (fixed)"},
    {KEY(hybrid, alpha_lr_scale), .type = KEY_DOUBLE, .def = "10", .min = 0, .max = HUGE_VAL,
     .help = "learning-rate multiplier of the alpha logits"},
    {KEY(hybrid, lambda_lm), .type = KEY_DOUBLE, .def = "1", .min = 0, .max = HUGE_VAL, .help = "weight of L_LM"},
    {KEY(hybrid, lambda_pd), .type = KEY_DOUBLE, .def = "0.1", .min = 0, .max = HUGE_VAL,
     .help = "weight of L_param_diffusion"},
    {KEY(hybrid, t_star), .type = KEY_INT, .def = "199", .min = 0, .max = 999,
     .help = "diffusion step of the one-step generation path"},
    {KEY(hybrid, train_static), .type = KEY_INT, .def = "0", .min = 0, .max = 1,
     .help = "1: the static RWKV-7 weights train too; 0: frozen"},
    {KEY(hybrid, static_scope), .type = KEY_ENUM, .def = "all", .choices = "all|targeted",
     .help = "with train_static 1, which RWKV-7 weights train: all, or only W_r, W_k, W_v of hybrid.layers (the "
             "generated ones; all three with matrices none), the rest frozen as loaded"},
    {KEY(hybrid, lm_warmup_steps), .type = KEY_INT64, .def = "0", .min = 0, .max = (double)INT64_MAX,
     .help = "first steps trained on the diffusion loss only (lambda_lm = 0)"},

    {KEY(state_tuning, init), .type = KEY_STRING, .def = "",
     .help = "the frozen RWKV-7 weights whose initial states are tuned (.ckpt or .safetensors)"},
    {KEY(state_tuning, contexts), .type = KEY_STRING, .def = "",
     .help = "labelled train contexts (JSONL, as build-contexts writes them)"},
    {KEY(state_tuning, contexts_valid), .type = KEY_STRING, .def = "",
     .help = "labelled held-out contexts for val_loss; empty = the train contexts"},
    {KEY(state_tuning, per_label), .type = KEY_BOOL, .def = "false",
     .help = "true: one set of initial states per label, trained on that label's contexts; false: one set"},
    {KEY(state_tuning, skip_tokens), .type = KEY_INT, .def = "0", .min = 0, .max = 1 << 30,
     .help = "tokens at the start of each context that are not read: the window is the next ctx_len + 1"},
};
enum { N_KEYS = sizeof config_keys / sizeof config_keys[0] };
_Static_assert(N_KEYS <= DS_CONFIG_MAX_KEYS, "raise DS_CONFIG_MAX_KEYS in config.h");

static const char *const sections[] = {"run", "model", "data", "train", "optim", "checkpoint",
                                       "dit", "diffusion", "hybrid", "state_tuning"};
enum { N_SECTIONS = sizeof sections / sizeof sections[0] };

/* Where each key's current value came from, for error messages: a file line, a --set argument
 * (which wins over the file), or neither (the default). */
typedef struct key_origin {
    int line;
    const char *set_arg;
} key_origin;

typedef struct load_ctx {
    const char *path;
    const char *text;    /* the file's bytes (text_len of them), for the line of a reader error */
    size_t text_len;
    key_origin origin[N_KEYS];
} load_ctx;

/* ---- lookup and suggestions ---- */

static int find_section(const char *name) {
    for (int s = 0; s < N_SECTIONS; s++)
        if (strcmp(sections[s], name) == 0) return s;
    return -1;
}

static int find_key(const char *section, const char *name) {
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].name, name) == 0) return i;
    return -1;
}

/* Key used by the cross-field checks; a miss is a typo in this file. */
static int key_index(const char *section, const char *name) {
    int i = find_key(section, name);
    if (i < 0) ds_die(DS_EXIT_FAIL, "config: no key %s.%s in the table", section, name);
    return i;
}

static size_t edit_distance(const char *a, const char *b) {
    size_t n = strlen(b), row[64];
    if (n >= 64) return SIZE_MAX;
    for (size_t j = 0; j <= n; j++) row[j] = j;
    for (size_t i = 1; a[i - 1]; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= n; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[n];
}

/* Typos are close: at most 1 edit for short words, 2 otherwise. */
static int is_close(const char *typed, const char *known) {
    size_t limit = strlen(typed) <= 4 ? 1 : 2;
    return edit_distance(typed, known) <= limit;
}

/* " (did you mean 'x'?)" or "" */
static void suggest_section(const char *typed, char *out, size_t n) {
    out[0] = 0;
    for (int s = 0; s < N_SECTIONS; s++)
        if (is_close(typed, sections[s])) { snprintf(out, n, " (did you mean '%s'?)", sections[s]); return; }
}

/* A close key of the same section, else the same key name in another section. */
static void suggest_key(const char *section, const char *typed, char *out, size_t n) {
    out[0] = 0;
    size_t best = SIZE_MAX;
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        if (strcmp(k->section, section) != 0 || !is_close(typed, k->name)) continue;
        size_t d = edit_distance(typed, k->name);
        if (d < best) { best = d; snprintf(out, n, " (did you mean '%s'?)", k->name); }
    }
    if (out[0]) return;
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(config_keys[i].name, typed) == 0) {
            snprintf(out, n, " (did you mean '%s.%s'?)", config_keys[i].section, typed);
            return;
        }
}

/* ---- values ---- */

static void *field(ds_config *cfg, const config_key *k) { return (char *)cfg + k->offset; }
static const void *cfield(const ds_config *cfg, const config_key *k) { return (const char *)cfg + k->offset; }

/* Numbers may group digits with '_' (1_000_000); strips them into out. 0 if malformed. */
static int strip_digit_groups(const char *text, char *out, size_t n) {
    size_t len = strlen(text), j = 0;
    if (len >= n) return 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '_') {
            if (i == 0 || i + 1 == len || text[i - 1] < '0' || text[i - 1] > '9' || text[i + 1] < '0' || text[i + 1] > '9')
                return 0;
            continue;
        }
        out[j++] = text[i];
    }
    out[j] = 0;
    return 1;
}

/* 1 if text is a decimal integer that fits a long long; *too_large tells overflow from garbage. */
static int parse_integer(const char *text, long long *v, int *too_large) {
    char buf[64], *end;
    *too_large = 0;
    if (!strip_digit_groups(text, buf, sizeof buf)) return 0;
    if (!(buf[0] == '-' || buf[0] == '+' || (buf[0] >= '0' && buf[0] <= '9'))) return 0;
    errno = 0;
    *v = strtoll(buf, &end, 10);
    if (end == buf || *end != 0) return 0;
    *too_large = errno == ERANGE;
    return !*too_large;
}

/* Plain decimal notation only (no hex, inf or nan), finite. */
static int parse_number(const char *text, double *v) {
    char buf[64], *end;
    if (!strip_digit_groups(text, buf, sizeof buf) || !buf[0]) return 0;
    if (strspn(buf, "0123456789+-.eE") != strlen(buf)) return 0;
    *v = strtod(buf, &end);
    return end != buf && *end == 0 && isfinite(*v);
}

/* 1 with "must be >= 1, got 0" style text in why if v is outside the key's bounds. */
static int out_of_range(const config_key *k, double v, char *why, size_t n, const char *text) {
    int low = (k->flags & MIN_EXCLUSIVE) ? !(v > k->min) : !(v >= k->min);
    int high = (k->flags & MAX_EXCLUSIVE) ? !(v < k->max) : !(v <= k->max);
    if (!low && !high) return 0;
    if (k->min == k->max)
        snprintf(why, n, "must be %.17g, got %s", k->min, text);
    else if (low)
        snprintf(why, n, "must be %s %.17g, got %s", (k->flags & MIN_EXCLUSIVE) ? ">" : ">=", k->min, text);
    else
        snprintf(why, n, "must be %s %.17g, got %s", (k->flags & MAX_EXCLUSIVE) ? "<" : "<=", k->max, text);
    return 1;
}

/* Whether `text` is one of the '|'-separated choices. */
static int is_choice(const char *choices, const char *text) {
    size_t len = strlen(text);
    for (const char *c = choices; *c;) {
        size_t clen = strcspn(c, "|");
        if (clen == len && strncmp(c, text, len) == 0) return 1;
        c += clen + (c[clen] == '|');
    }
    return 0;
}

/* Parses text into the key's field. Returns 0, or -1 with the reason in why. */
static int set_value(ds_config *cfg, const config_key *k, const char *text, char *why, size_t n) {
    switch (k->type) {
    case KEY_INT:
    case KEY_INT64: { /* KEY_INT bounds lie inside int (checked in ds_config_defaults) */
        long long v;
        int too_large;
        if (!parse_integer(text, &v, &too_large)) {
            snprintf(why, n, "expected an integer, got '%s'%s", text, too_large ? " (too large)" : "");
            return -1;
        }
        if (out_of_range(k, (double)v, why, n, text)) return -1;
        if (k->type == KEY_INT) *(int *)field(cfg, k) = (int)v;
        else *(int64_t *)field(cfg, k) = v;
        return 0;
    }
    case KEY_DOUBLE: {
        double v;
        if (!parse_number(text, &v)) { snprintf(why, n, "expected a number, got '%s'", text); return -1; }
        if (out_of_range(k, v, why, n, text)) return -1;
        *(double *)field(cfg, k) = v;
        return 0;
    }
    case KEY_BOOL:
        if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0) {
            snprintf(why, n, "expected true or false, got '%s'", text);
            return -1;
        }
        *(int *)field(cfg, k) = strcmp(text, "true") == 0;
        return 0;
    case KEY_ENUM:
        if (!is_choice(k->choices, text)) {
            char list[128];
            size_t len = 0;
            for (const char *c = k->choices; *c && len < sizeof list;) {
                size_t clen = strcspn(c, "|");
                len += snprintf(list + len, sizeof list - len, "%s'%.*s'", len ? ", " : "", (int)clen, c);
                c += clen + (c[clen] == '|');
            }
            snprintf(why, n, "expected one of %s, got '%s'", list, text);
            return -1;
        }
        break;
    case KEY_STRING:
        if ((k->flags & NON_EMPTY) && !text[0]) { snprintf(why, n, "must not be empty"); return -1; }
        break;
    }
    size_t len = strlen(text);
    if (len >= k->size) {
        snprintf(why, n, "too long (%zu characters, at most %zu)", len, k->size - 1);
        return -1;
    }
    /* Zero the whole field so that equal configs are equal bytes (tests compare with memcmp). */
    memset(field(cfg, k), 0, k->size);
    memcpy(field(cfg, k), text, len);
    return 0;
}

/* ---- errors ---- */

/* "FILE:LINE: what: reason" */
static void __attribute__((noreturn, format(printf, 4, 5)))
die_line(const load_ctx *ctx, size_t line, const char *what, const char *fmt, ...) {
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: %s: %s", ctx->path, line, what, why);
}

/* An error about key i, located where its value came from. */
static void __attribute__((noreturn, format(printf, 3, 4)))
die_key(const load_ctx *ctx, int i, const char *fmt, ...) {
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    const config_key *k = &config_keys[i];
    const key_origin *o = &ctx->origin[i];
    if (o->set_arg) ds_die_replicated(DS_EXIT_BAD_INPUT, "--set %s: %s", o->set_arg, why);
    if (o->line) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%d: %s.%s: %s", ctx->path, o->line, k->section, k->name, why);
    if (ctx->path) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s.%s: %s", ctx->path, k->section, k->name, why);
    ds_die_replicated(DS_EXIT_BAD_INPUT, "%s.%s: %s", k->section, k->name, why);
}

/* ---- YAML file ---- */

static size_t line_of(const yaml_event_t *ev) { return ev->start_mark.line + 1; }

static void next_event(const load_ctx *ctx, yaml_parser_t *p, yaml_event_t *ev) {
    if (yaml_parser_parse(p, ev)) return;
    if (p->error == YAML_READER_ERROR) {  /* libyaml gives a byte offset only */
        size_t line = 1;
        for (size_t i = 0; i < p->problem_offset && i < ctx->text_len; i++) line += ctx->text[i] == '\n';
        if (p->problem_offset < ctx->text_len && ctx->text[p->problem_offset] == 0)
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: a NUL byte (byte %zu); a config is text", ctx->path, line,
                              p->problem_offset);
        ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: cannot read: %s (byte %zu)", ctx->path, line, p->problem,
                          p->problem_offset);
    }
    if (p->error == YAML_MEMORY_ERROR) ds_die(DS_EXIT_FAIL, "%s: out of memory parsing YAML", ctx->path);
    char context[128] = "";
    if (p->context) snprintf(context, sizeof context, " (%s at line %zu)", p->context, p->context_mark.line + 1);
    ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: invalid YAML: %s%s", ctx->path, p->problem_mark.line + 1,
                      p->problem ? p->problem : "syntax error", context);
}

/* `key:` with nothing after it, or ~ / null: an empty section or an empty string. */
static int is_null_scalar(const yaml_event_t *ev) {
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *v = (const char *)ev->data.scalar.value;
    return !v[0] || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* A scalar's text: its escapes ("\0", "\x00", "\u0000") may put a NUL inside, which would silently cut
 * a C string short, so such a scalar is refused ("FILE:LINE: what: ..."). */
static const char *scalar_text(const load_ctx *ctx, const yaml_event_t *ev, const char *what) {
    const char *s = (const char *)ev->data.scalar.value;
    if (strlen(s) != ev->data.scalar.length)
        die_line(ctx, line_of(ev), what, "contains a NUL character (an escape such as \\0); remove it");
    return s;
}

static const char *node_kind(const yaml_event_t *ev) {
    switch (ev->type) {
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_SEQUENCE_START_EVENT: return "a sequence";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "a scalar";
    }
}

static void parse_section(load_ctx *ctx, yaml_parser_t *p, ds_config *cfg, const char *section) {
    yaml_event_t ev;
    next_event(ctx, p, &ev);
    if (!is_null_scalar(&ev)) {
        if (ev.type != YAML_MAPPING_START_EVENT)
            die_line(ctx, line_of(&ev), section, "expected a mapping of key: value pairs, got %s", node_kind(&ev));
        for (;;) {
            yaml_event_delete(&ev);
            next_event(ctx, p, &ev);
            if (ev.type == YAML_MAPPING_END_EVENT) break;
            if (ev.type != YAML_SCALAR_EVENT)
                die_line(ctx, line_of(&ev), section, "expected a key, got %s", node_kind(&ev));
            int line = (int)line_of(&ev);
            char key_of[64];
            snprintf(key_of, sizeof key_of, "a key of %s", section);
            const char *name = scalar_text(ctx, &ev, key_of);
            char path[160];
            snprintf(path, sizeof path, "%s.%s", section, name);
            int i = find_key(section, name);
            if (i < 0) {
                char hint[96];
                suggest_key(section, name, hint, sizeof hint);
                die_line(ctx, line, path, "unknown key%s", hint);
            }
            if (ctx->origin[i].line) die_line(ctx, line, path, "duplicate key (first at line %d)", ctx->origin[i].line);

            yaml_event_delete(&ev);
            next_event(ctx, p, &ev);
            if (ev.type == YAML_ALIAS_EVENT) die_line(ctx, line, path, "YAML aliases are not supported");
            if (ev.type != YAML_SCALAR_EVENT) die_line(ctx, line, path, "not a scalar (got %s)", node_kind(&ev));
            const config_key *k = &config_keys[i];
            const char *text = scalar_text(ctx, &ev, path);
            if (k->type == KEY_STRING && is_null_scalar(&ev)) text = "";
            char why[256];
            if (set_value(cfg, k, text, why, sizeof why) != 0) die_line(ctx, line, path, "%s", why);
            ctx->origin[i].line = line;
        }
    }
    yaml_event_delete(&ev);
}

/* A config that sets nothing is more likely a mistake (a truncated copy, the wrong file) than a wish
 * for every default. */
static void __attribute__((noreturn)) die_empty(const load_ctx *ctx) {
    ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: the config file is empty (no sections); give at least one, e.g. "
                      "'run: {name: NAME}'", ctx->path);
}

/* The document: a mapping of sections, each a mapping of scalars (or empty). */
static void parse_document(load_ctx *ctx, yaml_parser_t *p, ds_config *cfg) {
    int section_line[N_SECTIONS] = {0}, n_sections = 0;
    yaml_event_t ev;
    next_event(ctx, p, &ev);
    if (is_null_scalar(&ev)) die_empty(ctx);
    if (ev.type != YAML_MAPPING_START_EVENT)
        ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: expected a mapping of sections (run, model, data, train, optim, "
                          "checkpoint), got %s", ctx->path, line_of(&ev), node_kind(&ev));
    for (;;) {
        yaml_event_delete(&ev);
        next_event(ctx, p, &ev);
        if (ev.type == YAML_MAPPING_END_EVENT) break;
        if (ev.type != YAML_SCALAR_EVENT)
            ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: expected a section name, got %s", ctx->path, line_of(&ev),
                              node_kind(&ev));
        const char *name = scalar_text(ctx, &ev, "a section name");
        int line = (int)line_of(&ev);
        int s = find_section(name);
        if (s < 0) {
            char hint[96];
            suggest_section(name, hint, sizeof hint);
            die_line(ctx, line, name, "unknown section%s", hint);
        }
        if (section_line[s]) die_line(ctx, line, name, "duplicate section (first at line %d)", section_line[s]);
        section_line[s] = line;
        n_sections++;
        parse_section(ctx, p, cfg, sections[s]);
    }
    if (n_sections == 0) die_empty(ctx);  /* "{}" */
    yaml_event_delete(&ev);
    next_event(ctx, p, &ev); /* DOCUMENT-END: the parser guarantees it here */
    yaml_event_delete(&ev);
}

static void parse_file(load_ctx *ctx, ds_config *cfg) {
    char why[256];
    FILE *fp = ds_fopen_input(ctx->path, why, sizeof why);
    if (!fp) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: %s", ctx->path, why);
    size_t cap = 1 << 16, n = 0, got;
    char *text = malloc(cap);
    while (text && (got = fread(text + n, 1, cap - n, fp)) > 0)
        if ((n += got) == cap) text = realloc(text, cap *= 2);
    if (!text) ds_die(DS_EXIT_FAIL, "%s: out of memory", ctx->path);
    if (ferror(fp)) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: cannot read: %s", ctx->path, strerror(errno));
    fclose(fp);
    ctx->text = text;
    ctx->text_len = n;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) ds_die(DS_EXIT_FAIL, "out of memory");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, n);
    yaml_event_t ev;
    next_event(ctx, &p, &ev); /* STREAM-START */
    yaml_event_delete(&ev);
    next_event(ctx, &p, &ev);
    if (ev.type != YAML_DOCUMENT_START_EVENT) die_empty(ctx); /* nothing but comments: no document at all */
    yaml_event_delete(&ev);
    parse_document(ctx, &p, cfg);
    next_event(ctx, &p, &ev);
    if (ev.type != YAML_STREAM_END_EVENT)
        ds_die_replicated(DS_EXIT_BAD_INPUT, "%s:%zu: only one YAML document is allowed", ctx->path, line_of(&ev));
    yaml_event_delete(&ev);
    yaml_parser_delete(&p);
    free(text);
    ctx->text = NULL;
}

/* ---- --set section.key=value ---- */

static void apply_override(load_ctx *ctx, ds_config *cfg, const char *arg) {
    const char *eq = strchr(arg, '=');
    const char *dot = eq ? memchr(arg, '.', (size_t)(eq - arg)) : NULL;
    if (!eq || !dot || dot == arg || dot + 1 == eq || eq - arg >= 128)
        ds_die_replicated(DS_EXIT_BAD_INPUT, "--set: expected section.key=value, got '%s'", arg);
    char section[128], name[128], hint[96];
    snprintf(section, sizeof section, "%.*s", (int)(dot - arg), arg);
    snprintf(name, sizeof name, "%.*s", (int)(eq - dot - 1), dot + 1);
    if (find_section(section) < 0) {
        suggest_section(section, hint, sizeof hint);
        ds_die_replicated(DS_EXIT_BAD_INPUT, "--set %s: unknown section '%s'%s", arg, section, hint);
    }
    int i = find_key(section, name);
    if (i < 0) {
        suggest_key(section, name, hint, sizeof hint);
        ds_die_replicated(DS_EXIT_BAD_INPUT, "--set %s: unknown key%s", arg, hint);
    }
    char why[256];
    if (set_value(cfg, &config_keys[i], eq + 1, why, sizeof why) != 0)
        ds_die_replicated(DS_EXIT_BAD_INPUT, "--set %s: %s", arg, why);
    ctx->origin[i].set_arg = arg;
}

/* ---- cross-field rules and derived defaults ---- */

static int is_set(const load_ctx *ctx, int i) { return ctx->origin[i].line || ctx->origin[i].set_arg; }

/* The hybrid's variants that need other keys (src/hybrid/README.md §1.7-1.9): the error names the key the
 * user set, or the variant's own key when the other one is at its default. */
static void check_hybrid(const load_ctx *ctx, const ds_config *cfg) {
    const ds_hybrid_config *hc = &cfg->hybrid;
    int none = strcmp(hc->matrices, "none") == 0, generator = key_index("hybrid", "generator");
    int lambda_pd = key_index("hybrid", "lambda_pd"), warmup = key_index("hybrid", "lm_warmup_steps");
    int shuffle = key_index("hybrid", "shuffle_condition"), scope = key_index("hybrid", "static_scope");
    if (strcmp(hc->generator, "direct") == 0) {
        if (none) die_key(ctx, generator, "direct generates matrices: it needs hybrid.matrices other than none");
        if (hc->lambda_pd != 0)
            die_key(ctx, is_set(ctx, lambda_pd) ? lambda_pd : generator, "hybrid.generator direct has no diffusion "
                    "loss: set hybrid.lambda_pd to 0 (it is %g)", hc->lambda_pd);
        if (hc->lm_warmup_steps > 0)
            die_key(ctx, warmup, "hybrid.generator direct has no diffusion loss to warm up with: set it to 0 (it is %lld)",
                    (long long)hc->lm_warmup_steps);
    }
    if (hc->shuffle_condition && none)
        die_key(ctx, shuffle, "the static baseline (hybrid.matrices none) has no condition to shuffle");
    if (hc->shuffle_condition && (int64_t)cfg->train.eval_batches * cfg->train.batch_size < 2)
        die_key(ctx, shuffle, "needs at least 2 held-out windows (train.eval_batches x train.batch_size) to take each "
                "window's condition from another");
    if (strcmp(hc->static_scope, "targeted") == 0 && !hc->train_static)
        die_key(ctx, scope, "targeted restricts the trainable static weights: it needs hybrid.train_static 1");
}

static void check_and_resolve(load_ctx *ctx, ds_config *cfg) {
    int n_embd = key_index("model", "n_embd");
    int vocab = key_index("model", "vocab_size"), lr_final = key_index("optim", "lr_final");
    int out_dir = key_index("run", "out_dir"), ckpt_dir = key_index("checkpoint", "dir");

    if (cfg->model.n_embd % cfg->model.head_size != 0)
        die_key(ctx, n_embd, "must be a multiple of model.head_size (%d), got %d", cfg->model.head_size, cfg->model.n_embd);

    int world = strcmp(cfg->data.tokenizer, "world") == 0;
    if (world && !is_set(ctx, vocab)) cfg->model.vocab_size = 65536;
    int min_vocab = world ? 65536 : 256;
    if (cfg->model.vocab_size < min_vocab)
        die_key(ctx, vocab, "must be >= %d for data.tokenizer '%s', got %d", min_vocab, cfg->data.tokenizer,
                cfg->model.vocab_size);

    int magic = key_index("data", "magic_prime");
    uint64_t prime = (uint64_t)cfg->data.magic_prime;
    if (prime && strcmp(cfg->data.sampler, "rwkv_lm") != 0)
        die_key(ctx, magic, "is only used by data.sampler rwkv_lm (data.sampler is '%s')", cfg->data.sampler);
    if (prime && !ds_is_prime_u64(prime)) die_key(ctx, magic, "must be a prime, got %" PRIu64 " (not prime)", prime);
    if (prime && prime % 3 != 2)
        die_key(ctx, magic, "must be 2 mod 3 (so that cubing permutes the windows), got %" PRIu64 " (%" PRIu64
                " mod 3 = %d)", prime, prime, (int)(prime % 3));
    /* the bound 0.9 < P / (tokens // ctx_len) <= 1 needs the data: checked where it is opened */

    if (cfg->optim.lr_final > cfg->optim.lr)
        die_key(ctx, lr_final, "must be <= optim.lr (%g), got %g", cfg->optim.lr, cfg->optim.lr_final);

    int dit_hidden = key_index("dit", "hidden"), dit_patch = key_index("dit", "patch_size");
    if (cfg->dit.hidden % cfg->dit.heads != 0 || cfg->dit.hidden % 4 != 0)
        die_key(ctx, dit_hidden, "must be a multiple of 4 and of dit.heads (%d), got %d", cfg->dit.heads, cfg->dit.hidden);
    if (64 % cfg->dit.patch_size != 0)
        die_key(ctx, dit_patch, "must divide the head size 64, got %d", cfg->dit.patch_size);

    char path[2 * DS_PATH_MAX], why[256];
    int layers[1024];
    const char *layer_keys[][2] = {{"diffusion", "layers"}, {"hybrid", "layers"}};
    const char *layer_texts[] = {cfg->diffusion.layers, cfg->hybrid.layers};
    for (int i = 0; i < 2; i++)
        if (ds_config_parse_layers(layer_texts[i], cfg->model.n_layer, layers, why, sizeof why) < 0)
            die_key(ctx, key_index(layer_keys[i][0], layer_keys[i][1]), "%s", why);
    if (strcmp(cfg->run.task, "hybrid") == 0 && cfg->hybrid.prefix >= cfg->train.ctx_len)
        die_key(ctx, key_index("hybrid", "prefix"), "must be below train.ctx_len (%d), got %d", cfg->train.ctx_len,
                cfg->hybrid.prefix);
    if (strcmp(cfg->run.task, "hybrid") == 0) check_hybrid(ctx, cfg);

    if (!cfg->run.out_dir[0]) {
        snprintf(path, sizeof path, "runs/%s", cfg->run.name);
        if (set_value(cfg, &config_keys[out_dir], path, why, sizeof why) != 0) die_key(ctx, out_dir, "%s", why);
    }
    if (!cfg->checkpoint.dir[0]) {
        snprintf(path, sizeof path, "%s/checkpoints", cfg->run.out_dir);
        if (set_value(cfg, &config_keys[ckpt_dir], path, why, sizeof why) != 0)
            die_key(ctx, ckpt_dir, "<run.out_dir>/checkpoints is %s", why);
    }
}

/* ---- public API ---- */

int ds_config_parse_layers(const char *text, int n_layer, int *out, char *why, size_t why_len) {
    if (strcmp(text, "last") == 0) { out[0] = n_layer - 1; return 1; }
    if (strcmp(text, "all") == 0) {
        for (int l = 0; l < n_layer; l++) out[l] = l;
        return n_layer;
    }
    int n = 0;
    for (const char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v >= n_layer) {
            snprintf(why, why_len, "'%s' is not last, all or a list of layer indices below model.n_layer (%d)", text,
                     n_layer);
            return -1;
        }
        if (n > 0 && v <= out[n - 1]) {
            snprintf(why, why_len, "'%s': list the layers in ascending order, each once", text);
            return -1;
        }
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) { snprintf(why, why_len, "empty layer list"); return -1; }
    return n;
}

void ds_config_defaults(ds_config *cfg) {
    static const size_t type_size[] = {[KEY_INT] = sizeof(int), [KEY_INT64] = sizeof(int64_t),
                                       [KEY_DOUBLE] = sizeof(double), [KEY_BOOL] = sizeof(int)};
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++) { /* also guards the table against type/field mismatches */
        const config_key *k = &config_keys[i];
        char why[256];
        int bad_type = k->type <= KEY_BOOL && k->size != type_size[k->type];
        int bad_bounds = k->type == KEY_INT && (k->min < INT_MIN || k->max > INT_MAX);
        if (bad_type || bad_bounds || set_value(cfg, k, k->def, why, sizeof why) != 0)
            ds_die(DS_EXIT_FAIL, "config table: %s.%s: bad type, bounds or default", k->section, k->name);
    }
}

void ds_config_load(ds_config *cfg, const char *path, int n_overrides, char **overrides) {
    load_ctx ctx = {.path = path};
    ds_config_defaults(cfg);
    if (path) {
        if (strlen(path) >= sizeof cfg->source) ds_die_replicated(DS_EXIT_BAD_INPUT, "%s: path too long", path);
        strcpy(cfg->source, path);
        parse_file(&ctx, cfg);
    }
    for (int i = 0; i < n_overrides; i++) apply_override(&ctx, cfg, overrides[i]);
    check_and_resolve(&ctx, cfg);
    for (int i = 0; i < N_KEYS; i++) {
        cfg->key_line[i] = ctx.origin[i].set_arg ? 0 : ctx.origin[i].line;
        cfg->key_from_set[i] = ctx.origin[i].set_arg != NULL;
    }
}

int ds_config_origin(const ds_config *cfg, const char *section, const char *name, char *where, size_t len) {
    int i = key_index(section, name);
    if (cfg->key_from_set[i]) snprintf(where, len, "--set %s.%s", section, name);
    else if (cfg->key_line[i]) snprintf(where, len, "%s:%d: %s.%s", cfg->source, cfg->key_line[i], section, name);
    else return 0;
    return 1;
}

void ds_config_check_run_dirs(const ds_config *cfg) {
    const char *keys[2][2] = {{"run", "out_dir"}, {"checkpoint", "dir"}}, *dirs[2] = {cfg->run.out_dir, cfg->checkpoint.dir};
    for (int i = 0; i < 2; i++) {
        char why[4200], where[DS_PATH_MAX + 64];
        if (ds_dir_creatable(dirs[i], why, sizeof why) == 0) continue;
        if (!ds_config_origin(cfg, keys[i][0], keys[i][1], where, sizeof where))
            snprintf(where, sizeof where, "%s.%s", keys[i][0], keys[i][1]);
        ds_die(DS_EXIT_BAD_INPUT, "%s: %s", where, why);
    }
}

/* Whether a YAML reader would not give code point cp back from a double-quoted scalar: controls, the
 * line breaks it folds (U+0085, U+2028, U+2029), and what it refuses unescaped (C1 controls, U+FEFF,
 * U+FFFE, U+FFFF). */
static int yaml_needs_escape(uint32_t cp) {
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || cp == 0xfeff ||
           cp == 0xfffe || cp == 0xffff;
}

/* YAML double-quoted string: always safe, whatever the path contains, and read back to the same bytes
 * when they are UTF-8 (a byte that is not, from --set, is written as \xNN, which reads back as U+00NN). */
static void write_quoted(FILE *fp, const char *s) {
    fputc('"', fp);
    for (const unsigned char *c = (const unsigned char *)s; *c;) {
        unsigned n = 1;  /* bytes of the UTF-8 sequence at c */
        int utf8 = *c < 0x80;
        if (*c >= 0xc2 && *c <= 0xf4) n = *c < 0xe0 ? 2 : *c < 0xf0 ? 3 : 4, utf8 = 1;
        uint32_t cp = n == 1 ? *c : *c & (0x7fu >> n);
        for (unsigned i = 1; i < n; i++) {
            if ((c[i] & 0xc0) != 0x80) { n = 1, utf8 = 0; break; }
            cp = cp << 6 | (c[i] & 0x3f);
        }
        if (*c == '"' || *c == '\\') fprintf(fp, "\\%c", *c);
        else if (!utf8) fprintf(fp, "\\x%02x", *c);  /* not UTF-8: the byte */
        else if (yaml_needs_escape(cp)) fprintf(fp, cp < 0x100 ? "\\x%02x" : "\\u%04x", (unsigned)cp);
        else fwrite(c, 1, n, fp);
        c += n;
    }
    fputc('"', fp);
}

/* The shortest %g text that reads back as exactly x, always with a '.' in the mantissa ("1.0",
 * "6.0e-05") so that YAML 1.1 readers such as PyYAML also see a float, not an int or a string. */
static void format_double(double x, char *buf, size_t n) {
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, n, "%.*g", digits, x);
        if (strtod(buf, NULL) == x) break;
    }
    size_t mantissa = strcspn(buf, "e");
    if (memchr(buf, '.', mantissa)) return;
    char exponent[16];
    snprintf(exponent, sizeof exponent, "%s", buf + mantissa);
    snprintf(buf + mantissa, n - mantissa, ".0%s", exponent);
}

int ds_config_write(const ds_config *cfg, const char *path) {
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0) return -1;
    FILE *fp = af.fp;
    fputs("# dreamstate configuration, every key resolved", fp);
    if (cfg->source[0]) { fputs("; read from ", fp); write_quoted(fp, cfg->source); }
    fputc('\n', fp);
    const char *section = "";
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        if (strcmp(section, k->section) != 0) fprintf(fp, "%s:\n", section = k->section);
        fprintf(fp, "  %s: ", k->name);
        const void *v = cfield(cfg, k);
        char num[32];
        switch (k->type) {
        case KEY_INT: fprintf(fp, "%d", *(const int *)v); break;
        case KEY_INT64: fprintf(fp, "%" PRId64, *(const int64_t *)v); break;
        case KEY_DOUBLE: format_double(*(const double *)v, num, sizeof num); fputs(num, fp); break;
        case KEY_BOOL: fputs(*(const int *)v ? "true" : "false", fp); break;
        case KEY_ENUM: fputs((const char *)v, fp); break;
        case KEY_STRING: write_quoted(fp, (const char *)v); break;
        }
        fputc('\n', fp);
    }
    if (ferror(fp)) {
        ds_atomic_abort(&af);
        errno = EIO;
        return -1;
    }
    return ds_atomic_commit(&af);
}

void ds_config_print_help(FILE *fp) {
    fputs("Configuration keys (YAML: one mapping per section; command line: --set section.key=value):\n", fp);
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        char name[64], def[64], kind[96];
        snprintf(name, sizeof name, "%s.%s", k->section, k->name);
        snprintf(def, sizeof def, k->type == KEY_STRING ? "\"%s\"" : "%s", k->def);
        switch (k->type) {
        case KEY_STRING: snprintf(kind, sizeof kind, "string"); break;
        case KEY_BOOL: snprintf(kind, sizeof kind, "true or false"); break;
        case KEY_ENUM: snprintf(kind, sizeof kind, "one of %s", k->choices); break;
        default: {
            double type_max = k->type == KEY_INT ? INT_MAX : k->type == KEY_INT64 ? (double)INT64_MAX : HUGE_VAL;
            int len = snprintf(kind, sizeof kind, "%s", k->type == KEY_DOUBLE ? "number" : "integer");
            if (k->min == k->max) {
                snprintf(kind + len, sizeof kind - len, " = %.17g", k->min);
                break;
            }
            len += snprintf(kind + len, sizeof kind - len, " %s %.17g", (k->flags & MIN_EXCLUSIVE) ? ">" : ">=", k->min);
            if (k->max < type_max)
                snprintf(kind + len, sizeof kind - len, ", %s %.17g", (k->flags & MAX_EXCLUSIVE) ? "<" : "<=", k->max);
        }
        }
        fprintf(fp, "  %-24s default %-10s %s; %s\n", name, def, kind, k->help);
    }
}
