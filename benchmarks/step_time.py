"""Training step time of the labs' Keras models against plain-PyTorch twins.

Both sides train the same architecture on the same batches (same batch size, same
thread count, same process), in interleaved rounds: after a warm-up round each, every
round times `steps` training steps of Keras and `steps` of torch, alternating which
goes first, so that a change of machine load hits both. A side's step time is the
median over the rounds; the ratio is keras / torch.

Keras variants ("how"):

- "fit": `model.fit(images, labels, batch_size, epochs=1)` on numpy arrays, as the
  notebooks do (one `fit` per round, so its per-call set-up is included).
- "fit_dataloader": `fit` on a `torch.utils.data.DataLoader` of a `TensorDataset`.
- "train_function": the compiled step `model.train_function` called on ready torch
  batches: Keras' per-step cost without `fit`'s loop, data adapter and callbacks.
- "jit": "fit" with `compile(jit_compile=True)` (torch.compile of the train step).

`lab1_student_cnn_bn` is an experiment, not a course model: lab 1's batch-normalized
CNN as the students write it (channels-last, `keras.layers.BatchNormalization`;
`keras_models.build_lab1_student_cnn_bn`), to measure what course_lib's channels-first
layout and fused BN save against the same layers in Keras' defaults.

The torch side draws shuffled batches by indexing NCHW tensors (one permutation per
round) and runs zero_grad / forward / loss / backward / Adam step, and sums the loss
(and the correct predictions) on the device, like Keras' metrics.
"""

import dataclasses
import resource
import statistics
import time

import numpy as np
import torch
from torch.nn import functional

import course_lib  # selects the torch backend before keras_models imports keras

from benchmarks import keras_models, torch_models

KERAS_VARIANTS = ("fit", "fit_dataloader", "train_function", "jit")
# Where the torch twin trains: the GPU when torch sees one, as Keras' torch backend does.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# "float32", or "mixed_bfloat16": Keras' global dtype policy, and torch.autocast in bf16 for the twin.
PRECISIONS = ("float32", "mixed_bfloat16")
DEFAULT_ROUNDS = 5
DEFAULT_SEED = 0
LAB1_SGD_MOMENTUM = course_lib.settings("lab1", "fast")["sgd_momentum"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One lab model: how to build both sides and what data a step eats.

    Attributes:
        name: short name used on the command line and in the table.
        lab: the notebook it comes from.
        batch_size: the fast profile's batch size.
        image_shape: `(height, width, channels)` of the images.
        classifier: True for models trained on (images, labels), False for VAEs.
        steps: training steps per timed round (a few dozen; fewer for big models).
        build_keras: `jit_compile -> compiled keras.Model`.
        build_torch: `() -> torch.nn.Module`.
        freeze_batch_norm: the torch twin keeps its BN layers in inference mode.
        sgd_momentum: None for Adam; else both sides train with SGD at this momentum (lab 1).
    """

    name: str
    lab: str
    batch_size: int
    image_shape: tuple
    classifier: bool
    steps: int
    build_keras: object
    build_torch: object
    freeze_batch_norm: bool = False
    sgd_momentum: float = None


def _lab2_torch():
    lab2 = course_lib.settings("lab2", "fast")
    return torch_models.MnistResNet18(lab2["image_size"], stages=lab2["backbone_stages"])


CASES = {
    case.name: case
    for case in (
        Case(
            "lab1_cnn", "lab1", course_lib.settings("lab1", "fast")["batch_size"],
            keras_models.CIFAR_SHAPE, True, 30,
            lambda jit: keras_models.build_lab1_cnn(False, jit),
            lambda: torch_models.CifarCNN(batch_norm=False), sgd_momentum=LAB1_SGD_MOMENTUM,
        ),
        Case(
            "lab1_cnn_bn", "lab1", course_lib.settings("lab1", "fast")["batch_size"],
            keras_models.CIFAR_SHAPE, True, 30,
            lambda jit: keras_models.build_lab1_cnn(True, jit),
            lambda: torch_models.CifarCNN(batch_norm=True), sgd_momentum=LAB1_SGD_MOMENTUM,
        ),
        Case(
            "lab1_student_cnn_bn", "lab1", course_lib.settings("lab1", "fast")["batch_size"],
            keras_models.CIFAR_SHAPE, True, 30,
            keras_models.build_lab1_student_cnn_bn,
            lambda: torch_models.CifarCNN(batch_norm=True), sgd_momentum=LAB1_SGD_MOMENTUM,
        ),
        Case(
            "lab2_resnet18", "lab2", course_lib.settings("lab2", "fast")["batch_size"],
            keras_models.MNIST_SHAPE, True, 6,
            keras_models.build_lab2_resnet, _lab2_torch, freeze_batch_norm=True,
        ),
        Case(
            "lab3_dense_vae", "lab3", course_lib.settings("lab3", "fast")["batch_size"],
            keras_models.MNIST_SHAPE, False, 40,
            keras_models.build_lab3_vae, torch_models.DenseVAE,
        ),
        Case(
            "lab4_conv_vae", "lab4", course_lib.settings("lab4", "fast")["batch_size"],
            keras_models.CIFAR_SHAPE, False, 20,
            keras_models.build_lab4_vae, torch_models.ConvVAE,
        ),
    )
}


def make_data(case, num_examples, seed=DEFAULT_SEED):
    """Random images in [0, 1] (NHWC float32) and int64 labels for `num_examples` examples."""
    rng = np.random.default_rng(seed)
    images = rng.random((num_examples, *case.image_shape), dtype=np.float32)
    labels = rng.integers(0, 10, size=num_examples).astype("int64")
    return images, labels


# ----------------------------------------------------------------------------------
# Keras side
# ----------------------------------------------------------------------------------


class KerasRunner:
    """Trains a compiled Keras model for one round, the way `how` says."""

    def __init__(self, case, how, images, labels):
        if how not in KERAS_VARIANTS:
            raise ValueError(f"`how` must be one of {KERAS_VARIANTS}. Received: how={how!r}")
        self.case = case
        self.how = how
        self.model = case.build_keras(how == "jit")
        self.images = images
        self.labels = labels if case.classifier else None
        self.batches = None
        self.loader = None
        if how == "fit_dataloader":
            tensors = [torch.from_numpy(images)]
            if case.classifier:
                tensors.append(torch.from_numpy(labels))
            dataset = torch.utils.data.TensorDataset(*tensors)
            self.loader = torch.utils.data.DataLoader(
                dataset, batch_size=case.batch_size, shuffle=True
            )

    def _fit(self):
        data = self.loader if self.loader is not None else self.images
        labels = None if self.loader is not None else self.labels
        batch_size = None if self.loader is not None else self.case.batch_size
        # A DataLoader shuffles by itself (Keras warns if asked to).
        shuffle = self.loader is None
        self.model.fit(data, labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=shuffle)

    def _torch_batches(self):
        batches = []
        for start in range(0, len(self.images), self.case.batch_size):
            images = torch.from_numpy(self.images[start : start + self.case.batch_size])
            if self.case.classifier:
                labels = torch.from_numpy(self.labels[start : start + self.case.batch_size])
                batches.append((images, labels))
            else:
                batches.append((images,))
        return batches

    def run(self):
        """Trains `case.steps` steps."""
        if self.how != "train_function" or self.batches is None:
            # The first round of "train_function" goes through fit(), which builds
            # the model, its optimizer and its compiled step.
            self._fit()
            if self.how == "train_function":
                self.batches = self._torch_batches()
            return
        self.model.train()
        logs = None
        for batch in self.batches:
            logs = self.model.train_function([batch])
        # fit() reads the metrics at the end of an epoch: one host sync per round.
        float(next(iter(logs.values())))
        self.model.eval()


# ----------------------------------------------------------------------------------
# Torch side
# ----------------------------------------------------------------------------------


class TorchRunner:
    """Trains the plain-PyTorch twin for one round."""

    def __init__(self, case, images, labels, learning_rate=1e-3, precision="float32"):
        self.case = case
        self.mixed = precision == "mixed_bfloat16"
        self.model = case.build_torch().to(DEVICE)
        if case.freeze_batch_norm:
            self.model.freeze_batch_norm()
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        if case.sgd_momentum is None:
            self.optimizer = torch.optim.Adam(parameters, lr=learning_rate)
        else:
            self.optimizer = torch.optim.SGD(parameters, lr=learning_rate, momentum=case.sgd_momentum)
        # Plain PyTorch keeps images NCHW.
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(DEVICE)
        self.labels = torch.from_numpy(labels).to(DEVICE)

    def _step(self, index, totals):
        images = self.images[index]
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=self.mixed):
            if self.case.classifier:
                labels = self.labels[index]
                logits = self.model(images)
                loss = functional.cross_entropy(logits.float(), labels)
                totals["correct"] += (logits.detach().argmax(dim=1) == labels).sum()
            else:
                reconstruction, kl = self.model.losses(images)
                loss = (reconstruction.float() + kl.float()).mean()
                totals["reconstruction"] += reconstruction.detach().float().sum()
                totals["kl"] += kl.detach().float().sum()
        loss.backward()
        self.optimizer.step()
        totals["loss"] += loss.detach()

    def run(self):
        """Trains `case.steps` steps; reads the totals once at the end (one host sync)."""
        self.model.train()
        if self.case.freeze_batch_norm:
            self.model.freeze_batch_norm()
        totals = {name: torch.zeros((), device=DEVICE) for name in ("loss", "correct", "reconstruction", "kl")}
        order = torch.randperm(len(self.images), device=DEVICE)
        for start in range(0, len(self.images), self.case.batch_size):
            self._step(order[start : start + self.case.batch_size], totals)
        return {name: float(value) for name, value in totals.items()}


# ----------------------------------------------------------------------------------
# Interleaved timing
# ----------------------------------------------------------------------------------


def _timed(function):
    """Runs `function()`; returns (wall seconds, process CPU seconds, minor page faults)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    function()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, after.ru_minflt - before.ru_minflt


def _per_step(measurements, index, steps, scale):
    return [scale * measurement[index] / steps for measurement in measurements]


def measure_case(case, how="fit", rounds=DEFAULT_ROUNDS, steps=None, seed=DEFAULT_SEED, precision="float32"):
    """Times Keras (`how`) against torch on `case`, interleaved.

    Args:
        case: a `Case`.
        how: the Keras variant, one of `KERAS_VARIANTS`.
        rounds: timed rounds per side (after one warm-up round each).
        steps: training steps per round; defaults to `case.steps`.
        seed: seed of the data and of both models' initialization.
        precision: one of `PRECISIONS` (both sides alike).

    Returns:
        A dict: `case`, `how`, `batch_size`, `steps`, `rounds`; `keras_ms` and
        `torch_ms` (median wall time per step, ms), `ratio` (keras_ms / torch_ms),
        `ratio_low`/`ratio_high` (smallest and largest ratio of the paired rounds);
        `keras_cpu_ms`/`torch_cpu_ms` (median process CPU time per step, less
        sensitive than wall time to waiting for a busy CPU) and `cpu_ratio`;
        `keras_faults`/`torch_faults` (median minor page faults per step);
        `keras_warmup_s`/`torch_warmup_s` (seconds of the warm-up round, which
        includes building and, with "jit", compiling the step), and
        `keras_rounds_ms`/`torch_rounds_ms` (wall time per step of every round).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
    import keras

    steps = steps or case.steps
    images, labels = make_data(case, steps * case.batch_size, seed)
    course_lib.set_seed(seed)
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras_runner = KerasRunner(case, how, images, labels)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    torch.manual_seed(seed)
    torch_runner = TorchRunner(case, images, labels, precision=precision)
    # Warm-up: builds the train function (compiles it with "jit"), the optimizer state...
    keras_warmup = _timed(keras_runner.run)[0]
    torch_warmup = _timed(torch_runner.run)[0]
    keras_runs, torch_runs = [], []
    for round_index in range(rounds):
        if round_index % 2 == 0:
            keras_runs.append(_timed(keras_runner.run))
            torch_runs.append(_timed(torch_runner.run))
        else:
            torch_runs.append(_timed(torch_runner.run))
            keras_runs.append(_timed(keras_runner.run))
    keras_ms = _per_step(keras_runs, 0, steps, 1000.0)
    torch_ms = _per_step(torch_runs, 0, steps, 1000.0)
    paired = [k / t for k, t in zip(keras_ms, torch_ms)]
    keras_median = statistics.median(keras_ms)
    torch_median = statistics.median(torch_ms)
    keras_cpu = statistics.median(_per_step(keras_runs, 1, steps, 1000.0))
    torch_cpu = statistics.median(_per_step(torch_runs, 1, steps, 1000.0))
    return {
        "case": case.name,
        "how": how,
        "precision": precision,
        "device": DEVICE.type,
        "batch_size": case.batch_size,
        "steps": steps,
        "rounds": rounds,
        "keras_ms": keras_median,
        "torch_ms": torch_median,
        "ratio": keras_median / torch_median,
        "ratio_low": min(paired),
        "ratio_high": max(paired),
        "keras_cpu_ms": keras_cpu,
        "torch_cpu_ms": torch_cpu,
        "cpu_ratio": keras_cpu / torch_cpu if torch_cpu > 0 else float("nan"),
        "keras_faults": statistics.median(_per_step(keras_runs, 2, steps, 1.0)),
        "torch_faults": statistics.median(_per_step(torch_runs, 2, steps, 1.0)),
        "keras_warmup_s": keras_warmup,
        "torch_warmup_s": torch_warmup,
        "keras_rounds_ms": keras_ms,
        "torch_rounds_ms": torch_ms,
    }


def _variant(result):
    """The Keras variant, with the precision and device where they are not the CPU's float32."""
    extras = [value for value in (result.get("precision"), result.get("device")) if value not in (None, "float32", "cpu")]
    return " ".join([result["how"], *extras])


def format_table(results, target_ratio=None):
    """Formats `measure_case` results as a Markdown table."""
    lines = [
        "| model | keras variant | batch | steps x rounds | keras ms/step | torch ms/step "
        "| ratio keras/torch | paired-round range | CPU-time ratio | page faults/step k, t "
        "| keras warm-up s |" + (" target |" if target_ratio else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if target_ratio else ""),
    ]
    for result in results:
        line = (
            f"| {result['case']} | {_variant(result)} | {result['batch_size']} "
            f"| {result['steps']} x {result['rounds']} | {result['keras_ms']:.1f} "
            f"| {result['torch_ms']:.1f} | {result['ratio']:.2f} "
            f"| {result['ratio_low']:.2f}-{result['ratio_high']:.2f} "
            f"| {result.get('cpu_ratio', float('nan')):.2f} "
            f"| {result.get('keras_faults', float('nan')):.0f}, "
            f"{result.get('torch_faults', float('nan')):.0f} "
            f"| {result.get('keras_warmup_s', float('nan')):.1f} |"
        )
        if target_ratio:
            line += " met |" if result["ratio"] <= target_ratio else " missed |"
        lines.append(line)
    return "\n".join(lines)
