"""`python -m cnnx.predict` / `cnnx predict`: class predictions for images from a trained model.

The model comes from a tracked run (``--run ID``: its logged model ``model``), an MLflow model
(``--model`` directory or ``runs:/``/``models:/`` URI), a training checkpoint
(``--weights epoch-0005.npz``), or a weights ``.npz`` with the ``cnnx_model.json`` beside it
or else the run's ``config.yaml`` (``--weights FILE --config FILE``). Images are ``.npz``
archives (array ``x``, or their only array, shaped (N, C, H, W) or (N, H, W)) in the
dataset's pixel scale, image files (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM), or folders of them (the files directly inside).
Image files are decoded as the image-folder dataset decodes them and read as [0, 1] (digits:
white strokes on black, like the training images); for a model trained on image files they
are resized and converted to grayscale or RGB as its training images were, by the
preparation recorded with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnx.cli import one_line_warnings, report_user_errors, warn
from cnnx.data.image_files import EXTENSIONS as IMAGE_SUFFIXES
from cnnx.data.image_files import LargeImageWarning, prepare_image, read_image
from cnnx.data.validation import class_indices
from cnnx.errors import CheckpointError, CnnxError, ConfigError, DataError, flat_message
from cnnx.inference import SPEC_FILE, Classifier, InputRangeWarning
from cnnx.npz_load_failure import NPZ_READ_ERRORS, load_failure


# -- the model -------------------------------------------------------------------------------
def classifier_from_mlflow_model(directory: Path, source: str) -> Classifier:
    """The cnnx classifier inside an MLflow model directory (read, never unpickled)."""
    import yaml

    from cnnx.tracking.pyfunc_model import __name__ as loader_module

    mlmodel = directory / "MLmodel"
    if not mlmodel.is_file():
        if (directory / SPEC_FILE).is_file():
            return Classifier.load(directory)
        raise CheckpointError(f"{source}: no MLmodel file in '{directory}'; expected an MLflow model directory")
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    if flavor.get("loader_module") != loader_module or "data" not in flavor:
        raise CheckpointError(f"{source} is an MLflow model, but not one logged by cnnx "
                              f"(python_function loader {flavor.get('loader_module')!r})")
    return Classifier.load(directory / flavor["data"])


def download_model(uri: str, tracking_uri: str | None, source: str) -> Path:
    from cnnx.tracking.mlflow_tracker import (
        connection_failure, existing_store, resolve_tracking_uri, store_setting, unusable_store,
    )

    # Only runs:/ and models:/ are looked up in the store; other URIs name the files themselves.
    store = (existing_store if uri.startswith(("runs:/", "models:/")) else resolve_tracking_uri)(tracking_uri)
    from mlflow.artifacts import download_artifacts  # after the check: a missing store is reported at once
    from mlflow.exceptions import MlflowException
    # MLflow looks a models:/ URI's model up (and, behind runs:/<id>/model, a run's logged
    # model) in the process's default store, not in the one it is given (MLflow 3.17).
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    # The bar would mix with the predictions on stdout-like terminals; models are small.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with _use_tracking_uri(store):
            return Path(download_artifacts(artifact_uri=uri, tracking_uri=store))
    except (MlflowException, OSError) as exc:
        if connection_failure(str(exc)):
            raise unusable_store(store, exc, store_setting(tracking_uri)) from None
        if re.search(r"Run with id=\S* not found", str(exc)):  # mistyped, or another store's
            raise CheckpointError(f"{source}: no such run in MLflow store {store!r}; a run's id is in the "
                                  f"line it ends with (cnnx: run ID in experiment …), and cnnx compare "
                                  f"EXPERIMENT lists them") from None
        raise CheckpointError(f"{source}: cannot load {uri} from MLflow store {store!r} "
                              f"({flat_message(exc)[:300]}); runs log their model when "
                              f"tracking.log_model=true") from None


def classifier_from_weights(weights: Path, config_path: Path | None, run: str | None = None) -> Classifier:
    """Weights ``.npz`` or a training checkpoint, with what describes the model: recorded in
    the checkpoint or a ``cnnx_model.json`` beside the weights, else rebuilt from the run's
    resolved ``config.yaml`` (layers, dataset, loss). ``run``: the run id when both are that
    run's artifacts (it logged no model), which errors then name instead of the downloaded files."""
    from cnnx import registry
    from cnnx.engine.model import build_model
    from cnnx.inference import trained_classifier

    source = f"--config {config_path}" if run is None else f"--run {run} (its config.yaml: it logged no model)"
    carriers = ("use --run or --model, which carry it" if run is None else
                "log the model with tracking.log_model=true, which carries it")
    named = f"'{weights}'" if run is None else f"run {run}'s weights.npz"
    recorders = ("predict with --run, --model or a newly written checkpoint, which record the classes"
                 if run is None else "log the model with tracking.log_model=true, which records the classes")

    state, description, recorded_in = read_weights(weights)
    config = run_config(config_path, source) if config_path is not None else None
    if description is not None:
        classifier = Classifier.from_description(description, state, recorded_in)
        if config is not None and _as_json(config["model"]["layers"]) != _as_json(classifier.spec):
            raise ConfigError(f"{source}: its model.layers differ from those recorded in "
                              f"{recorded_in}; pass the config of the run that wrote it, or leave "
                              f"--config out (the recorded model is complete)")
        return classifier
    if config is None:
        raise ConfigError(f"--weights {weights} needs --config: the run's config.yaml artifact, "
                          f"which holds the layers and the dataset's normalisation")
    dataset = dict(config["dataset"])
    # Nothing recorded the classes and normalisation: rebuild the training split to recover them.
    try:
        data = registry.datasets.create(dataset.pop("type"), dataset, "dataset")
    except CnnxError as exc:
        raise ConfigError(f"{source}: the training data is needed to recover its "
                          f"normalisation, and {exc}; run from the training directory, or {carriers}") from None
    model = build_model(config["model"]["layers"], data.input_shape, seed=0)
    model.load_state_dict(state)
    model.eval()
    classes = list(data.classes)
    outputs = model.output_shape
    if outputs != (len(classes),) and not (outputs == (1,) and len(classes) == 2):
        # The dataset changed since training (a class folder added or removed): its names
        # would be pinned on the wrong outputs, or run out before them.
        raise ConfigError(
            f"{source}: its dataset now has {len(classes)} classes "
            f"({', '.join(map(str, classes))}), but the model in {named} outputs {outputs[0]}; "
            f"the classes changed since training, so its outputs cannot be named: restore the "
            f"dataset as it was, or {recorders}")
    return trained_classifier(model, config, data)


def _as_json(value: Any) -> str:
    # Layer order is part of a spec, and dict equality ignores it.
    return json.dumps(value)


def run_config(config_path: Path, source: str | None = None) -> dict[str, Any]:
    """A run's resolved config, checked to hold ``model.layers``, ``dataset`` and ``loss``, or a
    one-line ConfigError naming ``source`` (default: ``--config PATH``)."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    source = source or f"--config {config_path}"
    if not config_path.is_file():
        raise ConfigError(f"{source}: file not found")
    not_a_run_config = (f"{source}: not a cnnx run config (needs model.layers, dataset and "
                        f"loss: the run's config.yaml artifact, or .hydra/config.yaml in its run directory)")
    try:
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
    except (ValueError, OmegaConfBaseException, yaml.YAMLError):  # binary, malformed, Hydra's own hydra.yaml
        raise ConfigError(not_a_run_config) from None
    try:
        holds_a_run = isinstance(config["model"], dict) and "layers" in config["model"] \
            and isinstance(config["dataset"], dict) and isinstance(config["loss"], dict)
    except (KeyError, TypeError):  # a list or a scalar at the top, or a key missing
        holds_a_run = False
    if not holds_a_run:
        raise ConfigError(not_a_run_config)
    return config


def read_weights(path: Path) -> tuple[dict, dict | None, str]:
    """``(state_dict, recorded description or None, where it was recorded)`` of a weights
    ``.npz`` or a training checkpoint (``epoch-*.npz``, whose model part is taken, as
    Lightning's ``load_from_checkpoint`` does)."""
    from cnnx.inference import load_weights, read_description
    from cnnx.training.checkpoint_file import CLASSIFIER, HEADER_KEY, read_checkpoint
    from cnnx.training.training_state import MODEL

    state = load_weights(path)
    if HEADER_KEY in state:
        arrays, header = read_checkpoint(path)
        state = {key[len(MODEL):]: value for key, value in arrays.items() if key.startswith(MODEL)}
        return state, header.get(CLASSIFIER), f"checkpoint '{path}'"
    spec = path.parent / SPEC_FILE
    if not spec.is_file():
        return state, None, ""
    return state, read_description(spec), f"'{spec}'"


def load_classifier(args: argparse.Namespace) -> Classifier:
    if args.run:
        source = f"--run {args.run}"
        try:
            return classifier_from_mlflow_model(
                download_model(f"runs:/{args.run}/model", args.tracking_uri, source), source)
        except CheckpointError as no_model:
            # A run logged with tracking.log_model=false (the README's advice for large sweeps)
            # still holds its final weights and config: what --weights and --config take.
            try:
                weights, config = (download_model(f"runs:/{args.run}/{name}", args.tracking_uri, source)
                                   for name in ("weights.npz", "config.yaml"))
            except CheckpointError:
                raise no_model from None
            try:  # what names the outputs, beside the weights (runs of cnnx before 0.2.5 have none)
                description = download_model(f"runs:/{args.run}/{SPEC_FILE}", args.tracking_uri, source)
            except CheckpointError:
                pass
            else:
                shutil.move(description, weights.parent / SPEC_FILE)
            return classifier_from_weights(weights, config, run=args.run)
    if args.model:
        local = Path(args.model).expanduser()
        if ":/" in args.model and not local.exists():
            local = download_model(args.model, args.tracking_uri, f"--model {args.model}")
        elif not local.is_dir():
            raise CheckpointError(f"--model {args.model}: directory not found")
        return classifier_from_mlflow_model(local, f"--model {args.model}")
    weights = Path(args.weights).expanduser()
    if not weights.is_file():
        raise CheckpointError(f"--weights {weights}: file not found")
    return classifier_from_weights(weights, Path(args.config).expanduser() if args.config else None)


# -- the images ------------------------------------------------------------------------------
def image_for_model(path: Path, classifier: Classifier) -> np.ndarray:
    """(C, H, W) float32 in [0, 1], decoded as the image-folder dataset decodes for training;
    a model trained on image files gets them prepared (resized, coloured) as its own were. A
    model trained on byte pixels (an npz of uint8 images, 0–255, whatever its normalisation) gets
    them on that scale: it takes raw pixels as it was trained on them and normalises them itself."""
    if classifier.preparation:
        return prepare_image(path, classifier.preparation)
    color_mode = "grayscale" if classifier.input_shape[0] == 1 else "rgb"
    image = read_image(path, color_mode)
    trained = classifier.normalization.get("input_range")
    if trained and BYTE_PIXELS_ABOVE < trained[1] <= 255:
        image *= 255
    return image


#: A training range topping out above this (and at most 255) is one of 8-bit pixels; below, as
#: the digits' 0–16, it is no scale an image file has.
BYTE_PIXELS_ABOVE = 128


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The archive's images and, when it holds them (arrays ``y`` and ``classes``, as
    ``dataset=npz`` reads them), their labels and the names of those."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = archive.files
            key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
            images = None if key is None else archive[key]
            labels = archive["y"] if key == "x" and "y" in keys else None
            names = _class_names(archive) if labels is not None and "classes" in keys else None
    except NPZ_READ_ERRORS as exc:
        raise DataError(f"images '{path}': not a readable .npz archive ({load_failure(path, exc)})") from None
    if images is None:
        raise DataError(f"images '{path}': holds arrays {', '.join(keys)}; expected 'x' "
                        f"(N, C, H, W) or a single array")
    return images, labels, names


def _class_names(archive) -> np.ndarray:
    """The archive's ``classes``; unreadable ones (stored as Python objects, which need pickle)
    as an empty array, which ``labels_for`` takes for no names: they only name the labels, and
    the images are predicted all the same."""
    try:
        return archive["classes"]
    except ValueError:
        return np.empty(0)


#: The label of an image whose file holds none.
UNLABELLED = -1


def labels_for(labels: np.ndarray | None, names: np.ndarray | None, count: int, classes: Sequence[str],
               path: Path) -> np.ndarray:
    """``labels`` as the model's class indices, one per image (through the archive's own class
    ``names`` when it has them: it may number the classes otherwise); UNLABELLED where there are
    none, or (with a warning) when they do not fit the images or the model's classes."""
    unlabelled = np.full(count, UNLABELLED)
    if labels is None:
        return unlabelled
    labels = np.asarray(labels)
    named = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            warn(f"classes in '{path}' are not a 1-D array of strings (a list saved as Python objects is not "
                 f"read: save np.array(names).astype(str)); no accuracy for its labels")
            return unlabelled
        # Bytes decoded, as the training loader names its classes.
        named = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    span = len(named) if named is not None else len(classes)
    try:
        # As the training loader takes them: whole-number floats count.
        indices = class_indices(labels, f"'{path}'") if labels.shape == (count,) else None
    except DataError as exc:
        warn(f"{exc}; no accuracy for them")
        return unlabelled
    if indices is None or indices.max() >= span:
        warn(f"labels 'y' in '{path}' are not {count} class indices in [0, {span}) "
             f"(shape {labels.shape}, dtype {labels.dtype}); no accuracy for them")
        return unlabelled
    labels = indices
    if named is None:
        return labels
    unknown = [name for name in named if name not in classes]
    if unknown:
        warn(f"classes in '{path}' include {', '.join(map(repr, unknown[:3]))}, which the model does not know "
             f"(its classes: {', '.join(classes)}); no accuracy for them")
        return unlabelled
    return np.array([list(classes).index(name) for name in named], np.intp)[labels]


def accuracy_line(labels: np.ndarray, probabilities: np.ndarray) -> str | None:
    """How many of the labelled images the model got right; None when none is labelled."""
    known = labels != UNLABELLED
    if not known.any():
        return None
    right = int(np.count_nonzero(probabilities[known].argmax(axis=1) == labels[known]))
    return f"cnnx: accuracy on the {int(known.sum())} labelled images (array y): {right / known.sum():.4f} ({right} right)"


def read_images(paths: Sequence[str], classifier: Classifier) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every image the arguments name (files, and the image files directly in folders), with its
    label where an archive holds them (else UNLABELLED)."""
    names, batches, labels = [], [], []
    # Rows name a file by its name, or as given when another argument has the same name
    # (cat/001.png and dog/001.png).
    seen = Counter(Path(name).expanduser().name for name in paths)
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            found = read_folder(path, name, classifier)
        elif path.is_file():
            found = [read_file(path, path.name if seen[path.name] == 1 else name, classifier)]
        else:
            raise DataError(f"image file '{path}' not found")
        for shown, x, y in found:
            names.extend(shown)
            batches.append(x)
            labels.append(y)
    return names, np.concatenate(batches), np.concatenate(labels)


def read_folder(folder: Path, name: str, classifier: Classifier) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """The images in ``folder`` itself, by name (hidden files and other types left out, as
    imagefolder does); a file that cannot be read or does not fit the model is skipped with
    a warning, so one stray file does not cost the rest of the folder."""
    accepted = (".npz", *IMAGE_SUFFIXES)
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in accepted)
    found = []
    # Files skipped for one reason (a folder of images of another size) are said in one line.
    skipped: dict[str, list[str]] = {}
    for path in files:
        shown = str(Path(name) / path.name)
        try:
            found.append(read_file(path, shown, classifier))
        except DataError as exc:
            skipped.setdefault(str(exc).replace(shown, "\0"), []).append(shown)
    for reason, shown in skipped.items():
        others = len(shown) - 1
        more = f", and {others} more file{'s' if others > 1 else ''} of '{name}' alike" if others else ""
        warn(f"{reason.replace(chr(0), shown[0])}; skipped{more}")
    if not found:
        raise DataError(f"folder '{folder}': holds no {'/'.join(accepted)} file"
                        + (" this model can take" if files else "") + "; pass image files or a folder of them")
    return found


def read_file(path: Path, shown: str, classifier: Classifier) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(row names, images, labels)`` of one file; ``shown``: how the rows name it."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        images, labels, names = read_npz(path)
        x = classifier.check_images(images, f"images in '{path}'")
        if not len(x):
            raise DataError(f"images in '{path}': the archive holds no images (shape {x.shape})")
        return [f"{shown}[{i}]" for i in range(len(x))], x, labels_for(labels, names, len(x), classifier.classes,
                                                                          path)
    if suffix in IMAGE_SUFFIXES:
        image = image_for_model(path, classifier)
        return [shown], classifier.check_images(image[None], f"image '{path}'"), np.full(1, UNLABELLED)
    raise DataError(f"image file '{path}': unsupported type {suffix or '(none)'}; "
                    f"accepted: .npz, {', '.join(IMAGE_SUFFIXES)}")


# -- the command -----------------------------------------------------------------------------
def format_predictions(names: Sequence[str], probabilities: np.ndarray, classes: Sequence[str],
                       top: int) -> str:
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :max(1, top)]
    rows = [("image", "prediction", "probability", f"top {order.shape[1]}")]
    for name, ranked, p in zip(names, order, probabilities, strict=True):
        rows.append((name, classes[ranked[0]], f"{p[ranked[0]]:.4f}",
                     "  ".join(f"{classes[k]}:{p[k]:.3f}" for k in ranked)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(f"{c:<{widths[i]}}" for i, c in enumerate(r[:3])) + "  " + r[3]
                     for r in rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnx predict", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                # The source is required (main checks it): not shown as optional.
                                usage="%(prog)s [-h] (--run RUN_ID | --model DIR_OR_URI | --weights FILE) [--config FILE]\n"
                                      "                    [--tracking-uri TRACKING_URI] [--top TOP] images [images ...]")
    # Required, but checked after parsing (main), so that a mistyped option (--runs) is
    # named first: argparse checks a required group before it reports unknown arguments.
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run", metavar="RUN_ID", help="an MLflow run id (uses runs:/RUN_ID/model)")
    source.add_argument("--model", metavar="DIR_OR_URI", help="an MLflow model directory or URI")
    source.add_argument("--weights", metavar="FILE",
                        help="a training checkpoint or a weights .npz; needs --config only when neither it "
                             "nor a cnnx_model.json beside it records the model")
    p.add_argument("--config", metavar="FILE", help="the run's config.yaml, with --weights")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--top", type=int, default=3, help="how many classes to list per image (default 3)")
    p.add_argument("images", nargs="+",
                   help=".npz archives or image files (" + ", ".join(IMAGE_SUFFIXES) + "), or folders of them "
                        "(not their sub-folders)")
    return p


@report_user_errors
def main(argv: list[str] | None = None) -> int:
    options = parser()
    args = options.parse_args(argv)
    if args.run is None and args.model is None and args.weights is None:
        options.error("one of the arguments --run --model --weights is required")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    if args.config and not args.weights:
        raise ConfigError("--config goes with --weights; --run and --model carry their own config")
    classifier = load_classifier(args)
    with one_line_warnings(InputRangeWarning, LargeImageWarning):  # the predictions still follow
        names, images, labels = read_images(args.images, classifier)
    probabilities = classifier.predict_proba(images, checked=True)
    print(format_predictions(names, probabilities, classifier.classes, args.top))
    accuracy = accuracy_line(labels, probabilities)
    if accuracy is not None:  # on stderr: stdout stays one row per image
        sys.stdout.flush()
        print(accuracy, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
