"""MNIST and CIFAR-10 as numpy arrays: float32 images in [0, 1] (NHWC), int64 labels.

The source of truth is tensorflow-datasets. A load looks in three places, in order:

1. A local data directory named by ``$COURSE_DATA_DIR`` holding ``mnist.npz`` and/or
   ``cifar10.npz`` (keys ``x_train``, ``y_train``, ``x_test``, ``y_test``; CIFAR-10 also
   ``test_is_lossless`` and ``class_names``; images uint8).
2. tensorflow-datasets data that is already *prepared* (array_record format) under
   ``$TFDS_DATA_DIR`` (or the tensorflow-datasets default, ``~/tensorflow_datasets``).
   It is read with ``tfds.data_source``, which needs no TensorFlow. The first read
   converts the records to an npz file in ``$COURSE_CACHE_DIR`` (default
   ``~/.cache/course_lib``), so later processes skip the slow record decoding.
3. tensorflow-datasets download-and-prepare. This step needs TensorFlow (the optional
   extra: ``pip install -e ".[prepare]"``) and runs in a child process, so TensorFlow is
   never imported into the notebook or grader process. Set ``$COURSE_TFDS_MANUAL_DIR`` to
   a folder holding the original archives (e.g. the four MNIST ``*-ubyte.gz`` files) to
   prepare without network access.

Within a process, decoded arrays are kept in memory, so a second load is fast; every
call returns new arrays, so changing them never changes what the next call returns.

Rows keep the original order of the data sets (tensorflow-datasets stores them in a
hashed order; this module puts them back), so ``limit=n`` means the same first ``n``
examples whatever the source. CIFAR-10 caveat of the offline copy in
``$COURSE_DATA_DIR``: its test rows ``[1000:]`` were decoded from JPEG; pass
``exact_only=True`` to keep only the lossless test images.
"""

import dataclasses
import hashlib
import importlib.util
import logging
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.parse
import warnings
import zipfile
import zlib

import numpy as np

DATA_DIR_ENV_VAR = "COURSE_DATA_DIR"
TFDS_DATA_DIR_ENV_VAR = "TFDS_DATA_DIR"
TFDS_MANUAL_DIR_ENV_VAR = "COURSE_TFDS_MANUAL_DIR"
CACHE_DIR_ENV_VAR = "COURSE_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/course_lib"
PREPARE_INSTALL_COMMAND = 'pip install -e ".[prepare]"'

SPLITS = ("train", "test")
TFDS_FILE_FORMAT = "array_record"
PIXEL_MAX = 255.0
NETWORK_TIMEOUT_S = 3.0
RECORDS_PER_READ = 2000
CHILD_OUTPUT_TAIL_CHARS = 3000

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
    name: str
    image_shape: tuple
    class_names: tuple
    has_lossless_mask: bool

    @property
    def npz_name(self):
        return f"{self.name}.npz"


_DATASETS = {
    "mnist": _DatasetSpec("mnist", (28, 28, 1), MNIST_CLASS_NAMES, False),
    "cifar10": _DatasetSpec("cifar10", (32, 32, 3), CIFAR10_CLASS_NAMES, True),
}


class DataError(RuntimeError):
    """A data set could not be loaded; the message says why and what to do."""


class DataFileError(DataError, ValueError):
    """A data file exists but is unreadable or does not hold what was expected."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set is available from none of the sources."""


@dataclasses.dataclass(frozen=True)
class LoadInfo:
    """Where the arrays of one load came from.

    Attributes:
        dataset: "mnist" or "cifar10".
        split: "train" or "test".
        source: "npz" (``$COURSE_DATA_DIR``), "tfds-cache" (npz converted earlier
            from tensorflow-datasets) or "tfds" (records read now).
        path: the file or directory read.
        from_memory: True if the arrays came from this process's memory cache.
        prepared_now: True if tensorflow-datasets prepared the data set in this call.
        seconds: wall-clock time of the load.
    """

    dataset: str
    split: str
    source: str
    path: str
    from_memory: bool
    prepared_now: bool
    seconds: float


@dataclasses.dataclass(frozen=True)
class _SplitArrays:
    images: np.ndarray  # uint8, NHWC
    labels: np.ndarray  # int64, (N,)
    lossless: np.ndarray  # bool, (N,)


_memory_cache = {}
_last_load = None


def data_dir():
    """Returns the local npz directory (``$COURSE_DATA_DIR``) as a Path, or None if unset."""
    value = os.environ.get(DATA_DIR_ENV_VAR)
    return pathlib.Path(value).expanduser() if value else None


def tfds_data_dir():
    """Returns ``$TFDS_DATA_DIR`` as a Path, or None (tensorflow-datasets' default)."""
    value = os.environ.get(TFDS_DATA_DIR_ENV_VAR)
    return pathlib.Path(value).expanduser() if value else None


def cache_dir():
    """Returns the directory of converted npz files (``$COURSE_CACHE_DIR`` or the default)."""
    return pathlib.Path(os.environ.get(CACHE_DIR_ENV_VAR) or DEFAULT_CACHE_DIR).expanduser()


def last_source():
    """Returns the `LoadInfo` of the latest load in this process, or None before any."""
    return _last_load


def clear_memory_cache():
    """Forgets the arrays kept in memory (files on disk are left alone)."""
    _memory_cache.clear()


def load_mnist(split, limit=None):
    """Loads MNIST digits.

    Args:
        split: "train" (60,000 images) or "test" (10,000 images).
        limit: None for the whole split, or a positive int: the first `limit` examples.

    Returns:
        `(images, labels)`: images float32 in [0, 1] of shape (N, 28, 28, 1);
        labels int64 in 0..9 of shape (N,).

    Raises:
        ValueError: on a wrong `split` or `limit`.
        DataFileError: if a data file is corrupt or holds the wrong arrays.
        DataNotFoundError: if no source has the data set.
    """
    return _load("mnist", split, limit, exact_only=False)


def load_cifar10(split, limit=None, exact_only=False):
    """Loads CIFAR-10 colour images (class names in `CIFAR10_CLASS_NAMES`).

    Args:
        split: "train" (50,000 images) or "test" (10,000 images).
        limit: None for all, or a positive int: the first `limit` examples (counted
            after `exact_only` filtering).
        exact_only: keep only images stored losslessly. The offline copy in
            ``$COURSE_DATA_DIR`` holds 1,000 such test images (its other 9,000 were
            decoded from JPEG); data from tensorflow-datasets is lossless throughout.

    Returns:
        `(images, labels)`: images float32 in [0, 1] of shape (N, 32, 32, 3);
        labels int64 in 0..9 of shape (N,).

    Raises:
        ValueError: on a wrong `split`, `limit` or `exact_only`.
        DataFileError: if a data file is corrupt or holds the wrong arrays.
        DataNotFoundError: if no source has the data set.
    """
    if not isinstance(exact_only, bool):
        raise ValueError(f"exact_only must be True or False. Received: exact_only={exact_only!r}")
    return _load("cifar10", split, limit, exact_only=exact_only)


def describe_sources():
    """Returns a few lines saying where each data set would be loaded from, without loading."""
    lines = [f"lookup order: ${DATA_DIR_ENV_VAR} npz -> tensorflow-datasets prepared -> prepare"]
    directory = data_dir()
    lines.append(f"{DATA_DIR_ENV_VAR}={directory if directory else '(unset)'}")
    tfds_directory = tfds_data_dir() or "(unset: tensorflow-datasets default)"
    lines.append(f"{TFDS_DATA_DIR_ENV_VAR}={tfds_directory}")
    lines.append(f"cache dir: {cache_dir()}")
    for spec in _DATASETS.values():
        if directory is not None and (directory / spec.npz_name).is_file():
            where = f"npz {directory / spec.npz_name}"
        else:
            cached = sorted(cache_dir().glob(f"tfds_{spec.name}_*.npz"))
            where = f"tfds cache {', '.join(map(str, cached))}" if cached else "tensorflow-datasets"
        lines.append(f"{spec.name}: {where}")
    return "\n".join(lines)


def prepare_with_tfds(dataset):
    """Downloads and prepares a data set with tensorflow-datasets (array_record format).

    Runs in a child process, since preparing imports TensorFlow. Uses ``$TFDS_DATA_DIR``
    and, when set, ``$COURSE_TFDS_MANUAL_DIR`` for the original archives.

    Args:
        dataset: "mnist" or "cifar10".

    Returns:
        The directory of the prepared data (a Path).

    Raises:
        ValueError: on an unknown data set name.
        DataNotFoundError: if TensorFlow is missing, or the archives are neither in the
            manual directory nor downloadable.
        DataError: if preparation fails otherwise.
    """
    spec = _dataset_spec(dataset)
    tfds = _import_tfds()
    builder = _tfds_builder(tfds, spec)
    _prepare_in_child(builder, spec)
    return pathlib.Path(str(builder.data_path))


def _dataset_spec(dataset):
    if dataset not in _DATASETS:
        raise ValueError(
            f"Unknown data set. Expected one of {sorted(_DATASETS)}. Received: dataset={dataset!r}"
        )
    return _DATASETS[dataset]


def _check_arguments(split, limit):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: split={split!r}")
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0:
        raise ValueError(
            f"limit must be None or a positive integer. Received: limit={limit!r}"
        )


def _load(dataset, split, limit, exact_only):
    global _last_load
    _check_arguments(split, limit)
    spec = _dataset_spec(dataset)
    start = time.perf_counter()
    arrays, info = _load_uint8(spec, split)
    images, labels = arrays.images, arrays.labels
    if exact_only:
        images, labels = images[arrays.lossless], labels[arrays.lossless]
    if limit is not None:
        if limit > len(labels):
            kind = "lossless examples" if exact_only else "examples"
            raise ValueError(
                f"limit is larger than the {len(labels)} {kind} of {dataset} '{split}' "
                f"(source: {info.path}). Received: limit={limit}"
            )
        images, labels = images[:limit], labels[:limit]
    images = images.astype(np.float32)
    images /= np.float32(PIXEL_MAX)
    labels = labels.astype(np.int64)
    _last_load = dataclasses.replace(info, seconds=time.perf_counter() - start)
    return images, labels


def _load_uint8(spec, split):
    """Returns (_SplitArrays, LoadInfo) from the first source that has the data set."""
    directory = data_dir()
    if directory is not None:
        if not directory.is_dir():
            raise DataNotFoundError(
                f"${DATA_DIR_ENV_VAR} names a directory that does not exist: {directory}. "
                f"Set it to the folder holding {spec.npz_name}, or unset it to use "
                "tensorflow-datasets."
            )
        path = directory / spec.npz_name
        if path.is_file():
            return _load_npz_cached(spec, split, path, source="npz")
    return _load_from_tfds(spec, split)


def _load_npz_cached(spec, split, path, source):
    stat = path.stat()
    key = (source, str(path.resolve()), stat.st_mtime_ns, stat.st_size, split)
    from_memory = key in _memory_cache
    if not from_memory:
        _memory_cache[key] = _read_npz(spec, split, path)
    info = LoadInfo(spec.name, split, source, str(path), from_memory, False, 0.0)
    return _memory_cache[key], info


# ---------------------------------------------------------------------------
# npz files: reading and validation


def _npz_error(path, problem, expected):
    return DataFileError(
        f"{path}: {problem}. Expected: {expected}. Replace the file with a good copy, "
        f"or unset ${DATA_DIR_ENV_VAR} to load the data set through tensorflow-datasets."
    )


def _read_npz(spec, split, path):
    """Reads and checks one split of an npz file laid out like the course data directory."""
    image_key, label_key = f"x_{split}", f"y_{split}"
    wanted = [image_key, label_key]
    if spec.has_lossless_mask and split == "test":
        wanted.append("test_is_lossless")
    layout = f"an npz file with arrays {wanted} (images uint8 of shape (N, *{spec.image_shape}))"
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in wanted if key not in archive.files]
            if missing:
                raise _npz_error(
                    path, f"missing arrays {missing} (found: {sorted(archive.files)})", layout
                )
            arrays = {key: archive[key] for key in wanted}
            if "class_names" in archive.files:
                arrays["class_names"] = archive["class_names"]
    except DataFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        problem = f"cannot be read as npz ({type(error).__name__}: {error}); it may be truncated"
        raise _npz_error(path, problem, layout) from error
    images = _check_images(spec, path, image_key, arrays[image_key])
    labels = _check_labels(spec, path, label_key, arrays[label_key], len(images))
    lossless = np.ones(len(images), dtype=bool)
    if "test_is_lossless" in arrays:
        lossless = _check_mask(path, arrays["test_is_lossless"], len(images))
    if "class_names" in arrays:
        _check_class_names(spec, path, arrays["class_names"])
    return _SplitArrays(images, labels, lossless)


def _check_images(spec, path, key, images):
    shape_2d = spec.image_shape[:2]
    expected = f"'{key}' uint8 of shape (N, *{spec.image_shape})"
    if spec.image_shape[-1] == 1:
        expected += f" or (N, *{shape_2d})"
        if images.ndim == 3 and images.shape[1:] == shape_2d:
            images = images[..., np.newaxis]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != spec.image_shape:
        raise _npz_error(path, f"'{key}' has shape={images.shape}, dtype={images.dtype}", expected)
    if len(images) == 0:
        raise _npz_error(path, f"'{key}' is empty", expected + " with N > 0")
    return images


def _check_labels(spec, path, key, labels, num_images):
    num_classes = len(spec.class_names)
    expected = f"'{key}' integer labels in 0..{num_classes - 1} of shape ({num_images},)"
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (num_images,):
        raise _npz_error(path, f"'{key}' has shape={labels.shape}, dtype={labels.dtype}", expected)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise _npz_error(path, f"'{key}' holds labels from {low} to {high}", expected)
    return labels.astype(np.int64)


def _check_mask(path, mask, num_images):
    if mask.dtype != np.bool_ or mask.shape != (num_images,):
        raise _npz_error(
            path,
            f"'test_is_lossless' has shape={mask.shape}, dtype={mask.dtype}",
            f"bool of shape ({num_images},)",
        )
    return mask


def _check_class_names(spec, path, names):
    received = tuple(str(name) for name in np.asarray(names).ravel())
    if received != spec.class_names:
        raise _npz_error(path, f"'class_names' is {received}", f"{spec.class_names}")


def _write_npz(path, split, arrays, class_names):
    """Writes one split in the course layout, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    contents = {f"x_{split}": arrays.images, f"y_{split}": arrays.labels}
    contents["class_names"] = np.asarray(class_names)
    if split == "test":
        contents["test_is_lossless"] = arrays.lossless
    np.savez(temporary, **contents)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------
# tensorflow-datasets


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataNotFoundError(
            f"No local npz data (${DATA_DIR_ENV_VAR}) and tensorflow-datasets cannot be "
            f"imported ({error}). Install the course package (pip install -e .) or set "
            f"${DATA_DIR_ENV_VAR} to a folder holding mnist.npz / cifar10.npz."
        ) from error
    return tfds


def _tfds_builder(tfds, spec):
    directory = tfds_data_dir()
    return tfds.builder(
        spec.name,
        data_dir=None if directory is None else str(directory),
        file_format=TFDS_FILE_FORMAT,
    )


def _load_from_tfds(spec, split):
    memory_key = ("tfds", spec.name, split, str(tfds_data_dir()), str(cache_dir()))
    if memory_key in _memory_cache:
        arrays, info = _memory_cache[memory_key]
        return arrays, dataclasses.replace(info, from_memory=True, prepared_now=False)
    tfds = _import_tfds()
    builder = _tfds_builder(tfds, spec)
    cache_path = cache_dir() / f"tfds_{spec.name}_{builder.version}_{split}.npz"
    if cache_path.is_file():
        try:
            arrays = _read_npz(spec, split, cache_path)
        except DataFileError as error:
            warnings.warn(f"Ignoring a damaged cache file; rebuilding it. {error}", stacklevel=4)
            cache_path.unlink(missing_ok=True)
        else:
            info = LoadInfo(spec.name, split, "tfds-cache", str(cache_path), False, False, 0.0)
            _memory_cache[memory_key] = (arrays, info)
            return arrays, info
    prepared_now = False
    if not builder.is_prepared():
        _prepare_in_child(builder, spec)
        prepared_now = True
    arrays = _read_tfds_records(tfds, spec, split, builder)
    try:
        _write_npz(cache_path, split, arrays, spec.class_names)
    except OSError as error:
        warnings.warn(f"Could not write the cache file {cache_path}: {error}", stacklevel=4)
    info = LoadInfo(spec.name, split, "tfds", str(builder.data_path), False, prepared_now, 0.0)
    _memory_cache[memory_key] = (arrays, info)
    return arrays, info


def _read_tfds_records(tfds, spec, split, builder):
    """Reads every record of a prepared split and returns them in the original order."""
    directory = tfds_data_dir()
    try:
        source = tfds.data_source(
            spec.name,
            split=split,
            data_dir=None if directory is None else str(directory),
            download=False,
        )
    except NotImplementedError as error:
        raise DataFileError(
            f"{builder.data_path}: {spec.name} is prepared there in a format without random "
            f"access ({error}). Expected: the '{TFDS_FILE_FORMAT}' format. Delete that folder "
            f"or point ${TFDS_DATA_DIR_ENV_VAR} elsewhere, then load again to re-prepare."
        ) from error
    _check_tfds_classes(spec, builder)
    absl_logger = logging.getLogger("absl")
    previous_level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # silences "OpenCV is not installed" notices
    try:
        records = []
        for start in range(0, len(source), RECORDS_PER_READ):
            stop = min(start + RECORDS_PER_READ, len(source))
            records.extend(source.__getitems__(list(range(start, stop))))
    finally:
        absl_logger.setLevel(previous_level)
    images = np.stack([record["image"] for record in records]).astype(np.uint8)
    labels = np.array([record["label"] for record in records], dtype=np.int64)
    if images.shape[1:] != spec.image_shape:
        raise DataFileError(
            f"{builder.data_path}: {spec.name} '{split}' images have shape {images.shape[1:]}. "
            f"Expected: {spec.image_shape}. Delete the folder and prepare again."
        )
    positions = _original_positions(records, split, builder)
    ordered_images = np.empty_like(images)
    ordered_labels = np.empty_like(labels)
    ordered_images[positions] = images
    ordered_labels[positions] = labels
    return _SplitArrays(ordered_images, ordered_labels, np.ones(len(labels), dtype=bool))


def _check_tfds_classes(spec, builder):
    names = getattr(builder.info.features["label"], "names", None)
    if spec.name == "cifar10" and tuple(names or ()) != spec.class_names:
        raise DataFileError(
            f"{builder.data_path}: tensorflow-datasets names the cifar10 classes {names}. "
            f"Expected: {spec.class_names}. Delete the folder and prepare again."
        )


def _original_positions(records, split, builder):
    """Returns, for each stored record, its index in the original data set.

    tensorflow-datasets stores examples sorted by md5(split name + str(key)), where the
    key is the example's index in the original files (MNIST, CIFAR-10); CIFAR-10 also
    stores that index in its "id" feature ("train_00042").
    """
    count = len(records)
    if "id" in records[0]:
        identifiers = [record["id"] for record in records]
        identifiers = [i.decode() if isinstance(i, bytes) else str(i) for i in identifiers]
        positions = np.array([int(i.rsplit("_", 1)[-1]) for i in identifiers], dtype=np.int64)
    elif getattr(builder.info, "disable_shuffling", False):
        positions = np.arange(count)
    else:
        positions = _tfds_shuffled_positions(split, count)
    if count and (positions.min() < 0 or positions.max() >= count
                  or np.bincount(positions, minlength=count).max() != 1):
        raise DataFileError(
            f"{builder.data_path}: cannot restore the original order of '{split}' "
            f"({count} records). Expected: each original index exactly once. This "
            "tensorflow-datasets version may order records differently; report it."
        )
    return positions


def _tfds_shuffled_positions(split, count):
    """Original index of each record that tensorflow-datasets wrote for keys 0..count-1."""
    salt = hashlib.md5(split.encode("utf-8"))
    hashes = []
    for key in range(count):
        digest = salt.copy()
        digest.update(str(key).encode("utf-8"))
        hashes.append(int(digest.hexdigest(), 16))
    return np.array(sorted(range(count), key=hashes.__getitem__), dtype=np.int64)


def _tensorflow_installed():
    return importlib.util.find_spec("tensorflow") is not None


def _host_reachable(host, port=443):
    try:
        with socket.create_connection((host, port), timeout=NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def _manual_dir():
    value = os.environ.get(TFDS_MANUAL_DIR_ENV_VAR)
    return pathlib.Path(value).expanduser() if value else None


def _check_can_prepare(builder, spec):
    """Raises DataNotFoundError early when preparation cannot work here."""
    where = f"{builder.data_path}"
    if not _tensorflow_installed():
        raise DataNotFoundError(
            f"{spec.name} is not in ${DATA_DIR_ENV_VAR} and not prepared by "
            f"tensorflow-datasets at {where}. Preparing it needs TensorFlow, which is not "
            f"installed. Install it with: {PREPARE_INSTALL_COMMAND} "
            f"(or set ${DATA_DIR_ENV_VAR} to a folder holding {spec.npz_name})."
        )
    manual = _manual_dir()
    url_infos = builder.url_infos or {}
    missing = {
        url: info.filename
        for url, info in url_infos.items()
        if manual is None or not (manual / (info.filename or "")).is_file()
    }
    hosts = sorted({urllib.parse.urlparse(url).hostname for url in missing})
    unreachable = [host for host in hosts if not _host_reachable(host)]
    if unreachable:
        raise DataNotFoundError(
            f"{spec.name} is not in ${DATA_DIR_ENV_VAR} and not prepared at {where}, and "
            f"its download host(s) {unreachable} cannot be reached (no network?). "
            f"Files needed: {sorted(missing.values())}; manual directory "
            f"${TFDS_MANUAL_DIR_ENV_VAR}={manual}. Put those files in a folder and set "
            f"${TFDS_MANUAL_DIR_ENV_VAR} to it, or set ${DATA_DIR_ENV_VAR} to a folder "
            f"holding {spec.npz_name}."
        )


def _prepare_in_child(builder, spec):
    _check_can_prepare(builder, spec)
    print(
        f"Preparing {spec.name} with tensorflow-datasets in {builder.data_path} "
        "(a child process; this can take minutes)...",
        flush=True,
    )
    package_root = str(pathlib.Path(__file__).resolve().parents[1])
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (package_root, environment.get("PYTHONPATH")) if part
    )
    command = [
        sys.executable,
        "-c",
        "import sys; from course_lib.data import _prepare_here; _prepare_here(sys.argv[1])",
        spec.name,
    ]
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr)[-CHILD_OUTPUT_TAIL_CHARS:]
        raise DataError(
            f"tensorflow-datasets could not prepare {spec.name} in {builder.data_path} "
            f"(exit status {completed.returncode}). Last output:\n{output}"
        )


def _prepare_here(dataset):
    """Runs tensorflow-datasets' download_and_prepare in this process (imports TensorFlow)."""
    import tensorflow_datasets as tfds

    spec = _dataset_spec(dataset)
    manual = _manual_dir()
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual is None else str(manual), try_download_gcs=False
    )
    _tfds_builder(tfds, spec).download_and_prepare(download_config=config)
