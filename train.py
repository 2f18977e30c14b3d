"""Train one configuration (or a multirun grid) and log each seed as an MLflow run."""

import hydra
from omegaconf import DictConfig

from irrepro.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from irrepro.hydra_app import train_from_hydra

    return train_from_hydra(cfg)


if __name__ == "__main__":
    main()
