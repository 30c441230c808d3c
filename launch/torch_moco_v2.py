r"""A plain PyTorch MoCo v2 training step, timed: the reference of fgjax's MoCo v2 benchmark.

  python launch/torch_moco_v2.py --arch=resnet50 --image-size=224 --batch=128 --precision=bfloat16
  python launch/torch_moco_v2.py --arch=resnet18 --cifar-stem --image-size=32 --batch=128   # the CPU figure
  python launch/torch_moco_v2.py --arch=resnet18 --cifar-stem --image-size=32 --breakdown --json=t.json

Written for this comparison from the official MoCo v2 recipe (He et al. 2020,
Chen et al. 2020; github.com/facebookresearch/moco, ``moco/builder.py`` and
``main_moco.py``): a query encoder and a momentum key encoder (ResNet +
2048-2048-128 MLP head, no BN in the head), a queue of K negatives, InfoNCE
(cross-entropy with the positive at index 0, temperature 0.2), the momentum
update of the key encoder before the keys are computed, SGD (lr 0.03 per 256
images, momentum 0.9, weight decay 1e-4) and the enqueue of the keys.

Differences from the official code, all of them in the reference's favour or
neutral for speed:

* One device, so no shuffle-BN (it exists to shuffle across GPUs; the official
  code has no single-GPU path) and no all-gather of the keys.
* The two views are random tensors made once, outside the timed step (the
  official code augments on the host in DataLoader workers). fgjax's timed step
  includes its on-device aug+ of both views, so the comparison is conservative
  for fgjax.
* ResNet is written here (torchvision layout, v1.5: stride on the 3x3 conv of
  the bottleneck) so that torchvision is not needed; with ``--width=64`` the
  parameter counts equal torchvision's (checked by ``--check-params``).

GPU: channels_last memory format, ``cudnn.benchmark``, ``torch.autocast`` for
``--precision=bfloat16`` (parameters, optimizer state and BN statistics stay
float32, as in fgjax), timing with ``torch.cuda.synchronize()``. Prints
images/s (median step) and, with ``--json``, writes the figures.

PyTorch is only a benchmark dependency: ``pip install -e .[torch-bench]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin: int, width: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(width)
    self.downsample = None
    if stride != 1 or cin != width:
      self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin: int, width: int, stride: int):
    super().__init__()
    out = width * 4
    self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # v1.5: stride on the 3x3
    self.bn2 = nn.BatchNorm2d(width)
    self.conv3 = nn.Conv2d(width, out, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out)
    self.downsample = None
    if stride != 1 or cin != out:
      self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


ARCHS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
         "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
  """ResNet trunk -> globally pooled features ``[B, n]`` (no classifier), torchvision init."""

  def __init__(self, arch: str, width: int = 64, cifar_stem: bool = False):
    super().__init__()
    block, stages = ARCHS[arch]
    if cifar_stem:  # 3x3 stride-1 conv, no max-pool (32 px images), as fgjax's cifar_stem
      self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    else:
      self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                nn.MaxPool2d(3, 2, 1))
    layers, cin = [], width
    for i, n in enumerate(stages):
      for j in range(n):
        layers.append(block(cin, width * 2**i, 2 if (i > 0 and j == 0) else 1))
        cin = width * 2**i * block.expansion
    self.layers = nn.Sequential(*layers)
    self.num_features = cin
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


def encoder_with_head(arch: str, width: int, cifar_stem: bool, hidden: int, dim: int) -> nn.Module:
  """f + g: the ResNet and MoCo v2's MLP head (n -> hidden -> ReLU -> dim, no BN)."""
  trunk = ResNet(arch, width, cifar_stem)
  return nn.Sequential(trunk, nn.Linear(trunk.num_features, hidden), nn.ReLU(), nn.Linear(hidden, dim))


# ----------------------------------------------------------------------------- breakdown


def _best_ms(fn, repeats: int, sync) -> float:
  """ms of one ``fn()``, the best of ``repeats`` after one untimed call (what fgjax's breakdown reports)."""
  fn()
  sync()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    sync()
    best = min(best, time.perf_counter() - t0)
  return 1e3 * best


def conv_layers(model: nn.Module, im: torch.Tensor) -> list[dict]:
  """Every Conv2d of the query encoder on ``im``, one entry per distinct shape, with its count.

  Keys as ``fgjax.tools.bench_parts.conv_key``: ``'NxHxW Cin->Cout kK sS'``.
  """
  seen: dict[str, dict] = {}

  def hook(module, inputs, output):
    n, c, h, w = inputs[0].shape
    key = f"{n}x{h}x{w} {c}->{module.out_channels} k{module.kernel_size[0]} s{module.stride[0]}"
    entry = seen.setdefault(key, {"key": key, "module": module, "x_shape": tuple(inputs[0].shape), "count": 0})
    entry["count"] += 1
  handles = [m.register_forward_hook(hook) for m in model.encoder_q.modules() if isinstance(m, nn.Conv2d)]
  with torch.no_grad():
    model.encoder_q(im)
  for h in handles:
    h.remove()
  return list(seen.values())


def breakdown(model, optimizer, im_q, im_k, repeats: int, sync) -> dict:
  """ms of the step's parts and of each conv layer's forward / input gradient / weight gradient."""
  def key_forward():
    with torch.no_grad():
      model._momentum_update()
      F.normalize(model.encoder_k(im_k), dim=1)

  def query_loss():
    q = F.normalize(model.encoder_q(im_q), dim=1)
    return (q @ model.queue).logsumexp(dim=1).mean()

  def query_forward():
    with torch.no_grad():
      query_loss()

  def query_forward_backward():
    optimizer.zero_grad(set_to_none=True)
    query_loss().backward()

  query_forward_backward()  # gradients exist for the optimizer's part

  parts = {"aug_ms": 0.0, "key_forward_ms": _best_ms(key_forward, repeats, sync),
           "query_forward_ms": _best_ms(query_forward, repeats, sync),
           "query_forward_backward_ms": _best_ms(query_forward_backward, repeats, sync),
           "optimizer_ms": _best_ms(optimizer.step, repeats, sync)}
  parts["backward_ms"] = parts["query_forward_backward_ms"] - parts["query_forward_ms"]
  layers = []
  for entry in conv_layers(model, im_q):
    conv = entry["module"]
    x = torch.randn(entry["x_shape"], device=im_q.device, dtype=im_q.dtype)
    with torch.no_grad():
      y = conv(x)
    g = torch.randn_like(y)
    w = conv.weight.detach()

    def forward():
      with torch.no_grad():
        conv(x)
    t = {"forward_ms": _best_ms(forward, repeats, sync),
         "input_grad_ms": _best_ms(lambda: torch.nn.grad.conv2d_input(
             x.shape, w, g, stride=conv.stride, padding=conv.padding), repeats, sync),
         "weight_grad_ms": _best_ms(lambda: torch.nn.grad.conv2d_weight(
             x, w.shape, g, stride=conv.stride, padding=conv.padding), repeats, sync)}
    layers.append({"key": entry["key"], "count": entry["count"], "torch": t})
  return {"parts": parts, "layers": layers}


# ----------------------------------------------------------------------------- MoCo v2


class MoCo(nn.Module):
  """MoCo v2 (official ``moco/builder.py`` without the multi-GPU shuffle)."""

  def __init__(self, arch: str, width: int, cifar_stem: bool, *, hidden: int = 2048, dim: int = 128,
               queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2):
    super().__init__()
    self.m, self.t = momentum, temperature
    self.encoder_q = encoder_with_head(arch, width, cifar_stem, hidden, dim)
    self.encoder_k = encoder_with_head(arch, width, cifar_stem, hidden, dim)
    for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
      k.data.copy_(q.data)
      k.requires_grad = False
    self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
    self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

  @torch.no_grad()
  def _momentum_update(self):
    # torch._foreach_* is one fused kernel per group instead of one per parameter.
    q = list(self.encoder_q.parameters())
    k = list(self.encoder_k.parameters())
    torch._foreach_mul_(k, self.m)
    torch._foreach_add_(k, q, alpha=1.0 - self.m)

  @torch.no_grad()
  def _enqueue(self, keys):
    b = keys.shape[0]
    ptr = int(self.queue_ptr)
    self.queue[:, ptr:ptr + b] = keys.T
    self.queue_ptr[0] = (ptr + b) % self.queue.shape[1]

  def forward(self, im_q, im_k):
    q = F.normalize(self.encoder_q(im_q), dim=1)
    with torch.no_grad():
      self._momentum_update()
      k = F.normalize(self.encoder_k(im_k), dim=1)
    # Logits and loss in float32 (autocast would otherwise run the einsums in bf16).
    q, k = q.float(), k.float()
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
    logits = torch.cat([l_pos, l_neg], dim=1) / self.t
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits, labels, k


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
  p.add_argument("--width", type=int, default=64, help="channels of the first stage (64 = standard)")
  p.add_argument("--cifar-stem", action="store_true", help="3x3 stride-1 stem, no max-pool (32 px)")
  p.add_argument("--image-size", type=int, default=224)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--queue", type=int, default=65536)
  p.add_argument("--hidden", type=int, default=2048, help="MLP head hidden units (2048 in MoCo v2)")
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--device", default="auto", help="auto | cuda | cpu")
  p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                 help="auto: on for CUDA, off for CPU")
  p.add_argument("--compile", action="store_true", help="torch.compile the model (not 'plain'; off by default)")
  p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
  p.add_argument("--check-params", action="store_true", help="print the trunk's parameter count")
  p.add_argument("--json", default=None, help="write the figures to this JSON file")
  p.add_argument("--breakdown", action="store_true",
                 help="also time the step's parts and every conv layer (fgjax.tools.bench_parts's keys)")
  args = p.parse_args(argv)
  if args.steps < 1 or args.warmup < 0:
    p.error("--steps must be >= 1 and --warmup >= 0")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                        ("cpu" if args.device == "auto" else args.device))
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  channels_last = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
  bf16 = args.precision == "bfloat16"
  if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
    print(f"torch_moco_v2: error: {torch.cuda.get_device_name(device)} does not support bfloat16",
          file=sys.stderr)
    sys.exit(2)

  model = MoCo(args.arch, args.width, args.cifar_stem, hidden=args.hidden, dim=args.dim,
               queue_size=args.queue).to(device)
  if args.check_params:
    print(f"{args.arch} width {args.width} trunk parameters: "
          f"{sum(p.numel() for p in model.encoder_q[0].parameters()):,}")
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=memory_format)
  lr = 0.03 * args.batch / 256
  optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4,
                              foreach=True)
  forward = torch.compile(model) if args.compile else model
  shape = (args.batch, 3, args.image_size, args.image_size)
  im_q = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
  im_k = torch.randn(shape, device=device).contiguous(memory_format=memory_format)

  def step():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      logits, labels, keys = forward(im_q, im_k)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model._enqueue(keys)
    return loss

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize(device)

  for _ in range(args.warmup):
    step()
  sync()
  times, cpu_times = [], []
  for _ in range(args.steps):
    t0, c0 = time.perf_counter(), time.process_time()
    loss = step()
    sync()
    times.append(time.perf_counter() - t0)
    cpu_times.append(time.process_time() - c0)
  seconds = statistics.median(times)
  name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
  result = {"framework": f"torch {torch.__version__}", "device": name, "arch": args.arch, "width": args.width,
            "cifar_stem": args.cifar_stem, "image_size": args.image_size, "batch": args.batch,
            "queue": args.queue, "precision": args.precision, "channels_last": channels_last,
            "compiled": args.compile, "ms_per_step": 1e3 * seconds, "min_ms": 1e3 * min(times),
            "max_ms": 1e3 * max(times), "cpu_ms_per_step": 1e3 * statistics.median(cpu_times),
            "images_per_s": args.batch / seconds, "loss": float(loss.detach())}
  if args.breakdown:
    result["breakdown"] = breakdown(model, optimizer, im_q, im_k, max(args.steps, 3), sync)
  print(f"torch MoCo v2 step | {name} | {args.arch} width {args.width}{' cifar stem' if args.cifar_stem else ''}, "
        f"batch {args.batch}, {args.image_size} px, {args.precision}: {result['ms_per_step']:.1f} ms/step, "
        f"{result['images_per_s']:.1f} img/s (median of {args.steps})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
