#!/usr/bin/env bash
# Installs the Debian packages dreamstate needs. Idempotent: does nothing when all are present.
set -euo pipefail
pkgs=(build-essential pkg-config libblis-openmp-dev libyaml-dev libopenmpi-dev openmpi-bin
      libscalapack-openmpi-dev libdnnl-dev python3-torch python3-numpy python3-yaml python3-sklearn
      python3-matplotlib slurm-wlm munge fortunes jargon-text)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
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
