"""Settings of a run's config that decide nothing: early stopping's options while it is off.

A resumed run is compared with its checkpoint, and a sweep job with its earlier twin, on the
settings that decide the result. Options of a feature that is off are left out of both, so
that changing one, or a new cnnx changing its default, neither refuses a resume nor reruns a
finished sweep job.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

EARLY_STOPPING = "trainer.early_stopping"

#: What the fingerprint of a sweep job reads for early stopping while it is off, whatever its
#: other options say: the defaults up to cnnx 0.2.3, so that jobs logged by those versions keep
#: their fingerprints (0.2.4 made the monitor follow trainer.monitor).
EARLY_STOPPING_OFF = {"enabled": False, "monitor": "val_loss", "mode": "auto", "patience": 5, "min_delta": 0.0,
                      "restore_best": True}


def flat_without_inert(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[dict, dict]:
    """Two flat configs (dotted keys, values as ``str()`` gives them, as checkpoints record
    them) to compare, without early stopping's options when either has it off: then only its
    ``enabled`` can tell them apart, and says so alone."""
    enabled = f"{EARLY_STOPPING}.enabled"
    if "False" not in (str(saved.get(enabled)), str(current.get(enabled))):
        return dict(saved), dict(current)

    def kept(flat: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in flat.items() if not key.startswith(f"{EARLY_STOPPING}.") or key == enabled}

    return kept(saved), kept(current)


#: ... and for ``trainer.eval_batch_size``, which changes evaluated figures only in float32
#: rounding (how many samples share a GEMM): the default up to cnnx 0.2.3.
EVAL_BATCH_SIZE = 512


def trainer_without_inert(trainer: Mapping[str, Any], swept: Collection[str] = ()) -> dict[str, Any]:
    """A nested ``trainer`` section as a sweep job's fingerprint reads it: early stopping, when
    off, as ``EARLY_STOPPING_OFF``, and any eval_batch_size as ``EVAL_BATCH_SIZE`` — unless the
    sweep varies them (``swept``): its jobs must then stay apart, each with its own run."""
    trainer = dict(trainer)
    stopping = trainer.get("early_stopping")
    if isinstance(stopping, Mapping) and stopping.get("enabled") is False and not any(
            key == EARLY_STOPPING or key.startswith(f"{EARLY_STOPPING}.") for key in swept):
        trainer["early_stopping"] = dict(EARLY_STOPPING_OFF)
    if "eval_batch_size" in trainer and "trainer.eval_batch_size" not in swept:
        trainer["eval_batch_size"] = EVAL_BATCH_SIZE
    return trainer
