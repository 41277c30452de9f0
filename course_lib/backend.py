"""Keras backend selection, device report and seeding.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, and otherwise falls
back to ``~/.keras/keras.json`` (TensorFlow by default). The course runs on the torch
backend everywhere, so this module sets the variable before anything imports keras.
"""

import os
import platform
import random
import sys

REQUIRED_BACKEND = "torch"
BACKEND_ENV_VAR = "KERAS_BACKEND"


def ensure_torch_backend():
    """Make Keras use the torch backend.

    Must run before ``keras`` is imported for the first time in the process.

    Returns:
        The backend name, ``"torch"``.

    Raises:
        RuntimeError: if ``KERAS_BACKEND`` names another backend, or keras was
            already imported with another backend.
    """
    requested = os.environ.get(BACKEND_ENV_VAR)
    if requested not in (None, "", REQUIRED_BACKEND):
        raise RuntimeError(
            f"This course runs Keras on the '{REQUIRED_BACKEND}' backend, but the "
            f"environment sets {BACKEND_ENV_VAR}={requested!r}. Unset it or set "
            f"{BACKEND_ENV_VAR}={REQUIRED_BACKEND}, then restart the kernel."
        )
    os.environ[BACKEND_ENV_VAR] = REQUIRED_BACKEND
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != REQUIRED_BACKEND:
            raise RuntimeError(
                f"keras was imported before course_lib and is using the '{active}' "
                f"backend. Restart the kernel and import course_lib before keras "
                f"(expected backend: '{REQUIRED_BACKEND}')."
            )
    return REQUIRED_BACKEND


def device_name():
    """Returns the name of the device training runs on: the CUDA GPU's name, or "CPU"."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "CPU"


def device_info():
    """Describes the device and the versions that matter for reproducing a run.

    Returns:
        A dict with keys ``device``, ``cuda``, ``python``, ``keras``, ``torch``,
        ``backend``, ``threads`` and ``platform``.
    """
    import keras
    import torch

    return {
        "device": device_name(),
        "cuda": bool(torch.cuda.is_available()),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "torch": torch.__version__,
        "backend": keras.backend.backend(),
        "threads": torch.get_num_threads(),
        "platform": platform.platform(terse=True),
    }


def describe_device():
    """Returns `device_info()` as one line, for the top of every notebook."""
    info = device_info()
    return (
        f"device={info['device']} | python {info['python']} | keras {info['keras']} "
        f"({info['backend']} backend) | torch {info['torch']} | threads={info['threads']}"
    )


def set_seed(seed):
    """Seeds python, numpy, torch and keras so that a run repeats.

    Args:
        seed: a non-negative integer.

    Returns:
        The seed.

    Raises:
        ValueError: if ``seed`` is not a non-negative integer.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    import keras
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    _reset_keras_seed_generator(keras, seed)
    return seed


def _reset_keras_seed_generator(keras, seed):
    """Resets Keras' global SeedGenerator (used by `keras.random` without a seed).

    `keras.utils.set_random_seed` does this too, but it also imports TensorFlow when it
    is installed (several seconds and ~1 GB per kernel, for a framework the course
    does not run), so the two global attributes it sets are set here directly.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils import rng_utils
    except ImportError:  # A Keras without these internals: accept its TensorFlow import.
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
