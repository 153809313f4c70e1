"""The full state of a training run as arrays + JSON, and putting it back.

Everything that influences later numbers is captured: weights and buffers, optimizer and
scheduler state, every random generator (shuffling, augmentation, each dropout layer), the
epoch and, when stopped mid-epoch, the batch order and running sums of that epoch, the
metric history, and each callback's ``state_dict`` (early stopping, the tracker's run id).
Restoring it into a freshly built trainer of the same config continues bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnx.errors import CheckpointError

if TYPE_CHECKING:
    from cnnx.training.trainer import Trainer

MODEL, OPTIMIZER, CALLBACK, ORDER = "model/", "optimizer/", "callback/", "progress/order"


def callback_keys(callbacks: list[Any]) -> list[str]:
    """Each callback's ``state_key`` or class name (``EarlyStopping``, ``mlflow_run``), numbered
    only when repeated, so a resumed run with one more or one fewer callback still matches the
    others up."""
    keys, seen = [], {}
    for callback in callbacks:
        name = getattr(callback, "state_key", None) or type(callback).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def _saved_key(key: str, callback: Any, saved: Mapping[str, Any]) -> str | None:
    """The key ``callback``'s state has in a checkpoint: ``key``, or, in one written before
    the callback had it, one of its ``former_state_keys`` (numbered as ``key`` is)."""
    if key in saved:
        return key
    _, hash_sign, number = key.partition("#")
    for former in getattr(callback, "former_state_keys", ()):
        if former + hash_sign + number in saved:
            return former + hash_sign + number
    return None


def _split(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """JSON-able scalars on one side, arrays on the other."""
    plain: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        elif isinstance(value, np.generic):
            plain[key] = value.item()
        else:
            plain[key] = value
    return plain, arrays


def _layer_generators(trainer: Trainer) -> dict[str, np.random.Generator]:
    """The generators layers own (dropout's masks, a plugin's noise), whatever attribute holds
    them: by dotted layer name for ``rng``, as cnnx's own layers keep theirs, else
    ``<layer>:<attribute>``."""
    generators = {}
    for name, layer in trainer.model.named_layers():
        for attribute, value in vars(layer).items():
            if isinstance(value, np.random.Generator):
                generators[name if attribute == "rng" else f"{name}:{attribute}"] = value
    return generators


def capture(trainer: Trainer, skip: Any = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, header)`` describing ``trainer`` now; ``skip`` is a callback to leave out."""
    arrays = {MODEL + k: v for k, v in trainer.model.state_dict().items()}
    optimizer_plain, optimizer_arrays = _split(trainer.optimizer.state_dict())
    arrays.update((OPTIMIZER + k, v) for k, v in optimizer_arrays.items())
    callbacks: dict[str, Any] = {}
    for key, callback in zip(callback_keys(trainer.callbacks), trainer.callbacks, strict=True):
        if callback is skip:
            continue
        plain, callback_arrays = _split(callback.state_dict())
        callbacks[key] = plain
        arrays.update((f"{CALLBACK}{key}/{k}", v) for k, v in callback_arrays.items())
    progress = trainer.progress_state
    partial = None
    if progress is not None:
        arrays[ORDER] = progress.order
        partial = {"batches_done": progress.batches_done, "loss_sum": progress.loss_sum,
                   "correct": progress.correct, "seen": progress.seen, "skipped": progress.skipped}
    header = {
        "epochs_completed": trainer.epoch - (1 if progress is not None else 0),
        # What the run was to train: tells a checkpoint at its run's end from one at a stop.
        "epochs": trainer.epochs,
        "partial_epoch": partial,
        "stop_training": trainer.stop_training,
        "history": trainer.history.epochs,
        "optimizer": optimizer_plain,
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "rng": {
            "shuffle": trainer.shuffle_rng.bit_generator.state,
            "augment": trainer.augment_rng.bit_generator.state,
            "layers": {name: g.bit_generator.state for name, g in _layer_generators(trainer).items()},
        },
        "callbacks": callbacks,
    }
    return arrays, header


def _loadable_state(trainer: Trainer, generators: Mapping[str, np.random.Generator]) -> dict[str, Any]:
    """What ``restore`` changes, as it is now."""
    return {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
            "shuffle": trainer.shuffle_rng.bit_generator.state, "augment": trainer.augment_rng.bit_generator.state,
            "layers": {name: generator.bit_generator.state for name, generator in generators.items()}}


def _put_back(trainer: Trainer, generators: Mapping[str, np.random.Generator], state: dict[str, Any]) -> None:
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.shuffle_rng.bit_generator.state = state["shuffle"]
    trainer.augment_rng.bit_generator.state = state["augment"]
    for name, generator in generators.items():
        generator.bit_generator.state = state["layers"][name]


def _field(header: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in header:
        raise CheckpointError(f"{where}: header has no {key!r}; written by another program or version?")
    return header[key]


def restore(trainer: Trainer, arrays: Mapping[str, np.ndarray], header: Mapping[str, Any],
            where: str, skip: Any = None) -> None:
    """Put a captured state back; CheckpointError (prefixed with ``where``) if it does not fit.

    Everything is validated before anything changes, so a failed restore leaves the trainer
    as freshly built.
    """
    from cnnx.training.trainer import EpochProgress

    def sub(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    model_state = sub(MODEL)
    if not model_state:
        raise CheckpointError(f"{where}: holds no model weights")
    optimizer_state = {**_field(header, "optimizer", where), **sub(OPTIMIZER)}
    rng = _field(header, "rng", where)
    generators = _layer_generators(trainer)
    saved_layers = rng.get("layers", {}) if isinstance(rng, dict) else {}
    # cnnx 0.2.0 saved only generators named `rng`: its checkpoints lack a plugin layer's others,
    # which then start afresh (said below) rather than the checkpoint being refused.
    unsaved = sorted(name for name in set(generators) - set(saved_layers) if ":" in name)
    if set(saved_layers) != set(generators) - set(unsaved):
        raise CheckpointError(
            f"{where}: random layers {sorted(saved_layers)} in the checkpoint, the model has "
            f"{sorted(generators)}; it was written for a different architecture"
        )
    epochs_completed = int(_field(header, "epochs_completed", where))
    partial = header.get("partial_epoch")
    if partial is not None and ORDER not in arrays:
        raise CheckpointError(f"{where}: stopped mid-epoch but holds no batch order")
    history = _field(header, "history", where)
    if len(history) != epochs_completed:
        raise CheckpointError(f"{where}: history has {len(history)} epochs, header says {epochs_completed}")
    try:
        # Model and optimizer loads are strict and change nothing unless the whole dict fits;
        # the model goes first so an architecture mismatch is reported with the layer name.
        # What loads before a later part fails is put back, so the trainer stays as built.
        before = _loadable_state(trainer, generators)
        trainer.model.load_state_dict(model_state)
        try:
            trainer.optimizer.load_state_dict(optimizer_state)
            if trainer.scheduler is not None and header.get("scheduler") is not None:
                trainer.scheduler.load_state_dict(header["scheduler"])
            trainer.shuffle_rng.bit_generator.state = rng["shuffle"]
            trainer.augment_rng.bit_generator.state = rng["augment"]
            for name, generator in generators.items():
                if name not in unsaved:
                    generator.bit_generator.state = saved_layers[name]
        except BaseException:
            _put_back(trainer, generators, before)
            raise
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: malformed state ({type(exc).__name__}: {exc})") from None

    saved_callbacks = header.get("callbacks", {})
    for key, callback in zip(callback_keys(trainer.callbacks), trainer.callbacks, strict=True):
        key = _saved_key(key, callback, saved_callbacks)
        if callback is skip or key is None:
            continue
        callback.load_state_dict({**saved_callbacks[key], **sub(f"{CALLBACK}{key}/")})
    trainer.epoch = epochs_completed
    trainer.stop_training = bool(header.get("stop_training", False))
    trainer.history.epochs = [dict(epoch) for epoch in history]
    trainer.progress_state = None if partial is None else EpochProgress(
        order=arrays[ORDER], batches_done=int(partial["batches_done"]),
        loss_sum=float(partial["loss_sum"]), correct=int(partial["correct"]),
        seen=int(partial["seen"]), skipped=int(partial["skipped"]),
    )
    if unsaved:
        trainer.log(f"{where} holds no state of the generators {', '.join(unsaved)} (cnnx 0.2.0 saved only "
                    f"those named rng): they start afresh, so their draws differ from an uninterrupted run's")
