"""Sample-quality measures for generated images.

Three families of measures, all in numpy:

- Fréchet distance between the evaluator features of the samples and the stored
  features of real images (lower is better; the course analogue of FID).
- Classifier score, Inception-score style: ``exp(E_x[KL(p(y|x) || p(y))])``, from 1
  (every sample gets the same prediction) to the number of classes (confident and
  evenly spread predictions), with its two parts: the mean top-class confidence and
  the entropy of the marginal class distribution (diversity).
- Nearest-neighbour distance of every sample to the training images (per-pixel RMS),
  and the fraction of samples that are (near) copies of a training image.

`sample_quality_report` validates a batch of samples and returns all of them.
The evaluator networks are imported only by the functions that need them.
"""

import functools

import numpy as np

IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
MIN_SAMPLES = 200
# A sample within this per-pixel RMS distance (images in [0, 1]) of a training image
# counts as a copy; 0.02 is about 5/255. Genuinely new real images stay well above it:
# MNIST train[55000:60000] vs train[:10000], the closest of 5,000 is at 0.036 and the
# 1st percentile at 0.054 (vs train[:55000]: 0.040 and 0.045 over 1,000); CIFAR-10 real
# images are farther still (see calibration_baselines.json, nn_min_distance).
COPY_RMS_THRESHOLD = 0.02
MAX_TRAINING_IMAGES = 10_000
NEIGHBOUR_SUBSET_SEED = 0
SAMPLE_CHUNK_SIZE = 500
TRAINING_CHUNK_SIZE = 5_000
EIGENVALUE_FLOOR = 0.0


def _symmetric_sqrt(matrix):
    """Returns the PSD square root of a symmetric matrix (negative eigenvalues -> 0)."""
    symmetric = (matrix + matrix.T) / 2.0
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    roots = np.sqrt(np.maximum(eigenvalues, EIGENVALUE_FLOOR))
    return (eigenvectors * roots) @ eigenvectors.T


def _check_statistics(mean, covariance, name):
    mean = np.asarray(mean, dtype="float64")
    covariance = np.asarray(covariance, dtype="float64")
    if mean.ndim != 1 or covariance.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(
            f"{name}: expected a mean of shape (D,) and a covariance of shape (D, D). "
            f"Received: mean.shape={mean.shape}, covariance.shape={covariance.shape}"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(covariance))):
        raise ValueError(f"{name}: statistics must be finite. Received non-finite values.")
    return mean, covariance


def frechet_distance(mean1, covariance1, mean2, covariance2):
    """Fréchet distance between the Gaussians N(mean1, covariance1) and N(mean2, covariance2).

    ``||mean1 - mean2||^2 + Tr(C1) + Tr(C2) - 2 Tr((C1 C2)^(1/2))``. The trace of the
    matrix root is computed as the sum of the square roots of the eigenvalues of the
    symmetric matrix ``C1^(1/2) C2 C1^(1/2)``, which has the same eigenvalues as C1 C2.

    Args:
        mean1, mean2: arrays (D,).
        covariance1, covariance2: symmetric positive semi-definite arrays (D, D).

    Returns:
        A non-negative float.

    Raises:
        ValueError: if the shapes disagree or a value is not finite.
    """
    mean1, covariance1 = _check_statistics(mean1, covariance1, "first statistics")
    mean2, covariance2 = _check_statistics(mean2, covariance2, "second statistics")
    if mean1.shape != mean2.shape:
        raise ValueError(
            "Both statistics must have the same dimension. "
            f"Received: mean1.shape={mean1.shape}, mean2.shape={mean2.shape}"
        )
    root1 = _symmetric_sqrt(covariance1)
    product = root1 @ covariance2 @ root1
    product_eigenvalues = np.linalg.eigvalsh((product + product.T) / 2.0)
    trace_root = np.sum(np.sqrt(np.maximum(product_eigenvalues, EIGENVALUE_FLOOR)))
    squared_mean_distance = np.sum((mean1 - mean2) ** 2)
    traces = np.trace(covariance1) + np.trace(covariance2)
    distance = squared_mean_distance + traces - 2.0 * trace_root
    return float(max(distance, 0.0))


def feature_statistics(feature_values):
    """Returns the mean (D,) and covariance (D, D) of features (N, D), as float64."""
    feature_values = np.asarray(feature_values, dtype="float64")
    if feature_values.ndim != 2 or feature_values.shape[0] < 2:
        raise ValueError(
            "Expected features shaped (N, D) with N >= 2. "
            f"Received: shape={feature_values.shape}"
        )
    return feature_values.mean(axis=0), np.cov(feature_values, rowvar=False)


def check_samples(dataset, images, min_samples=MIN_SAMPLES):
    """Validates generated samples and returns them as float32.

    Args:
        dataset: "mnist" or "cifar10".
        images: array (N, 28, 28, 1) for MNIST or (N, 32, 32, 3) for CIFAR-10,
            finite values in [0, 1].
        min_samples: the smallest N accepted.

    Returns:
        The images as a float32 numpy array.

    Raises:
        ValueError: on an unknown data set, a wrong shape or type, too few samples,
            or values that are not finite or outside [0, 1].
    """
    if dataset not in IMAGE_SHAPES:
        raise ValueError(
            f"Unknown data set. Expected one of {sorted(IMAGE_SHAPES)}. "
            f"Received: dataset={dataset!r}"
        )
    expected = IMAGE_SHAPES[dataset]
    try:
        array = np.asarray(images)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Samples must be convertible to a numpy array. Received: type={type(images).__name__}"
        ) from error
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise ValueError(f"Samples must be a numeric array. Received: dtype={array.dtype}")
    if array.ndim != 4 or array.shape[1:] != expected:
        raise ValueError(
            f"{dataset} samples must have shape (N, {', '.join(map(str, expected))}) "
            f"(NHWC, channels last). Received: shape={array.shape}"
        )
    if array.shape[0] < min_samples:
        raise ValueError(
            f"At least {min_samples} samples are needed for stable statistics. "
            f"Received: num_samples={array.shape[0]}"
        )
    array = array.astype("float32")
    if not np.all(np.isfinite(array)):
        count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            f"Samples must be finite. Received: {count} NaN or infinite values"
        )
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        hint = " (uint8 pixels? divide by 255)" if high > 1.0 else ""
        raise ValueError(
            f"Sample values must lie in [0, 1]{hint}. Received: min={low:.4g}, max={high:.4g}"
        )
    return array


def classifier_score(probabilities):
    """Inception-score style classifier score and its two components.

    Args:
        probabilities: array (N, K) of class probabilities p(y|x), rows summing to 1.

    Returns:
        A dict with
        - ``classifier_score``: ``exp(mean_x KL(p(y|x) || p(y)))`` where p(y) is the mean
          of the rows; between 1 and K.
        - ``mean_max_confidence``: mean over samples of the top class probability.
        - ``marginal_entropy``: entropy (nats) of p(y), between 0 and ln K (diversity).
        - ``marginal_entropy_fraction``: ``marginal_entropy / ln K``, between 0 and 1.
        - ``mean_conditional_entropy``: mean entropy (nats) of p(y|x).

    Raises:
        ValueError: if the array is not (N, K) with N >= 1, K >= 2, finite
            non-negative rows summing to 1.
    """
    probabilities = np.asarray(probabilities, dtype="float64")
    if probabilities.ndim != 2 or probabilities.shape[0] < 1 or probabilities.shape[1] < 2:
        raise ValueError(
            "Expected probabilities shaped (N, K) with K >= 2. "
            f"Received: shape={probabilities.shape}"
        )
    row_sums = probabilities.sum(axis=1)
    if (
        not np.all(np.isfinite(probabilities))
        or probabilities.min() < 0.0
        or not np.allclose(row_sums, 1.0, atol=1e-4)
    ):
        raise ValueError(
            "Each row must be a probability distribution (finite, >= 0, summing to 1). "
            f"Received: min={probabilities.min():.4g}, row sums in "
            f"[{row_sums.min():.6g}, {row_sums.max():.6g}]"
        )
    num_classes = probabilities.shape[1]
    marginal = probabilities.mean(axis=0)
    log_probabilities = np.log(np.where(probabilities > 0.0, probabilities, 1.0))
    log_marginal = np.log(np.where(marginal > 0.0, marginal, 1.0))
    # 0 * log 0 counts as 0; where p(y|x) > 0, p(y) > 0 too, so the KL terms are finite.
    kl_divergences = np.sum(probabilities * (log_probabilities - log_marginal), axis=1)
    conditional_entropies = -np.sum(probabilities * log_probabilities, axis=1)
    marginal_entropy = float(-np.sum(marginal * log_marginal))
    return {
        "classifier_score": float(np.exp(np.mean(kl_divergences))),
        "mean_max_confidence": float(np.mean(probabilities.max(axis=1))),
        "marginal_entropy": marginal_entropy,
        "marginal_entropy_fraction": marginal_entropy / float(np.log(num_classes)),
        "mean_conditional_entropy": float(np.mean(conditional_entropies)),
    }


def _flatten_images(images, name):
    array = np.asarray(images, dtype="float32")
    if array.ndim < 2 or array.shape[0] < 1:
        raise ValueError(
            f"{name} must be an array of images (N, ...). Received: shape={array.shape}"
        )
    return array.reshape(array.shape[0], -1)


def nearest_neighbour_distance(
    samples,
    training_images,
    max_training_images=MAX_TRAINING_IMAGES,
    copy_threshold=COPY_RMS_THRESHOLD,
    seed=NEIGHBOUR_SUBSET_SEED,
):
    """Per-sample distance to the closest training image, and the share of copies.

    The distance is the per-pixel RMS difference ``sqrt(mean((x - t)^2))`` (images in
    [0, 1]), computed in chunks as ``|x|^2 + |t|^2 - 2 x.t``.

    Args:
        samples: array (N, H, W, C).
        training_images: array (M, H, W, C) of the same image shape.
        max_training_images: compare with at most this many training images, a
            random subset drawn with ``seed`` (None: all of them). Copies of images
            outside the subset are not found, so pass the images the model trained on.
        copy_threshold: a sample whose distance is at most this counts as a copy.
        seed: seed of the subset draw.

    Returns:
        A dict with ``distances`` (N,) float64, ``nearest_indices`` (N,) indices into
        ``training_images``, ``copy_fraction``, ``mean_distance``, ``median_distance``,
        ``min_distance``, ``copy_threshold`` and ``num_training_images`` (compared).

    Raises:
        ValueError: if the image shapes differ or the threshold is negative.
    """
    flat_samples = _flatten_images(samples, "samples")
    flat_training = _flatten_images(training_images, "training_images")
    if np.shape(samples)[1:] != np.shape(training_images)[1:]:
        raise ValueError(
            "Samples and training images must have the same image shape. Received: "
            f"samples.shape={np.shape(samples)}, training_images.shape={np.shape(training_images)}"
        )
    if copy_threshold < 0:
        raise ValueError(f"copy_threshold must be >= 0. Received: copy_threshold={copy_threshold}")
    training_indices = np.arange(flat_training.shape[0])
    if max_training_images is not None and flat_training.shape[0] > max_training_images:
        generator = np.random.default_rng(seed)
        training_indices = np.sort(
            generator.choice(flat_training.shape[0], size=max_training_images, replace=False)
        )
        flat_training = flat_training[training_indices]
    num_pixels = flat_samples.shape[1]
    training_norms = np.sum(flat_training**2, axis=1)
    best_squared = np.full(flat_samples.shape[0], np.inf)
    best_index = np.zeros(flat_samples.shape[0], dtype="int64")
    for start in range(0, flat_samples.shape[0], SAMPLE_CHUNK_SIZE):
        chunk = flat_samples[start : start + SAMPLE_CHUNK_SIZE]
        chunk_norms = np.sum(chunk**2, axis=1)
        rows = slice(start, start + chunk.shape[0])
        for train_start in range(0, flat_training.shape[0], TRAINING_CHUNK_SIZE):
            block = flat_training[train_start : train_start + TRAINING_CHUNK_SIZE]
            block_norms = training_norms[train_start : train_start + TRAINING_CHUNK_SIZE]
            squared = chunk_norms[:, None] + block_norms[None, :] - 2.0 * (chunk @ block.T)
            block_best = np.argmin(squared, axis=1)
            block_values = squared[np.arange(chunk.shape[0]), block_best]
            better = block_values < best_squared[rows]
            best_squared[rows] = np.where(better, block_values, best_squared[rows])
            best_index[rows] = np.where(better, block_best + train_start, best_index[rows])
    # The expansion loses precision for near-identical images: recompute the winners exactly.
    exact = np.sum((flat_samples - flat_training[best_index]).astype("float64") ** 2, axis=1)
    distances = np.sqrt(exact / num_pixels)
    return {
        "distances": distances,
        "nearest_indices": training_indices[best_index],
        "copy_fraction": float(np.mean(distances <= copy_threshold)),
        "mean_distance": float(np.mean(distances)),
        "median_distance": float(np.median(distances)),
        "min_distance": float(np.min(distances)),
        "copy_threshold": float(copy_threshold),
        "num_training_images": int(flat_training.shape[0]),
    }


def sample_frechet_distance(dataset, images, feature_values=None):
    """Fréchet distance between evaluator features of ``images`` and of real images.

    Args:
        dataset: "mnist" or "cifar10".
        images: samples (N, H, W, C) in [0, 1].
        feature_values: the evaluator features of ``images`` if already computed.

    Returns:
        A float (lower is better).
    """
    from autograder import evaluators

    if feature_values is None:
        evaluator = evaluators.load_evaluator(dataset)
        feature_values = evaluators.features(evaluator, check_samples(dataset, images))
    reference_mean, reference_covariance = evaluators.load_reference_stats(dataset)
    sample_mean, sample_covariance = feature_statistics(feature_values)
    return frechet_distance(sample_mean, sample_covariance, reference_mean, reference_covariance)


def real_images(dataset, train_limit=None):
    """The real images a generated sample must not copy: the training images used and all test images.

    A decoder could memorize held-out test images as well as training ones, so both count.

    Args:
        dataset: "mnist" or "cifar10".
        train_limit: how many training images the profile trains on (None: all).

    Returns:
        float32 array (M, H, W, C) in [0, 1].

    Raises:
        ValueError: for an unknown dataset.
    """
    from course_lib.data import load_cifar10, load_mnist

    loaders = {"mnist": load_mnist, "cifar10": load_cifar10}
    if dataset not in loaders:
        raise ValueError(f"Unknown dataset. Expected one of {sorted(loaders)}. Received: dataset={dataset!r}")
    train, _ = loaders[dataset]("train", limit=train_limit)
    test, _ = loaders[dataset]("test")
    return np.concatenate([train, test], axis=0)


@functools.lru_cache(maxsize=2)
def _cached_real_images(dataset, train_limit):
    return real_images(dataset, train_limit)


def prior_sample_quality(lab, dataset, images, profile):
    """The quality report of a lab's decoded prior samples, as its checks and its calibration read it.

    Every image of the profile's training set and of the test set counts as a real image not to copy.

    Args:
        lab: the lab whose settings name the training set ("lab3", "lab4").
        dataset: "mnist" or "cifar10".
        images: float array (N, H, W, C) in [0, 1].
        profile: the run profile.

    Returns:
        `sample_quality_report`'s dict.

    Raises:
        ValueError: if the images cannot be scored (too few, not finite, wrong range).
    """
    import course_lib

    reference = _cached_real_images(dataset, course_lib.settings(lab, profile)["train_examples"])
    return sample_quality_report(dataset, images, reference, max_training_images=None)


def sample_quality_report(
    dataset,
    images,
    training_images,
    max_training_images=MAX_TRAINING_IMAGES,
    min_samples=MIN_SAMPLES,
):
    """Measures every sample-quality metric of a batch of generated images.

    Args:
        dataset: "mnist" or "cifar10".
        images: samples (N, 28, 28, 1) or (N, 32, 32, 3), finite, in [0, 1].
        training_images: the real images the generator was trained on (same shape).
        max_training_images: see `nearest_neighbour_distance`.
        min_samples: the smallest N accepted.

    Returns:
        A dict of floats: ``frechet_distance``, the `classifier_score` entries,
        ``nn_mean_distance``, ``nn_median_distance``, ``nn_min_distance``,
        ``copy_fraction``, plus ``num_samples``, ``num_training_images_compared``
        and ``dataset``.

    Raises:
        ValueError: if the samples or training images are invalid.
    """
    from autograder import evaluators

    samples = check_samples(dataset, images, min_samples=min_samples)
    training = check_samples(dataset, training_images, min_samples=1)
    evaluator = evaluators.load_evaluator(dataset)
    feature_values, probabilities = evaluators.features_and_probabilities(evaluator, samples)
    neighbours = nearest_neighbour_distance(samples, training, max_training_images)
    report = {
        "dataset": dataset,
        "num_samples": int(samples.shape[0]),
        "frechet_distance": sample_frechet_distance(dataset, samples, feature_values),
    }
    report.update(classifier_score(probabilities))
    report.update(
        {
            "nn_mean_distance": neighbours["mean_distance"],
            "nn_median_distance": neighbours["median_distance"],
            "nn_min_distance": neighbours["min_distance"],
            "copy_fraction": neighbours["copy_fraction"],
            "num_training_images_compared": neighbours["num_training_images"],
        }
    )
    return report
