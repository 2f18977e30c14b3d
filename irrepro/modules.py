"""Users' PyTorch modules (model=module): a factory named by its dotted path, built from
irrepro's init stream, perturbed by one ulp, and stacked K times for replica training."""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from irrepro.activations import get_activation
from irrepro.config import ActivationConfig, ModelConfig

PROBE_ROWS = 2


class ModuleError(ValueError):
    """A user module that cannot be loaded, built or stacked; the message is one line."""


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def load_factory(target: str) -> Callable[..., nn.Module]:
    """The callable that `target` (PKG.MOD.FACTORY) names: a function or an nn.Module class."""
    module_name, _, attribute = target.rpartition(".")
    if not module_name or not attribute:
        raise ModuleError(f"model.target={target!r} is not a dotted path PKG.MOD.FACTORY")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a missing module, or any error the module raises on import
        raise ModuleError(
            f"model.target={target}: cannot import {module_name!r} ({_one_line(error)})"
        ) from None
    if not hasattr(module, attribute):
        raise ModuleError(f"model.target={target}: {module_name!r} has no {attribute!r}")
    factory = getattr(module, attribute)
    if not callable(factory):
        raise ModuleError(
            f"model.target={target}: {attribute!r} is a {type(factory).__name__}, not callable"
        )
    return factory


class ActivationModule(nn.Module):
    """One of irrepro's activation functions as an nn.Module, for factories that take one."""

    def __init__(self, config: ActivationConfig):
        super().__init__()
        self.name = config.name
        self.function = get_activation(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)

    def extra_repr(self) -> str:
        return self.name


def _takes_activation(factory: Callable) -> bool:
    """Whether `factory` has a parameter named `activation` that a keyword can set."""
    try:
        parameter = inspect.signature(factory).parameters.get("activation")
    except (TypeError, ValueError):  # no signature to inspect (some builtins)
        return False
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return parameter is not None and parameter.kind in keyword_kinds


def build_module(
    config: ModelConfig, in_features: int, out_features: int, activation: ActivationConfig,
    generator: torch.Generator,
) -> nn.Module:
    """The module that `config.target` builds, called as
    factory(in_features=D, out_features=O, **config.kwargs) (+ activation= if it takes one).

    Its initialization comes from `generator` (the init stream): the factory runs with torch's
    global CPU generator seeded from it, inside `fork_rng`, so the global state is left as it
    was. The module must map a float batch [B, D] to logits [B, O].
    """
    factory = load_factory(config.target)
    kwargs = {"in_features": in_features, "out_features": out_features, **config.kwargs}
    if _takes_activation(factory):
        kwargs["activation"] = ActivationModule(activation)
    seed = int(torch.randint(2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        try:
            module = factory(**kwargs)
        except Exception as error:  # the user's code: report whatever it raised, in one line
            names = ", ".join(f"{key}=" for key in kwargs)
            raise ModuleError(
                f"model.target={config.target}: calling it with ({names}) failed "
                f"({_one_line(error)})"
            ) from None
    check_module(module, config.target, in_features, out_features)
    return module


def check_module(module: object, target: str, in_features: int, out_features: int) -> None:
    """Raise ModuleError unless `module` is an nn.Module with parameters that maps a float
    batch [B, in_features] to logits [B, out_features] (checked on a copy, state untouched)."""
    if not isinstance(module, nn.Module):
        raise ModuleError(
            f"model.target={target} returned a {type(module).__name__}, not a torch.nn.Module"
        )
    if not any(True for _ in module.parameters()):
        raise ModuleError(f"model.target={target} returned a module with no parameters")
    probe = copy.deepcopy(module)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        try:
            logits = probe(torch.zeros(PROBE_ROWS, in_features))
        except Exception as error:  # the user's forward: report whatever it raised
            raise ModuleError(
                f"model.target={target}: its module fails on a float batch "
                f"[{PROBE_ROWS}, {in_features}] ({_one_line(error)})"
            ) from None
    expected = (PROBE_ROWS, out_features)
    if not (isinstance(logits, torch.Tensor) and logits.is_floating_point()
            and tuple(logits.shape) == expected):
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModuleError(
            f"model.target={target}: its module maps a batch [{PROBE_ROWS}, {in_features}] to "
            f"{got}, not to float logits {list(expected)}"
        )


def aligned_slabs(module: nn.Module) -> bool:
    """Whether every parameter matrix of `module` holds a multiple of 4 floats, so that each
    replica's slab of a stacked [K, ...] parameter (and gradient) starts 16-byte aligned."""
    return all(p.numel() % 4 == 0 for p in module.parameters() if p.dim() >= 2)


def _architecture(module: nn.Module) -> list[tuple]:
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [type(module), *((name, t.shape, t.dtype) for name, t in tensors)]


class StackedModules(nn.Module):
    """K modules of one architecture as one module: input [K, B, D], output logits [K, B, O].

    Their parameters and buffers are stacked with `torch.func.stack_module_state` into
    [K, ...] tensors, registered here (so a torch optimizer trains all K at once), and the
    modules run through `torch.func.functional_call`:

    - vectorize=True (default): under `torch.vmap`, one batched call. Batch norm in training
      mode works (each replica updates its own running statistics). Modules vmap cannot batch
      (random operations such as dropout, data-dependent control flow, `.item()`) fail at the
      first forward with a one-line ModuleError. Replica i computes bit for bit what its
      module computes alone when every parameter matrix holds a multiple of 4 floats
      (`aligned_slabs`): MKL's batched products round a replica's result differently when its
      slab does not start on a 16-byte boundary, as happens at odd places otherwise. A single
      replica runs as a stack of two (see `_vmap_as_pair`).
    - vectorize=False: a loop over the replicas, each called with its own slices: replica i
      computes bit for bit what its module computes alone, whatever K and its position; slower
      for many small replicas. Random operations draw from torch's global generator in turn.
    """

    def __init__(self, modules: Sequence[nn.Module], vectorize: bool = True):
        super().__init__()
        if not modules:
            raise ModuleError("StackedModules needs at least one module")
        if any(_architecture(m) != _architecture(modules[0]) for m in modules):
            raise ModuleError("stacked modules must share one architecture (parameter names, "
                              "shapes and dtypes)")
        params, buffers = torch.func.stack_module_state(list(modules))
        self.replicas = len(modules)
        self.vectorize = vectorize
        self.parameter_names = tuple(params)
        self.buffer_names = tuple(buffers)
        self.stacked = nn.ParameterList(params.values())
        for index, tensor in enumerate(buffers.values()):
            self.register_buffer(f"buffer{index}", tensor)
        # The architecture without storage; kept in a tuple so that it is not a submodule.
        self._template = (copy.deepcopy(modules[0]).to("meta"),)

    def train(self, mode: bool = True) -> StackedModules:
        super().train(mode)
        self._template[0].train(mode)
        return self

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = dict(zip(self.parameter_names, self.stacked, strict=True))
        buffers = {name: getattr(self, f"buffer{index}")
                   for index, name in enumerate(self.buffer_names)}
        return params, buffers

    def _call(self, params: dict, buffers: dict, inputs: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._template[0], (params, buffers), (inputs,))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 3 or inputs.shape[0] != self.replicas:
            raise ValueError(f"StackedModules takes inputs [K={self.replicas}, B, D], got "
                             f"{list(inputs.shape)}")
        params, buffers = self._state()
        if not self.vectorize:
            return torch.stack([
                self._call({k: v[i] for k, v in params.items()},
                           {k: v[i] for k, v in buffers.items()}, inputs[i])
                for i in range(self.replicas)
            ])
        try:
            if self.replicas > 1:
                return torch.vmap(self._call)(params, buffers, inputs)
            return self._vmap_as_pair(params, buffers, inputs)
        except RuntimeError as error:
            raise ModuleError(
                f"torch.vmap cannot batch this module ({_one_line(error)}); modules with "
                "random operations (dropout), data-dependent control flow or .item() need "
                "StackedModules(..., vectorize=False)"
            ) from None

    def _vmap_as_pair(self, params: dict, buffers: dict, inputs: torch.Tensor) -> torch.Tensor:
        """One replica under vmap as a stack of two, itself and a copy whose result is
        dropped: a batch of one takes other kernels (gemv for a single output) that round
        differently. The copy's parameters are detached (it adds no gradient) and the
        replica's buffers (batch-norm statistics) are written back from its own slot."""
        paired = {name: torch.cat([tensor, tensor.detach()]) for name, tensor in params.items()}
        paired_buffers = {name: torch.cat([tensor, tensor]) for name, tensor in buffers.items()}
        logits = torch.vmap(self._call)(paired, paired_buffers, torch.cat([inputs, inputs]))
        with torch.no_grad():
            for name, tensor in buffers.items():
                tensor.copy_(paired_buffers[name][:1])
        return logits[:1]


def output_features(n_classes: int) -> int:
    """Logits a module emits for `n_classes` labels: 1 for binary, C for C classes."""
    return 1 if n_classes == 2 else n_classes
