"""The train state: one pytree (and one Orbax item) holding everything a run carries between steps.

`params` are the only leaves the optimiser sees; `batch_stats` are the models' BatchNorm running
statistics and `prototypes` LEAK's running class means (Flax collection "prototypes"; an empty dict
for a baseline run). `step` is a device scalar so that jitted steps never recompile as it grows, and
every random stream of a step is derived from it (see `step_rng`).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: int32 [] number of optimiser updates applied so far.
      params: model parameters (Flax collection "params").
      batch_stats: BatchNorm running statistics (collection "batch_stats"; {} if none).
      prototypes: LEAK prototype bank (collection "prototypes"; {} when LEAK is off).
      opt_state: the optax optimiser state of `params`.
    """

    step: jax.Array
    params: PyTree
    batch_stats: PyTree
    prototypes: PyTree
    opt_state: PyTree

    def variables(self) -> dict[str, PyTree]:
        """The Flax variables for `model.apply` (no prototypes: models never see them)."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}


def step_rng(root_key: jax.Array, step: jax.Array, stream: int) -> jax.Array:
    """The key of one random stream at one step: fold_in(fold_in(root, step), stream).

    Deriving keys from the step (instead of threading a key through the state) makes a resumed run
    draw exactly the numbers the uninterrupted run would have drawn.
    """
    return jax.random.fold_in(jax.random.fold_in(root_key, step), stream)


def init_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example_batch: dict[str, jax.Array],
    init_key: jax.Array,
    init_prototypes: Callable[[int], PyTree] | None = None,
) -> TrainState:
    """Initialises a fresh state (call under `jax.jit` / `jax.eval_shape`).

    Args:
      model: the Flax module (honouring docs/model_api.md).
      tx: the optimiser.
      example_batch: a batch of the shapes the model will see (values are irrelevant).
      init_key: PRNG key for parameter initialisation.
      init_prototypes: given the LEAK feature width D, returns the zero prototype bank; None for
        a run without LEAK (prototypes = {}).

    Returns:
      TrainState at step 0.
    """
    params_key, dropout_key = jax.random.split(init_key)
    variables = model.init(
        {"params": params_key, "dropout": dropout_key}, example_batch, train=False
    )
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    prototypes = {}
    if init_prototypes is not None:
        _, aux = model.apply(variables, example_batch, train=False)
        prototypes = init_prototypes(aux["features"].shape[-1])
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        prototypes=prototypes,
        opt_state=tx.init(params),
    )


def state_from_variables(
    variables: dict[str, PyTree],
    tx: optax.GradientTransformation,
    sharding: jax.sharding.Sharding | None = None,
    prototypes: PyTree | None = None,
) -> TrainState:
    """A step-0 state from initialised Flax variables (own training loops, tests, benchmarks).

    With `sharding` (e.g. the mesh's replicated sharding) the state is placed as a jitted train
    step returns it, so the step's second call does not compile again for a new placement.
    """
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        prototypes={} if prototypes is None else prototypes,
        opt_state=tx.init(variables["params"]),
    )
    return state if sharding is None else jax.device_put(state, sharding)
