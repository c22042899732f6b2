#!/usr/bin/env bash
# Training speed on one accelerator at the papers' shapes, in float32 and bfloat16
# (config.model.compute_dtype), in one go (launch/benchmark.py):
#   - each family's compiled step: compile time, s/step, images/s, XLA-counted FLOPs and the
#     share of a matmul peak measured on the same device in the same run;
#   - the trainer's time per step against the compiled step's, at 1 and 8 steps per call
#     (config.steps_per_call): the host's work per step, what the device waits for;
#   - the input pipeline's images/s (first epoch, then from memory) against what the device
#     consumes.
# Sized to finish in under 5 minutes on one GPU or TPU chip; the synthetic faces are rendered
# at the papers' resolutions, so nothing is downloaded.
#
#     pip install -e '.[cuda12]'   # or '.[tpu]'
#     bash launch/device_benchmark.sh
#
# SHAPES=tiny runs the same benchmark flags on CCVAE's tiny preset (what the test suite does
# on a CPU, so that this script cannot rot). STEPS, ROUNDS, LOOP (steps per call), LOOP_STEPS and
# PIPELINE_BATCHES size it.
set -euo pipefail
cd "$(dirname "$0")/.."
B="python launch/benchmark.py --steps=${STEPS:-20} --rounds=${ROUNDS:-3} --loop=${LOOP:-1,8} \
   --loop_steps=${LOOP_STEPS:-40} --pipeline=${PIPELINE_BATCHES:-20}"
for dtype in float32 bfloat16; do
  echo "== compute_dtype=${dtype}"
  if [[ "${SHAPES:-papers}" == tiny ]]; then
    $B --config=configs/ccvae.py:tiny --set=model.compute_dtype=${dtype}
    continue
  fi
  # IntroVAC at 128x128, channels 32..512, batch 64 (paper 000): both phases.
  $B --config=configs/introvac.py:synthetic --set=model.compute_dtype=${dtype} \
     --set=data.image_size=128 --set=data.synthetic.num_train=512 \
     "--set=model.channels=(32,64,128,256,512)" --set=model.latent_dim=256 \
     --set=batch_size=64 --set=introspection.pretrain_epochs=0.5
  # CCVAE at 64x64, batch 200 (paper 004), semi-supervised (f = 0.2) and fully supervised.
  $B --config=configs/ccvae.py:synthetic,0.2 --config=configs/ccvae.py:synthetic,1.0 \
     --set=model.compute_dtype=${dtype} --set=data.image_size=64 \
     --set=data.synthetic.num_train=1024 "--set=model.channels=(32,32,64,128)" \
     --set=model.top=256 --set=model.free_dims=27 --set=batch_size=200
done
