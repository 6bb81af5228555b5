"""Reference loss primitives: masked softmax cross-entropy and masked mean squared error."""
from __future__ import annotations

from ...primitives import define


def _weights(xp, mask, shape, dtype):
    """The per-position weights, scaled so that the largest is 1, and their sum, the mean's
    denominator: a weighted mean, so the scale cancels (1e300 or 1e-60 weights neither overflow
    nor vanish in ``dtype``), and an all-zero mask gives a loss of 0."""
    if mask is None:
        w = xp.ones(shape, dtype=dtype)
    elif mask.dtype.kind == "b" or not mask.size or mask.max() == 1:  # 0/1 or already scaled: as they are
        w = mask.astype(dtype)
    else:
        w = mask.astype(xp.float64)
        top = w.max()
        w = (w / xp.where(top > 0, top, xp.ones_like(top))).astype(dtype)
    total = w.sum()
    return w, xp.where(total > 0, total, xp.ones_like(total))


def _xent_fwd(xp, logits, labels, mask=None):
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    lse = xp.log(xp.exp(z).sum(axis=-1, keepdims=True))
    logp = z - lse
    flat = logp.reshape(-1, logp.shape[-1])  # fancy indexing: take_along_axis costs ~10 µs of Python per call
    picked = flat[xp.arange(flat.shape[0]), labels.reshape(-1).astype(xp.int64)].reshape(labels.shape)
    w, total = _weights(xp, mask, labels.shape, logits.dtype)
    if mask is not None:  # selected, not multiplied: 0 · (−inf or NaN) at a masked step is NaN
        picked = xp.where(w > 0, picked, 0)
    # weights over the total before the sum: a sum of large terms can overflow where their mean does not;
    # 0 − x, not −x: a loss of exactly zero is +0.0, not −0.0
    loss = 0.0 - (picked * (w / total)).sum()
    return loss, (logp, labels, w, total, mask is not None)


def _xent_bwd(xp, res, g):
    logp, labels, w, total, masked = res
    grad = xp.exp(logp)
    onehot = (labels[..., None] == xp.arange(logp.shape[-1])).astype(grad.dtype)
    grad = grad - onehot
    if masked:  # masked steps: 0, even where logp is NaN
        grad = xp.where(w[..., None] > 0, grad, 0)
    return (g * grad * (w / total)[..., None], None, None)


softmax_cross_entropy = define(
    "softmax_cross_entropy", _xent_fwd, _xent_bwd,
    doc="mean over masked positions of −log softmax(logits)[label]; logits (..., C), labels int (...), mask (...)")


def _mse_fwd(xp, pred, target, mask=None):
    w, total = _weights(xp, mask, pred.shape[:-1], pred.dtype)
    d = pred - target
    if mask is not None:  # selected, not multiplied: a NaN target at a masked step does not count
        d = xp.where(w[..., None] > 0, d, 0)
    denom = total * pred.shape[-1]
    return (d * d * (w / denom)[..., None]).sum(), (d, w, denom)  # divided first, as in the cross-entropy


def _mse_bwd(xp, res, g):
    d, w, denom = res
    gp = g * 2 * d * w[..., None] / denom
    return gp, -gp, None


mse = define("mse", _mse_fwd, _mse_bwd,
             doc="mean over masked positions and features of (pred − target)²; pred, target (..., F), mask (...)")
