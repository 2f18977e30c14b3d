"""The training engine: K replicas (one per seed) trained together as one stacked model."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from irrepro.activations import get_activation
from irrepro.config import Config, OptimizerConfig
from irrepro.data import Dataset
from irrepro.metrics import log_loss
from irrepro.models import (
    StackedNet,
    encode_inputs,
    init_parameters,
    pad_rows,
    perturb_one_weight,
    predict_probabilities,
)
from irrepro.schedule import checkpoint_steps, convergence_step, loss_change, lr_factor
from irrepro.seeds import numpy_generator, torch_generator
from irrepro.shuffle import shuffle_order


@dataclass
class ReplicaResult:
    """What one replica (one seed) produced: test predictions or the reason it failed.

    `checkpoints` holds the test predictions at `checkpoint_steps` (rows in step order, the
    last row equal to `predictions`), when checkpoints were asked for. `train_loss` is its
    final log loss on the whole training set, `loss_change` the relative fall of that loss
    over the last tenth of training.
    """

    seed: int
    predictions: np.ndarray | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    failure: str | None = None
    checkpoint_steps: np.ndarray | None = None
    checkpoints: np.ndarray | None = None
    train_loss: float = math.nan
    loss_change: float = math.nan


def make_deterministic(threads: int) -> None:
    """Set every piece of global torch state a run depends on (workers may be reused)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(0)


def build_model(config: Config, seeds: list[int]) -> StackedNet:
    """One replica per seed, each initialized from its own generator, stacked."""
    mode = config.randomness.name
    replicas = []
    for seed in seeds:
        params = init_parameters(
            config.model, config.data.dim, torch_generator("init", seed, mode)
        )
        if mode == "perturb":
            perturb_one_weight(params, numpy_generator("perturb", seed, mode))
        replicas.append(params)
    return StackedNet(replicas, get_activation(config.activation))


def make_optimizer(
    config: OptimizerConfig, params, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """An element-wise optimizer, so that stacked replicas stay independent, and its
    learning-rate schedule (stepped once per update)."""
    optimizers = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}
    optimizer = optimizers[config.name](params, lr=config.lr, foreach=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.schedule, total_steps)
    )
    return optimizer, schedule


def total_steps(config: Config) -> int:
    """Updates in a run: batches per pass (the last one may be partial) times passes."""
    return math.ceil(config.data.n_train / config.train.batch_size) * config.train.passes


def _epoch_orders(config: Config, generators: list[np.random.Generator]) -> torch.Tensor:
    n = config.data.n_train
    window = config.randomness.window
    return torch.from_numpy(np.stack([shuffle_order(n, window, rng) for rng in generators]))


def train_replicas(config: Config, seeds: list[int], dataset: Dataset) -> list[ReplicaResult]:
    """Train one model per seed in one stacked computation and predict the test set."""
    make_deterministic(config.train.threads)
    device = torch.device(config.train.device)
    mode = config.randomness.name
    results = [ReplicaResult(seed) for seed in seeds]
    steps = total_steps(config)
    wanted = checkpoint_steps(config.train.checkpoints, steps)
    model = build_model(config, seeds).to(device)
    optimizer, schedule = make_optimizer(config.optimizer, model.parameters(), steps)
    x_train = encode_inputs(config.model, dataset.x_train).to(device)
    y_train = torch.from_numpy(dataset.y_train).to(device)
    x_test = encode_inputs(config.model, dataset.x_test).to(device)
    shufflers = [numpy_generator("shuffle", seed, mode) for seed in seeds]
    snapshots: list[np.ndarray] = []
    losses_before: list[float] = []

    opens_last_tenth = convergence_step(steps, config.optimizer.schedule)

    def observe(step: int) -> None:
        """Test predictions at a checkpoint before the last (the last are the final ones),
        and the training-set loss where the last tenth of training begins."""
        if step in wanted[:-1]:
            snapshots.append(predict_probabilities(model, x_test))
        if step == opens_last_tenth:
            losses_before.extend(_train_losses(model, x_train, dataset.y_train))

    observe(0)
    with tqdm(total=steps, desc="train", unit="step", leave=False,
              disable=None if config.train.progress else True) as progress:
        _train_passes(config, model, (optimizer, schedule), x_train, y_train, shufflers,
                      results, progress, steps, observe)
    if not all(result.failure for result in results):
        _predict(model, x_test, results, wanted, snapshots)
        losses = _train_losses(model, x_train, dataset.y_train)
        for result, before, after in zip(results, losses_before, losses, strict=True):
            result.train_loss, result.loss_change = after, loss_change(before, after)
    return results


def _train_losses(model, x_train, y_train) -> list[float]:
    """Each replica's log loss on the whole training set."""
    return [log_loss(p, y_train) for p in predict_probabilities(model, x_train)]


def _train_passes(
    config, model, optimizers, x_train, y_train, shufflers, results, progress, total_steps,
    observe,
):
    """Every pass over the training data; stops early once every replica has diverged.

    `optimizers` is the optimizer and its schedule; `observe(step)` runs after every update.
    """
    optimizer, schedule = optimizers
    batch = config.train.batch_size
    loss_sum = torch.zeros(len(results), dtype=torch.float64, device=x_train.device)
    since_log = step = 0
    for _ in range(config.train.passes):
        orders = _epoch_orders(config, shufflers).to(x_train.device)
        for start in range(0, config.data.n_train, batch):
            # Padded rows (example 0) keep every replica's slab aligned; they leave the loss
            # before its mean, so their gradient is exactly zero.
            indices = pad_rows(orders[:, start:start + batch], dim=1)
            rows = min(batch, config.data.n_train - start)
            losses = F.binary_cross_entropy_with_logits(
                model(x_train[indices]), y_train[indices], reduction="none"
            )[:, :rows].mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            schedule.step()
            loss_sum += losses.detach()
            since_log += 1
            step += 1
            progress.update()
            observe(step)
            if since_log == config.train.log_every or step == total_steps:
                _record(results, step, (loss_sum / since_log).tolist())
                loss_sum.zero_()
                since_log = 0
                if all(result.failure for result in results):
                    return


def _record(results: list[ReplicaResult], step: int, losses: list[float]) -> None:
    for result, loss in zip(results, losses, strict=True):
        if result.failure:
            continue
        if not math.isfinite(loss):
            result.failure = f"training loss diverged ({loss}) by step {step}"
        else:
            result.curve.append((step, loss))


def _predict(model, x_test, results, wanted, snapshots) -> None:
    """Final test predictions of each replica that did not fail, and its checkpoints."""
    final = predict_probabilities(model, x_test)
    history = np.stack([*snapshots, final], axis=1) if len(wanted) else None
    for index, result in enumerate(results):
        if result.failure:
            continue
        if not np.isfinite(final[index]).all():
            result.failure = "test predictions are not finite"
            continue
        result.predictions = final[index]
        if history is not None:
            result.checkpoint_steps, result.checkpoints = wanted, history[index]
