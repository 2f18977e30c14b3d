"""Hydra sweeper ``hydra/sweeper=irrepro_optuna``: an Optuna study driven by ask/tell."""
