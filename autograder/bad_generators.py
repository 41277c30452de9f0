"""Known-bad "generators" that calibrate the sample-quality measures.

Each function returns ``num_samples`` images shaped like the data set, float32 in
[0, 1], deterministic for a given seed. Together with real held-out images (the
upper reference) they show where a metric puts a failing and a working generator:

- `uniform_noise`: every pixel uniform in [0, 1].
- `mean_image`: the mean training image, repeated.
- `repeated_sample`: one real image, repeated (total mode collapse on a good image).
- `training_copies`: training images returned unchanged (memorization).
- `untrained_decoder`: the course VAE decoder (`course_lib.vae.build_decoder`) with its
  random initial weights, decoding codes drawn from N(0, I).
"""

import numpy as np

IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
UNTRAINED_DECODER_LATENT_DIM = 16


def _check_count(num_samples):
    is_integer = isinstance(num_samples, (int, np.integer)) and not isinstance(num_samples, bool)
    if not is_integer or num_samples < 1:
        raise ValueError(
            f"num_samples must be a positive int. Received: num_samples={num_samples!r}"
        )
    return int(num_samples)


def _check_dataset(dataset):
    if dataset not in IMAGE_SHAPES:
        raise ValueError(
            f"Unknown data set. Expected one of {sorted(IMAGE_SHAPES)}. "
            f"Received: dataset={dataset!r}"
        )
    return dataset


def uniform_noise(dataset, num_samples, seed=0):
    """Returns images whose pixels are independent uniform draws in [0, 1]."""
    shape = (_check_count(num_samples),) + IMAGE_SHAPES[_check_dataset(dataset)]
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def mean_image(training_images, num_samples):
    """Returns the pixel-wise mean of ``training_images`` repeated ``num_samples`` times."""
    average = np.mean(np.asarray(training_images, dtype="float64"), axis=0).astype("float32")
    return np.repeat(average[None], _check_count(num_samples), axis=0)


def repeated_sample(real_images, num_samples, seed=0):
    """Returns one randomly chosen image of ``real_images`` repeated ``num_samples`` times."""
    real_images = np.asarray(real_images, dtype="float32")
    index = np.random.default_rng(seed).integers(real_images.shape[0])
    return np.repeat(real_images[index : index + 1], _check_count(num_samples), axis=0)


def training_copies(training_images, num_samples, seed=0):
    """Returns ``num_samples`` distinct training images, unchanged."""
    training_images = np.asarray(training_images, dtype="float32")
    num_samples = _check_count(num_samples)
    if num_samples > training_images.shape[0]:
        raise ValueError(
            "Cannot draw more distinct copies than there are training images. Received: "
            f"num_samples={num_samples}, num_training_images={training_images.shape[0]}"
        )
    generator = np.random.default_rng(seed)
    indices = generator.choice(training_images.shape[0], num_samples, replace=False)
    return training_images[indices]


def untrained_decoder(dataset, num_samples, seed=0, latent_dim=UNTRAINED_DECODER_LATENT_DIM):
    """Decodes prior codes with a randomly initialised course decoder.

    Uses `course_lib.vae.build_decoder` and `course_lib.vae.sample_prior`; the
    initial weights and the codes both follow ``seed``.

    Raises:
        NotImplementedError: if `course_lib.vae` does not provide the decoder.
    """
    import course_lib

    try:
        from course_lib.vae import build_decoder, sample_prior
    except ImportError as error:
        raise NotImplementedError(
            "untrained_decoder needs course_lib.vae.build_decoder and sample_prior."
        ) from error
    course_lib.set_seed(int(seed))
    decoder = build_decoder(IMAGE_SHAPES[_check_dataset(dataset)], latent_dim)
    images = sample_prior(decoder, _check_count(num_samples), latent_dim, seed=int(seed))
    return np.clip(np.asarray(images, dtype="float32"), 0.0, 1.0)


def make_bad_samples(name, dataset, num_samples, seed, training_images, real_images):
    """Returns the samples of the bad generator called ``name``.

    Args:
        name: one of `BAD_GENERATOR_NAMES`.
        dataset: "mnist" or "cifar10".
        num_samples: how many images.
        seed: the seed.
        training_images: the images a generator would have trained on.
        real_images: real images the generator never saw (for `repeated_sample`).

    Raises:
        ValueError: on an unknown name.
    """
    if name == "uniform_noise":
        return uniform_noise(dataset, num_samples, seed)
    if name == "mean_image":
        return mean_image(training_images, num_samples)
    if name == "repeated_sample":
        return repeated_sample(real_images, num_samples, seed)
    if name == "training_copies":
        return training_copies(training_images, num_samples, seed)
    if name == "untrained_decoder":
        return untrained_decoder(dataset, num_samples, seed)
    raise ValueError(
        f"Unknown bad generator. Expected one of {list(BAD_GENERATOR_NAMES)}. "
        f"Received: name={name!r}"
    )


BAD_GENERATOR_NAMES = (
    "uniform_noise",
    "mean_image",
    "repeated_sample",
    "training_copies",
    "untrained_decoder",
)
