#!/usr/bin/env bash
# Train on every host of a Cloud TPU pod slice. Run from a machine with gcloud access:
#   launch/tpu_pod.sh TPU_NAME ZONE configs/introvac.py:celeba_eye gs://bucket/runs/introvac [overrides...]
# Every host runs the same command; jax.distributed.initialize() auto-detects the pod
# (config.parallel.distributed=True). The repository must be checked out at the same path on
# every host and installed with `pip install -e '.[tpu]'`; CelebA must be prepared in a
# data_dir every host can read (--config.data.data_dir=...). The workdir should be a gs:// URL
# (every host writes its part of each checkpoint). A preemption notice or SIGTERM on any host
# stops every host at one agreed step with one checkpoint; evaluations and reports are written
# by host 0 alone.
set -euo pipefail
tpu=${1:?TPU name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/latent_jax && python -m latent_jax.main --config=$config --workdir=$workdir \
   --config.parallel.distributed=True$extra"
