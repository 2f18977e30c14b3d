"""An example factory for model=module: a small MLP.

From the project root: `python train.py model=module model.target=examples.mlp.mlp
+model.kwargs.hidden=32 +model.kwargs.depth=2` (or put examples/ on PYTHONPATH and use
`model.target=mlp.mlp`).
"""

from torch import nn


def mlp(
    in_features: int, out_features: int, hidden: int = 16, depth: int = 1,
    activation: nn.Module | None = None,
) -> nn.Module:
    """`depth` hidden layers of `hidden` units with `activation` (ReLU by default), then a
    linear layer to `out_features` logits."""
    activation = activation if activation is not None else nn.ReLU()
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), activation]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
