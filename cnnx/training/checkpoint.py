"""The checkpoint callback: save the training state every N epochs and on interruption, keep
the last few and the best, and resume from them.

Files live in one directory (by default ``<hydra run dir>/checkpoints``):
``epoch-0003.npz`` after epoch 3, ``epoch-0004-batch-0012.npz`` when a signal stopped
epoch 4 after its 12th batch. Resuming picks the newest one that reads cleanly; a truncated
newest file (a crash while the disk was full, say) falls back to the one before, with a
warning. A checkpoint that reads cleanly but does not fit the model is an error, never
skipped: it means the config changed.

The checkpoint of an epoch is written in ``on_epoch_end`` *before* the tracker logs that
epoch (it follows this callback in the list), so with a checkpoint every epoch
(``every_n_epochs=1``) a run killed at any moment has never logged an epoch that its newest
checkpoint does not hold. With checkpoints further apart, resuming replays the epochs logged
since the newest one (``trainer.resume=true``); naming that file instead starts a new run (the
tracker's ``_branches_off``).
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnx.cli import warn as cli_warn
from cnnx.errors import CheckpointError, ConfigError
from cnnx.folder_lock import FolderBusy, lock_folder
from cnnx.inert_settings import flat_without_inert
from cnnx.settings_added_later import changed_default_hint, with_earlier_defaults
from cnnx.training.callbacks import Callback
from cnnx.training.checkpoint_file import CLASSIFIER, TEMP_SUFFIX, read_checkpoint, write_checkpoint
from cnnx.training.objective import objective_key, objective_mode
from cnnx.training.signals import TrainingInterrupted
from cnnx.training.training_state import capture, restore

if TYPE_CHECKING:
    from cnnx.training.trainer import Trainer

NAME = re.compile(r"^epoch-(\d{4,})(?:-batch-(\d{4,}))?\.npz$")
_COMPLETE = math.inf  # sorts a finished epoch after every partial checkpoint of that epoch


def checkpoint_order(path: Path) -> tuple[int, float] | None:
    """Sort key (epoch, batch) of a checkpoint file name, None for other files."""
    match = NAME.match(path.name)
    if match is None:
        return None
    return int(match[1]), _COMPLETE if match[2] is None else int(match[2])


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if checkpoint_order(p) is not None and p.is_file()]
    return sorted(found, key=checkpoint_order)


def newer_checkpoints(directory: Path, than: Path) -> list[Path]:
    """Checkpoints in ``directory`` written later in a run than ``than``, oldest first; none
    when ``than`` is not named like a checkpoint (its place cannot be told)."""
    order = checkpoint_order(than)
    if order is None:
        return []
    return [path for path in list_checkpoints(directory) if checkpoint_order(path) > order]


def check_writable(directory: Path, key: str) -> None:
    """Fail before training, naming ``key``, if checkpoints cannot be written to ``directory``."""
    probe = directory / f".write-test-{os.getpid()}"
    # The folders made for the probe are removed after it: the first checkpoint makes them
    # again, and a run refused later (a resume with no checkpoint) leaves no empty folder.
    made = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
        for folder in made:
            folder.rmdir()
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot write checkpoints to '{directory}' ({exc.strerror or exc}); "
            f"accepted: a writable directory"
        ) from None


class Checkpoint(Callback):
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        every_n_epochs: int = 1,
        keep_last: int = 2,
        keep_best: bool = True,
        monitor: str = "val_acc",
        resume: bool | str | os.PathLike[str] = False,
        warn: Callable[[str], None] | None = None,
        config: dict[str, str] | None = None,
        may_change: tuple[str, ...] = ("trainer.epochs",),
        classifier_description: Callable[[Trainer], dict[str, Any] | None] | None = None,
    ):
        """``config``: the settings a resumed run must share with its checkpoint (flat key →
        value); saved in each checkpoint and compared when resuming. None: not checked.
        ``may_change``: the settings left out of ``config``, as a refusal names them.
        ``classifier_description``: the trainer's ``Classifier.description()``, what a
        checkpoint needs to predict on its own (the model's layers, classes, normalisation),
        saved under the header's ``classifier`` key."""
        for key, value in (("every_n_epochs", every_n_epochs), ("keep_last", keep_last)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"trainer.checkpoint.{key}={value!r} is not accepted; accepted: an integer >= 1"
                )
        if not (isinstance(resume, (bool, str)) or isinstance(resume, os.PathLike)):
            raise ConfigError(
                f"trainer.resume={resume!r} is not accepted; accepted: false, true or a checkpoint path"
            )
        self.directory = Path(directory)
        self.every_n_epochs, self.keep_last, self.keep_best = every_n_epochs, keep_last, keep_best
        self.monitor = monitor
        self.resume = resume
        self.config = config
        self.may_change = may_change
        self.classifier_description = classifier_description
        self.warn = warn or cli_warn
        self.best_value: float | None = None
        self.best_epoch = 0
        self.last_saved: Path | None = None
        self.resumed_from: Path | None = None
        self._lock_descriptor: int | None = None

    @property
    def resume_file(self) -> Path | None:
        """The checkpoint file ``trainer.resume`` names; None for true, false or a directory,
        which resume from the newest checkpoint."""
        if self.resume is True or self.resume is False:
            return None
        path = Path(self.resume).expanduser()
        return path if path.is_file() else None

    @functools.cached_property
    def resume_file_passed_by(self) -> list[Path]:
        """Checkpoints written later in a run than ``resume_file``, found beside it: that run
        went on past the point this one resumes from (oldest first; empty without a file)."""
        file = self.resume_file
        return [] if file is None else newer_checkpoints(file.parent, file)

    # -- hooks -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        check_writable(self.directory, "trainer.checkpoint.dir")
        if self.directory.is_dir():  # else the first save makes it, and locks it then
            self._lock()
        try:
            for stale in self.directory.glob(f".*{TEMP_SUFFIX}"):
                stale.unlink(missing_ok=True)  # left by a process killed while writing
            if self.resume is not False:
                self.resumed_from = self._resume(trainer)
        except BaseException:
            self._unlock()
            raise

    def on_fit_end(self, trainer: Trainer, test_metrics: dict[str, float]) -> None:
        self._unlock()

    def _lock(self) -> None:
        """Hold the folder's lock while training: a second process resuming the same run (a
        user who took it for dead, a scheduler requeueing a live job) would log every epoch
        into its MLflow run twice, and delete the first one's checkpoint half-written."""
        if self._lock_descriptor is not None:
            return
        try:
            self._lock_descriptor = lock_folder(self.directory, wait=False)
        except FolderBusy:
            raise CheckpointError(
                f"trainer.checkpoint.dir: '{self.directory}' is in use by a run still training (another process "
                f"holds it); wait for that run to end, or stop it, before resuming it"
            ) from None

    def __del__(self) -> None:  # a Checkpoint dropped without a fit's end (a caller's own loop)
        self._unlock()

    def __getstate__(self) -> dict[str, Any]:
        # A copy (deepcopy, pickle) holds no lock: closing the original's descriptor when it
        # is collected would release the original's lock, or close a file reusing the number.
        return {**self.__dict__, "_lock_descriptor": None}

    def _unlock(self) -> None:
        if getattr(self, "_lock_descriptor", None) is not None:
            os.close(self._lock_descriptor)
            self._lock_descriptor = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self._track_best(epoch, metrics)
        last = epoch == trainer.epochs or trainer.stop_training
        if epoch % self.every_n_epochs == 0 or last:
            self.save(trainer)

    def on_fit_error(self, trainer: Trainer, error: BaseException) -> None:
        try:
            self._save_on_error(error, trainer)
        finally:
            self._unlock()

    def _save_on_error(self, error: BaseException, trainer: Trainer) -> None:
        if isinstance(error, TrainingInterrupted):
            try:
                error.checkpoint = str(self.save(trainer))
            except CheckpointError as exc:  # a full disk must not hide the interruption itself
                self.warn(str(exc))
        elif isinstance(error, KeyboardInterrupt):
            # A second Ctrl-C stops mid-batch, where no state is consistent; the newest
            # checkpoint still resumes the run, and the CLI says so.
            newest = self.last_saved or self.resumed_from
            error.last_checkpoint = None if newest is None else str(newest)

    def state_dict(self) -> dict[str, Any]:
        state = {"best_value": self.best_value, "best_epoch": self.best_epoch}
        if self.config is not None:
            state["config"] = self.config
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], int(state["best_epoch"])

    # -- saving ----------------------------------------------------------------------------
    def save(self, trainer: Trainer) -> Path:
        progress = trainer.progress_state
        if progress is None:
            name = f"epoch-{trainer.epoch:04d}.npz"
        else:
            name = f"epoch-{trainer.epoch:04d}-batch-{progress.batches_done:04d}.npz"
        arrays, header = capture(trainer)
        description = None if self.classifier_description is None else self.classifier_description(trainer)
        if description is not None:
            header[CLASSIFIER] = description
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock()
            path = write_checkpoint(self.directory / name, arrays, header)
        except OSError as exc:  # a full disk or a quota: write_checkpoint left no partial file
            kept = list_checkpoints(self.directory)
            raise CheckpointError(
                f"trainer.checkpoint.dir: cannot write checkpoint '{self.directory / name}' "
                f"({exc.strerror or exc}); "
                + (f"the newest complete one, '{kept[-1]}', is kept: free space, then resume with "
                   f"trainer.resume=true" if kept else "no checkpoint was written")
            ) from None
        self.last_saved = path
        self._prune()
        return path

    def _track_best(self, epoch: int, metrics: dict[str, float]) -> None:
        key = objective_key([metrics], self.monitor)
        value = metrics.get(key)
        if value is None or not math.isfinite(value):
            return
        larger_is_better = objective_mode(key) == "max"
        if (self.best_value is None or (value > self.best_value if larger_is_better
                                        else value < self.best_value)):
            self.best_value, self.best_epoch = float(value), epoch

    def _prune(self) -> None:
        files = list_checkpoints(self.directory)
        keep = set(files[-self.keep_last:])
        if self.keep_best and self.best_epoch:
            keep.add(self.directory / f"epoch-{self.best_epoch:04d}.npz")
        for path in files:
            if path not in keep:
                path.unlink(missing_ok=True)

    # -- resuming --------------------------------------------------------------------------
    def _candidates(self) -> tuple[list[Path], str]:
        if self.resume is True:
            return list_checkpoints(self.directory)[::-1], f"trainer.resume=true: no checkpoint in '{self.directory}'"
        if self.resume_file is not None:
            return [self.resume_file], ""
        path = Path(self.resume).expanduser()
        if path.is_dir():
            inner = path / "checkpoints"
            found = list_checkpoints(path) or list_checkpoints(inner)
            return found[::-1], f"trainer.resume={self.resume}: no checkpoint (epoch-*.npz) in '{path.resolve()}'"
        raise CheckpointError(
            f"trainer.resume={self.resume}: no such file or directory; accepted: true, false, "
            f"a checkpoint file or a directory holding epoch-*.npz files"
        )

    def _resume(self, trainer: Trainer) -> Path:
        candidates, none_found = self._candidates()
        if not candidates:
            raise CheckpointError(
                f"{none_found}; pass hydra.run.dir=<the interrupted run's directory> or "
                f"trainer.resume=<checkpoint file or directory>"
            )
        problems = []
        for index, path in enumerate(candidates):
            try:
                arrays, header = read_checkpoint(path)
            except CheckpointError as exc:
                problems.append(str(exc))
                continue
            # Warned only now: when no file reads, the error alone says it all, in one line.
            for problem, fallback in zip(problems, candidates[1:index + 1]):
                self.warn(f"{problem}; falling back to '{fallback.name}'")
            self._check_same_config(header, path)
            restore(trainer, arrays, header, f"checkpoint file '{path.resolve()}'", skip=None)
            self._check_epochs(trainer, header.get("epochs"), path)
            trainer.log(f"resumed from {path} ({_stopped_at(trainer)})")
            self._say_if_replanned(trainer, header)
            if trainer.finished_training:
                trainer.log(f"the checkpoint's run had finished training ({trainer.epoch} epochs); nothing "
                            f"left to train (raise trainer.epochs to train longer)")
            return path
        raise CheckpointError(problems[0] if len(problems) == 1 else
                              f"no readable checkpoint: {'; '.join(problems)}")

    def _check_same_config(self, header: dict[str, Any], path: Path) -> None:
        """A resumed run continues the same training and MLflow run: a changed learning rate
        or seed would make its numbers and its logged params disagree, silently."""
        saved = (header.get("callbacks") or {}).get(type(self).__name__, {}).get("config")
        if self.config is None or not isinstance(saved, dict):
            return  # not checked, or written by a cnnx that did not record it
        saved, current = flat_without_inert(with_earlier_defaults(saved, self.config), self.config)
        changed = [f"{key}={current.get(key, '(absent)')} (checkpoint: {saved.get(key, '(absent)')})"
                   for key in sorted(set(saved) | set(current), key=lambda k: (not k.endswith(".type"), k))
                   if saved.get(key) != current.get(key)]
        if changed:
            listed = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise CheckpointError(
                f"trainer.resume: the config differs from checkpoint '{path}' in {listed}; a resumed run continues "
                f"the same training and MLflow run, so only {', '.join(self.may_change)}, early stopping's "
                f"options while it is off and where it runs may change: drop the override, or start a "
                f"new run without trainer.resume" + changed_default_hint(saved, current)
            )

    @staticmethod
    def _say_if_replanned(trainer: Trainer, header: dict[str, Any]) -> None:
        """A schedule whose length is the run's (cosine) is planned again for a changed
        trainer.epochs: the learning rate then jumps where the run goes on, which the user
        should hear of rather than find in the lr curve."""
        planned = header.get("epochs")
        saved_lr = (header.get("optimizer") or {}).get("lr")
        if (trainer.scheduler is None or trainer.finished_training or not isinstance(planned, int)
                or planned == trainer.epochs or not isinstance(saved_lr, (int, float))):
            return
        lr = trainer.optimizer.lr
        if not math.isclose(lr, saved_lr, rel_tol=1e-6, abs_tol=1e-12):
            trainer.log(f"the learning-rate schedule is planned again for trainer.epochs={trainer.epochs} "
                        f"(the checkpoint's run planned {planned}): the next step's lr is {lr:.4g}, "
                        f"{saved_lr:.4g} in the plan for {planned}")

    @staticmethod
    def _check_epochs(trainer: Trainer, planned: Any, path: Path) -> None:
        """Resumed with fewer epochs than its checkpoint has begun, a run would skip the rest,
        evaluate a half-trained model and end FINISHED in MLflow; so would one stopped between
        epochs and resumed with exactly as many."""
        progress = trainer.progress_state
        known = isinstance(planned, int)  # an older cnnx did not record it: any end counts as the run's
        ended = progress is None and (trainer.stop_training or not known or trainer.epoch >= planned)
        least = trainer.epoch if ended else trainer.epoch + 1
        if trainer.epochs >= least:
            return
        where = _stopped_at(trainer, f" of {planned}" if known else "")
        why = ("a resumed run keeps the epochs it has trained" if ended else
               "the run would end unfinished, yet FINISHED in MLflow")
        raise CheckpointError(
            f"trainer.epochs={trainer.epochs} is too few to resume checkpoint '{path}' ({where}): {why}; "
            f"accepted: trainer.epochs >= {least}"
            + (f" ({planned} trains it as it was started)" if known and not ended else "")
        )


def _stopped_at(trainer: Trainer, of_epochs: str = "") -> str:
    """``epoch 4, after batch 12`` for a trainer restored mid-epoch, else ``after epoch 3``."""
    progress = trainer.progress_state
    # trainer.epoch counts completed epochs; an interrupted one is the next.
    if progress is not None:
        return f"epoch {trainer.epoch + 1}{of_epochs}, after batch {progress.batches_done}"
    return f"after epoch {trainer.epoch}{of_epochs}"
