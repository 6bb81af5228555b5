"""SequenceModel: cell fields reach every layer; loss gradients equal finite differences (float64)."""
import numpy as np
import pytest

from seqcore.models import HeadSpec, SequenceModel
from seqcore.tree import tree_leaves, tree_map


@pytest.mark.parametrize("cell", ["diaggru", "cifg-lstm"])
def test_multi_head_input_projections_in_a_stack(cell):
    # heads=2 must be checked against the real sizes (8 inputs, 8 hidden), not placeholder ones
    model = SequenceModel(cell, 8, 6, (HeadSpec("y", 3, "last"),), num_layers=2, cell_kwargs={"heads": 2})
    params = tree_map(lambda v: v.astype(np.float64), model.init(np.random.default_rng(0), np.float64))
    assert params["rnn"][0]["weight_ih"].shape[0] == 2 and params["rnn"][1]["weight_ih"].shape[0] == 2
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 8))
    y = rng.integers(0, 3, size=3)
    mask = np.zeros((3, 5))
    mask[np.arange(3), [4, 2, 3]] = 1.0
    batch = (x, y, mask)
    loss, grads = model.loss_and_grad(params, batch)
    leaves, glist = tree_leaves(params), tree_leaves(grads)
    eps = 1e-6
    for k in range(len(leaves)):
        idx = tuple(int(rng.integers(0, s)) for s in leaves[k].shape)
        values = []
        for sign in (1, -1):
            leaves[k][idx] += sign * eps
            values.append(float(model.loss(params, batch)))
            leaves[k][idx] -= sign * eps
        fd = (values[0] - values[1]) / (2 * eps)
        assert glist[k][idx] == pytest.approx(fd, rel=1e-5, abs=1e-8), k
    with pytest.raises(ValueError, match="heads: got 3, expected a divisor"):
        SequenceModel(cell, 8, 6, (HeadSpec("y", 3, "last"),), cell_kwargs={"heads": 3}).init(np.random.default_rng(0))
