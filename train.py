"""Train one configuration (or a multirun grid) and log each seed as an MLflow run."""

import gc

gc.disable()  # no collections while the imports build their long-lived objects (gc_policy)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from irrepro.config import register_configs  # noqa: E402
from irrepro.gc_policy import settle  # noqa: E402

register_configs()
settle()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from irrepro.hydra_app import train_from_hydra

    return train_from_hydra(cfg)


if __name__ == "__main__":
    main()
