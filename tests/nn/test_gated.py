"""genkernels.nn.GatedActivation: the module is the function, with its dim fixed."""
import pytest
import torch

from genkernels.nn import GatedActivation
from genkernels.ops import gated_activation
from genkernels.ops.gated_activation import gated_activation_ref


@pytest.mark.parametrize("dim", [1, -1])
def test_module_matches_function(dim):
    x = torch.randn(2, 6, 4, requires_grad=True)
    size = x.shape[dim]
    cond = torch.randn(2, size, requires_grad=True)
    module = GatedActivation(dim=dim)
    y = module(x, cond)
    assert torch.equal(y, gated_activation(x, cond, dim))
    torch.testing.assert_close(y, gated_activation_ref(x, cond, dim))
    y.sum().backward()
    assert x.grad.shape == x.shape and cond.grad.shape == cond.shape
    assert torch.equal(module(x), gated_activation(x, None, dim))


def test_module_has_no_state_and_repr():
    module = GatedActivation()
    assert list(module.parameters()) == [] and module.state_dict() == {}
    assert repr(module) == "GatedActivation(dim=1)"
    with pytest.raises(TypeError, match="dim must be an int"):
        GatedActivation(dim="1")
    with pytest.raises(ValueError, match="size must be even"):
        module(torch.zeros(2, 3))
