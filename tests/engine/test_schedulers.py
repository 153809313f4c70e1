from __future__ import annotations

import math

import numpy as np
import pytest

from cnnx.engine.optim.adam import Adam
from cnnx.engine.optim.schedulers import ConstantLR, CosineLR, LRScheduler, StepLR
from cnnx.engine.optim.sgd import SGD
from cnnx.engine.parameter import Parameter
from cnnx.errors import CheckpointError, ConfigError


def make_opt(lr=0.1):
    return SGD([("w", Parameter(np.zeros(2, np.float32)))], lr=lr)


def lrs_used(scheduler, steps):
    """The lr each of the next ``steps`` optimizer steps sees, driving it the training way."""
    used = []
    for _ in range(steps):
        used.append(scheduler.optimizer.lr)
        scheduler.optimizer.step()
        scheduler.step()
    return used


def test_constant_without_warmup_keeps_the_optimizer_lr():
    sched = ConstantLR(make_opt(0.1), epochs=3, steps_per_epoch=4)
    assert lrs_used(sched, 12) == [0.1] * 12


def test_linear_warmup_is_per_step_and_reaches_base_lr():
    sched = ConstantLR(make_opt(0.1), epochs=5, steps_per_epoch=4, warmup_epochs=1)
    used = lrs_used(sched, 8)
    np.testing.assert_allclose(used, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1], atol=1e-15)


def test_warmup_start_factor_and_fractional_warmup():
    sched = ConstantLR(
        make_opt(0.2), epochs=5, steps_per_epoch=4, warmup_epochs=0.5, warmup_start_factor=0.5
    )
    np.testing.assert_allclose(lrs_used(sched, 4), [0.1, 0.15, 0.2, 0.2])


def test_step_lr_drops_at_epoch_boundaries():
    sched = StepLR(make_opt(1.0), epochs=10, steps_per_epoch=3, step_size=2, gamma=0.5)
    used = lrs_used(sched, 18)
    np.testing.assert_allclose(used, [1.0] * 6 + [0.5] * 6 + [0.25] * 6)
    assert sched.lr_at(9.999) == pytest.approx(1.0 * 0.5**4)


def test_step_lr_after_warmup_counts_epochs_from_start():
    sched = StepLR(make_opt(1.0), epochs=10, steps_per_epoch=2, step_size=3, warmup_epochs=1)
    assert sched.lr_at(0) == 0.0
    assert sched.lr_at(0.5) == pytest.approx(0.5)
    assert sched.lr_at(1) == 1.0
    assert sched.lr_at(2.99) == 1.0
    assert sched.lr_at(3) == pytest.approx(0.1)


def test_cosine_shape():
    sched = CosineLR(make_opt(0.1), epochs=12, steps_per_epoch=5, min_lr=0.01, warmup_epochs=2)
    assert sched.lr_at(0) == 0.0
    assert sched.lr_at(1) == pytest.approx(0.05)
    assert sched.lr_at(2) == pytest.approx(0.1)
    assert sched.lr_at(7) == pytest.approx(0.055)  # half-way: the mean of both ends
    assert sched.lr_at(12) == pytest.approx(0.01)
    assert sched.lr_at(50) == pytest.approx(0.01)
    after = [sched.lr_at(e) for e in np.linspace(2, 12, 41)]
    assert all(a >= b for a, b in zip(after[:-1], after[1:], strict=True))


def test_cosine_per_step_formula():
    epochs, spe, base, low = 3, 7, 0.3, 0.003
    sched = CosineLR(make_opt(base), epochs=epochs, steps_per_epoch=spe, min_lr=low)
    total = epochs * spe
    expected = [low + (base - low) * (1 + math.cos(math.pi * k / total)) / 2 for k in range(total)]
    np.testing.assert_allclose(lrs_used(sched, total), expected, rtol=1e-12)


def test_warmup_longer_than_a_step_ramps_to_the_decayed_lr_without_a_jump():
    # The warm-up ends where the schedule is at warmup_epochs (two drops in: 0.25), not at the
    # undecayed base lr, or the lr would climb towards 1.0 and then fall to 0.25 in one step.
    sched = StepLR(make_opt(1.0), epochs=4, steps_per_epoch=4, step_size=1, gamma=0.5, warmup_epochs=2)
    used = lrs_used(sched, 13)
    np.testing.assert_allclose(used, [0.25 * k / 8 for k in range(8)] + [0.25] * 4 + [0.125], atol=1e-15)


def test_constructor_sets_the_first_lr_and_lr_at_is_pure():
    opt = make_opt(0.1)
    sched = CosineLR(opt, epochs=4, steps_per_epoch=2, warmup_epochs=1)
    assert opt.lr == 0.0
    # two thirds of the cosine span after the 1-epoch warm-up: 0.1 * (1 + cos(2π/3)) / 2
    assert sched.lr_at(3.0) == pytest.approx(0.025)
    assert sched.step_count == 0 and opt.lr == 0.0
    assert sched.step() == opt.lr == pytest.approx(0.05)
    assert sched.epoch == 0.5 and sched.lr == opt.lr


@pytest.mark.parametrize(
    "make",
    [
        lambda o: ConstantLR(o, 6, 5, warmup_epochs=1.5),
        lambda o: StepLR(o, 6, 5, step_size=2, gamma=0.3, warmup_epochs=1),
        lambda o: CosineLR(o, 6, 5, min_lr=1e-4, warmup_epochs=1, warmup_start_factor=0.1),
    ],
)
def test_state_dict_round_trip_gives_identical_lrs(make, tmp_path):
    opt = Adam([("w", Parameter(np.zeros(2)))], lr=0.1)
    sched = make(opt)
    lrs_used(sched, 13)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    assert sched_state == {"step": 13, "base_lr": 0.1}
    np.savez(tmp_path / "s.npz", **sched_state)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        from_disk = {k: f[k] for k in f.files}
    expected = lrs_used(sched, 17)

    # Resume in the awkward order: the optimizer's checkpoint first (it carries the
    # scheduled lr, not the base one), then a new scheduler built on top of it.
    opt2 = Adam([("w", Parameter(np.zeros(2)))], lr=0.1)
    opt2.load_state_dict(opt_state)
    sched2 = make(opt2)
    sched2.load_state_dict(from_disk)
    assert lrs_used(sched2, 17) == expected


def test_load_state_dict_errors():
    sched = ConstantLR(make_opt(), 2, 2)
    with pytest.raises(CheckpointError, match="missing key 'base_lr'"):
        sched.load_state_dict({"step": 1})
    with pytest.raises(CheckpointError, match="unexpected key 'epoch'"):
        sched.load_state_dict({"step": 1, "base_lr": 0.1, "epoch": 0.5})
    with pytest.raises(CheckpointError, match="'step'"):
        sched.load_state_dict({"step": -1, "base_lr": 0.1})
    with pytest.raises(CheckpointError, match="'step'"):
        sched.load_state_dict({"step": 1.5, "base_lr": 0.1})
    with pytest.raises(CheckpointError, match="'base_lr'"):
        sched.load_state_dict({"step": 1, "base_lr": 0.0})


def test_torch_schedulers_agree():
    torch = pytest.importorskip("torch")
    epochs, spe = 4, 3
    w = torch.zeros(1, requires_grad=True)

    t_opt = torch.optim.SGD([w], lr=0.2)
    t_sched = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=epochs * spe, eta_min=0.02)
    sched = CosineLR(make_opt(0.2), epochs, spe, min_lr=0.02)
    ours, theirs = [], []
    for _ in range(epochs * spe):
        theirs.append(t_opt.param_groups[0]["lr"])
        t_opt.step()
        t_sched.step()
    ours = lrs_used(sched, epochs * spe)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)

    t_opt = torch.optim.SGD([w], lr=0.2)
    t_sched = torch.optim.lr_scheduler.StepLR(t_opt, step_size=2 * spe, gamma=0.3)
    sched = StepLR(make_opt(0.2), epochs, spe, step_size=2, gamma=0.3)
    theirs = []
    for _ in range(epochs * spe):
        theirs.append(t_opt.param_groups[0]["lr"])
        t_opt.step()
        t_sched.step()
    np.testing.assert_allclose(lrs_used(sched, epochs * spe), theirs, rtol=1e-9)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda o: ConstantLR(o, 0, 5), "epochs=0 is out of range; accepted: int >= 1"),
        (lambda o: ConstantLR(o, 2.5, 5), "epochs=2.5 is not an integer"),
        (lambda o: ConstantLR(o, 3, 0), "steps_per_epoch=0"),
        (
            lambda o: ConstantLR(o, 3, 5, warmup_epochs=-1),
            "warmup_epochs=-1.0 is out of range; accepted: warmup_epochs >= 0",
        ),
        # The bound is named as the setting it comes from (the run's epochs), not just its value.
        (lambda o: CosineLR(o, 3, 5, warmup_epochs=4),
         "CosineLR: warmup_epochs=4 is longer than the schedule, epochs=3; accepted: 0 <= warmup_epochs <= epochs"),
        (lambda o: ConstantLR(o, 3, 5, warmup_start_factor=1.5), "warmup_start_factor=1.5"),
        (lambda o: StepLR(o, 3, 5, step_size=0), "step_size=0"),
        (
            lambda o: StepLR(o, 3, 5, step_size=1, gamma=0),
            "gamma=0.0 is out of range; accepted: gamma > 0",
        ),
        (lambda o: CosineLR(o, 3, 5, min_lr=-0.1), "min_lr=-0.1"),
        (lambda o: CosineLR(o, 3, 5, min_lr=0.5), "min_lr=0.5 is above the optimizer's lr=0.1"),
        (lambda o: ConstantLR(object(), 3, 5), "has no 'lr' attribute"),
    ],
)
def test_bad_config_raises_config_error_and_leaves_lr_alone(make, fragment):
    opt = make_opt(0.1)
    with pytest.raises(ConfigError) as info:
        make(opt)
    assert fragment in str(info.value)
    assert opt.lr == 0.1


def test_lr_at_rejects_negative_epochs():
    with pytest.raises(ValueError):
        ConstantLR(make_opt(), 2, 2).lr_at(-0.5)


def test_base_class_needs_a_schedule():
    sched = LRScheduler(make_opt(), 2, 2)
    with pytest.raises(NotImplementedError):
        sched.step()


def test_get_config_and_repr():
    sched = CosineLR(make_opt(), 10, 3, min_lr=0.001, warmup_epochs=1)
    assert sched.get_config() == {
        "epochs": 10,
        "steps_per_epoch": 3,
        "warmup_epochs": 1.0,
        "warmup_start_factor": 0.0,
        "min_lr": 0.001,
    }
    assert repr(sched).startswith("CosineLR(epochs=10")


def torch_lrs(torch, make, steps):
    """The lr each of ``steps`` optimizer steps sees under a torch scheduler (one param group)."""
    t_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    t_sched = make(t_opt)
    used = []
    for _ in range(steps):
        used.append(t_opt.param_groups[0]["lr"])
        t_opt.step()
        t_sched.step()
    return used, t_sched


def test_step_lr_with_torchs_arguments_alone_counts_scheduler_steps_as_torch_does():
    torch = pytest.importorskip("torch")
    theirs, t_sched = torch_lrs(torch, lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 10)
    sched = StepLR(make_opt(0.2), step_size=3, gamma=0.5)
    np.testing.assert_allclose(lrs_used(sched, 10), theirs, rtol=1e-12)
    assert sched.get_last_lr() == pytest.approx(t_sched.get_last_lr(), rel=1e-12)


def test_get_last_lr_is_a_one_element_list_of_the_lr_the_next_step_uses():
    sched = CosineLR(make_opt(0.2), epochs=2, steps_per_epoch=3)
    for _ in range(7):
        last = sched.get_last_lr()
        assert isinstance(last, list) and len(last) == 1 and type(last[0]) is float
        assert last == [sched.lr] == [sched.optimizer.lr]
        sched.optimizer.step()
        sched.step()


def test_constant_lr_needs_no_epochs():
    sched = ConstantLR(make_opt(0.1), warmup_epochs=2, warmup_start_factor=0.5)
    np.testing.assert_allclose(lrs_used(sched, 4), [0.05, 0.075, 0.1, 0.1])


@pytest.mark.parametrize(("make", "message"), [
    (lambda o: StepLR(o, 3), r"^StepLR: step_size is required, by keyword: StepLR\(optimizer, step_size=3\); "
                             r"the positional arguments after the optimizer are epochs, steps_per_epoch$"),
    (lambda o: CosineLR(o, steps_per_epoch=4), r"^CosineLR: epochs is required: the cosine runs .*T_max\)$"),
])
def test_what_a_scheduler_cannot_do_without_is_named_in_one_line(make, message):
    opt = make_opt(0.1)
    with pytest.raises(ConfigError, match=message):
        make(opt)
    assert opt.lr == 0.1
