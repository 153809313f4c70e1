"""Training-step benchmark: ``python -m cnnx.bench``.

One step is forward + cross-entropy + backward + SGD-momentum update on a float32 batch.
When PyTorch is importable, the identical ``torch.nn`` model (same layers, same names, same
initial weights) runs in the same process and the steps are interleaved — engine, torch,
engine, torch, … — so machine noise hits both alike, and the ratio engine/torch is reported.
PyTorch is only ever imported here, and only if it is installed; cnnx does not depend on it.

Interleaving has a price on a small machine: after its step, each library's idle threads spin
for a while and take cores from the other one. ``--separate`` times all of the engine's steps,
then all of torch's, so each runs at its own best; compare both figures on the same machine.

Threads: ``--threads N`` caps NumPy's BLAS through threadpoolctl (when installed) and sets
``torch.set_num_threads(N)``. Without threadpoolctl, set ``OPENBLAS_NUM_THREADS`` /
``MKL_NUM_THREADS`` / ``OMP_NUM_THREADS`` in the environment before starting Python.
OpenBLAS picks its kernels from ``OPENBLAS_CORETYPE`` when set; the value in use is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import cnnx
from cnnx.engine.losses.cross_entropy import CrossEntropyLoss
from cnnx.engine.optim.sgd import SGD

LEARNING_RATE = 0.01
MOMENTUM = 0.9
CLASSES = 10

# name → (per-sample input shape, model spec); layer names double as torch module names.
WORKLOADS: dict[str, tuple[tuple[int, int, int], dict[str, dict[str, Any]]]] = {
    "lenet5": ((1, 28, 28), {
        "conv1": {"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2},
        "relu1": {"type": "relu"},
        "pool1": {"type": "maxpool2d", "kernel_size": 2},
        "conv2": {"type": "conv2d", "out_channels": 16, "kernel_size": 5},
        "relu2": {"type": "relu"},
        "pool2": {"type": "maxpool2d", "kernel_size": 2},
        "flatten": {"type": "flatten"},
        "fc1": {"type": "dense", "out_features": 120},
        "relu3": {"type": "relu"},
        "fc2": {"type": "dense", "out_features": 84},
        "relu4": {"type": "relu"},
        "fc3": {"type": "dense", "out_features": CLASSES},
    }),
    "digits": ((1, 8, 8), {
        "conv1": {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
        "relu1": {"type": "relu"},
        "pool1": {"type": "maxpool2d", "kernel_size": 2},
        "conv2": {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        "relu2": {"type": "relu"},
        "pool2": {"type": "maxpool2d", "kernel_size": 2},
        "flatten": {"type": "flatten"},
        "fc1": {"type": "dense", "out_features": 64},
        "relu3": {"type": "relu"},
        "fc2": {"type": "dense", "out_features": CLASSES},
    }),
}


def engine_step(spec: dict, input_shape: tuple[int, ...], x: np.ndarray, y: np.ndarray) -> tuple[Callable[[], None], dict]:
    model = cnnx.build_model(spec, input_shape, seed=0)
    optimizer = SGD(model.named_parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    loss = CrossEntropyLoss()

    def step() -> None:
        _, grad = loss(model.forward(x, training=True), y)
        model.backward(grad, input_grad=False)
        optimizer.step()

    return step, model.state_dict()


def torch_step(spec: dict, state: dict, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    import torch
    from torch import nn

    modules: OrderedDict[str, nn.Module] = OrderedDict()
    for name, layer in spec.items():
        kind = layer["type"]
        if kind == "conv2d":
            out_channels, in_channels, *_ = state[f"{name}.weight"].shape
            modules[name] = nn.Conv2d(in_channels, out_channels, layer["kernel_size"], padding=layer.get("padding", 0))
        elif kind == "dense":
            out_features, in_features = state[f"{name}.weight"].shape
            modules[name] = nn.Linear(in_features, out_features)
        elif kind == "maxpool2d":
            modules[name] = nn.MaxPool2d(layer["kernel_size"])
        elif kind == "relu":
            modules[name] = nn.ReLU()
        elif kind == "flatten":
            modules[name] = nn.Flatten()
        else:
            raise ValueError(f"no torch equivalent for layer type {kind!r}")
    # Same names as the engine's layers, so the state dict (PyTorch layouts) loads as is.
    model = nn.Sequential(OrderedDict(modules))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    loss = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(model(inputs), targets).backward()
        optimizer.step()

    return step


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[str]:
    """Cap BLAS threads for the duration; yield a description of NumPy's BLAS setup."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        if threads is not None:
            raise SystemExit(
                "--threads needs threadpoolctl (pip install threadpoolctl); or set "
                "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before starting Python"
            ) from None
        yield "BLAS threads: library default (install threadpoolctl to see details)"
        return
    with threadpool_limits(limits=threads):
        pools = [f"{p['internal_api']} {p.get('version', '?')} ({p['num_threads']} threads)"
                 for p in threadpool_info() if p.get("user_api") == "blas"]
        yield "BLAS: " + (", ".join(pools) or "none found")


def median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def run(workloads: list[str], steps: int, warmup: int, batch_size: int, threads: int | None, use_torch: bool,
        interleave: bool = True) -> None:
    torch = None
    if use_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: timing the engine only")
    if torch is not None and threads is not None:
        torch.set_num_threads(threads)
    with thread_limit(threads) as blas:
        print(f"numpy {np.__version__}; {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
        if torch is not None:
            print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
        order = "engine only" if torch is None else "interleaved" if interleave else "each library on its own"
        print(f"batch {batch_size}, float32, {steps} timed steps after {warmup} warm-up steps, {order}\n")
        header = f"{'workload':<8} {'engine ms':>10} {'samples/s':>10}"
        if torch is not None:
            header += f" {'torch ms':>10} {'samples/s':>10} {'engine/torch':>13}"
        print(header)
        for name in workloads:
            input_shape, spec = WORKLOADS[name]
            rng = np.random.default_rng(0)
            x = rng.standard_normal((batch_size, *input_shape)).astype(np.float32)
            y = rng.integers(0, CLASSES, batch_size)
            contenders = {}
            contenders["engine"], state = engine_step(spec, input_shape, x, y)
            if torch is not None:
                contenders["torch"] = torch_step(spec, state, x, y)
            times: dict[str, list[float]] = {k: [] for k in contenders}
            rounds = [contenders] * (warmup + steps) if interleave else [
                {label: step} for label, step in contenders.items() for _ in range(warmup + steps)]
            for i, round_ in enumerate(rounds):
                for label, step in round_.items():
                    start = time.perf_counter()
                    step()
                    elapsed = time.perf_counter() - start
                    if i % (warmup + steps) >= warmup:
                        times[label].append(elapsed)
            engine_ms = median_ms(times["engine"])
            line = f"{name:<8} {engine_ms:>10.3f} {batch_size / engine_ms * 1e3:>10.0f}"
            if torch is not None:
                torch_ms = median_ms(times["torch"])
                line += f" {torch_ms:>10.3f} {batch_size / torch_ms * 1e3:>10.0f} {engine_ms / torch_ms:>13.2f}"
            print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnx.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per contender (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed steps first (default 30)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="BLAS/torch threads (default: library default)")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append",
                        help="run only this workload (repeatable; default: all)")
    parser.add_argument("--no-torch", action="store_true", help="time the engine only")
    parser.add_argument("--separate", action="store_true",
                        help="time all engine steps, then all torch steps, instead of interleaving them")
    args = parser.parse_args(argv)
    for option, value, least in (("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                                 ("--batch-size", args.batch_size, 1), ("--threads", args.threads, 1)):
        if value is not None and value < least:
            parser.error(f"{option} must be at least {least}, got {value}")
    run(args.workload or list(WORKLOADS), args.steps, args.warmup, args.batch_size, args.threads, not args.no_torch,
        interleave=not args.separate)


if __name__ == "__main__":
    main()
