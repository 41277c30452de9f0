"""lab3: planted bugs written as students err, and correct variants written as students write them.

The full list (each row: what the student wrote -> the one check that must lose its points,
with words of its message; every other check keeps its points):

| planted bug                                   | kind            | check that loses             |
|-----------------------------------------------|-----------------|------------------------------|
| kl: -0.5 * sum(...)                           | sign            | test_kl_closed_form          |
| kl: no 0.5                                    | factor          | test_kl_closed_form          |
| kl: exp(0.5 log_var) for the variance         | wrong formula   | test_kl_closed_form          |
| kl: ops.sum(...) without axis (a scalar)      | reduction       | test_kl_sums_over_latent_dims|
| kl: ops.sum(..., axis=0)                      | wrong axis      | test_kl_sums_over_latent_dims|
| kl: ops.mean over the latent dimensions       | reduction       | test_kl_sums_over_latent_dims|
| kl: keepdims=True, shape (batch, 1)           | shape           | test_kl_sums_over_latent_dims|
| kl: the -1 left out                           | missing term    | test_kl_closed_form          |
| kl: log_var read as log(sigma)                | wrong formula   | test_kl_closed_form          |
| kl: the mu^2 term left out                    | missing term    | test_kl_closed_form          |
| Sampling: int seed stored, Sampling(seed=42)  | seeds (constr.) | test_sampling_fresh_noise    |
| Sampling: int seed only when one is given     | seeds (constr.) | test_sampling_fresh_noise    |
| Sampling: exp(log_var) as the std             | factor          | test_sampling_statistics     |
| Sampling: uniform noise                       | distribution    | test_sampling_normal_noise   |
| Sampling: no epsilon (z_mean + sigma)         | missing term    | test_sampling_normal_noise   |
| Sampling: noise only with training=True       | wrong mode      | test_sampling_normal_noise   |
| Sampling: stop_gradient on sigma              | stop-gradient   | test_sampling_gradients      |
| Sampling: exp(-0.5 log_var) as the std        | sign            | test_sampling_statistics     |
| Sampling: z_mean + sigma + epsilon            | wrong operation | test_sampling_statistics     |
| encoder: Sampling defined, z = z_mean         | unused layer    | test_model_shapes            |
| train_step: KL weight 0 (warm-up never set)   | zero term       | test_train_step              |
| train_step: stop_gradient on the KL           | stop-gradient   | test_train_step              |
| train_step: loss = reconstruction only        | missing term    | test_train_step              |
| train_step: KL summed over the batch          | weighting       | test_train_step              |
| train_step: BCE averaged over pixels          | reduction       | test_train_step              |
| train_step: decodes z_mean instead of z       | wrong input     | test_train_step              |
| train_step: zero_grad after backward          | wrong order     | test_train_step              |
| train_step: kl tracker fed the reconstruction | wrong value     | test_train_step              |
| train_step: loss = reconstruction - KL        | sign            | test_train_step              |
| train_step: squared error, not cross-entropy  | wrong loss      | test_train_step              |
| train_step: only the decoder's weights applied| unused weights  | test_train_step              |
| train_step: no zero_grad() at all             | missing step    | test_train_step              |
| train_step: KL averaged over latent dims      | reduction       | test_train_step              |

Correct variants (full marks): keras.io's KL, mean x latent_dim, expm1 KL, log(exp(log_var))
in place of log_var, an abs() around the (non-negative) terms, Sampling without
a SeedGenerator, sqrt(exp(log_var)), torch.randn_like, the solution's Sampling built with
seed=42, a mean over the batch of (reconstruction + KL), BCE on flattened images x 784, and
a KL written inline in train_step.

Probes run in this process (except `test_construction_bug_through_export_and_probe_process`,
which takes the grader's path: the kernel's export module, saved files, the sandboxed probe
process). The sample-quality checks read the correct baseline (no training here).
"""

import functools
import math

import nbformat
import numpy as np
import pytest
import torch

import keras
from keras import layers, ops

import check_grading
from check_grading import grade_lab
from test_lab3_checks import (  # noqa: F401  (digits and baseline_dir are fixtures)
    ALL_PROBES,
    VAE,
    ImagesDecoder,
    Sampling,
    baseline_dir,
    build_encoder,
    correct_namespace,
    digits,
    kl_divergence,
    pixel_cross_entropy,
)

KL_PROBES = ("kl", "origin")
SAMPLING_PROBES = ("sampling_statistics", "sampling_fresh_noise", "sampling_gradients", "origin")
TRAIN_PROBES = ("train_step", "origin")
MODEL_PROBES = ("model_shapes", "origin")
NOTEBOOK_SEED = 42


# ------------------------------------------------------------------ kl_divergence


def _kl_terms(z_mean, z_log_var):
    return ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var


def kl_sign(z_mean, z_log_var):
    return -0.5 * ops.sum(_kl_terms(z_mean, z_log_var), axis=-1)


def kl_no_half(z_mean, z_log_var):
    return ops.sum(_kl_terms(z_mean, z_log_var), axis=-1)


def kl_sigma_for_variance(z_mean, z_log_var):
    sigma = ops.exp(0.5 * z_log_var)
    return 0.5 * ops.sum(sigma + ops.square(z_mean) - 1.0 - ops.log(sigma), axis=-1)


def kl_scalar(z_mean, z_log_var):
    return 0.5 * ops.sum(_kl_terms(z_mean, z_log_var))


def kl_axis_0(z_mean, z_log_var):
    return 0.5 * ops.sum(_kl_terms(z_mean, z_log_var), axis=0)


def kl_mean(z_mean, z_log_var):
    return 0.5 * ops.mean(_kl_terms(z_mean, z_log_var), axis=-1)


def kl_keepdims(z_mean, z_log_var):
    return 0.5 * ops.sum(_kl_terms(z_mean, z_log_var), axis=-1, keepdims=True)


def kl_no_minus_one(z_mean, z_log_var):
    return 0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - z_log_var, axis=-1)


def kl_log_sigma(z_mean, z_log_var):
    return 0.5 * ops.sum(ops.exp(2.0 * z_log_var) + ops.square(z_mean) - 1.0 - 2.0 * z_log_var, axis=-1)


def kl_without_mean(z_mean, z_log_var):
    return 0.5 * ops.sum(ops.exp(z_log_var) - 1.0 - z_log_var, axis=-1)


def kl_log_of_variance(z_mean, z_log_var):
    variance = ops.exp(z_log_var)
    return 0.5 * ops.sum(variance + z_mean * z_mean - ops.log(variance) - 1.0, axis=-1)


def kl_abs(z_mean, z_log_var):
    return 0.5 * ops.sum(ops.abs(_kl_terms(z_mean, z_log_var)), axis=-1)


def kl_keras_io(z_mean, z_log_var):
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)


def kl_mean_times_dims(z_mean, z_log_var):
    return 0.5 * ops.mean(_kl_terms(z_mean, z_log_var), axis=-1) * ops.shape(z_mean)[-1]


def kl_expm1(z_mean, z_log_var):
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return ops.sum(0.5 * (ops.expm1(z_log_var) - z_log_var + ops.square(z_mean)), axis=-1)


# ------------------------------------------------------------------ Sampling


class SamplingIntSeed(layers.Layer):
    """The template's constructor, the seed used as an int in every call."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def call(self, inputs):
        z_mean, z_log_var = inputs
        return z_mean + ops.exp(0.5 * z_log_var) * keras.random.normal(ops.shape(z_mean), seed=self.seed)


class SamplingSeedWhenGiven(layers.Layer):
    """A SeedGenerator when no seed is given, the int seed itself otherwise."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.noise_seed = keras.random.SeedGenerator() if seed is None else seed

    def call(self, inputs):
        z_mean, z_log_var = inputs
        return z_mean + ops.exp(0.5 * z_log_var) * keras.random.normal(ops.shape(z_mean), seed=self.noise_seed)


class SamplingVarianceAsStd(Sampling):
    def standard_deviation(self, z_log_var):
        return ops.exp(z_log_var)


class SamplingUniform(Sampling):
    def noise(self, z_mean):
        bound = math.sqrt(3.0)
        return keras.random.uniform(ops.shape(z_mean), -bound, bound, seed=self.seed_generator)


class SamplingNoEpsilon(Sampling):
    def call(self, inputs):
        z_mean, z_log_var = inputs
        return z_mean + self.standard_deviation(z_log_var)


class SamplingOnlyInTraining(Sampling):
    def call(self, inputs, training=None):
        z_mean, z_log_var = inputs
        if not training:
            return z_mean
        return z_mean + self.standard_deviation(z_log_var) * self.noise(z_mean)


class SamplingDetachedSigma(Sampling):
    def standard_deviation(self, z_log_var):
        return ops.stop_gradient(ops.exp(0.5 * z_log_var))


class SamplingNegativeExponent(Sampling):
    def standard_deviation(self, z_log_var):
        return ops.exp(-0.5 * z_log_var)


class SamplingAddsSigma(Sampling):
    def call(self, inputs):
        z_mean, z_log_var = inputs
        return z_mean + self.standard_deviation(z_log_var) + self.noise(z_mean)


class SamplingWithSeed(layers.Layer):
    """The solution's layer: SeedGenerator(seed) in __init__, passed to every draw."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        return z_mean + ops.exp(0.5 * z_log_var) * keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)


class SamplingNoSeedGenerator(Sampling):
    def noise(self, z_mean):
        return keras.random.normal(ops.shape(z_mean))


class SamplingSqrtExp(Sampling):
    def standard_deviation(self, z_log_var):
        return ops.sqrt(ops.exp(z_log_var))


class SamplingRandnLike(Sampling):
    def noise(self, z_mean):
        return torch.randn_like(ops.convert_to_tensor(z_mean))


# ------------------------------------------------------------------ train_step


class VAEWithKLWeight(VAE):
    """A KL warm-up whose weight starts at 0 and is never raised."""

    kl_weight = 0.0

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self.zero_grad()
        z_mean, z_log_var, z = self.encoder(images, training=True)
        reconstruction_loss = self.reconstruction_loss(images, self.decoder(z, training=True))
        kl_loss = self.kl_weight * ops.mean(kl_divergence(z_mean, z_log_var))
        loss = reconstruction_loss + kl_loss
        self.apply_gradients(loss)
        return self.track(loss, reconstruction_loss, kl_loss)

    def track(self, loss, reconstruction_loss, kl_loss):
        self.loss_tracker.update_state(loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {metric.name: metric.result() for metric in self.metrics}


class StepVAE(VAEWithKLWeight):
    """train_step from named pieces, so that one planted bug changes one piece."""

    def kl_term(self, z_mean, z_log_var):
        return ops.mean(kl_divergence(z_mean, z_log_var))

    def total(self, reconstruction_loss, kl_loss):
        return reconstruction_loss + kl_loss

    def decoded(self, z_mean, z):
        return self.decoder(z, training=True)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self.zero_grad()
        z_mean, z_log_var, z = self.encoder(images, training=True)
        reconstruction_loss = self.reconstruction_loss(images, self.decoded(z_mean, z))
        kl_loss = self.kl_term(z_mean, z_log_var)
        loss = self.total(reconstruction_loss, kl_loss)
        self.apply_gradients(loss)
        return self.track(loss, reconstruction_loss, kl_loss)


class VAEDetachedKL(StepVAE):
    def kl_term(self, z_mean, z_log_var):
        return ops.stop_gradient(ops.mean(kl_divergence(z_mean, z_log_var)))


class VAEWithoutKL(StepVAE):
    def total(self, reconstruction_loss, kl_loss):
        return reconstruction_loss


class VAEKLSummedOverBatch(StepVAE):
    def kl_term(self, z_mean, z_log_var):
        return ops.sum(kl_divergence(z_mean, z_log_var))

    def total(self, reconstruction_loss, kl_loss):
        return reconstruction_loss + kl_loss


class VAEMeanOverPixels(StepVAE):
    def reconstruction_loss(self, images, reconstructions):
        return ops.mean(keras.losses.binary_crossentropy(images, reconstructions))


class VAEDecodesZMean(StepVAE):
    def decoded(self, z_mean, z):
        return self.decoder(z_mean, training=True)


class VAEZeroGradAfterBackward(StepVAE):
    def apply_gradients(self, loss):
        loss.backward()
        self.zero_grad()
        trainable_weights = list(self.trainable_weights)
        gradients = [weight.value.grad for weight in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)


class VAEKLTrackerGetsReconstruction(StepVAE):
    def track(self, loss, reconstruction_loss, kl_loss):
        return super().track(loss, reconstruction_loss, reconstruction_loss)


class VAEMinusKL(StepVAE):
    def total(self, reconstruction_loss, kl_loss):
        return reconstruction_loss - kl_loss


class VAESquaredError(StepVAE):
    def reconstruction_loss(self, images, reconstructions):
        return ops.mean(ops.sum(ops.square(images - reconstructions), axis=(1, 2)))


class VAEDecoderWeightsOnly(StepVAE):
    def apply_gradients(self, loss):
        loss.backward()
        trainable_weights = list(self.decoder.trainable_weights)
        gradients = [weight.value.grad for weight in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)


class VAEWithoutZeroGrad(StepVAE):
    def zero_grad(self):
        pass  # as if the student's train_step never called it


class VAEKLMeanOverDims(StepVAE):
    def kl_term(self, z_mean, z_log_var):
        return ops.mean(0.5 * ops.mean(_kl_terms(z_mean, z_log_var), axis=-1))


class VAEMeanOfSum(StepVAE):
    """Correct: one mean over the batch of the per-image (reconstruction + KL)."""

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self.zero_grad()
        z_mean, z_log_var, z = self.encoder(images, training=True)
        per_image_reconstruction = pixel_cross_entropy(images, self.decoder(z, training=True))
        per_image_kl = kl_divergence(z_mean, z_log_var)
        loss = ops.mean(per_image_reconstruction + per_image_kl)
        self.apply_gradients(loss)
        return self.track(loss, ops.mean(per_image_reconstruction), ops.mean(per_image_kl))


class VAEFlattenedCrossEntropy(StepVAE):
    """Correct: Keras' BCE on flattened images averages over 784 pixels; x 784 is the sum."""

    def reconstruction_loss(self, images, reconstructions):
        flat_images = ops.reshape(images, (ops.shape(images)[0], -1))
        flat_reconstructions = ops.reshape(reconstructions, (ops.shape(reconstructions)[0], -1))
        return ops.mean(keras.losses.binary_crossentropy(flat_images, flat_reconstructions) * 784.0)


class VAEInlineKL(StepVAE):
    """Correct: the KL written in train_step (keras.io's form), not through kl_divergence."""

    def kl_term(self, z_mean, z_log_var):
        per_example = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
        return ops.mean(per_example)


# ------------------------------------------------------------------ the tables


def _with(**objects):
    return objects


def _encoder_of(sampling_factory):
    return {"vae_encoder": sampling_factory}


# name -> (namespace changes, probes run, check that loses, words of its message)
PLANTED_BUGS = {
    "kl sign": (_with(kl_divergence=kl_sign), KL_PROBES, "test_kl_closed_form", ("sign",)),
    "kl no 0.5": (_with(kl_divergence=kl_no_half), KL_PROBES, "test_kl_closed_form", ("twice", "0.5")),
    "kl sigma for the variance": (_with(kl_divergence=kl_sigma_for_variance), KL_PROBES, "test_kl_closed_form",
                                  ("standard deviation", "variance")),
    "kl a scalar": (_with(kl_divergence=kl_scalar), KL_PROBES, "test_kl_sums_over_latent_dims",
                    ("single number for the whole batch", "shape ()", "axis=-1")),
    "kl summed over axis 0": (_with(kl_divergence=kl_axis_0), KL_PROBES, "test_kl_sums_over_latent_dims",
                              ("shape (5,)", "axis 0", "axis=-1")),
    "kl mean over dims": (_with(kl_divergence=kl_mean), KL_PROBES, "test_kl_sums_over_latent_dims",
                          ("averages over the latent dimensions",)),
    "kl keepdims": (_with(kl_divergence=kl_keepdims), KL_PROBES, "test_kl_sums_over_latent_dims",
                    ("(64, 1)",)),
    "kl without the -1": (_with(kl_divergence=kl_no_minus_one), KL_PROBES, "test_kl_closed_form",
                          ("0.5 too large", "-1 term is missing")),
    "kl log_var as log sigma": (_with(kl_divergence=kl_log_sigma), KL_PROBES, "test_kl_closed_form",
                                ("log(sigma)", "exp(z_log_var)")),
    "kl without mu^2": (_with(kl_divergence=kl_without_mean), KL_PROBES, "test_kl_closed_form",
                        ("ignores z_mean", "mu^2")),
    "sampling int seed, built with seed=42": (
        dict(Sampling=SamplingIntSeed, **_encoder_of(functools.partial(SamplingIntSeed, seed=NOTEBOOK_SEED))),
        SAMPLING_PROBES, "test_sampling_fresh_noise", ("Sampling(seed=42)", "same z", "int seed")),
    "sampling seed fixed when given": (
        dict(Sampling=SamplingSeedWhenGiven,
             **_encoder_of(functools.partial(SamplingSeedWhenGiven, seed=NOTEBOOK_SEED))),
        SAMPLING_PROBES, "test_sampling_fresh_noise", ("Sampling(seed=42)", "fresh noise")),
    "sampling variance as std": (_with(Sampling=SamplingVarianceAsStd), SAMPLING_PROBES, "test_sampling_statistics",
                                 ("exp(0.5 * z_log_var)", "variance")),
    "sampling exp(-0.5 log_var)": (_with(Sampling=SamplingNegativeExponent), SAMPLING_PROBES,
                                   "test_sampling_statistics", ("variance of z is not exp(z_log_var)",)),
    "sampling adds sigma": (_with(Sampling=SamplingAddsSigma), SAMPLING_PROBES, "test_sampling_statistics",
                            ("mean of z", "not z_mean")),
    "sampling uniform noise": (_with(Sampling=SamplingUniform), SAMPLING_PROBES, "test_sampling_normal_noise",
                               ("not normally distributed",)),
    "sampling no epsilon": (_with(Sampling=SamplingNoEpsilon), SAMPLING_PROBES, "test_sampling_normal_noise",
                            ("no random noise", "the same", "in every draw")),
    "sampling noise only in training": (_with(Sampling=SamplingOnlyInTraining), SAMPLING_PROBES,
                                        "test_sampling_normal_noise",
                                        ("without training", "z equals z_mean", "whatever `training` is")),
    "sampling detached sigma": (_with(Sampling=SamplingDetachedSigma), SAMPLING_PROBES, "test_sampling_gradients",
                                ("dz/dz_log_var", "detached")),
    "encoder without its Sampling": ({"vae_encoder": "z_mean"}, MODEL_PROBES, "test_model_shapes",
                                     ("z equals z_mean", "Sampling layer")),
    "train_step KL weight 0": (_with(VAE=VAEWithKLWeight), TRAIN_PROBES, "test_train_step",
                               ("no KL gradient", "always 0")),
    "train_step detached KL": (_with(VAE=VAEDetachedKL), TRAIN_PROBES, "test_train_step",
                               ("no KL gradient", "detached")),
    "train_step without KL": (_with(VAE=VAEWithoutKL), TRAIN_PROBES, "test_train_step",
                              ("no KL gradient", "missing")),
    "train_step KL summed over the batch": (_with(VAE=VAEKLSummedOverBatch), TRAIN_PROBES, "test_train_step",
                                            ("KL term", "weight 128", "summed over the batch")),
    "train_step BCE averaged over pixels": (_with(VAE=VAEMeanOverPixels), TRAIN_PROBES, "test_train_step",
                                            ("summed over the 784 pixels",)),
    "train_step decodes z_mean": (_with(VAE=VAEDecodesZMean), TRAIN_PROBES, "test_train_step",
                                  ("decodes z_mean", "self.decoder(z)")),
    "train_step zero_grad after backward": (_with(VAE=VAEZeroGradAfterBackward), TRAIN_PROBES, "test_train_step",
                                            ("no gradients", "self.zero_grad()", "before loss.backward()")),
    "train_step kl tracker fed the reconstruction": (_with(VAE=VAEKLTrackerGetsReconstruction), TRAIN_PROBES,
                                                     "test_train_step", ("'kl_loss' logged", "update_state(kl_loss)")),
    "train_step loss minus KL": (_with(VAE=VAEMinusKL), TRAIN_PROBES, "test_train_step", ("weight -1",)),
    "train_step squared error": (_with(VAE=VAESquaredError), TRAIN_PROBES, "test_train_step",
                                 ("squared error", "binary cross-entropy")),
    "train_step decoder weights only": (_with(VAE=VAEDecoderWeightsOnly), TRAIN_PROBES, "test_train_step",
                                        ("did not change the encoder's weights", "self.trainable_weights")),
    "train_step without zero_grad": (_with(VAE=VAEWithoutZeroGrad), TRAIN_PROBES, "test_train_step",
                                     ("previous step's gradients", "self.zero_grad()")),
    "train_step KL averaged over latent dims": (_with(VAE=VAEKLMeanOverDims), TRAIN_PROBES, "test_train_step",
                                                ("weight 0.5", "averaged over the probe's 2 latent dimensions")),
}

# name -> (namespace changes, probes run)
CORRECT_VARIANTS = {
    "kl keras.io form": (_with(kl_divergence=kl_keras_io), KL_PROBES + TRAIN_PROBES),
    "kl mean x latent_dim": (_with(kl_divergence=kl_mean_times_dims), KL_PROBES),
    "kl expm1": (_with(kl_divergence=kl_expm1), KL_PROBES),
    "kl log(exp(log_var))": (_with(kl_divergence=kl_log_of_variance), KL_PROBES),
    "kl abs of the terms": (_with(kl_divergence=kl_abs), KL_PROBES),
    "sampling without SeedGenerator": (_with(Sampling=SamplingNoSeedGenerator), SAMPLING_PROBES),
    "sampling sqrt(exp)": (_with(Sampling=SamplingSqrtExp), SAMPLING_PROBES),
    "sampling torch.randn_like": (_with(Sampling=SamplingRandnLike), SAMPLING_PROBES),
    "sampling SeedGenerator(seed), built with seed=42": (
        dict(Sampling=SamplingWithSeed, **_encoder_of(functools.partial(SamplingWithSeed, seed=NOTEBOOK_SEED))),
        SAMPLING_PROBES + MODEL_PROBES),
    "train_step mean of (reconstruction + KL)": (_with(VAE=VAEMeanOfSum), TRAIN_PROBES),
    "train_step BCE on flattened images x 784": (_with(VAE=VAEFlattenedCrossEntropy), TRAIN_PROBES),
    "train_step inline keras.io KL": (_with(VAE=VAEInlineKL), TRAIN_PROBES),
}


def _encoder_without_sampling():
    encoder = build_encoder()
    images = encoder.inputs[0]
    z_mean, z_log_var, _ = encoder.outputs
    return keras.Model(images, [z_mean, z_log_var, layers.Identity()(z_mean)])


def make_namespace(digits, changes):
    """The correct namespace with `changes`; "vae_encoder" rebuilds the vae's encoder."""
    namespace = correct_namespace(digits)
    changes = dict(changes)
    encoder_choice = changes.pop("vae_encoder", None)
    namespace.update(changes)
    if encoder_choice == "z_mean":
        namespace["vae"] = VAE(_encoder_without_sampling(), namespace["vae"].decoder)
    elif encoder_choice is not None:
        namespace["vae"] = VAE(build_encoder(encoder_choice), namespace["vae"].decoder)
        namespace["sampler"] = encoder_choice()  # the notebook's own `sampler = Sampling(seed=SEED)`
    return namespace


def grade(namespace, tmp_path, baseline_dir, probes):
    return grade_lab("lab3", namespace, tmp_path, baseline_dir, ALL_PROBES, probes)


def _is_slow(probes):
    return "train_step" in probes


def _cases(table):
    return [pytest.param(name, marks=[pytest.mark.slow] if _is_slow(table[name][1]) else []) for name in table]


def test_the_tables_cover_every_kind_of_mistake():
    assert len(PLANTED_BUGS) >= 10 and len(CORRECT_VARIANTS) >= 6
    graded = {check for _, _, check, _ in PLANTED_BUGS.values()}
    assert graded == set(check_grading.check_points("lab3")) - {"test_own_implementation", "test_sample_quality",
                                                                  "test_samples_are_not_copies"}


@pytest.mark.parametrize("name", _cases(PLANTED_BUGS))
def test_planted_bug_loses_exactly_its_check(name, digits, tmp_path, baseline_dir):
    changes, probes, check_name, words = PLANTED_BUGS[name]
    results = grade(make_namespace(digits, changes), tmp_path, baseline_dir, probes)
    check_grading.assert_loses_exactly("lab3", results, check_name, *words)


@pytest.mark.parametrize("name", _cases(CORRECT_VARIANTS))
def test_correct_variant_keeps_full_marks(name, digits, tmp_path, baseline_dir):
    changes, probes = CORRECT_VARIANTS[name]
    results = grade(make_namespace(digits, changes), tmp_path, baseline_dir, probes)
    check_grading.assert_full_marks("lab3", results)


def test_a_notebook_layer_is_tested_beside_a_fresh_one(digits, tmp_path, baseline_dir):
    changes = PLANTED_BUGS["sampling int seed, built with seed=42"][0]
    results = grade(make_namespace(digits, changes), tmp_path, baseline_dir, SAMPLING_PROBES)
    message = results["test_sampling_fresh_noise"].message
    assert "fresh layer" not in message  # the fresh Sampling() draws fresh noise: the notebook's does not
    assert "vae.encoder's layer" in message or "`sampler`" in message


# ------------------------------------------------------------------ the grader's own path

NOTEBOOK_IMPORTS = "import keras\nfrom keras import layers, ops\n"
NOTEBOOK_BUILD = """
images = keras.Input(shape=(28, 28, 1))
hidden = layers.Dense(16, activation="relu")(layers.Flatten()(images))
z_mean = layers.Dense(2)(hidden)
z_log_var = layers.Dense(2)(hidden)
z = Sampling(seed=42, name="z")([z_mean, z_log_var])
codes = keras.Input(shape=(2,))
pixels = layers.Dense(784, activation="sigmoid")(codes)

class Pair:
    pass

vae = Pair()
vae.encoder = keras.Model(images, [z_mean, z_log_var, z])
vae.decoder = keras.Model(codes, layers.Reshape((28, 28, 1))(pixels))
sampler = Sampling(seed=7)
"""


def _int_seed_source():
    import inspect

    return inspect.getsource(SamplingIntSeed).replace("class SamplingIntSeed", "class Sampling")


@pytest.mark.slow
def test_construction_bug_through_export_and_probe_process(tmp_path):
    """The kernel's export module saves what a notebook built; the sandboxed probe process
    rebuilds the notebook's layers from the saved files with the notebook's own class."""
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source)
                  for source in (NOTEBOOK_IMPORTS, _int_seed_source(), NOTEBOOK_BUILD)]
    results, statuses = check_grading.grade_through_probe_process(
        "lab3", book, tmp_path, items=SAMPLING_PROBES, checks=[
            "test_sampling_statistics", "test_sampling_normal_noise", "test_sampling_fresh_noise",
            "test_sampling_gradients"])
    labels = statuses["sampling_fresh_noise"]["facts"]["layers"]
    assert labels[0] == "Sampling(), a fresh layer"
    assert any("seed=42" in label and "vae.encoder's layer 'z'" in label for label in labels), labels
    assert any("seed=7" in label and "`sampler`" in label for label in labels), labels
    assert check_grading.failed(results) == {"test_sampling_fresh_noise"}, {
        name: result.message for name, result in results.items()}
    assert "int seed" in results["test_sampling_fresh_noise"].message
