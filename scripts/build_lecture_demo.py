"""Writes lecture/lecture_demo.ipynb, the (ungraded) demo that follows the lecture.

The notebook is generated, never edited by hand: change the cells here and run

    .venv/bin/python scripts/build_lecture_demo.py

It is stored without outputs; tests/test_lecture_demo.py checks that the stored file is
what this script writes, and executes it.
"""

import pathlib
import sys

import nbformat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from notebook_cells import code, markdown, write  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK_PATH = REPO_ROOT / "lecture" / "lecture_demo.ipynb"

INTRODUCTION = r"""
# Lecture demo: generative models, latent spaces and variational autoencoders

This notebook follows the lecture in order, with real MNIST digits:

1. Generative modelling: learn $P_\text{model}(x)$ from samples of $P_\text{data}(x)$.
2. Transposed convolution: the lecture's worked example, and stride-2 upsampling.
3. Autoencoders: a 2-D versus a 5-D latent space.
4. The variational autoencoder (VAE): the reparameterization trick and the KL term.
5. Latent perturbation: vary one latent variable, keep the others fixed.
6. A preview of the beta-VAE.

It is not graded. All the models come from `course_lib`, the course library; sizes and
epochs come from `course_lib.settings("demo")`. The default `fast` profile trains small
models on a subset of MNIST (about a minute and a half on a laptop CPU); start Jupyter
with `COURSE_PROFILE=full` on a GPU for the whole data set and more epochs (sharper
images, clearer latent spaces).
"""

SETUP = r'''
import course_lib  # first: it makes Keras use the torch backend

import time

import keras
import matplotlib.pyplot as plt
import numpy as np
from keras import ops

from course_lib import plots
from course_lib import vae as vae_lib
from course_lib.autoencoder import build_autoencoder, reconstruction_error
from course_lib.data import load_mnist
from course_lib.disentanglement import kl_per_dimension
from course_lib.transposed_conv import keras_transposed_conv, transposed_conv2d_numpy

# course_lib.plots returns matplotlib Figures; a cell ending with one shows it.
%matplotlib inline

DEMO_START = time.perf_counter()
SEED = 1337
course_lib.set_seed(SEED)
print(course_lib.describe_device())
SETTINGS = course_lib.settings("demo")
print(f"profile: {course_lib.active_profile()}, settings: {SETTINGS}")

IMAGE_SHAPE = (28, 28, 1)
LEARNING_RATE = 3e-3
NUM_SHOWN = 10  # test digits shown in the reconstruction figures


def timed_fit(label, model, *fit_args, epochs, **fit_kwargs):
    """Trains `model` silently and prints the wall-clock seconds per epoch."""
    start = time.perf_counter()
    history = model.fit(*fit_args, epochs=epochs, verbose=0, **fit_kwargs)
    seconds_per_epoch = (time.perf_counter() - start) / epochs
    print(f"{label}: {epochs} epochs, {seconds_per_epoch:.1f} s per epoch")
    return history
'''

GENERATIVE = r"""
## 1. Generative modelling

The data come from an unknown distribution $P_\text{data}(x)$ over images; all we have
are samples from it (the training set). A generative model learns a distribution
$P_\text{model}(x)$ that is close to $P_\text{data}(x)$, so that we can **draw new
samples** from it: new digits that look like the training digits without being copies
of them. Here are some samples of $P_\text{data}$, real MNIST digits:
"""

LOAD_DATA = r"""
train_images, train_labels = load_mnist("train", limit=SETTINGS["train_examples"])
test_images, test_labels = load_mnist("test", limit=SETTINGS["test_examples"])
print(f"train: {train_images.shape}, test: {test_images.shape}")
plots.image_grid(train_images[:32], titles=[str(label) for label in train_labels[:32]])
"""

TRANSPOSED = r"""
## 2. Transposed convolution

A decoder has to go from a small code to a large image: it **upsamples**. A transposed
convolution does this by "painting" the output: every input value scales a copy of the
kernel, and the copies are added into the output, the copy of input pixel $(i, j)$ at
position $(i \cdot s, j \cdot s)$ for a stride $s$ (a scatter-add). Along one axis the
output has $(n - 1)\,s + k$ pixels for an input of $n$ pixels and a kernel of $k$.

The lecture's worked example: input $\begin{bmatrix}0 & 1\\ 2 & 3\end{bmatrix}$, kernel
$\begin{bmatrix}0 & 1\\ 2 & 3\end{bmatrix}$, stride 1. The four scaled copies
$0 \cdot K$, $1 \cdot K$, $2 \cdot K$ and $3 \cdot K$ overlap in the centre of the
$3 \times 3$ output. We compute it with a from-scratch numpy scatter-add and with
`keras.layers.Conv2DTranspose`; both must agree with the slide.
"""

LECTURE_EXAMPLE = r"""
lecture_input = np.array([[0, 1], [2, 3]])
lecture_kernel = np.array([[0, 1], [2, 3]])
numpy_output = transposed_conv2d_numpy(lecture_input, lecture_kernel, strides=1)
keras_output = keras_transposed_conv(lecture_input, lecture_kernel, strides=1)
print("lecture example (numpy):", numpy_output.astype(int).tolist())
print("lecture example (keras):", np.rint(keras_output).astype(int).tolist())
np.testing.assert_allclose(keras_output, numpy_output, atol=1e-5)
"""

STRIDE_TWO = r"""
With **stride 2** the copies move by two pixels per input pixel, so the output is about
twice as large: this is how the decoders below grow a $7 \times 7$ feature map to
$14 \times 14$ and then to the $28 \times 28$ image. With a $2 \times 2$ kernel the
copies tile the output without overlapping; with a $3 \times 3$ kernel they overlap on
every other row and column, which is where the "checkerboard" artefacts of transposed
convolutions come from. `padding="same"` crops the result to exactly $n \cdot s$ pixels.
"""

STRIDE_TWO_CODE = r"""
ones_kernel_2 = np.ones((2, 2))
ones_kernel_3 = np.ones((3, 3))
for kernel, padding in [(ones_kernel_2, "valid"), (ones_kernel_3, "valid"), (ones_kernel_3, "same")]:
    numpy_output = transposed_conv2d_numpy(lecture_input, kernel, strides=2, padding=padding)
    keras_output = keras_transposed_conv(lecture_input, kernel, strides=2, padding=padding)
    np.testing.assert_allclose(keras_output, numpy_output, atol=1e-5)
    print(f"kernel {kernel.shape}, stride 2, padding={padding!r}: output {numpy_output.shape}")
    print(numpy_output.astype(int))
"""

AUTOENCODER = r"""
## 3. Autoencoders: a 2-D versus a 5-D latent space

An autoencoder compresses an image $x$ into a code $z$ of a few numbers (the **latent
space**) with an encoder, and reconstructs $\hat{x}$ from $z$ with a decoder (stride-2
convolutions down, stride-2 transposed convolutions up). It is trained to make
$\hat{x}$ close to $x$ (mean squared error). The size of $z$ is a bottleneck: with 2
numbers per digit much is lost, with 5 much less. We train one autoencoder of each size
on the same data and compare their reconstruction errors on test digits.
"""

AUTOENCODER_CODE = r"""
LATENT_DIMS = (2, 5)
autoencoders, reconstructions = {}, {}
for latent_dim in LATENT_DIMS:
    course_lib.set_seed(SEED)
    autoencoder, encoder, decoder = build_autoencoder(latent_dim, IMAGE_SHAPE, LEARNING_RATE)
    timed_fit(f"autoencoder, latent_dim={latent_dim}", autoencoder, train_images, train_images,
              epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch_size"])
    error = reconstruction_error(autoencoder, test_images)
    print(f"latent_dim={latent_dim}: reconstruction error (MSE per pixel) {error:.4f}")
    autoencoders[latent_dim] = (autoencoder, encoder, decoder)
    reconstructions[f"latent {latent_dim}"] = autoencoder.predict(test_images[:NUM_SHOWN], verbose=0)
"""

RECONSTRUCTION_TEXT = r"""
Ground truth in the first row, the reconstructions below it: the 2-D autoencoder keeps
the rough shape and often turns a digit into a similar-looking one; the 5-D one keeps
more detail.
"""

RECONSTRUCTION_FIGURE = r"""
plots.reconstruction_grid(test_images[:NUM_SHOWN], reconstructions)
"""

AUTOENCODER_LATENT_TEXT = r"""
The 2-D codes of the test digits, coloured by their label (the autoencoder never saw
the labels). Digits of a class gather, but nothing shapes the space as a whole: the codes
spread over an arbitrary region, with gaps, so a code picked at random need not decode
to a digit. An autoencoder is not (yet) a generative model.
"""

AUTOENCODER_LATENT_CODE = r"""
autoencoder_codes = autoencoders[2][1].predict(test_images, verbose=0)
plots.latent_scatter(autoencoder_codes, test_labels)
"""

VAE_TEXT = r"""
## 4. The variational autoencoder (VAE)

The VAE (Kingma & Welling, 2014) makes the autoencoder generative. The encoder outputs a
distribution over codes, $q(z \mid x) = \mathcal{N}(\mu, \operatorname{diag}(\sigma^2))$
(in practice $\mu$ and $\log \sigma^2$), the decoder a distribution over images
$p(x \mid z)$, and the prior is $p(z) = \mathcal{N}(0, I)$. Training maximizes the
evidence lower bound (ELBO) of every image,

$$\log p(x) \;\ge\; \mathbb{E}_{q(z \mid x)}\left[\log p(x \mid z)\right]
  - \mathrm{KL}\left(q(z \mid x) \,\|\, p(z)\right),$$

i.e. it minimizes reconstruction $+$ KL: reconstruct well, but keep every posterior
close to the prior, which fills the latent space so that prior samples decode to digits.

**The reparameterization trick.** We cannot back-propagate through "draw $z$ from
$q(z \mid x)$". Instead we draw parameter-free noise and transform it:

$$z = \mu + \sigma \odot \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I),
  \qquad \sigma = \exp\left(\tfrac12 \log \sigma^2\right),$$

so $z$ is a differentiable function of $\mu$ and $\sigma$. The `Sampling` layer of
`course_lib.vae` does exactly this; many draws for one fixed $\mu$, $\log\sigma^2$ have
mean $\mu$ and variance $\sigma^2$:
"""

SAMPLING_CODE = r"""
sampler = vae_lib.Sampling(seed=SEED)
num_draws = 50_000
draw_mean = np.tile(np.array([[1.0, -2.0]], dtype="float32"), (num_draws, 1))
draw_log_var = np.tile(np.array([[0.0, 1.0]], dtype="float32"), (num_draws, 1))
draws = ops.convert_to_numpy(sampler([draw_mean, draw_log_var]))
print(f"mean of z: {draws.mean(axis=0).round(3)} (mu = [1, -2])")
print(f"variance of z: {draws.var(axis=0).round(3)} (sigma^2 = {np.exp([0.0, 1.0]).round(3)})")
"""

KL_TEXT = r"""
**The KL term, and a correction to the slide.** For a diagonal Gaussian posterior and
the standard normal prior, the KL divergence has a closed form, summed over the latent
dimensions $j$ (here $\sigma_j^2$ is the **variance**):

$$\mathrm{KL}\left(q(z \mid x) \,\|\, \mathcal{N}(0, I)\right)
  = \frac12 \sum_j \left(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\right) \;\ge\; 0.$$

The slide writes the loss term as $\frac12 \sum_j (1 + \log \sigma_j - \mu_j^2 - \sigma_j)$.
It has two mistakes: it writes $\sigma_j$ where the variance $\sigma_j^2$ belongs, and
its sign is flipped: $\frac12 \sum_j (1 + \log \sigma_j^2 - \mu_j^2 - \sigma_j^2)$ is
$-\mathrm{KL}$, the term as it appears inside the ELBO, which we maximize. The loss we
minimize contains $+\mathrm{KL}$, the formula above; minimizing $-\mathrm{KL}$ would push
the posteriors away from the prior.

**Why the KL is never negative.** Each term of the sum is
$(x - 1 - \log x) + \mu_j^2$ with $x = \sigma_j^2 > 0$. Now $\mu_j^2 \ge 0$, and
$x - 1 - \log x \ge 0$ for every $x > 0$: the line $x - 1$ lies above the concave curve
$\log x$ and touches it only at $x = 1$ (the derivative $1 - 1/x$ vanishes there, and
the value there is $0$). So the KL is $0$ only when $\mu = 0$ and $\sigma^2 = 1$, i.e. when
the posterior is the prior.

A numeric check: `course_lib.vae.kl_divergence` against a Monte Carlo estimate of the
definition $\mathrm{KL}(q \,\|\, p) = \mathbb{E}_{z \sim q}[\log q(z) - \log p(z)]$, and
the slide's formula with the variance in place of $\sigma$, which gives $-\mathrm{KL}$:
"""

KL_CODE = r"""
check_mean = np.array([[0.0, 0.0], [1.0, -0.5], [0.3, 2.0]], dtype="float32")
check_log_var = np.array([[0.0, 0.0], [0.5, -1.0], [-2.0, 1.5]], dtype="float32")
closed_form = ops.convert_to_numpy(vae_lib.kl_divergence(check_mean, check_log_var))
slide_with_variance = 0.5 * np.sum(1 + check_log_var - check_mean**2 - np.exp(check_log_var), axis=1)

rng = np.random.default_rng(SEED)
num_mc_samples = 200_000
for mean, log_var, kl, slide in zip(check_mean, check_log_var, closed_form, slide_with_variance):
    epsilon = rng.standard_normal((num_mc_samples, mean.size))
    z = mean + np.exp(0.5 * log_var) * epsilon
    # log q(z) - log p(z) of two diagonal Gaussians; the log(2 pi) terms cancel.
    log_ratio = np.sum(-0.5 * log_var - 0.5 * epsilon**2 + 0.5 * z**2, axis=1)
    standard_error = log_ratio.std() / np.sqrt(num_mc_samples)
    print(f"mu={mean}, log_var={log_var}: KL closed form {kl:.4f}, "
          f"Monte Carlo {log_ratio.mean():.4f} +- {standard_error:.4f}, slide (with variance) {slide:.4f}")
"""

VAE_TRAIN_TEXT = r"""
Now a small convolutional VAE with a 2-D latent space, trained on the same digits. The
decoder gives every pixel a Bernoulli probability; the loss is the negative ELBO in nats
per image (binary cross-entropy summed over the 784 pixels, plus the KL). We report it
on the test digits (lower is better).
"""

VAE_TRAIN_CODE = r"""
VAE_LATENT_DIM = 2
course_lib.set_seed(SEED)
vae = vae_lib.VAE(
    vae_lib.build_encoder(IMAGE_SHAPE, VAE_LATENT_DIM, seed=SEED),
    vae_lib.build_decoder(IMAGE_SHAPE, VAE_LATENT_DIM),
)
vae.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
timed_fit("VAE, latent_dim=2", vae, train_images, epochs=SETTINGS["epochs"], batch_size=SETTINGS["batch_size"])
test_terms = vae_lib.evaluate_elbo(vae, test_images)
print(f"test negative ELBO: {test_terms['elbo_nats_per_image']:.1f} nats per image "
      f"(reconstruction {test_terms['reconstruction']:.1f} + KL {test_terms['kl']:.1f})")
"""

VAE_SCATTER_TEXT = r"""
The means $\mu$ of the test digits, coloured by label. Unlike the autoencoder's codes,
they are held near the origin by the KL term, in the region where the prior
$\mathcal{N}(0, I)$ puts its mass (compare the axis ranges with the autoencoder's).
"""

VAE_SCATTER_CODE = r"""
test_z_mean, test_z_log_var, _ = vae.encoder.predict(test_images, verbose=0)
plots.latent_scatter(test_z_mean, test_labels)
"""

MANIFOLD_TEXT = r"""
The decoded manifold: a regular grid of codes $z \in [-2, 2]^2$, each decoded to an
image. Neighbouring codes give similar digits, and one digit morphs into the next.
"""

MANIFOLD_CODE = r"""
plots.decoded_manifold(vae.decoder, grid_size=15, span=2.0)
"""

PRIOR_TEXT = r"""
Generation: draw $z \sim \mathcal{N}(0, I)$ and decode it. These are new digits, samples
of $P_\text{model}(x)$ (blurry with a 2-D latent space and short training).
"""

PRIOR_CODE = r"""
prior_samples = vae_lib.sample_prior(vae.decoder, 32, VAE_LATENT_DIM, seed=SEED)
plots.image_grid(prior_samples)
"""

TRAVERSAL_TEXT = r"""
## 5. Latent perturbation

What does one latent variable control? Take the code $\mu$ of one test digit, vary one
dimension over a range of values and keep the other fixed: each row below moves along one
axis of the latent space. In a 2-D latent space each axis mixes several properties
(which digit, slant, thickness).
"""

TRAVERSAL_CODE = r"""
base_code = test_z_mean[0]
print(f"base code (digit {test_labels[0]}): {base_code.round(2)}")
plots.latent_traversal(vae.decoder, base_code, np.linspace(-2.5, 2.5, 9))
"""

BETA_TEXT = r"""
## 6. Preview: the beta-VAE

The beta-VAE (Higgins et al., 2017) weights the KL term by $\beta$:
minimize reconstruction $+ \beta \cdot \mathrm{KL}$. With $\beta > 1$ every latent
dimension pays more for carrying information, so the model uses fewer dimensions and
the ones it keeps tend to capture separate factors of the data ("disentanglement", the
topic of lab 5). A quick look with a 6-D latent space: the KL of each latent dimension to
the prior, averaged over the test digits
(`course_lib.disentanglement.kl_per_dimension`). A dimension with a KL near 0 is
unused: its posterior is the prior whatever the input.
"""

BETA_CODE = r"""
BETA_LATENT_DIM = 6
beta_train_images = train_images[: SETTINGS["beta_train_examples"]]
kl_by_beta = {}
for beta in SETTINGS["betas"]:
    course_lib.set_seed(SEED)
    beta_vae = vae_lib.VAE(
        vae_lib.build_encoder(IMAGE_SHAPE, BETA_LATENT_DIM, seed=SEED),
        vae_lib.build_decoder(IMAGE_SHAPE, BETA_LATENT_DIM),
        beta=beta,
    )
    beta_vae.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    timed_fit(f"beta-VAE, beta={beta:g}", beta_vae, beta_train_images, epochs=SETTINGS["beta_epochs"],
              batch_size=SETTINGS["batch_size"])
    z_mean, z_log_var, _ = beta_vae.encoder.predict(test_images, verbose=0)
    kl_by_beta[beta] = kl_per_dimension(z_mean, z_log_var)
    print(f"beta={beta:g}: KL per dimension {kl_by_beta[beta].round(2)} nats, "
          f"total {kl_by_beta[beta].sum():.2f}")

figure, axis = plt.subplots(figsize=(6, 3))
bar_width = 0.8 / len(kl_by_beta)
for index, (beta, kl_values) in enumerate(kl_by_beta.items()):
    axis.bar(np.arange(BETA_LATENT_DIM) + index * bar_width, kl_values, bar_width, label=f"beta={beta:g}")
axis.set_xlabel("latent dimension")
axis.set_ylabel("mean KL (nats)")
axis.legend();
"""

CLOSING = r"""
A larger $\beta$ leaves less information in the code: a smaller total KL, with most
dimensions pushed close to the prior. The price is a worse reconstruction; lab 5
measures whether the dimensions that stay in use are more disentangled.
"""

TOTAL_TIME_CODE = r"""
print(f"whole demo: {time.perf_counter() - DEMO_START:.0f} s")
"""

CELLS = [
    (markdown, INTRODUCTION), (code, SETUP),
    (markdown, GENERATIVE), (code, LOAD_DATA),
    (markdown, TRANSPOSED), (code, LECTURE_EXAMPLE), (markdown, STRIDE_TWO), (code, STRIDE_TWO_CODE),
    (markdown, AUTOENCODER), (code, AUTOENCODER_CODE),
    (markdown, RECONSTRUCTION_TEXT), (code, RECONSTRUCTION_FIGURE),
    (markdown, AUTOENCODER_LATENT_TEXT), (code, AUTOENCODER_LATENT_CODE),
    (markdown, VAE_TEXT), (code, SAMPLING_CODE), (markdown, KL_TEXT), (code, KL_CODE),
    (markdown, VAE_TRAIN_TEXT), (code, VAE_TRAIN_CODE),
    (markdown, VAE_SCATTER_TEXT), (code, VAE_SCATTER_CODE),
    (markdown, MANIFOLD_TEXT), (code, MANIFOLD_CODE), (markdown, PRIOR_TEXT), (code, PRIOR_CODE),
    (markdown, TRAVERSAL_TEXT), (code, TRAVERSAL_CODE),
    (markdown, BETA_TEXT), (code, BETA_CODE), (markdown, CLOSING), (code, TOTAL_TIME_CODE),
]


def build_notebook():
    """Returns the demo notebook, without outputs, with stable cell ids."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.cells = [make_cell(text) for make_cell, text in CELLS]
    for index, cell in enumerate(notebook.cells):
        cell.id = f"demo-{index:02d}"
    return notebook


def main():
    NOTEBOOK_PATH.parent.mkdir(exist_ok=True)
    write(build_notebook(), NOTEBOOK_PATH)
    print(f"wrote {NOTEBOOK_PATH.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
