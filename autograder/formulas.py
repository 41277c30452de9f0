"""The numpy references of the course's formulas, used by the hidden checks of every lab.

One place for each formula (float64, no Keras): the checks of lab3 (KL), lab4 (Gaussian
likelihood, via its own documented batch variance) and lab5 (KL and Bernoulli
cross-entropy) compare the students' values with these.
"""

import numpy as np

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before the logarithm, as Keras'
# binary cross-entropy and course_lib.vae do.
PROBABILITY_EPSILON = 1e-7


def gaussian_kl_terms(z_mean, z_log_var):
    """KL(N(mu, sigma^2) || N(0, 1)) of each latent dimension of each example, in nats.

    Args:
        z_mean: array `(..., latent_dim)`, the posterior means mu.
        z_log_var: array of the same shape, log(sigma^2).

    Returns:
        A float64 array of the same shape: 0.5 * (exp(log_var) + mu^2 - 1 - log_var).

    Raises:
        ValueError: if the shapes differ.
    """
    z_mean, z_log_var = _same_shape_float64(z_mean, z_log_var, "z_mean", "z_log_var")
    return 0.5 * (np.exp(z_log_var) + z_mean**2 - 1.0 - z_log_var)


def gaussian_kl(z_mean, z_log_var):
    """The KL of each example (summed over the last axis), float64 `(...,)`; see `gaussian_kl_terms`."""
    return gaussian_kl_terms(z_mean, z_log_var).sum(axis=-1)


def bernoulli_nll_terms(images, probabilities, epsilon=PROBABILITY_EPSILON):
    """Binary cross-entropy of every pixel, -[x log p + (1 - x) log(1 - p)], in nats.

    Args:
        images: array of targets in [0, 1].
        probabilities: array of the same shape, the decoder's pixel probabilities.
        epsilon: probabilities are clipped to [epsilon, 1 - epsilon].

    Returns:
        A float64 array of the same shape.

    Raises:
        ValueError: if the shapes differ.
    """
    images, probabilities = _same_shape_float64(images, probabilities, "images", "probabilities")
    probabilities = np.clip(probabilities, epsilon, 1.0 - epsilon)
    return -(images * np.log(probabilities) + (1.0 - images) * np.log1p(-probabilities))


def bernoulli_nll(images, probabilities, epsilon=PROBABILITY_EPSILON):
    """Binary cross-entropy summed over the pixels of each image, float64 `(batch,)`."""
    terms = bernoulli_nll_terms(images, probabilities, epsilon)
    return terms.reshape(terms.shape[0], -1).sum(axis=1)


def _same_shape_float64(first, second, first_name, second_name):
    """Both arrays as float64; ValueError naming both shapes when they differ."""
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} and {second_name} must have the same shape. Received: {first.shape} and {second.shape}"
        )
    return first, second
