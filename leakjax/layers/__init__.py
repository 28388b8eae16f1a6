"""Generic Flax layers for padded rows with a mask, shared by every model (sparse ones: sparse/).

dropout.py  Dropout: flax's nn.Dropout with a mask that follows the input's sharding
norm.py     MaskedBatchNorm / masked_batch_norm: statistics over the valid rows only
rows.py     RowDense / row_matmul / row_gram: per-row dense layers with a fast weight gradient
init.py     TORCH_INIT: PyTorch's default weight initialisation
"""

from leakjax.layers.dropout import Dropout
from leakjax.layers.init import TORCH_INIT
from leakjax.layers.norm import MaskedBatchNorm, masked_batch_norm
from leakjax.layers.rows import RowDense, row_gram, row_matmul, take_rows

__all__ = [
    "TORCH_INIT",
    "Dropout",
    "MaskedBatchNorm",
    "RowDense",
    "masked_batch_norm",
    "row_gram",
    "row_matmul",
    "take_rows",
]
