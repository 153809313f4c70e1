"""Optimizers against their published update equations, written out plainly here, and
against torch.optim when torch happens to be installed (cnnx never depends on it)."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from cnnx.engine.flat_parameters import flatten_parameters, shared_buffer
from cnnx.engine.model import build_model
from cnnx.engine.optim.adam import Adam, AdamW
from cnnx.engine.optim.optimizer import Optimizer
from cnnx.engine.optim.rmsprop import RMSprop
from cnnx.engine.optim.sgd import SGD
from cnnx.engine.parameter import Parameter
from cnnx.errors import CheckpointError, ConfigError

SHAPES = {"conv1.weight": (3, 2, 3, 3), "conv1.bias": (3,), "fc.weight": (4, 5)}
STEPS = 12


# -- reference implementations: the equations as printed, float64, allocation everywhere --
def ref_sgd(p, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
    buf = None
    for t, grad in enumerate(grads):
        g = grad(p) + weight_decay * p
        if momentum:
            buf = g.copy() if t == 0 else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, grad in enumerate(grads, start=1):
        g = grad(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        # PyTorch adds eps to sqrt(v_hat) (not to v_hat), the form checked here.
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_adamw(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    return ref_adam(p, grads, lr, betas, eps, weight_decay, decoupled=True)


def ref_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False):
    v = np.zeros_like(p)
    mean_g = np.zeros_like(p)
    buf = np.zeros_like(p)
    for grad in grads:
        g = grad(p) + weight_decay * p
        v = alpha * v + (1 - alpha) * g**2
        if centered:
            mean_g = alpha * mean_g + (1 - alpha) * g
            avg = np.sqrt(v - mean_g**2) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


CASES = [
    (SGD, ref_sgd, {"lr": 0.1}),
    (SGD, ref_sgd, {"lr": 0.05, "momentum": 0.9}),
    (SGD, ref_sgd, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (SGD, ref_sgd, {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1}),
    (Adam, ref_adam, {"lr": 0.01}),
    (Adam, ref_adam, {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05}),
    (AdamW, ref_adamw, {"lr": 0.01}),
    (AdamW, ref_adamw, {"lr": 0.02, "betas": (0.5, 0.9), "weight_decay": 0.3}),
    (RMSprop, ref_rmsprop, {"lr": 0.01}),
    (RMSprop, ref_rmsprop, {"lr": 0.01, "alpha": 0.9, "momentum": 0.8, "weight_decay": 0.05}),
    (RMSprop, ref_rmsprop, {"lr": 0.01, "centered": True, "momentum": 0.5, "eps": 1e-4}),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for cls, _, kw in CASES]


def make_problem(seed: int = 0, dtype=np.float64):
    """Parameters and a gradient function of a noisy quadratic (state-dependent gradients)."""
    rng = np.random.default_rng(seed)
    start = {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
    curvature = {n: rng.uniform(0.5, 2.0, s).astype(dtype) for n, s in SHAPES.items()}
    noise = [
        {n: (0.1 * rng.standard_normal(s)).astype(dtype) for n, s in SHAPES.items()}
        for _ in range(STEPS)
    ]

    def grad_fn(name, t):
        return lambda p: curvature[name] * p + noise[t][name]

    return start, grad_fn


def run_cnnx(cls, kwargs, start, grad_fn, steps=STEPS, dtype=np.float64, one_buffer=False):
    params = {n: Parameter(a.astype(dtype).copy()) for n, a in start.items()}
    if one_buffer:
        flatten_parameters(list(params.values()))
    opt = cls(params.items(), **kwargs)
    for t in range(steps):
        for n, p in params.items():
            p.grad = grad_fn(n, t)(p.data).astype(dtype)
        opt.step()
    return params, opt


@pytest.mark.parametrize(("cls", "ref", "kwargs"), CASES, ids=IDS)
def test_trajectory_matches_published_equations(cls, ref, kwargs):
    start, grad_fn = make_problem()
    params, _ = run_cnnx(cls, kwargs, start, grad_fn)
    for name, p in params.items():
        expected = ref(start[name].copy(), [grad_fn(name, t) for t in range(STEPS)], **kwargs)
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-12, err_msg=name)


TORCH_NAMES = {SGD: "SGD", Adam: "Adam", AdamW: "AdamW", RMSprop: "RMSprop"}


@pytest.mark.parametrize(("cls", "ref", "kwargs"), CASES, ids=IDS)
def test_trajectory_matches_torch(cls, ref, kwargs):
    torch = pytest.importorskip("torch")
    start, grad_fn = make_problem(seed=1)
    params, _ = run_cnnx(cls, kwargs, start, grad_fn)
    tensors = {n: torch.tensor(a.copy(), requires_grad=True) for n, a in start.items()}
    torch_kwargs = {**kwargs}
    if "betas" in torch_kwargs:
        torch_kwargs["betas"] = tuple(torch_kwargs["betas"])
    opt = getattr(torch.optim, TORCH_NAMES[cls])(
        list(tensors.values()), foreach=False, **torch_kwargs
    )
    for t in range(STEPS):
        for n, tensor in tensors.items():
            tensor.grad = torch.from_numpy(grad_fn(n, t)(tensor.detach().numpy()))
        opt.step()
    for n, tensor in tensors.items():
        np.testing.assert_allclose(
            params[n].data, tensor.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=n
        )


@pytest.mark.parametrize(("cls", "ref", "kwargs"), CASES, ids=IDS)
def test_float32_stays_float32_and_updates_in_place(cls, ref, kwargs):
    start, grad_fn = make_problem(dtype=np.float32)
    params = {n: Parameter(a.copy()) for n, a in start.items()}
    arrays = {n: p.data for n, p in params.items()}
    opt = cls(params.items(), **kwargs)
    for t in range(3):
        grads = {}
        for n, p in params.items():
            p.grad = grad_fn(n, t)(p.data).astype(np.float32)
            grads[n] = p.grad.copy()
        opt.step()
        for n, p in params.items():
            assert p.data is arrays[n]
            assert p.data.dtype == np.float32
            np.testing.assert_array_equal(p.grad, grads[n])  # the gradient is not consumed
    assert all(p.data.dtype == np.float32 for p in params.values())
    assert all(v.dtype == np.float32 for k, v in opt.state_dict().items() if k.startswith("state."))
    # float32 arithmetic still follows the float64 trajectory closely.
    for name, p in params.items():
        expected = ref(
            start[name].astype(np.float64), [grad_fn(name, t) for t in range(3)], **kwargs
        )
        np.testing.assert_allclose(p.data, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("cls", "ref", "kwargs"), CASES, ids=IDS)
def test_step_does_not_allocate_parameter_sized_arrays(cls, ref, kwargs):
    n = 250_000  # 1 MB of float32: any temporary of that size shows up
    p = Parameter(np.ones(n, np.float32))
    p.grad = np.full(n, 0.5, np.float32)
    opt = cls([("w", p)], **kwargs)
    opt.step()  # the first step creates state and scratch buffers
    tracemalloc.start()
    try:
        for _ in range(5):
            opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"step allocated {peak} bytes"


@pytest.mark.parametrize(("cls", "ref", "kwargs"), CASES, ids=IDS)
def test_state_dict_round_trip_through_npz_continues_identically(cls, ref, kwargs, tmp_path):
    start, grad_fn = make_problem(dtype=np.float32)
    params, opt = run_cnnx(cls, kwargs, start, grad_fn, steps=5, dtype=np.float32)
    state = opt.state_dict()
    assert isinstance(state["step"], int) and state["step"] == 5
    assert isinstance(state["lr"], float)
    json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()})
    np.savez(tmp_path / "opt.npz", **state)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}

    clones = {n: Parameter(p.data.copy()) for n, p in params.items()}
    resumed = cls(clones.items(), **kwargs)
    resumed.load_state_dict(loaded)
    assert resumed.step_count == 5
    for t in range(5, STEPS):
        for group in (params, clones):
            for n, p in group.items():
                p.grad = grad_fn(n, t)(p.data).astype(np.float32)
        opt.step()
        resumed.step()
    for n in params:
        np.testing.assert_array_equal(clones[n].data, params[n].data)


def test_state_dict_is_a_copy_and_keyed_by_name():
    start, grad_fn = make_problem()
    params, opt = run_cnnx(SGD, {"lr": 0.1, "momentum": 0.9}, start, grad_fn, steps=2)
    state = opt.state_dict()
    assert set(state) == {"step", "lr"} | {f"state.{n}.momentum_buffer" for n in SHAPES}
    before = state["state.fc.weight.momentum_buffer"].copy()
    opt.step()
    np.testing.assert_array_equal(state["state.fc.weight.momentum_buffer"], before)


def test_fresh_optimizer_state_dict_loads_into_fresh_optimizer():
    start, _ = make_problem()
    a = Adam({n: Parameter(v.copy()) for n, v in start.items()})
    b = Adam({n: Parameter(v.copy()) for n, v in start.items()})
    b.load_state_dict(a.state_dict())
    assert b.step_count == 0


def test_load_restores_lr():
    p = Parameter(np.zeros(3))
    opt = SGD([("w", p)], lr=0.1)
    state = opt.state_dict()
    state["lr"] = 0.025
    opt.load_state_dict(state)
    assert opt.lr == 0.025


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("state.fc.weight.exp_avg"), "missing key 'state.fc.weight.exp_avg'"),
        (lambda s: s.pop("step"), "missing key 'step'"),
        (
            lambda s: s.update({"state.fc2.weight.exp_avg": np.zeros(3)}),
            "unexpected key 'state.fc2.weight.exp_avg'",
        ),
        (
            lambda s: s.update({"state.fc.weight.exp_avg": np.zeros((5, 4))}),
            "'state.fc.weight.exp_avg' has shape (5, 4)",
        ),
        (lambda s: s.update({"step": 1.5}), "'step'"),
        (lambda s: s.update({"step": -1}), "'step'"),
        (lambda s: s.update({"lr": float("nan")}), "'lr'"),
        (lambda s: s.update({"lr": "fast"}), "'lr'"),
        (lambda s: s.update({"state.fc.weight.exp_avg": np.array([["a"] * 5] * 4)}), "dtype"),
    ],
)
def test_load_state_dict_is_strict(mutate, message):
    start, grad_fn = make_problem()
    params, opt = run_cnnx(Adam, {"lr": 0.01}, start, grad_fn, steps=2)
    state = opt.state_dict()
    before = opt.state_dict()
    mutate(state)
    with pytest.raises(CheckpointError, match=None) as info:
        opt.load_state_dict(state)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    after = opt.state_dict()  # a rejected checkpoint changes nothing
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


@pytest.mark.parametrize("misfit", [np.zeros(3), np.array(["a"] * 5)], ids=["shape", "dtype"])
def test_a_state_dict_whose_last_slot_misfits_changes_none_of_the_slots_before_it(misfit):
    """The strict test above loads the optimizer's own values, so a load that copied each slot
    as it was checked, before the misfit was found, looked as if it changed nothing; here every
    slot before the misfit holds other values. (training_state.restore puts a trainer back
    itself; a caller's own loop relies on the docstring's "nothing is changed".)"""
    start, grad_fn = make_problem()
    params, opt = run_cnnx(Adam, {"lr": 0.01}, start, grad_fn, steps=2)
    before = opt.state_dict()
    state = {k: v + 1.0 if isinstance(v, np.ndarray) else v for k, v in before.items()}
    last = [k for k, v in state.items() if isinstance(v, np.ndarray)][-1]
    state[last] = misfit
    with pytest.raises(CheckpointError, match=last):
        opt.load_state_dict(state)
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_checkpoint_from_another_momentum_setting_is_rejected():
    p = Parameter(np.zeros(3))
    plain = SGD([("w", p)], lr=0.1)
    with pytest.raises(CheckpointError, match="missing key 'state.w.momentum_buffer'"):
        SGD([("w", p)], lr=0.1, momentum=0.9).load_state_dict(plain.state_dict())


@pytest.mark.parametrize(
    ("cls", "kwargs", "fragment"),
    [
        (SGD, {"lr": 0}, "lr=0.0 is out of range; accepted: lr > 0"),
        (SGD, {"lr": -0.1}, "lr=-0.1"),
        (SGD, {"lr": "0.1"}, "lr='0.1' is not a number"),
        (SGD, {"lr": float("inf")}, "lr=inf is not finite"),
        (SGD, {"lr": True}, "lr=True is not a number"),
        (SGD, {"momentum": 1.0}, "momentum=1.0 is out of range; accepted: 0 <= momentum < 1"),
        (SGD, {"momentum": -0.1}, "momentum=-0.1"),
        (
            SGD,
            {"weight_decay": -1e-4},
            "weight_decay=-0.0001 is out of range; accepted: weight_decay >= 0",
        ),
        (SGD, {"dampening": 1.5}, "dampening=1.5"),
        (SGD, {"nesterov": True}, "nesterov=true needs momentum > 0"),
        (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening = 0"),
        (SGD, {"nesterov": "yes", "momentum": 0.9}, "nesterov='yes' is not a boolean"),
        (Adam, {"betas": (0.9, 1.0)}, "betas[1]=1.0 is out of range; accepted: 0 <= betas[1] < 1"),
        (Adam, {"betas": [-0.1, 0.9]}, "betas[0]=-0.1"),
        (Adam, {"betas": [0.9]}, "betas=[0.9] has 1 values"),
        (Adam, {"betas": 0.9}, "betas=0.9 is not a pair"),
        (Adam, {"eps": 0.0}, "eps=0.0 is out of range; accepted: eps > 0"),
        (AdamW, {"weight_decay": -0.01}, "AdamW: weight_decay=-0.01"),
        (RMSprop, {"alpha": 1.0}, "alpha=1.0 is out of range; accepted: 0 <= alpha < 1"),
        (RMSprop, {"momentum": 1.2}, "momentum=1.2"),
        (RMSprop, {"eps": -1.0}, "eps=-1.0"),
        (RMSprop, {"centered": 1}, "centered=1 is not a boolean"),
    ],
)
def test_bad_hyper_parameters_raise_config_error(cls, kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        cls([("w", Parameter(np.zeros(2)))], **kwargs)
    assert fragment in str(info.value)
    assert str(info.value).startswith(cls.__name__)


def test_bad_parameter_lists_raise_config_error():
    with pytest.raises(ConfigError, match="empty parameter list"):
        SGD([])
    with pytest.raises(ConfigError, match="appears twice"):
        SGD([("w", Parameter(np.zeros(1))), ("w", Parameter(np.zeros(1)))])
    with pytest.raises(ConfigError, match="not a Parameter"):
        SGD([("w", np.zeros(1))])
    with pytest.raises(ConfigError, match="expected Parameters or \\(name, Parameter\\) pairs"):
        SGD([np.zeros(1)])
    weight = Parameter(np.zeros(1))
    with pytest.raises(ConfigError, match="parameter '1' is the same Parameter as '0'; pass each parameter once"):
        SGD([weight, weight])
    with pytest.raises(ConfigError, match="parameter groups .* are not supported; pass model.named_parameters"):
        SGD([{"params": [weight], "weight_decay": 1e-4}], lr=0.1)
    model = build_model({"flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 2}}, (1, 2, 2))
    with pytest.raises(ConfigError, match=r"^SGD: got the Model itself; pass its parameters: "
                                          r"SGD\(model\.named_parameters\(\), lr=\.\.\.\)$"):
        SGD(model, lr=0.1)  # as torch.optim.SGD(model.parameters()) is half-remembered


def test_the_pytorch_training_loop_runs_unchanged_and_matches_named_parameters():
    """``SGD(model.parameters())`` and ``zero_grad(); backward(); step()``, as PyTorch code has it."""
    from cnnx.bench import WORKLOADS
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
    from cnnx.engine.model import build_model

    shape, spec = WORKLOADS["digits"]
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, *shape)).astype(np.float32), rng.integers(0, 10, 16)
    loss = CrossEntropyLoss()
    torch_style, named = build_model(spec, shape, seed=0), build_model(spec, shape, seed=0)
    torch_optimizer = SGD(torch_style.parameters(), lr=0.1, momentum=0.9)
    named_optimizer = SGD(named.named_parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        torch_optimizer.zero_grad()
        assert all(p.grad is None for p in torch_style.parameters())
        torch_style.backward(loss(torch_style(x), y)[1])
        torch_optimizer.step()
        named.backward(loss(named(x), y)[1])
        named_optimizer.step()
    for (name, a), b in zip(named.named_parameters(), torch_style.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    assert list(torch_optimizer.params) == [str(i) for i in range(8)]  # named by position, as torch's


# torch.optim's own positional order and defaults (torch 2.x): code ported from PyTorch that
# passes hyper-parameters by position, or leaves them out, gets the same optimizer.
TORCH_SIGNATURES = {
    SGD: [("lr", 1e-3), ("momentum", 0), ("dampening", 0), ("weight_decay", 0), ("nesterov", False)],
    Adam: [("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 0)],
    AdamW: [("lr", 1e-3), ("betas", (0.9, 0.999)), ("eps", 1e-8), ("weight_decay", 1e-2)],
    RMSprop: [("lr", 1e-2), ("alpha", 0.99), ("eps", 1e-8), ("weight_decay", 0), ("momentum", 0),
              ("centered", False)],
}


@pytest.mark.parametrize("cls", list(TORCH_SIGNATURES), ids=lambda cls: cls.__name__)
def test_positional_order_and_defaults_are_pytorchs(cls):
    import inspect

    parameters = list(inspect.signature(cls).parameters.values())[1:]
    assert [(p.name, p.default) for p in parameters] == TORCH_SIGNATURES[cls]


@pytest.mark.parametrize("cls", list(TORCH_SIGNATURES), ids=lambda cls: cls.__name__)
def test_the_same_signature_as_the_installed_torch(cls):
    import inspect

    torch = pytest.importorskip("torch")
    reference = inspect.signature(getattr(torch.optim, cls.__name__)).parameters.values()
    shared = [(p.name, p.default) for p in list(reference)[1:len(TORCH_SIGNATURES[cls]) + 1]]
    assert shared == TORCH_SIGNATURES[cls]


def test_accepts_numpy_scalars_and_integers_from_configs():
    p = Parameter(np.ones(2, np.float32))
    p.grad = np.ones(2, np.float32)
    opt = Adam([("w", p)], lr=np.float64(1e-3), betas=[np.float32(0.9), 0.999], eps=1e-8)
    opt.lr = np.float64(0.5)  # what a careless scheduler might assign
    opt.step()
    assert p.data.dtype == np.float32
    assert SGD([("w", p)], lr=1).lr == 1.0


def test_lr_attribute_is_read_at_every_step():
    p = Parameter(np.zeros(1))
    opt = SGD([("w", p)], lr=1.0)
    p.grad = np.ones(1)
    opt.step()
    opt.lr = 0.25
    opt.step()
    np.testing.assert_allclose(p.data, [-1.25])


def test_get_config_rebuilds_the_optimizer():
    for cls, _, kwargs in CASES:
        p = Parameter(np.zeros(2))
        opt = cls([("w", p)], **kwargs)
        again = cls([("w", p)], **opt.get_config())
        assert again.get_config() == opt.get_config()
        assert repr(opt).startswith(cls.__name__ + "(")


@pytest.mark.parametrize(
    ("cls", "kwargs", "steps"),
    [
        (SGD, {"lr": 0.3}, 300),
        (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}, 300),
        (Adam, {"lr": 0.05}, 1000),
        (AdamW, {"lr": 0.05, "weight_decay": 1e-4}, 1000),
        (RMSprop, {"lr": 0.01, "momentum": 0.5}, 1000),
        (RMSprop, {"lr": 0.01, "centered": True}, 1000),
    ],
)
def test_minimises_an_ill_conditioned_quadratic(cls, kwargs, steps):
    rng = np.random.default_rng(3)
    target = rng.standard_normal((4, 5)).astype(np.float32)
    curvature = rng.uniform(0.2, 5.0, (4, 5)).astype(np.float32)
    p = Parameter(np.zeros((4, 5), np.float32))
    opt = cls([("w", p)], **kwargs)
    lr0 = opt.lr
    for t in range(steps):
        p.grad = curvature * (p.data - target)
        # Constant-step Adam/RMSprop hover within ~lr of the optimum; decaying the lr lets the
        # test ask for a tight tolerance.
        opt.lr = lr0 * 0.5 * (1 + math.cos(math.pi * t / steps))
        opt.step()
    np.testing.assert_allclose(p.data, target, atol=2e-3)


def test_base_class_is_abstract():
    param = Parameter(np.zeros(1))
    param.grad = np.zeros(1)  # as a backward leaves it: a parameter without one is skipped
    opt = Optimizer([("w", param)], lr=0.1)
    with pytest.raises(NotImplementedError):
        opt.step()


# -- parameters sharing one buffer (cnnx.engine.flat_parameters) ----------------------------
@pytest.mark.parametrize(("cls", "ref", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parameters_in_one_buffer_follow_exactly_the_per_parameter_trajectory(cls, ref, kwargs, dtype):
    start, grad_fn = make_problem(dtype=dtype)
    separate, _ = run_cnnx(cls, kwargs, start, grad_fn, dtype=dtype)
    shared, opt = run_cnnx(cls, kwargs, start, grad_fn, dtype=dtype, one_buffer=True)
    assert opt._flat is not None, "the one-buffer update was not used"
    assert shared_buffer(list(shared.values())) is opt._flat.data  # still views of one buffer
    for name in SHAPES:
        np.testing.assert_array_equal(shared[name].data, separate[name].data, err_msg=name)
        assert shared[name].data.dtype == dtype
    # state keyed by name, as views of the flat state
    state = opt.state_dict()
    assert {k for k in state if k.startswith("state.")} == {
        f"state.{n}.{slot}" for n in SHAPES for slot in opt.slots()}


def test_rebinding_a_parameter_falls_back_to_per_parameter_updates():
    start, grad_fn = make_problem()
    params = {n: Parameter(a.copy()) for n, a in start.items()}
    flatten_parameters(list(params.values()))
    opt = SGD(params.items(), lr=0.05, momentum=0.9)
    expected, _ = run_cnnx(SGD, {"lr": 0.05, "momentum": 0.9}, start, grad_fn)
    for t in range(STEPS):
        if t == 3:
            params["fc.weight"].data = params["fc.weight"].data.copy()  # e.g. Module.to
        for n, p in params.items():
            p.grad = grad_fn(n, t)(p.data)
        opt.step()
    for name in SHAPES:
        np.testing.assert_array_equal(params[name].data, expected[name].data, err_msg=name)


COPIES = pytest.mark.parametrize(
    "copy_pair", [lambda pair: __import__("copy").deepcopy(pair),
                  lambda pair: __import__("pickle").loads(__import__("pickle").dumps(pair))],
    ids=["deepcopy", "pickle"])


@COPIES
def test_bare_parameters_copied_with_their_optimizer_train_on_as_the_original(copy_pair):
    """Unlike a Model, bare parameters are not flattened again by a copy: each still holds the
    view the copied optimizer recorded, so only that view's base, no longer the copied flat
    buffer, tells the optimizer to relink (without that check the copy stopped training)."""
    start, grad_fn = make_problem()
    expected, _ = run_cnnx(SGD, {"lr": 0.05, "momentum": 0.9}, start, grad_fn)
    params = {n: Parameter(a.copy()) for n, a in start.items()}
    flatten_parameters(list(params.values()))
    opt = SGD(params.items(), lr=0.05, momentum=0.9)
    for t in range(STEPS):
        if t == 3:
            params, opt = copy_pair((params, opt))
        for n, p in params.items():
            p.grad = grad_fn(n, t)(p.data)
        opt.step()
    for name in SHAPES:
        np.testing.assert_array_equal(params[name].data, expected[name].data, err_msg=name)


def _small_model():
    import cnnx

    return cnnx.build_model({"conv": {"type": "conv2d", "out_channels": 3, "kernel_size": 3},
                             "flat": {"type": "flatten"}, "fc": {"type": "dense", "out_features": 4}},
                            (2, 5, 5), seed=1)


def _train(model, optimizer, batches):
    from cnnx.engine.losses.cross_entropy import CrossEntropyLoss

    loss = CrossEntropyLoss()
    for x, y in batches:
        _, grad = loss(model.forward(x, training=True), y)
        model.backward(grad, input_grad=False)
        optimizer.step()


@COPIES
@pytest.mark.parametrize(("cls", "kwargs"), [(SGD, {"lr": 0.1, "momentum": 0.9}), (Adam, {"lr": 0.01})],
                         ids=["sgd-momentum", "adam"])
def test_a_model_and_optimizer_copied_together_train_on_exactly_as_the_original(copy_pair, cls, kwargs):
    # The copy's parameters own their data; its optimizer once kept updating the copied flat
    # buffer instead, and the copy never trained again.
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 2, 5, 5)).astype(np.float32), rng.integers(0, 4, 8)) for _ in range(4)]
    model = _small_model()
    optimizer = cls(model.named_parameters(), **kwargs)
    _train(model, optimizer, batches[:1])
    copied_model, copied_optimizer = copy_pair((model, optimizer))
    before = {name: p.data.copy() for name, p in copied_model.named_parameters()}
    _train(model, optimizer, batches[1:])
    _train(copied_model, copied_optimizer, batches[1:])
    for (name, original), (_, copy) in zip(model.named_parameters(), copied_model.named_parameters(), strict=True):
        assert not np.array_equal(copy.data, before[name]), f"{name} did not train after the copy"
        np.testing.assert_array_equal(copy.data, original.data, err_msg=name)
        assert copy.data.dtype == np.float32
    # and as fast as the original: one buffer, updated by the flat path
    assert copied_optimizer._flat is not None
    assert shared_buffer([p for _, p in copied_model.named_parameters()]) is copied_optimizer._flat.data


def test_a_model_cast_with_to_mid_training_keeps_its_optimizer_state_and_flat_updates():
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((8, 2, 5, 5)).astype(np.float32), rng.integers(0, 4, 8)) for _ in range(4)]
    model, twin = _small_model(), _small_model()
    optimizer, twin_optimizer = SGD(model.named_parameters(), lr=0.1, momentum=0.9), \
        SGD(twin.named_parameters(), lr=0.1, momentum=0.9)
    _train(model, optimizer, batches[:2])
    _train(twin, twin_optimizer, batches[:2])
    model.to(np.float32)  # rebinds every parameter to a new buffer
    _train(model, optimizer, batches[2:])
    _train(twin, twin_optimizer, batches[2:])
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert shared_buffer([p for _, p in model.named_parameters()]) is optimizer._flat.data


def test_an_optimizer_that_is_not_elementwise_updates_parameter_by_parameter():
    seen = []

    class PerTensorNorm(Optimizer):
        def _update(self, data, grad, state, scratch, lr):
            seen.append(data.shape)
            data -= lr * grad / (np.linalg.norm(grad) + 1e-12)  # a per-parameter quantity

    start, grad_fn = make_problem()
    run_cnnx(PerTensorNorm, {"lr": 0.1}, start, grad_fn, steps=1, one_buffer=True)
    assert seen == list(SHAPES.values())


def test_a_subclass_with_its_own_update_is_not_taken_for_elementwise():
    class LarsLike(SGD):  # per-parameter trust ratios, as LARS has
        def _update(self, data, grad, state, scratch, lr):
            data -= lr * grad * np.linalg.norm(data) / (np.linalg.norm(grad) + 1e-12)

    class Declared(SGD):
        elementwise = True

        def _update(self, data, grad, state, scratch, lr):
            super()._update(data, grad, state, scratch, lr)

    assert SGD.elementwise and not LarsLike.elementwise and Declared.elementwise
    start, grad_fn = make_problem()
    _, opt = run_cnnx(LarsLike, {"lr": 0.1}, start, grad_fn, steps=2, one_buffer=True)
    assert opt._flat is None


def test_a_gradient_of_the_wrong_shape_is_an_error_even_in_one_buffer():
    start, grad_fn = make_problem()
    params = {n: Parameter(a.copy()) for n, a in start.items()}
    flatten_parameters(list(params.values()))
    opt = SGD(params.items(), lr=0.1)
    for n, p in params.items():
        p.grad = grad_fn(n, 0)(p.data)
    params["fc.weight"].grad = params["fc.weight"].grad.T.copy()  # right size, wrong shape
    with pytest.raises(ValueError):
        opt.step()


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                                  lambda ps: AdamW(ps, lr=0.1)])
def test_a_step_after_zero_grad_without_backward_changes_nothing_as_in_torch(make):
    """torch's ``zero_grad()`` sets gradients to None and ``step()`` skips such parameters;
    ``zero_grad(set_to_none=False)`` leaves zeros, and momentum and weight decay still move."""
    cleared, zeroed = Parameter(np.ones(2, np.float32)), Parameter(np.ones(2, np.float32))
    to_none, to_zero = make([("w", cleared)]), make([("w", zeroed)])
    for param, optimizer in ((cleared, to_none), (zeroed, to_zero)):
        param.grad = np.array([1.0, -1.0], np.float32)
        optimizer.step()
    after_one_step = cleared.data.copy()
    to_none.zero_grad()
    to_zero.zero_grad(set_to_none=False)
    to_none.step()
    to_zero.step()
    assert cleared.grad is None and to_none.step_count == 1
    np.testing.assert_array_equal(cleared.data, after_one_step)
    assert not np.array_equal(zeroed.data, after_one_step) and to_zero.step_count == 2
    cleared.grad = np.array([1.0, -1.0], np.float32)  # the next backward
    to_none.step()
    assert to_none.step_count == 2 and not np.array_equal(cleared.data, after_one_step)


def test_step_skips_only_the_parameters_without_a_gradient():
    stale, fresh = Parameter(np.ones(2, np.float32)), Parameter(np.ones(3, np.float32))
    optimizer = SGD([("stale", stale), ("fresh", fresh)], lr=0.5)
    optimizer.zero_grad()
    fresh.grad = np.ones(3, np.float32)
    optimizer.step()
    np.testing.assert_array_equal(stale.data, np.ones(2))
    np.testing.assert_array_equal(fresh.data, np.full(3, 0.5))


def test_a_model_sharing_one_buffer_is_left_alone_by_a_step_without_backward():
    from cnnx.bench import WORKLOADS
    from cnnx.engine.model import build_model

    shape, spec = WORKLOADS["digits"]
    model = build_model(spec, shape, seed=0)
    optimizer = SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer.zero_grad()
    optimizer.step()
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)


def test_a_step_before_any_backward_changes_nothing_as_in_torch():
    """A new parameter has no gradient (torch: None), so weight decay does not move it yet."""
    param = Parameter(np.ones(3, np.float32))
    optimizer = SGD([("w", param)], lr=0.1, momentum=0.9, weight_decay=0.5)
    assert param.grad is None
    optimizer.step()
    np.testing.assert_array_equal(param.data, np.ones(3))
    assert optimizer.step_count == 0


def test_centered_rmsprop_float32_survives_a_constant_gradient():
    # A constant gradient makes v and mean_g**2 equal, so in float32 their difference rounds
    # a hair below zero for many elements; without a clamp the sqrt turns those into NaN.
    g = np.random.default_rng(0).uniform(-2, 2, 1000).astype(np.float32)
    p = Parameter(np.ones(1000, np.float32))
    opt = RMSprop([("w", p)], lr=0.01, alpha=0.5, centered=True)
    for _ in range(200):
        p.grad = g.copy()
        opt.step()
    assert np.isfinite(p.data).all()


LATE_STARTERS = [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.1),
    lambda ps: AdamW(ps, lr=0.1),
    lambda ps: RMSprop(ps, lr=0.1, momentum=0.5, centered=True),
]


def _grads(steps: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("make", LATE_STARTERS)
@pytest.mark.parametrize("shared", [True, False], ids=["one buffer", "own arrays"])
def test_a_parameter_left_out_of_steps_is_updated_as_if_its_training_started_later(make, shared):
    """torch counts updates per parameter (Adam's bias correction, SGD's first momentum
    buffer). Before: one count for the optimizer, so a parameter with no gradient at step 1
    (frozen, then unfrozen) took Adam's second-step update at its first, about 3x torch's, and
    SGD never initialised its momentum buffer from its first gradient."""
    early, late = Parameter(np.ones(3, np.float32)), Parameter(np.ones(4, np.float32))
    if shared:
        flatten_parameters([early, late])
    optimizer = make([("early", early), ("late", late)])
    alone = Parameter(np.ones(4, np.float32))
    fresh = make([("late", alone)])
    early_grads, late_grads = _grads(4, 3, 0), _grads(3, 4, 1)
    early.grad, late.grad = early_grads[0], None
    optimizer.step()
    np.testing.assert_array_equal(late.data, np.ones(4, np.float32))
    for early_grad, late_grad in zip(early_grads[1:], late_grads, strict=True):
        early.grad, late.grad, alone.grad = early_grad, late_grad, late_grad
        optimizer.step()
        fresh.step()
        np.testing.assert_array_equal(late.data, alone.data)
    assert optimizer.step_count == 4 and late.data.dtype == np.float32


@pytest.mark.parametrize("make", LATE_STARTERS[::2])
def test_per_parameter_step_counts_survive_a_checkpoint(make):
    def build():
        params = [Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float32))]
        return params, make([("a", params[0]), ("b", params[1])])

    grads = list(zip(_grads(4, 3, 2), [None, *_grads(3, 2, 3)], strict=True))
    (a, b), straight = build()
    for grad_a, grad_b in grads:
        a.grad, b.grad = grad_a, grad_b
        straight.step()
    (a2, b2), first = build()
    for grad_a, grad_b in grads[:2]:
        a2.grad, b2.grad = grad_a, grad_b
        first.step()
    saved = first.state_dict()
    assert (saved["param_step.a"], saved["param_step.b"]) == (2, 1)
    (a3, b3), resumed = build()
    a3.data[...], b3.data[...] = a2.data, b2.data
    resumed.load_state_dict(json.loads(json.dumps({k: v.tolist() if isinstance(v, np.ndarray) else v
                                                   for k, v in saved.items()})))
    for grad_a, grad_b in grads[2:]:
        a3.grad, b3.grad = grad_a, grad_b
        resumed.step()
    np.testing.assert_array_equal(a3.data, a.data)
    np.testing.assert_array_equal(b3.data, b.data)
    # A checkpoint from before per-parameter counts (or of a run that never left one out) loads
    # with every parameter at 'step'; one holding only some of the counts is refused.
    no_counts = {k: v for k, v in saved.items() if not k.startswith("param_step.")}
    build()[1].load_state_dict(no_counts)
    with pytest.raises(CheckpointError, match=r"missing key 'param_step.b'; it holds 'param_step.a'"):
        build()[1].load_state_dict({**no_counts, "param_step.a": 2})
    with pytest.raises(CheckpointError, match=r"'param_step.b'=5.0 is not an integer from 0 to 'step' \(2\)"):
        build()[1].load_state_dict({**saved, "param_step.b": 5})
