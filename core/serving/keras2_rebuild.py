"""Keras 2 ``.h5`` models (Teachable Machine's export among them) rebuilt from built-in Keras 3 layers.

Such files do not load in Keras 3 (``DepthwiseConv2D`` gets an unknown ``groups`` argument; newer tf-keras
files name the ``tf_keras`` Functional class). The stored model description is cleaned of those Keras 2
leftovers, the network is rebuilt layer by layer from built-in Keras 3 layers, and the weights are copied
from the file's HDF5 groups by layer and variable name. The description was already scanned for code.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from core.errors import UserError, short_error

# Keras 2 config keys Keras 3 does not accept, dropped when they hold their harmless default.
_LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "DepthwiseConv2D": {"groups": 1},
    "InputLayer": {"ragged": False},
    "BatchNormalization": {"renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99,
                           "virtual_batch_size": None, "adjustment": None, "fused": None},
}
# Keras 2 weight names that Keras 3 renamed (a DepthwiseConv2D's kernel).
_WEIGHT_ALIASES = {"depthwise_kernel": ("kernel",)}


def walk_objects(obj: Any, skip: frozenset[str] = frozenset()) -> Iterator[dict]:
    """Every serialised object (a dict with a ``class_name``) inside a model config."""
    if isinstance(obj, dict):
        if "class_name" in obj:
            yield obj
        for key, value in obj.items():
            if key not in skip:
                yield from walk_objects(value, skip)
    elif isinstance(obj, list):
        for value in obj:
            yield from walk_objects(value, skip)




def layer_name(obj: dict) -> str | None:
    cfg = obj.get("config")
    return obj.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)




def rebuild_keras2(config: dict, weights: Any, name: str) -> Any:
    """Rebuild a Keras 2 model from built-in Keras 3 layers, then copy its weights by name."""
    try:
        model = _build(config, None)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a layer Keras 3 cannot build from this description
        raise UserError(f"'{name}' could not be rebuilt with this version of Keras ({short_error(err)}).") from None
    _copy_weights(model, weights, name)
    return model


def _build(obj: dict, input_shape: tuple | None) -> Any:
    """A Keras 3 layer or model from one Keras 2 config object (recursing into nested models)."""
    cls = obj.get("class_name")
    if cls == "Sequential":
        return _build_sequential(obj["config"], input_shape)
    if cls in ("Functional", "Model"):
        return _build_functional(obj["config"])
    return _build_layer(obj)


def _build_layer(obj: dict) -> Any:
    """One built-in layer from its Keras 2 config, cleaned of keys Keras 3 no longer knows."""
    import keras

    cls = obj["class_name"]
    config = dict(obj.get("config") or {})
    config.pop("batch_input_shape", None)
    config.pop("input_shape", None)
    for key, default in _LEGACY_DEFAULTS.get(cls, {}).items():
        if key in config:
            if config[key] != default:
                raise UserError(f"The layer '{config.get('name')}' uses {key}={config[key]!r}, which Keras 3 "
                                "does not support.")
            config.pop(key)
    if isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = int(config["axis"][0])
    dtype = config.get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") == "Policy":
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
    layer_class = getattr(keras.layers, cls, None)
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise UserError(f"The layer '{config.get('name')}' is a {cls}, which is not a Keras layer.")
    return layer_class.from_config(config)


def _input_shape_of(layer_cfgs: list[dict], config: dict) -> tuple | None:
    for key in ("build_input_shape",):
        if isinstance(config.get(key), list):
            return tuple(config[key][1:])
    if layer_cfgs:
        first = layer_cfgs[0].get("config") or {}
        shape = first.get("batch_input_shape") or first.get("batch_shape")
        if shape:
            return tuple(shape[1:])
    return None


def _build_sequential(config: dict | list, input_shape: tuple | None) -> Any:
    """A Keras 2 Sequential, rebuilt as a Keras 3 functional model with the same name and layers."""
    import keras

    if isinstance(config, list):  # very old Keras 2 files store the layer list directly
        config = {"layers": config}
    layer_cfgs = list(config.get("layers", []))
    shape = _input_shape_of(layer_cfgs, config) or input_shape
    if layer_cfgs and layer_cfgs[0].get("class_name") == "InputLayer":
        layer_cfgs.pop(0)
    if shape is None:
        raise UserError("The model does not say what input size it expects.")
    inputs = keras.Input(shape=shape)
    x = inputs
    for cfg in layer_cfgs:
        x = _build(cfg, tuple(x.shape[1:]))(x)
    return keras.Model(inputs, x, name=config.get("name"))


def _node_inputs(node: Any) -> tuple[list[tuple[str, int, int]], dict]:
    """The (layer, node, tensor) references and call kwargs of one inbound node, in either Keras format."""
    if isinstance(node, dict):  # {"args": [...], "kwargs": {...}} with __keras_tensor__ entries
        refs = [tuple(o["config"]["keras_history"]) for o in walk_objects(node.get("args", []))
                if o.get("class_name") == "__keras_tensor__"]
        return refs, dict(node.get("kwargs") or {})
    refs = [(r[0], int(r[1]), int(r[2])) for r in node]
    kwargs = node[0][3] if node and len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
    return refs, kwargs


def _build_functional(config: dict) -> Any:
    """A Keras 2 functional model: replay its graph node by node with Keras 3 layers."""
    import keras

    tensors: dict[tuple[str, int, int], Any] = {}
    pending: list[tuple[dict, Any]] = []
    for cfg in config["layers"]:
        lname = layer_name(cfg)
        if cfg.get("class_name") == "InputLayer":
            c = cfg.get("config", {})
            shape = c.get("batch_input_shape") or c.get("batch_shape")
            tensors[(lname, 0, 0)] = keras.Input(shape=tuple(shape[1:]), name=lname)
        else:
            pending.append((cfg, None))
    progress = True
    node_counts: dict[str, int] = {}
    while pending and progress:
        progress = False
        still: list[tuple[dict, Any]] = []
        for cfg, layer in pending:
            lname = layer_name(cfg)
            nodes = cfg.get("inbound_nodes") or []
            done = node_counts.get(lname, 0)
            while done < len(nodes):
                refs, kwargs = _node_inputs(nodes[done])
                if not all(r in tensors for r in refs):
                    break
                args = [tensors[r] for r in refs]
                if layer is None:
                    layer = _build(cfg, tuple(args[0].shape[1:]))
                call_kwargs = {"training": kwargs["training"]} if isinstance(kwargs.get("training"), bool) else {}
                out = layer(args[0] if len(args) == 1 else args, **call_kwargs)
                for i, t in enumerate(out if isinstance(out, (list, tuple)) else [out]):
                    tensors[(lname, done, i)] = t
                done += 1
                progress = True
            node_counts[lname] = done
            if done < len(nodes):
                still.append((cfg, layer))
        pending = still
    if pending:
        raise UserError("The model's layer graph could not be rebuilt (some layers never receive an input).")

    def refs(spec: list) -> list:
        spec = [spec] if spec and isinstance(spec[0], str) else spec
        return [tensors[(s[0], int(s[1]), int(s[2]))] for s in spec]

    ins, outs = refs(config["input_layers"]), refs(config["output_layers"])
    return keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs,
                       name=config.get("name"))


def leaf_layers(model: Any) -> Iterator[Any]:
    """Every layer that is not itself a model, through any nesting."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def _copy_weights(model: Any, group: Any, name: str) -> None:
    """Copy each stored weight to the variable with the same layer and variable name; all must match."""
    targets: dict[tuple[str, str], Any] = {}
    for layer in leaf_layers(model):
        for var in layer.weights:
            key = (layer.name, var.name.split("/")[-1].split(":")[0])
            if key in targets:
                raise UserError(f"'{name}' has two layers named '{layer.name}', so its weights cannot be matched.")
            targets[key] = var
    assigned: set[tuple[str, str]] = set()
    for top in group.attrs.get("layer_names", list(group.keys())):
        top = attr_text(top)
        g = group[top]
        for wname in g.attrs.get("weight_names", []):
            wname = attr_text(wname)
            parts = wname.split("/")
            var_name = parts[-1].split(":")[0]
            candidates = (var_name, *_WEIGHT_ALIASES.get(var_name, ()))
            key = next(((p, v) for p in reversed(parts[:-1]) for v in candidates if (p, v) in targets), None)
            if key is None:
                raise UserError(f"'{name}' has a weight '{wname}' that matches no layer of the rebuilt model.")
            value = np.asarray(g[wname])
            var = targets[key]
            if tuple(var.shape) != value.shape:
                raise UserError(f"'{name}': the weight '{wname}' has shape {value.shape}, but the layer expects "
                                f"{tuple(var.shape)}.")
            var.assign(value)
            assigned.add(key)
    missing = sorted({layer for layer, _ in targets} - {layer for layer, _ in assigned})
    if missing or len(assigned) != len(targets):
        what = ", ".join(missing[:3]) or "some layers"
        raise UserError(f"'{name}' has no stored weights for {what}.")


def attr_text(value: Any) -> str | None:
    """An HDF5 attribute as text (h5py gives bytes or str)."""
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
