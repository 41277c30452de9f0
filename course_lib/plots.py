"""Figures for the course: image grids, reconstructions, latent spaces, training curves.

Every function returns a `matplotlib.figure.Figure` and never calls `plt.show()`, so it
works with the non-interactive "Agg" backend (CI, the grader) as well as in notebooks,
where the returned figure is displayed. Images are arrays `(num, height, width)` or
`(num, height, width, channels)` with 1 or 3 channels and values in [0, 1].

Example:

```python
from course_lib import plots

figure = plots.reconstruction_grid(test_images[:8], {"2-D": recon_2d, "5-D": recon_5d})
figure.savefig("reconstructions.png")
```
"""

import sys

import numpy as np
from matplotlib.figure import Figure

CELL_INCHES = 1.2
SCATTER_INCHES = 6.0
CURVE_INCHES = (5.0, 3.5)
MAX_GRID_IMAGES = 400
GRAYSCALE_CMAP = "gray"
DEFAULT_NCOLS = 8
NOTEBOOK_FIGURE_FORMAT = "png"


def show_figures_in_notebook(shell=None):
    """Makes an IPython kernel draw returned Figures as PNG images.

    The figures here are plain `Figure` objects (not managed by pyplot, so they never
    pile up in memory). Jupyter only draws such an object once pyplot's inline backend
    has been loaded; a notebook that has not imported pyplot would print
    `<Figure size ...>` instead. Called when this module is imported in a kernel.

    Args:
        shell: the IPython shell; the running one by default.

    Returns:
        True if a kernel was found and the PNG formatter registered, False otherwise.
    """
    if shell is None:
        # A kernel has imported IPython already; elsewhere, do not import it just to ask.
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    from IPython.core.pylabtools import print_figure

    formatter = shell.display_formatter.formatters[f"image/{NOTEBOOK_FIGURE_FORMAT}"]
    formatter.for_type(
        Figure, lambda figure: print_figure(figure, NOTEBOOK_FIGURE_FORMAT, bbox_inches="tight")
    )
    return True


def _validated_images(images, name="images"):
    """Returns `images` as float32 `(num, height, width, channels)` with 1 or 3 channels."""
    images = np.asarray(images, dtype="float32")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty array (num, height, width) or "
            f"(num, height, width, channels) with 1 or 3 channels. "
            f"Received: {name}.shape={np.shape(images)}"
        )
    return images


def _validated_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def _show_image(axis, image):
    """Draws one `(height, width, channels)` image on `axis` without ticks."""
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap=GRAYSCALE_CMAP, vmin=0.0, vmax=1.0)
    else:
        axis.imshow(np.clip(image, 0.0, 1.0))
    axis.set_xticks([])
    axis.set_yticks([])


def _decode(decoder, codes):
    """Runs `decoder` on float32 `codes` and returns numpy images."""
    codes = np.asarray(codes, dtype="float32")
    if hasattr(decoder, "predict"):
        return np.asarray(decoder.predict(codes, verbose=0))
    outputs = decoder(codes)
    if isinstance(outputs, np.ndarray):
        return outputs
    import keras

    return keras.ops.convert_to_numpy(outputs)


def image_grid(images, ncols=DEFAULT_NCOLS, titles=None):
    """Shows images in a grid, row by row.

    Args:
        images: `(num, height, width[, channels])` in [0, 1], at most 400 images.
        ncols: images per row.
        titles: optional list of `num` strings, one above each image.

    Returns:
        A Figure with one axis per image (`num` axes).

    Raises:
        ValueError: on badly shaped images, a non-positive `ncols`, too many images or a
            `titles` list of the wrong length.
    """
    images = _validated_images(images)
    ncols = _validated_positive_int(ncols, "ncols")
    num_images = len(images)
    if num_images > MAX_GRID_IMAGES:
        raise ValueError(
            f"`image_grid` shows at most {MAX_GRID_IMAGES} images. "
            f"Received: {num_images} images"
        )
    if titles is not None and len(titles) != num_images:
        raise ValueError(
            f"`titles` needs one entry per image. Received: {len(titles)} titles "
            f"for {num_images} images"
        )
    ncols = min(ncols, num_images)
    nrows = -(-num_images // ncols)
    figure = Figure(figsize=(CELL_INCHES * ncols, CELL_INCHES * nrows), layout="constrained")
    for index, image in enumerate(images):
        axis = figure.add_subplot(nrows, ncols, index + 1)
        _show_image(axis, image)
        if titles is not None:
            axis.set_title(str(titles[index]), fontsize="small")
    return figure


def reconstruction_grid(originals, reconstructions):
    """Ground truth in the first row, one row per set of reconstructions below it.

    Args:
        originals: `(num, height, width[, channels])` in [0, 1].
        reconstructions: an array shaped like `originals`, or a dict
            `{label: array}` of several reconstruction sets (e.g. `{"2-D": ...,
            "5-D": ...}`), each shaped like `originals`.

    Returns:
        A Figure with `num * (1 + number of sets)` image axes; each row is labelled.

    Raises:
        ValueError: if a reconstruction set's shape differs from `originals`, or on an
            empty dict.
    """
    originals = _validated_images(originals, "originals")
    if not isinstance(reconstructions, dict):
        reconstructions = {"reconstruction": reconstructions}
    if not reconstructions:
        raise ValueError("`reconstructions` must hold at least one set. Received: {}")
    rows = [("original", originals)]
    for label, images in reconstructions.items():
        images = _validated_images(images, f"reconstructions[{label!r}]")
        if images.shape != originals.shape:
            raise ValueError(
                f"Each reconstruction set must match `originals` in shape. Received: "
                f"reconstructions[{label!r}].shape={images.shape}, "
                f"originals.shape={originals.shape}"
            )
        rows.append((str(label), images))

    num_images = len(originals)
    figure = Figure(
        figsize=(CELL_INCHES * num_images, CELL_INCHES * len(rows)), layout="constrained"
    )
    for row_index, (label, images) in enumerate(rows):
        for column, image in enumerate(images):
            axis = figure.add_subplot(len(rows), num_images, row_index * num_images + column + 1)
            _show_image(axis, image)
            if column == 0:
                axis.set_ylabel(label, fontsize="small")
    return figure


def latent_scatter(z, labels, class_names=None):
    """Scatter plot of 2-D latent codes, coloured by label, with a legend.

    Args:
        z: `(num, 2)` latent codes (e.g. z_mean of the test set).
        labels: `(num,)` integer labels.
        class_names: optional sequence mapping a label to its name in the legend.

    Returns:
        A Figure with one axis.

    Raises:
        ValueError: if `z` is not `(num, 2)` or `labels` is not `(num,)`.
    """
    z = np.asarray(z, dtype="float32")
    labels = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] != 2 or z.shape[0] == 0:
        raise ValueError(
            "`z` must be a non-empty array (num, 2); for more latent dimensions, project "
            f"to 2-D first. Received: z.shape={z.shape}"
        )
    if labels.shape != (z.shape[0],):
        raise ValueError(
            f"`labels` must be (num,) with num = len(z). Received: labels.shape="
            f"{labels.shape}, z.shape={z.shape}"
        )
    figure = Figure(figsize=(SCATTER_INCHES, SCATTER_INCHES), layout="constrained")
    axis = figure.add_subplot()
    for index, label in enumerate(np.unique(labels)):
        mask = labels == label
        name = class_names[int(label)] if class_names is not None else str(label)
        axis.scatter(z[mask, 0], z[mask, 1], s=4, alpha=0.6, label=name, color=f"C{index % 10}")
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    axis.legend(markerscale=3, fontsize="small", loc="best")
    return figure


def decoded_manifold(decoder, grid_size=15, span=2.0):
    """Decodes a regular grid of 2-D latent codes and tiles the images.

    The grid covers `[-span, span]` on both axes; row 0 is the top (largest z[1]), as
    on a usual plot.

    Args:
        decoder: a model (or callable) mapping `(batch, 2)` codes to images.
        grid_size: number of codes per axis.
        span: half-width of the square of codes, a positive number.

    Returns:
        A Figure with one axis showing one tiled image.

    Raises:
        ValueError: on a non-positive `grid_size` or `span`, or if the decoder does not
            produce images.
    """
    grid_size = _validated_positive_int(grid_size, "grid_size")
    if not isinstance(span, (int, float)) or isinstance(span, bool) or span <= 0:
        raise ValueError(f"`span` must be a positive number. Received: span={span!r}")
    values = np.linspace(-span, span, grid_size)
    z1, z0 = np.meshgrid(values[::-1], values, indexing="ij")
    codes = np.stack([z0.ravel(), z1.ravel()], axis=-1)
    images = _validated_images(_decode(decoder, codes), "decoder outputs")
    _, height, width, channels = images.shape
    tiles = images.reshape(grid_size, grid_size, height, width, channels)
    mosaic = tiles.transpose(0, 2, 1, 3, 4).reshape(grid_size * height, grid_size * width, channels)

    figure = Figure(figsize=(SCATTER_INCHES, SCATTER_INCHES), layout="constrained")
    axis = figure.add_subplot()
    extent = (-span, span, -span, span)
    if channels == 1:
        axis.imshow(mosaic[..., 0], cmap=GRAYSCALE_CMAP, vmin=0.0, vmax=1.0, extent=extent)
    else:
        axis.imshow(np.clip(mosaic, 0.0, 1.0), extent=extent)
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    return figure


def latent_traversal(decoder, base_z, values):
    """Varies one latent dimension at a time around `base_z`.

    Row `d` shows the decoded images of `base_z` with dimension `d` set to each entry of
    `values` (the other dimensions stay fixed).

    Args:
        decoder: a model (or callable) mapping `(batch, latent_dim)` codes to images.
        base_z: `(latent_dim,)` code to start from.
        values: 1-D sequence of values given to each dimension in turn.

    Returns:
        A Figure with `latent_dim * len(values)` image axes.

    Raises:
        ValueError: if `base_z` or `values` is not a non-empty 1-D array.
    """
    base_z = np.asarray(base_z, dtype="float32")
    values = np.asarray(values, dtype="float32")
    if base_z.ndim != 1 or base_z.size == 0:
        raise ValueError(
            f"`base_z` must be one code, shape (latent_dim,). Received: base_z.shape={base_z.shape}"
        )
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"`values` must be a non-empty 1-D sequence. Received: values.shape={values.shape}"
        )
    latent_dim, num_values = base_z.size, values.size
    codes = np.repeat(base_z[np.newaxis, np.newaxis, :], num_values, axis=1)
    codes = np.repeat(codes, latent_dim, axis=0)
    for dimension in range(latent_dim):
        codes[dimension, :, dimension] = values
    images = _validated_images(_decode(decoder, codes.reshape(-1, latent_dim)), "decoder outputs")

    figure = Figure(
        figsize=(CELL_INCHES * num_values, CELL_INCHES * latent_dim), layout="constrained"
    )
    for index, image in enumerate(images):
        dimension, column = divmod(index, num_values)
        axis = figure.add_subplot(latent_dim, num_values, index + 1)
        _show_image(axis, image)
        if column == 0:
            axis.set_ylabel(f"z[{dimension}]", fontsize="small")
        if dimension == 0:
            axis.set_title(f"{values[column]:.2g}", fontsize="small")
    return figure


def training_curves(histories):
    """One panel per metric, one line per run (validation metrics dashed).

    Args:
        histories: `{run_name: history_dict}`, where a history dict maps metric names to
            per-epoch values (e.g. `model.fit(...).history`). Metrics named `val_<name>`
            are drawn in the panel of `<name>`.

    Returns:
        A Figure with one axis per metric name (without the `val_` prefix).

    Raises:
        ValueError: on an empty dict, a history that is not a dict of non-empty value
            lists, or a `fit` History object passed instead of its `.history`.
    """
    if not isinstance(histories, dict) or not histories:
        raise ValueError(
            "`histories` must be a non-empty dict {run_name: history_dict}. "
            f"Received: {type(histories).__name__}"
        )
    metric_names = []
    for run_name, history in histories.items():
        if not isinstance(history, dict) or not history:
            raise ValueError(
                f"Each history must be a non-empty dict of metric lists (use "
                f"`fit(...).history`). Received for {run_name!r}: {type(history).__name__}"
            )
        for metric, series in history.items():
            if np.ndim(series) != 1 or len(series) == 0:
                raise ValueError(
                    f"Each metric must be a non-empty 1-D list of per-epoch values. "
                    f"Received for {run_name!r}[{metric!r}]: shape={np.shape(series)}"
                )
            base_name = metric[len("val_"):] if metric.startswith("val_") else metric
            if base_name not in metric_names:
                metric_names.append(base_name)

    figure = Figure(
        figsize=(CURVE_INCHES[0] * len(metric_names), CURVE_INCHES[1]), layout="constrained"
    )
    axes = {
        name: figure.add_subplot(1, len(metric_names), index + 1)
        for index, name in enumerate(metric_names)
    }
    for run_index, (run_name, history) in enumerate(histories.items()):
        color = f"C{run_index % 10}"
        for metric, series in history.items():
            is_validation = metric.startswith("val_")
            base_name = metric[len("val_"):] if is_validation else metric
            epochs = np.arange(1, len(series) + 1)
            axes[base_name].plot(
                epochs,
                series,
                color=color,
                linestyle="--" if is_validation else "-",
                label=f"{run_name} ({'validation' if is_validation else 'train'})",
            )
    for name, axis in axes.items():
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend(fontsize="small")
    return figure


show_figures_in_notebook()
