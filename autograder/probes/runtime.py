# Probe runtime. The grader sends this file's text and the lab's probe module to a fresh,
# sandboxed probe process (`_course_host_main`), which never runs the notebook's top-level
# code: it loads what the notebook exported (models with safe_mode=True) and, for the
# items that grade a definition, executes only the notebook's imports, functions and
# classes. Every item runs in its own forked child; only the parent, where no submitted
# code ever runs, writes the results. Tests run probes in-process (`_course_probe_main`).
# It must stay self-contained: no import of the autograder package.
import json as _course_json
import os as _course_os
import time as _course_time
import traceback as _course_traceback

_COURSE_MAX_ERROR_CHARS = 1500


class ProbeError(Exception):
    """Raised by a probe when the submission lacks or breaks what the probe needs."""


def require(namespace, name, kind=None):
    """Returns `namespace[name]`, or raises ProbeError saying what is missing."""
    if name not in namespace:
        problems = namespace.get("__course_definition_errors__") or []
        hint = ""
        if problems:
            hint = " These top-level statements failed when the grader ran them: " + "; ".join(problems[:3])
        raise ProbeError(
            f"The notebook defines no `{name}`. Keep the names given in the notebook's "
            f"introduction, defined with `def`/`class` (or a plain value) at the top level of a cell.{hint}"
        )
    value = namespace[name]
    if kind == "callable" and not callable(value):
        raise ProbeError(f"`{name}` should be callable. Received: {type(value).__name__}")
    return value


def to_numpy(value):
    """Converts a keras/torch/numpy value to a numpy array (on the CPU)."""
    import numpy

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif not isinstance(value, numpy.ndarray):
        import keras

        value = keras.ops.convert_to_numpy(value)
    return numpy.asarray(value)


def module_of(value):
    """The module a function or class (or, failing that, an instance's class) was defined in."""
    exported = getattr(value, "_course_origin_module", None)
    if isinstance(exported, str):
        return exported
    module = getattr(value, "__module__", None)
    if module is None:
        module = getattr(type(value), "__module__", None)
    return str(module)


def defined_in(value):
    """The module where `value` (a function, a class or an instance) was defined."""
    exported = getattr(value, "_course_origin_module", None)
    if isinstance(exported, str):
        return exported
    if isinstance(value, type) or callable(value) and hasattr(value, "__code__"):
        return module_of(value)
    return module_of(type(value))


def referenced_names(function):
    """Global and attribute names used by `function` and by the helpers it calls.

    Helpers are the functions defined beside it (same globals), followed recursively.
    Names bound to course_lib objects are reported as "module.name".
    """
    import types

    found, seen, pending = set(), set(), [function]
    globals_of_notebook = getattr(function, "__globals__", {})
    while pending:
        code = getattr(pending.pop(), "__code__", None)
        if code is None or id(code) in seen:
            continue
        seen.add(id(code))
        codes = [code]
        while codes:
            block = codes.pop()
            codes.extend(c for c in block.co_consts if isinstance(c, types.CodeType))
            for name in block.co_names:
                found.add(name)
                value = globals_of_notebook.get(name)
                module = getattr(value, "__module__", "") or ""
                if module.startswith("course_lib"):
                    found.add(f"{module}.{getattr(value, '__name__', name)}")
                if isinstance(value, types.FunctionType) and value.__globals__ is globals_of_notebook:
                    pending.append(value)
    return sorted(found)


def _course_describe_error(error):
    text = "".join(_course_traceback.format_exception_only(type(error), error)).strip()
    return text[-_COURSE_MAX_ERROR_CHARS:]


def _course_run_item(item_name, probe, namespace, rng):
    """Runs one probe, catching every failure. Returns (status dict, {key: array})."""
    arrays = {}
    started = _course_time.time()
    try:
        result = probe(namespace, rng) or {}
        facts = {}
        for key, value in result.items():
            if isinstance(value, (str, bool, int, float, type(None), list, dict)):
                facts[key] = value
            else:
                arrays[f"{item_name}/{key}"] = to_numpy(value)
        status = {"ok": True, "facts": facts}
    except BaseException as error:  # SystemExit and KeyboardInterrupt included
        status = {"ok": False, "error": _course_describe_error(error)}
    status["seconds"] = round(_course_time.time() - started, 3)
    return status, arrays


def _course_item_rng(seed, index):
    import numpy

    return numpy.random.default_rng([int(seed), int(index)])


def _course_probe_main(namespace, probes, out_dir, seed, only=None):
    """Runs each probe in this process on `namespace`; writes probe.npz + probe.json.

    For tests and the nbgrader bridge: the grader itself uses `_course_host_main`.
    """
    import numpy

    arrays = {}
    items = {}
    for index, (item_name, probe) in enumerate(probes.items()):
        if only is not None and item_name not in only:
            continue
        items[item_name], item_arrays = _course_run_item(item_name, probe, namespace, _course_item_rng(seed, index))
        arrays.update(item_arrays)
    numpy.savez(_course_os.path.join(out_dir, "probe.npz"), **arrays)
    with open(_course_os.path.join(out_dir, "probe.json"), "w") as handle:
        _course_json.dump({"seed": seed, "items": items}, handle)
    return items


# ----------------------------------------------------------------- the probe process

_COURSE_HEADER_BYTES = 8
_COURSE_MAX_RESULT_BYTES = 1_500_000_000


def _course_stand_ins():
    """Placeholders for the notebook's own layers inside saved models.

    `Sampling` returns z_mean: probes of trained models use the encoder's z_mean and
    z_log_var; the notebook's Sampling is graded on its definition, not through a saved model.
    """
    import keras

    class Sampling(keras.layers.Layer):
        def __init__(self, **kwargs):
            kept = {key: kwargs[key] for key in ("name", "trainable", "dtype") if key in kwargs}
            super().__init__(**kept)

        def call(self, inputs):
            return inputs[0]

        def compute_output_shape(self, input_shape):
            return input_shape[0]

    return {"Sampling": Sampling}


def _course_registered_names(config, class_name):
    """Every `registered_name` of objects called `class_name` in a saved model's config."""
    found, pending = set(), [config]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if value.get("class_name") == class_name and isinstance(value.get("registered_name"), str):
                found.add(value["registered_name"])
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


_COURSE_REGISTERING_MODULES = (
    "course_lib.image_layers", "course_lib.batch_norm", "course_lib.vae", "course_lib.resnet", "course_lib.cnn",
)


def _course_register_course_layers():
    """Imports the course modules whose layers saved models may hold (a withheld one is skipped)."""
    import importlib

    for name in _COURSE_REGISTERING_MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            pass


def _course_custom_objects(path):
    """The stand-ins, under every name the saved model gives the notebook's own classes."""
    _course_register_course_layers()
    stand_ins = _course_stand_ins()
    objects = dict(stand_ins)
    config = _course_saved_config(path)  # {} for an unreadable file: keras reports it itself
    for class_name, stand_in in stand_ins.items():
        for registered in _course_registered_names(config, class_name):
            # course_lib's own Sampling too: its module may be withheld in this process.
            objects[registered] = stand_in
    return objects


def _course_saved_config(path):
    """The config.json of a saved .keras file, or {} when it cannot be read."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return _course_json.loads(archive.read("config.json"))
    except Exception:
        return {}


def _course_layer_entries(config, class_name):
    """The serialized layers called `class_name` anywhere in a saved model's config."""
    found, pending = [], [config]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if value.get("class_name") == class_name and isinstance(value.get("config"), dict):
                found.append(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return found


def _course_model_files(record, what):
    """[(what, file name)] of the saved models of one exported object (pairs and dicts too)."""
    kind = record.get("kind")
    if kind == "model":
        return [(what, record.get("file", ""))]
    if kind == "pair":
        return [(f"{what}.{part}", sub.get("file", "")) for part, sub in sorted(record.get("parts", {}).items())]
    if kind == "dict":
        files = []
        for label, entry in record.get("entries", {}).items():
            files += _course_model_files(entry, f"{what}[{label}]")
        return files
    return []


class _CourseLoadedPair:
    """A trained model's encoder and decoder as loaded from the notebook's export."""

    def __init__(self, encoder, decoder, origin_module, origin_class, layer_classes=None):
        self._course_layer_classes = dict(layer_classes or {})
        if encoder is not None:
            self.encoder = encoder
        if decoder is not None:
            self.decoder = decoder
        self._course_origin_module = origin_module
        self._course_origin_class = origin_class


class _CourseLoadedHistory:
    """A keras History as exported: `.history` is the dict of per-epoch logs."""

    def __init__(self, history, origin_module):
        self.history = history
        self._course_origin_module = origin_module


class _CourseArtefacts(dict):
    """The notebook's exported results as a namespace; models load on first use."""

    def __init__(self, folder, manifest):
        super().__init__()
        self._folder = folder
        self._manifest = manifest
        self.update(manifest.get("values", {}))
        for name, record in manifest.get("histories", {}).items():
            self[name] = _CourseLoadedHistory(record.get("history"), record.get("module", ""))
        self["__course_export_errors__"] = dict(manifest.get("errors", {}))

    def __contains__(self, name):
        return dict.__contains__(self, name) or name in self._manifest.get("objects", {})

    def __missing__(self, name):
        record = self._manifest.get("objects", {}).get(name)
        if record is None:
            error = self._manifest.get("errors", {}).get(name)
            if error and error != "not defined":
                raise ProbeError(f"The grader could not save `{name}` after the notebook ran: {error}")
            raise KeyError(name)
        value = self._load(record, name)
        self[name] = value
        return value

    def get(self, name, default=None):
        """Like dict.get; a saved object that cannot be loaded also gives `default` (require() says why)."""
        try:
            return self[name]
        except (KeyError, ProbeError):
            return default

    def layer_configs(self, class_name):
        """[(where, serialized layer)] of every `class_name` layer the notebook built.

        From the saved models' config.json (a layer inside a trained model, constructor
        arguments included) and from the top-level layers the export recorded. The probes
        rebuild them with the notebook's own class (`keras.saving.deserialize_keras_object`).
        """
        found = []
        for name, record in sorted(self._manifest.get("objects", {}).items()):
            for what, file_name in _course_model_files(record, name):
                config = _course_saved_config(_course_os.path.join(self._folder, file_name))
                for entry in _course_layer_entries(config, class_name):
                    layer = {key: entry[key] for key in ("module", "class_name", "config", "registered_name")
                             if key in entry}
                    found.append((f"{what}'s layer {entry.get('name', '?')!r}", layer))
        for name, record in sorted(self._manifest.get("layers", {}).items()):
            config = record.get("config")
            if record.get("class") == class_name and isinstance(config, dict):
                found.append((f"the notebook's `{name}`", config))
        return found

    def _load_model(self, record, what):
        import keras

        path = _course_os.path.join(self._folder, record["file"])
        try:
            return keras.saving.load_model(path, custom_objects=_course_custom_objects(path), safe_mode=True)
        except Exception as error:
            raise ProbeError(
                f"The grader could not load `{what}` as saved from the notebook ({type(error).__name__}: "
                f"{str(error)[:300]}). Build trained models from Keras layers (a custom layer other than "
                f"Sampling cannot be loaded safely)."
            ) from None

    def _load(self, record, what):
        kind = record.get("kind")
        if kind == "model":
            return self._load_model(record, what)
        if kind == "pair":
            parts = {part: self._load_model(sub, f"{what}.{part}") for part, sub in record.get("parts", {}).items()}
            classes = {part: sub.get("layer_classes", []) for part, sub in record.get("parts", {}).items()}
            return _CourseLoadedPair(parts.get("encoder"), parts.get("decoder"), record.get("module", ""),
                                     record.get("class", ""), classes)
        if kind == "dict":
            loaded = {}
            for label, entry in record.get("entries", {}).items():
                key = entry.get("key")
                loaded[key if not isinstance(key, list) else tuple(key)] = self._load(entry, f"{what}[{label}]")
            return loaded
        raise ProbeError(f"`{what}` was exported in an unknown form ({kind!r}).")


def _course_exec_definitions(namespace, statements):
    """Executes the notebook's top-level imports, functions and classes into `namespace`."""
    errors = namespace.setdefault("__course_definition_errors__", [])
    namespace.setdefault("__name__", "__main__")
    for label, source in statements:
        try:
            exec(compile(source, label, "exec"), namespace)
        except BaseException as error:  # an import that fails here must not hide the others
            first_line = source.strip().splitlines()[0][:120] if source.strip() else ""
            errors.append(f"`{first_line}` ({_course_describe_error(error).splitlines()[-1][:200]})")


def _course_prctl_not_dumpable():
    """Other processes of the same user can no longer ptrace this one or read its memory."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def _course_kill_strays(own_namespace, session=None):
    """After an item: in our own pid namespace every process but init and us; else the child's session."""
    import signal

    me = _course_os.getpid()
    strays = [int(entry) for entry in _course_os.listdir("/proc") if entry.isdigit()] if own_namespace else []
    for pid in strays:
        if pid in (1, me):
            continue
        try:
            _course_os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if session:
        try:
            _course_os.killpg(session, signal.SIGKILL)
        except OSError:
            pass


def _course_wipe(folders):
    """Empties the writable folders between items, so no item leaves files for the next."""
    import shutil

    for folder in folders:
        try:
            entries = _course_os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            path = _course_os.path.join(folder, entry)
            try:
                if _course_os.path.isdir(path) and not _course_os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    _course_os.unlink(path)
            except OSError:
                pass


def _course_pack(document, arrays):
    import io

    import numpy

    buffer = io.BytesIO()
    numpy.savez(buffer, **arrays)
    header = _course_json.dumps(document).encode()
    return len(header).to_bytes(_COURSE_HEADER_BYTES, "big") + header + buffer.getvalue()


def _course_unpack(data):
    """Inverse of `_course_pack`; raises ValueError for anything malformed."""
    import io

    import numpy

    if len(data) < _COURSE_HEADER_BYTES:
        raise ValueError("no result")
    size = int.from_bytes(data[:_COURSE_HEADER_BYTES], "big")
    document = _course_json.loads(data[_COURSE_HEADER_BYTES:_COURSE_HEADER_BYTES + size].decode())
    with numpy.load(io.BytesIO(data[_COURSE_HEADER_BYTES + size:]), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return document, arrays


def _course_read_all(fd, deadline):
    """Reads a pipe to its end or until `deadline`; returns (bytes, timed_out)."""
    import select

    chunks, total = [], 0
    while True:
        remaining = deadline - _course_time.time()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
        if not ready:
            continue
        chunk = _course_os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks), False
        total += len(chunk)
        if total > _COURSE_MAX_RESULT_BYTES:
            return b"", False
        chunks.append(chunk)


def _course_child(namespace_globals, request, item_name, index, write_fd):
    """In the forked child: forget the other items, build the namespace, run one item."""
    import gc

    _course_os.setsid()
    probes = namespace_globals["PROBES"]
    probe = probes[item_name]
    # What the other items use (helpers, supplied reference pieces) is not there for this one.
    for other, function in list(probes.items()):
        if other != item_name and namespace_globals.get(getattr(function, "__name__", "")) is function:
            namespace_globals[function.__name__] = None
    private = namespace_globals.get("ITEM_PRIVATE", {})
    for other, names in private.items():
        if other != item_name:
            for name in names:
                namespace_globals[name] = None
    probes.clear()
    statements = request["definitions"] if item_name in request["definition_items"] else []
    seed = request["seed"]
    folder, manifest = request["artefacts"], request["manifest"]
    request.clear()
    gc.collect()
    namespace = _CourseArtefacts(folder, manifest)
    if statements:
        _course_exec_definitions(namespace, statements)
    status, arrays = _course_run_item(item_name, probe, namespace, _course_item_rng(seed, index))
    try:
        payload = _course_pack(status, arrays)
    except Exception as error:
        payload = _course_pack({"ok": False, "error": f"the result could not be written: {error}"[:500]}, {})
    view = memoryview(payload)
    while view:
        written = _course_os.write(write_fd, view)
        view = view[written:]


def _course_needs_keras(request):
    """Whether the children will use Keras (saved models, or definitions that mention it).

    Importing it takes seconds; a notebook of plain numpy functions grades without it.
    """
    if request["manifest"].get("objects"):
        return True
    return any(word in source for _, source in request["definitions"] for word in ("keras", "torch", "course_lib"))


def _course_host_main(namespace_globals, request):
    """The probe process: one forked child per item; results to the original stdout.

    Args:
        namespace_globals: the globals of the runtime + lab probe module text.
        request: {"seed", "items" (ordered names), "definition_items", "definitions"
            ([label, source] pairs), "artefacts" (folder), "item_timeout_s",
            "writable" (folders wiped between items), "own_pid_namespace"}.
    """
    import sys

    _course_prctl_not_dumpable()
    result_fd = _course_os.dup(1)
    _course_os.dup2(2, 1)  # anything printed from here on goes to the log
    if "" in sys.path:
        sys.path.remove("")
    manifest_path = _course_os.path.join(request["artefacts"], "manifest.json")
    try:
        with open(manifest_path) as handle:
            request["manifest"] = _course_json.load(handle)
    except (OSError, ValueError):
        request["manifest"] = {"values": {}, "histories": {}, "objects": {}, "errors": {}}
    if _course_needs_keras(request):
        import keras  # noqa: F401  (imported once here, so each child starts warm)

        try:  # Keras' deserializer would import TensorFlow only to ask whether it is there
            from keras.src.utils import module_utils

            if "tensorflow" not in sys.modules:
                module_utils.tensorflow._available = False
        except Exception:
            pass

    probes = namespace_globals["PROBES"]
    order = list(probes)
    items, arrays = {}, {}
    for item_name in request["items"]:
        if item_name not in probes:
            continue
        index = order.index(item_name)
        read_fd, write_fd = _course_os.pipe()
        pid = _course_os.fork()
        if pid == 0:
            code = 0
            try:
                _course_os.close(read_fd)
                _course_os.close(result_fd)
                _course_child(namespace_globals, request, item_name, index, write_fd)
            except BaseException:
                code = 1
            finally:
                _course_os._exit(code)
        _course_os.close(write_fd)
        started = _course_time.time()
        data, timed_out = _course_read_all(read_fd, started + float(request["item_timeout_s"]))
        _course_os.close(read_fd)
        _course_kill_strays(bool(request.get("own_pid_namespace")), session=pid)
        try:
            _course_os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        _course_wipe(request.get("writable", []))
        if timed_out:
            items[item_name] = {"ok": False, "error": f"TimeoutError: this probe ran past {request['item_timeout_s']} s"}
            continue
        try:
            status, item_arrays = _course_unpack(data)
            if not isinstance(status, dict) or "ok" not in status:
                raise ValueError("no status")
        except Exception:
            items[item_name] = {"ok": False, "error": "The code under test stopped the probe before it could report "
                                                      "(a crash, an exit() call or a killed process)."}
            continue
        prefix = f"{item_name}/"
        arrays.update({key: value for key, value in item_arrays.items() if key.startswith(prefix)})
        items[item_name] = status
        items[item_name]["seconds"] = round(_course_time.time() - started, 3)
    payload = _course_pack({"seed": request["seed"], "items": items}, arrays)
    view = memoryview(payload)
    while view:
        written = _course_os.write(result_fd, view)
        view = view[written:]
    _course_os.close(result_fd)
