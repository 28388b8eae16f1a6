"""Weight initialisers shared by the models."""

import flax.linen as nn

# PyTorch's (and spconv's) default weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
# fan_in = kernel volume x C_in; flax's variance_scaling reads fan_in the same way off
# [kx, ky, kz, C_in, C_out] and [C_in, C_out] weights. Models ported from PyTorch use it to start
# from the released initialisation.
TORCH_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
