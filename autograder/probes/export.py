# Kernel-side export. The grader sends this file's text and a call to
# `_course_export_main` as one cell after the student's notebook has run. It only writes
# what the notebook produced (trained models, histories, plain values) into a folder;
# nothing is judged here. The probes run later in a fresh sandboxed process that loads
# these files (models with safe_mode=True) and never runs the notebook's top-level code.
# It must stay self-contained: no import of the autograder package.
import json as _course_json
import os as _course_os

_COURSE_MAX_VALUE_CHARS = 200_000
_COURSE_MANIFEST = "manifest.json"
_COURSE_SKIPPED_NAMES = ("In", "Out", "exit", "quit", "get_ipython")


def _course_plain(value, depth=0):
    """Returns a JSON-safe copy of numbers, strings, lists and dicts, or raises TypeError."""
    import numbers

    if depth > 6:
        raise TypeError("nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_course_plain(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(key): _course_plain(item, depth + 1) for key, item in value.items()}
    raise TypeError(type(value).__name__)


def _course_origin(value):
    kind = value if isinstance(value, type) else type(value)
    return {"module": str(getattr(kind, "__module__", "")), "class": str(getattr(kind, "__name__", ""))}


def _course_layer_classes(model):
    """(module, class) of every layer, nested models included."""
    found, pending = [], [model]
    while pending:
        layer = pending.pop()
        for child in getattr(layer, "layers", None) or []:
            origin = _course_origin(child)
            found.append(f"{origin['module']}.{origin['class']}")
            pending.append(child)
    return sorted(set(found))


def _course_save_model(model, folder, stem):
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, received {type(model).__name__}")
    path = _course_os.path.join(folder, f"{stem}.keras")
    model.save(path)
    return {"file": _course_os.path.basename(path), "layer_classes": _course_layer_classes(model),
            **_course_origin(model)}


def _course_export_pair(value, folder, stem):
    """An object holding `.encoder` and `.decoder` models (a VAE): both parts are saved."""
    record = {"kind": "pair", **_course_origin(value), "parts": {}}
    for part in ("encoder", "decoder"):
        if hasattr(value, part):
            record["parts"][part] = _course_save_model(getattr(value, part), folder, f"{stem}.{part}")
    return record


def _course_layer_record(value):
    """A top-level layer (not a model) as the notebook built it: its class and serialized config."""
    import keras

    config = _course_plain(keras.saving.serialize_keras_object(value))
    if len(_course_json.dumps(config)) > _COURSE_MAX_VALUE_CHARS:
        raise TypeError("config too large")
    return {"config": config, **_course_origin(value)}


def _course_export_model(value, folder, stem):
    import keras

    if hasattr(value, "encoder") or hasattr(value, "decoder"):
        return _course_export_pair(value, folder, stem)
    if isinstance(value, keras.Model):
        return {"kind": "model", **_course_save_model(value, folder, stem)}
    if isinstance(value, dict):
        entries = {}
        for index, (key, item) in enumerate(value.items()):
            entries[repr(key)] = {"key": _course_plain(key), **_course_export_model(item, folder, f"{stem}.{index}")}
        return {"kind": "dict", **_course_origin(value), "entries": entries}
    raise TypeError(f"expected a keras.Model or an object with .encoder/.decoder, received {type(value).__name__}")


def _course_tensorflow_off():
    """Keras' serializer imports TensorFlow (seconds, hundreds of MB) just to ask whether it
    is there; the kernel does not use it, so say it is not (unless the notebook imported it)."""
    import sys

    if "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils

        module_utils.tensorflow._available = False
    except Exception:  # another Keras layout: saving still works, only slower
        pass


def _course_export_main(namespace, folder, model_names):
    """Writes `folder/manifest.json` (+ model files) describing the notebook's results.

    The manifest holds plain values, histories, saved models ("objects"), the serialized
    config of every top-level Keras layer that is not a model ("layers") and the errors.

    Args:
        namespace: the notebook's globals().
        folder: an empty folder.
        model_names: the names whose values are trained models to save.
    """
    import sys

    _course_os.makedirs(folder, exist_ok=True)
    # A notebook that never imported Keras holds no model (and importing it takes seconds).
    keras = sys.modules.get("keras")
    if keras is not None:
        _course_tensorflow_off()
    manifest = {"values": {}, "histories": {}, "objects": {}, "layers": {}, "errors": {}}
    for name, value in list(namespace.items()):
        if name.startswith("_") or name in _COURSE_SKIPPED_NAMES:
            continue
        try:
            if name in model_names:
                if keras is None:
                    raise TypeError(f"expected a keras.Model, received {type(value).__name__}")
                manifest["objects"][name] = _course_export_model(value, folder, name)
            elif keras is not None and isinstance(value, keras.layers.Layer) and not isinstance(value, keras.Model):
                # How the notebook constructed it (constructor arguments included): the probes
                # rebuild it with the notebook's own class to test the layer the notebook used.
                manifest["layers"][name] = _course_layer_record(value)
            elif keras is not None and isinstance(value, keras.callbacks.History):
                manifest["histories"][name] = {"history": _course_plain(value.history), **_course_origin(value)}
            else:
                text = _course_json.dumps(_course_plain(value))
                if len(text) <= _COURSE_MAX_VALUE_CHARS:
                    manifest["values"][name] = _course_json.loads(text)
        except TypeError as error:
            if name in model_names:
                manifest["errors"][name] = f"TypeError: {error}"
        except BaseException as error:  # a model that cannot be saved: say why
            if name in model_names:
                manifest["errors"][name] = f"{type(error).__name__}: {error}"[:1500]
    for name in model_names:
        if name not in namespace:
            manifest["errors"].setdefault(name, "not defined")
    with open(_course_os.path.join(folder, _COURSE_MANIFEST), "w") as handle:
        _course_json.dump(manifest, handle)
    return sorted(manifest["objects"])
