/* `dreamstate build-contexts --out FILE.jsonl [options]`: labelled contexts from the pinned Debian text files. */
#include "args.h"
#include "commands.h"

#include "dreamstate/common.h"
#include "dreamstate/states.h"

#include <math.h>

static const cli_spec spec = {
    .cmd = "build-contexts",
    .usage =
        "usage: dreamstate build-contexts --out FILE.jsonl [options]\n"
        "Labelled contexts (JSONL, format: include/dreamstate/states.h) cut from the text files that the\n"
        "manifest of source documents lists (configs/text-manifest.tsv, built in: Debian package, path and\n"
        "sha256 of each file; `make deps` installs the packages). Nothing else is read, and a missing or\n"
        "changed file is refused (exit 2, nothing written), so every machine builds the same contexts.\n"
        "Its sources (label: files):\n"
        "  fortunes   fortunes/<category>: computers, definitions, people, politics, science, songs-poems\n"
        "             (/usr/share/games/fortunes; each entry is a document)\n"
        "  c-headers  c-header: Open MPI, GCC and libyaml headers\n"
        "  python     python: numpy, scikit-learn, matplotlib and PyTorch modules\n"
        "  shell      shell: bash-completion scripts, sh/bash scripts of automake, autoconf, gzip, ...\n"
        "  licenses   license: /usr/share/common-licenses/*, LICENSE files\n"
        "  man        man: the Linux man-pages (manpages, manpages-dev; roff source)\n"
        "  javascript javascript: jQuery, jQuery UI, underscore, Sphinx (not minified)\n"
        "  perl       perl: debconf, automake and autoconf modules\n"
        "  changelogs changelog: Debian changelogs of the packages above and of `make deps`\n"
        "Each document gives up to --chunks-per-doc chunks spread over it; each chunk is --min-bytes to\n"
        "--max-bytes long and ends at a line end where possible. Documents are used in a seeded order, and\n"
        "with --held-out each document goes wholly to one file (seeded hash of its path).\n"
        "  --out FILE             train contexts (required)\n"
        "  --held-out FILE        held-out contexts (default: none, everything goes to --out)\n"
        "  --held-out-fraction F  share of documents (and of each label's contexts) held out, 0 < F < 1 (0.2)\n"
        "  --max-per-label N      contexts per label over both files (default 100)\n"
        "  --chunks-per-doc K     at most K chunks of one document (default 4; a label with D < N/K\n"
        "                         documents takes up to ceil(N/D) of each)\n"
        "  --min-bytes N          (default 64)\n"
        "  --max-bytes N          (default 512)\n"
        "  --sources LIST         comma-separated (default: all of them; 'none' with --extra-contexts)\n"
        "  --extra-contexts FILE  also every record of a contexts file (JSONL, e.g. configs/personas.jsonl),\n"
        "                         after the sources' ones: per label, its distinct documents (\"doc\"; a record\n"
        "                         without one is its own) in a seeded order, the first round(D x fraction) of\n"
        "                         them held out; no --max-per-label quota. A label whose only document is\n"
        "                         held out is refused.\n"
        "  --manifest FILE        another manifest of the same format (default: the built-in one)\n"
        "  --seed N               (default 1234)\n",
    .options = {{"--out"}, {"--held-out"}, {"--held-out-fraction"}, {"--max-per-label"}, {"--chunks-per-doc"},
                {"--min-bytes"}, {"--max-bytes"}, {"--sources"}, {"--manifest"}, {"--seed"},
                {"--extra-contexts"}},
};

int cmd_build_contexts(int argc, char **argv) {
    cli_args a;
    if (!cli_parse(&spec, argc, argv, &a)) return 0;
    ds_build_contexts_options o = ds_build_contexts_defaults();
    o.out = cli_value(&a, "--out");
    o.held_out = cli_value(&a, "--held-out");
    const char *fraction = cli_value(&a, "--held-out-fraction");
    o.held_out_fraction = cli_number(&a, "--held-out-fraction", -HUGE_VAL, HUGE_VAL, o.held_out_fraction);
    if (!(o.held_out_fraction > 0 && o.held_out_fraction < 1))
        ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --held-out-fraction '%s' must be a number in (0, 1)", fraction);
    o.max_per_label = (int)cli_int(&a, "--max-per-label", 1, 1 << 24, o.max_per_label);
    o.chunks_per_doc = (int)cli_int(&a, "--chunks-per-doc", 1, 1 << 16, o.chunks_per_doc);
    o.min_bytes = (size_t)cli_int(&a, "--min-bytes", 1, 1 << 20, (int64_t)o.min_bytes);
    o.max_bytes = (size_t)cli_int(&a, "--max-bytes", 1, 1 << 20, (int64_t)o.max_bytes);
    o.sources = cli_value(&a, "--sources");
    o.manifest = cli_value(&a, "--manifest");
    o.seed = cli_seed(&a, "--seed", o.seed);
    o.extra_contexts = cli_value(&a, "--extra-contexts");
    if (!o.out) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --out FILE is required (see --help)");
    if (fraction && !o.held_out) ds_die(DS_EXIT_BAD_INPUT, "build-contexts: --held-out-fraction needs --held-out FILE");
    int rc = ds_build_contexts(&o);
    cli_args_free(&a);
    return rc;
}
