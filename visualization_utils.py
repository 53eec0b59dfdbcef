"""The lab's figures: every plot function the report draws, importable from the project's root.

The figures live in the package, one module per kind of figure (fmlab.figures); this face
re-exports them so that `from visualization_utils import plot_confusion_matrix` works as
the project's shape promises. Each takes data and a path, writes one PNG and returns the path.
"""

from fmlab.figures.plots import (  # noqa: F401  (re-exported)
    plot_activation_maps, plot_calibration, plot_claims, plot_confusion_matrix, plot_dying_units,
    plot_factor_effects, plot_filters, plot_frontier, plot_gradcam, plot_lr_sensitivity,
    plot_misclassified, plot_per_class_accuracy, plot_shift_robustness, plot_training_curves)
