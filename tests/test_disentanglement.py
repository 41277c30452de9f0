"""Tests of course_lib.disentanglement (MIG, FactorVAE score, KL per dimension).

Thresholds come from measured runs (factors of `shapes.sample_factor_indices`, seeds 0-9
for MIG and 0-5 for the FactorVAE score, when these tests were written):
- MIG of the factors + N(0, 0.01^2) noise: 0.9956-0.9962 (4000 examples);
  of 10 random N(0, 1) dimensions: 0.0003-0.0008;
  of a factor copied into two dimensions: 0.0000 for that factor;
  of x and y positions mixed by a 45 degree rotation: at most 0.010 for either.
- FactorVAE score of the factors: 1.000 (every seed); of 8 random dimensions:
  0.140-0.205 (chance is about 1/5); with one factor left out: 0.795-0.840; of an
  image-statistics encoder (centroid x, centroid y, mass) on rendered shapes: 0.54-0.66.
"""

import numpy as np
import pytest
import torch

import course_lib  # noqa: F401  (selects the torch backend before anything imports keras)
from course_lib import disentanglement, shapes

NUM_EXAMPLES = 4000
NOISE = 0.01
HIGH_MIG = 0.99
LOW_MIG = 0.01
MIXED_MIG = 0.05
HIGH_FACTOR_VAE = 0.98
RANDOM_FACTOR_VAE = 0.35
DROPPED_FACTOR_VAE = (0.7, 0.9)
IMAGE_STATISTICS_FACTOR_VAE = (0.45, 0.8)


@pytest.fixture(scope="module")
def factors():
    return shapes.sample_factor_indices(NUM_EXAMPLES, seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def noisy_copy(factors, rng):
    return factors + NOISE * rng.standard_normal(factors.shape)


def as_float(factor_indices):
    """A 'renderer' whose observations are the factors themselves."""
    return factor_indices.astype(np.float64)


# ---------------------------------------------------------------- mutual information


def test_mutual_information_of_small_tables_matches_hand_computation():
    codes = np.array([[0.0], [0.0], [1.0], [1.0]])
    same = np.array([[0], [0], [1], [1]])
    independent = np.array([[0], [1], [0], [1]])
    matrix = disentanglement.mutual_information_matrix(
        codes, np.concatenate([same, independent], axis=1), num_bins=2
    )
    np.testing.assert_allclose(matrix, [[np.log(2.0), 0.0]], atol=1e-12)


def test_mutual_information_equals_entropy_identity(rng):
    codes = rng.normal(size=(3000, 1))
    labels = rng.integers(0, 4, size=(3000, 1)) + (codes > 0.5).astype(np.int64)
    bins = disentanglement.discretize(codes, num_bins=5)[:, 0]
    matrix = disentanglement.mutual_information_matrix(codes, labels, num_bins=5)

    def entropy(values):
        probabilities = np.unique(values, return_counts=True)[1] / len(values)
        return -np.sum(probabilities * np.log(probabilities))

    joint = bins * 10 + labels[:, 0]
    expected = entropy(bins) + entropy(labels[:, 0]) - entropy(joint)
    assert matrix[0, 0] == pytest.approx(expected, abs=1e-10)
    assert matrix[0, 0] > 0.05


def test_discretize_spans_all_bins_from_minimum_to_maximum(rng):
    codes = np.stack([rng.uniform(-3, 5, size=1000), np.full(1000, 2.0)], axis=1)
    bins = disentanglement.discretize(codes, num_bins=20)
    assert bins.dtype == np.int64
    assert bins[np.argmin(codes[:, 0]), 0] == 0 and bins[np.argmax(codes[:, 0]), 0] == 19
    assert set(np.unique(bins[:, 0])) == set(range(20))
    assert np.all(bins[:, 1] == bins[0, 1])


def test_factor_entropies_of_uniform_factors(factors):
    expected = np.log(np.array(shapes.FACTOR_SIZES, dtype=np.float64))
    np.testing.assert_allclose(disentanglement.factor_entropies(factors), expected, rtol=0.01)


# ----------------------------------------------------------------------------- MIG


def test_mig_of_the_true_factors_is_near_one(factors, rng):
    assert disentanglement.mutual_information_gap(noisy_copy(factors, rng), factors) > HIGH_MIG


def test_mig_of_a_random_representation_is_near_zero(factors, rng):
    codes = rng.standard_normal((NUM_EXAMPLES, 10))
    assert disentanglement.mutual_information_gap(codes, factors) < LOW_MIG


def test_mig_ignores_permutation_scale_and_shift(factors, rng):
    codes = noisy_copy(factors, rng)
    permutation = rng.permutation(codes.shape[1])
    transformed = codes[:, permutation] * rng.uniform(0.1, 10.0, size=5) - 3.0
    original = disentanglement.mutual_information_gap(codes, factors)
    assert disentanglement.mutual_information_gap(transformed, factors) == pytest.approx(
        original, abs=1e-3
    )
    flipped = disentanglement.mutual_information_gap(-codes, factors)
    assert flipped > HIGH_MIG


def test_mig_of_a_duplicated_factor_is_near_zero(factors, rng):
    codes = noisy_copy(factors, rng)
    duplicated_shape = codes[:, :1] + NOISE * rng.standard_normal((NUM_EXAMPLES, 1))
    per_factor = disentanglement.mig_per_factor(
        np.concatenate([codes, duplicated_shape], axis=1), factors
    )
    assert per_factor[shapes.SHAPE_AXIS] < LOW_MIG
    assert np.all(per_factor[1:] > HIGH_MIG)


def test_mig_of_mixed_dimensions_is_low(factors, rng):
    codes = noisy_copy(factors, rng)
    standardized = (codes - codes.mean(axis=0)) / codes.std(axis=0)
    x_axis, y_axis = shapes.POSITION_X_AXIS, shapes.POSITION_Y_AXIS
    mixed = codes.copy()
    mixed[:, x_axis] = (standardized[:, x_axis] - standardized[:, y_axis]) / np.sqrt(2)
    mixed[:, y_axis] = (standardized[:, x_axis] + standardized[:, y_axis]) / np.sqrt(2)
    per_factor = disentanglement.mig_per_factor(mixed, factors)
    assert per_factor[x_axis] < MIXED_MIG and per_factor[y_axis] < MIXED_MIG
    assert np.all(per_factor[:x_axis] > HIGH_MIG)


def test_mig_accepts_torch_tensors(factors, rng):
    codes = noisy_copy(factors, rng)
    from_numpy = disentanglement.mutual_information_gap(codes, factors)
    from_torch = disentanglement.mutual_information_gap(
        torch.from_numpy(codes), torch.from_numpy(factors)
    )
    assert from_torch == pytest.approx(from_numpy)


@pytest.mark.parametrize(
    "codes_shape, factors_shape, message",
    [
        ((100, 5), (90, 5), r"codes.shape=\(100, 5\), factors.shape=\(90, 5\)"),
        ((100,), (100, 5), r"codes.shape=\(100,\)"),
        ((100, 5), (100,), r"factors.shape=\(100,\)"),
        ((1, 5), (1, 5), r"codes.shape=\(1, 5\)"),
    ],
)
def test_mig_rejects_mismatched_shapes(codes_shape, factors_shape, message):
    codes = np.zeros(codes_shape)
    factors = np.zeros(factors_shape, dtype=np.int64)
    with pytest.raises(ValueError, match=message):
        disentanglement.mutual_information_gap(codes, factors)


def test_mig_rejects_invalid_values(factors):
    codes = np.zeros((NUM_EXAMPLES, 3))
    with pytest.raises(ValueError, match="dtype=float64"):
        disentanglement.mutual_information_gap(codes, factors.astype(np.float64))
    with pytest.raises(ValueError, match=r"constant factor columns \[1\]"):
        constant = factors.copy()
        constant[:, 1] = 2
        disentanglement.mutual_information_gap(codes, constant)
    with pytest.raises(ValueError, match="num_bins=0"):
        disentanglement.mutual_information_gap(codes, factors, num_bins=0)
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        codes_with_nan = codes.copy()
        codes_with_nan[5, 2] = np.nan
        disentanglement.mutual_information_gap(codes_with_nan, factors)


# --------------------------------------------------------------------- FactorVAE score


def test_factor_vae_score_of_the_true_factors_is_one(rng):
    def encode(observations):
        return observations + NOISE * rng.standard_normal(observations.shape)

    score = disentanglement.factor_vae_score(encode, as_float, shapes.FACTOR_SIZES, seed=0)
    assert score > HIGH_FACTOR_VAE


def test_factor_vae_score_of_random_codes_is_near_chance(rng):
    def encode(observations):
        return rng.standard_normal((len(observations), 8))

    score = disentanglement.factor_vae_score(encode, as_float, shapes.FACTOR_SIZES, seed=0)
    assert score < RANDOM_FACTOR_VAE


def test_factor_vae_score_drops_when_a_factor_is_missing(rng):
    def encode(observations):
        without_shape = observations[:, 1:]
        return without_shape + NOISE * rng.standard_normal(without_shape.shape)

    score = disentanglement.factor_vae_score(encode, as_float, shapes.FACTOR_SIZES, seed=0)
    assert DROPPED_FACTOR_VAE[0] < score < DROPPED_FACTOR_VAE[1]


def test_factor_vae_score_is_zero_without_active_dimensions():
    def encode(observations):
        return np.zeros((len(observations), 4))

    assert disentanglement.factor_vae_score(encode, as_float, shapes.FACTOR_SIZES) == 0.0


@pytest.mark.slow
def test_factor_vae_score_on_rendered_images():
    """An encoder that reads the centre and the area off the image captures 3 factors."""

    def image_statistics(images):
        pixels = images[..., 0]
        rows, columns = np.mgrid[0 : pixels.shape[1], 0 : pixels.shape[2]] + 0.5
        mass = pixels.sum(axis=(1, 2))
        centre_x = (pixels * columns).sum(axis=(1, 2)) / mass
        centre_y = (pixels * rows).sum(axis=(1, 2)) / mass
        return np.stack([centre_x, centre_y, mass], axis=1)

    score = disentanglement.factor_vae_score(
        image_statistics,
        shapes.render,
        shapes.FACTOR_SIZES,
        num_train_votes=100,
        num_eval_votes=100,
        batch_size=32,
        num_variance_examples=1000,
        seed=0,
    )
    assert IMAGE_STATISTICS_FACTOR_VAE[0] < score < IMAGE_STATISTICS_FACTOR_VAE[1]


def test_factor_vae_score_validates_its_arguments():
    with pytest.raises(ValueError, match=r"factor_sizes=\[3, 1\]"):
        disentanglement.factor_vae_score(as_float, as_float, [3, 1])
    with pytest.raises(ValueError, match="batch_size=1"):
        disentanglement.factor_vae_score(as_float, as_float, [3, 4], batch_size=1)

    def wrong_rows(observations):
        return np.zeros((len(observations) + 1, 2))

    with pytest.raises(ValueError, match=r"codes.shape=\(5001, 2\) for 5000"):
        disentanglement.factor_vae_score(wrong_rows, as_float, [3, 4])


# -------------------------------------------------------------------- KL per dimension


def test_kl_per_dimension_matches_torch_distributions(rng):
    z_mean = rng.normal(size=(64, 6)) * np.array([0.0, 0.1, 0.5, 1.0, 2.0, 3.0])
    z_log_var = rng.normal(size=(64, 6)) * 0.5 - np.array([0.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    posterior = torch.distributions.Normal(
        torch.from_numpy(z_mean), torch.from_numpy(np.exp(0.5 * z_log_var))
    )
    prior = torch.distributions.Normal(torch.zeros(64, 6, dtype=torch.float64), 1.0)
    expected = torch.distributions.kl_divergence(posterior, prior).mean(dim=0).numpy()
    result = disentanglement.kl_per_dimension(z_mean, z_log_var)
    assert result.shape == (6,)
    np.testing.assert_allclose(result, expected, rtol=1e-10)


def test_kl_per_dimension_is_zero_for_the_prior_and_accepts_tensors():
    z_mean = torch.zeros(10, 3)
    z_log_var = torch.zeros(10, 3)
    np.testing.assert_allclose(disentanglement.kl_per_dimension(z_mean, z_log_var), 0.0)
    z_mean[:, 1] = 1.0  # KL = 0.5 * mu^2 for unit variance
    np.testing.assert_allclose(
        disentanglement.kl_per_dimension(z_mean, z_log_var), [0.0, 0.5, 0.0], atol=1e-7
    )


def test_kl_per_dimension_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"z_mean.shape=\(4, 3\), z_log_var.shape=\(4, 2\)"):
        disentanglement.kl_per_dimension(np.zeros((4, 3)), np.zeros((4, 2)))
