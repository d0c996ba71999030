#!/usr/bin/env bash
# The part-A contexts and the default corpus come from the files configs/text-manifest.tsv pins (Debian
# package, path, sha256) and from nothing else, so a machine with more packages builds the same bytes:
#  1. build-contexts (the part-A job's two calls at CI size, and every source) and the default corpus
#     are built twice: as this machine is, and with the files of an unrelated package added: one file
#     in every directory that holds a manifest file or that build-contexts used to scan (/usr/include,
#     /usr/lib/python3.*, /usr/bin, /usr/sbin, man1, common-licenses, fortunes). The package is
#     simulated, not installed: its files go into a private overlay over /usr in a mount namespace of
#     this test (unshare -m, needs root; skipped with a note where none can be made), so nothing on the
#     machine changes. The outputs must be equal byte for byte.
#  2. a listed file that is missing or changed is refused: exit 2, one line naming the file and its
#     package, nothing written. Through --manifest (anywhere): an entry for an absent file, an entry
#     whose sha256 is not its file's; in the overlay: a listed file deleted, one with a byte appended.
#  3. --extra-contexts configs/personas.jsonl: every record once, split by "doc" (2 of each label's 8
#     documents held out), deterministic, appended without changing the sources' records.
cd "$(dirname "$0")/.."
. tests/lib.sh contexts-pinned
MANIFEST=configs/text-manifest.tsv
ROOT=$PWD

# build NAME: the contexts and the corpus into $TMP/NAME (the part-A calls as jobs/part-a.sh --size ci makes them)
build() {
  local o=$TMP/$1
  mkdir -p "$o" \
  && $BIN build-contexts --out "$o/train.jsonl" --held-out "$o/held.jsonl" --sources c-headers,python,shell,licenses,man \
       --max-per-label 40 --min-bytes 384 --max-bytes 512 >"$o/build.log" \
  && $BIN build-contexts --out "$o/lm-train.jsonl" --held-out "$o/lm-held.jsonl" --sources c-headers,python,shell,licenses,man \
       --max-per-label 300 --chunks-per-doc 16 --min-bytes 256 --max-bytes 2048 >/dev/null \
  && $BIN build-contexts --out "$o/all-train.jsonl" --held-out "$o/all-held.jsonl" --max-per-label 30 >/dev/null \
  && (cd "$o" && "$ROOT/$BIN" train "$ROOT/configs/tiny.yaml" --set train.steps=1 --set train.eval_every=0 \
        --set run.threads=1 --set run.out_dir="$o/run" >/dev/null 2>&1) \
  && [ -s "$o/data/default-byte/valid.bin" ]
}
OUTPUTS=(train.jsonl held.jsonl lm-train.jsonl lm-held.jsonl all-train.jsonl all-held.jsonl
         data/default-byte/train.bin data/default-byte/valid.bin)

build plain && ok "built as this machine is: $(grep total "$TMP/plain/build.log" | xargs)" || bad "build: $(tail -2 "$TMP/plain/build.log")"

# The unrelated package "zz-unrelated": in every directory of the manifest's files, a text file named
# like the listed ones there (same suffix, .gz compressed); in those the old harvester scanned, a script.
PKG=$TMP/pkg
awk -F'\t' '!/^#/ && NF && $5 ~ /^\/usr\// {
  dir = $5; sub(/\/[^\/]*$/, "", dir); name = substr($5, length(dir) + 2)
  ext = name ~ /\.gz$/ ? ".gz" : match(name, /\.[A-Za-z]+$/) ? substr(name, RSTART) : ""
  if (!(dir in seen)) { seen[dir] = 1; print dir "\t" ext } }' $MANIFEST >"$TMP/dirs"
OLD_SCAN=(/usr/include /usr/lib/python3.* /usr/bin /usr/sbin /usr/share/man/man1 /usr/share/common-licenses
          /usr/share/games/fortunes)
(cut -f1 "$TMP/dirs"; printf '%s\n' "${OLD_SCAN[@]}") | sed "s#^#$PKG#" | xargs mkdir -p
text=$(head -c 3000 /usr/share/common-licenses/GPL-3)
printf '%s\n' "$text" | gzip -n >"$TMP/text.gz"
while IFS=$'\t' read -r dir ext; do
  if [ "$ext" = .gz ]; then cp "$TMP/text.gz" "$PKG$dir/zz-unrelated.gz"
  else printf '%s\n%%\n%s\n' "$text" "$text" >"$PKG$dir/zz-unrelated$ext"; fi
done <"$TMP/dirs"
for dir in "${OLD_SCAN[@]}"; do
  for name in zz-unrelated zz-unrelated.h zz_unrelated.py; do printf '#!/bin/sh\n%s\n' "$text" >"$PKG$dir/$name"; done
done
printf '%s\n' "$text" | gzip -n >"$PKG/usr/share/man/man1/zz-unrelated.1.gz"
echo "the unrelated package: $(find "$PKG" -type f | wc -l) files in $(find "$PKG" -type d | wc -l) directories under /usr"

# with_package SETUP CMD...: CMD in a private mount namespace where /usr is overlaid with $PKG's files,
# after the shell commands SETUP (run there: they may change /usr, which the machine never sees).
with_package() {
  local setup=$1; shift
  unshare -m bash -c 'set -e; mkdir -p "$0/ov"; mount -t tmpfs tmpfs "$0/ov"; mkdir "$0/ov/up" "$0/ov/work"
    cp -a "$0/pkg/usr/." "$0/ov/up/"
    mount -t overlay overlay -o lowerdir=/usr,upperdir="$0/ov/up",workdir="$0/ov/work" /usr
    eval "$1"; shift; exec "$@"' "$TMP" "$setup" "$@"
}
if with_package 'test -f /usr/include/zz-unrelated.h' true 2>/dev/null; then
  with_package : bash -c "$(declare -f build); ROOT=$ROOT BIN=$BIN TMP=$TMP build extra" \
    && ok "built again with the unrelated package's files added (overlay over /usr)" || bad "build with the package"
  same=0
  for f in "${OUTPUTS[@]}"; do
    cmp "$TMP/plain/$f" "$TMP/extra/$f" && same=$((same+1))
  done
  [ $same -eq ${#OUTPUTS[@]} ] && ok "all ${#OUTPUTS[@]} outputs (part-A contexts, LM contexts, every source, default corpus) are byte-identical" \
    || bad "only $same of ${#OUTPUTS[@]} outputs are identical with the package added"

  # A listed file deleted, or changed, on the machine: refused, naming it and its package.
  line=$(awk -F'\t' '$1 == "licenses" && $5 == "/usr/share/common-licenses/GPL-3" {print NR}' $MANIFEST)
  with_package 'rm /usr/share/common-licenses/GPL-3' $BIN build-contexts --sources licenses --out "$TMP/gone.jsonl" \
    >/dev/null 2>"$TMP/err"; rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && [ ! -e "$TMP/gone.jsonl" ] \
    && grep -qF "/usr/share/common-licenses/GPL-3: cannot open: No such file or directory (package base-files, $MANIFEST:$line)" "$TMP/err" \
    && ok "a listed file deleted: $(cat "$TMP/err")" || bad "deleted file: exit $rc: $(cat "$TMP/err")"
  with_package 'echo >>/usr/share/common-licenses/GPL-3' $BIN build-contexts --sources licenses --out "$TMP/changed.jsonl" \
    >/dev/null 2>"$TMP/err"; rc=$?
  [ $rc -eq 2 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && [ ! -e "$TMP/changed.jsonl" ] \
    && grep -qF "/usr/share/common-licenses/GPL-3: not the file pinned by $MANIFEST:$line (sha256 differs; package base-files" "$TMP/err" \
    && ok "a listed file changed: $(cat "$TMP/err")" || bad "changed file: exit $rc: $(cat "$TMP/err")"
  with_package 'echo >>/usr/share/games/fortunes/zippy' bash -c "cd $TMP/plain && rm -r data && $ROOT/$BIN train $ROOT/configs/tiny.yaml \
    --set train.steps=1 --set run.threads=1 --set run.out_dir=$TMP/plain/run2" >/dev/null 2>"$TMP/err"; rc=$?
  [ $rc -eq 2 ] && grep -q "^dreamstate: default corpus: /usr/share/games/fortunes/zippy: not the file pinned by $MANIFEST:[0-9]* (sha256 differs; package fortunes" "$TMP/err" \
    && [ ! -e "$TMP/plain/data/default-byte/train.bin" ] && ok "the default corpus refuses a changed file too: $(tail -1 "$TMP/err")" \
    || bad "corpus with a changed file: exit $rc: $(tail -1 "$TMP/err")"
else
  echo "skip the overlay checks: cannot make a private mount namespace here (unshare -m needs root)"
fi

# The same refusals through --manifest, which need no privileges: an absent file, a wrong sha256.
printf 'some text of a document long enough to be cut into contexts by build-contexts\n%.0s' $(seq 20) >"$TMP/doc.txt"
sha=$(sha256sum "$TMP/doc.txt" | cut -d' ' -f1)
wrong=$(printf '%s' "$sha" | tr '0-9a-f' '1-9a-f0')
printf '# a test manifest\nnotes\tnote\tfile\tzz-notes\t%s\t%s\n' "$TMP/doc.txt" "$sha" >"$TMP/good.tsv"
$BIN build-contexts --manifest "$TMP/good.tsv" --out "$TMP/good.jsonl" --max-per-label 4 --min-bytes 40 --max-bytes 200 >/dev/null \
  && [ "$(grep -c '"label":"note"' "$TMP/good.jsonl")" -eq 4 ] && ok "--manifest: a manifest of one file gives its contexts" \
  || bad "--manifest with one good entry"
{ cat "$TMP/good.tsv"; printf 'notes\tnote\tfile\tzz-gone\t%s\t%s\n' "$TMP/absent.txt" "$sha"; } >"$TMP/absent.tsv"
expect_bad_input "--manifest: an absent file" \
  "build-contexts: $TMP/absent.txt: cannot open: No such file or directory (package zz-gone, $TMP/absent.tsv:3); install it with 'make deps'" \
  $BIN build-contexts --manifest "$TMP/absent.tsv" --out "$TMP/absent.jsonl"
[ ! -e "$TMP/absent.jsonl" ] && ok "  nothing written" || bad "contexts written despite an absent file"
printf 'notes\tnote\tfile\tzz-notes\t%s\t%s\n' "$TMP/doc.txt" "$wrong" >"$TMP/wrong.tsv"
expect_bad_input "--manifest: a changed file" \
  "build-contexts: $TMP/doc.txt: not the file pinned by $TMP/wrong.tsv:1 (sha256 differs; package zz-notes changed it?)" \
  $BIN build-contexts --manifest "$TMP/wrong.tsv" --out "$TMP/wrong.jsonl" --held-out "$TMP/wrong-held.jsonl"
[ ! -e "$TMP/wrong.jsonl" ] && [ ! -e "$TMP/wrong-held.jsonl" ] && [ -z "$(ls "$TMP" | grep '\.tmp\.')" ] \
  && ok "  nothing written, no temporary file" || bad "contexts written despite a changed file"
printf 'notes\tnote\tfile\tzz-notes\t%s\n' "$TMP/doc.txt" >"$TMP/short.tsv"
expect_bad_input "--manifest: a line of 5 fields" "build-contexts: $TMP/short.tsv:1: fewer tab-separated fields, not 6" \
  $BIN build-contexts --manifest "$TMP/short.tsv" --out "$TMP/short.jsonl"

# --extra-contexts: configs/personas.jsonl appended (alone, and after a source), split by "doc", deterministic
P=(--extra-contexts configs/personas.jsonl)
$BIN build-contexts --out "$TMP/p1.jsonl" --held-out "$TMP/p1h.jsonl" --sources none "${P[@]}" >"$TMP/p1.log" \
  && $BIN build-contexts --out "$TMP/p2.jsonl" --held-out "$TMP/p2h.jsonl" --sources none "${P[@]}" >/dev/null \
  && $BIN build-contexts --out "$TMP/p3.jsonl" --held-out "$TMP/p3h.jsonl" --sources licenses --max-per-label 10 "${P[@]}" >/dev/null \
  && $BIN build-contexts --out "$TMP/p4.jsonl" --held-out "$TMP/p4h.jsonl" --sources licenses --max-per-label 10 >/dev/null \
  || bad "--extra-contexts: $(tail -2 "$TMP/p1.log")"
/usr/bin/python3 - "$TMP" configs/personas.jsonl <<'PY' && ok "--extra-contexts: every persona record once, 2 of 8 documents per label held out, no document on both sides, deterministic, the source's records unchanged" \
  || bad "--extra-contexts (above)"
import json, sys
from collections import Counter
tmp, src = sys.argv[1], sys.argv[2]
rows = lambda f: [json.loads(l) for l in open(f"{tmp}/{f}")]
want = sorted(json.dumps(json.loads(l), sort_keys=True) for l in open(src))
tr, he = rows("p1.jsonl"), rows("p1h.jsonl")
got = sorted(json.dumps(r, sort_keys=True) for r in tr + he)
assert got == want, "records differ from the file"
assert not {r["doc"] for r in tr} & {r["doc"] for r in he}, "a document on both sides"
assert all(v == 2 for v in Counter(r["label"] for r in he).values()) and len(he) == 12, Counter(r["label"] for r in he)
assert open(f"{tmp}/p1.jsonl").read() == open(f"{tmp}/p2.jsonl").read(), "not deterministic"
lic = [r for r in rows("p3.jsonl") if r["label"] == "license"]
assert lic == rows("p4.jsonl") and rows("p3.jsonl")[len(lic):] == tr, "appending changed the source's records or order"
assert [r for r in rows("p3h.jsonl") if r["label"] == "license"] == rows("p4h.jsonl") and rows("p3h.jsonl")[-len(he):] == he
PY
printf '{"label":"solo","doc":"d0","text":"only one document"}\n{"label":"duo","doc":"a","text":"x"}\n{"label":"duo","doc":"b","text":"y"}\n' >"$TMP/solo.jsonl"
expect_bad_input "--extra-contexts: a label whose one document is held out" "label 'solo' has one document, which is held out" \
  $BIN build-contexts --out "$TMP/solo-out.jsonl" --held-out "$TMP/solo-held.jsonl" --held-out-fraction 0.6 --sources none \
  --extra-contexts "$TMP/solo.jsonl"
expect_bad_input "--sources none without --extra-contexts" "unknown source 'none'" \
  $BIN build-contexts --out "$TMP/none.jsonl" --sources none
finish
