#!/usr/bin/env bash
# Installs the Debian packages dreamstate needs: the build and run dependencies below, and every
# package the manifest of source documents (configs/text-manifest.tsv) takes files from.
# Idempotent: does nothing when all are present.
set -euo pipefail
# clang, libclang-rt-dev (libFuzzer, ASan, UBSan runtimes) and libomp-dev (clang's OpenMP): `make fuzz`;
# with --no-install-recommends, clang alone brings neither runtime.
pkgs=(build-essential pkg-config libblis-openmp-dev libyaml-dev libopenmpi-dev openmpi-bin
      libscalapack-openmpi-dev libdnnl-dev python3-torch python3-numpy python3-yaml python3-sklearn python3-scipy
      python3-matplotlib slurm-wlm munge iproute2 util-linux
      clang libclang-rt-dev libomp-dev)
manifest="$(dirname "$0")/../../configs/text-manifest.tsv"
mapfile -t pkgs < <({ printf '%s\n' "${pkgs[@]}"; awk -F'\t' '!/^#/ && NF {print $4}' "$manifest"; } | sort -u)
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null | awk '$NF == "installed" {print $1}' || true)
missing=()
for p in "${pkgs[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "deps: all ${#pkgs[@]} packages present"; exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: not root; run 'sudo make deps' or ask your admin to install them" >&2
  exit 2
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
