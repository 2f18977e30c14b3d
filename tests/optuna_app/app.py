"""Tiny Hydra app for the irrepro_optuna sweeper tests.

Objectives: ``(x - 0.3)**2 + weight * n`` and ``x * n`` where ``weight`` comes from the
``kind`` config group; ``objectives: 1`` returns only the first. ``fail_on=<kind>`` raises.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | tuple[float, float]:
    if cfg.kind.name == cfg.fail_on:
        raise RuntimeError(f"deliberate failure for kind={cfg.kind.name}")
    values = ((cfg.x - 0.3) ** 2 + cfg.kind.weight * cfg.n, cfg.x * cfg.n)
    return values if cfg.objectives == 2 else values[0]


if __name__ == "__main__":
    main()
