"""Tests of course_lib.shapes, the dSprites-like data set with known factors.

Tolerances below come from measuring every one of the 18,000 factor combinations
(measured when these tests were written): centroid error at most 0.21 px (32 px images),
ellipse orientation error at most 1.3 degrees (32 px), square/ellipse area within
[0.954, 1.047] of the analytic area (64 px), 64 px images 2x2-pooled differ from
32 px images by at most 0.0084 mean absolute pixel difference per image.
"""

import itertools

import numpy as np
import pytest

import course_lib  # noqa: F401  (selects the torch backend before anything imports keras)
from course_lib import shapes

NUM_IMAGES = 500
CENTROID_TOLERANCE_PX = 0.35
ORIENTATION_TOLERANCE_DEG = 3.0
AREA_RATIO_RANGE = (0.93, 1.07)
POOLED_DIFFERENCE_TOLERANCE = 0.02


def all_factor_combinations():
    ranges = [range(size) for size in shapes.FACTOR_SIZES]
    return np.array(list(itertools.product(*ranges)), dtype=np.int64)


def pixel_grids(image_size):
    """Pixel-centre coordinates (rows, columns) in pixel units."""
    rows, columns = np.mgrid[0:image_size, 0:image_size] + 0.5
    return rows, columns


def test_generate_shapes_returns_arrays_of_documented_shapes_and_ranges():
    images, factors, values = shapes.generate_shapes(NUM_IMAGES, seed=3)
    assert images.shape == (NUM_IMAGES, 32, 32, 1) and images.dtype == np.float32
    assert factors.shape == (NUM_IMAGES, 5) and factors.dtype == np.int64
    assert values.shape == (NUM_IMAGES, 5) and values.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.all(factors >= 0) and np.all(factors < np.array(shapes.FACTOR_SIZES))
    # Every image shows a shape.
    assert np.all(images.sum(axis=(1, 2, 3)) > 0)


def test_factor_names_and_sizes_agree_and_match_the_brief():
    assert len(shapes.FACTOR_NAMES) == len(shapes.FACTOR_SIZES) == 5
    assert shapes.FACTOR_NAMES[0] == "shape" and shapes.FACTOR_SIZES[0] == 3
    assert 4 <= shapes.FACTOR_SIZES[1] <= 6
    assert all(8 <= size <= 10 for size in shapes.FACTOR_SIZES[2:])


def test_same_seed_same_data_and_other_seed_other_data():
    first = shapes.generate_shapes(200, seed=7)
    second = shapes.generate_shapes(200, seed=7)
    other = shapes.generate_shapes(200, seed=8)
    for array_a, array_b in zip(first, second):
        np.testing.assert_array_equal(array_a, array_b)
    assert not np.array_equal(first[1], other[1])


def test_factors_are_sampled_uniformly_and_independently():
    factors = shapes.sample_factor_indices(20000, seed=0)
    for axis, size in enumerate(shapes.FACTOR_SIZES):
        counts = np.bincount(factors[:, axis], minlength=size)
        # Multinomial counts: relative deviation ~ 1/sqrt(20000/size) <= 2.2 %.
        np.testing.assert_allclose(counts / len(factors), 1.0 / size, rtol=0.12)
    correlation = np.corrcoef(factors.T.astype(np.float64))
    off_diagonal = correlation[~np.eye(5, dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.05


def test_render_reproduces_generated_images():
    images, factors, _ = shapes.generate_shapes(300, seed=1)
    np.testing.assert_array_equal(shapes.render(factors), images)
    np.testing.assert_array_equal(shapes.render(factors[0]), images[:1])


def test_every_factor_combination_gives_a_different_image():
    combinations = all_factor_combinations()
    images = shapes.render(combinations)
    distinct = {image.tobytes() for image in images}
    assert len(distinct) == len(combinations)


def test_shape_centre_follows_the_position_factors():
    combinations = all_factor_combinations()[::3]
    images = shapes.render(combinations)[..., 0]
    rows, columns = pixel_grids(32)
    mass = images.sum(axis=(1, 2))
    centroid_x = (images * columns).sum(axis=(1, 2)) / mass
    centroid_y = (images * rows).sum(axis=(1, 2)) / mass
    values = shapes.factor_indices_to_values(combinations)
    # Centres lie between MAX_RADIUS_FRACTION and 1 - MAX_RADIUS_FRACTION of the side.
    margin = shapes.MAX_RADIUS_FRACTION * 32
    expected_x = margin + values[:, shapes.POSITION_X_AXIS] * (32 - 2 * margin)
    expected_y = margin + values[:, shapes.POSITION_Y_AXIS] * (32 - 2 * margin)
    assert np.abs(centroid_x - expected_x).max() < CENTROID_TOLERANCE_PX
    assert np.abs(centroid_y - expected_y).max() < CENTROID_TOLERANCE_PX


def test_square_and_ellipse_areas_match_their_formulas():
    combinations = all_factor_combinations()[::5]
    combinations = combinations[combinations[:, shapes.SHAPE_AXIS] < 2]
    images = shapes.render(combinations, image_size=64)
    area = images.sum(axis=(1, 2, 3))
    radius = shapes.factor_indices_to_values(combinations)[:, shapes.SCALE_AXIS]
    radius = radius * shapes.MAX_RADIUS_FRACTION * 64
    square = (2 * shapes.SQUARE_HALF_SIDE * radius) ** 2
    ellipse = np.pi * np.prod(shapes.ELLIPSE_SEMI_AXES) * radius**2
    expected = np.where(combinations[:, shapes.SHAPE_AXIS] == 0, square, ellipse)
    ratio = area / expected
    assert AREA_RATIO_RANGE[0] < ratio.min() and ratio.max() < AREA_RATIO_RANGE[1]


def test_larger_scale_index_gives_larger_shape():
    combinations = np.repeat(shapes.sample_factor_indices(50, seed=2), shapes.NUM_SCALES, axis=0)
    combinations[:, shapes.SCALE_AXIS] = np.tile(np.arange(shapes.NUM_SCALES), 50)
    area = shapes.render(combinations, image_size=64).sum(axis=(1, 2, 3))
    area = area.reshape(50, shapes.NUM_SCALES)
    assert np.all(np.diff(area, axis=1) > 0)


def test_ellipse_turns_counter_clockwise_by_the_rotation_value():
    combinations = np.array(
        [[1, shapes.NUM_SCALES - 1, rotation, 4, 5] for rotation in range(shapes.NUM_ROTATIONS)]
    )
    images = shapes.render(combinations)[..., 0]
    rows, columns = pixel_grids(32)
    mass = images.sum(axis=(1, 2))
    offset_x = columns - ((images * columns).sum(axis=(1, 2)) / mass)[:, None, None]
    # y pointing up, so that positive angles turn counter-clockwise on screen.
    offset_y = ((images * rows).sum(axis=(1, 2)) / mass)[:, None, None] - rows
    moment_xx = (images * offset_x**2).sum(axis=(1, 2))
    moment_yy = (images * offset_y**2).sum(axis=(1, 2))
    moment_xy = (images * offset_x * offset_y).sum(axis=(1, 2))
    major_axis_angle = 0.5 * np.arctan2(2 * moment_xy, moment_xx - moment_yy)
    expected = shapes.factor_indices_to_values(combinations)[:, shapes.ROTATION_AXIS]
    # Angles of an axis are defined modulo 180 degrees.
    error = np.angle(np.exp(2j * (major_axis_angle - expected))) / 2
    assert np.degrees(np.abs(error)).max() < ORIENTATION_TOLERANCE_DEG


def test_64_pixel_images_pool_to_the_32_pixel_images():
    factors = shapes.sample_factor_indices(400, seed=4)
    small = shapes.render(factors, image_size=32)
    large = shapes.render(factors, image_size=64)
    assert large.shape == (400, 64, 64, 1)
    pooled = large.reshape(400, 32, 2, 32, 2, 1).mean(axis=(2, 4))
    per_image = np.abs(pooled - small).mean(axis=(1, 2, 3))
    assert per_image.max() < POOLED_DIFFERENCE_TOLERANCE


def test_factor_values_follow_the_indices():
    combinations = all_factor_combinations()
    values = shapes.factor_indices_to_values(combinations)
    np.testing.assert_array_equal(values[:, shapes.SHAPE_AXIS], combinations[:, 0])
    assert values[:, shapes.SCALE_AXIS].min() == pytest.approx(0.5)
    assert values[:, shapes.SCALE_AXIS].max() == pytest.approx(1.0)
    symmetry = np.asarray(shapes.SYMMETRY_ANGLES)[combinations[:, 0]]
    rotation = values[:, shapes.ROTATION_AXIS]
    assert np.all(rotation >= 0) and np.all(rotation < symmetry)
    for axis in (shapes.POSITION_X_AXIS, shapes.POSITION_Y_AXIS):
        np.testing.assert_allclose(
            values[:, axis], combinations[:, axis] / (shapes.NUM_POSITIONS - 1), rtol=1e-6
        )


def test_fixed_factors_hold_one_value_and_leave_the_other_draws_unchanged():
    fixed = {"shape": 2, "rotation": 0}
    images, factors, _ = shapes.generate_shapes(300, seed=5, fixed_factors=fixed)
    free = shapes.sample_factor_indices(300, seed=5)
    assert np.all(factors[:, shapes.SHAPE_AXIS] == 2)
    assert np.all(factors[:, shapes.ROTATION_AXIS] == 0)
    varying = shapes.varying_factor_axes(fixed)
    assert varying == [shapes.SCALE_AXIS, shapes.POSITION_X_AXIS, shapes.POSITION_Y_AXIS]
    np.testing.assert_array_equal(factors[:, varying], free[:, varying])
    np.testing.assert_array_equal(images, shapes.render(factors))


@pytest.mark.parametrize(
    "fixed_factors, message",
    [
        ({"colour": 0}, "Received: 'colour'"),
        ({"scale": 6}, r"fixed_factors\['scale'\]=6"),
        ({"shape": 1.0}, r"fixed_factors\['shape'\]=1.0"),
        ([("shape", 1)], "must be a dict"),
    ],
)
def test_invalid_fixed_factors_are_rejected(fixed_factors, message):
    with pytest.raises(ValueError, match=message):
        shapes.generate_shapes(10, fixed_factors=fixed_factors)


@pytest.mark.parametrize(
    "factor_indices, message",
    [
        (np.zeros((4, 4), dtype=np.int64), r"shape=\(4, 4\)"),
        (np.zeros((2, 3, 5), dtype=np.int64), r"shape=\(2, 3, 5\)"),
        (np.zeros((4, 5), dtype=np.float32), "dtype=float32"),
        (np.array([[3, 0, 0, 0, 0]]), "'shape' has 3 values"),
        (np.array([[0, 0, 0, -1, 0]]), "'position_x'.*min=-1"),
    ],
)
def test_render_rejects_invalid_factor_indices(factor_indices, message):
    with pytest.raises(ValueError, match=message):
        shapes.render(factor_indices)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_images": 0}, "num_images=0"),
        ({"num_images": 2.5}, "num_images=2.5"),
        ({"num_images": 4, "image_size": 8}, "image_size=8"),
        ({"num_images": 4, "image_size": 32.0}, "image_size=32.0"),
        ({"num_images": 4, "seed": -1}, "seed=-1"),
    ],
)
def test_generate_shapes_rejects_invalid_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        shapes.generate_shapes(**arguments)
