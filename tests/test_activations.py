import pytest
import torch
import torch.nn.functional as F

from irrepro.activations import get_activation, smelu
from irrepro.config import ACTIVATIONS, ActivationConfig


def formula(x, beta):
    if x <= -beta:
        return 0.0, 0.0
    if x >= beta:
        return x, 1.0
    return (x + beta) ** 2 / (4 * beta), (x + beta) / (2 * beta)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("offset", [-3.0, -1.0, -1.0001, -0.9999, -0.5, 0.0, 0.5, 0.9999, 1.0,
                                    1.0001, 3.0])
def test_smelu_values_and_gradients_follow_the_formula(beta, offset):
    x = torch.tensor(offset * beta, dtype=torch.float64, requires_grad=True)
    y = smelu(x, beta)
    y.backward()
    value, slope = formula(offset * beta, beta)
    assert y.item() == pytest.approx(value, abs=1e-12)
    assert x.grad.item() == pytest.approx(slope, abs=1e-12)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_smelu_gradient_is_continuous_at_the_joints(beta):
    for joint in (-beta, beta):
        x = torch.tensor([joint - 1e-7, joint, joint + 1e-7], dtype=torch.float64,
                         requires_grad=True)
        smelu(x, beta).sum().backward()
        assert (x.grad.max() - x.grad.min()).item() < 1e-6


def test_smelu_matches_relu_far_from_zero():
    x = torch.linspace(-10, 10, 101, dtype=torch.float64)
    far = x.abs() > 1.5
    assert torch.equal(smelu(x, 1.5)[far], F.relu(x)[far])


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_named_activation_is_available(name):
    fn = get_activation(ActivationConfig(name=name))
    out = fn(torch.linspace(-2, 2, 5))
    assert out.shape == (5,) and torch.isfinite(out).all()
