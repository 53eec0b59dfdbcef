"""Figures drawn only when what they show changed.

A plot function decorated with drawn_only_when_changed writes its PNG with a digest of its
arguments and of the plotting module's source in the PNG's metadata; called again with the
same data by the same code, it returns at once. save_figure writes atomically.
"""

import contextvars
import functools
import hashlib
import inspect
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen needed; must come before pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fmlab.store.run_store import temp_file_beside  # noqa: E402

DPI = 130
DIGEST_KEY = "Lab figure digest"  # PNG text chunk
_drawing = contextvars.ContextVar("digest of the figure being drawn", default=None)


def digest(value, h=None):
    """A SHA-256 over nested dicts, lists, tuples, arrays and scalars (arrays by their bytes,
    not their truncated repr)."""
    h = h or hashlib.sha256()
    if isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=str):
            digest(key, h)
            digest(value[key], h)
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            digest(item, h)
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    else:
        h.update(repr(value).encode())
    h.update(b";")
    return h


def drawn_only_when_changed(plot):
    """Decorator for a plot function with a `path` argument: skip drawing when the PNG at path
    was drawn from the same data by the same code."""
    signature = inspect.signature(plot)
    code = Path(inspect.getfile(plot)).read_bytes()  # a change to the plotting module redraws

    @functools.wraps(plot)
    def draw(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        path = Path(bound.arguments["path"])
        key = digest({k: v for k, v in bound.arguments.items() if k != "path"},
                     hashlib.sha256(code)).hexdigest()
        if path.exists():
            from PIL import Image  # matplotlib's own dependency

            with Image.open(path) as png:
                if png.text.get(DIGEST_KEY) == key:
                    return path
        token = _drawing.set(key)
        try:
            return plot(*args, **kwargs)
        finally:
            _drawing.reset(token)

    return draw


def save_figure(fig, path):
    """Write a figure atomically (temp file + rename) and free it."""
    path = Path(path)
    fd, tmp = temp_file_beside(path, f".{path.stem}.", ".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=DPI, metadata={DIGEST_KEY: _drawing.get()} if _drawing.get() else None)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
