/* `dreamstate generate`: continue text from an initial RWKV-7 state (DREAMSTATE part A, "using
 * states"). The prompt goes through the model in one forward call from the initial state, then each
 * new token is sampled (ds_sample_token), streamed to stdout and fed back one at a time. The
 * state after the prompt and the printed tokens can be saved as a state file, so a state file of
 * prompt P followed by prompt Q continues exactly as prompt P+Q does. */
#include "args.h"
#include "commands.h"

#include "dreamstate/blas.h"
#include "dreamstate/common.h"
#include "dreamstate/config.h"
#include "dreamstate/data.h"
#include "dreamstate/dist.h"
#include "dreamstate/kernels.h"
#include "dreamstate/rwkv7.h"
#include "dreamstate/states.h"
#include "dreamstate/weights.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOKENS_LIMIT 1000000000LL
/* ds_rng stream of the sampler's uniforms: token i of a generation uses ds_rng_uniform(seed,
 * GENERATE_STREAM, i), so a seed reproduces the same text. */
#define GENERATE_STREAM 0x4745u  /* "GE" */

static const cli_spec spec = {
    .cmd = "generate",
    .usage =
        "usage: dreamstate generate CONFIG --checkpoint FILE [--state FILE] [--gain G] [--prompt TEXT]\n"
        "                           [--max-tokens N] [--temperature T] [--top-p P] [--seed S]\n"
        "                           [--state-out FILE] [--format dreamstate|rwkv-state] [--logits-out FILE.npy]\n"
        "                           [--set section.key=value]...\n"
        "Continues text with the model of CONFIG (model.*, data.tokenizer) and the weights in FILE (.ckpt or\n"
        ".safetensors): feeds the prompt from the initial state, then writes the bytes of each new token to\n"
        "stdout as it comes (the prompt is not echoed). Stops after N tokens or at the end-of-text token 0.\n"
        "  --state FILE       initial state: a state file (extract-states records, --state-out) or an RWKV-PEFT\n"
        "                     state file converted to safetensors (WKV only: its token-shift part is zero;\n"
        "                     convert a .pth first: /usr/bin/python3 src/tools/pth_to_safetensors.py X.pth\n"
        "                     X.safetensors); default zero\n"
        "  --gain G           multiplies the WKV part of --state (default 1)\n"
        "  --prompt TEXT      default \"\\n\"; must give at least one token\n"
        "  --max-tokens N     new tokens, default 200 (0: only feed the prompt)\n"
        "  --temperature T    softmax temperature >= 0, default 1 (0: greedy argmax)\n"
        "  --top-p P          nucleus sampling, P in (0, 1], default 0.9 (1: off)\n"
        "  --seed S           default 1234; the same seed gives the same text\n"
        "  --state-out FILE   write the state after the prompt and the new tokens as a state file\n"
        "                     (metadata prompt_tokens=, generated_tokens=); --max-tokens 0 gives a prompt's state\n"
        "  --format F         of --state-out: dreamstate (default: the whole state) or rwkv-state (RWKV-PEFT's\n"
        "                     safetensors, WKV only, token-shift part dropped; the default for a FILE ending\n"
        "                     in .safetensors)\n"
        "  --logits-out FILE  write the logits of the last prompt position, before any sampling: a NumPy .npy\n"
        "                     file of vocab_size float32 (little-endian, shape (V,); numpy.load reads it)\n"
        "Formats: include/dreamstate/states.h.\n",
    .config = 1,
    .options = {{"--checkpoint", CLI_REQUIRED}, {"--state"}, {"--gain"}, {"--prompt"}, {"--max-tokens"},
                {"--temperature"}, {"--top-p"}, {"--seed"}, {"--state-out"}, {"--format"}, {"--logits-out"}},
};

typedef struct generate_args {
    const char *checkpoint, *state, *state_out, *prompt, *logits_out;
    ds_state_file_format format;
    double gain;
    int64_t max_tokens;
    double temperature, top_p;
    uint64_t seed;
} generate_args;

static void read_args(const cli_args *a, generate_args *g) {
    g->checkpoint = cli_value(a, "--checkpoint");
    g->state = cli_value(a, "--state");
    g->state_out = cli_value(a, "--state-out");
    g->logits_out = cli_value(a, "--logits-out");
    if (cli_value(a, "--format") && !g->state_out)
        ds_die(DS_EXIT_BAD_INPUT, "generate: --format is the format of --state-out, and no --state-out is given");
    g->format = cli_state_format(a, g->state_out);
    g->prompt = cli_string(a, "--prompt", "\n");
    g->max_tokens = cli_int(a, "--max-tokens", 0, MAX_TOKENS_LIMIT, 200);
    g->seed = cli_seed(a, "--seed", 1234);
    g->gain = cli_number(a, "--gain", -FLT_MAX, FLT_MAX, 1);
    g->temperature = cli_number(a, "--temperature", -HUGE_VAL, HUGE_VAL, 1);
    if (!(g->temperature >= 0 && isfinite(g->temperature)))
        ds_die(DS_EXIT_BAD_INPUT, "generate: --temperature %s must be finite and >= 0", cli_value(a, "--temperature"));
    g->top_p = cli_number(a, "--top-p", -HUGE_VAL, HUGE_VAL, 0.9);
    if (!(g->top_p > 0 && g->top_p <= 1))
        ds_die(DS_EXIT_BAD_INPUT, "generate: --top-p %s must be in (0, 1]", cli_value(a, "--top-p"));
    if (cli_value(a, "--gain") && !g->state)
        ds_die(DS_EXIT_BAD_INPUT, "generate: --gain scales the WKV part of --state, and no --state is given");
}

static void write_token(const ds_tokenizer *tok, int32_t id) {
    size_t len;
    const uint8_t *bytes = ds_tokenizer_token(tok, id, &len);
    if (fwrite(bytes, 1, len, stdout) != len || fflush(stdout) != 0)
        ds_die(DS_EXIT_FAIL, "generate: cannot write to stdout: %s", strerror(errno));
}

/* A float32 vector as a .npy file (format 1.0: magic, version, header length, a Python dict literal
 * padded with spaces to a multiple of 64 bytes with the preamble and ended by '\n', then the data). */
static void write_npy(const char *path, const float *x, int n) {
    char header[256];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }", n);
    int pad = (64 - (10 + len + 1) % 64) % 64;
    memset(header + len, ' ', (size_t)pad);
    len += pad;
    header[len++] = '\n';
    uint8_t preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(len & 0xff), (uint8_t)(len >> 8)};
    ds_atomic_file af;
    if (ds_atomic_open(&af, path) != 0)
        ds_die(DS_EXIT_BAD_INPUT, "generate: %s: cannot create: %s", path, strerror(errno));
    int bad = fwrite(preamble, 1, sizeof preamble, af.fp) != sizeof preamble ||
              fwrite(header, 1, (size_t)len, af.fp) != (size_t)len ||
              fwrite(x, sizeof(float), (size_t)n, af.fp) != (size_t)n;
    if (bad || ds_atomic_commit(&af) != 0) {
        int e = errno;
        ds_atomic_abort(&af);
        ds_die(DS_EXIT_FAIL, "generate: %s: write failed: %s", path, strerror(e));
    }
}

int cmd_generate(int argc, char **argv) {
    cli_args args;
    if (!cli_parse(&spec, argc, argv, &args)) return 0;
    generate_args a;
    read_args(&args, &a);
    ds_config cfg;
    cli_load_config(&args, &cfg);
    int threads = ds_dist_threads(cfg.run.threads, "run.threads");
    ds_blas_init(threads);
    ds_kernels_init();
    omp_set_num_threads(threads);

    /* Every input is checked before the weights are read. */
    ds_tokenizer *tok = ds_tokenizer_open(cfg.data.tokenizer, cfg.data.vocab_file);
    ds_rwkv7_dims d = ds_model_dims_for_weights(&cfg, a.checkpoint);
    int V = d.vocab_size, V_text = (int)ds_tokenizer_vocab_size(tok);
    if (V_text > V)
        ds_die(DS_EXIT_BAD_INPUT, "generate: the %s tokenizer has %d ids, the model only %d (model.vocab_size)",
               cfg.data.tokenizer, V_text, V);
    size_t prompt_len = strlen(a.prompt);
    int32_t *prompt = ds_alloc(sizeof(int32_t) * (prompt_len + 1));
    size_t n_prompt = ds_tokenizer_encode(tok, a.prompt, prompt_len, prompt);
    if (n_prompt == 0) ds_die(DS_EXIT_BAD_INPUT, "generate: the prompt has no tokens");
    ds_rwkv7_state st;
    ds_rwkv7_state_create(&st, &d, 1);
    if (a.state) {
        ds_state_file_load(a.state, &d, &st, NULL);
        ds_state_shape shape = ds_state_shape_of(&d, 0);
        int64_t wkv = (int64_t)shape.n_layer * shape.n_head * shape.head_size * shape.head_size;  /* B = 1 */
        for (int64_t i = 0; i < wkv; i++) st.wkv[i] *= (float)a.gain;
    }
    ds_rwkv7 m;
    ds_rwkv7_create(&m, &d);
    ds_weights_load(&m, a.checkpoint);

    /* Logits of every prompt position come back from the one prompt call; the last row is sampled.
     * Tokens past the tokenizer's vocabulary (model.vocab_size may be padded) are never drawn. */
    float *logits = ds_alloc(sizeof(float) * n_prompt * V);
    void *scratch = ds_alloc(ds_sample_scratch_bytes(V_text));
    double t0 = ds_now_seconds();
    ds_rwkv7_forward(&m, 1, (int)n_prompt, prompt, NULL, 1.0f, 0.0f, &st, &st, logits);
    const float *next = logits + (n_prompt - 1) * (size_t)V;
    if (a.logits_out) write_npy(a.logits_out, next, V);
    int64_t generated = 0;
    for (int64_t i = 0; i < a.max_tokens; i++) {
        double u = ds_rng_uniform(a.seed, GENERATE_STREAM, (uint64_t)i);
        int32_t id = ds_sample_token(next, V_text, a.temperature, a.top_p, u, scratch);
        if (id < 0) ds_die(DS_EXIT_FAIL, "generate: the model gave non-finite logits at new token %" PRId64, i);
        if (id == 0) break;  /* end of text: not printed, not fed */
        write_token(tok, id);
        generated++;
        /* The last token is fed only when its state is wanted. */
        if (i + 1 < a.max_tokens || a.state_out) {
            ds_rwkv7_forward(&m, 1, 1, &id, NULL, 1.0f, 0.0f, &st, &st, logits);
            next = logits;
        }
    }
    double seconds = ds_now_seconds() - t0;
    if (a.state_out) {
        char meta[128];
        snprintf(meta, sizeof meta, "prompt_tokens=%zu\ngenerated_tokens=%" PRId64 "\n", n_prompt, generated);
        ds_state_file_save(a.state_out, a.format, &d, &st, 0, -1, meta);
    }
    ds_log("generate: %zu prompt tokens, %" PRId64 " new tokens, %.3f s (%.1f tokens/s)", n_prompt, generated, seconds,
           (n_prompt + generated) / (seconds > 0 ? seconds : 1e-9));
    ds_free(scratch);
    ds_free(logits);
    ds_free(prompt);
    ds_rwkv7_destroy(&m);
    ds_rwkv7_state_destroy(&st);
    ds_tokenizer_free(tok);
    cli_args_free(&args);
    return 0;
}
