"""A small data set of 2D shapes with known generative factors, in the spirit of dSprites.

Every image shows one white shape on a black background. Five independent factors
generate it, each taking a few discrete values:

| factor       | values | meaning                                                        |
|--------------|--------|----------------------------------------------------------------|
| `shape`      | 3      | square, ellipse, heart                                         |
| `scale`      | 6      | 0.5 ... 1.0 times the largest size                             |
| `rotation`   | 10     | evenly spaced over the shape's symmetry range (square: 90 deg, |
|              |        | ellipse: 180 deg, heart: 360 deg), so no two values coincide   |
| `position_x` | 10     | centre column, left to right, always fully inside the image    |
| `position_y` | 10     | centre row, top to bottom, always fully inside the image       |

Because the factors are known, the data set lets us measure how well a learned
representation separates them (see `course_lib.disentanglement`). `fixed_factors`
holds some factors at one value, for a simpler data set with fewer factors.

The images are rendered on the fly with vectorized numpy: each pixel is split into
`SUPERSAMPLING x SUPERSAMPLING` sub-pixels, each sub-pixel is tested against the
shape's implicit equation, and the pixel value is the covered fraction, a float32 in
[0, 1] (mostly exactly 0 or 1, with grey levels on the edges only).

Example:

```python
from course_lib import shapes

images, factors, values = shapes.generate_shapes(4000, seed=0)
# images: (4000, 32, 32, 1) float32, factors: (4000, 5) int64 indices.
same_but_bigger = factors[:8].copy()
same_but_bigger[:, shapes.FACTOR_NAMES.index("scale")] = shapes.FACTOR_SIZES[1] - 1
bigger_images = shapes.render(same_but_bigger)
```
"""

import numpy as np

FACTOR_NAMES = ("shape", "scale", "rotation", "position_x", "position_y")
SHAPE_NAMES = ("square", "ellipse", "heart")
NUM_SCALES = 6
NUM_ROTATIONS = 10
NUM_POSITIONS = 10
FACTOR_SIZES = (len(SHAPE_NAMES), NUM_SCALES, NUM_ROTATIONS, NUM_POSITIONS, NUM_POSITIONS)

SHAPE_AXIS, SCALE_AXIS, ROTATION_AXIS, POSITION_X_AXIS, POSITION_Y_AXIS = range(5)

DEFAULT_IMAGE_SIZE = 32
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 128
# Radius of the disc that encloses a shape at scale 1.0, as a fraction of the image side.
MAX_RADIUS_FRACTION = 0.2
SCALE_VALUES = np.linspace(0.5, 1.0, NUM_SCALES)
# Rotating a shape by its symmetry angle gives the same image.
SYMMETRY_ANGLES = (np.pi / 2, np.pi, 2 * np.pi)
SUPERSAMPLING = 2
CHUNK_SIZE = 2048

# Shapes are defined in "unit" coordinates: the shape fits in the unit disc, centred
# on the origin (its rotation centre), with y pointing up.
SQUARE_HALF_SIDE = 0.7
ELLIPSE_SEMI_AXES = (1.0, 0.5)
# The heart is the curve (x^2 + y^2 - 1)^3 - x^2 y^3 = 0. Its centroid lies at
# y = 0.2935 and its farthest point from the centroid at distance 1.2935 (both measured
# on a 3001 x 3001 grid), so this maps it into the unit disc around its centroid.
HEART_RADIUS = 1.2935
HEART_CENTROID_Y = 0.2935


def generate_shapes(num_images, image_size=DEFAULT_IMAGE_SIZE, seed=0, fixed_factors=None):
    """Draws factor combinations uniformly at random and renders them.

    Args:
        num_images: number of images, a positive integer.
        image_size: side of the square images in pixels (32 by default, 64 works too;
            any integer from 16 to 128).
        seed: seed of the random factor draw; the same seed gives the same images.
        fixed_factors: optional dict `{factor name: index}` of factors held at one
            value in every image, for a simpler data set, e.g.
            `{"shape": 0, "scale": 5, "rotation": 0}` leaves only the position.

    Returns:
        A tuple `(images, factors, factor_values)`: `images` float32 of shape
        `(num_images, image_size, image_size, 1)` in [0, 1]; `factors` int64 of shape
        `(num_images, 5)`, the index of each factor's value (columns in the order of
        `FACTOR_NAMES`; fixed factors give constant columns); `factor_values` float32 of
        shape `(num_images, 5)`, the values themselves (see `factor_indices_to_values`).

    Raises:
        ValueError: if `num_images`, `image_size`, `seed` or `fixed_factors` is invalid.
    """
    factors = sample_factor_indices(num_images, seed=seed, fixed_factors=fixed_factors)
    images = render(factors, image_size=image_size)
    return images, factors, factor_indices_to_values(factors)


def sample_factor_indices(num_images, seed=0, fixed_factors=None):
    """Draws each factor's index independently and uniformly.

    Args:
        num_images: number of factor combinations, a positive integer.
        seed: a non-negative integer seed.
        fixed_factors: optional dict `{factor name: index}` of factors held fixed.

    Returns:
        An int64 array of shape `(num_images, 5)`.

    Raises:
        ValueError: if `num_images`, `seed` or `fixed_factors` is invalid.
    """
    _check_positive_int("num_images", num_images)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: seed={seed!r}")
    fixed_factors = _check_fixed_factors(fixed_factors)
    rng = np.random.default_rng(seed)
    # Every factor is drawn, fixed or not, so that fixing one leaves the others' draws
    # unchanged for the same seed.
    columns = [rng.integers(0, size, size=num_images) for size in FACTOR_SIZES]
    for name, index in fixed_factors.items():
        columns[FACTOR_NAMES.index(name)][:] = index
    return np.stack(columns, axis=1).astype(np.int64)


def varying_factor_axes(fixed_factors=None):
    """Column indices of the factors not in `fixed_factors`, e.g. to select them for MIG.

    Raises:
        ValueError: if `fixed_factors` is invalid.
    """
    fixed_factors = _check_fixed_factors(fixed_factors)
    return [axis for axis, name in enumerate(FACTOR_NAMES) if name not in fixed_factors]


def factor_indices_to_values(factor_indices):
    """Converts factor indices to the values they stand for.

    Args:
        factor_indices: integer array of shape `(N, 5)`.

    Returns:
        A float32 array of shape `(N, 5)`: the shape index (0, 1, 2), the scale (0.5 to
        1.0), the rotation angle in radians (within the shape's symmetry range), and the
        x and y positions of the centre, in [0, 1] from left to right and top to bottom.

    Raises:
        ValueError: if `factor_indices` has the wrong shape, dtype or range.
    """
    indices = check_factor_indices(factor_indices)
    shape_index = indices[:, SHAPE_AXIS]
    values = np.empty(indices.shape, dtype=np.float32)
    values[:, SHAPE_AXIS] = shape_index
    values[:, SCALE_AXIS] = SCALE_VALUES[indices[:, SCALE_AXIS]]
    values[:, ROTATION_AXIS] = _rotation_angles(shape_index, indices[:, ROTATION_AXIS])
    values[:, POSITION_X_AXIS] = indices[:, POSITION_X_AXIS] / (NUM_POSITIONS - 1)
    values[:, POSITION_Y_AXIS] = indices[:, POSITION_Y_AXIS] / (NUM_POSITIONS - 1)
    return values


def render(factor_indices, image_size=DEFAULT_IMAGE_SIZE):
    """Renders the images of given factor combinations.

    Use it to change one factor of an image and keep the others, e.g. for latent
    traversals or for metrics that hold one factor fixed.

    Args:
        factor_indices: integer array of shape `(N, 5)` (or `(5,)` for one image), each
            column an index into the values of the factor named in `FACTOR_NAMES`.
        image_size: side of the square images in pixels (16 to 128).

    Returns:
        float32 images of shape `(N, image_size, image_size, 1)` in [0, 1].

    Raises:
        ValueError: if the indices have the wrong shape, dtype or range, or
            `image_size` is not supported.
    """
    indices = check_factor_indices(factor_indices)
    _check_image_size(image_size)
    images = np.empty((len(indices), image_size, image_size, 1), dtype=np.float32)
    for start in range(0, len(indices), CHUNK_SIZE):
        chunk = indices[start : start + CHUNK_SIZE]
        images[start : start + len(chunk), :, :, 0] = _rasterize(chunk, image_size)
    return images


def check_factor_indices(factor_indices):
    """Validates factor indices and returns them as an int64 array of shape `(N, 5)`.

    Raises:
        ValueError: on a wrong shape, a non-integer dtype or an index out of range.
    """
    indices = np.asarray(factor_indices)
    if indices.ndim == 1:
        indices = indices[None, :]
    if indices.ndim != 2 or indices.shape[1] != len(FACTOR_SIZES) or len(indices) == 0:
        raise ValueError(
            f"factor_indices must have shape (N, {len(FACTOR_SIZES)}) with N >= 1, one "
            f"column per factor {FACTOR_NAMES}. Received: shape={np.shape(factor_indices)}"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            "factor_indices must be integers (indices into each factor's values). "
            f"Received: dtype={indices.dtype}"
        )
    low, high = indices.min(axis=0), indices.max(axis=0)
    for axis, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        if low[axis] < 0 or high[axis] >= size:
            raise ValueError(
                f"Factor '{name}' has {size} values, so its indices must lie in "
                f"[0, {size - 1}]. Received: min={low[axis]}, max={high[axis]}"
            )
    return indices.astype(np.int64)


def _rotation_angles(shape_index, rotation_index):
    symmetry = np.asarray(SYMMETRY_ANGLES)[shape_index]
    return rotation_index * symmetry / NUM_ROTATIONS


def _position_pixels(position_index, image_size):
    """Centre coordinate in pixels, chosen so that the enclosing disc stays inside."""
    margin = MAX_RADIUS_FRACTION * image_size
    return margin + position_index * (image_size - 2 * margin) / (NUM_POSITIONS - 1)


def _rasterize(indices, image_size):
    """Returns float32 images (N, image_size, image_size) for valid factor indices."""
    images = np.empty((len(indices), image_size, image_size), dtype=np.float32)
    shape_index = indices[:, SHAPE_AXIS]
    for shape_id, inside_test in enumerate(INSIDE_TESTS):
        selected = np.flatnonzero(shape_index == shape_id)
        if len(selected):
            images[selected] = _rasterize_one_shape(indices[selected], image_size, inside_test)
    return images


def _rasterize_one_shape(indices, image_size, inside_test):
    """Renders images that all show the same shape, given its inside test."""
    fine_size = image_size * SUPERSAMPLING
    # Sub-pixel centres in pixel units: x grows to the right, y grows downwards.
    grid = ((np.arange(fine_size) + 0.5) / SUPERSAMPLING).astype(np.float32)
    radius = SCALE_VALUES[indices[:, SCALE_AXIS]] * MAX_RADIUS_FRACTION * image_size
    angle = _rotation_angles(indices[:, SHAPE_AXIS], indices[:, ROTATION_AXIS])
    centre_x = _position_pixels(indices[:, POSITION_X_AXIS], image_size)
    centre_y = _position_pixels(indices[:, POSITION_Y_AXIS], image_size)

    def per_image(values):
        return values.astype(np.float32)[:, None, None]

    # Offsets from the centre in units of the radius, with y pointing up.
    offset_x = (grid[None, None, :] - per_image(centre_x)) / per_image(radius)
    offset_y = (per_image(centre_y) - grid[None, :, None]) / per_image(radius)
    cosine, sine = per_image(np.cos(angle)), per_image(np.sin(angle))
    # Rotating the shape by +angle = rotating the sampling points by -angle.
    unit_x = cosine * offset_x + sine * offset_y
    unit_y = cosine * offset_y - sine * offset_x
    inside = inside_test(unit_x, unit_y)
    # Average each pixel's SUPERSAMPLING x SUPERSAMPLING sub-pixels (strided slices
    # are much faster than a reshape + mean over a boolean array).
    coverage = np.zeros((len(indices), image_size, image_size), dtype=np.float32)
    for row in range(SUPERSAMPLING):
        for column in range(SUPERSAMPLING):
            coverage += inside[:, row::SUPERSAMPLING, column::SUPERSAMPLING]
    return coverage / SUPERSAMPLING**2


def _inside_square(unit_x, unit_y):
    return np.maximum(np.abs(unit_x), np.abs(unit_y)) <= SQUARE_HALF_SIDE


def _inside_ellipse(unit_x, unit_y):
    semi_x, semi_y = ELLIPSE_SEMI_AXES
    return (unit_x / semi_x) ** 2 + (unit_y / semi_y) ** 2 <= 1.0


def _inside_heart(unit_x, unit_y):
    heart_x = unit_x * HEART_RADIUS
    heart_y = unit_y * HEART_RADIUS + HEART_CENTROID_Y
    squared_x = heart_x * heart_x
    squared_y = heart_y * heart_y
    bracket = squared_x + squared_y - 1.0
    return bracket * bracket * bracket <= squared_x * squared_y * heart_y


INSIDE_TESTS = (_inside_square, _inside_ellipse, _inside_heart)


def _check_fixed_factors(fixed_factors):
    """Returns a validated dict {factor name: index} ({} for None)."""
    if fixed_factors is None:
        return {}
    if not isinstance(fixed_factors, dict):
        raise ValueError(
            "fixed_factors must be a dict {factor name: index}. "
            f"Received: fixed_factors={fixed_factors!r}"
        )
    for name, index in fixed_factors.items():
        if name not in FACTOR_NAMES:
            raise ValueError(
                f"Unknown factor name in fixed_factors. Expected one of {FACTOR_NAMES}. "
                f"Received: {name!r}"
            )
        size = FACTOR_SIZES[FACTOR_NAMES.index(name)]
        valid = isinstance(index, (int, np.integer)) and not isinstance(index, bool)
        if not valid or not 0 <= index < size:
            raise ValueError(
                f"Factor '{name}' has {size} values, so its fixed index must be an integer "
                f"in [0, {size - 1}]. Received: fixed_factors[{name!r}]={index!r}"
            )
    return dict(fixed_factors)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def _check_image_size(image_size):
    valid = isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool)
    if not valid or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
            f"(32 by default). Received: image_size={image_size!r}"
        )
