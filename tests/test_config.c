/* Config loading: defaults, parsed values, --set overrides, derived defaults, write -> load round
 * trip (also read back by PyYAML as an independent parser), the help table, and every error path.
 * ds_config_load dies on bad input, so error cases run in a forked child whose stderr and exit status
 * are captured and compared with the exact expected one-line message. */
#include "dreamstate/config.h"

#include "dreamstate/common.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];
static int n_files_written; /* files this test put in tmpdir; anything else was written by the code */

static void write_file(const char *name, const char *text, char *path, size_t n) {
    snprintf(path, n, "%s/%s", tmpdir, name);
    FILE *fp = fopen(path, "w");
    if (!fp) { perror(path); exit(1); }
    fputs(text, fp);
    fclose(fp);
    n_files_written++;
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

static void load_text(ds_config *cfg, const char *name, const char *yaml, int n_set, char **sets) {
    char path[256];
    write_file(name, yaml, path, sizeof path);
    ds_config_load(cfg, path, n_set, sets);
}

/* Runs ds_config_load(path, sets) in a child; expects exit code 2 and stderr starting with
 * "dreamstate: " + expected (with the file's path substituted for %s). An expected text ending in
 * '\n' must match the whole output; otherwise it is a prefix (for libyaml's own wording). */
static void expect_error(const char *name, const char *yaml, int n_set, char **sets, const char *expected_fmt) {
    char path[256] = "", expected[1024], err[4096] = "";
    if (yaml) write_file(name, yaml, path, sizeof path);
    else if (name) snprintf(path, sizeof path, "%s/%s", tmpdir, name); /* a file that does not exist */
    int written = snprintf(expected, sizeof expected, "dreamstate: ");
    snprintf(expected + written, sizeof expected - written, expected_fmt, path);

    int fd[2];
    if (pipe(fd) != 0) { perror("pipe"); exit(1); }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        alarm(10);  /* a load that blocks (on a FIFO) fails the check instead of hanging the test */
        ds_config cfg;
        ds_config_load(&cfg, name || yaml ? path : NULL, n_set, sets);
        _exit(0);
    }
    close(fd[1]);
    size_t len = 0;
    for (ssize_t r; (r = read(fd[0], err + len, sizeof err - 1 - len)) > 0;) len += (size_t)r;
    err[len] = 0;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    CHECK(code == 2, "%s: exit code %d, want 2 (stderr: %s)", name ? name : "--set", code, err);
    CHECK(strncmp(err, expected, strlen(expected)) == 0, "%s:\n  got  %s  want %s", name ? name : "--set", err, expected);
    char *newline = strchr(err, '\n');
    CHECK(newline && newline[1] == 0, "%s: message must be exactly one line: %s", name ? name : "--set", err);
}

static void test_defaults(void) {
    ds_config c;
    ds_config_defaults(&c);
    /* the values documented in config.h */
    CHECK(!strcmp(c.run.name, "run") && c.run.out_dir[0] == 0 && c.run.seed == 1234 && c.run.threads == 0,
          "run defaults");
    CHECK(!strcmp(c.run.task, "lm"), "run.task default %s", c.run.task);
    CHECK(c.model.n_layer == 2 && c.model.n_embd == 128 && c.model.head_size == 64 && c.model.vocab_size == 256,
          "model sizes %d %d %d %d", c.model.n_layer, c.model.n_embd, c.model.head_size, c.model.vocab_size);
    CHECK(c.model.dim_w == 0 && c.model.dim_a == 0 && c.model.dim_v == 0 && c.model.dim_g == 0, "LoRA ranks");
    CHECK(!strcmp(c.model.lora_formula, "released"), "lora_formula %s", c.model.lora_formula);
    CHECK(!strcmp(c.data.tokenizer, "byte") && !c.data.vocab_file[0] && !c.data.train[0] && !c.data.valid[0],
          "data defaults");
    CHECK(!strcmp(c.data.sampler, "random") && c.data.magic_prime == 0, "sampler defaults %s %lld", c.data.sampler,
          (long long)c.data.magic_prime);
    CHECK(c.train.ctx_len == 64 && c.train.batch_size == 8 && c.train.micro_batch == 0 && c.train.steps == 200,
          "train sizes");
    CHECK(c.train.eval_batches == 8 && c.train.log_every == 1 && c.train.eval_every == 50, "train cadence");
    CHECK(c.train.skip_nonfinite == 0, "skip_nonfinite default %d (stop at the first NaN)", c.train.skip_nonfinite);
    CHECK(c.train.comm_timeout == 600, "comm_timeout default %g (collective watchdog on)", c.train.comm_timeout);
    CHECK(c.optim.lr == 6e-4 && c.optim.lr_final == 6e-5 && c.optim.warmup_steps == 10, "lr schedule");
    CHECK(c.optim.beta1 == 0.9 && c.optim.beta2 == 0.99 && c.optim.eps == 1e-18, "Adam constants");
    CHECK(c.optim.weight_decay == 0.001 && c.optim.grad_clip == 1.0 && c.optim.l2wrap == 1e-4, "regularisers");
    CHECK(c.checkpoint.dir[0] == 0 && c.checkpoint.every == 50 && c.checkpoint.keep == 3, "checkpoint defaults");
    CHECK(!strcmp(c.checkpoint.resume, "auto"), "resume %s", c.checkpoint.resume);

    /* no file: defaults plus the derived paths */
    ds_config r;
    ds_config_load(&r, NULL, 0, NULL);
    CHECK(!strcmp(r.run.out_dir, "runs/run"), "resolved out_dir %s", r.run.out_dir);
    CHECK(!strcmp(r.checkpoint.dir, "runs/run/checkpoints"), "resolved checkpoint.dir %s", r.checkpoint.dir);
    strcpy(c.run.out_dir, r.run.out_dir);
    strcpy(c.checkpoint.dir, r.checkpoint.dir);
    CHECK(memcmp(&c, &r, sizeof c) == 0, "load(NULL) = defaults + derived paths");

    /* empty sections mean "defaults" (a file that names no section at all is refused: test_errors) */
    ds_config e;
    load_text(&e, "empty_sections.yaml", "run:\nmodel: ~\n", 0, NULL);
    CHECK(strstr(e.source, "empty_sections.yaml") != NULL, "source %s", e.source);
    memcpy(e.source, r.source, sizeof e.source);
    CHECK(memcmp(&e, &r, sizeof e) == 0, "empty sections give the defaults");
}

static void test_parse(void) {
    ds_config c;
    load_text(&c, "full.yaml",
              "# a full config\n"
              "run:\n"
              "  name: \"tiny: #1\"   # quoted, with ':' and '#'\n"
              "  seed: 9223372036854775807\n"
              "  threads: 2\n"
              "  task: hybrid\n"
              "model:\n"
              "  n_layer: 12\n"
              "  n_embd: 768\n"
              "  head_size: 64\n"
              "  vocab_size: 70_000\n"
              "  dim_w: 64\n"
              "  dim_g: 128\n"
              "  lora_formula: current\n"
              "\n"
              "data:\n"
              "  tokenizer: world\n"
              "  vocab_file: 'vocab dir/rwkv_vocab_v20230424.txt'\n"
              "  train: /data/train\n"
              "  valid: ~\n"
              "train: {ctx_len: 512, batch_size: 4, micro_batch: 2, steps: 1_000, skip_nonfinite: 5}\n"
              "optim:\n"
              "  lr: 6e-4\n"
              "  lr_final: 0.00006\n"
              "  warmup_steps: 0\n"
              "  beta1: 0.85\n"
              "  eps: 1e-18\n"
              "  grad_clip: 0\n"
              "  l2wrap: 1E-5\n"
              "checkpoint:\n"
              "  dir: ckpt\n"
              "  every: 0\n"
              "  keep: 1\n"
              "  resume: never\n",
              0, NULL);
    CHECK(!strcmp(c.run.name, "tiny: #1"), "name '%s'", c.run.name);
    CHECK(c.run.seed == INT64_MAX && c.run.threads == 2 && !strcmp(c.run.task, "hybrid"), "run values");
    CHECK(!strcmp(c.run.out_dir, "runs/tiny: #1"), "out_dir from name: %s", c.run.out_dir);
    CHECK(c.model.n_layer == 12 && c.model.n_embd == 768 && c.model.vocab_size == 70000, "model values");
    CHECK(c.model.dim_w == 64 && c.model.dim_a == 0 && c.model.dim_v == 0 && c.model.dim_g == 128, "ranks");
    CHECK(!strcmp(c.model.lora_formula, "current"), "lora_formula");
    CHECK(!strcmp(c.data.tokenizer, "world") && !strcmp(c.data.vocab_file, "vocab dir/rwkv_vocab_v20230424.txt"),
          "tokenizer %s %s", c.data.tokenizer, c.data.vocab_file);
    CHECK(!strcmp(c.data.train, "/data/train") && c.data.valid[0] == 0, "data paths (~ is empty)");
    CHECK(c.train.ctx_len == 512 && c.train.batch_size == 4 && c.train.micro_batch == 2 && c.train.steps == 1000 &&
              c.train.skip_nonfinite == 5,
          "flow-style train section");
    CHECK(c.optim.lr == 6e-4 && c.optim.lr_final == 6e-5 && c.optim.warmup_steps == 0 && c.optim.beta1 == 0.85,
          "optim values %.17g %.17g", c.optim.lr, c.optim.lr_final);
    CHECK(c.optim.beta2 == 0.99 && c.optim.eps == 1e-18 && c.optim.grad_clip == 0 && c.optim.l2wrap == 1e-5,
          "optim values 2");
    CHECK(!strcmp(c.checkpoint.dir, "ckpt") && c.checkpoint.every == 0 && c.checkpoint.keep == 1 &&
              !strcmp(c.checkpoint.resume, "never"),
          "checkpoint values");

    /* restart: a fresh start that moves an earlier run aside */
    load_text(&c, "restart.yaml", "checkpoint:\n  resume: restart\n", 0, NULL);
    CHECK(!strcmp(c.checkpoint.resume, "restart"), "resume %s", c.checkpoint.resume);
    /* the World tokenizer with vocab_size unset gets its 65536 symbols */
    load_text(&c, "world.yaml", "data:\n  tokenizer: world\n  vocab_file: v.txt\n", 0, NULL);
    CHECK(c.model.vocab_size == 65536, "world vocab_size %d", c.model.vocab_size);
    /* RWKV-LM's sampler with a magic prime (prime, 2 mod 3; its range needs the data) */
    load_text(&c, "rwkv_lm.yaml", "data:\n  sampler: rwkv_lm\n  magic_prime: 324329\n", 0, NULL);
    CHECK(!strcmp(c.data.sampler, "rwkv_lm") && c.data.magic_prime == 324329, "rwkv_lm sampler %s %lld", c.data.sampler,
          (long long)c.data.magic_prime);
    load_text(&c, "rwkv_lm_big.yaml", "data:\n  sampler: rwkv_lm\n  magic_prime: 9223372036854775643\n", 0, NULL);
    CHECK(c.data.magic_prime == 9223372036854775643LL, "largest 63-bit prime 2 mod 3 accepted");
    /* without data.vocab_file it uses the built-in vocabulary */
    load_text(&c, "world_builtin.yaml", "data:\n  tokenizer: world\n", 0, NULL);
    CHECK(c.model.vocab_size == 65536 && !c.data.vocab_file[0], "world without vocab_file: vocab_size %d",
          c.model.vocab_size);
}

static void test_overrides(void) {
    ds_config c;
    char *sets[] = {"model.n_layer=6", "model.n_embd=192", "run.name=a=b", "optim.lr=1e-3",
                    "model.n_layer=8", "data.train=", "checkpoint.every=7"};
    load_text(&c, "over.yaml",
              "model:\n  n_layer: 4\n  n_embd: 100   # not a multiple of 64: fixed by --set below\n"
              "data:\n  train: shards/\n",
              7, sets);
    CHECK(c.model.n_layer == 8, "the last --set wins: n_layer %d", c.model.n_layer);
    CHECK(c.model.n_embd == 192, "--set beats the file (and cross checks run after it): %d", c.model.n_embd);
    CHECK(!strcmp(c.run.name, "a=b"), "value keeps later '=': %s", c.run.name);
    CHECK(!strcmp(c.run.out_dir, "runs/a=b") && !strcmp(c.checkpoint.dir, "runs/a=b/checkpoints"),
          "derived paths follow the overridden name: %s %s", c.run.out_dir, c.checkpoint.dir);
    CHECK(c.optim.lr == 1e-3 && c.data.train[0] == 0 && c.checkpoint.every == 7, "other overrides");
    char where[512], file_line[300];
    CHECK(ds_config_origin(&c, "model", "n_layer", where, sizeof where) && !strcmp(where, "--set model.n_layer"),
          "origin of a --set key: '%s'", where);
    CHECK(ds_config_origin(&c, "model", "n_embd", where, sizeof where) && !strcmp(where, "--set model.n_embd"),
          "--set beats the file's line for the origin too: '%s'", where);
    CHECK(!ds_config_origin(&c, "model", "dim_w", where, sizeof where), "a defaulted key has no origin");
    ds_config f;
    load_text(&f, "origin.yaml", "run:\n  seed: 3\nmodel:\n  n_layer: 4\n", 0, NULL);
    snprintf(file_line, sizeof file_line, "%s/origin.yaml:4: model.n_layer", tmpdir);
    CHECK(ds_config_origin(&f, "model", "n_layer", where, sizeof where) && !strcmp(where, file_line),
          "origin of a file key: '%s'", where);

    /* explicit out_dir: checkpoint.dir derives from it; an explicit vocab_size stays with world */
    char *sets2[] = {"run.out_dir=/tmp/x", "data.tokenizer=world", "data.vocab_file=v.txt", "model.vocab_size=65600"};
    ds_config_load(&c, NULL, 4, sets2);
    CHECK(!strcmp(c.run.out_dir, "/tmp/x") && !strcmp(c.checkpoint.dir, "/tmp/x/checkpoints"), "explicit out_dir");
    CHECK(c.model.vocab_size == 65600, "explicit vocab_size kept: %d", c.model.vocab_size);
}

/* PyYAML (an independent parser) must read the dump with the same values and types. */
static void check_with_pyyaml(const char *path) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c \"import yaml,sys; c=yaml.safe_load(open(sys.argv[1])); "
             "print(repr((c['run']['name'], c['optim']['lr'], c['optim']['eps'], c['optim']['grad_clip'], "
             "c['model']['n_embd'], c['run']['seed'], c['train']['grad_checkpoint'], len(c), "
             "sum(len(s) for s in c.values()))))\" '%s' 2>&1",
             path);
    FILE *p = popen(cmd, "r");
    char out[512] = "";
    if (p) {
        if (!fgets(out, sizeof out, p)) out[0] = 0;
        pclose(p);
    }
    const char *want = "('q\"uo\\\\te\\\\\\\\ é\\tx', 0.30000000000000004, 1e-18, 2.0, 256, 42, True, 10, 84)\n";
    CHECK(!strcmp(out, want), "PyYAML reads\n  %s  want %s", out, want);
}

/* Where values came from (file, lines, --set) is not part of a config's value. */
static void copy_origins(ds_config *to, const ds_config *from) {
    memcpy(to->source, from->source, sizeof to->source);
    memcpy(to->key_line, from->key_line, sizeof to->key_line);
    memcpy(to->key_from_set, from->key_from_set, sizeof to->key_from_set);
}

static void test_round_trip(void) {
    ds_config a, b;
    char *sets[] = {"run.name=q\"uo\\te\\\\ é\tx", "optim.lr=0.30000000000000004", "optim.lr_final=0.1",
                    "optim.grad_clip=2", "model.n_embd=256", "run.seed=42", "data.valid=a # b: c",
                    "optim.beta2=0.99999999999999989", "train.grad_checkpoint=true"};
    ds_config_load(&a, NULL, 9, sets);
    CHECK(a.optim.lr == 0.1 + 0.2, "lr parsed exactly");
    CHECK(a.train.grad_checkpoint == 1, "a boolean key set to true");
    char out[256];
    snprintf(out, sizeof out, "%s/resolved.yaml", tmpdir);
    CHECK(ds_config_write(&a, out) == 0, "write");
    n_files_written++;
    ds_config_load(&b, out, 0, NULL);
    copy_origins(&b, &a);
    CHECK(memcmp(&a, &b, sizeof a) == 0, "load(write(cfg)) == cfg");
    CHECK(!strcmp(b.run.name, a.run.name) && b.optim.beta2 == a.optim.beta2, "round-tripped name '%s'", b.run.name);
    check_with_pyyaml(out);

    /* the defaults and a file-loaded config round-trip too (write overwrites atomically) */
    ds_config_load(&a, NULL, 0, NULL);
    CHECK(ds_config_write(&a, out) == 0, "write defaults");
    ds_config_load(&b, out, 0, NULL);
    copy_origins(&b, &a);
    CHECK(memcmp(&a, &b, sizeof a) == 0, "defaults round-trip");
    char in[256];
    snprintf(in, sizeof in, "%s/full.yaml", tmpdir);
    ds_config_load(&a, in, 0, NULL);
    CHECK(ds_config_write(&a, out) == 0, "write full");
    ds_config_load(&b, out, 0, NULL);
    copy_origins(&b, &a);
    CHECK(memcmp(&a, &b, sizeof a) == 0, "full.yaml round-trips");
    /* what a YAML reader folds as a line break (U+0085, U+2028, U+2029) or refuses unescaped (U+0080,
     * U+FEFF) is written escaped, so it reads back the same; other UTF-8 (the euro sign) is kept */
    char *breaks[] = {"data.valid=a\xc2\x85" "b\xe2\x80\xa8" "c\xe2\x80\xa9" "d\xc2\x80" "e\xef\xbb\xbf" "f \xe2\x82\xac"};
    ds_config_load(&a, NULL, 1, breaks);
    CHECK(ds_config_write(&a, out) == 0, "write line breaks");
    ds_config_load(&b, out, 0, NULL);
    copy_origins(&b, &a);
    CHECK(memcmp(&a, &b, sizeof a) == 0, "line-break code points round-trip: '%s'", b.data.valid);

    /* a write that cannot happen reports it and leaves nothing behind */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no-such-dir/resolved.yaml", tmpdir);
    CHECK(ds_config_write(&a, bad) != 0, "write into a missing directory fails");
    CHECK(count_dir_entries(tmpdir) == n_files_written, "no temporary files left: %d entries, %d written",
          count_dir_entries(tmpdir), n_files_written);
}

/* The help line of `key` ("  section.key ...") copied into line, or "" if absent. */
static void help_line(const char *help, const char *key, char *line, size_t n) {
    char needle[200];
    snprintf(needle, sizeof needle, "  %s ", key);
    const char *at = strstr(help, needle);
    snprintf(line, n, "%.*s", at ? (int)strcspn(at, "\n") : 0, at ? at : "");
}

/* Every key in the dump is documented in the help, with its default. */
static void test_help(void) {
    char *help = NULL;
    size_t help_len = 0;
    FILE *fp = open_memstream(&help, &help_len);
    ds_config_print_help(fp);
    fclose(fp);

    ds_config c;
    ds_config_load(&c, NULL, 0, NULL);
    char out[256];
    snprintf(out, sizeof out, "%s/resolved.yaml", tmpdir);
    CHECK(ds_config_write(&c, out) == 0, "write");
    FILE *in = fopen(out, "r");
    char text[512], section[64] = "", line[512];
    int keys = 0;
    while (in && fgets(text, sizeof text, in)) {
        char word[64], key[160];
        if (text[0] == '#') continue;
        if (text[0] != ' ' && sscanf(text, "%63[^:]:", section) == 1) continue;
        if (sscanf(text, " %63[^:]:", word) != 1) continue;
        snprintf(key, sizeof key, "%s.%s", section, word);
        help_line(help, key, line, sizeof line);
        CHECK(line[0] && strstr(line, " default "), "help lists %s with its default", key);
        keys++;
    }
    if (in) fclose(in);
    CHECK(keys == 84, "dump has %d keys, want 84 (every ds_config field)", keys);
    help_line(help, "model.n_embd", line, sizeof line);
    CHECK(strstr(line, " default 128 "), "n_embd help: %s", line);
    help_line(help, "model.head_size", line, sizeof line);
    CHECK(strstr(line, "integer = 64"), "head_size help: %s", line);
    help_line(help, "optim.beta1", line, sizeof line);
    CHECK(strstr(line, " default 0.9 ") && strstr(line, ">= 0, < 1"), "beta1 help: %s", line);
    help_line(help, "run.task", line, sizeof line);
    CHECK(strstr(line, "one of lm|state_diffusion|hybrid"), "task help: %s", line);
    free(help);
}

static void test_errors(void) {
    /* keys and sections */
    expect_error("typo.yaml", "model:\n  n_layer: 3\n  n_emdb: 128\n", 0, NULL,
                 "%s:3: model.n_emdb: unknown key (did you mean 'n_embd'?)\n");
    expect_error("wrong_section.yaml", "# comment\ntrain:\n  n_embd: 128\n", 0, NULL,
                 "%s:3: train.n_embd: unknown key (did you mean 'model.n_embd'?)\n");
    expect_error("unknown_key.yaml", "optim:\n  momentum: 0.9\n", 0, NULL, "%s:2: optim.momentum: unknown key\n");
    expect_error("unknown_section.yaml", "run:\n  seed: 1\nmodle:\n  n_layer: 2\n", 0, NULL,
                 "%s:3: modle: unknown section (did you mean 'model'?)\n");
    expect_error("dup_key.yaml", "model:\n  n_layer: 2\n  n_embd: 128\n  n_layer: 4\n", 0, NULL,
                 "%s:4: model.n_layer: duplicate key (first at line 2)\n");
    expect_error("dup_section.yaml", "run:\n  seed: 1\nmodel:\n  n_layer: 2\nrun:\n  threads: 1\n", 0, NULL,
                 "%s:5: run: duplicate section (first at line 1)\n");

    /* shapes */
    expect_error("not_scalar.yaml", "model:\n  n_layer: [1, 2]\n", 0, NULL,
                 "%s:2: model.n_layer: not a scalar (got a sequence)\n");
    expect_error("section_scalar.yaml", "model: 5\n", 0, NULL,
                 "%s:1: model: expected a mapping of key: value pairs, got a scalar\n");
    expect_error("top_list.yaml", "- model\n", 0, NULL,
                 "%s:1: expected a mapping of sections (run, model, data, train, optim, checkpoint), got a sequence\n");
    expect_error("two_docs.yaml", "model:\n  n_layer: 2\n---\nrun:\n  seed: 1\n", 0, NULL,
                 "%s:3: only one YAML document is allowed\n");
    expect_error("syntax.yaml", "model:\n  n_layer: 2\n n_embd: 128\n", 0, NULL,
                 "%s:3: invalid YAML: did not find expected key");
    expect_error("tab.yaml", "# line 1\nmodel:\n  n_layer: 2\n\tn_embd: 128\n", 0, NULL, "%s:4: invalid YAML: ");
    expect_error("unterminated.yaml", "run:\n  name: \"abc\n  seed: 1\n", 0, NULL, "%s:4: invalid YAML: ");
    expect_error("missing.yaml", NULL, 0, NULL, "%s: cannot open: No such file or directory\n");
    expect_error(".", NULL, 0, NULL, "%s: cannot open: Is a directory\n");
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/fifo.yaml", tmpdir);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo %s", fifo);
    n_files_written++;
    expect_error("fifo.yaml", NULL, 0, NULL, "%s: not a regular file (a FIFO)\n");

    /* a file that sets nothing: empty, only comments, an empty document or mapping */
    const char *empties[] = {"", "# nothing here\n\n", "---\n", "{}\n"};
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "empty%d.yaml", i);
        expect_error(name, empties[i], 0, NULL,
                     "%s: the config file is empty (no sections); give at least one, e.g. 'run: {name: NAME}'\n");
    }

    /* a NUL inside a value, a key or a section name (escapes), or as a raw byte */
    expect_error("nul_value.yaml", "run:\n  name: \"a\\0b\"\n", 0, NULL,
                 "%s:2: run.name: contains a NUL character (an escape such as \\0); remove it\n");
    expect_error("nul_value_u.yaml", "data:\n  train: \"x\\u0000.bin\"\n", 0, NULL,
                 "%s:2: data.train: contains a NUL character (an escape such as \\0); remove it\n");
    expect_error("nul_key.yaml", "run:\n  \"na\\x00me\": x\n", 0, NULL,
                 "%s:2: a key of run: contains a NUL character (an escape such as \\0); remove it\n");
    expect_error("nul_section.yaml", "\"r\\0un\":\n  name: x\n", 0, NULL,
                 "%s:1: a section name: contains a NUL character (an escape such as \\0); remove it\n");
    char raw[256];
    snprintf(raw, sizeof raw, "%s/nul_raw.yaml", tmpdir);
    FILE *fp = fopen(raw, "wb");
    fwrite("run:\n  seed: 1\n  name: a\0b\n", 1, 27, fp);
    fclose(fp);
    n_files_written++;
    expect_error("nul_raw.yaml", NULL, 0, NULL, "%s:3: a NUL byte (byte 24); a config is text\n");
    expect_error("alias.yaml", "model:\n  n_layer: &two 2\n  dim_w: *two\n", 0, NULL,
                 "%s:3: model.dim_w: YAML aliases are not supported\n");

    /* types and ranges */
    expect_error("type.yaml", "model:\n  n_layer: abc\n", 0, NULL,
                 "%s:2: model.n_layer: expected an integer, got 'abc'\n");
    expect_error("float_int.yaml", "train:\n  ctx_len: 1.5\n", 0, NULL,
                 "%s:2: train.ctx_len: expected an integer, got '1.5'\n");
    expect_error("huge_int.yaml", "train:\n  steps: 99999999999999999999\n", 0, NULL,
                 "%s:2: train.steps: expected an integer, got '99999999999999999999' (too large)\n");
    expect_error("int_range.yaml", "model:\n  n_embd: 3000000000\n", 0, NULL,
                 "%s:2: model.n_embd: must be <= 65536, got 3000000000\n");
    expect_error("number.yaml", "optim:\n  lr: fast\n", 0, NULL, "%s:2: optim.lr: expected a number, got 'fast'\n");
    expect_error("nan.yaml", "optim:\n  lr: .nan\n", 0, NULL, "%s:2: optim.lr: expected a number, got '.nan'\n");
    expect_error("range.yaml", "model:\n  n_layer: 0\n", 0, NULL, "%s:2: model.n_layer: must be >= 1, got 0\n");
    expect_error("skip_range.yaml", "train:\n  skip_nonfinite: -1\n", 0, NULL,
                 "%s:2: train.skip_nonfinite: must be >= 0, got -1\n");
    expect_error("timeout_range.yaml", "train:\n  comm_timeout: -5\n", 0, NULL,
                 "%s:2: train.comm_timeout: must be >= 0, got -5\n");
    expect_error("range_open.yaml", "optim:\n  eps: 0\n", 0, NULL, "%s:2: optim.eps: must be > 0, got 0\n");
    expect_error("range_high.yaml", "optim:\n  beta2: 1.0\n", 0, NULL, "%s:2: optim.beta2: must be < 1, got 1.0\n");
    expect_error("head.yaml", "model:\n  head_size: 32\n", 0, NULL, "%s:2: model.head_size: must be 64, got 32\n");
    expect_error("bool.yaml", "train:\n  grad_checkpoint: yes\n", 0, NULL,
                 "%s:2: train.grad_checkpoint: expected true or false, got 'yes'\n");
    expect_error("enum.yaml", "run:\n  task: pretrain\n", 0, NULL,
                 "%s:2: run.task: expected one of 'lm', 'state_diffusion', 'hybrid', 'state_tuning', got 'pretrain'\n");
    expect_error("empty_name.yaml", "run:\n  name: \"\"\n", 0, NULL, "%s:2: run.name: must not be empty\n");
    char long_name[300] = "run:\n  name: ";
    memset(long_name + strlen(long_name), 'x', 200);
    expect_error("long.yaml", long_name, 0, NULL, "%s:2: run.name: too long (200 characters, at most 127)\n");

    /* cross-field rules, located where the offending value came from */
    expect_error("multiple.yaml", "model:\n  n_layer: 2\n  n_embd: 100\n", 0, NULL,
                 "%s:3: model.n_embd: must be a multiple of model.head_size (64), got 100\n");
    char *set_embd[] = {"model.n_embd=96"};
    expect_error("multiple_set.yaml", "model:\n  n_embd: 128\n", 1, set_embd,
                 "--set model.n_embd=96: must be a multiple of model.head_size (64), got 96\n");
    expect_error("world_vocab.yaml", "model:\n  vocab_size: 256\ndata:\n  tokenizer: world\n  vocab_file: v.txt\n", 0,
                 NULL, "%s:2: model.vocab_size: must be >= 65536 for data.tokenizer 'world', got 256\n");
    expect_error("prime.yaml", "data:\n  sampler: rwkv_lm\n  magic_prime: 324331\n", 0, NULL,
                 "%s:3: data.magic_prime: must be a prime, got 324331 (not prime)\n");
    expect_error("prime_mod3.yaml", "data:\n  sampler: rwkv_lm\n  magic_prime: 324361\n", 0, NULL,
                 "%s:3: data.magic_prime: must be 2 mod 3 (so that cubing permutes the windows), got 324361 "
                 "(324361 mod 3 = 1)\n");
    expect_error("prime_sampler.yaml", "data:\n  magic_prime: 324329\n", 0, NULL,
                 "%s:2: data.magic_prime: is only used by data.sampler rwkv_lm (data.sampler is 'random')\n");
    char *set_prime[] = {"data.sampler=rwkv_lm", "data.magic_prime=4294967297"};
    expect_error(NULL, NULL, 2, set_prime,
                 "--set data.magic_prime=4294967297: must be a prime, got 4294967297 (not prime)\n");
    expect_error("sampler.yaml", "data:\n  sampler: shuffle\n", 0, NULL,
                 "%s:2: data.sampler: expected one of 'random', 'rwkv_lm', got 'shuffle'\n");
    expect_error("byte_vocab.yaml", "model:\n  vocab_size: 100\n", 0, NULL,
                 "%s:2: model.vocab_size: must be >= 256 for data.tokenizer 'byte', got 100\n");
    expect_error("lr_final.yaml", "optim:\n  lr: 1e-4\n  lr_final: 1e-3\n", 0, NULL,
                 "%s:3: optim.lr_final: must be <= optim.lr (0.0001), got 0.001\n");
    expect_error("lr_final_default.yaml", "optim:\n  lr: 1e-5\n", 0, NULL,
                 "%s: optim.lr_final: must be <= optim.lr (1e-05), got 6e-05\n");
    /* the hybrid's variants that need other keys (src/hybrid/README.md §1.7-1.9) */
    expect_error("direct_pd.yaml", "run:\n  task: hybrid\nhybrid:\n  generator: direct\n  lambda_pd: 0.1\n", 0, NULL,
                 "%s:5: hybrid.lambda_pd: hybrid.generator direct has no diffusion loss: set hybrid.lambda_pd to 0 (it "
                 "is 0.1)\n");
    expect_error("direct_pd_default.yaml", "run:\n  task: hybrid\nhybrid:\n  generator: direct\n", 0, NULL,
                 "%s:4: hybrid.generator: hybrid.generator direct has no diffusion loss: set hybrid.lambda_pd to 0 (it "
                 "is 0.1)\n");
    expect_error("direct_warmup.yaml", "run:\n  task: hybrid\nhybrid:\n  generator: direct\n  lambda_pd: 0\n"
                 "  lm_warmup_steps: 5\n", 0, NULL, "%s:6: hybrid.lm_warmup_steps: hybrid.generator direct has no "
                 "diffusion loss to warm up with: set it to 0 (it is 5)\n");
    expect_error("direct_none.yaml", "run:\n  task: hybrid\nhybrid:\n  matrices: none\n  generator: direct\n", 0,
                 NULL, "%s:5: hybrid.generator: direct generates matrices: it needs hybrid.matrices other than none\n");
    expect_error("shuffle_none.yaml", "run:\n  task: hybrid\nhybrid:\n  matrices: none\n  shuffle_condition: true\n",
                 0, NULL, "%s:5: hybrid.shuffle_condition: the static baseline (hybrid.matrices none) has no condition "
                 "to shuffle\n");
    char *set_one_window[] = {"run.task=hybrid", "hybrid.shuffle_condition=true", "train.batch_size=1",
                              "train.eval_batches=1"};
    expect_error(NULL, NULL, 4, set_one_window, "--set hybrid.shuffle_condition=true: needs at least 2 held-out windows "
                 "(train.eval_batches x train.batch_size) to take each window's condition from another\n");
    expect_error("scope_frozen.yaml", "run:\n  task: hybrid\nhybrid:\n  static_scope: targeted\n", 0, NULL,
                 "%s:4: hybrid.static_scope: targeted restricts the trainable static weights: it needs "
                 "hybrid.train_static 1\n");
    expect_error("condition.yaml", "hybrid:\n  condition: ln_out\n", 0, NULL,
                 "%s:2: hybrid.condition: expected one of 'first_token', 'mean_prefix', 'attn_prefix', 'ln_out_prefix', "
                 "got 'ln_out'\n");

    /* --set */
    char *no_eq[] = {"model.n_layer"}, *no_dot[] = {"n_layer=3"}, *typo[] = {"model.n_lyer=3"};
    char *bad_section[] = {"modl.n_layer=3"}, *bad_value[] = {"train.batch_size=0"}, *bad_int[] = {"model.n_layer="};
    expect_error(NULL, NULL, 1, no_eq, "--set: expected section.key=value, got 'model.n_layer'\n");
    expect_error(NULL, NULL, 1, no_dot, "--set: expected section.key=value, got 'n_layer=3'\n");
    expect_error(NULL, NULL, 1, typo, "--set model.n_lyer=3: unknown key (did you mean 'n_layer'?)\n");
    expect_error(NULL, NULL, 1, bad_section, "--set modl.n_layer=3: unknown section 'modl' (did you mean 'model'?)\n");
    expect_error(NULL, NULL, 1, bad_value, "--set train.batch_size=0: must be >= 1, got 0\n");
    expect_error(NULL, NULL, 1, bad_int, "--set model.n_layer=: expected an integer, got ''\n");

    /* none of the failed loads wrote anything: not next to the configs, not under the cwd (tmpdir) */
    CHECK(count_dir_entries(tmpdir) == n_files_written, "failed loads wrote files: %d entries, %d written",
          count_dir_entries(tmpdir), n_files_written);
    struct stat st;
    CHECK(stat("runs", &st) != 0, "a failed load created runs/");
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_config.XXXXXX");
    if (!mkdtemp(tmpdir) || chdir(tmpdir) != 0) { perror("mkdtemp"); return 1; }
    test_defaults();
    test_parse();
    test_overrides();
    test_round_trip();
    test_help();
    test_errors();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary("test_config");
}
