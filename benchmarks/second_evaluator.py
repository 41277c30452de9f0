"""A second, independent judge of CIFAR-10 samples: Fréchet distances in the shipped ResNet18's features.

The grader's CIFAR-10 evaluator (`autograder/evaluators.py`) is one network. Whether lab 4's
samples are away from noise should not depend on it alone, so this benchmark measures the
same samples in another network trained separately: the course's CIFAR-10 ResNet18
(`course_lib.resnet.CIFAR10_WEIGHTS`, stages 1-3, 85.2% on the exact test images), with its
globally averaged third-stage features (256 numbers per image). The reference statistics come
from CIFAR-10 training images that the fast profile does not train on; held-out real images,
the same images blurred, uniform noise and the mean image are measured beside the sample sets.

The blurred baselines say how much of a distance blur alone explains. A VAE's samples are the
means of its Gaussian decoder, blurry by construction, and a classifier's features score blur
almost as far as noise: in this network the held-out images blurred with a Gaussian of
sigma 2 px (pixel MSE 0.009 to the originals, about half that of lab 4's fast reconstructions)
lie at 63.9, noise at 81.6 (BENCHMARKS.md, lab 4).
"""

import pathlib

import numpy as np

# Training images 10,000-19,999: outside lab 4's fast training set (the first 10,000).
REFERENCE_START = 10000
REFERENCE_COUNT = 10000
BASELINE_COUNT = 1000
FEATURE_BATCH_SIZE = 250
BASELINE_SEED = 0
STAGES = 3
IMAGE_SHAPE = (32, 32, 3)
# Standard deviations (pixels) of the Gaussian blurs applied to the held-out baseline images.
BLUR_SIGMAS = (1.0, 2.0)
BLUR_RADIUS_PER_SIGMA = 3  # the kernel is cut at 3 standard deviations


def feature_model():
    """The ResNet18 feature extractor: RGB images in [0, 1] -> pooled stage-3 features (256,)."""
    import keras

    from course_lib.image_layers import ImageNetNormalization
    from course_lib.resnet import CIFAR10_WEIGHTS, build_resnet18

    inputs = keras.Input(IMAGE_SHAPE)
    backbone = build_resnet18(IMAGE_SHAPE, include_top=False, pooling="avg", weights=str(CIFAR10_WEIGHTS),
                              stages=STAGES, verbose=False)
    return keras.Model(inputs, backbone(ImageNetNormalization()(inputs)), name="second_evaluator")


def load_samples(path):
    """Images (N, 32, 32, 3) in [0, 1] from a `.npy` file or the first array of a `.npz` file.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file holds no such images.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No sample file {str(path)!r} (looked in {pathlib.Path.cwd()}): expected "
                                "a .npy or .npz file of CIFAR-10 samples")
    try:
        loaded = np.load(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"Expected a .npy or .npz file of CIFAR-10 samples. Received: {path} ({error})") from error
    images = loaded[loaded.files[0]] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE or images.shape[0] < 2:
        raise ValueError(f"Expected CIFAR-10 samples of shape (N >= 2, 32, 32, 3) in {path}. "
                         f"Received: shape={images.shape}")
    if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(f"Expected finite values in [0, 1] in {path}. "
                         f"Received: min={images.min()}, max={images.max()}")
    return images


def gaussian_blur(images, sigma):
    """Blurs each image with a separable Gaussian kernel, edges reflected.

    Args:
        images: array (N, height, width, channels).
        sigma: the kernel's standard deviation in pixels (> 0).

    Returns:
        float32 array of the same shape; values stay within the input's range.

    Raises:
        ValueError: if `sigma` is not positive or `images` is not 4-D.
    """
    images = np.asarray(images, dtype="float32")
    if not sigma > 0 or images.ndim != 4:
        raise ValueError(f"Expected sigma > 0 and images (N, height, width, channels). "
                         f"Received: sigma={sigma}, shape={images.shape}")
    radius = int(np.ceil(BLUR_RADIUS_PER_SIGMA * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (1, 2):
        padding = [(0, 0)] * 4
        padding[axis] = (radius, radius)
        padded = np.pad(images, padding, mode="reflect")
        length = images.shape[axis]
        images = sum(weight * np.take(padded, range(offset, offset + length), axis=axis)
                     for offset, weight in enumerate(kernel))
    return images.astype("float32")


def blurred_name(sigma):
    """The baseline row of the held-out images blurred with `sigma` (in pixels)."""
    return f"real, Gaussian blur {sigma:g} px"


def frechet_distances(sample_sets, reference_count=REFERENCE_COUNT, baseline_count=BASELINE_COUNT):
    """Fréchet distance of each image set, and of the baselines, to real CIFAR-10 images.

    Args:
        sample_sets: {name: images (N, 32, 32, 3) in [0, 1]}.
        reference_count: training images (from REFERENCE_START) that give the reference statistics.
        baseline_count: images in each baseline set.

    Returns:
        {name: distance}: the baselines "real (held-out test)", the same images blurred
        (`blurred_name(sigma)` for each of BLUR_SIGMAS), "uniform noise", "mean image", then
        the sample sets.
    """
    from autograder import quality
    from course_lib.data import load_cifar10

    model = feature_model()

    def statistics(images):
        return quality.feature_statistics(model.predict(images, batch_size=FEATURE_BATCH_SIZE, verbose=0))

    train, _ = load_cifar10("train", limit=REFERENCE_START + reference_count)
    reference = statistics(train[REFERENCE_START:])
    test, _ = load_cifar10("test", limit=baseline_count, exact_only=True)
    rng = np.random.default_rng(BASELINE_SEED)
    sets = {"real (held-out test)": test}
    sets.update({blurred_name(sigma): gaussian_blur(test, sigma) for sigma in BLUR_SIGMAS})
    sets.update({
        "uniform noise": rng.uniform(size=(baseline_count, *IMAGE_SHAPE)).astype("float32"),
        "mean image": np.repeat(train[:REFERENCE_START].mean(axis=0, keepdims=True), baseline_count, axis=0),
    })
    sets.update(sample_sets)
    return {name: float(quality.frechet_distance(*statistics(images), *reference)) for name, images in sets.items()}


def format_table(distances):
    """Markdown table: one row per image set, with its distance relative to uniform noise."""
    noise = distances["uniform noise"]
    lines = ["| images | Fréchet distance (ResNet18 stage 3) | / noise |", "|---|---|---|"]
    lines += [f"| {name} | {value:.2f} | {value / noise:.3f} |" for name, value in distances.items()]
    return "\n".join(lines) + "\n"
