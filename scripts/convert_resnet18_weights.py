"""Converts torchvision's ImageNet ResNet18 weights to a Keras `.weights.h5` file.

A one-time step for the instructor, on a machine with internet access (the course
machines have none): the result is loaded with
`course_lib.resnet.build_resnet18(weights="resnet18_imagenet.weights.h5")` or
`build_mnist_resnet18(image_size, weights=...)`.

Usage:

    # Downloads torchvision's IMAGENET1K_V1 weights (needs torchvision + internet):
    python scripts/convert_resnet18_weights.py

    # From a state dict saved with torch.save (no torchvision needed), e.g. the file
    # torchvision caches as ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth:
    python scripts/convert_resnet18_weights.py --state-dict resnet18-f37072fd.pth

    # Options: --output PATH (default resnet18_imagenet.weights.h5), --npz PATH to
    # also write the torch-named arrays as .npz.

The script prints the output file's size and SHA-256; record the checksum where
the weights file is distributed.
"""

import argparse
import hashlib
import os
import pathlib
import sys

# Run from a checkout without installing the package: make course_lib importable.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import course_lib  # noqa: E402,F401  (selects the torch backend before keras is imported)
import numpy as np  # noqa: E402

from course_lib.resnet import build_resnet18, load_torch_state_dict  # noqa: E402

DEFAULT_OUTPUT = "resnet18_imagenet.weights.h5"
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"
KERAS_WEIGHTS_SUFFIX = ".weights.h5"
CHECKPOINT_KEYS = ("state_dict", "model")
HASH_CHUNK_BYTES = 1 << 20


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--state-dict",
        metavar="PATH",
        help="a .pth file holding a torchvision resnet18 state_dict (saved with "
        "torch.save). Without it, torchvision downloads IMAGENET1K_V1.",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        default=DEFAULT_OUTPUT,
        help=f"Keras weights file to write (must end in {KERAS_WEIGHTS_SUFFIX}); "
        f"default: {DEFAULT_OUTPUT}",
    )
    parser.add_argument(
        "--npz", metavar="PATH", help="also write the torch-named arrays to this .npz file"
    )
    arguments = parser.parse_args(argv)
    if not arguments.output.endswith(KERAS_WEIGHTS_SUFFIX):
        parser.error(f"--output must end in {KERAS_WEIGHTS_SUFFIX}. Received: {arguments.output}")
    if arguments.npz is not None and not arguments.npz.endswith(".npz"):
        parser.error(f"--npz must end in .npz. Received: {arguments.npz}")
    return arguments


def torchvision_state_dict():
    """Returns torchvision's pretrained resnet18 state dict (downloads it once)."""
    try:
        from torchvision.models import resnet18
    except ImportError as error:
        raise SystemExit(
            "torchvision is not installed. Install it on a networked machine, or pass "
            "--state-dict PATH with a saved resnet18 state_dict."
        ) from error
    return resnet18(weights=TORCHVISION_WEIGHTS).state_dict()


def file_state_dict(path):
    """Reads a state dict saved with `torch.save` (a plain dict of tensors, or a
    checkpoint dict holding one under "state_dict" or "model")."""
    import torch

    if not os.path.isfile(path):
        raise SystemExit(f"State dict file not found: {path}")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for key in CHECKPOINT_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise SystemExit(
            f"{path} does not hold a state dict (a dict of tensors). "
            f"Received an object of type {type(loaded).__name__}."
        )
    return loaded


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_numpy_arrays(state_dict):
    """Torch-named float arrays, without BN's `num_batches_tracked` counters."""
    return {
        key: value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        for key, value in state_dict.items()
        if not key.endswith(".num_batches_tracked")
    }


def main(argv=None):
    """Runs the conversion; returns the path of the written `.weights.h5` file."""
    arguments = parse_arguments(argv)
    if arguments.state_dict:
        print(f"Reading the state dict from {arguments.state_dict}")
        state_dict = file_state_dict(arguments.state_dict)
    else:
        print(f"Loading torchvision resnet18(weights={TORCHVISION_WEIGHTS!r})")
        state_dict = torchvision_state_dict()
    model = build_resnet18(verbose=False)
    loaded = load_torch_state_dict(model, state_dict)
    print(f"Mapped {loaded} arrays onto the Keras ResNet18 ({model.count_params():,} values).")
    model.save_weights(arguments.output)
    print(
        f"Wrote {arguments.output} ({os.path.getsize(arguments.output):,} bytes), "
        f"sha256 {sha256_of(arguments.output)}"
    )
    if arguments.npz:
        np.savez(arguments.npz, **to_numpy_arrays(state_dict))
        print(f"Wrote {arguments.npz}, sha256 {sha256_of(arguments.npz)}")
    return arguments.output


if __name__ == "__main__":
    main(sys.argv[1:])
