"""What a run ran on: backend, devices, precision, XLA, replicas and package versions.

Printed as one line when the runner starts and stored in every run's metrics.json, so a
results folder says where its numbers came from. No training here, and no TensorFlow import:
the runner imports it (inside native_stderr_silenced) before calling these functions.
"""

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "matplotlib", "seaborn", "scipy",
            "statsmodels")


def cpu_model():
    """The CPU's model name (Linux /proc/cpuinfo, else platform), e.g. 'Intel(R) Xeon(R) ...'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# x86 CPU flags of native bfloat16 math that oneDNN uses for Keras' mixed_bfloat16: Intel AMX
# (Sapphire Rapids and later) and AVX512-BF16 (Cooper Lake, AMD Zen 4 and later). Without
# them bfloat16 runs a software fallback, measured at 0.11x float32 (benchmarks/README.md).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags (Linux /proc/cpuinfo 'flags' line), empty where unknown."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_precision(gpu_count, flags):
    """(Keras dtype policy, why) for --precision auto: mixed_float16 on a GPU (tensor cores),
    mixed_bfloat16 on a CPU with native bfloat16 math, float32 on any other CPU."""
    if gpu_count:
        return "mixed_float16", "auto: a GPU"
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if native:
        return "mixed_bfloat16", f"auto: the CPU has native bfloat16 ({', '.join(native)})"
    return "float32", "auto: the CPU has no native bfloat16"


def slow_bfloat16_warning(precision, gpu_count, flags):
    """One line when a grid trains in mixed_bfloat16 on a CPU without native bfloat16 math
    (asked for, or kept from the folder's runs): a software fallback, ~10x slower."""
    if precision != "mixed_bfloat16" or gpu_count or any(f in flags for f in NATIVE_BF16_FLAGS):
        return None
    return ("warning: mixed_bfloat16 on a CPU without native bfloat16 (no amx_bf16 or "
            "avx512_bf16 flag): a software fallback, measured at 0.11x float32's speed")


def gpu_names(tf):
    """Names of the GPUs TensorFlow sees, e.g. ['NVIDIA H200']."""
    names = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return names


def package_versions(packages=PACKAGES):
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe(tf, keras, strategy, precision, jit_compile, precision_reason=""):
    """The environment block of a run: where and how it trained, and why in that precision."""
    gpus = gpu_names(tf)
    return {
        "backend": keras.backend.backend(),
        "device": ", ".join(gpus) if gpus else f"CPU: {cpu_model()} ({os.cpu_count()} cores)",
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpus": gpus,
        "replicas": strategy.num_replicas_in_sync, "precision": precision,
        "precision_reason": precision_reason,
        "xla": bool(jit_compile), "platform": platform.platform(),
        "packages": package_versions(),
    }


def summary_line(environment):
    """'tensorflow backend on CPU: ... (2 cores); float32 (auto: ...), XLA off, 1 replica(s)'."""
    e = environment
    why = f" ({e['precision_reason']})" if e.get("precision_reason") else ""
    return (f"{e['backend']} backend on {e['device']}; {e['precision']}{why}, "
            f"XLA {'on' if e['xla'] else 'off'}, {e['replicas']} replica(s)")


def gpu_mismatch_warning(tf_gpu_count, run=subprocess.run):
    """One line when nvidia-smi lists GPUs that TensorFlow does not see (plain `tensorflow`
    from PyPI has no CUDA libraries: TensorFlow falls back to the CPU without a word)."""
    if tf_gpu_count or not shutil.which("nvidia-smi"):
        return None
    try:
        listed = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = [line for line in listed.splitlines() if line.startswith("GPU ")]
    if not gpus:
        return None
    return (f"warning: nvidia-smi lists {len(gpus)} GPU(s) but TensorFlow sees none, so this "
            f"trains on the CPU; install the CUDA build with `make setup-gpu` "
            f"(requirements-gpu.txt: tensorflow[and-cuda])")


@contextlib.contextmanager
def native_stderr_silenced():
    """Mute file descriptor 2 for C++ code: TensorFlow's CUDA probing prints lines such as
    'Could not find cuda drivers' before any log level applies. Python errors still show."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
