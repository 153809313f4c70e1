from __future__ import annotations

import numpy as np


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator, fill: np.ndarray | float = 0.0
                 ) -> np.ndarray:
    """Translate each image by its own random offset in [-max_shift, max_shift]; the border it
    uncovers takes ``fill`` (one value, or one per channel).

    Small translations are the augmentation that lifts LeNet-5 on digits from ~0.97 to ~0.985;
    one gather over a padded copy does the whole batch at once.
    """
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    padded = np.empty((n, c, h + 2 * max_shift, w + 2 * max_shift), x.dtype)
    padded[...] = np.asarray(fill, x.dtype).reshape(-1, 1, 1)
    padded[:, :, max_shift:max_shift + h, max_shift:max_shift + w] = x
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    rows = dy[:, None] + np.arange(h)
    cols = dx[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def black_border(normalization: dict) -> np.ndarray:
    """Per channel, what a pixel of 0 in the loader's scale becomes once normalised: the border
    torchvision's padding (before ``Normalize``) gives. Normalised 0 would be the training mean,
    a grey band no validation or test image has."""
    if normalization["mode"] == "none":
        return np.zeros(1, np.float32)
    shift = np.asarray(normalization["shift"], np.float32)
    return (-shift / np.asarray(normalization["scale"], np.float32)).reshape(-1)
