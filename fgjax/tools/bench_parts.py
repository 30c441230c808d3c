r"""Where a MoCo v2 step's time goes: its parts and each convolution layer, timed one by one.

  python -m fgjax.tools.bench --config=configs/moco.py:fullwidth --methods=moco --breakdown
  python launch/torch_moco_v2.py --arch=resnet18 --cifar-stem --image-size=32 --breakdown   # PyTorch's
  python -m fgjax.tools.tables torch_comparison runs/gpu_bench    # both, side by side

Parts of the step (each its own compiled function on the same devices and
batch, milliseconds, best of ``repeats``):

* ``aug``: the on-device aug+ of both views (PyTorch's reference has none);
* ``key_forward``: the EMA update of the key network and the shuffled keys;
* ``query_forward``: the query encoder + head and InfoNCE against the queue;
* ``query_forward_backward``: the same with the gradient of every parameter;
  ``backward`` is the difference;
* ``optimizer``: the gradient mean over devices and the SGD update;
* ``step``: the whole training step (what ``fgjax.tools.bench`` times).

Layers: every convolution of the encoder (read off the forward pass's jaxpr),
one row per distinct shape, with its count in the network and the milliseconds
of its forward, its input gradient and its weight gradient, XLA's and
``model.conv_impl``'s (``fgjax.ops.conv``). The keys name a layer the same way
as the PyTorch side (``conv_key``), so the two tables join.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from fgjax.methods import spec
from fgjax.tools import timing


def conv_key(n: int, h: int, w: int, cin: int, cout: int, kernel: int, stride: int) -> str:
  """``'64x32x32 3->16 k3 s1'``: batch x height x width of the input, channels, kernel, stride."""
  return f"{n}x{h}x{w} {cin}->{cout} k{kernel} s{stride}"


def encoder_convolutions(encoder: Any, variables: Any, images: jax.Array) -> list[dict[str, Any]]:
  """Every convolution of ``encoder.apply(variables, images, train=True)``: shapes, strides, padding, count."""
  jaxpr = jax.make_jaxpr(lambda x: encoder.apply(variables, x, train=True, mutable=["batch_stats"]))(images)
  found: Counter = Counter()

  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        x, w = (v.aval for v in eqn.invars)
        found[(tuple(x.shape), tuple(w.shape), tuple(eqn.params["window_strides"]),
               tuple(tuple(p) for p in eqn.params["padding"]))] += 1
      for value in eqn.params.values():
        for sub in (value if isinstance(value, (tuple, list)) else (value,)):
          if hasattr(sub, "eqns"):
            walk(sub)
          elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
            walk(sub.jaxpr)
  walk(jaxpr.jaxpr)
  layers = []
  for (x, w, strides, padding), count in found.items():
    n, h, wd, cin = x
    layers.append({"key": conv_key(n, h, wd, cin, w[-1], w[0], strides[0]), "x_shape": x, "w_shape": w,
                   "strides": strides, "padding": padding, "count": count})
  return layers


def time_convolution(layer: dict[str, Any], conv_fn, *, repeats: int) -> dict[str, float]:
  """ms of the forward, input gradient and weight gradient of one layer with ``conv_fn``."""
  dn = ("NHWC", "HWIO", "NHWC")
  x = jax.random.normal(jax.random.PRNGKey(0), layer["x_shape"])
  w = jax.random.normal(jax.random.PRNGKey(1), layer["w_shape"]) * 0.05
  conv = lambda x, w: conv_fn(x, w, layer["strides"], layer["padding"], dimension_numbers=dn)  # noqa: E731
  g = jax.random.normal(jax.random.PRNGKey(2), jax.eval_shape(conv, x, w).shape)
  forward = jax.jit(conv)
  input_grad = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  weight_grad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
  return {"forward_ms": 1e3 * timing.best_seconds(lambda: forward(x, w), repeats=repeats),
          "input_grad_ms": 1e3 * timing.best_seconds(lambda: input_grad(x, w, g), repeats=repeats),
          "weight_grad_ms": 1e3 * timing.best_seconds(lambda: weight_grad(x, w, g), repeats=repeats)}


def step_parts(cfg, *, repeats: int = 3, devices=None) -> dict[str, float]:
  """ms of each part of a MoCo v2 step under ``cfg`` (a ``moco`` config; see the module docstring)."""
  from fgjax.infra import parallel  # pylint: disable=import-outside-toplevel
  from fgjax.methods import moco  # pylint: disable=import-outside-toplevel
  from fgjax.methods import registry  # pylint: disable=import-outside-toplevel
  from fgjax.methods import ssl_common as common  # pylint: disable=import-outside-toplevel

  mesh = parallel.make_mesh(devices)
  setup = registry.setup(cfg)
  hp = registry.hparams(cfg, setup, mesh.size)
  nets = setup.nets
  state = parallel.replicate(mesh, spec.initial_state(setup, jax.random.PRNGKey(0)))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  batch = parallel.shard_batch(mesh, timing.synthetic_batch(cfg))

  def views(batch, rng):
    return common.augmented_views(rng, common.to_float_images(batch["image"]), hp.image_size, hp.views)

  def ready_views(batch, rng):
    x1, x2 = views(batch, rng)
    return lax.stop_gradient(x1), lax.stop_gradient(x2)

  def aug(state, batch, rng):
    x1, x2 = views(batch, rng)
    return state, common.mean_over_devices(jnp.mean(x1) + jnp.mean(x2))

  def key_forward(state, batch, rng):
    _, x2 = ready_views(batch, rng)
    _, _, keys, _ = moco.key_network_forward(state, x2, rng, nets=nets, hp=hp)
    return state, common.mean_over_devices(jnp.mean(keys))

  def query_loss(params, state, batch, rng):
    x1, x2 = ready_views(batch, rng)
    keys = jnp.zeros((x2.shape[0], state.queue.shape[-1]), jnp.float32) + 0.1
    loss, _ = moco.query_infonce(params, state.batch_stats, x1, keys, state.queue, nets=nets, hp=hp)
    return loss

  def query_forward(state, batch, rng):
    return state, common.mean_over_devices(query_loss(state.params, state, batch, rng))

  def query_forward_backward(state, batch, rng):
    loss, grads = jax.value_and_grad(query_loss)(state.params, state, batch, rng)
    return state, common.mean_over_devices(loss + sum(jnp.sum(g) for g in jax.tree.leaves(grads)))

  def optimizer(state, batch, rng):
    del batch, rng
    grads = jax.tree.map(lambda p: 1e-3 * p, state.params)
    params, opt_state = common.apply_gradients(state, grads, setup.tx)
    return state.replace(params=params, opt_state=opt_state), jnp.zeros(())

  joint, _ = registry.step_functions(cfg, setup, hp)
  parts = {"aug": aug, "key_forward": key_forward, "query_forward": query_forward,
           "query_forward_backward": query_forward_backward, "optimizer": optimizer, "step": joint}
  out = {}
  for name, fn in parts.items():
    compiled = parallel.data_parallel(fn, mesh, donate_state=False)
    out[name + "_ms"] = 1e3 * timing.best_seconds(lambda: compiled(state, batch, rng)[1], repeats=repeats)
  out["backward_ms"] = out["query_forward_backward_ms"] - out["query_forward_ms"]
  return out


def breakdown(cfg, *, repeats: int = 3, devices=None) -> dict[str, Any]:
  """``{'parts': step_parts(...), 'layers': [...]}`` for a MoCo v2 config (see the module docstring)."""
  from fgjax.methods import registry  # pylint: disable=import-outside-toplevel
  from fgjax.ops import conv as conv_ops  # pylint: disable=import-outside-toplevel

  setup = registry.setup(cfg)
  # One device's images: the BatchNorm groups are a vmap, which XLA runs as one convolution.
  local = cfg.data.global_batch_size // len(devices or jax.devices())
  images = jnp.zeros((local, cfg.data.image_size, cfg.data.image_size, 3), jnp.float32)
  variables = setup.nets.encoder.init(jax.random.PRNGKey(0), images[:2], train=False)
  layers = encoder_convolutions(setup.nets.encoder, variables, images)
  impl = conv_ops.resolve(cfg.model.get("conv_impl", "xla"))
  for layer in layers:
    layer["xla"] = time_convolution(layer, lax.conv_general_dilated, repeats=repeats)
    uses_matmuls = conv_ops.layer_uses_matmul_dw(impl, layer["x_shape"], layer["w_shape"], layer["strides"])
    layer["conv_impl"] = "matmul_dw" if uses_matmuls else "xla"
    layer["fgjax"] = (time_convolution(layer, conv_ops.conv_general_dilated, repeats=repeats) if uses_matmuls
                      else layer["xla"])
  return {"parts": step_parts(cfg, repeats=repeats, devices=devices), "layers": layers,
          "conv_impl": cfg.model.get("conv_impl", "xla")}


def format_breakdown(fgjax_result: dict[str, Any], torch_result: dict[str, Any] | None = None) -> str:
  """The breakdown as Markdown tables, PyTorch's beside fgjax's where given."""
  parts = fgjax_result["parts"]
  tparts = (torch_result or {}).get("parts", {})
  lines = ["| part of the MoCo v2 step | fgjax ms | PyTorch ms | fgjax / PyTorch time |", "|---|---|---|---|"]
  for name in ("aug", "key_forward", "query_forward", "backward", "optimizer", "step"):
    mine, theirs = parts.get(name + "_ms"), tparts.get(name + "_ms")
    ratio = f"{mine / theirs:.2f}" if mine and theirs else "-"
    lines.append(f"| {name} | {mine:.1f} | {'-' if theirs is None else f'{theirs:.1f}'} | {ratio} |")
  tlayers = {layer["key"]: layer for layer in (torch_result or {}).get("layers", [])}
  lines += ["", f"Convolutions (model.conv_impl={fgjax_result.get('conv_impl')}; ms per call: forward / "
                "input gradient / weight gradient):", "",
            "| layer (input, channels, kernel, stride) | count | XLA | fgjax | PyTorch | impl |",
            "|---|---|---|---|---|---|"]

  def triple(t):
    return "-" if t is None else f"{t['forward_ms']:.1f} / {t['input_grad_ms']:.1f} / {t['weight_grad_ms']:.1f}"
  totals = Counter()
  for layer in fgjax_result["layers"]:
    theirs = tlayers.get(layer["key"], {}).get("torch")
    lines.append(f"| {layer['key']} | {layer['count']} | {triple(layer['xla'])} | {triple(layer['fgjax'])} | "
                 f"{triple(theirs)} | {layer['conv_impl']} |")
    for side, t in (("xla", layer["xla"]), ("fgjax", layer["fgjax"]), ("torch", theirs)):
      if t is not None:
        totals[side] += layer["count"] * sum(t.values())
  lines.append(f"| all layers, count-weighted sum | | {totals['xla']:.0f} | {totals['fgjax']:.0f} | "
               f"{totals['torch']:.0f} | |" if totals["torch"] else
               f"| all layers, count-weighted sum | | {totals['xla']:.0f} | {totals['fgjax']:.0f} | - | |")
  return "\n".join(lines)
