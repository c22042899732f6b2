"""Rendering throughput of the ``synthetic_faces`` data set, one process, one thread.

    python launch/benchmark_synthetic_faces.py [--sizes 32 64 128] [--num 3000] [--repeats 3]

Prints images/s of ``SyntheticFaces[i]`` (render + attributes, the path a training input
pipeline takes) for each size, the best of ``--repeats`` passes over ``--num`` distinct
images, and the time to build the attribute table of the default train split.
"""

import argparse
import os
import time

# One BLAS / OpenMP thread, so that the figure is per core.
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')

from latent_jax.data import synthetic_faces  # noqa: E402  (after the thread settings)


def images_per_second(size: int, num: int, repeats: int, seed: int) -> float:
  src = synthetic_faces.SyntheticFaces('train', image_size=size, seed=seed,
                                       num_examples=max(num, 1))
  src[0]  # builds the per-size caches
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    for i in range(num):
      src[i]
    best = min(best, time.perf_counter() - start)
  return num / best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[32, 64, 128])
  parser.add_argument('--num', type=int, default=3000, help='images per pass')
  parser.add_argument('--repeats', type=int, default=3, help='passes; the best is reported')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()

  print(f'synthetic_faces rendering, single process, {args.num} images x {args.repeats} passes')
  for size in args.sizes:
    rate = images_per_second(size, args.num, args.repeats, args.seed)
    print(f'  {size:4d} px: {rate:8.0f} images/s  ({1e6 / rate:6.0f} us/image)')
  n = synthetic_faces.DEFAULT_SPLIT_SIZES['train']
  start = time.perf_counter()
  synthetic_faces.attributes_table(args.seed, 'train', n)
  print(f'  attributes_table({n} rows): {1e3 * (time.perf_counter() - start):.1f} ms')


if __name__ == '__main__':
  main()
