#!/usr/bin/env bash
# Train on this machine (every local GPU/TPU device, or the CPU).
#   launch/local.sh configs/introvac.py:synthetic runs/introvac_synthetic [--config.key=value ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG[:preset] WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG[:preset] WORKDIR [overrides...]}
shift 2
exec python -m latent_jax.main --config="$config" --workdir="$workdir" "$@"
