"""A trained network as a self-contained classifier: raw images in, class probabilities out.

Everything needed to predict without the training code or config — the layer spec, the
input shape, the normalisation fitted on the training split, the class names and what the
last layer outputs — is saved as plain JSON next to the weights (an ``.npz`` read with
``allow_pickle=False``): loading a model never executes stored code.

Images are given in the dataset's pixel scale before normalisation (digits: [0, 1]),
float32 ``(N, C, H, W)``; ``(N, H, W)`` is accepted for one-channel models.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.data.normalize import apply_normalization, other_scale
from cnnx.engine.functional.softmax import sigmoid, softmax
from cnnx.engine.model import Model, build_model
from cnnx.errors import CheckpointError, DataError, UnknownComponentError
from cnnx.npz_load_failure import NPZ_READ_ERRORS, load_failure

SPEC_FILE = "cnnx_model.json"
WEIGHTS_FILE = "weights.npz"
FORMAT_VERSION = 1


class InputRangeWarning(UserWarning):
    """Images far outside the pixel range the model was trained on: its answers mean little."""


#: What the last layer emits, hence how it becomes class probabilities.
OUTPUT_KINDS = ("logits", "probabilities", "binary_logit", "binary_probability")


def output_kind(model: Model, loss_type: str, loss_options: Mapping[str, Any]) -> str:
    """Classify the model's outputs from its last layer and the loss it was trained with."""
    last = type(model.layers[next(reversed(model.layers))]).__name__.lower()
    binary = model.output_shape == (1,)
    if binary:
        if loss_type == "bce" and loss_options.get("from_logits", False):
            return "binary_logit"
        return "binary_probability" if last == "sigmoid" or loss_type == "bce" else "binary_logit"
    return "probabilities" if last == "softmax" else "logits"


def save_weights(directory: str | Path, state: Mapping[str, np.ndarray], description: dict[str, Any] | None) -> Path:
    """``weights.npz`` and, when given, the ``cnnx_model.json`` that names its outputs (classes,
    normalisation) into ``directory``: what ``Classifier.load`` and ``cnnx predict`` read."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if description is not None:
        (directory / SPEC_FILE).write_text(json.dumps(description, indent=2) + "\n")
    np.savez(directory / WEIGHTS_FILE, **state)
    return directory


def trained_classifier(model: Model, config: Mapping[str, Any], data: Any) -> Classifier:
    """The classifier a run trains: its model, with the classes and normalisation of ``data``
    (the run's ``DataSplits``) and its resolved ``config``'s layers and loss."""
    loss = dict(config["loss"])
    kind = output_kind(model, loss.pop("type"), loss)
    return Classifier(model, config["model"]["layers"], data.normalization, list(data.classes), kind,
                      data.preparation)


def class_probabilities(outputs: np.ndarray, kind: str) -> np.ndarray:
    """``(N, K)`` float32 probabilities; one binary output becomes the two columns 1-p, p."""
    if kind == "logits":
        return softmax(outputs, axis=1).astype(np.float32, copy=False)
    if kind == "probabilities":
        return outputs.astype(np.float32, copy=False)
    p = outputs[:, :1].astype(np.float32)
    if kind == "binary_logit":
        p = sigmoid(p)
    return np.concatenate([1.0 - p, p], axis=1)


@dataclass
class Classifier:
    model: Model
    spec: dict[str, Any]
    normalization: dict[str, Any]
    classes: list[str]
    output_kind: str
    #: How an image file becomes an input (``cnnx.data.image_files.prepare_image``), when the
    #: training data was read from image files; None for arrays.
    preparation: dict[str, Any] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.model.input_shape

    # -- predicting --------------------------------------------------------------------------
    def check_images(self, images: Any, source: str = "images") -> np.ndarray:
        """Images as float32 ``(N, C, H, W)``, or a DataError naming what this model takes."""
        x = np.asarray(images)
        c, h, w = self.input_shape
        expected = f"(N, {c}, {h}, {w})" + (f" or (N, {h}, {w})" if c == 1 else "")
        if x.ndim == 3 and c == 1:
            x = x[:, None]
        if x.ndim != 4:
            raise DataError(f"{source}: shape {x.shape}; this model takes {expected}")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{source}: dtype {x.dtype}; expected numbers (float32)")
        if x.shape[1] != c and x.shape[1:] == (h, w, c):
            # Images saved as TensorFlow and PIL hold them: "8 channels" would name the height.
            raise DataError(
                f"{source}: shape {x.shape} looks channels-last (N, H, W, C); this model takes "
                f"{expected}: transpose the array with x.transpose(0, 3, 1, 2)"
            )
        if x.shape[1] != c:
            raise DataError(
                f"{source}: {x.shape[1]} channel{'s' if x.shape[1] != 1 else ''}, but this model "
                f"takes {c} ({expected}, got {x.shape})"
            )
        if x.shape[2:] != (h, w):
            raise DataError(
                f"{source}: {x.shape[2]}×{x.shape[3]} pixels, but this model takes {h}×{w} "
                f"({expected}, got {x.shape})"
            )
        # A copy: normalisation works in place and must not touch the caller's array.
        x = np.array(x, dtype=np.float32)
        finite = np.isfinite(x).all(axis=(1, 2, 3))
        if not finite.all():  # would come out as NaN probabilities, and argmax calls them class 0
            raise DataError(f"{source}: image {int(np.argmin(finite))} holds NaN or infinite pixels; "
                            f"the model needs finite values")
        outside = self.outside_training_range(x, source)
        if outside is not None:
            warnings.warn(outside, InputRangeWarning, stacklevel=2)
        return x

    def outside_training_range(self, x: np.ndarray, source: str = "images") -> str | None:
        """Why ``x`` looks like another pixel scale than the training images' (as
        ``normalize.other_scale`` judges it), else None."""
        trained = self.normalization.get("input_range")
        if not trained or not x.size:
            return None
        low, high = trained
        seen_low, seen_high = float(x.min()), float(x.max())
        scale = other_scale((low, high), (seen_low, seen_high))
        if scale is None:
            return None
        spans = (f"{source}: pixels span [{seen_low:.4g}, {seen_high:.4g}], but this model was trained "
                 f"on pixels in [{low:.4g}, {high:.4g}]")
        if scale == "larger":
            return (f"{spans}; predictions on another scale mean little (rescale the images as the "
                    f"training data was)")
        hint = " (multiply [0, 1] images by 255 for a model trained on 0–255 pixels)" \
            if seen_high <= 1 < high / 2 else ""
        return (f"{spans}: they look like a smaller scale, and predictions on it mean little; "
                f"rescale the images as the training data was{hint}")

    def predict_proba(self, images: Any, batch_size: int = 64, *, checked: bool = False) -> np.ndarray:
        """Class probabilities; ``checked``: ``images`` already came from ``check_images``."""
        x = np.array(images, dtype=np.float32) if checked else self.check_images(images)
        x = apply_normalization(x, self.normalization)
        return class_probabilities(self.model.predict(x, batch_size), self.output_kind)

    # -- files -------------------------------------------------------------------------------
    def description(self) -> dict[str, Any]:
        """Everything but the weights, as JSON: what ``cnnx_model.json`` and training
        checkpoints record, so predictions never depend on the dataset as it is later."""
        return {
            "format_version": FORMAT_VERSION,
            "layers": self.spec,
            "input_shape": list(self.input_shape),
            "normalization": self.normalization,
            "classes": self.classes,
            "output_kind": self.output_kind,
            "preparation": self.preparation,
        }

    def save(self, directory: str | Path) -> Path:
        return save_weights(directory, self.model.state_dict(), self.description())

    @classmethod
    def load(cls, directory: str | Path) -> Classifier:
        directory = Path(directory)
        spec_path, weights_path = directory / SPEC_FILE, directory / WEIGHTS_FILE
        for path in (spec_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"'{path}' not found; a cnnx model directory holds "
                                      f"{SPEC_FILE} and {WEIGHTS_FILE}")
        try:
            return cls.from_description(read_description(spec_path), load_weights(weights_path), f"'{spec_path}'")
        except UnknownComponentError as error:
            plugins = _plugin_requirements(directory)
            if not plugins:
                raise
            # The layer's plugin is not installed here; the MLflow model says which it was.
            raise UnknownComponentError(f"{error}; this model was logged with {', '.join(plugins)} "
                                        f"(its requirements.txt): pip install them") from None

    @classmethod
    def from_description(cls, description: Any, weights: Mapping[str, np.ndarray], where: str) -> Classifier:
        """The classifier ``description()`` described, with these weights; ``where`` names
        the file in errors."""
        try:
            layers, input_shape = description["layers"], description["input_shape"]
            kind = description["output_kind"]
        except KeyError as exc:
            raise CheckpointError(f"{where} is not a cnnx model description (no {exc})") from None
        except TypeError:
            raise CheckpointError(f"{where} is not a cnnx model description (not a JSON object)") from None
        if kind not in OUTPUT_KINDS:
            raise CheckpointError(f"{where}: output_kind={kind!r}; accepted: {', '.join(OUTPUT_KINDS)}")
        model = build_model(layers, tuple(input_shape), seed=0)
        model.load_state_dict(dict(weights))
        model.eval()
        return cls(model, layers, description.get("normalization", {"mode": "none"}),
                   [str(c) for c in description.get("classes") or range(model.output_shape[0])], kind,
                   description.get("preparation"))


def read_description(path: Path) -> Any:
    """What a ``cnnx_model.json`` holds (checked by ``Classifier.from_description``), or a
    one-line CheckpointError when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"'{path}' is not a cnnx model description ({exc})") from None


def _plugin_requirements(directory: Path) -> list[str]:
    """The plugin distributions an MLflow model's ``requirements.txt`` names (beside its
    ``MLmodel``, two folders above the cnnx model's own files), cnnx and its own needs left out:
    as pins or URLs, and wheels the model carries (``cnnx.tracking.local_wheels``) as paths."""
    for root in (directory, *directory.parents[:2]):
        listed = root / "requirements.txt"
        if listed.is_file() and (root / "MLmodel").is_file():
            lines = [line.strip() for line in listed.read_text().splitlines()]
            return [str(root / line) if line.endswith(".whl") else line for line in lines
                    if line and not line.startswith(("#", "-")) and _requirement_name(line) not in _NOT_PLUGINS]
    return []


_NOT_PLUGINS = {"cnnx", "numpy", "mlflow"}


def _requirement_name(line: str) -> str | None:
    """The canonical distribution name a requirements.txt line installs, or None if unreadable."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    try:
        if line.endswith(".whl"):
            return parse_wheel_filename(Path(line).name)[0]
        return canonicalize_name(Requirement(line).name)
    except (InvalidRequirement, InvalidWheelFilename):
        return None


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """A ``state_dict`` saved with ``np.savez`` (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except NPZ_READ_ERRORS as exc:
        raise CheckpointError(f"'{path}' is not a readable weights .npz file ({load_failure(path, exc)})") from None
