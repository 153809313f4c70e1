"""Numerically stable exponential normalisers: softmax, log_softmax, logsumexp, sigmoid.

All keep the input dtype (float32 stays float32) and never overflow: exponentials are taken
of shifted values that are <= 0, so logits of +-1e4 give finite results.
"""

from __future__ import annotations

import numpy as np


def _finite_max(x: np.ndarray, axis: int) -> np.ndarray:
    # The ufunc's own reduce: np.max's Python wrapper costs a microsecond, a tenth of a fused
    # cross-entropy on a batch of 64.
    m = np.maximum.reduce(x, axis=axis, keepdims=True)
    # Shifting by an infinite max would turn the row into nan (inf - inf); shifting such
    # rows by 0 instead lets exp/log produce the correct limit (0, inf or -inf).
    if not np.isfinite(m).all():
        m = np.where(np.isfinite(m), m, 0)
    return m


def logsumexp(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """``log(sum(exp(x), axis))`` without overflow or underflow to -inf."""
    m = _finite_max(x, axis)
    tmp = np.subtract(x, m)
    np.exp(tmp, out=tmp)
    s = tmp.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):  # an all -inf row has logsumexp -inf, by definition
        out = np.log(s, out=s)
    out += m
    return out if keepdims else np.squeeze(out, axis=axis)


def softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis``; ``out`` may be ``x`` itself."""
    m = _finite_max(x, axis)
    out = np.subtract(x, m, out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def log_softmax(x: np.ndarray, axis: int = -1, out: np.ndarray | None = None) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis``, accurate even where softmax underflows to 0."""
    out, _, sums = softmax_parts(x, axis, out=out)
    with np.errstate(divide="ignore"):  # an all -inf row sums to 0, whose log is -inf
        np.log(sums, out=sums)
    out -= sums
    return out


def softmax_parts(
    x: np.ndarray, axis: int = -1, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(shifted, exps, sums)``: ``x`` minus its finite maxima along ``axis`` (into ``out``),
    ``exp(shifted)`` and its sums (axis kept), so that

        log_softmax(x) = shifted - log(sums)        softmax(x) = exps / sums

    For callers that need both, or only some entries of the log-softmax, at the cost of one
    exponential per element: a fused loss takes its value from a few entries of the first
    and its gradient from the second. ``exps`` is a new C-ordered array whatever the layout
    of ``x``, so a caller may write into it through a flat view.
    """
    shifted = np.subtract(x, _finite_max(x, axis), out=out)
    exps = np.exp(shifted, order="C")
    return shifted, exps, exps.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``1 / (1 + exp(-x))``, exact in both tails; ``out`` may be ``x`` itself.

    For very negative x, exp(-x) overflows to inf and 1 / inf is 0, which is the correctly
    rounded result; for very positive x, 1 + exp(-x) rounds to 1. So the plain formula is
    stable once the (harmless) overflow warning is silenced, and it costs one exp per
    element instead of the two of the branchy ``exp(min(x, 0)) / (1 + exp(-|x|))`` form.
    """
    out = np.negative(x, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1
    return np.reciprocal(out, out=out)


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` = ``-log(sigmoid(-x))``, written so that neither tail overflows."""
    tail = np.abs(x)
    np.negative(tail, out=tail)
    np.exp(tail, out=tail)
    np.log1p(tail, out=tail)
    return np.add(np.maximum(x, 0), tail, out=tail)
