"""Import TensorFlow without its C++ start-up notes on our users' terminal.

TensorFlow 2.21 logs "oneDNN custom operations are on" through absl before its log level
(TF_CPP_MIN_LOG_LEVEL) is read, straight to file descriptor 2. The first import therefore
runs with fd 2 pointed at /dev/null; Python's own errors still surface as exceptions.
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
