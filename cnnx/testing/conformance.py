"""The conformance kit: what every registered layer, loss, optimizer and dataset must satisfy.

Given a registered *name* (built-in or from any installed plugin) and the options a config
would give it, each ``check_*`` function builds the component exactly as a run does (through
the registry, with option names checked) and asserts the contracts README's "Write a plugin"
describes:

- layers: shape inference, float64 finite-difference gradients of the input and every
  parameter (after a training-mode forward; the same parameter gradients when the input
  gradient is not needed, and when an inference call under ``no_grad`` comes between forward
  and backward), float32 in → float32 out, identical numbers for an
  identical seed (and no use of NumPy's global random state), the memory contract (``x`` and
  ``grad_output`` left intact, ``backward_reads_output`` true to what backward reads:
  ``cnnx.testing.memory_contract``), a ``state_dict`` round trip into a layer built from
  another seed, a ``get_config`` round trip, and calls at a second input size and back giving
  what copies built for each size give (unless the layer refuses that size with a ValueError);
- losses: finite-difference gradient, float32 preservation, determinism, ``get_config``;
- optimizers: descent on a quadratic, float32 and in-place updates, determinism, and
  ``state_dict`` save (through ``.npz``, no pickle) / restore giving bit-identical steps;
- datasets: what the trainer relies on (float32 NCHW, int64 labels, consistent shapes and
  class counts) and identical arrays for identical options.

A failure raises ``AssertionError`` naming the component, its distribution and the check.
Plugin authors get these through the ``cnnx_conformance`` pytest fixture (installed with
cnnx) or by calling the functions directly; ``registered_names`` lists what a distribution
registers so that a test can insist every shipped name is checked.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from cnnx import registry
from cnnx.engine.flat_parameters import flatten_parameters
from cnnx.engine.grad_mode import no_grad
from cnnx.engine.module import Module, Shape
from cnnx.engine.parameter import Parameter
from cnnx.errors import PluginError
from cnnx.plugin_layers import check_get_config, check_gradients_assigned
from cnnx.testing import memory_contract
from cnnx.testing.gradcheck import check_float32, check_gradients, check_loss_gradients

Options = Mapping[str, Any] | None
MakeArray = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]


def registered_names(kind: str, distribution: str) -> list[str]:
    """Names of ``kind`` ("layer", "loss", …) registered by ``distribution`` (e.g. "cnnx")."""
    wanted = registry.normalise_distribution(distribution)
    return sorted(
        name for name, claims in registry.Registry(kind).claims().items()
        if any(registry.normalise_distribution(c.distribution) == wanted for c in claims)
    )


# -- layers ----------------------------------------------------------------------------------
def check_layer(
    name: str,
    options: Options = None,
    input_shape: Shape = (3, 6, 6),
    *,
    batch_size: int = 2,
    seed: int = 0,
    make_input: MakeArray | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-8,
) -> None:
    """Run every layer check on the registered layer ``name`` built with ``options``.

    ``input_shape`` is per sample, as in configs: (C, H, W) for image layers, (F,) after a
    flatten. ``make_input(rng, shape)`` draws inputs (default: standard normal), e.g. to keep
    them away from a kink.
    """
    options = dict(options or {})
    input_shape = tuple(input_shape)
    label = _label("layer", name)

    def make() -> Module:
        return _build_layer(name, options)

    def draw(rng: np.random.Generator, sample_shape: Shape = input_shape) -> np.ndarray:
        shape = (batch_size, *sample_shape)
        return np.asarray(make_input(rng, shape) if make_input else rng.standard_normal(shape))

    with _context(label, "construction from its config options"):
        make()
    with _context(label, "shape inference"):
        _check_shapes(make(), input_shape, draw(np.random.default_rng(seed)), seed, label)
    # Backward is checked after training-mode forwards only: that is what training runs, and
    # layers may rightly skip caching what backward needs when evaluating (max-pooling does).
    with _context(label, "float64 finite-difference gradients"):
        check_gradients(
            make(), input_shape, batch_size=batch_size, seed=seed, training=True,
            make_input=make_input, before_forward=_generator_replayer(), rtol=rtol, atol=atol,
        )
    with _context(label, "parameter gradients without the input gradient"):
        _check_without_input_grad(make, input_shape, draw, seed)
    with _context(label, "an inference call under no_grad between forward and backward"):
        memory_contract.check_no_grad_call_leaves_gradients(make, input_shape, draw, seed)
    with _context(label, "float32 preservation"):
        check_float32(make(), input_shape, batch_size=batch_size, seed=seed, training=True)
        layer = make()
        layer.build(input_shape, np.random.default_rng(seed))
        y = layer.forward(draw(np.random.default_rng(seed)).astype(np.float32), training=False)
        assert y.dtype == np.float32, f"forward(training=False) returned {y.dtype}"
    with _context(label, "determinism under a seed"):
        _check_layer_determinism(make, input_shape, draw, seed)
    # After determinism: these compare two builds from one seed.
    with _context(label, "forward leaving its input intact"):
        memory_contract.check_forward_leaves_input(make, input_shape, draw, seed)
    with _context(label, "backward leaving grad_output intact"):
        memory_contract.check_backward_leaves_grad_output(make, input_shape, draw, seed)
    with _context(label, "its backward_reads_output declaration"):
        memory_contract.check_output_use(make, input_shape, draw, seed)
    with _context(label, "state_dict round trip"):
        _check_state_round_trip(make, make, input_shape, draw, seed)
    with _context(label, "get_config round trip"):
        built = make()
        # The same check a run makes; its message names the options get_config() leaves out.
        check_get_config(built, options, label)
        config = built.get_config()
        _check_state_round_trip(make, lambda: _build_layer(name, config), input_shape, draw, seed)
    # After the round trips: the fresh copies here get the layer's state through params and buffers.
    with _context(label, "calls at another input size"):
        _check_other_input_size(make, input_shape, draw, seed)


def _build_layer(name: str, options: Mapping[str, Any]) -> Module:
    # The same route as a model spec in a config, so option checking and blocks behave alike.
    from cnnx.engine.spec import layers_from_spec

    return layers_from_spec({"layer": {"type": name, **options}}, "conformance")["layer"]


def _check_shapes(layer: Module, input_shape: Shape, x: np.ndarray, seed: int, label: str) -> None:
    output_shape = layer.build(input_shape, np.random.default_rng(seed))
    assert isinstance(output_shape, tuple) and all(
        isinstance(d, int) and d > 0 for d in output_shape
    ), f"build({input_shape}) returned {output_shape!r}, expected a tuple of positive ints"
    assert layer.output_shape == output_shape and layer.input_shape == input_shape
    x = x.astype(np.float32)
    for training in (False, True):
        y = layer.forward(x.copy(), training=training)
        assert y.shape == (len(x), *output_shape), (
            f"build() inferred output shape {output_shape} but forward(training={training}) "
            f"returned {y.shape[1:]} per sample"
        )
    grad = layer.backward(np.ones_like(y))
    assert grad.shape == x.shape, f"backward returned shape {grad.shape} for input {x.shape}"
    check_gradients_assigned(layer, label)  # the run's own check, with its message
    for pname, p in layer.named_parameters():
        assert p.grad.shape == p.data.shape, (
            f"gradient of {pname} has shape {p.grad.shape}, parameter {p.data.shape}"
        )


def _check_without_input_grad(
    make: Callable[[], Module], input_shape: Shape, draw: Callable[..., np.ndarray], seed: int
) -> None:
    """As a model's first layer in training (``needs_input_grad = False``) a layer may skip
    its input gradient, but must fill the same parameter gradients."""
    grads = []
    for needed in (True, False):
        layer = make()
        layer.build(input_shape, np.random.default_rng(seed))
        layer.needs_input_grad = needed
        y = layer.forward(draw(np.random.default_rng(seed)).astype(np.float32), training=True)
        layer.backward(np.random.default_rng(seed + 3).standard_normal(y.shape).astype(np.float32))
        grads.append({n: p.grad.copy() for n, p in layer.named_parameters()})
    assert sorted(grads[0]) == sorted(grads[1])
    for name in grads[0]:
        np.testing.assert_allclose(
            grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6,
            err_msg=f"gradient of {name} changes when the input gradient is not needed",
        )


def _check_layer_determinism(
    make: Callable[[], Module], input_shape: Shape, draw: Callable[..., np.ndarray], seed: int
) -> None:
    global_state = np.random.get_state()
    results = []
    for _ in range(2):
        layer = make()
        layer.build(input_shape, np.random.default_rng(seed))
        x = draw(np.random.default_rng(seed)).astype(np.float32)
        y = layer.forward(x.copy(), training=True).copy()
        grad_x = layer.backward(np.ones_like(y)).copy()
        state = _module_state(layer)
        grads = {n: p.grad.copy() for n, p in layer.named_parameters()}
        eval_y = layer.forward(x.copy(), training=False).copy()
        results.append((state, y, grad_x, grads, eval_y))
    first, second = results
    _assert_same_arrays(first[0], second[0], "initial parameters and buffers")
    for what, a, b in (("training output", first[1], second[1]),
                       ("input gradient", first[2], second[2]),
                       ("eval output", first[4], second[4])):
        assert np.array_equal(a, b), f"the {what} differs between two builds with seed {seed}"
    _assert_same_arrays(first[3], second[3], "parameter gradients")
    # Another component's draws must not shift this one's numbers (and vice versa).
    assert _same_global_state(global_state, np.random.get_state()), (
        "the layer used NumPy's global random state (np.random.*); draw from the generator "
        "passed to build() instead"
    )


def _check_state_round_trip(
    make_source: Callable[[], Module],
    make_target: Callable[[], Module],
    input_shape: Shape,
    draw: Callable[..., np.ndarray],
    seed: int,
) -> None:
    """Train-mode passes move buffers (running statistics); the target, built from another
    seed, must reproduce the source's eval output once it has the source's state."""
    rng = np.random.default_rng(seed + 7)
    source = make_source()
    source.build(input_shape, np.random.default_rng(seed))
    for _ in range(2):
        source.forward(draw(rng).astype(np.float32), training=True)
    for _, p in source.named_parameters():
        p.data += np.asarray(0.01 * rng.standard_normal(p.data.shape), dtype=p.data.dtype)
    state = _module_state(source)
    for key, value in state.items():
        assert value.dtype == np.float32, f"state entry {key!r} is {value.dtype}, not float32"

    target = make_target()
    target.build(input_shape, np.random.default_rng(seed + 1))
    target_state = _module_state(target)
    assert sorted(target_state) == sorted(state), (
        f"state names differ between two builds: {sorted(state)} vs {sorted(target_state)}"
    )
    for key, value in state.items():
        assert target_state[key].shape == value.shape, (
            f"state entry {key!r} has shape {target_state[key].shape} in one build and "
            f"{value.shape} in another"
        )
    _load_module_state(target, state)
    x = draw(rng).astype(np.float32)
    expected = source.forward(x.copy(), training=False)
    got = target.forward(x.copy(), training=False)
    assert np.array_equal(expected, got), (
        "a layer loaded with another layer's parameters and buffers gives different eval "
        "outputs: some state lives outside `params`/`buffers`, so checkpoints lose it"
    )


def _check_other_input_size(
    make: Callable[[], Module], input_shape: Shape, draw: Callable[..., np.ndarray], seed: int
) -> None:
    """Called at another spatial size and back, a layer computes what a copy built for that size
    and fed nothing else computes: arrays it reuses between calls (``Workspace`` buffers whose
    ``fill`` some positions keep) must not carry values over from the other size.

    Going there and back matters: 7×7 and 8×8 inputs give the same 4×4 output at stride 2, and
    only the 7×7 call, whose padding the 8×8 one wrote, reads stale values. A layer that takes
    only the size it was built for refuses the other one with a ``ValueError`` (``ShapeError``,
    as ``Module._refuse_input`` raises, is one; so is NumPy's for a weight of the built size)
    and is not checked further.
    """
    other = _other_input_size(make, input_shape, seed)
    if other is None:
        return
    layer = memory_contract.built(make, input_shape, seed)
    x = draw(np.random.default_rng(seed), input_shape).astype(np.float32)
    _step(layer, x, layer.forward(x.copy(), training=True), seed)
    for shape, previous in ((other, input_shape), (input_shape, other)):
        x = draw(np.random.default_rng(seed + 5), shape).astype(np.float32)
        # Batch statistics and dropout generators move with every training call: the copy
        # starts from where the layer is.
        state, generators = _module_state(layer), [g.bit_generator.state for g in _generators(layer)]
        try:
            y = layer.forward(x.copy(), training=True)
        except ValueError:
            if shape == other:  # it takes only the size it was built for
                return
            raise
        got = _step(layer, x, y, seed)
        fresh = memory_contract.built(make, shape, seed)
        shapes = {key: value.shape for key, value in state.items()}
        fresh_shapes = {key: value.shape for key, value in _module_state(fresh).items()}
        # Raised rather than asserted: pytest rewrites cnnx's asserts (cnnx ships a pytest plugin)
        # and would append both operands, whole arrays here, to the one-sentence message.
        if fresh_shapes != shapes:
            raise AssertionError(
                f"it takes input {shape} though a copy built for that size has parameters and buffers "
                f"{fresh_shapes}, not {shapes}: refuse sizes other than the built one with a ValueError"
            )
        _load_module_state(fresh, state)
        for generator, saved in zip(_generators(fresh), generators):
            generator.bit_generator.state = saved
        expected = _step(fresh, x, fresh.forward(x.copy(), training=True), seed)
        for what, value in got.items():
            reference = expected[what]
            if value.shape != reference.shape:
                raise AssertionError(
                    f"called at input {shape} after {previous}, its {what} has shape {value.shape}, and "
                    f"{reference.shape} from a copy built for that size"
                )
            if not np.allclose(value, reference, rtol=1e-5, atol=1e-6):
                raise AssertionError(
                    f"called at input {shape} after {previous}, its {what} differs by up to "
                    f"{np.max(np.abs(value - reference)):.3g} from that of a copy built for that size and "
                    f"called at that size only, so an array it reuses between calls keeps values from the "
                    f"other size (a Workspace buffer whose fill some positions must keep needs geometry=, "
                    f"e.g. the input's (height, width))"
                )


def _other_input_size(make: Callable[[], Module], input_shape: Shape, seed: int) -> Shape | None:
    """A per-sample shape with other spatial sizes (the axes after the channels) that a fresh copy
    builds for: one with the same output shape when there is one, since buffers of the same shape
    are where another geometry finds stale values. None for a flat input, or when no nearby size
    builds."""
    spatial = len(input_shape) - 1
    if spatial < 1:
        return None
    target = make().build(input_shape, np.random.default_rng(seed))
    # At any stride of 2 or more a shift of 1 keeps the output size (7×7 and 8×8 at stride 2); a
    # stride-1 layer keeps none, and the first size it builds for is taken. Uniform shifts first.
    uniform = [(d,) * spatial for d in (1, -1, 2, -2)]
    shifts = uniform + [s for s in itertools.product((0, 1, -1, 2, -2), repeat=spatial)
                        if any(s) and s not in uniform]
    fallback = None
    for shift in shifts:
        shape = (input_shape[0], *(size + d for size, d in zip(input_shape[1:], shift)))
        if min(shape) < 1:
            continue
        try:
            output_shape = make().build(shape, np.random.default_rng(seed))
        except ValueError:  # too small for a window, or another size the layer does not take
            continue
        if output_shape == target:
            return shape
        fallback = fallback or shape
    return fallback


def _step(layer: Module, x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Given ``y``, the layer's training output for ``x``, what the rest of a training step and a
    validation batch read from it: the input's and every parameter's gradient, and the
    evaluation output under ``no_grad``."""
    results = {"training output": y.copy()}
    for name, gradient in memory_contract.gradients(layer, memory_contract.output_gradient(y.shape, seed)).items():
        results["input gradient" if name == "input" else f"gradient of {name}"] = np.array(gradient, copy=True)
    with no_grad():
        results["evaluation output under no_grad"] = np.array(layer(x.copy(), training=False), copy=True)
    return results


def _module_state(module: Module) -> dict[str, np.ndarray]:
    """What ``Model.state_dict`` saves for this layer: parameters and buffers, by name."""
    state = {name: p.data.copy() for name, p in module.named_parameters()}
    for name, buf in module.named_buffers():
        assert name not in state, f"the name {name!r} is both a parameter and a buffer"
        state[name] = np.array(buf, copy=True)
    return state


def _load_module_state(module: Module, state: Mapping[str, np.ndarray]) -> None:
    # In place, as Model.load_state_dict does: layers may hold references to these arrays.
    for name, p in module.named_parameters():
        np.copyto(p.data, state[name])
    for name, buf in module.named_buffers():
        np.copyto(buf, state[name])


def _generator_replayer() -> Callable[[Module], None]:
    """A ``before_forward`` hook that rewinds every generator a layer owns (dropout masks…)
    to where it was at the first forward, so that finite differences compare like with like."""
    saved: dict[int, tuple[np.random.Generator, Any]] = {}

    def replay(module: Module) -> None:
        generators = list(_generators(module))
        if not saved:
            saved.update((id(g), (g, g.bit_generator.state)) for g in generators)
            return
        for g in generators:
            if id(g) in saved:
                g.bit_generator.state = saved[id(g)][1]

    return replay


def _generators(module: Module) -> Iterator[np.random.Generator]:
    for value in vars(module).values():
        if isinstance(value, np.random.Generator):
            yield value
    for _, child in module.children():
        yield from _generators(child)


# -- losses ----------------------------------------------------------------------------------
def check_loss(
    name: str,
    options: Options = None,
    *,
    outputs_shape: tuple[int, ...] = (6, 4),
    make_outputs: MakeArray | None = None,
    make_targets: MakeArray | None = None,
    seed: int = 0,
) -> None:
    """Run every loss check on the registered loss ``name``.

    By default outputs are standard-normal logits ``outputs_shape`` = (N, K) and targets
    integer labels in [0, K); pass ``make_outputs``/``make_targets(rng, outputs_shape)`` for
    losses that take something else (probabilities, regression targets).
    """
    options = dict(options or {})
    label = _label("loss", name)

    def draw() -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        outputs = make_outputs(rng, outputs_shape) if make_outputs else rng.standard_normal(outputs_shape)
        targets = (make_targets(rng, outputs_shape) if make_targets
                   else rng.integers(0, outputs_shape[-1], outputs_shape[0]))
        return np.asarray(outputs, dtype=np.float64), np.asarray(targets)

    with _context(label, "construction from its config options"):
        loss = registry.losses.create(name, options, "conformance")
    outputs, targets = draw()
    with _context(label, "float64 finite-difference gradient"):
        check_loss_gradients(loss, outputs, targets, seed=seed)
    with _context(label, "float32 preservation"):
        value, grad = loss(outputs.astype(np.float32), targets)
        assert isinstance(value, float), f"returned a {type(value).__name__} value, not a float"
        assert grad.dtype == np.float32, f"float32 outputs gave a {grad.dtype} gradient"
    with _context(label, "determinism"):
        first = loss(outputs.copy(), targets.copy())
        again = registry.losses.create(name, options, "conformance")(outputs.copy(), targets.copy())
        assert first[0] == again[0] and np.array_equal(first[1], again[1]), (
            "two evaluations on the same outputs and targets differ"
        )
    with _context(label, "get_config round trip"):
        config = loss.get_config() if hasattr(loss, "get_config") else {}
        rebuilt = registry.losses.create(name, config, "conformance")
        value, grad = rebuilt(outputs.copy(), targets.copy())
        assert value == first[0] and np.array_equal(grad, first[1]), (
            f"a loss rebuilt from get_config() = {config!r} computes different numbers"
        )


# -- optimizers ------------------------------------------------------------------------------
def check_optimizer(name: str, options: Options = None, *, seed: int = 0, steps: int = 20) -> None:
    """Run every optimizer check on the registered optimizer ``name`` built with ``options``."""
    options = dict(options or {})
    label = _label("optimizer", name)

    def make(params: dict[str, Parameter]):
        return registry.optimizers.create(name, options, "conformance",
                                          named_parameters=list(params.items()))

    with _context(label, "construction from its config options"):
        opt = make(_parameters(seed))
        assert isinstance(getattr(opt, "lr", None), float), (
            "needs a float attribute `lr` (schedulers set it between steps)"
        )
    with _context(label, "descent on a quadratic"):
        params = _parameters(seed)
        opt = make(params)
        start = _quadratic(params)
        for _ in range(steps):
            _quadratic_grads(params)
            opt.step()
        end = _quadratic(params)
        assert end < start, (
            f"{steps} steps on 0.5·‖p - 1‖² went from {start:.6g} to {end:.6g}; an optimizer "
            f"must move against the gradient"
        )
    with _context(label, "float32 and in-place updates"):
        params = _parameters(seed)
        arrays = {n: p.data for n, p in params.items()}
        opt = make(params)
        for _ in range(3):
            _quadratic_grads(params)
            opt.step()
        for n, p in params.items():
            assert p.data is arrays[n], (
                f"step() replaced {n}.data instead of updating it in place; layers and the "
                f"model keep references to it"
            )
            assert p.data.dtype == np.float32, f"step() turned {n} into {p.data.dtype}"
        for key, value in _state_dict(opt).items():
            if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
                assert value.dtype == np.float32, f"state entry {key!r} is {value.dtype}, not float32"
    with _context(label, "determinism"):
        runs = []
        for _ in range(2):
            params = _parameters(seed)
            opt = make(params)
            for _ in range(5):
                _quadratic_grads(params)
                opt.step()
            runs.append({n: p.data.copy() for n, p in params.items()})
        _assert_same_arrays(runs[0], runs[1], "parameters after identical steps")
    with _context(label, "optimizer state save/restore"):
        _check_optimizer_resume(make, seed)
    # A model's parameters share one buffer, which an ``elementwise`` optimizer updates whole:
    # state it rebinds there instead of updating in place never reaches its state_dict.
    with _context(label, "optimizer state save/restore with the parameters in one buffer, as a model's"):
        _check_optimizer_resume(make, seed, shared=True)


def _check_optimizer_resume(make: Callable[[dict[str, Parameter]], Any], seed: int, shared: bool = False) -> None:
    """Stop after some steps, save through ``.npz`` (no pickle), restore into a fresh
    optimizer over copies of the parameters: both must take bit-identical further steps."""
    params = _parameters(seed)
    if shared:
        flatten_parameters(list(params.values()))
    opt = make(params)
    for _ in range(3):
        _quadratic_grads(params)
        opt.step()
    buffer = io.BytesIO()
    np.savez(buffer, **_state_dict(opt))
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        saved = {key: archive[key] for key in archive.files}

    copies = {n: Parameter(p.data.copy()) for n, p in params.items()}
    if shared:
        flatten_parameters(list(copies.values()))
    resumed = make(copies)
    resumed.load_state_dict(saved)
    for _ in range(3):
        for group in (params, copies):
            _quadratic_grads(group)
        opt.step()
        resumed.step()
    _assert_same_arrays(
        {n: p.data for n, p in params.items()}, {n: p.data for n, p in copies.items()},
        "parameters after resuming from a saved state_dict",
    )


def _state_dict(opt: Any) -> dict[str, Any]:
    assert callable(getattr(opt, "state_dict", None)) and callable(
        getattr(opt, "load_state_dict", None)
    ), "needs state_dict() and load_state_dict() so that runs can be checkpointed"
    state = opt.state_dict()
    for key, value in state.items():
        array = np.asarray(value)
        assert array.dtype != object, f"state entry {key!r} is not numeric ({type(value).__name__})"
    return state


def _parameters(seed: int) -> dict[str, Parameter]:
    rng = np.random.default_rng(seed)
    return {
        "fc.weight": Parameter(rng.standard_normal((4, 3)).astype(np.float32)),
        "fc.bias": Parameter(rng.standard_normal(4).astype(np.float32)),
    }


def _quadratic(params: Mapping[str, Parameter]) -> float:
    return sum(0.5 * float(np.sum((p.data.astype(np.float64) - 1.0) ** 2)) for p in params.values())


def _quadratic_grads(params: Mapping[str, Parameter]) -> None:
    for p in params.values():
        p.grad = p.data - np.float32(1.0)


# -- datasets --------------------------------------------------------------------------------
def check_dataset(name: str, options: Options = None) -> None:
    """Load the registered dataset ``name`` twice with ``options`` and check what the
    trainer relies on, and that identical options give identical arrays."""
    from cnnx.data.splits import check_loaded

    options = dict(options or {})
    label = _label("dataset", name)
    with _context(label, "loading"):
        data = registry.datasets.create(name, options, "conformance")
    with _context(label, "arrays, shapes and classes"):
        # The same check a run makes before building its model.
        check_loaded(data, label)
        for split in ("train", "val", "test"):
            x, y = getattr(data, split)
            if len(y):
                assert np.isfinite(x).all(), f"{split} images hold NaN or infinite values"
        assert data.num_classes >= 2, f"{data.num_classes} classes; a classifier needs two"
    with _context(label, "determinism"):
        again = registry.datasets.create(name, options, "conformance")
        for split in ("train", "val", "test"):
            for part, a, b in zip(("images", "labels"), getattr(data, split), getattr(again, split)):
                assert np.array_equal(a, b), f"{split} {part} differ between two identical loads"


# -- shared ----------------------------------------------------------------------------------
def _label(kind: str, name: str) -> str:
    # Unknown or conflicting names: the construction check reports the real problem.
    return registry.Registry(kind).label(name)


@contextmanager
def _context(label: str, check: str) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"cnnx conformance: {label} fails {check}: {exc}") from exc
    except PluginError as exc:  # a check shared with runs (plugin_layers), which names the layer first
        raise AssertionError(f"cnnx conformance: {label} fails {check}: {str(exc).removeprefix(f'{label}: ')}") from exc
    except Exception as exc:  # noqa: BLE001 — a crash inside a check is a failed check too
        raise AssertionError(
            f"cnnx conformance: {label} fails {check}: {type(exc).__name__}: {exc}"
        ) from exc


def _assert_same_arrays(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: names differ ({sorted(a)} vs {sorted(b)})"
    for key in a:
        assert np.array_equal(a[key], b[key]), f"{what}: {key!r} differs"


def _same_global_state(before: tuple, after: tuple) -> bool:
    return before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
