"""Pretrains the course's ResNet18 on CIFAR-10: an offline backbone for lab 2, and what it is worth.

The course machines cannot download torchvision's ImageNet weights. This script makes
pretrained weights offline, from CIFAR-10's 50,000 natural training images (on disk). The
network is torchvision's ResNet18 (tests/torch_resnet18.py, the reference that
`course_lib.resnet.load_torch_state_dict` is tested against), trained in plain PyTorch
because it steps about twice as fast there as the Keras model on a CPU (BENCHMARKS.md);
its state dict is the `.npz` of torchvision-named arrays that `build_resnet18(weights=...)`
loads (lab 2: `RESNET18_WEIGHTS=path/to/file.npz`). Inputs are what lab 2 feeds the
backbone: RGB in [0, 1], normalized with ImageNet's mean and std, at LAB2_IMAGE_SIZE pixels.

Recipe (named constants below): SGD with Nesterov momentum, cosine learning rate after a
one-epoch warm-up, weight decay, label smoothing; random crops (4-pixel zero padding),
horizontal flips and, since the lab's digits are grey, a quarter of the images turned
grey. The BN moving statistics are kept as training left them (re-estimating them on
un-augmented training images lowered the exact-test accuracy from 85.2% to 82.4%).

Measured (seed 0, 16 epochs, 2,428 s on one thread of this 2-core CPU): 85.2% on the 1,000
exact CIFAR-10 test images, 82.2% on all 10,000. On MNIST digits at 32x32 its pooled
fourth-stage features are *not* better than a random ResNet18's: a linear head on 50 / 100 /
300 / 1,000 digits reaches 55.6 / 64.1 / 77.1 / 86.2% with them and 66-68 / 71 / 81-84 /
89-90% with random ones (2 random seeds); on the third stage's, 95.1% against 88.9%. So lab 2
ships and loads the stem and stages 1-3 only (LAB2_STAGES, from the lab's profile).

Output: `build/pretrain_resnet18/resnet18_cifar10.npz` (the whole network; convolution and
dense arrays in float16, BN arrays in float32: a running variance can exceed float16's range;
20.4 MB), lab 2's `resnet18_cifar10_stages3.npz` beside it (5.1 MB; copy it and its `.json`
into `course_lib/weights/` to ship it), each with a `.json` recording the recipe, the
accuracies, the wall time and the SHA-256.

Usage:

    python scripts/pretrain_resnet18_cifar10.py                 # 16 epochs, ~40 min on 1 thread
    python scripts/pretrain_resnet18_cifar10.py --epochs 1 --train-limit 512 \\
        --output /tmp/tiny.npz                                  # a smoke run
    python scripts/pretrain_resnet18_cifar10.py --resume        # after an interruption
    python scripts/pretrain_resnet18_cifar10.py --export-from build/pretrain_resnet18/resnet18_cifar10.npz \\
        --lab-output course_lib/weights/resnet18_cifar10_stages3.npz   # lab 2's file, no training
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional  # noqa: E402

from benchmarks.torch_models import IMAGENET_MEAN, IMAGENET_STD, load_torch_resnet18_module  # noqa: E402
from autograder.evaluators import file_sha256  # noqa: E402
from course_lib.data import load_cifar10  # noqa: E402
from course_lib.profiles import PROFILES  # noqa: E402
from course_lib.resnet import CIFAR10_WEIGHTS, IGNORED_TORCH_SUFFIX, keep_stages  # noqa: E402

SEED = 0
EPOCHS = 16
BATCH_SIZE = 128
PEAK_LEARNING_RATE = 0.05
WARMUP_EPOCHS = 1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.1
CROP_PADDING = 4
FLIP_PROBABILITY = 0.5
GREY_PROBABILITY = 0.25
LAB2_IMAGE_SIZE = 32
EVAL_BATCH_SIZE = 500
CIFAR10_CLASSES = 10
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's "L" conversion
FLOAT16_MAX = float(np.finfo(np.float16).max)
DEFAULT_OUTPUT = ROOT / "build" / "pretrain_resnet18" / "resnet18_cifar10.npz"
CHECKPOINT = ROOT / "build" / "pretrain_resnet18" / "checkpoint.pt"
# What lab 2 ships and loads by default: the stages its backbone keeps (the same in every
# profile, checked in main), from the whole network's arrays.
LAB2_STAGES = PROFILES["fast"]["lab2"]["backbone_stages"]
_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--train-limit", type=int, default=None, help="first N training images (smoke runs)"
    )
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--checkpoint", type=pathlib.Path, default=CHECKPOINT)
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument(
        "--lab-output", type=pathlib.Path, default=None,
        help=f"lab 2's file (the first {LAB2_STAGES} stages); default: beside --output, "
        f"named like the shipped {CIFAR10_WEIGHTS.name} (copy it there to ship it)",
    )
    parser.add_argument(
        "--export-from", type=pathlib.Path, default=None,
        help="no training: write --lab-output from this earlier output (.npz with its .json)",
    )
    arguments = parser.parse_args(argv)
    for name in ("epochs", "threads"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name} must be >= 1. Received: {getattr(arguments, name)}")
    if arguments.lab_output is None:
        arguments.lab_output = arguments.output.parent / CIFAR10_WEIGHTS.name
    for name in ("output", "lab_output"):
        if not str(getattr(arguments, name)).endswith(".npz"):
            parser.error(f"--{name.replace('_', '-')} must end in .npz. Received: {getattr(arguments, name)}")
    source = arguments.export_from
    if source is not None and not (source.is_file() and source.with_suffix(".json").is_file()):
        parser.error(f"--export-from needs an .npz and its .json record beside it. Received: {source}")
    return arguments


def to_nchw(images):
    """(N, H, W, 3) float [0, 1] numpy -> (N, 3, H, W) torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def normalize(images):
    """ImageNet normalization, as `course_lib.image_layers.ImageNetNormalization`."""
    return (images - _MEAN) / _STD


def augment(images, generator):
    """Random 4-pixel-padded crops, horizontal flips and grey images, per example."""
    count, _, height, width = images.shape
    padded = functional.pad(images, (CROP_PADDING,) * 4)
    offsets = torch.randint(0, 2 * CROP_PADDING + 1, (count, 2), generator=generator)
    crops = torch.stack(
        [padded[i, :, top : top + height, left : left + width] for i, (top, left) in enumerate(offsets.tolist())]
    )
    flips = torch.rand(count, generator=generator) < FLIP_PROBABILITY
    crops[flips] = crops[flips].flip(3)
    greys = torch.rand(count, generator=generator) < GREY_PROBABILITY
    luma = (crops[greys] * torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    crops[greys] = luma.expand(-1, 3, -1, -1)
    return crops


def learning_rate(step, steps_per_epoch, epochs):
    """Linear warm-up for WARMUP_EPOCHS, then cosine decay to 0."""
    warmup = WARMUP_EPOCHS * steps_per_epoch
    if step < warmup:
        return PEAK_LEARNING_RATE * (step + 1) / warmup
    progress = (step - warmup) / max(1, epochs * steps_per_epoch - warmup)
    return 0.5 * PEAK_LEARNING_RATE * (1.0 + math.cos(math.pi * progress))


def accuracy(model, images, labels):
    """Top-1 accuracy of `model` (inference mode) on NCHW images in [0, 1]."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH_SIZE):
            logits = model(normalize(images[start : start + EVAL_BATCH_SIZE]))
            correct += int((logits.argmax(1) == labels[start : start + EVAL_BATCH_SIZE]).sum())
    return correct / len(images)


def state_dict_arrays(model):
    """The state dict as numpy: BN arrays float32, the others float16 (checked in range)."""
    arrays = {}
    batch_norm_prefixes = {
        name for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)
    }
    for key, tensor in model.state_dict().items():
        if key.endswith(IGNORED_TORCH_SUFFIX):
            continue
        array = tensor.detach().cpu().numpy()
        if key.rsplit(".", 1)[0] in batch_norm_prefixes:
            arrays[key] = array.astype(np.float32)
            continue
        if np.abs(array).max() > FLOAT16_MAX:
            raise ValueError(f"{key} exceeds float16's range (max |value| {np.abs(array).max()})")
        arrays[key] = array.astype(np.float16)
    return arrays


def train(arguments, x_exact, y_exact):
    """Trains (or resumes) the network; checks it on `x_exact, y_exact` after every epoch."""
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(arguments.seed)
    generator = torch.Generator().manual_seed(arguments.seed)
    x_train, y_train = load_cifar10("train", limit=arguments.train_limit)
    x_train, y_train = to_nchw(x_train), torch.from_numpy(y_train)
    model = load_torch_resnet18_module().ResNet18(num_classes=CIFAR10_CLASSES)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=PEAK_LEARNING_RATE, momentum=MOMENTUM,
        nesterov=True, weight_decay=WEIGHT_DECAY,
    )
    steps_per_epoch = math.ceil(len(x_train) / BATCH_SIZE)
    start_epoch, elapsed, history = 0, 0.0, []
    if arguments.resume and arguments.checkpoint.is_file():
        state = torch.load(arguments.checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_epoch, elapsed, history = state["epoch"], state["elapsed"], state["history"]
        print(f"resumed after epoch {start_epoch} ({elapsed:.0f} s so far)", flush=True)
    for epoch in range(start_epoch, arguments.epochs):
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            index = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(epoch * steps_per_epoch + step, steps_per_epoch, arguments.epochs)
            logits = model(normalize(augment(x_train[index], generator)))
            loss = functional.cross_entropy(logits, y_train[index], label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        elapsed += time.perf_counter() - began
        exact = accuracy(model, x_exact, y_exact)
        history.append({"epoch": epoch + 1, "loss": total_loss / steps_per_epoch, "exact_accuracy": exact})
        print(f"epoch {epoch + 1}/{arguments.epochs}: loss {total_loss / steps_per_epoch:.3f}, "
              f"exact-test accuracy {exact:.1%}, {elapsed:.0f} s", flush=True)
        arguments.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "epoch": epoch + 1,
                    "elapsed": elapsed, "history": history}, arguments.checkpoint)
    return model, x_train, elapsed, history


def write_lab_weights(arrays, record, path):
    """Writes lab 2's weights (the first LAB2_STAGES stages) and their record beside them.

    Args:
        arrays: the whole network's torchvision-named arrays.
        record: the whole network's record (recipe, accuracies); the file's own size,
            SHA-256, kept stages and source are added.
        path: the `.npz` to write.

    Returns:
        The record written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **keep_stages(arrays, LAB2_STAGES))
    lab_record = dict(record, stages=LAB2_STAGES, source={"sha256": record["sha256"], "bytes": record["bytes"]},
                      sha256=file_sha256(path), bytes=os.path.getsize(path))
    path.with_suffix(".json").write_text(json.dumps(lab_record, indent=2) + "\n")
    print(f"wrote {path} (stages 1-{LAB2_STAGES}, {lab_record['bytes'] / 1e6:.1f} MB)")
    return lab_record


def export(source, path):
    """Writes lab 2's file from an earlier run's `.npz` and `.json` (no training)."""
    with np.load(source, allow_pickle=False) as file:
        arrays = {key: file[key] for key in file.files}
    return write_lab_weights(arrays, json.loads(source.with_suffix(".json").read_text()), path)


def main(argv=None):
    arguments = parse_arguments(argv)
    stages = {name: profile["lab2"]["backbone_stages"] for name, profile in PROFILES.items()}
    if set(stages.values()) != {LAB2_STAGES}:
        raise SystemExit(f"lab 2's profiles keep different backbone stages ({stages}): one file cannot serve them")
    if arguments.export_from is not None:
        export(arguments.export_from, arguments.lab_output)
        return
    x_exact, y_exact = load_cifar10("test", exact_only=True)
    x_exact, y_exact = to_nchw(x_exact), torch.from_numpy(y_exact)
    model, x_train, elapsed, history = train(arguments, x_exact, y_exact)
    x_all, y_all = load_cifar10("test")
    exact = accuracy(model, x_exact, y_exact)
    overall = accuracy(model, to_nchw(x_all), torch.from_numpy(y_all))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arrays = state_dict_arrays(model)
    np.savez_compressed(arguments.output, **arrays)
    record = {
        "network": "torchvision resnet18 (tests/torch_resnet18.py), 10-class fc",
        "input": f"RGB {LAB2_IMAGE_SIZE}x{LAB2_IMAGE_SIZE} in [0, 1], ImageNet mean/std",
        "data": f"CIFAR-10 train, {len(x_train)} images",
        "recipe": {"seed": arguments.seed, "epochs": arguments.epochs, "batch_size": BATCH_SIZE,
                   "optimizer": f"SGD nesterov momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}",
                   "learning_rate": f"{PEAK_LEARNING_RATE}, {WARMUP_EPOCHS}-epoch warm-up, cosine",
                   "label_smoothing": LABEL_SMOOTHING,
                   "augmentation": f"crop (pad {CROP_PADDING}), flip p={FLIP_PROBABILITY}, grey p={GREY_PROBABILITY}",
                   "bn_statistics": "the moving averages of training (momentum 0.1)"},
        "accuracy_exact_test": exact,
        "exact_test_images": len(x_exact),
        "accuracy_all_test": overall,
        "train_seconds": round(elapsed, 1),
        "threads": arguments.threads,
        "torch": torch.__version__,
        "history": history,
        "sha256": file_sha256(arguments.output),
        "bytes": os.path.getsize(arguments.output),
    }
    arguments.output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    write_lab_weights(arrays, record, arguments.lab_output)
    print(f"wrote {arguments.output} ({record['bytes'] / 1e6:.1f} MB, sha256 {record['sha256']}): "
          f"{exact:.1%} on the {len(x_exact)} exact test images, {overall:.1%} on all {len(x_all)}")


if __name__ == "__main__":
    main()
