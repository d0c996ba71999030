/* `dreamstate analyze-states INDEX [options]`: label structure of a state dataset, under mpirun or alone. */
#include "args.h"
#include "commands.h"

#include "dreamstate/analysis.h"
#include "dreamstate/common.h"
#include "dreamstate/dist.h"

#include <string.h>

static const cli_spec spec = {
    .cmd = "analyze-states",
    .usage =
        "usage: dreamstate analyze-states INDEX [--test INDEX2] [--out DIR] [--layers all|last|0,2]\n"
        "                                 [--components K] [--tsne auto|exact|bh] [--perplexity P] [--seed S]\n"
        "                                 [--k 1,5,10] [--extra INDEX3 [--extra-name NAME]] [--probe-l2 L]\n"
        "                                 [--threads N] [--no-plots]\n"
        "Label structure of a state dataset (A1 of src/eval/README.md). Per layer, and for all layers concatenated:\n"
        "WKV state normalised per head (train statistics) -> PCA to K components (distributed over the MPI\n"
        "ranks) -> cosine kNN accuracy, silhouette and linear-probe accuracy, with real and with shuffled\n"
        "labels; the same on the condition vectors (bag-of-tokens control); a t-SNE map per layer.\n"
        "  --test INDEX2     held-out states (same shape and label list): kNN train -> test, silhouette of the\n"
        "                    test rows, probe trained on train and scored on test, test rows projected with\n"
        "                    the train PCA. Without it: leave-one-out kNN, silhouette of all rows, probe by\n"
        "                    5-fold cross-validation.\n"
        "  --layers LIST     'all' (default: every layer and their concatenation), 'last', or indices '0,2'\n"
        "  --components K    PCA components (default min(50, records - 1, features))\n"
        "  --tsne METHOD     auto (exact up to 1000 points, default), exact, bh (Barnes-Hut)\n"
        "  --perplexity P    t-SNE perplexity (default 30; capped at (points - 1) / 3)\n"
        "  --seed S          t-SNE initialisation and label shuffle (default 0)\n"
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
                {"--seed"}, {"--probe-l2"}, {"--threads"}, {"--k"}, {"--tsne"}, {"--no-plots", CLI_SWITCH}},
};

static ds_tsne_method tsne_method(const char *name) {
    if (strcmp(name, "auto") == 0) return DS_TSNE_AUTO;
    if (strcmp(name, "exact") == 0) return DS_TSNE_EXACT;
    if (strcmp(name, "bh") == 0) return DS_TSNE_BARNES_HUT;
    ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --tsne '%s' is not auto, exact or bh", name);
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
    o.plots = cli_count(&a, "--no-plots") == 0;
    o.train = cli_required_positional(&a, "INDEX");
    if (!o.extra && cli_value(&a, "--extra-name"))
        ds_die(DS_EXIT_BAD_INPUT, "analyze-states: --extra-name without --extra");
    int rc = ds_analyze_states(&o);
    cli_args_free(&a);
    ds_dist_finalize();
    return rc;
}
