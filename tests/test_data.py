"""Tests of course_lib.data on the real data sets (needs $COURSE_DATA_DIR)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import course_lib  # noqa: F401  (sets the Keras backend before anything imports keras)
from course_lib import data

REAL_DATA_DIR = os.environ.get(data.DATA_DIR_ENV_VAR)
MNIST_RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SMALL_COUNT = 50
TRAIN_RECORDS_CHECKED = 300
DATASET_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
LOADERS = {"mnist": data.load_mnist, "cifar10": data.load_cifar10}

pytestmark = pytest.mark.skipif(
    not REAL_DATA_DIR or not pathlib.Path(REAL_DATA_DIR).is_dir(),
    reason=f"set ${data.DATA_DIR_ENV_VAR} to the folder holding mnist.npz and cifar10.npz",
)


def real_npz(dataset):
    return pathlib.Path(REAL_DATA_DIR) / f"{dataset}.npz"


@pytest.fixture(scope="module")
def raw_arrays():
    """The npz files read with plain numpy, as the reference for every comparison."""
    arrays = {}
    for dataset in DATASET_SHAPES:
        with np.load(real_npz(dataset)) as archive:
            arrays[dataset] = {key: archive[key] for key in archive.files}
    return arrays


@pytest.fixture
def local_dir(tmp_path, monkeypatch):
    """An empty $COURSE_DATA_DIR for hand-written npz files."""
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path))
    return tmp_path


def small_mnist_arrays(raw_arrays):
    mnist = raw_arrays["mnist"]
    return {key: mnist[key][:SMALL_COUNT] for key in ("x_train", "y_train", "x_test", "y_test")}


# ---------------------------------------------------------------------------
# The real data through $COURSE_DATA_DIR


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_dtypes_and_ranges(dataset, split, raw_arrays):
    images, labels = LOADERS[dataset](split)
    expected_count = len(raw_arrays[dataset][f"y_{split}"])
    assert images.shape == (expected_count, *DATASET_SHAPES[dataset])
    assert images.dtype == np.float32
    assert labels.shape == (expected_count,)
    assert labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.unique(labels), np.arange(10))
    source = data.last_source()
    assert (source.dataset, source.split, source.source) == (dataset, split, "npz")
    assert source.path == str(real_npz(dataset))


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_values_are_the_npz_bytes_scaled(dataset, raw_arrays):
    images, labels = LOADERS[dataset]("test")
    reference = raw_arrays[dataset]["x_test"].reshape(images.shape)
    np.testing.assert_array_equal(images, reference.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(labels, raw_arrays[dataset]["y_test"])


def test_limit_returns_the_first_examples():
    full_images, full_labels = data.load_mnist("test")
    images, labels = data.load_mnist("test", limit=7)
    assert images.shape == (7, 28, 28, 1)
    np.testing.assert_array_equal(images, full_images[:7])
    np.testing.assert_array_equal(labels, full_labels[:7])


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "10"])
def test_bad_limit_is_rejected(limit):
    with pytest.raises(ValueError, match="limit must be None or a positive integer") as error:
        data.load_mnist("test", limit=limit)
    assert repr(limit) in str(error.value)


def test_limit_above_split_size_is_rejected():
    with pytest.raises(ValueError, match="larger than the 1000 lossless examples"):
        data.load_cifar10("test", limit=1001, exact_only=True)


def test_exact_only_keeps_the_lossless_test_images(raw_arrays):
    mask = raw_arrays["cifar10"]["test_is_lossless"]
    images, labels = data.load_cifar10("test", exact_only=True)
    assert len(images) == mask.sum() < len(mask)
    expected = raw_arrays["cifar10"]["x_test"][mask].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, raw_arrays["cifar10"]["y_test"][mask])
    limited_images, _ = data.load_cifar10("test", limit=5, exact_only=True)
    np.testing.assert_array_equal(limited_images, images[:5])


def test_exact_only_keeps_all_training_images():
    images, _ = data.load_cifar10("train", limit=100, exact_only=True)
    assert len(images) == 100


def test_class_names_match_the_file(raw_arrays):
    assert data.CIFAR10_CLASS_NAMES == tuple(raw_arrays["cifar10"]["class_names"])
    assert len(set(data.CIFAR10_CLASS_NAMES)) == 10


@pytest.mark.parametrize("split", ["validation", "Train", None, ""])
def test_wrong_split_is_rejected(split):
    with pytest.raises(ValueError, match="split must be one of") as error:
        data.load_mnist(split)
    assert repr(split) in str(error.value)


def test_second_load_comes_from_memory_with_equal_content():
    data.clear_memory_cache()
    first_images, first_labels = data.load_mnist("test")
    first = data.last_source()
    memory_seconds = []
    for _ in range(3):  # the fastest of three, so that one descheduling cannot flip the result
        second_images, second_labels = data.load_mnist("test")
        second = data.last_source()
        memory_seconds.append(second.seconds)
    assert not first.from_memory and second.from_memory
    assert min(memory_seconds) < first.seconds
    np.testing.assert_array_equal(first_images, second_images)
    np.testing.assert_array_equal(first_labels, second_labels)
    # Every call returns new arrays: changing one result leaves the next untouched.
    first_images[:] = 0.5
    third_images, _ = data.load_mnist("test")
    np.testing.assert_array_equal(third_images, second_images)


def test_describe_sources_names_the_npz_files():
    text = data.describe_sources()
    assert str(real_npz("mnist")) in text and str(real_npz("cifar10")) in text
    assert data.data_dir() == pathlib.Path(REAL_DATA_DIR)


# ---------------------------------------------------------------------------
# Hand-written npz files: a good small one, and broken ones


def test_small_valid_npz_is_used(local_dir, raw_arrays):
    np.savez(local_dir / "mnist.npz", **small_mnist_arrays(raw_arrays))
    images, labels = data.load_mnist("train")
    assert images.shape == (SMALL_COUNT, 28, 28, 1)
    np.testing.assert_array_equal(labels, raw_arrays["mnist"]["y_train"][:SMALL_COUNT])
    assert data.last_source().path == str(local_dir / "mnist.npz")


def test_truncated_npz(local_dir, raw_arrays):
    path = local_dir / "mnist.npz"
    np.savez(path, **small_mnist_arrays(raw_arrays))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(data.DataFileError, match="truncated") as error:
        data.load_mnist("train")
    assert str(path) in str(error.value)
    assert "x_train" in str(error.value)  # says what was expected


def test_npz_missing_a_key(local_dir, raw_arrays):
    arrays = small_mnist_arrays(raw_arrays)
    del arrays["y_test"]
    np.savez(local_dir / "mnist.npz", **arrays)
    data.load_mnist("train")  # the train split is complete
    with pytest.raises(data.DataFileError, match=r"missing arrays \['y_test'\]") as error:
        data.load_mnist("test")
    assert str(local_dir / "mnist.npz") in str(error.value)
    assert "found: ['x_test', 'x_train', 'y_train']" in str(error.value)


def test_npz_with_wrong_image_shape(local_dir):
    path = local_dir / "mnist.npz"
    np.savez(
        path,
        x_train=np.zeros((4, 32, 32), dtype=np.uint8),
        y_train=np.zeros(4, dtype=np.uint8),
    )
    with pytest.raises(data.DataFileError, match=r"shape=\(4, 32, 32\)") as error:
        data.load_mnist("train")
    assert str(path) in str(error.value) and "(28, 28, 1)" in str(error.value)


def test_npz_with_float_images(local_dir):
    np.savez(
        local_dir / "cifar10.npz",
        x_train=np.zeros((4, 32, 32, 3), dtype=np.float32),
        y_train=np.zeros(4, dtype=np.uint8),
    )
    with pytest.raises(data.DataFileError, match="dtype=float32") as error:
        data.load_cifar10("train")
    assert "uint8" in str(error.value)


def test_npz_with_mismatched_labels(local_dir, raw_arrays):
    arrays = small_mnist_arrays(raw_arrays)
    arrays["y_train"] = arrays["y_train"][:-1]
    np.savez(local_dir / "mnist.npz", **arrays)
    with pytest.raises(data.DataFileError, match=rf"shape=\({SMALL_COUNT - 1},\)"):
        data.load_mnist("train")
    arrays["y_train"] = np.full(SMALL_COUNT, 10, dtype=np.uint8)
    np.savez(local_dir / "mnist.npz", **arrays)
    with pytest.raises(data.DataFileError, match="labels from 10 to 10"):
        data.load_mnist("train")


def test_cifar_npz_with_wrong_class_names(local_dir):
    np.savez(
        local_dir / "cifar10.npz",
        x_train=np.zeros((4, 32, 32, 3), dtype=np.uint8),
        y_train=np.zeros(4, dtype=np.uint8),
        class_names=np.array([f"class{index}" for index in range(10)]),
    )
    with pytest.raises(data.DataFileError, match="'class_names' is"):
        data.load_cifar10("train")


def test_data_dir_that_does_not_exist(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(missing))
    with pytest.raises(data.DataNotFoundError, match="does not exist") as error:
        data.load_mnist("test")
    assert str(missing) in str(error.value)
    assert isinstance(error.value, FileNotFoundError)


# ---------------------------------------------------------------------------
# tensorflow-datasets: record order and errors before any preparation


class _StubBuilder:
    data_path = "/stub/cifar10/3.0.2"


def test_record_order_from_ids():
    records = [{"id": b"test_00002"}, {"id": "test_00000"}, {"id": b"test_00001"}]
    positions = data._original_positions(records, "test", _StubBuilder())
    assert positions.tolist() == [2, 0, 1]
    records[0]["id"] = b"test_00001"
    with pytest.raises(data.DataFileError, match="cannot restore the original order"):
        data._original_positions(records, "test", _StubBuilder())


def test_shuffled_positions_depend_on_the_split():
    train_positions = data._tfds_shuffled_positions("train", 1000)
    test_positions = data._tfds_shuffled_positions("test", 1000)
    assert sorted(train_positions.tolist()) == list(range(1000))
    assert not np.array_equal(train_positions, test_positions)


@pytest.fixture
def tfds_only(tmp_path, monkeypatch):
    """No local npz, an empty tensorflow-datasets directory and cache, an empty manual dir."""
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR, raising=False)
    for name, env_var in [
        ("tfds", data.TFDS_DATA_DIR_ENV_VAR),
        ("cache", data.CACHE_DIR_ENV_VAR),
        ("manual", data.TFDS_MANUAL_DIR_ENV_VAR),
    ]:
        (tmp_path / name).mkdir()
        monkeypatch.setenv(env_var, str(tmp_path / name))
    return tmp_path


def test_missing_data_without_network_says_what_to_do(tfds_only, monkeypatch):
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: True)
    monkeypatch.setattr(data, "_host_reachable", lambda host, port=443: False)
    with pytest.raises(data.DataNotFoundError, match="cannot be reached") as error:
        data.load_cifar10("train")
    message = str(error.value)
    assert "cifar-10-binary.tar.gz" in message
    assert data.TFDS_MANUAL_DIR_ENV_VAR in message and data.DATA_DIR_ENV_VAR in message


def test_preparing_without_tensorflow_says_how_to_install(tfds_only, monkeypatch):
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: False)
    with pytest.raises(data.DataNotFoundError, match="needs TensorFlow") as error:
        data.load_mnist("test")
    assert data.PREPARE_INSTALL_COMMAND in str(error.value)


# ---------------------------------------------------------------------------
# tensorflow-datasets: prepared offline from the original MNIST files


@pytest.fixture(scope="module")
def prepared_tfds_dir(tmp_path_factory):
    """MNIST prepared by tensorflow-datasets (array_record) from the four original files."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip(f"preparing needs TensorFlow (install it with {data.PREPARE_INSTALL_COMMAND})")
    manual_dir = pathlib.Path(REAL_DATA_DIR) / "mnist-raw"
    if not all((manual_dir / name).is_file() for name in MNIST_RAW_FILES):
        pytest.skip(f"the original MNIST files are not in {manual_dir}")
    tfds_dir = tmp_path_factory.mktemp("tfds")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(data.TFDS_DATA_DIR_ENV_VAR, str(tfds_dir))
        patch.setenv(data.TFDS_MANUAL_DIR_ENV_VAR, str(manual_dir))
        # Any download attempt would mean the manual files were not used.
        patch.setattr(data, "_host_reachable", lambda host, port=443: False)
        prepared = data.prepare_with_tfds("mnist")
    assert (prepared / "dataset_info.json").is_file()
    return tfds_dir


@pytest.mark.slow
def test_tfds_read_matches_npz_without_tensorflow(
    prepared_tfds_dir, tmp_path, monkeypatch, raw_arrays
):
    cache = tmp_path / "cache"
    environment = {k: v for k, v in os.environ.items() if k != data.DATA_DIR_ENV_VAR}
    environment[data.TFDS_DATA_DIR_ENV_VAR] = str(prepared_tfds_dir)
    environment[data.CACHE_DIR_ENV_VAR] = str(cache)
    script = (
        "import json, sys\n"
        "from course_lib import data\n"
        "images, labels = data.load_mnist('test')\n"
        "print(json.dumps({'tensorflow': 'tensorflow' in sys.modules,\n"
        "                  'source': data.last_source().source,\n"
        "                  'seconds': data.last_source().seconds, 'count': len(labels)}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["tensorflow"] is False
    assert report["source"] == "tfds"
    assert report["count"] == len(raw_arrays["mnist"]["y_test"])

    # This process reads what the first read converted, and gets the original order back.
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR)
    monkeypatch.setenv(data.TFDS_DATA_DIR_ENV_VAR, str(prepared_tfds_dir))
    monkeypatch.setenv(data.CACHE_DIR_ENV_VAR, str(cache))
    data.clear_memory_cache()
    images, labels = data.load_mnist("test")
    cached = data.last_source()
    assert cached.source == "tfds-cache" and not cached.from_memory
    assert cached.seconds < report["seconds"]
    np.testing.assert_array_equal(
        np.rint(images[..., 0] * 255).astype(np.uint8), raw_arrays["mnist"]["x_test"]
    )
    np.testing.assert_array_equal(labels, raw_arrays["mnist"]["y_test"])
    data.load_mnist("test", limit=3)
    assert data.last_source().from_memory


@pytest.mark.slow
def test_tfds_train_records_map_back_to_original_order(prepared_tfds_dir, raw_arrays):
    import tensorflow_datasets as tfds

    source = tfds.data_source(
        "mnist", split="train", data_dir=str(prepared_tfds_dir), download=False
    )
    count = len(source)
    assert count == len(raw_arrays["mnist"]["y_train"])
    positions = data._tfds_shuffled_positions("train", count)
    records = source.__getitems__(list(range(TRAIN_RECORDS_CHECKED)))
    assert positions[:TRAIN_RECORDS_CHECKED].tolist() != list(range(TRAIN_RECORDS_CHECKED))
    for record, position in zip(records, positions):
        expected_image = raw_arrays["mnist"]["x_train"][position]
        np.testing.assert_array_equal(record["image"][..., 0], expected_image)
        assert record["label"] == raw_arrays["mnist"]["y_train"][position]


@pytest.mark.slow
def test_damaged_tfds_cache_is_rebuilt(prepared_tfds_dir, tmp_path, monkeypatch, raw_arrays):
    monkeypatch.delenv(data.DATA_DIR_ENV_VAR)
    monkeypatch.setenv(data.TFDS_DATA_DIR_ENV_VAR, str(prepared_tfds_dir))
    monkeypatch.setenv(data.CACHE_DIR_ENV_VAR, str(tmp_path))
    reference = raw_arrays["mnist"]
    read_calls = []

    def read_from_reference(tfds, spec, split, builder):  # stands in for the slow record read
        read_calls.append(split)
        return data._SplitArrays(
            reference["x_test"][..., np.newaxis],
            reference["y_test"].astype(np.int64),
            np.ones(len(reference["y_test"]), dtype=bool),
        )

    monkeypatch.setattr(data, "_read_tfds_records", read_from_reference)
    data.clear_memory_cache()
    data.load_mnist("test", limit=1)
    cache_files = list(tmp_path.glob("tfds_mnist_*_test.npz"))
    assert len(cache_files) == 1 and read_calls == ["test"]
    cache_files[0].write_bytes(b"not an npz file")
    data.clear_memory_cache()
    with pytest.warns(UserWarning, match="damaged cache file"):
        _, labels = data.load_mnist("test")
    assert read_calls == ["test", "test"] and data.last_source().source == "tfds"
    np.testing.assert_array_equal(labels, reference["y_test"])
    data.clear_memory_cache()
    data.load_mnist("test")
    assert data.last_source().source == "tfds-cache" and read_calls == ["test", "test"]
    assert data.last_source().path == str(cache_files[0])
