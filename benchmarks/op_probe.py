"""Where does the Keras/TensorFlow training step lose time? Forward + backward of each layer of
the project's CNN on its real shapes (batch 128), timed in TensorFlow (a tf.function with a
GradientTape, the way Keras' train step runs it) and, when installed, in PyTorch, interleaved
in one process; medians of repeated rounds. Also the whole step both ways.

    python -m benchmarks.op_probe                 # needs tensorflow; torch optional
    python -m benchmarks.op_probe --rounds 7 --reps 10

PyTorch is not a project dependency: install it in a scratch venv beside TensorFlow
(`pip install torch==2.13.0 tensorflow==2.21.0`) to get its column.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH = 128
# name, input (H, W, C), what: conv k/filters/stride, bn, relu, maxpool, dense units
OPS = [
    ("conv1 1->32 @28", (28, 28, 1), ("conv", 32, 1)),
    ("conv2 32->32 @28", (28, 28, 32), ("conv", 32, 1)),
    ("conv3 32->64 @14", (14, 14, 32), ("conv", 64, 1)),
    ("conv4 64->64 @14", (14, 14, 64), ("conv", 64, 1)),
    ("down1 strided 32 @28", (28, 28, 32), ("conv", 32, 2)),
    ("batchnorm 32 @28", (28, 28, 32), ("bn",)),
    ("batchnorm 64 @14", (14, 14, 64), ("bn",)),
    ("relu 32 @28", (28, 28, 32), ("relu",)),
    ("maxpool 32 @28", (28, 28, 32), ("maxpool",)),
    ("dense 1024->512", (1024,), ("dense", 512)),
]


def tf_op(shape, what):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((BATCH, *shape), dtype=np.float32))
    if what[0] == "conv":
        w = tf.Variable(rng.normal(size=(3, 3, shape[-1], what[1])).astype(np.float32))
        f = lambda x: tf.nn.conv2d(x, w, what[2], "SAME")  # noqa: E731
        variables = [w]
    elif what[0] == "bn":  # what Keras 3 does on TensorFlow: moments + batch_normalization
        g, b = tf.Variable(tf.ones(shape[-1])), tf.Variable(tf.zeros(shape[-1]))
        def f(x):
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            return tf.nn.batch_normalization(x, mean, var, b, g, 1e-3)
        variables = [g, b]
    elif what[0] == "relu":
        f, variables = tf.nn.relu, []
    elif what[0] == "maxpool":
        f, variables = (lambda x: tf.nn.max_pool2d(x, 2, 2, "SAME")), []
    else:
        w = tf.Variable(rng.normal(size=(shape[-1], what[1])).astype(np.float32))
        f, variables = (lambda x: tf.matmul(x, w)), [w]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *variables])

    return lambda: [g.numpy() for g in step()]


def torch_op(shape, what):
    import torch
    rng = np.random.default_rng(0)
    if len(shape) == 3:  # NCHW, channels_last memory (PyTorch's fast CPU layout)
        x = torch.tensor(rng.random((BATCH, *shape), dtype=np.float32)).permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = torch.tensor(rng.random((BATCH, *shape), dtype=np.float32))
    x.requires_grad_(True)
    if what[0] == "conv":
        m = torch.nn.Conv2d(shape[-1], what[1], 3, stride=what[2], padding=1, bias=False)
        m = m.to(memory_format=torch.channels_last)
    elif what[0] == "bn":
        m = torch.nn.BatchNorm2d(shape[-1])
    elif what[0] == "relu":
        m = torch.nn.ReLU()
    elif what[0] == "maxpool":
        m = torch.nn.MaxPool2d(2)
    else:
        m = torch.nn.Linear(shape[-1], what[1], bias=False)

    def step():
        x.grad = None
        m.zero_grad(set_to_none=True)
        y = m(x)
        (y * y).sum().backward()
    return step


def timed(fn, reps):
    fn()  # warm-up / tracing
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args()
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = None
        print("torch not installed: TensorFlow column only")
    fns = {}
    for name, shape, what in OPS:
        fns[(name, "tf")] = tf_op(shape, what)
        if torch:
            fns[(name, "torch")] = torch_op(shape, what)
    times = {k: [] for k in fns}
    for r in range(args.rounds):
        for key, fn in fns.items():
            times[key].append(timed(fn, args.reps))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\nforward + backward, batch {BATCH}, ms (median of {args.rounds} rounds of {args.reps})")
    print("| op | TensorFlow | PyTorch (channels_last) | TF / PyTorch |\n|---|---:|---:|---:|")
    for name, _, _ in OPS:
        t = statistics.median(times[(name, "tf")])
        if torch:
            q = statistics.median(times[(name, "torch")])
            print(f"| {name} | {t:.1f} | {q:.1f} | {t / q:.2f} |")
        else:
            print(f"| {name} | {t:.1f} | | |")


if __name__ == "__main__":
    main()
