"""Dropout whose mask follows the input's sharding (usable with Explicit mesh axes)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from leakjax.sharding import explicit_sharding


class Dropout(nn.Module):
    """flax's nn.Dropout (same "dropout" rng stream, module name and mask: the outputs are
    equal), whose mask takes the input's sharding, so that it also traces with the batch sharded
    on Explicit mesh axes (flax draws an unsharded mask, which JAX refuses to combine there)."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if self.rate == 0.0 or deterministic:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        rng = self.make_rng("dropout")
        mask = jax.random.bernoulli(rng, keep, x.shape, out_sharding=explicit_sharding(x))
        return jax.lax.select(mask, x / keep, jnp.zeros_like(x))
