/* `dreamstate analyze-states INDEX [options]`: label structure of a state dataset, under mpirun or alone. */
#include "args.h"
#include "commands.h"

#include "dreamstate/analysis.h"
#include "dreamstate/common.h"
#include "dreamstate/dist.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const cli_spec spec = {
    .cmd = "analyze-states",
    .usage =
        "usage: dreamstate analyze-states INDEX [--test INDEX2] [--out DIR] [--layers all|last|0,2]\n"
        "                                 [--components K] [--tsne auto|exact|bh] [--tsne-metric euclidean|cosine]\n"
        "                                 [--tsne-seeds 0,1,2] [--perplexity P] [--seed S] [--k 1,5,10]\n"
        "                                 [--extra INDEX3 [--extra-name NAME]] [--control NAME=TRAIN[,TEST]]...\n"
        "                                 [--probe-l2 L] [--threads N] [--no-plots]\n"
        "Label structure of a state dataset (A1 of src/eval/README.md). Per layer, and for all layers concatenated:\n"
        "WKV state normalised per head (train statistics) -> PCA to K components (distributed over the MPI\n"
        "ranks) -> cosine kNN accuracy, silhouette and linear-probe accuracy, with real and with shuffled\n"
        "labels; the same on the condition vectors (controls: bag-of-tokens, first-token, and last-hidden where\n"
        "extract-states --ln-out stored it) and on the states of --control datasets; t-SNE maps per layer.\n"
        "  --test INDEX2     held-out states (same shape and label list): kNN train -> test, silhouette of the\n"
        "                    test rows, probe trained on train and scored on test, test rows projected with\n"
        "                    the train PCA. Without it: leave-one-out kNN, silhouette of all rows, probe by\n"
        "                    5-fold cross-validation.\n"
        "  --layers LIST     'all' (default: every layer and their concatenation), 'last', or indices '0,2'\n"
        "  --components K    PCA components (default min(50, records - 1, features))\n"
        "  --tsne METHOD     auto (exact up to 1000 points, default), exact, bh (Barnes-Hut)\n"
        "  --perplexity P    t-SNE perplexity (default 30; capped at (points - 1) / 3)\n"
        "  --seed S          label shuffle, and t-SNE initialisation without --tsne-seeds (default 0)\n"
        "  --tsne-metric M   t-SNE input distances: euclidean (default) or cosine (sklearn's metric='cosine':\n"
        "                    squared cosine distances of the PCA coordinates)\n"
        "  --tsne-seeds LIST one t-SNE map per seed, at most 8 (default: --seed); each map's trustworthiness\n"
        "                    (sklearn.manifold.trustworthiness, k = 5, the t-SNE metric in the input space)\n"
        "                    goes to the table and the JSON; the first seed's map is tsne-layer<L>.png, the\n"
        "                    others tsne-layer<L>-seed<S>.png\n"
        "  --control NAME=TRAIN[,TEST]  another state dataset of the same records (same contexts file, contexts\n"
        "                    and labels, in any order; TEST with --test: of the test records), e.g. the states\n"
        "                    of a randomly initialised network (extract-states --random-init), scored per layer\n"
        "                    set like the train states (its own normalisation and PCA) as control rows;\n"
        "                    NAME: 1-31 characters of [A-Za-z0-9._+-]; repeatable, at most 8\n"
        "  --k LIST          kNN neighbour counts, at most 8 (default 1,5,10)\n"
        "  --extra INDEX3    more states (e.g. generated) projected with the same PCA, drawn in the same t-SNE\n"
        "                    map with another marker; their kNN-predicted labels are scored against their own\n"
        "                    (labels matched by name; records without a label are only drawn)\n"
        "  --extra-name NAME legend name of the extra states (default 'extra')\n"
        "  --probe-l2 L      L2 strength of the probe, as sklearn C = 1 / L (default 1)\n"
        "  --threads N       threads per rank (default: cores / ranks on the node)\n"
        "  --out DIR         output directory (default: INDEX's directory /analysis)\n"
        "Writes DIR/analysis.json and DIR/tsne-layer<L>.png (tsne-layerall.png for the concatenation);\n"
        "prints a table. Run under mpirun for the distributed PCA.\n",
    .mpi = 1,
    .positional = "INDEX",
    .options = {{"--test"}, {"--extra"}, {"--extra-name"}, {"--out"}, {"--layers"}, {"--components"}, {"--perplexity"},
                {"--seed"}, {"--probe-l2"}, {"--threads"}, {"--k"}, {"--tsne"}, {"--no-plots", CLI_SWITCH},
                {"--tsne-metric"}, {"--tsne-seeds"}, {"--control"}},
};

static ds_tsne_method tsne_method(const char *name) {
    if (strcmp(name, "auto") == 0) return DS_TSNE_AUTO;
    if (strcmp(name, "exact") == 0) return DS_TSNE_EXACT;
    if (strcmp(name, "bh") == 0) return DS_TSNE_BARNES_HUT;
    ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --tsne '%s' is not auto, exact or bh", name);
}

/* NAME=TRAIN[,TEST] of --control; the strings live as long as the process. */
static ds_state_control parse_control(const char *text) {
    const char *eq = strchr(text, '=');
    size_t len = eq ? (size_t)(eq - text) : 0;
    int name_ok = len >= 1 && len <= 31;
    for (size_t i = 0; name_ok && i < len; i++)
        name_ok = (text[i] >= 'a' && text[i] <= 'z') || (text[i] >= 'A' && text[i] <= 'Z') ||
                  (text[i] >= '0' && text[i] <= '9') || strchr("._+-", text[i]);
    if (!name_ok || !eq[1] || eq[1] == ',')
        ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --control '%s' is not NAME=TRAIN_INDEX[,TEST_INDEX] with a NAME of "
               "1-31 characters of [A-Za-z0-9._+-]", text);
    ds_state_control c = {.name = strndup(text, len)};
    const char *comma = strchr(eq + 1, ',');
    c.train = comma ? strndup(eq + 1, (size_t)(comma - eq - 1)) : strdup(eq + 1);
    if (comma) {
        if (!comma[1]) ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --control '%s': empty TEST_INDEX after the comma", text);
        c.test = strdup(comma + 1);
    }
    return c;
}

int cmd_analyze_states(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_analyze_options o = ds_analyze_defaults();
    o.test = cli_value(&a, "--test");
    o.extra = cli_value(&a, "--extra");
    o.extra_name = cli_string(&a, "--extra-name", o.extra_name);
    o.out_dir = cli_value(&a, "--out");
    o.layers = cli_string(&a, "--layers", o.layers);
    o.components = (int)cli_int(&a, "--components", 1, 1000000, o.components);
    o.perplexity = cli_number(&a, "--perplexity", 1e-3, 1e6, o.perplexity);
    o.seed = cli_seed(&a, "--seed", o.seed);
    o.probe_l2 = cli_number(&a, "--probe-l2", 1e-12, 1e12, o.probe_l2);
    o.threads = (int)cli_int(&a, "--threads", 1, 4096, o.threads);
    if (cli_value(&a, "--k"))
        o.n_ks = cli_parse_int_list(spec.cmd, "--k", cli_value(&a, "--k"), 1, 100000, o.ks, 0, DS_MAX_KNN_K);
    if (cli_value(&a, "--tsne")) o.tsne_method = tsne_method(cli_value(&a, "--tsne"));
    const char *metric = cli_string(&a, "--tsne-metric", "euclidean");
    if (strcmp(metric, "euclidean") && strcmp(metric, "cosine"))
        ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --tsne-metric '%s' is not euclidean or cosine", metric);
    o.tsne_metric = strcmp(metric, "cosine") == 0 ? DS_METRIC_COSINE : DS_METRIC_EUCLIDEAN;
    if (cli_value(&a, "--tsne-seeds")) {
        int seeds[DS_MAX_TSNE_SEEDS];
        o.n_tsne_seeds = cli_parse_int_list(spec.cmd, "--tsne-seeds", cli_value(&a, "--tsne-seeds"), 0, INT_MAX, seeds, 0,
                                            DS_MAX_TSNE_SEEDS);
        for (int s = 0; s < o.n_tsne_seeds; s++) o.tsne_seeds[s] = (uint64_t)seeds[s];
    }
    o.n_controls = cli_count(&a, "--control");
    if (o.n_controls > DS_MAX_STATE_CONTROLS)
        ds_die(DS_EXIT_BAD_INPUT, "analyze-states: %d --control datasets, at most %d", o.n_controls, DS_MAX_STATE_CONTROLS);
    for (int s = 0; s < o.n_controls; s++) o.controls[s] = parse_control(cli_nth(&a, "--control", s));
    o.plots = cli_count(&a, "--no-plots") == 0;
    o.train = cli_required_positional(&a, "INDEX");
    if (!o.extra && cli_value(&a, "--extra-name"))
        ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --extra-name without --extra");
    int rc = ds_analyze_states(&o);
    cli_args_free(&a);
    ds_dist_finalize();
    return rc;
}
