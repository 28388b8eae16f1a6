"""LEAK (LEArning from mistaKes): model-agnostic pieces of the method (docs/leak_method.md).

Labels everywhere are dense micro-class ids 0..m-1 (the ignored label excluded) with a boolean
`valid` mask saying which entries count; leakjax/label_space.py converts a dataset's label ids.

  hierarchy.py    discover_hierarchy: macro classes from a confusion matrix (spectral clustering)
  bisection.py    the paper's procedure behind it: recursive spectral bisection, the conductance
                  profile's local minima, the tree of splits (the dendrogram)
  grouping.py     Hierarchy (+ JSON), random / a_priori / given ablation groupings
  prototypes.py   update_prototypes, prototype_loss, PrototypeBank (collection "prototypes")
  fairness.py     fairness_loss (Jain's index within macro classes), fair_class_weights (the
                  fair_weighted_ce mode's per-class cross-entropy weights)
  objective.py    LeakConfig, LeakSettings, leak_objective (LEAK's terms from a model's aux),
                  combine_objective
  propagation.py  labels at feature resolution (voxel majority, kept points, nearest image)
  geometry.py     feature_geometry (Theta_Gamma, CCD, PD, PCD)
"""

from leakjax.leak.fairness import fair_class_weights, fairness_loss
from leakjax.leak.geometry import feature_geometry
from leakjax.leak.grouping import (
    Hierarchy,
    a_priori_grouping,
    given_grouping,
    random_grouping,
)
from leakjax.leak.hierarchy import discover_hierarchy
from leakjax.leak.objective import LeakConfig, LeakSettings, combine_objective, leak_objective
from leakjax.leak.propagation import (
    kept_point_labels,
    nearest_downsample_labels,
    voxel_majority_label,
)
from leakjax.leak.prototypes import PrototypeBank, prototype_loss, update_prototypes

__all__ = [
    "Hierarchy",
    "LeakConfig",
    "LeakSettings",
    "PrototypeBank",
    "a_priori_grouping",
    "combine_objective",
    "discover_hierarchy",
    "fair_class_weights",
    "fairness_loss",
    "feature_geometry",
    "given_grouping",
    "kept_point_labels",
    "leak_objective",
    "nearest_downsample_labels",
    "prototype_loss",
    "random_grouping",
    "update_prototypes",
    "voxel_majority_label",
]
