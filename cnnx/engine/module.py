"""The layer contract every built-in and plugin layer follows.

A layer's life, Keras-style: ``__init__`` stores only its config (PyTorch-named kwargs),
``build(input_shape, rng)`` creates the parameters once the per-sample input shape is known
and returns the per-sample output shape, then ``forward``/``backward`` run on batches.
Maths lives in ``cnnx.engine.functional``; the module owns parameters and caches.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np

from cnnx.engine.grad_mode import attributes_kept, is_grad_enabled
from cnnx.engine.in_place import OutputUse
from cnnx.engine.parameter import Parameter
from cnnx.errors import CnnxError, DataError, PluginError, ShapeError, flat_message

Shape = tuple[int, ...]


class Module:
    #: Parameters and buffers are created in float32; ``to(np.float64)`` is for gradient checks.
    dtype = np.dtype(np.float32)
    #: False when nothing upstream needs this layer's input gradient (the model's first layer
    #: during training). Layers may then skip computing it and return None from ``backward``;
    #: layers that ignore the flag stay correct, only slower.
    needs_input_grad = True
    #: state_dict keys that the layer's PyTorch twin writes and this layer does not keep
    #: (batchnorm's ``num_batches_tracked``): ``Model.load_state_dict`` accepts and drops them.
    foreign_state_keys: tuple[str, ...] = ()
    #: The registered name it was built from (``conv2d``), so that a model's ``get_config``
    #: is a spec that rebuilds it; None for a layer constructed by hand.
    type_name: str | None = None
    #: What a later in-place layer must leave intact of this layer's output
    #: (``cnnx.engine.in_place``). A layer that does not say is taken to read the values.
    backward_reads_output = OutputUse.VALUE
    #: True when ``forward`` may return its input's memory (the input itself or a view of it).
    returns_input_memory = False
    #: Whether ``forward`` overwrites its input: layers built with ``inplace=True`` start with
    #: that, and the container they run in turns it off where the input must stay intact.
    overwrites_input = False
    #: The axes of one sample (3 for an image, 1 for a feature vector) when the layer takes
    #: only that many: an input with that many axes in all is then likely one sample without
    #: its batch axis, which PyTorch's Conv2d and Linear accept, and the build error says so.
    sample_rank: int | None = None
    #: True for containers whose ``forward`` takes ``training=None`` to mean that every
    #: sub-layer runs in its own mode, as ``train()``/``eval()`` left it: PyTorch's per-module
    #: ``training`` flags, so ``model.train(); model.layers["bn"].eval()`` freezes one layer.
    #: Every other layer is always handed a bool.
    resolves_mode_per_layer = False

    def __init__(self) -> None:
        self.params: dict[str, Parameter] = {}
        # Non-trainable state that belongs in a state_dict (batchnorm running statistics).
        self.buffers: dict[str, np.ndarray] = {}
        self.input_shape: Shape | None = None
        self.output_shape: Shape | None = None
        self.training = True

    def __getattr__(self, name: str) -> Any:
        # Reached only when ordinary lookup fails: parameters and buffers read as attributes,
        # as in PyTorch (``conv.weight``, ``bn.running_mean``), also for layers that keep them
        # only in ``params`` and ``buffers``, as the built-in ones do.
        if hasattr(type(self), name):
            # A property of the class failed with an AttributeError of its own: raise that one.
            return object.__getattribute__(self, name)
        for held in (vars(self).get("params"), vars(self).get("buffers")):
            if held is not None and name in held:
                return held[name]
        # Sub-layers by name, as PyTorch's modules: model.fc, block.bn. Not while children()
        # itself is looking something up (a plugin's children() reading a missing attribute).
        if "params" in vars(self) and not vars(self).get("_finding_child"):
            vars(self)["_finding_child"] = True
            try:
                child = next((layer for child_name, layer in self.children() if child_name == name), None)
            finally:
                del vars(self)["_finding_child"]
            if child is not None:
                return child
        raise self.missing_attribute(name)

    def missing_attribute(self, name: str) -> AttributeError:
        unbuilt = "params" in vars(self) and not self.built
        return AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}" + (
            " (parameters are created when the layer is built: call it on a batch or put it in a model)"
            if unbuilt and name in ("weight", "bias") else ""))

    # -- construction -------------------------------------------------------------------
    def build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        """Create parameters for a per-sample ``input_shape``; return the output shape."""
        if "params" not in vars(self):
            raise PluginError(
                f"{type(self).__name__}.__init__ must call super().__init__() (Module sets up "
                f"params, buffers and the training flag there)"
            )
        self.input_shape = tuple(int(d) for d in input_shape)
        try:
            built = self._build(self.input_shape, rng)
        except TypeError as exc:
            if _takes_one_argument(self._build):  # an older contract, without the rng
                raise PluginError(f"{type(self).__name__}._build must take (input_shape, rng): initialise "
                                  f"parameters from rng, the model's generator") from exc
            raise
        except CnnxError:
            raise
        except ValueError as exc:
            # The natural way for a layer to say that an option does not fit its input: the
            # container then names the layer's config key, as for cnnx's own ShapeErrors.
            raise ShapeError(flat_message(exc)) from exc
        self.output_shape = _output_shape(type(self).__name__, built)
        self._adopt_attribute_parameters()
        if any(d <= 0 for d in self.output_shape):
            raise ShapeError(
                f"{type(self).__name__} turns input shape {self.input_shape} into "
                f"{self.output_shape}, which has a zero or negative size"
            )
        return self.output_shape

    def _build(self, input_shape: Shape, rng: np.random.Generator) -> Shape:
        return input_shape

    def _adopt_attribute_parameters(self) -> None:
        """PyTorch-style layers assign ``self.weight = Parameter(...)``: such a Parameter joins
        ``params`` under its attribute name, as ``torch.nn.Module`` registers it. A sub-layer
        held in an attribute must be yielded by ``children()``; otherwise optimizers and
        state_dicts would silently never see its parameters, so that is refused."""
        owned = {id(p) for p in self.params.values()}
        for name, value in list(vars(self).items()):
            if isinstance(value, Parameter) and id(value) not in owned:
                self.params[name] = value
        seen = {id(p) for _, p in self.named_parameters()}
        for name, value in vars(self).items():
            if isinstance(value, Module):
                unseen = [n for n, p in value.named_parameters(f"{name}.") if id(p) not in seen]
                if unseen:
                    raise PluginError(
                        f"{type(self).__name__}.{name} holds parameters ({', '.join(unseen)}) that "
                        f"{type(self).__name__} does not list: yield the sub-layer from children() "
                        f"so that optimizers and state_dict see them"
                    )

    def get_config(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild this layer (used by summaries and saved models)."""
        return {}

    @property
    def built(self) -> bool:
        # getattr: a plugin layer that skipped Module.__init__ is named by build, not here.
        return getattr(self, "output_shape", None) is not None

    # -- computation --------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        raise NotImplementedError

    def in_own_dtype(self, array: np.ndarray) -> np.ndarray:
        """``array`` in the layer's dtype (itself when it already is).

        A layer with parameters passes what ``forward`` and ``backward`` are handed through it,
        as ``layer(x)`` and ``Model`` cast inputs and as PyTorch's autograd casts a gradient to
        its output's dtype: a float64 array handed to a standalone float32 layer would otherwise
        make its parameters' gradients float64. Layers without parameters compute in the dtype
        they are handed (as ``torch.relu`` does).
        """
        return array if array.dtype == self.dtype else array.astype(self.dtype)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        """Return the gradient of the input and assign every ``Parameter.grad``."""
        raise NotImplementedError

    # -- structure ----------------------------------------------------------------------
    def children(self) -> Iterator[tuple[str, Module]]:
        """Named sub-modules (blocks such as ``residual`` override this)."""
        return iter(())

    def modules(self) -> Iterator[Module]:
        """This module and every sub-module, depth first (``torch.nn.Module.modules``)."""
        yield self
        for _, child in self.children():
            yield from child.modules()

    def parameters(self) -> Iterator[Parameter]:
        """Every Parameter, in ``named_parameters`` order (what ``torch.nn.Module`` offers)."""
        return (param for _, param in self.named_parameters())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, param in self.params.items():
            yield prefix + name, param
        for child_name, child in self.children():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, buf in self.buffers.items():
            yield prefix + name, buf
        for child_name, child in self.children():
            yield from child.named_buffers(f"{prefix}{child_name}.")

    def parameter_count(self) -> int:
        return sum(p.size for _, p in self.named_parameters())

    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, dtype: Any) -> Module:
        """Cast parameters and buffers (in place of the arrays), e.g. float64 for grad checks."""
        dtype = np.dtype(dtype)
        self.dtype = dtype
        for param in self.params.values():
            param.data = param.data.astype(dtype)
            param.grad = None if param.grad is None else param.grad.astype(dtype)
        for name, buf in self.buffers.items():
            self.buffers[name] = buf.astype(dtype)
        for _, child in self.children():
            child.to(dtype)
        return self

    def __call__(self, x: np.ndarray, training: bool | None = None) -> np.ndarray:
        """``forward`` in the mode ``train()``/``eval()`` set, as in PyTorch, on ``x`` cast to
        float32 (``real_input``).

        An unbuilt layer is built for ``x`` first, as Keras builds a layer on its first call
        and PyTorch's Lazy* modules do: its weights are drawn from a generator seeded 0 of its
        own, as a ``Model`` built without an ``rng`` draws them, so a script gets the same
        weights whatever it built before. Two identical layers so built get the same weights;
        to choose them, build the layer first: ``layer.build(x.shape[1:], np.random.default_rng(seed))``.

        Under ``no_grad`` the call leaves what the layer cached for ``backward`` as it was
        (``cnnx.engine.grad_mode``), as ``torch.no_grad()`` leaves an earlier graph intact.
        """
        x = real_input(x, self.dtype, f"{self!r}")
        if self.output_shape is None:
            try:
                self.build(x.shape[1:], np.random.default_rng(0))
            except ShapeError as exc:
                # The build error speaks of x.shape[1:], the first axis being the batch: say what
                # was passed, and how to pass one sample when that looks like what it is.
                hint = ""
                if x.ndim == self.sample_rank:
                    also = ", or a batch of one-channel (N, H, W) images as x[:, None]" if x.ndim == 3 else ""
                    hint = f", whose first axis is the batch (pass one sample as x[None]{also})"
                raise ShapeError(f"{self!r} cannot be built for input {x.shape}{hint}: {exc}") from exc
        training = own_mode(self) if training is None else training
        if is_grad_enabled():
            return self.forward(x, training)
        with attributes_kept(self.modules()):
            return self.forward(x, training)

    def _refuse_input(self, x: np.ndarray, expected: str) -> Exception:
        """The error for an input ``forward`` cannot take (layers call it off their fast path,
        once ``x.shape[1:]`` differs from the built ``input_shape``)."""
        if self.input_shape is None:
            return RuntimeError(
                f"{self!r} is not built: call it as layer(x), which builds it for the first "
                f"input's shape, or call layer.build(input_shape, rng) first"
            )
        return ShapeError(
            f"{self!r} was built for input {(None, *self.input_shape)} and got {tuple(x.shape)}: {expected}"
        )

    def wrong_gradient(self, grad_output: np.ndarray, expected: Shape) -> ShapeError:
        """The error for a ``backward`` handed a gradient not shaped as the last forward's
        output: NumPy would broadcast many of them (an (N,) gradient against an (N, 1) output
        gives (N, N)) into a wrong result without any error."""
        return ShapeError(f"{self!r}: backward got a gradient of shape {tuple(grad_output.shape)}; the last "
                          f"forward returned {tuple(expected)}, the shape the gradient must have")

    def _backward_before_forward(self) -> RuntimeError:
        """The error for a ``backward`` with nothing cached by a ``forward`` to differentiate."""
        return RuntimeError(f"{self!r}: backward called before forward; run layer(x) or layer.forward(x) first")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def own_mode(layer: Module) -> bool | None:
    """What a layer is handed when its caller names no mode: its own flag, or None for a
    container, which then hands each of its layers that layer's own flag."""
    return None if layer.resolves_mode_per_layer else layer.training


def real_input(x: np.ndarray, dtype: np.dtype, owner: str) -> np.ndarray:
    """``x`` as an array of ``dtype``: inputs of any real dtype (float64, uint8 images, nested
    lists) are cast, as Keras does, so that float32 holds end to end; complex, string and
    object arrays are refused, since casting them would drop or garble values."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise DataError(
            f"{owner} input has dtype {x.dtype}; expected real numbers (float32, or ints and "
            f"floats, which are cast to {dtype})"
        )
    return x.astype(dtype, copy=False)


def _output_shape(layer: str, built: Any) -> Shape:
    """What ``_build`` returned, as a tuple of ints; a slip (a missing ``return``, a bare
    int, a float size) is refused here rather than failing later with no layer named."""
    try:
        items = tuple(built)
    except TypeError:
        items = None
    if items is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in items):
        raise PluginError(f"{layer}._build must return the per-sample output shape (a tuple of positive "
                          f"ints); it returned {built!r}")
    return tuple(int(d) for d in items)


def _takes_one_argument(method) -> bool:
    import inspect

    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
        return False
    return len(parameters) == 1
