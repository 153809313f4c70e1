"""The optimizer contract: named parameters in, in-place updates out, name-keyed state.

A layer never updates itself (the pattern sklearn's ``_stochastic_optimizers`` follows): the
optimizer reads each ``Parameter.grad`` that the last backward assigned and changes
``Parameter.data`` in place, so the model, the layers' caches and anyone holding the array
see the new values without re-binding.

State is keyed by parameter *name*, not by object identity or position, so a checkpoint
written by one process loads into a freshly built model of the same spec in another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnx.engine.flat_parameters import parameter_views, shared_buffer
from cnnx.engine.options import check_flag, check_int, check_range, check_real  # noqa: F401
from cnnx.engine.parameter import Parameter
from cnnx.errors import CheckpointError, ConfigError

STATE_PREFIX = "state."
PARAM_STEP_PREFIX = "param_step."


# -- hyper-parameter validation -------------------------------------------------------------
# The scalar checks live in cnnx.engine.options, shared with layers and losses. Re-exported
# here under their old names: plugins written for cnnx 0.2 import them from this module.
check_bool = check_flag


def check_betas(owner: str, value: Any) -> tuple[float, float]:
    # Configs deliver a list (or an OmegaConf ListConfig), Python code a tuple.
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(
            f"{owner}: betas={value!r} is not a pair; accepted: [beta1, beta2] in [0, 1)"
        )
    items = list(value)
    if len(items) != 2:
        raise ConfigError(
            f"{owner}: betas={items!r} has {len(items)} values; accepted: [beta1, beta2] in [0, 1)"
        )
    return (
        check_range(owner, "betas[0]", items[0], 0.0, 1.0, high_open=True),
        check_range(owner, "betas[1]", items[1], 0.0, 1.0, high_open=True),
    )


# -- the base class --------------------------------------------------------------------------
@dataclass
class _FlatState:
    data: np.ndarray
    views: tuple[np.ndarray, ...]  # each parameter's data when the buffer was found
    grad: np.ndarray
    state: dict[str, np.ndarray]
    scratch: list[np.ndarray]


class Optimizer:
    """Base class: subclasses declare their state ``slots`` and implement ``_update``.

    ``lr`` is a plain attribute that learning-rate schedulers overwrite between steps.
    ``step_count`` is the number of completed ``step()`` calls. ``param_step``, read by
    ``_update``, is the number of updates the parameters it is updating have had, this one
    included (Adam's bias correction ``t``): counted per parameter, as torch does, because a
    parameter left out of a step (its ``.grad`` None) has had one update fewer than the others.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, Parameter]] | Iterable[Parameter], lr: float) -> None:
        """``model.named_parameters()``; bare Parameters (``model.parameters()``, as PyTorch
        code passes them) are named by position, as in torch's optimizer state_dict."""
        owner = type(self).__name__
        if hasattr(named_parameters, "named_parameters") and not isinstance(named_parameters, Mapping):
            raise ConfigError(f"{owner}: got the {type(named_parameters).__name__} itself; pass its "
                              f"parameters: {owner}(model.named_parameters(), lr=...)")
        if isinstance(named_parameters, Mapping):
            named_parameters = named_parameters.items()
        self.params: dict[str, Parameter] = {}
        names_by_identity: dict[int, str] = {}
        for position, item in enumerate(named_parameters):
            if isinstance(item, Parameter):
                item = (str(position), item)
            if isinstance(item, Mapping):
                # A dict would unpack into its first two keys and be refused as a str "parameter".
                raise ConfigError(
                    f"{owner}: parameter groups (dicts such as {{'params': ..., 'lr': ...}}) are not "
                    f"supported; pass model.named_parameters(), or build one optimizer per group of "
                    f"parameters that share settings"
                )
            try:
                name, param = item
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{owner}: expected Parameters or (name, Parameter) pairs such as "
                    f"model.named_parameters(), got {item!r}"
                ) from None
            if not isinstance(param, Parameter):
                raise ConfigError(
                    f"{owner}: parameter {name!r} is a {type(param).__name__}, not a Parameter"
                )
            if name in self.params:
                raise ConfigError(f"{owner}: parameter name {name!r} appears twice")
            if id(param) in names_by_identity:
                # Under two names it would be updated twice per step.
                # Two layers sharing it (tied weights, fc2.weight = fc1.weight) is no better: each
                # backward replaces .grad, so it would step on one layer's gradient only.
                raise ConfigError(f"{owner}: parameter {name!r} is the same Parameter as "
                                  f"{names_by_identity[id(param)]!r}; pass each parameter once (cnnx does not "
                                  f"support layers sharing a Parameter: each backward replaces .grad, so it would "
                                  f"hold one layer's gradient only)")
            names_by_identity[id(param)] = str(name)
            self.params[str(name)] = param
        if not self.params:
            raise ConfigError(
                f"{owner}: got an empty parameter list; the model has nothing to train"
            )
        self.lr = check_range(owner, "lr", lr, 0.0, low_open=True)
        self.step_count = 0
        self.param_step = 0
        # Updates per parameter, once a step has left some parameter out; until then every
        # parameter has had ``step_count`` updates, and the flat fast path applies.
        self._param_steps: dict[str, int] | None = None
        # Created on first use so buffers match the parameters' dtype at that time (a model
        # may be cast with ``Module.to`` after the optimizer was built).
        self.state: dict[str, dict[str, np.ndarray]] = {}
        # Per-parameter workspace for intermediates: never checkpointed, reused every step so
        # the hot path does not allocate.
        self._scratch: dict[str, list[np.ndarray]] = {}
        # The whole-model arrays when parameters share one buffer (see ``elementwise``).
        self._flat: _FlatState | None = None

    # -- what subclasses provide ----------------------------------------------------------
    #: Names of the per-parameter state arrays (same shape as the parameter).
    def slots(self) -> tuple[str, ...]:
        return ()

    #: How many scratch arrays ``_update`` needs per parameter.
    scratch_count = 1

    #: True when ``_update`` treats every element on its own (no per-parameter norms, as LAMB
    #: has): the optimizer may then update parameters that share one buffer
    #: (``cnnx.engine.flat_parameters``) as a single flat array.
    elementwise = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass with its own update (say, LARS from SGD) must declare it elementwise itself.
        if "_update" in cls.__dict__ and "elementwise" not in cls.__dict__:
            cls.elementwise = False

    def _update(
        self,
        data: np.ndarray,
        grad: np.ndarray,
        state: dict[str, np.ndarray],
        scratch: list[np.ndarray],
        lr: float,
    ) -> None:
        """Update ``data`` in place from ``grad``; ``state`` holds this parameter's ``slots``
        (persisted and checkpointed), ``scratch[0]`` is a free work array of ``data``'s shape,
        and ``self.param_step`` is this update's number for the parameter, from 1 (set by
        ``step`` before each call; Adam's ``t``)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters (constructor kwargs except the parameters), e.g. for logging."""
        return {"lr": self.lr}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's gradient, as ``torch.optim.Optimizer.zero_grad`` does.

        Never needed here (each backward replaces the gradients, nothing accumulates); it lets
        PyTorch's ``zero_grad(); backward(); step()`` loop run unchanged. As in torch, the
        gradients become None by default, so a ``step()`` with no backward since leaves the
        weights alone; with ``set_to_none=False`` they are zeros, and such a step still applies
        momentum and weight decay.
        """
        for param in self.params.values():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.fill(0)

    # -- the hot path ---------------------------------------------------------------------
    def step(self) -> None:
        """Apply one update to every parameter from its current ``.grad``.

        Parameters whose gradient is None (``zero_grad()`` and no backward since) are left
        alone, as in torch; when none has one, the step does nothing and is not counted.
        """
        self._ensure_state()
        lr = float(self.lr)  # schedulers may hand in NumPy scalars; keep float32 float32
        flat = self._flat
        # The parameters no longer hold views of this buffer, so updating it would leave them
        # untouched, when either: bare parameters copied or unpickled together with their
        # optimizer still hold the copied views, but each view now owns its memory, so its base
        # is not the copied buffer; or Model.to, or a Model's copy (which flattens again),
        # rebound the first parameter to another array.
        if flat is not None and (flat.views[0].base is not flat.data
                                 or next(iter(self.params.values())).data is not flat.views[0]):
            flat = self._relink()
        # Cheap checks only: parameters that no longer share a buffer after the relink, and a
        # gradient of another shape or dtype, get the per-parameter path (and its errors).
        if flat is not None and self._param_steps is None and all(
                p.data is view and p.grad is not None and p.grad.shape == view.shape and p.grad.dtype == view.dtype
                for p, view in zip(self.params.values(), flat.views)):
            self.step_count += 1
            self.param_step = self.step_count
            np.concatenate([p.grad.reshape(-1) for p in self.params.values()], out=flat.grad)
            self._update(flat.data, flat.grad, flat.state, flat.scratch, lr)
            return
        skipped = [param.grad is None for param in self.params.values()]
        if all(skipped):
            return
        if any(skipped) and self._param_steps is None:
            self._param_steps = dict.fromkeys(self.params, self.step_count)
        self.step_count += 1
        for name, param in self.params.items():
            if param.grad is None:
                continue
            if self._param_steps is None:
                self.param_step = self.step_count
            else:
                self._param_steps[name] += 1
                self.param_step = self._param_steps[name]
            self._update(param.data, param.grad, self.state[name], self._scratch[name], lr)

    def _ensure_state(self) -> None:
        if len(self.state) == len(self.params):
            return
        params = list(self.params.values())
        buffer = shared_buffer(params) if self.elementwise else None
        if buffer is not None and not self.state:
            # State and scratch as flat arrays too; per-parameter entries are views of them, so
            # checkpoints stay keyed by parameter name.
            self._flat = _FlatState(buffer, tuple(p.data for p in params), np.empty_like(buffer),
                                    {slot: np.zeros_like(buffer) for slot in self.slots()},
                                    [np.empty_like(buffer) for _ in range(self.scratch_count)])
            state = {slot: parameter_views(a, params) for slot, a in self._flat.state.items()}
            scratch = [parameter_views(a, params) for a in self._flat.scratch]
            for i, name in enumerate(self.params):
                self.state[name] = {slot: views[i] for slot, views in state.items()}
                self._scratch[name] = [views[i] for views in scratch]
            return
        for name, param in self.params.items():
            if name not in self.state:
                self.state[name] = {slot: np.zeros_like(param.data) for slot in self.slots()}
                self._scratch[name] = [np.empty_like(param.data) for _ in range(self.scratch_count)]

    def _relink(self) -> _FlatState | None:
        """Follow the parameters to where their data lives now, keeping every state value.

        A model copied or pickled together with its optimizer gets parameters that own their
        data (each array is copied on its own), and ``Module.to`` rebinds it: the flat buffer
        would then update arrays no parameter holds, and training would silently stand still.
        """
        kept, self._flat, self.state, self._scratch = self.state, None, {}, {}
        self._ensure_state()
        for name, slots in kept.items():
            for slot, array in slots.items():
                np.copyto(self.state[name][slot], array, casting="same_kind")
        return self._flat

    # -- checkpointing --------------------------------------------------------------------
    def _state_key(self, name: str, slot: str) -> str:
        return f"{STATE_PREFIX}{name}.{slot}"

    def _param_step_keys(self) -> dict[str, str]:
        return {name: f"{PARAM_STEP_PREFIX}{name}" for name in self.params}

    def state_dict(self) -> dict[str, Any]:
        """Flat ``{"step": int, "lr": float, "state.<param>.<slot>": array}`` (copies), and
        ``"param_step.<param>": int`` for every parameter once a step has left one out.

        Only plain scalars and numeric arrays, so it saves to ``.npz`` or JSON without pickle.
        """
        self._ensure_state()
        out: dict[str, Any] = {"step": int(self.step_count), "lr": float(self.lr)}
        if self._param_steps is not None:
            out.update({key: self._param_steps[name] for name, key in self._param_step_keys().items()})
        for name, slots in self.state.items():
            for slot, array in slots.items():
                out[self._state_key(name, slot)] = array.copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``; strict: every key must be present and fit, none extra.

        Nothing is changed unless the whole dict is valid.
        """
        owner = type(self).__name__
        self._ensure_state()
        expected = {"step", "lr"} | {
            self._state_key(name, slot) for name, slots in self.state.items() for slot in slots
        }
        missing = sorted(expected - set(state))
        if missing:
            raise CheckpointError(
                f"{owner} checkpoint is missing key {missing[0]!r}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; was it written by a different optimizer, model or momentum setting?"
            )
        param_step_keys = self._param_step_keys()
        given_param_steps = [key for key in param_step_keys.values() if key in state]
        if given_param_steps and len(given_param_steps) < len(param_step_keys):
            absent = next(key for key in param_step_keys.values() if key not in state)
            raise CheckpointError(f"{owner} checkpoint is missing key {absent!r}; it holds "
                                  f"{given_param_steps[0]!r}, and a step count for one parameter needs one for each")
        unknown = sorted(set(state) - expected - set(given_param_steps))
        if unknown:
            raise CheckpointError(
                f"{owner} checkpoint has unexpected key {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + "; was it written by a different optimizer, model or momentum setting?"
            )
        step = self._scalar(owner, state["step"], "step")
        if step != int(step) or step < 0:
            raise CheckpointError(f"{owner} checkpoint key 'step'={step!r} is not an integer >= 0")
        lr = self._scalar(owner, state["lr"], "lr")
        if not math.isfinite(lr) or lr < 0:
            raise CheckpointError(f"{owner} checkpoint key 'lr'={lr!r} is not a finite number >= 0")
        param_steps = None
        if given_param_steps:
            param_steps = {}
            for name, key in param_step_keys.items():
                count = self._scalar(owner, state[key], key)
                if count != int(count) or not 0 <= count <= step:
                    raise CheckpointError(f"{owner} checkpoint key {key!r}={count!r} is not an integer "
                                          f"from 0 to 'step' ({int(step)})")
                param_steps[name] = int(count)
        arrays: list[tuple[np.ndarray, np.ndarray, str]] = []
        for name, slots in self.state.items():
            for slot, target in slots.items():
                key = self._state_key(name, slot)
                value = np.asarray(state[key])
                if value.shape != target.shape:
                    raise CheckpointError(
                        f"{owner} checkpoint key {key!r} has shape {value.shape}, "
                        f"the parameter needs {target.shape}"
                    )
                if not (
                    np.issubdtype(value.dtype, np.floating)
                    or np.issubdtype(value.dtype, np.integer)
                ):
                    raise CheckpointError(
                        f"{owner} checkpoint key {key!r} has dtype {value.dtype}, expected floats"
                    )
                arrays.append((target, value, key))
        for target, value, _ in arrays:
            np.copyto(target, value, casting="unsafe")
        self.step_count = int(step)
        self._param_steps = param_steps
        self.lr = float(lr)

    @staticmethod
    def _scalar(owner: str, value: Any, key: str) -> float:
        # .npz round trips turn scalars into 0-d arrays.
        array = np.asarray(value)
        if array.shape != () or not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        ):
            raise CheckpointError(f"{owner} checkpoint key {key!r}={value!r} is not a number")
        return float(array)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
