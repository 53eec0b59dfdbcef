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

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "matplotlib", "seaborn", "scipy")


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


def describe(tf, keras, strategy, precision, jit_compile):
    """The environment block of a run: where and how it trained."""
    gpus = gpu_names(tf)
    return {
        "backend": keras.backend.backend(),
        "device": ", ".join(gpus) if gpus else f"CPU: {cpu_model()} ({os.cpu_count()} cores)",
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpus": gpus,
        "replicas": strategy.num_replicas_in_sync, "precision": precision,
        "xla": bool(jit_compile), "platform": platform.platform(),
        "packages": package_versions(),
    }


def summary_line(environment):
    """'Keras tensorflow backend on CPU: ... (2 cores); float32, XLA off, 1 replica'."""
    e = environment
    return (f"{e['backend']} backend on {e['device']}; {e['precision']}, "
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
