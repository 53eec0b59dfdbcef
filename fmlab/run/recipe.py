"""The Recipe: how every run of a grid trains and is evaluated, with every setting's default.

    recipe = Recipe(epochs=12)                     # every setting, with its default
    recipe_for(recipe, variant)                    # with the variant's setting factors applied

The command line builds its flags from the fields (help text and parsing in each field's
metadata), each run stores its recipe as settings.json, and a run with another recipe in the
same folder is refused. No TensorFlow at import time: --help and --report-only stay light.
"""

import argparse
import dataclasses

from fmlab.core import environment
from fmlab.core.dataset_facts import CLASS_NAMES, SPLIT_SIZES
from fmlab.core.errors import UsageError, positive_int
from fmlab.store import run_store


def setting(default, help, technique=False, **cli):
    """A Recipe field: its default, its --help text, and how the command line sets it
    (add_argument's keywords, cli_default for a default of its own; flag=None: derived
    from another flag, named by set_by). technique: a training technique that is off by
    default (an ablation candidate), listed in a --help group of its own."""
    return dataclasses.field(default=default, metadata={"help": help, "cli": cli,
                                                        "technique": technique})


def flag_of(field):
    """The command-line flag that sets a Recipe field."""
    cli = field.metadata["cli"]
    return cli.get("flag", "--" + field.name.replace("_", "-")) or cli.get("set_by")


def setting_names():
    """How a refusal names each setting: by its flag where the flag takes the value
    ("--epochs 8 (now 12)"), else by its settings.json key and the flag that sets it."""
    names = {}
    for field in dataclasses.fields(Recipe):
        cli = field.metadata["cli"]
        takes_value = "action" not in cli and "set_by" not in cli
        names[field.name] = flag_of(field) if takes_value else f"{field.name} ({flag_of(field)})"
    return names


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How every run of a grid trains and is evaluated: what makes two runs of a variant
    comparable. Each setting is defined here once, with its default; the CLI builds its flags
    from these fields (a field's cli_default, where the command line's differs: --precision
    auto resolves to this machine's policy before a Recipe holds it). Stored with each run as settings.json (field order = the report's settings table);
    a finished or interrupted run with another recipe is refused."""
    epochs: int = setting(32, "training epochs per run", type=positive_int)
    batch_size: int = setting(128, "images per step (the global batch, split between replicas)",
                              type=positive_int)
    subset: int | None = setting(None, "train on a stratified sample of N training images "
                                       "(validation from it)", type=positive_int, metavar="N")
    val_fraction: float = setting(0.1, "held-out validation share", type=float)
    precision: str = setting(  # stored resolved: "auto" never reaches settings.json
        "float32", "Keras dtype policy; auto: mixed_float16 on a GPU, mixed_bfloat16 on a CPU "
                   "with native bfloat16 (AMX or AVX512-BF16), else float32; a folder keeps the "
                   "precision of the runs already in it",
        cli_default="auto", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"])
    tta: bool = setting(True, "no horizontal-flip averaging at test time",
                        flag="--no-tta", action="store_false")
    # the recipe's factor on both peaks; a run's own point on the --lr-scales axis is its
    # lr_multiplier (runs before 2026-12-07 stored this as lr_scale: run_store.settings_of)
    peak_lr_factor: float = setting(1.0, "multiply both peak learning rates (before the "
                                         "--lr-scales axis)", type=float, metavar="F")
    # batch and peaks x replicas (linear scaling rule)
    replica_scaling: int = setting(1, "", flag=None, set_by="--scale-with-replicas")
    # Keras' default momentum; only shapes training once statistics are recomputed
    bn_momentum: float = setting(0.99, "batch norm's moving-average momentum during training",
                                 type=float)
    bn_stat_images: int = setting(2048, "before each validation, batch norm statistics are "
                                        "recomputed over N training images (0: keep the moving "
                                        "averages)", type=int, metavar="N")
    shift_images: int = setting(SPLIT_SIZES["test"], "test images (the first N) shifted for the "
                                "shift-robustness analysis; 6 passes over them cost ~20 s for "
                                "all 10,000 on 2 cores", type=positive_int, metavar="N")
    label_smoothing: float = setting(0.0, "train towards (1-E) on the true class and E/10 on "
                                          "every class", type=float, metavar="E", technique=True)
    ema: float = setting(0.0, "validate, checkpoint and test an exponential moving average of "
                              "the weights with momentum M per step (0: the weights themselves)",
                         type=float, metavar="M", technique=True)
    translate: int = setting(0, "shift training images by up to PX pixels at random (0: flips "
                                "only)", type=int, metavar="PX", technique=True)
    random_erasing: float = setting(0.0, "erase a random rectangle (2-33%% of the image, filled "
                                         "with noise) from each training image with probability "
                                         "P (Zhong et al. 2020: Keras' RandomErasing; 0: off)",
                                    type=float, metavar="P", technique=True)
    adamw_weight_decay: float = setting(1e-4, "AdamW's decoupled weight decay", type=float,
                                        metavar="WD")
    # The peaks as trained with (x --peak-lr-factor): 1.5x the common 4e-3 / 0.05, the one
    # technique of the 8-epoch ablation that helped both optimizers (benchmarks/README.md;
    # each default's date in docs/training.md). --tune-lr tunes each variant's peak around these.
    adam_peak_lr: float = setting(6e-3, "AdamW's peak learning rate (before --peak-lr-factor)",
                                  type=float, metavar="LR")
    sgd_peak_lr: float = setting(0.075, "SGD's peak learning rate (before --peak-lr-factor)",
                                 type=float, metavar="LR")
    warmup_epochs: float = setting(1, "epochs of linear warm-up from 0 before the cosine decay",
                                   type=float, metavar="E")
    sgd_momentum: float = setting(0.9, "SGD's (Nesterov) momentum", type=float, metavar="M")
    sgd_weight_decay: float = setting(5e-4, "SGD's decoupled weight decay", type=float,
                                      metavar="WD")
    test_images: int | None = setting(None, "evaluate on the first N test images only (a "
                                            "testing aid; default: all 10,000)",
                                      type=positive_int, metavar="N")
    # Fewer-epochs candidates (benchmarks/README.md, the 8-epoch ablation)
    dirac_init: bool = setting(False, "initialise conv2 and conv4 (32->32, 64->64 channels) as "
                                      "the identity (airbench's dirac init)",
                               action=argparse.BooleanOptionalAction, technique=True)
    bn_scale: bool = setting(True, "batch norm without its learned scale (frozen at 1, as in "
                                   "Page's fast ResNet training)", flag="--no-bn-scale",
                             action="store_false", technique=True)
    lookahead: int = setting(0, "Lookahead (Zhang et al. 2019): every K steps move slow weights "
                                "towards the fast ones and restart from them (0: off)",
                             type=int, metavar="K", technique=True)
    lookahead_alpha: float = setting(0.5, "Lookahead's step towards the fast weights",
                                     type=float, metavar="A", technique=True)
    alternating_flips: bool = setting(False, "flip each training image in every other epoch "
                                             "(which epochs at random per image) instead of at "
                                             "random in each",
                                      action=argparse.BooleanOptionalAction, technique=True)

    def __post_init__(self):
        """Settings that cannot work: ValueError with one line naming the flag."""
        checks = [
            (0 < self.val_fraction < 1, "--val-fraction must be between 0 and 1"),
            (self.subset is None or 10 * len(CLASS_NAMES) <= self.subset <= SPLIT_SIZES["train"],
             f"--subset must be between {10 * len(CLASS_NAMES)} and {SPLIT_SIZES['train']}"),
            (self.bn_stat_images >= 0, "--bn-stat-images must be 0 or more"),
            (0 < self.bn_momentum < 1, "--bn-momentum must be between 0 and 1"),
            (min(self.peak_lr_factor, self.adam_peak_lr, self.sgd_peak_lr) > 0,
             "--peak-lr-factor, --adam-peak-lr and --sgd-peak-lr must be positive"),
            (0 <= self.adamw_weight_decay < 1, "--adamw-weight-decay must be at least 0 and below 1"),
            (0 <= self.sgd_weight_decay < 1, "--sgd-weight-decay must be at least 0 and below 1"),
            (0 <= self.sgd_momentum < 1, "--sgd-momentum must be at least 0 and below 1"),
            (self.warmup_epochs >= 0, "--warmup-epochs must be 0 or more"),
            (0 <= self.label_smoothing < 1, "--label-smoothing must be at least 0 and below 1"),
            (0 <= self.ema < 1, "--ema must be at least 0 and below 1"),
            (0 <= self.translate <= 14, "--translate must be between 0 and 14 pixels"),
            (0 <= self.random_erasing <= 1, "--random-erasing must be between 0 and 1"),
            (self.lookahead >= 0, "--lookahead must be 0 or more steps"),
            (0 < self.lookahead_alpha <= 1, "--lookahead-alpha must be above 0 and at most 1"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError(problems[0])

    @classmethod
    def from_args(cls, args, replicas=1, precision=None):
        """The recipe the command line asks for on `replicas` devices: --scale-with-replicas and
        --lr-scale resolved here, once, for every caller; precision as resolved by the caller
        (grid_precision), else --precision on this machine."""
        derived = {"precision": precision or resolve_precision(args.precision)[0],
                   "replica_scaling": replicas if args.scale_with_replicas else 1,
                   **{peak: getattr(args, peak) * args.peak_lr_factor for peak in PEAKS}}
        chosen = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if f.name not in derived}
        return cls(**chosen, **derived)

    @property
    def global_batch(self):
        return self.batch_size * self.replica_scaling

    def peak_lr(self, optimizer):
        """The peak a step of the (replica-scaled) global batch trains with."""
        return getattr(self, f"{optimizer}_peak_lr") * self.replica_scaling


def recipe_for(recipe, variant):
    """The recipe one variant trains with: the grid's, with its setting factors' levels
    (`--factor epochs=8,32`) applied. A factor of the peak-learning-rate factor scales every
    optimizer's peak, as --peak-lr-factor does."""
    changes = variant.settings()
    if "peak_lr_factor" in changes:
        ratio = changes["peak_lr_factor"] / recipe.peak_lr_factor
        changes.update({peak: getattr(recipe, peak) * ratio for peak in PEAKS})
    return dataclasses.replace(recipe, **changes) if changes else recipe


# Every optimizer's peak: a field <level>_peak_lr per optimizer level (levels.LEVELS), which
# --peak-lr-factor scales.
PEAKS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name.endswith("_peak_lr"))

# --quick: the same outputs in minutes, in a folder of its own (a smoke check, not results)
QUICK = dict(subset=4000, epochs=3, batch_size=32, shift_images=2000)


def gpus():
    import tensorflow as tf  # here: only a run (or --precision auto) needs it
    return tf.config.list_physical_devices("GPU")


def resolve_precision(precision):
    """The dtype policy --precision asks for on this machine, and why."""
    if precision == "auto":
        return environment.auto_precision(len(gpus()), environment.cpu_flags())
    return precision, "--precision"


def grid_precision(requested, output_dir):
    """(policy, why) of the runs to train into output_dir. One folder is one experiment, in
    one precision: auto keeps the precision of the runs already there (a grid resumed on a
    machine where auto would resolve otherwise), and another explicit precision is refused."""
    found = run_store.folder_precisions(output_dir)
    if len(found) > 1:
        raise UsageError(f"{output_dir} holds runs in {' and '.join(sorted(found))}: one folder, "
                         "one precision; move one set to another --output-dir")
    if requested == "auto" and found:
        return next(iter(found)), f"auto: kept from the runs already in {output_dir}"
    precision, why = resolve_precision(requested)
    if found and precision not in found:
        raise UsageError(f"{output_dir} holds runs in {next(iter(found))}; one folder, one "
                         f"precision: use --precision {next(iter(found))} (or auto), or another "
                         "--output-dir")
    return precision, why
