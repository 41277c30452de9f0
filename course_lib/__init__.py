"""Course library for "Generative models: latent spaces and variational autoencoders".

Importing it selects the torch backend for Keras, so import it before keras.
"""

from course_lib.backend import ensure_torch_backend

ensure_torch_backend()

from course_lib.backend import describe_device, device_info, device_name, set_seed  # noqa: E402
from course_lib.profiles import active_profile, settings  # noqa: E402

__all__ = [
    "active_profile",
    "describe_device",
    "device_info",
    "device_name",
    "ensure_torch_backend",
    "set_seed",
    "settings",
]
