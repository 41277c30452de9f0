"""Tests for course_lib.plots: each function returns a Figure of the expected layout."""

import types
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import course_lib  # noqa: E402,F401  (selects the torch backend before keras)
from course_lib import plots  # noqa: E402


def _images(num, height=8, width=8, channels=1, seed=0):
    return np.random.default_rng(seed).random((num, height, width, channels)).astype("float32")


def _num_images_drawn(figure):
    return sum(len(axis.get_images()) for axis in figure.axes)


class ConstantDecoder:
    """A stand-in decoder: image brightness = sigmoid of the sum of the code."""

    def __init__(self, image_shape=(6, 6, 1)):
        self.image_shape = image_shape
        self.calls = []

    def __call__(self, codes):
        codes = np.asarray(codes)
        self.calls.append(codes)
        brightness = 1.0 / (1.0 + np.exp(-codes.sum(axis=1)))
        return np.ones((len(codes), *self.image_shape)) * brightness[:, None, None, None]


@pytest.mark.parametrize("channels", [1, 3])
def test_image_grid_one_axis_per_image(channels):
    figure = plots.image_grid(_images(10, channels=channels), ncols=4)
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 10
    assert _num_images_drawn(figure) == 10
    assert figure.axes[0].get_subplotspec().get_geometry()[:2] == (3, 4)


def test_image_grid_titles_and_2d_images():
    titles = [f"digit {index}" for index in range(3)]
    figure = plots.image_grid(_images(3)[..., 0], titles=titles)
    assert [axis.get_title() for axis in figure.axes] == titles


def test_image_grid_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"images.shape=\(4, 8\)"):
        plots.image_grid(np.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"images.shape=\(2, 8, 8, 2\)"):
        plots.image_grid(np.zeros((2, 8, 8, 2)))
    with pytest.raises(ValueError, match="ncols=0"):
        plots.image_grid(_images(2), ncols=0)
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plots.image_grid(_images(3), titles=["a", "b"])


def test_reconstruction_grid_single_set():
    originals = _images(5)
    figure = plots.reconstruction_grid(originals, originals * 0.5)
    assert len(figure.axes) == 10
    assert [axis.get_ylabel() for axis in figure.axes[::5]] == ["original", "reconstruction"]


def test_reconstruction_grid_several_labelled_sets():
    originals = _images(4, channels=3)
    sets = {"2-D": originals * 0.5, "5-D": originals * 0.9}
    figure = plots.reconstruction_grid(originals, sets)
    assert len(figure.axes) == 12
    assert _num_images_drawn(figure) == 12
    assert [axis.get_ylabel() for axis in figure.axes[::4]] == ["original", "2-D", "5-D"]


def test_reconstruction_grid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"reconstructions\['5-D'\].shape=\(3, 8, 8, 1\)"):
        plots.reconstruction_grid(_images(4), {"5-D": _images(3)})
    with pytest.raises(ValueError, match="at least one set"):
        plots.reconstruction_grid(_images(4), {})


def test_latent_scatter_one_series_per_label():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 2))
    labels = rng.integers(0, 10, size=200)
    figure = plots.latent_scatter(z, labels)
    assert len(figure.axes) == 1
    assert len(figure.axes[0].collections) == len(np.unique(labels))
    legend_texts = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend_texts == [str(label) for label in np.unique(labels)]


def test_latent_scatter_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"z.shape=\(10, 3\)"):
        plots.latent_scatter(np.zeros((10, 3)), np.zeros(10))
    with pytest.raises(ValueError, match=r"labels.shape=\(9,\)"):
        plots.latent_scatter(np.zeros((10, 2)), np.zeros(9))


def test_decoded_manifold_tiles_the_grid():
    decoder = ConstantDecoder()
    figure = plots.decoded_manifold(decoder, grid_size=5, span=3.0)
    assert len(figure.axes) == 1
    mosaic = figure.axes[0].get_images()[0].get_array()
    assert mosaic.shape == (30, 30)
    codes = decoder.calls[0]
    assert codes.shape == (25, 2)
    assert codes.min() == pytest.approx(-3.0) and codes.max() == pytest.approx(3.0)
    # Top-right tile has the largest z[0] + z[1], bottom-left the smallest.
    assert mosaic[0, -1] > mosaic[-1, 0]


def test_decoded_manifold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="grid_size=0"):
        plots.decoded_manifold(ConstantDecoder(), grid_size=0)
    with pytest.raises(ValueError, match="span=-1"):
        plots.decoded_manifold(ConstantDecoder(), span=-1.0)


def test_latent_traversal_rows_are_dimensions():
    decoder = ConstantDecoder()
    base_z = np.array([0.5, -1.0, 2.0])
    values = np.linspace(-2.0, 2.0, 4)
    figure = plots.latent_traversal(decoder, base_z, values)
    assert len(figure.axes) == 12
    assert [axis.get_ylabel() for axis in figure.axes[::4]] == ["z[0]", "z[1]", "z[2]"]
    codes = decoder.calls[0].reshape(3, 4, 3)
    for dimension in range(3):
        np.testing.assert_allclose(codes[dimension, :, dimension], values)
        others = np.delete(codes[dimension], dimension, axis=1)
        np.testing.assert_allclose(others, np.tile(np.delete(base_z, dimension), (4, 1)))


def test_latent_traversal_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"base_z.shape=\(2, 3\)"):
        plots.latent_traversal(ConstantDecoder(), np.zeros((2, 3)), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"values.shape=\(0,\)"):
        plots.latent_traversal(ConstantDecoder(), np.zeros(3), [])


def test_training_curves_one_panel_per_metric():
    histories = {
        "2-D": {"loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.2, 1.9], "kl_loss": [1.0, 2.0, 2.5]},
        "5-D": {"loss": [2.5, 1.5, 1.0], "val_loss": [2.6, 1.8, 1.4], "kl_loss": [1.0, 3.0, 4.0]},
    }
    figure = plots.training_curves(histories)
    assert [axis.get_title() for axis in figure.axes] == ["loss", "kl_loss"]
    loss_axis, kl_axis = figure.axes
    assert len(loss_axis.get_lines()) == 4
    assert len(kl_axis.get_lines()) == 2
    assert [line.get_linestyle() for line in loss_axis.get_lines()] == ["-", "--", "-", "--"]


def test_training_curves_rejects_bad_inputs():
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.training_curves({})
    with pytest.raises(ValueError, match="Received for 'run': list"):
        plots.training_curves({"run": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"\['loss'\]: shape=\(\)"):
        plots.training_curves({"run": {"loss": 1.0}})


def test_decoded_manifold_and_traversal_with_a_keras_decoder():
    from course_lib.vae import build_decoder

    decoder = build_decoder((28, 28, 1), latent_dim=2)
    manifold = plots.decoded_manifold(decoder, grid_size=4, span=1.5)
    assert manifold.axes[0].get_images()[0].get_array().shape == (112, 112)
    traversal = plots.latent_traversal(decoder, np.zeros(2), [-1.0, 0.0, 1.0])
    assert _num_images_drawn(traversal) == 6


def test_returned_figures_display_as_png_in_a_notebook_kernel():
    from IPython.core.formatters import DisplayFormatter

    shell = types.SimpleNamespace(display_formatter=DisplayFormatter())
    figure = plots.image_grid(np.zeros((4, 28, 28, 1)))
    before, _ = shell.display_formatter.format(figure)
    assert "image/png" not in before
    assert plots.show_figures_in_notebook(shell) is True
    after, _ = shell.display_formatter.format(figure)
    assert after["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_outside_a_kernel_nothing_is_registered():
    assert plots.show_figures_in_notebook(types.SimpleNamespace()) is False
