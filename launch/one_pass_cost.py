r"""Is one encoder pass over [x_hat; x_hat_p] cheaper than two passes, on this machine?

  python launch/one_pass_cost.py --width=16      # the CPU default's encoder (quarter width)
  python launch/one_pass_cost.py --width=64      # full width

Times the gradient (w.r.t. the parameters, BatchNorm in training mode) of a
CIFAR-stem ResNet-18 over one batch of ``2 * batch`` images against two batches
of ``batch`` images, alternated in one process (``--rounds``), and prints the
medians and their ratio. Perturb-SSL encodes the two reconstructions as two
batches (Eq. 7); this is the measurement behind that choice.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.models.resnet import build_encoder


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--batch", type=int, default=64, help="images per reconstruction batch (the CPU default's)")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--rounds", type=int, default=8)
  args = p.parse_args(argv)
  encoder = build_encoder("resnet18", width=args.width, cifar_stem=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (2 * args.batch, args.image_size, args.image_size, 3))
  variables = encoder.init(jax.random.PRNGKey(1), x[:2], train=False)

  def loss(params, batch_stats, images):
    features, _ = encoder.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                mutable=["batch_stats"])
    return jnp.sum(features ** 2)

  grad = jax.grad(loss)
  one = jax.jit(grad)
  two = jax.jit(lambda p, s, images: jax.tree.map(jnp.add, grad(p, s, images[:args.batch]),
                                                   grad(p, s, images[args.batch:])))
  inputs = (variables["params"], variables["batch_stats"], x)
  times = {"one": [], "two": []}
  for fn in (one, two):
    jax.block_until_ready(fn(*inputs))  # compile
  for _ in range(args.rounds):
    for name, fn in (("one", one), ("two", two)):
      start = time.perf_counter()
      jax.block_until_ready(fn(*inputs))
      times[name].append(1e3 * (time.perf_counter() - start))
  result = {name: float(np.median(t)) for name, t in times.items()}
  print(f"width {args.width}, {2 * args.batch} images: one pass {result['one']:.0f} ms, two passes of "
        f"{args.batch} {result['two']:.0f} ms (medians of {args.rounds}), one / two = "
        f"{result['one'] / result['two']:.3f}")
  return result


if __name__ == "__main__":
  main()
