"""The model container: build from a spec, run, summarise, save and load weights."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from cnnx.engine.flat_parameters import flatten_parameters
from cnnx.engine.grad_mode import attributes_kept, is_grad_enabled, no_grad
from cnnx.engine.layer_reuse import restored_on_failure
from cnnx.engine.module import Module, Shape, real_input
from cnnx.engine.options import check_positive_int
from cnnx.engine.sequential import Sequential
from cnnx.engine.spec import layers_from_spec
from cnnx.errors import CheckpointError, ConfigError, ShapeError


class IncompatibleKeys(NamedTuple):
    """What ``Model.load_state_dict`` did not match (PyTorch's ``_IncompatibleKeys``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Model(Sequential):
    """A built network with PyTorch-compatible ``state_dict`` names and layouts."""

    kind = "model"

    def __init__(self, layers: Mapping[str, Module], input_shape: Shape,
                 rng: np.random.Generator | None = None, where: str = "model.layers"):
        """``rng`` draws the initial weights; by default seed 0, as ``build_model``'s."""
        super().__init__(layers, where)
        self._last_output_shape: tuple[int, ...] | None = None  # what backward's gradient must be
        self.build(input_shape, np.random.default_rng(0) if rng is None else rng)
        flatten_parameters([p for _, p in self.named_parameters()])

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A copy (deepcopy, pickle) gets one array per parameter; sharing one buffer again
        # keeps its optimizer steps as fast as the original's.
        self.__dict__.update(state)
        flatten_parameters([p for _, p in self.named_parameters()])

    def to(self, dtype: Any) -> Model:
        super().to(dtype)
        flatten_parameters([p for _, p in self.named_parameters()])
        return self

    def build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        try:
            shape = tuple(int(d) for d in input_shape)
        except (TypeError, ValueError):
            shape = ()
        if len(shape) != 3 or any(d <= 0 for d in shape):
            raise ShapeError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
        self._refuse_a_layer_used_twice()
        reused = [module for _, layer in self.named_layers() if layer.built for module in layer.modules()]
        with restored_on_failure(reused):
            return super().build(shape, rng)

    def _refuse_a_layer_used_twice(self) -> None:
        """One layer object at two places (``r = ReLU()`` as relu1 and relu2) ran, and its second
        call replaced what its first one kept for backward: gradients were wrong, silently."""
        first_place: dict[int, str] = {}
        for name, layer in self.named_layers():
            first = first_place.setdefault(id(layer), name)
            if first != name:
                raise ConfigError(
                    f"{self.where}.{name} is the same {type(layer).__name__} object as {self.where}.{first}: a "
                    f"layer keeps what backward needs from its last call, so one object cannot run at two places "
                    f"(nor share weights, which cnnx does not support); give each place its own instance"
                )

    # -- running ---------------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        """Inputs of any real dtype are cast to the model's float32 (``real_input``).
        ``training`` True or False runs every layer in that mode; None (``model(x)``) runs each
        in its own, as ``train()``/``eval()`` left it."""
        x = real_input(x, self.dtype, "model")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(self._input_shape_message(x.shape))
        if not is_grad_enabled():
            return self._forward_without_grad(x, training)
        y = super().forward(x, training)
        self._last_output_shape = y.shape
        return y

    def _forward_without_grad(self, x: np.ndarray, training: bool | None) -> np.ndarray:
        """A forward that leaves every layer's caches as the last forward with gradients left
        them (``cnnx.engine.grad_mode``)."""
        with attributes_kept(layer for _, layer in self.named_layers()):
            return super().forward(x, training)

    def _input_shape_message(self, shape: tuple[int, ...]) -> str:
        message = f"model expects input of shape {(None, *self.input_shape)} (N, C, H, W), got {shape}"
        return message + layout_hint(self.input_shape, shape)

    def backward(self, grad_output: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Fill every ``Parameter.grad``; return the input's gradient, or None with
        ``input_grad=False`` — training never needs it, and for the first convolution it
        costs as much as the weight gradient (a GEMM plus a col2im over the whole image).

        It differentiates the latest forward with gradients (what every layer cached), whichever
        output ``grad_output`` was computed from: there is one graph, not one per forward."""
        expected = self._last_output_shape
        if expected is None:
            raise RuntimeError(
                "Model.backward called before a forward pass with gradients: run model.forward(x) "
                "first (predict() and forward under no_grad() keep nothing for backward)"
            )
        grad_output = np.asarray(grad_output)
        if grad_output.shape != expected:
            raise ShapeError(
                f"grad_output must have the shape of the last forward's output {expected}, "
                f"got {grad_output.shape}"
            )
        # For this backward only: the same layer may run in another model, with layers before it.
        first = self._run_order[0]  # not the first declared: see run_order
        first.needs_input_grad = input_grad
        try:
            # A loss written in float64 (float64 targets) would otherwise make every gradient float64.
            return super().backward(grad_output.astype(self.dtype, copy=False))
        finally:
            first.needs_input_grad = True

    def predict(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Outputs in eval mode, in batches so that large inputs fit in memory.

        Small batches by default: a convolution's im2col columns grow with the batch (for 64
        channels on 32×32 maps, 2.4 MB a sample), and past a few dozen samples a larger batch
        is no faster, only bigger (1,500 CIFAR-sized images through three such layers: 2.0 s and
        373 MB at 64, 2.3 s after a first pass of 6.5 s and 3.3 GB at 512).

        Runs under ``no_grad``: a ``backward`` after it still uses the last training forward,
        and max pooling skips recording its gradient route."""
        batch_size = check_positive_int("Model.predict", "batch_size", batch_size)
        with no_grad():
            outputs = [self.forward(x[i:i + batch_size], training=False) for i in range(0, len(x), batch_size)]
        return np.concatenate(outputs) if outputs else np.empty((0, *self.output_shape), self.dtype)

    # -- weights ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed and ordered as PyTorch's ``state_dict``."""
        return {key: (owner.data if attr == "data" else owner[attr]).copy()
                for key, (owner, attr) in self._state_slots().items()}

    def _state_slots(self) -> dict[str, tuple[Any, str]]:
        """Where each state_dict entry lives: (owner object, attribute or key). PyTorch's order:
        a layer's parameters, then its buffers, then its children's entries."""
        slots: dict[str, tuple[Any, str]] = {}

        def walk(prefix: str, module: Module) -> None:
            for key, param in module.params.items():
                slots[prefix + key] = (param, "data")
            for key in module.buffers:
                slots[prefix + key] = (module.buffers, key)
            for child_name, child in module.children():
                walk(f"{prefix}{child_name}.", child)

        walk("", self)
        return slots

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> IncompatibleKeys:
        """Copy weights in place (optimizers keep their references); strict about names and shapes.

        A ``torch.nn`` state_dict with the same layer names loads as it is (tensors convert;
        batchnorm's ``num_batches_tracked`` is dropped). Nothing changes unless every entry fits.
        Returns the keys that were missing and unexpected, as PyTorch does (both empty when
        ``strict``, which raises instead); shapes must fit either way."""
        if not isinstance(state, Mapping):
            raise CheckpointError(f"state_dict must be a mapping of name → array, got {type(state).__name__}")
        slots = self._state_slots()
        foreign = {f"{name}.{key}" for name, layer in self.named_layers() for key in layer.foreign_state_keys}
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots and k not in foreign]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(unexpected)}")
            raise CheckpointError("state_dict does not fit this model: " + "; ".join(parts))
        copies = []
        for key, (owner, attr) in slots.items():
            if key not in state:
                continue
            value = state[key]
            # torch's state_dict(keep_vars=True) and named_parameters() hand out Parameters,
            # which refuse NumPy conversion until detached from autograd.
            if callable(getattr(value, "detach", None)):
                value = value.detach()
            try:
                value = np.asarray(value)
            except TypeError as exc:  # a torch.bfloat16 tensor, which NumPy has no dtype for
                raise CheckpointError(f"state_dict entry {key!r} cannot become a NumPy array ({exc}); convert "
                                      f"it first, e.g. {{k: v.float() for k, v in state.items()}}") from None
            target = owner.data if attr == "data" else owner[attr]
            if value.shape != target.shape:
                raise CheckpointError(
                    f"state_dict entry {key!r} has shape {value.shape}, the model expects {target.shape}"
                )
            if value.dtype.kind not in "fiub":
                raise CheckpointError(f"state_dict entry {key!r} has dtype {value.dtype}; expected real numbers")
            copies.append((target, value))
        for target, value in copies:
            np.copyto(target, value, casting="same_kind")
        return IncompatibleKeys(missing, unexpected)

    # -- description -----------------------------------------------------------------------
    def summary(self) -> str:
        """A Keras-style table: layer (type), output shape, parameter count. As in Keras, the
        count includes non-trainable state (batchnorm's running mean and variance), and the
        totals split into trainable and non-trainable."""
        rows: list[tuple[str, str, str]] = []

        def walk(prefix: str, indent: str, module: Module) -> None:
            for name, layer in module.children():
                shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
                rows.append((f"{indent}{prefix}{name} ({type(layer).__name__})", shape,
                             f"{layer.parameter_count() + _buffer_count(layer):,}"))
                if any(True for _ in layer.children()):
                    walk("", indent + "  ", layer)

        walk("", "", self)
        trainable, non_trainable = self.parameter_count(), _buffer_count(self)
        header = ("Layer (type)", "Output Shape", "Param #")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        line = "─" * (sum(widths) + 4)

        def fmt(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"

        def count(label: str, n: int) -> str:
            return f"{label} params: {n:,} ({n * self.dtype.itemsize / 1024:.1f} KB)"

        input_line = "Input: (None, " + ", ".join(str(d) for d in self.input_shape) + ")"
        return "\n".join([
            input_line, line, fmt(header), line, *map(fmt, rows), line,
            count("Total", trainable + non_trainable), count("Trainable", trainable),
            count("Non-trainable", non_trainable),
        ])

    def named_layers(self) -> Iterator[tuple[str, Module]]:
        """Every layer, nested ones included, with its dotted name (for kernels and feature maps)."""
        def walk(prefix: str, module: Module) -> Iterator[tuple[str, Module]]:
            for name, child in module.children():
                yield prefix + name, child
                yield from walk(f"{prefix}{name}.", child)

        return walk("", self)


def layout_hint(expected: Shape, shape: tuple[int, ...]) -> str:
    """How to turn ``shape`` into (N, *expected) when only the layout differs, else ''.

    Keras and image libraries hand out (N, H, W, C) and, for grey images, (N, H, W)."""
    channels, height, width = expected
    if tuple(shape) == tuple(expected):
        return ": one sample without its batch axis; pass x[None]"
    if len(shape) == 4 and tuple(shape[1:]) == (height, width, channels):
        return ": channels last; pass x.transpose(0, 3, 1, 2)"
    if channels == 1 and len(shape) == 3 and tuple(shape[1:]) == (height, width):
        return ": no channel axis; pass x[:, None]"
    return ""


def _buffer_count(module: Module) -> int:
    return sum(buf.size for _, buf in module.named_buffers())


def build_model(
    spec: Mapping[str, Any],
    input_shape: Shape,
    *,
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
    where: str = "model.layers",
) -> Model:
    """Build a model from ``{name: {type, **kwargs}}`` (or ``{"layers": {...}}``) for ``(C, H, W)``."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping of layer name → layer spec, got {type(spec).__name__}")
    layers_spec = spec.get("layers") if _is_wrapped(spec) else spec
    if rng is None:
        rng = np.random.default_rng(seed)
    return Model(layers_from_spec(layers_spec, where), input_shape, rng, where)


def _is_wrapped(spec: Mapping[str, Any]) -> bool:
    inner = spec.get("layers")
    return isinstance(inner, Mapping) and "type" not in inner
