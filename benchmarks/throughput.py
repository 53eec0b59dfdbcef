"""Training throughput: the project's training step against a plain tutorial-style reference.

Both train the same architecture (one variant, default CNN_ReLU_MaxPool_Adam) on the same
images in the same process. The reference is how a tutorial does it: `model.fit` on
in-memory numpy arrays, batch size 64, float32, Adam 1e-3, no schedule. "project" is
the runner's own pipeline: tf.data (cache, shuffle, flip, prefetch), its batch size,
optimizer with schedule, and precision. Configurations are measured interleaved and
repeated (the machine is shared and noisy); the median images/s of each and the ratio
to the reference are printed, plus achieved GFLOP/s from the model's counted FLOPs.

    python benchmarks/throughput.py                        # default comparison
    python benchmarks/throughput.py --configs reference project:128:float32 project:256:mixed_bfloat16
    python benchmarks/throughput.py --repeats 5 --steps 60
    python benchmarks/throughput.py --configs reference project:128:float32 project:128:float32:xla
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fashion_mnist_cnn as fm  # noqa: E402
import keras  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Wall time of each epoch; the first epoch (tracing, cache filling) is not counted."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def training_flops_per_image(model):
    """Forward multiply-adds of conv and dense layers x 2 (FLOPs) x 3 (forward + 2 backward)."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k_h, k_w = layer.kernel_size
            flops += 2 * h * w * c_out * k_h * k_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return 3 * flops


def measure(config, variant, x, y, steps, epochs):
    """Images per second of one configuration, over `epochs` timed epochs of `steps` steps."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    if config == "reference":
        keras.mixed_precision.set_dtype_policy("float32")
        batch_size = 64
        n = steps * batch_size
        model = fm.build_model(variant)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=False)
        timer = StepTimer()
        model.fit(x[:n], y[:n], batch_size=batch_size, epochs=epochs + 1, verbose=0, callbacks=[timer])
    else:
        _, batch_size, precision, *xla = config.split(":")
        batch_size = int(batch_size)
        keras.mixed_precision.set_dtype_policy(precision)
        n = steps * batch_size
        model = fm.build_model(variant)
        model.compile(optimizer=fm.make_optimizer(variant, steps, epochs + 1),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=xla == ["xla"])  # Keras' "auto" means no XLA on a CPU
        timer = StepTimer()
        dataset = fm.make_dataset(x[:n], y[:n], batch_size, training=True, seed=0)
        model.fit(dataset, epochs=epochs + 1, verbose=0, callbacks=[timer])
    keras.mixed_precision.set_dtype_policy("float32")
    return n * epochs / sum(timer.seconds[1:]), training_flops_per_image(model)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+",
                   default=["reference", "project:128:float32", "project:128:mixed_bfloat16",
                            "project:256:float32"],
                   help="'reference' or project:BATCH:PRECISION[:xla]")
    p.add_argument("--variant", default="relu,maxpool,adam", help="activation,downsampling,optimizer")
    p.add_argument("--steps", type=int, default=40, help="steps per timed epoch")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over all configs")
    p.add_argument("--peak-gflops", type=float, default=190.0,
                   help="the CPU's float32 peak, for the utilisation column (2 cores here: ~190)")
    args = p.parse_args()
    variant = fm.Variant(*args.variant.split(","))
    data = fm.prepare_data(None, None, 0.1, seed=0)
    x, y = data["train"]
    images_per_s = {c: [] for c in args.configs}
    flops = None
    for round_ in range(args.repeats):
        for config in args.configs:
            ips, flops = measure(config, variant, x, y, args.steps, args.epochs)
            images_per_s[config].append(ips)
            print(f"round {round_ + 1}: {config:28} {ips:7.0f} images/s", flush=True)
    reference = statistics.median(images_per_s[args.configs[0]])
    print(f"\n{variant} training FLOPs per image: {flops / 1e6:.0f} M "
          f"(conv + dense, forward and backward)")
    print(f"{'config':28} {'images/s':>9} {'ratio':>6} {'GFLOP/s':>8} {'% of peak':>9} {'epoch (54k)':>11}")
    for config, values in images_per_s.items():
        ips = statistics.median(values)
        print(f"{config:28} {ips:9.0f} {ips / reference:6.2f} {ips * flops / 1e9:8.1f} "
              f"{100 * ips * flops / 1e9 / args.peak_gflops:8.0f}% {54000 / ips:10.0f}s")
    print(f"(ratio: against {args.configs[0]}; median of {args.repeats} interleaved rounds)")


if __name__ == "__main__":
    main()
