from omegaconf import OmegaConf

from cnnx.tracking.sweep_callback import sweep_signature


def signature(*overrides, params=None):
    config = OmegaConf.create({"hydra": {"overrides": {"task": list(overrides)}, "sweeper": {"params": params}}})
    return sweep_signature(config, "lenet")


def test_the_same_jobs_in_another_order_or_logged_elsewhere_are_the_same_sweep():
    first = signature("optimizer.lr=0.01,0.05,0.1", "model.layers.conv1.out_channels=4,8")
    assert signature("model.layers.conv1.out_channels=8,4", "optimizer.lr=0.1,0.01,0.05") == first
    assert signature("optimizer.lr=0.01,0.05,0.1", "model.layers.conv1.out_channels=4,8",
                     "tracking.uri=sqlite:////elsewhere/runs.db", "sweep.resume=true") == first


def test_other_jobs_are_another_sweep():
    first = signature("optimizer.lr=0.01,0.1")
    assert signature("optimizer.lr=0.01,0.2") != first
    assert signature("optimizer.lr=0.01,0.1", "trainer.epochs=3") != first
    assert signature("optimizer.lr=0.01,0.1", params={"trainer.batch_size": "choice(16, 32)"}) != first
    # a shuffled list is drawn in another order each time: left as typed
    assert signature("optimizer.lr=shuffle(0.01,0.1)") != signature("optimizer.lr=shuffle(0.1,0.01)")
