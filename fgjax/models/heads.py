"""Heads on top of the pooled feature vector v: projection MLPs, predictor, classifier.

Every head takes ``x: [B, d_in]`` and returns float32 ``[B, d_out]``. Computation
runs in the head's ``dtype``; parameters (and BN statistics) are float32. All heads
accept ``train`` so a method can call any head the same way; heads without BN
ignore it.

Dense weights use PyTorch's ``nn.Linear`` default (uniform, bound 1/sqrt(fan_in)),
so the official MoCo v2 / SimSiam learning rates transfer unchanged.
"""

from collections.abc import Sequence
from typing import Any
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


# torch.nn.Linear's kaiming_uniform_(a=sqrt(5)) == uniform(+-1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _dense(features: int, dtype: Any, use_bias: bool = True, name: Optional[str] = None,
           kernel_init=dense_kernel_init) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, kernel_init=kernel_init,
                    dtype=dtype, param_dtype=jnp.float32, name=name)


def _batch_norm(train: bool, momentum: float, axis_name: Optional[str], dtype: Any,
                affine: bool = True, name: Optional[str] = None) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                        axis_name=axis_name, use_scale=affine, use_bias=affine,
                        dtype=dtype, param_dtype=jnp.float32, name=name)


class ProjectionHead(nn.Module):
    """MoCo v2 MLP head g (no BN): ``[Dense -> ReLU] * len(hidden_dims) -> Dense``.

    MoCo v2's head is ``hidden_dims=(2048,), out_dim=128``. The output is NOT
    L2-normalised: the caller normalises (the contrastive losses and Grad-CAM
    need the raw projection as the point of differentiation).

    ``x: [B, d_in] -> [B, out_dim]`` float32.
    """

    hidden_dims: Sequence[int]
    out_dim: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no BN; accepted so all heads share one call signature
        x = jnp.asarray(x, self.dtype)
        for i, hidden in enumerate(self.hidden_dims):
            x = nn.relu(_dense(hidden, self.dtype, name=f"dense{i + 1}")(x))
        x = _dense(self.out_dim, self.dtype, name="out")(x)
        return x.astype(jnp.float32)


class SimSiamProjector(nn.Module):
    """SimSiam projector (official code): 3 Dense layers, each followed by BN.

    ``Dense(no bias) -> BN -> ReLU -> Dense(no bias) -> BN -> ReLU -> Dense(no
    bias) -> BN(no affine)``. The last Dense has no bias because the following BN
    removes it anyway (the official code freezes that bias for the same reason).
    SimSiam: ``hidden_dim = out_dim = 2048``.

    ``x: [B, d_in] -> [B, out_dim]`` float32. With ``train=True`` apply with
    ``mutable=['batch_stats']``.
    """

    hidden_dim: int = 2048
    out_dim: int = 2048
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_axis_name: Optional[str] = None  # SimSiam uses SyncBN: set to the mesh axis

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda name, affine=True: _batch_norm(  # noqa: E731
            train, self.bn_momentum, self.bn_axis_name, self.dtype, affine, name)
        x = jnp.asarray(x, self.dtype)
        x = nn.relu(bn("bn1")(_dense(self.hidden_dim, self.dtype, False, "dense1")(x)))
        x = nn.relu(bn("bn2")(_dense(self.hidden_dim, self.dtype, False, "dense2")(x)))
        x = bn("bn3", affine=False)(_dense(self.out_dim, self.dtype, False, "dense3")(x))
        return x.astype(jnp.float32)


class SimSiamPredictor(nn.Module):
    """SimSiam predictor: ``out_dim -> hidden_dim (BN, ReLU) -> out_dim``.

    SimSiam: ``hidden_dim = 512, out_dim = 2048`` (a bottleneck). The hidden
    Dense has no bias (followed by BN); the output Dense has one.

    ``x: [B, out_dim] -> [B, out_dim]`` float32.
    """

    hidden_dim: int = 512
    out_dim: int = 2048
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    bn_axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool):
        x = jnp.asarray(x, self.dtype)
        x = _dense(self.hidden_dim, self.dtype, False, "dense1")(x)
        x = _batch_norm(train, self.bn_momentum, self.bn_axis_name, self.dtype,
                        name="bn1")(x)
        x = _dense(self.out_dim, self.dtype, True, "out")(nn.relu(x))
        return x.astype(jnp.float32)


class LinearClassifier(nn.Module):
    """One Dense layer: logits for linear probes and supervised heads.

    Weights start as N(0, 0.01^2) and bias 0, as in MoCo's linear-probe code.

    ``x: [B, d_in] -> logits [B, num_classes]`` float32.
    """

    num_classes: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no BN; accepted so all heads share one call signature
        x = jnp.asarray(x, self.dtype)
        x = _dense(self.num_classes, self.dtype, self.use_bias, "out",
                   kernel_init=nn.initializers.normal(0.01))(x)
        return x.astype(jnp.float32)
