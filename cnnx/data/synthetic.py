"""Generated shape images: a learnable dataset of any size, resolution and channel count.

Class k is the k-th pattern of ``PATTERNS`` (bars, diagonals, outlines, …) drawn at a random
position, size, thickness and brightness, plus Gaussian pixel noise; with several channels
each image gets a random tint, so colour carries no class information and only the shape
does. The first two patterns (horizontal vs vertical bar) make the binary case.

Generation is vectorised over samples and runs in fixed-size chunks, so temporaries stay
small while 10^5 images of 64×64 take seconds. Labels are drawn and split first, then each
split is generated straight into one array in train/val/test order: the splits are views,
never copies of a multi-gigabyte array.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np

from cnnx.data.splits import DataSplits, check_split_config, stratified_indices
from cnnx.data.validation import check_dataset
from cnnx.errors import ConfigError

SQRT2 = np.float32(np.sqrt(2.0))
#: Pixels per generation chunk: big enough to amortise Python overhead, small enough that a
#: chunk's temporaries (a few float32 copies) stay in the tens of megabytes.
CHUNK_PIXELS = 1 << 21
MAX_THREADS = 4


# Each pattern maps offsets from the shape centre, dx (n, 1, W) and dy (n, H, 1) in pixels
# (y grows downwards), the half-size r and half-thickness t (n, 1, 1), to a boolean mask
# (n, H, W). Separable parts stay on the small (n, H, 1) / (n, 1, W) arrays until the
# final broadcast, which keeps full-size operations to a few per pixel.
def _box(dx, dy, r):
    return (np.abs(dx) <= r) & (np.abs(dy) <= r)


def _horizontal_bar(dx, dy, r, t):
    return (np.abs(dy) <= t) & (np.abs(dx) <= r)


def _vertical_bar(dx, dy, r, t):
    return (np.abs(dx) <= t) & (np.abs(dy) <= r)


def _diagonal(dx, dy, r, t):
    return (np.abs(dx - dy) <= t * SQRT2) & _box(dx, dy, r)


def _anti_diagonal(dx, dy, r, t):
    return (np.abs(dx + dy) <= t * SQRT2) & _box(dx, dy, r)


def _square(dx, dy, r, t):
    return np.abs(np.maximum(np.abs(dx), np.abs(dy)) - r) <= t


def _plus(dx, dy, r, t):
    return _horizontal_bar(dx, dy, r, t) | _vertical_bar(dx, dy, r, t)


def _circle(dx, dy, r, t):
    d2 = dx * dx + dy * dy
    return (d2 >= np.square(np.maximum(r - t, 0))) & (d2 <= np.square(r + t))


def _cross(dx, dy, r, t):
    return ((np.abs(dx - dy) <= t * SQRT2) | (np.abs(dx + dy) <= t * SQRT2)) & _box(dx, dy, r)


def _disk(dx, dy, r, t):
    return dx * dx + dy * dy <= r * r


def _double_bar(dx, dy, r, t):
    return (np.abs(np.abs(dy) - r / 2) <= t) & (np.abs(dx) <= r)


Pattern = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: Class order: the first ``num_classes`` patterns are used.
PATTERNS: dict[str, Pattern] = {
    "horizontal_bar": _horizontal_bar,
    "vertical_bar": _vertical_bar,
    "diagonal": _diagonal,
    "anti_diagonal": _anti_diagonal,
    "square": _square,
    "plus": _plus,
    "circle": _circle,
    "cross": _cross,
    "disk": _disk,
    "double_bar": _double_bar,
}


def _fill_gaussian(
    rng: np.random.Generator, out: np.ndarray, sigma: float, work: np.ndarray
) -> None:
    """Fill float32 ``out`` with N(0, sigma²) samples in place (Box-Muller).

    About twice as fast as ``Generator.standard_normal(dtype=float32)`` on this workload,
    where noise dominates the generation time. ``work`` is a float32 scratch array of at
    least ``out.size // 2`` elements.
    """
    flat = out.reshape(-1)
    half = flat.size // 2
    radius = work[:half]
    angle = flat[half : 2 * half]  # the output's second half doubles as scratch
    rng.random(out=radius, dtype=np.float32)
    rng.random(out=angle, dtype=np.float32)
    np.subtract(1.0, radius, out=radius)  # (0, 1]: log stays finite
    np.log(radius, out=radius)
    radius *= -2.0
    np.sqrt(radius, out=radius)
    radius *= sigma
    angle *= np.float32(2.0 * np.pi)
    np.cos(angle, out=flat[:half])
    np.sin(angle, out=angle)
    flat[:half] *= radius
    angle *= radius
    if flat.size % 2:
        flat[-1] = sigma * rng.standard_normal(dtype=np.float32)


def render(
    labels: np.ndarray,
    size: int,
    channels: int,
    noise: float,
    seed: np.random.SeedSequence,
) -> np.ndarray:
    """Images (N, channels, size, size) float32 for pattern indices ``labels``."""
    n = len(labels)
    shape_seed, *chunk_seeds = seed.spawn(1 + -(-n // max(1, CHUNK_PIXELS // (size * size))))
    rng = np.random.default_rng(shape_seed)
    f32 = np.float32
    half_size = rng.uniform(0.22, 0.42, n).astype(f32) * size
    # At least ~1.2 px thick so strokes survive at 8×8; ~5% of the side at larger sizes.
    half_thick = (max(0.6, 0.025 * size) * rng.uniform(0.8, 1.25, n)).astype(f32)
    reach = np.minimum(half_size + half_thick, size / 2)
    cx = rng.uniform(reach, size - reach).astype(f32)
    cy = rng.uniform(reach, size - reach).astype(f32)
    brightness = rng.uniform(0.6, 1.0, n)
    tint = rng.uniform(0.3, 1.0, (n, channels)) if channels > 1 else np.ones((n, 1))
    gain = (brightness[:, None] * tint).astype(f32)

    coords = np.arange(size, dtype=f32) + f32(0.5)
    out = np.empty((n, channels, size, size), dtype=f32)
    chunk = max(1, CHUNK_PIXELS // (size * size))
    kinds = list(PATTERNS.values())
    local = threading.local()

    def render_chunk(chunk_index: int) -> None:
        start = chunk_index * chunk
        stop = min(start + chunk, n)
        m = stop - start
        if not hasattr(local, "pattern"):  # per-thread scratch, reused across chunks
            local.pattern = np.empty((min(chunk, n), size, size), dtype=f32)
            local.scaled = np.empty_like(local.pattern)
            local.work = np.empty(min(chunk, n) * channels * size * size // 2 + 1, dtype=f32)
        pattern, scaled = local.pattern[:m], local.scaled[:m]
        block = out[start:stop]
        if noise > 0:
            _fill_gaussian(
                np.random.default_rng(chunk_seeds[chunk_index]), block, noise, local.work
            )
        else:
            block.fill(0.0)
        block_labels = labels[start:stop]
        for k in np.unique(block_labels):
            sel = np.flatnonzero(block_labels == k)
            rows = sel + start
            dx = coords[None, None, :] - cx[rows, None, None]
            dy = coords[None, :, None] - cy[rows, None, None]
            pattern[sel] = kinds[k](
                dx, dy, half_size[rows, None, None], half_thick[rows, None, None]
            )
        for c in range(channels):
            np.multiply(pattern, gain[start:stop, c, None, None], out=scaled)
            block[:, c] += scaled

    # Chunks are independent (each has its own noise stream), so threads change the speed,
    # never the numbers; NumPy releases the GIL inside ufuncs and random fills.
    num_chunks = len(chunk_seeds)
    workers = min(num_chunks, os.cpu_count() or 1, MAX_THREADS)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(render_chunk, range(num_chunks)))
    else:
        for chunk_index in range(num_chunks):
            render_chunk(chunk_index)
    return out


def _check(owner: str, key: str, value, low, high=None, integer=True):
    kind = Integral if integer else Real
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or value < low
        or (high is not None and value > high)
    ):
        accepted = f"{'an integer' if integer else 'a number'} >= {low}"
        if high is not None:
            accepted = f"{'an integer' if integer else 'a number'} in [{low}, {high}]"
        raise ConfigError(f"{owner}: {key}={value!r} is invalid; accepted: {accepted}")


def load_synthetic(
    num_samples: int = 2000,
    size: int = 16,
    channels: int = 1,
    num_classes: int = 4,
    noise: float = 0.1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DataSplits:
    """Balanced, stratified shape images; identical arrays for identical arguments.

    Pixel values are roughly in [0, 1] plus noise, so no normalisation is applied.
    """
    owner = "dataset synthetic"
    _check(owner, "num_samples", num_samples, 2)
    _check(owner, "size", size, 8)
    _check(owner, "channels", channels, 1)
    _check(owner, "num_classes", num_classes, 2, len(PATTERNS))
    _check(owner, "noise", noise, 0, integer=False)
    check_split_config(owner, val_fraction, test_fraction, seed)

    label_seed, split_seed, image_seed = np.random.SeedSequence(seed).spawn(3)
    # Balanced classes: every class gets num_samples // num_classes samples (± 1).
    labels = np.random.default_rng(label_seed).permutation(
        np.arange(num_samples, dtype=np.int64) % num_classes
    )
    split_rng_seed = int(split_seed.generate_state(1)[0])
    train, val, test = stratified_indices(
        labels, val_fraction, test_fraction, split_rng_seed, owner
    )
    ordered = labels[np.concatenate([train, val, test])]
    x, y = check_dataset(
        render(ordered, int(size), int(channels), float(noise), image_seed),
        ordered,
        "dataset 'synthetic'",
    )
    a, b = len(train), len(train) + len(val)
    return DataSplits(
        train=(x[:a], y[:a]),
        val=(x[a:b], y[a:b]),
        test=(x[b:], y[b:]),
        classes=list(PATTERNS)[:num_classes],
        input_shape=(int(channels), int(size), int(size)),
        name="synthetic",
    )
