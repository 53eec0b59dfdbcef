"""The lab's figures: every plot function the report draws, importable from the project's root.

The figures live in the package (fmlab.figures: the best run's in best_run, the comparisons
of variants in plots, the claims' forest plots in claims); this face
re-exports them so that `from visualization_utils import plot_confusion_matrix` works as the
project's shape promises. Each takes data and a path, writes one PNG and returns the path.
"""

from fmlab.figures.best_run import (  # noqa: F401  (re-exported)
    plot_activation_maps, plot_confusion_matrix, plot_filters, plot_gradcam, plot_misclassified)
from fmlab.figures.claims import plot_claims, plot_claims_by_level  # noqa: F401
from fmlab.figures.plots import (  # noqa: F401
    plot_calibration, plot_dying_units, plot_factor_effects, plot_frontier,
    plot_lr_sensitivity, plot_per_class_accuracy, plot_shift_robustness, plot_training_curves)
