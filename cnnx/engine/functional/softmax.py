"""Numerically stable exponential normalisers: softmax, log_softmax, logsumexp, sigmoid.

All keep the input dtype (float32 stays float32) and never overflow: exponentials are taken
of shifted values that are <= 0, so logits of +-1e4 give finite results.
"""

from __future__ import annotations

import numpy as np


def _finite_max(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
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
    m = _finite_max(x, axis)
    out = np.subtract(x, m, out=out)
    lse = np.exp(out).sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        np.log(lse, out=lse)
    out -= lse
    return out


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
