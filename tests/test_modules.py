"""User modules: factories by dotted path, initialization from the init stream, one-ulp
perturbation, and K modules stacked for replica training."""

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from irrepro.config import ActivationConfig, ModelConfig
from irrepro.models import perturb_one_weight
from irrepro.modules import (
    ActivationModule,
    ModuleError,
    StackedModules,
    build_module,
    load_factory,
    output_features,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
USER_FACTORIES = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, in_features, out_features, width=4):
            super().__init__()
            self.hidden = nn.Linear(in_features, width)
            self.out = nn.Linear(width, out_features)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(x)))

    class Gated(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.layer = nn.Linear(in_features, out_features)

        def forward(self, x):
            return self.layer(x) if x.sum() > 0 else -self.layer(x)

    def not_a_module(in_features, out_features):
        return 3

    def ignores_out_features(in_features, out_features):
        return nn.Linear(in_features, 5)

    def dropout(in_features, out_features):
        return nn.Sequential(nn.Linear(in_features, 8), nn.Dropout(0.5), nn.Linear(8, out_features))

    def fixed_inputs(in_features, out_features):
        return nn.Linear(5, out_features)

    def batch_norm(in_features, out_features):
        return nn.Sequential(nn.Linear(in_features, 8), nn.BatchNorm1d(8),
                             nn.Linear(8, out_features))

    LIMIT = 3
""")


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    """examples/ and a temporary folder with user factories (user_factories.py, broken.py)
    on sys.path; the modules imported from them are forgotten afterwards."""
    (tmp_path / "user_factories.py").write_text(USER_FACTORIES)
    (tmp_path / "broken.py").write_text("raise RuntimeError('no GPU\\nfound')\n")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("mlp", "user_factories", "broken"):
        sys.modules.pop(name, None)


def build(target, seed=0, in_features=8, out_features=3, activation="relu", **kwargs):
    config = ModelConfig(name="module", target=target, kwargs=kwargs)
    return build_module(config, in_features, out_features, ActivationConfig(name=activation),
                        torch.Generator().manual_seed(seed))


def test_factories_load_by_dotted_path(on_path):
    import mlp
    import user_factories

    assert load_factory("mlp.mlp") is mlp.mlp
    assert load_factory("user_factories.Net") is user_factories.Net
    assert load_factory("torch.nn.Linear") is nn.Linear


@pytest.mark.parametrize(
    "target, message",
    [("nodots", "not a dotted path"),
     ("no_such_package_here.factory", r"cannot import 'no_such_package_here' \(Module"),
     ("broken.factory", r"cannot import 'broken' \(RuntimeError: no GPU found\)"),
     ("user_factories.missing", "'user_factories' has no 'missing'"),
     ("user_factories.LIMIT", "'LIMIT' is a int, not callable")],
)
def test_targets_that_do_not_load_fail_in_one_line(on_path, target, message):
    with pytest.raises(ModuleError, match=message) as error:
        load_factory(target)
    assert "\n" not in str(error.value) and target in str(error.value)


def test_build_passes_sizes_kwargs_and_the_activation(on_path):
    model = build("mlp.mlp", activation="smelu", hidden=5, depth=2)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [5, 5, 3]
    assert isinstance(model[1], ActivationModule) and model[1].name == "smelu"
    x = torch.linspace(-2, 2, 9)
    assert torch.equal(model[1](x), torch.where(x.abs() <= 1, (x + 1) ** 2 / 4, x.relu()))
    net = build("user_factories.Net", width=6)  # no activation parameter: none passed
    assert net.hidden.out_features == 6
    assert build("torch.nn.Linear", out_features=1).weight.shape == (1, 8)


def test_initialization_comes_from_the_init_generator_only(on_path):
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    first = build("mlp.mlp", seed=4)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global state is untouched
    torch.manual_seed(999)
    again, other = build("mlp.mlp", seed=4), build("mlp.mlp", seed=5)
    for a, b, c in zip(first.parameters(), again.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b) and not torch.equal(a, c)
    generator = torch.Generator().manual_seed(4)
    config = ModelConfig(name="module", target="mlp.mlp")
    build_module(config, 8, 3, ActivationConfig(), generator)
    assert not torch.equal(generator.get_state(), torch.Generator().manual_seed(4).get_state())


@pytest.mark.parametrize(
    "target, kwargs, message",
    [("user_factories.not_a_module", {}, "returned a int, not a torch.nn.Module"),
     ("user_factories.ignores_out_features", {}, r"to \[2, 5\], not to float logits \[2, 3\]"),
     ("torch.nn.Linear", {"hidden": 3}, r"calling it with \(in_features=, out_features=, "
                                        r"hidden=\) failed \(TypeError"),
     ("torch.nn.Identity", {}, "a module with no parameters"),
     ("user_factories.fixed_inputs", {}, r"fails on a float batch \[2, 8\] \(RuntimeError")],
)
def test_factories_that_build_no_usable_module_fail_in_one_line(on_path, target, kwargs,
                                                                message):
    with pytest.raises(ModuleError, match=message) as error:
        build(target, **kwargs)
    assert "\n" not in str(error.value)


def test_perturbation_moves_one_element_by_one_ulp(on_path):
    model = build("mlp.mlp")
    before = [p.detach().clone() for p in model.parameters()]
    name, index = perturb_one_weight(dict(model.named_parameters()),
                                     np.random.default_rng(3))
    changed = [(a != p.detach()).sum().item() for a, p in zip(before, model.parameters(),
                                                                strict=True)]
    assert sum(changed) == 1
    old = dict(zip([n for n, _ in model.named_parameters()], before, strict=True))[name]
    new = dict(model.named_parameters())[name].detach()
    moved = new.view(-1)[index].numpy()
    assert moved in (np.nextafter(old.view(-1)[index].numpy(), np.float32(np.inf)),
                     np.nextafter(old.view(-1)[index].numpy(), np.float32(-np.inf)))
    again = dict(build("mlp.mlp").named_parameters())
    assert perturb_one_weight(again, np.random.default_rng(3)) == (name, index)


@pytest.fixture
def replicas(on_path):
    return [build("mlp.mlp", seed=seed, activation="softplus", hidden=16, depth=2)
            for seed in range(4)]


def test_a_vmapped_replica_computes_what_its_module_computes_alone(replicas):
    stack = StackedModules(replicas)
    assert len(list(stack.parameters())) == len(list(replicas[0].parameters()))
    inputs = torch.randn(4, 100, 8, generator=torch.Generator().manual_seed(0))
    logits = stack(inputs)
    assert logits.shape == (4, 100, 3)
    for i, module in enumerate(replicas):
        # batched products may round differently from single ones: a few float32 ulps
        torch.testing.assert_close(logits[i], module(inputs[i]), rtol=0, atol=1e-6)


def test_a_looped_replica_is_bit_identical_at_any_position(replicas):
    inputs = torch.randn(4, 100, 8, generator=torch.Generator().manual_seed(0))
    logits = StackedModules(replicas, vectorize=False)(inputs)
    alone = StackedModules(replicas[2:3], vectorize=False)(inputs[2:3])
    assert torch.equal(logits[2], alone[0])
    for i, module in enumerate(replicas):
        assert torch.equal(logits[i], module(inputs[i]))


@pytest.mark.parametrize("vectorize", [True, False])
def test_gradients_train_every_replica(replicas, vectorize):
    stack = StackedModules(replicas, vectorize=vectorize)
    inputs = torch.randn(4, 32, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4 * 32).reshape(4, 32) % 3
    loss = nn.functional.cross_entropy(stack(inputs).reshape(-1, 3), labels.reshape(-1),
                                       reduction="sum")
    loss.backward()
    for i, module in enumerate(replicas):
        nn.functional.cross_entropy(module(inputs[i]), labels[i], reduction="sum").backward()
        for stacked, own in zip(stack.parameters(), module.parameters(), strict=True):
            torch.testing.assert_close(stacked.grad[i], own.grad, rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in stack.parameters()]
    torch.optim.SGD(stack.parameters(), lr=0.1).step()
    assert all(not torch.equal(a, p) for a, p in zip(before, stack.parameters(), strict=True))


def test_batch_norm_keeps_running_statistics_per_replica(on_path):
    modules = [build("user_factories.batch_norm", seed=seed) for seed in range(3)]
    stack = StackedModules(modules)
    inputs = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(2))
    stack(inputs)
    for i, module in enumerate(modules):
        module(inputs[i])
        torch.testing.assert_close(stack.buffer0[i], module[1].running_mean)
    stack.eval()
    torch.testing.assert_close(stack(inputs)[1], modules[1].eval()(inputs[1]))


@pytest.mark.parametrize("target", ["user_factories.dropout", "user_factories.Gated"])
def test_modules_vmap_cannot_batch_fail_at_the_first_batch(on_path, target):
    modules = [build(target, seed=seed) for seed in range(2)]
    inputs = torch.ones(2, 4, 8)
    with pytest.raises(ModuleError, match=r"torch\.vmap cannot batch this module") as error:
        StackedModules(modules)(inputs)
    assert "\n" not in str(error.value)
    if target.endswith("Gated"):  # the loop takes what vmap cannot
        looped = StackedModules(modules, vectorize=False)(inputs)
        assert torch.equal(looped[1], modules[1](inputs[1]))


def test_stacks_refuse_mixed_architectures_and_misshapen_inputs(on_path):
    with pytest.raises(ModuleError, match="one architecture"):
        StackedModules([build("mlp.mlp", hidden=4), build("mlp.mlp", hidden=5)])
    with pytest.raises(ValueError, match=r"inputs \[K=2, B, D\]"):
        StackedModules([build("mlp.mlp"), build("mlp.mlp")])(torch.ones(3, 4, 8))


def test_one_logit_for_binary_labels_one_per_class_otherwise():
    assert (output_features(2), output_features(10)) == (1, 10)