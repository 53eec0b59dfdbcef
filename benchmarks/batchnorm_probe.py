"""Probe: forward + backward time of Keras batch norm vs the fused TF op vs a conv (see README)."""
import time, os
os.environ["TF_CPP_MIN_LOG_LEVEL"]="3"
import tensorflow as tf, keras
x = tf.random.normal((128, 28, 28, 32))
bn = keras.layers.BatchNormalization(); bn.build(x.shape)
conv = keras.layers.Conv2D(32, 3, padding="same", use_bias=False); conv.build(x.shape)
gamma = tf.Variable(tf.ones(32)); beta = tf.Variable(tf.zeros(32))
@tf.function
def keras_bn(x):
    with tf.GradientTape() as t:
        t.watch(x); y = bn(x, training=True); l = tf.reduce_sum(y * y)
    return t.gradient(l, [x] + bn.trainable_weights)
@tf.function
def fused_bn(x):
    with tf.GradientTape() as t:
        t.watch(x); y, m, v = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1e-3, is_training=True); l = tf.reduce_sum(y * y)
    return t.gradient(l, [x, gamma, beta])
@tf.function
def conv_fb(x):
    with tf.GradientTape() as t:
        t.watch(x); y = conv(x); l = tf.reduce_sum(y * y)
    return t.gradient(l, [x] + conv.trainable_weights)
@tf.function
def relu_fb(x):
    with tf.GradientTape() as t:
        t.watch(x); y = tf.nn.relu(x); l = tf.reduce_sum(y * y)
    return t.gradient(l, [x])
fns = {"keras_bn": keras_bn, "fused_bn": fused_bn, "conv3x3": conv_fb, "relu": relu_fb}
for f in fns.values(): f(x)
res = {k: [] for k in fns}
for r in range(5):
    for k, f in fns.items():
        t0 = time.perf_counter()
        for _ in range(10): out = f(x)
        _ = [o.numpy() for o in out]
        res[k].append((time.perf_counter() - t0) / 10 * 1000)
for k, v in res.items(): print(k, f"{sorted(v)[2]:.1f} ms")
