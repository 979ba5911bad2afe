"""Import TensorFlow without its C++ start-up notes on our users' terminal.

TensorFlow 2.21 logs "oneDNN custom operations are on" through absl before its log level
(TF_CPP_MIN_LOG_LEVEL) is read, straight to file descriptor 2. The first import therefore
runs with fd 2 pointed at /dev/null; Python's own errors still surface as exceptions. It
also asks for oneDNN on every x86 CPU (below).
"""

from __future__ import annotations

import os
import sys
import threading

_lock = threading.Lock()
_done = False


def import_tensorflow() -> None:
    global _done
    if _done or "tensorflow" in sys.modules and "keras" in sys.modules:
        _done = True
        return
    with _lock:
        if _done:
            return
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        # TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 or newer; on an
        # AVX2-only one (measured here: AMD EPYC, AVX2 + FMA) its convolutions are ~2.3×
        # slower without it (musicnn: 119 against 52 ms a patch on one core). A user's
        # explicit TF_ENABLE_ONEDNN_OPTS=0 still wins.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        _done = True
