"""Disentanglement metrics: how well do single latent dimensions capture single factors?

All metrics here take a representation ("codes", usually the encoder's `z_mean`) and
ground-truth generative factors, such as those of `course_lib.shapes`.

- `mutual_information_gap` (MIG, Chen et al., 2018): for each factor, the gap between
  the two latent dimensions that share the most information with it, as a fraction of
  the factor's entropy, averaged over factors. 1 = each factor is captured by exactly
  one dimension; 0 = no dimension captures any factor better than another does.
- `factor_vae_score` (Kim & Mnih, 2018): hold one factor fixed in a batch, find the
  latent dimension that varies least, and measure how well a majority vote predicts the
  fixed factor from that dimension. Chance level is about 1 / (number of factors).
- `kl_per_dimension`: the KL divergence of each latent dimension to the prior, averaged
  over examples; dimensions near 0 are unused ("collapsed").

Example:

```python
z_mean, z_log_var, _ = encoder.predict(images, verbose=0)
print(mutual_information_gap(z_mean, factors))
print(kl_per_dimension(z_mean, z_log_var))
```
"""

import numpy as np

DEFAULT_NUM_BINS = 20
# FactorVAE metric defaults: votes of `batch_size` examples each; a dimension whose
# variance over the data is below `min_variance` counts as collapsed and never votes.
DEFAULT_VOTE_BATCH_SIZE = 64
DEFAULT_NUM_TRAIN_VOTES = 300
DEFAULT_NUM_EVAL_VOTES = 200
DEFAULT_NUM_VARIANCE_EXAMPLES = 5000
DEFAULT_MIN_VARIANCE = 0.05
# Rendering/encoding happens in chunks of at most this many votes.
VOTES_PER_CHUNK = 64


def mutual_information_gap(codes, factors, num_bins=DEFAULT_NUM_BINS):
    """Mutual information gap (MIG) of a representation, averaged over factors.

    Args:
        codes: float array `(N, latent_dim)`, one representation per example (for a
            VAE, use `z_mean`).
        factors: integer array `(N, num_factors)`, the index of each factor's value.
        num_bins: each code dimension is cut into this many equal-width bins between
            its minimum and maximum before the mutual information is computed.

    Returns:
        A float in [0, 1]: the mean over factors of `mig_per_factor`.

    Raises:
        ValueError: on inconsistent shapes, non-integer factors, a factor that takes a
            single value (its entropy is 0), or an invalid `num_bins`.
    """
    return float(np.mean(mig_per_factor(codes, factors, num_bins=num_bins)))


def mig_per_factor(codes, factors, num_bins=DEFAULT_NUM_BINS):
    """MIG of each factor: (largest MI - second largest MI) / factor entropy.

    Args and Raises: as `mutual_information_gap`.

    Returns:
        A float64 array `(num_factors,)`. With a single code dimension the second
        largest MI is taken as 0.
    """
    mutual_information = mutual_information_matrix(codes, factors, num_bins=num_bins)
    entropy = factor_entropies(factors)
    ranked = np.sort(mutual_information, axis=0)[::-1]
    second = ranked[1] if len(ranked) > 1 else np.zeros_like(ranked[0])
    return (ranked[0] - second) / entropy


def mutual_information_matrix(codes, factors, num_bins=DEFAULT_NUM_BINS):
    """Mutual information (in nats) between every discretized code dimension and factor.

    Args and Raises: as `mutual_information_gap`.

    Returns:
        A float64 array `(latent_dim, num_factors)`.
    """
    codes, factors = _check_codes_and_factors(codes, factors)
    _check_num_bins(num_bins)
    binned_codes = discretize(codes, num_bins)
    labels = [_dense_labels(factors[:, axis]) for axis in range(factors.shape[1])]
    matrix = np.empty((codes.shape[1], factors.shape[1]))
    for code_axis in range(codes.shape[1]):
        for factor_axis, factor_labels in enumerate(labels):
            matrix[code_axis, factor_axis] = _discrete_mutual_information(
                binned_codes[:, code_axis], factor_labels
            )
    return matrix


def factor_entropies(factors):
    """Empirical entropy (in nats) of each factor column.

    Raises:
        ValueError: if `factors` is not a 2D integer array, or a factor takes a single
            value (MIG divides by the entropy).
    """
    factors = _check_factors(factors)
    entropy = np.array([_entropy(_dense_labels(column)) for column in factors.T])
    constant = np.flatnonzero(entropy <= 0.0)
    if len(constant):
        raise ValueError(
            "Every factor must take at least two values in the data, since MIG divides "
            "by the factor's entropy; drop the constant columns first (e.g. "
            "`factors[:, shapes.varying_factor_axes(fixed_factors)]`). "
            f"Received: constant factor columns {constant.tolist()}"
        )
    return entropy


def discretize(codes, num_bins=DEFAULT_NUM_BINS):
    """Cuts each code dimension into `num_bins` equal-width bins.

    Args:
        codes: float array `(N, latent_dim)`.
        num_bins: a positive integer.

    Returns:
        An int64 array `(N, latent_dim)` of bin indices in [0, num_bins). A constant
        dimension falls in a single bin.

    Raises:
        ValueError: if `codes` is not a finite 2D array or `num_bins` is invalid.
    """
    codes = _check_codes(codes)
    _check_num_bins(num_bins)
    binned = np.empty(codes.shape, dtype=np.int64)
    for axis in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, axis], bins=num_bins)
        # Interior edges only, so that the minimum falls in bin 0 and the maximum in
        # bin num_bins - 1.
        binned[:, axis] = np.digitize(codes[:, axis], edges[1:-1])
    return binned


def factor_vae_score(
    encode_fn,
    render_fn,
    factor_sizes,
    num_train_votes=DEFAULT_NUM_TRAIN_VOTES,
    num_eval_votes=DEFAULT_NUM_EVAL_VOTES,
    batch_size=DEFAULT_VOTE_BATCH_SIZE,
    num_variance_examples=DEFAULT_NUM_VARIANCE_EXAMPLES,
    min_variance=DEFAULT_MIN_VARIANCE,
    seed=0,
):
    """FactorVAE disentanglement metric (Kim & Mnih, 2018).

    1. Encode `num_variance_examples` random examples and compute each code
       dimension's variance; dimensions with variance <= `min_variance` are collapsed.
    2. For each vote, pick a factor at random, draw `batch_size` examples that share
       that factor's value (the other factors vary), divide the codes by the global
       standard deviation, and vote for the active dimension of lowest variance.
    3. A majority-vote classifier maps each dimension to the factor it most often
       voted for (fitted on the training votes); the score is its accuracy on the
       evaluation votes.

    Works with any representation: `render_fn` turns factor indices into observations
    and `encode_fn` turns observations into codes.

    Args:
        encode_fn: callable, observations -> float array `(n, latent_dim)`. E.g.
            `lambda images: encoder.predict(images, verbose=0)[0]`.
        render_fn: callable, int64 factor indices `(n, num_factors)` -> observations.
            E.g. `course_lib.shapes.render`.
        factor_sizes: number of values of each factor, e.g. `shapes.FACTOR_SIZES`.
        num_train_votes: votes used to fit the majority-vote classifier.
        num_eval_votes: votes used to measure its accuracy.
        batch_size: examples per vote (at least 2).
        num_variance_examples: examples used for the global variances.
        min_variance: dimensions whose global variance is not above this never vote.
        seed: seed of the factor draws.

    Returns:
        A float in [0, 1], the evaluation accuracy; 0.0 if no dimension is active.

    Raises:
        ValueError: on invalid arguments, or if `encode_fn` returns codes whose shape
            does not match the number of observations.
    """
    factor_sizes = _check_factor_sizes(factor_sizes)
    for name, value, minimum in (
        ("num_train_votes", num_train_votes, 1),
        ("num_eval_votes", num_eval_votes, 1),
        ("batch_size", batch_size, 2),
        ("num_variance_examples", num_variance_examples, 2),
    ):
        _check_int_at_least(name, value, minimum)
    rng = np.random.default_rng(seed)

    random_factors = _sample_factors(rng, factor_sizes, num_variance_examples)
    global_variance = np.var(_encode(encode_fn, render_fn, random_factors), axis=0, ddof=1)
    active = global_variance > min_variance
    if not active.any():
        return 0.0
    scale = np.sqrt(np.where(active, global_variance, 1.0))

    def votes(count):
        return _factor_vae_votes(
            encode_fn, render_fn, factor_sizes, count, batch_size, scale, active, rng
        )

    train_dims, train_factors = votes(num_train_votes)
    eval_dims, eval_factors = votes(num_eval_votes)
    counts = np.zeros((len(scale), len(factor_sizes)), dtype=np.int64)
    np.add.at(counts, (train_dims, train_factors), 1)
    predicted_factor = np.argmax(counts, axis=1)
    return float(np.mean(predicted_factor[eval_dims] == eval_factors))


def kl_per_dimension(z_mean, z_log_var):
    """KL divergence of each latent dimension to the N(0, 1) prior, averaged over examples.

    For one example and dimension, KL(N(mu, sigma^2) || N(0, 1)) =
    0.5 * (exp(log_var) + mu^2 - 1 - log_var). Dimensions with a mean KL near 0 carry no
    information about the input (the encoder outputs the prior for them).

    Args:
        z_mean: array `(N, latent_dim)` (numpy or backend tensor).
        z_log_var: array of the same shape.

    Returns:
        A float64 numpy array `(latent_dim,)` in nats.

    Raises:
        ValueError: if the shapes differ or are not 2D.
    """
    z_mean = _to_numpy(z_mean).astype(np.float64)
    z_log_var = _to_numpy(z_log_var).astype(np.float64)
    if z_mean.ndim != 2 or z_mean.shape != z_log_var.shape or len(z_mean) == 0:
        raise ValueError(
            "z_mean and z_log_var must have the same shape (N, latent_dim) with N >= 1. "
            f"Received: z_mean.shape={z_mean.shape}, z_log_var.shape={z_log_var.shape}"
        )
    kl = 0.5 * (np.exp(z_log_var) + np.square(z_mean) - 1.0 - z_log_var)
    return kl.mean(axis=0)


def _factor_vae_votes(encode_fn, render_fn, factor_sizes, count, batch_size, scale, active, rng):
    """Returns (voted dimension, fixed factor) arrays of length `count`."""
    fixed_factor = rng.integers(0, len(factor_sizes), size=count)
    voted_dimension = np.empty(count, dtype=np.int64)
    for start in range(0, count, VOTES_PER_CHUNK):
        chunk = fixed_factor[start : start + VOTES_PER_CHUNK]
        factors = _sample_factors(rng, factor_sizes, len(chunk) * batch_size)
        factors = factors.reshape(len(chunk), batch_size, len(factor_sizes))
        for vote, factor_axis in enumerate(chunk):
            factors[vote, :, factor_axis] = factors[vote, 0, factor_axis]
        codes = _encode(encode_fn, render_fn, factors.reshape(-1, len(factor_sizes)))
        codes = codes.reshape(len(chunk), batch_size, -1) / scale
        variance = np.var(codes, axis=1, ddof=1)
        variance[:, ~active] = np.inf
        voted_dimension[start : start + len(chunk)] = np.argmin(variance, axis=1)
    return voted_dimension, fixed_factor


def _encode(encode_fn, render_fn, factors):
    codes = _to_numpy(encode_fn(render_fn(factors)))
    if codes.ndim != 2 or len(codes) != len(factors):
        raise ValueError(
            "encode_fn(render_fn(factors)) must return codes of shape (n, latent_dim), "
            f"one row per factor combination. Received: codes.shape={codes.shape} for "
            f"{len(factors)} factor combinations"
        )
    return codes.astype(np.float64)


def _sample_factors(rng, factor_sizes, count):
    return np.stack([rng.integers(0, size, size=count) for size in factor_sizes], axis=1)


def _discrete_mutual_information(labels_a, labels_b):
    """Mutual information (nats) of two non-negative integer label arrays."""
    size_b = labels_b.max() + 1
    joint = np.bincount(labels_a * size_b + labels_b).astype(np.float64)
    joint = np.pad(joint, (0, (labels_a.max() + 1) * size_b - len(joint)))
    joint = joint.reshape(-1, size_b) / len(labels_a)
    marginal_a = joint.sum(axis=1, keepdims=True)
    marginal_b = joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    ratio = joint[nonzero] / (marginal_a @ marginal_b)[nonzero]
    return float(np.sum(joint[nonzero] * np.log(ratio)))


def _entropy(labels):
    probabilities = np.bincount(labels) / len(labels)
    probabilities = probabilities[probabilities > 0]
    return float(-np.sum(probabilities * np.log(probabilities)))


def _dense_labels(column):
    """Maps the values of one column to 0 ... (number of distinct values - 1)."""
    return np.unique(column, return_inverse=True)[1].reshape(-1)


def _to_numpy(values):
    """numpy array from a numpy array, a list, or a (possibly GPU) torch tensor."""
    if hasattr(values, "detach"):  # torch tensor: keras.ops.convert_to_numpy warns here
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _check_codes(codes):
    codes = _to_numpy(codes)
    if codes.ndim != 2 or codes.shape[0] < 2 or codes.shape[1] < 1:
        raise ValueError(
            "codes must have shape (N, latent_dim) with N >= 2 examples. "
            f"Received: codes.shape={codes.shape}"
        )
    if not np.issubdtype(codes.dtype, np.number):
        raise ValueError(f"codes must be numbers. Received: dtype={codes.dtype}")
    non_finite = int(np.size(codes) - np.isfinite(codes).sum())
    if non_finite:
        raise ValueError(
            f"codes must be finite. Received: {non_finite} NaN or infinite entries in "
            f"codes of shape {codes.shape}"
        )
    return codes.astype(np.float64)


def _check_factors(factors):
    factors = _to_numpy(factors)
    if factors.ndim != 2 or factors.shape[0] < 2 or factors.shape[1] < 1:
        raise ValueError(
            "factors must have shape (N, num_factors) with N >= 2 examples. "
            f"Received: factors.shape={factors.shape}"
        )
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(
            "factors must be integer indices of discrete factor values (e.g. the "
            f"`factors` returned by shapes.generate_shapes). Received: dtype={factors.dtype}"
        )
    return factors


def _check_codes_and_factors(codes, factors):
    codes, factors = _check_codes(codes), _check_factors(factors)
    if len(codes) != len(factors):
        raise ValueError(
            "codes and factors must have one row per example each. "
            f"Received: codes.shape={codes.shape}, factors.shape={factors.shape}"
        )
    return codes, factors


def _check_num_bins(num_bins):
    _check_int_at_least("num_bins", num_bins, 1)


def _check_factor_sizes(factor_sizes):
    sizes = np.asarray(factor_sizes)
    if sizes.ndim != 1 or len(sizes) < 2 or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(
            "factor_sizes must be a sequence of at least two integers, the number of "
            f"values of each factor. Received: factor_sizes={factor_sizes!r}"
        )
    if np.any(sizes < 2):
        raise ValueError(
            "Every factor needs at least two values to be held fixed against the others. "
            f"Received: factor_sizes={factor_sizes!r}"
        )
    return [int(size) for size in sizes]


def _check_int_at_least(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
