"""The training engine: K replicas (one per seed) trained together as one stacked model, a
built-in network (`StackedNet`) or a user's module stacked K times (`StackedModules`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from irrepro import mitigations
from irrepro import schedule as schedules
from irrepro.activations import get_activation
from irrepro.config import Config, ConfigError, OptimizerConfig, check_steps, random_sources
from irrepro.data import Dataset
from irrepro.metrics import log_loss
from irrepro.models import (
    PREDICT_ROWS,
    DropoutMasks,
    StackedNet,
    aligned_rows,
    encode_inputs,
    hidden_widths,
    init_parameters,
    pad_rows,
    perturb_one_weight,
    predict_probabilities,
)
from irrepro.modules import (
    StackedModules,
    aligned_slabs,
    build_module,
    output_features,
)
from irrepro.schedule import checkpoint_steps, convergence_step, loss_change, lr_factor
from irrepro.seeds import numpy_generator, torch_generator
from irrepro.streams import BASE, TrainingStream


@dataclass
class ReplicaResult:
    """What one replica (one seed) produced: test predictions (float32 [N] for binary labels,
    [N, C] for C classes) or the reason it failed.

    `checkpoints` holds the test predictions at `checkpoint_steps` (rows in step order, the
    last row equal to `predictions`), when checkpoints were asked for. `train_loss` is its
    final log loss on the whole training set (`train_predictions`), `loss_change` the
    relative fall of that loss over the last tenth of training.
    """

    seed: int
    predictions: np.ndarray | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    failure: str | None = None
    checkpoint_steps: np.ndarray | None = None
    checkpoints: np.ndarray | None = None
    train_loss: float = math.nan
    loss_change: float = math.nan
    train_predictions: np.ndarray | None = None


def make_deterministic(threads: int) -> None:
    """Set every piece of global torch state a run depends on (workers may be reused)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(0)


def build_model(
    config: Config, seeds: list[int], features: int | None = None, outputs: int = 1
) -> StackedNet | StackedModules:
    """One replica per seed for `features` inputs (default `data.dim`) and `outputs` logits,
    each initialized from its own init stream (and perturbed by its perturb stream), stacked;
    under co-distillation or for an ensemble, `members` replicas per seed (seed-major),
    member m from the seed's streams for member m. With `model.dropout`, each replica draws
    its masks from its own dropout stream (the base one until a fork).

    A user's module (model=module) is stacked with `StackedModules`: under torch.vmap when its
    parameter matrices keep every replica's slab aligned (then vmap is bit-exact), else
    through the per-replica loop (exact at any shape); one vmap cannot batch raises
    ModuleError.
    """
    sources = random_sources(config.randomness)
    forked = config.randomness.fork_step > 0
    perturb = "perturb" in sources and not forked  # a fork perturbs at its step instead
    features = config.data.dim if features is None else features
    replicas = replica_ids(config, seeds)
    if config.model.name == "module":
        modules = []
        for seed, member in replicas:
            module = build_module(config.model, features, outputs, config.activation,
                                  torch_generator("init", seed, sources, member))
            if perturb:
                perturb_one_weight(dict(module.named_parameters()),
                                   numpy_generator("perturb", seed, sources, member))
            modules.append(module)
        return StackedModules(modules, vectorize=aligned_slabs(modules[0]))
    stacked = []
    for seed, member in replicas:
        params = init_parameters(
            config.model, features, torch_generator("init", seed, sources, member), outputs
        )
        if perturb:
            perturb_one_weight(params, numpy_generator("perturb", seed, sources, member))
        stacked.append(params)
    masks = None
    if config.model.dropout > 0:
        before = BASE if forked else sources  # a fork draws the seed's masks after its step
        masks = DropoutMasks(config.model.dropout, [
            torch_generator("dropout", seed, before, member) for seed, member in replicas])
    return StackedNet(stacked, get_activation(config.activation), masks)


def replica_ids(config: Config, seeds: list[int]) -> list[tuple[int, int]]:
    """(seed, member) of each replica of a job, seed-major: `members` per seed under
    co-distillation or for an ensemble, else one."""
    return [(seed, member) for seed in seeds
            for member in range(mitigations.members(config.mitigation))]


def fork(config: Config, seeds: list[int], model: StackedNet | StackedModules) -> None:
    """At the fork step, switch on the sources that act after it: the one-ulp perturbation of
    each replica's weights as they are, and the seed's dropout masks."""
    sources = random_sources(config.randomness)
    replicas = replica_ids(config, seeds)
    if "perturb" in sources:
        for index, (seed, member) in enumerate(replicas):
            perturb_one_weight(replica_parameters(model, index),
                               numpy_generator("perturb", seed, sources, member))
    if "dropout" in sources and getattr(model, "dropout", None) is not None:
        model.dropout.generators = [torch_generator("dropout", seed, sources, member)
                                    for seed, member in replicas]


def replica_parameters(model: StackedNet | StackedModules, index: int
                       ) -> dict[str, torch.Tensor]:
    """Replica `index`'s parameters as views into the stacked ones, in the order its network
    (or module) names them."""
    if isinstance(model, StackedModules):
        return {name: tensor[index] for name, tensor in
                zip(model.parameter_names, model.stacked, strict=True)}
    return {name: tensor[index] for name, tensor in model.params.items()}


def model_for(config: Config, seeds: list[int], dataset: Dataset) -> StackedNet | StackedModules:
    """`build_model` for the inputs and classes of `dataset`."""
    return build_model(config, seeds, dataset.x_train.shape[1],
                       output_features(dataset.n_classes))


def parameter_count(config: Config, dataset: Dataset) -> int:
    """Trainable parameters of the model that predicts for one seed of `config` on `dataset`
    (a user's module as its factory builds it): an ensemble's members together, one member
    of a co-distillation."""
    model = model_for(config, [config.seed], dataset)
    count = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    return count // (mitigations.members(config.mitigation)
                     if config.mitigation.name == "codistill" else 1)


def check_trainable(config: Config, dataset: Dataset) -> None:
    """Raise before any training what would fail in it: a module that does not build, or that
    vmap cannot batch (ModuleError), or checkpoints or a burn-in that the run's steps cannot
    hold, or a device this torch cannot use (ConfigError)."""
    check_steps(config, total_steps(config, len(dataset.y_train)))
    if config.train.device == "cuda" and not torch.cuda.is_available():
        reason = ("finds no CUDA device" if torch.backends.cuda.is_built()
                  else "is a build without CUDA")
        raise ConfigError(f"train.device=cuda: this torch ({torch.__version__}) {reason}")
    if config.model.name == "module":
        model = model_for(config, [config.seed] * 2, dataset)
        inputs = encode_inputs(config.model, dataset.x_train[:1])
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model(pad_rows(inputs, dim=0).expand(2, -1, -1))


def job_memory(config: Config, dataset: Dataset, seeds: int) -> int:
    """A rough estimate, in bytes, of the memory a job of `seeds` seeds holds at its peak
    beyond its data, generous by about two (measured peaks at the defaults: 0.5 MB a seed).
    Per model (a seed's members each count): its parameters with their gradients, optimizer
    states and copies (6 floats each); its predictions on the training set (made twice) and
    on the test set at every checkpoint (2 float32 each: a copy while combined); its rows in
    training order, resampled (3 int64 a row); and 4 floats per unit (inputs, hidden and
    outputs) of a batch or a prediction chunk, for the activations and their temporaries."""
    members = mitigations.members(config.mitigation)
    model = model_for(config, [config.seed], dataset)
    parameters = sum(parameter.numel() for parameter in model.parameters()) // members
    features = encode_inputs(config.model, dataset.x_train[:1]).shape[1]
    outputs = output_features(dataset.n_classes)
    if config.model.name == "module":  # widths unknown: a first layer of fan-in `features`
        hidden = parameters // features
    else:
        embedded = features * config.model.embedding_dim if config.model.name == "embedding" else 0
        hidden = embedded + sum(hidden_widths(config.model))
    rows = schedules.training_rows(len(dataset.y_train), config.randomness.subsample)
    predicted = 2 * len(dataset.y_train) + (config.train.checkpoints + 1) * len(dataset.y_test)
    chunk = max(PREDICT_ROWS, aligned_rows(config.train.batch_size))
    per_model = (6 * 4 * parameters + 2 * 4 * outputs * predicted + 3 * 8 * rows
                 + 4 * 4 * chunk * (features + hidden + outputs))
    return seeds * members * per_model


def check_memory(config: Config, dataset: Dataset, seeds: int) -> None:
    """Refuse a job whose `job_memory` exceeds the memory available now (ConfigError naming
    what sets its seeds: `seeds` where given, else `replicas`)."""
    import psutil

    needed, available = job_memory(config, dataset, seeds), psutil.virtual_memory().available
    if needed > available:
        key = f"seeds ({seeds} of them)" if config.seeds else f"replicas={config.replicas}"
        raise ConfigError(f"{key}: the job would need about {_size(needed)} of memory "
                          f"({_size(needed / seeds)} a seed), more than the "
                          f"{_size(available)} available: train fewer seeds per job")


def _size(size: float) -> str:
    """A size in bytes as kB, MB, GB or TB, to 3 significant digits."""
    exponent = min(max(int(math.log10(max(size, 1)) // 3), 1), 4)
    return f"{size / 1000**exponent:.3g} {'kMGT'[exponent - 1]}B"


def make_optimizer(
    config: OptimizerConfig, params, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """An element-wise optimizer, so that stacked replicas stay independent, and its
    learning-rate schedule (stepped once per update)."""
    optimizers = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}
    optimizer = optimizers[config.name](params, lr=config.lr, weight_decay=config.weight_decay,
                                        foreach=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.schedule, total_steps)
    )
    return optimizer, schedule


def total_steps(config: Config, n_train: int | None = None) -> int:
    """Updates in a run over `n_train` examples (default `data.n_train`), or the subsample of
    them it draws: batches per pass (the last one may be partial) times passes."""
    n_train = config.data.n_train if n_train is None else n_train
    rows = schedules.training_rows(n_train, config.randomness.subsample)
    return schedules.total_steps(rows, config.train.batch_size, config.train.passes)


def train_replicas(config: Config, seeds: list[int], dataset: Dataset,
                   anchor: np.ndarray | None = None) -> list[ReplicaResult]:
    """Train one model per seed in one stacked computation and predict the test set.

    `anchor` is the anchor model's predictions on the training set, which mitigation=anchor
    distills toward. Under co-distillation a seed's predictions are its member 0's, for an
    ensemble its members' mean; under `ema`, the moving average's.
    """
    make_deterministic(config.train.threads)
    device = torch.device(config.train.device)
    results = [ReplicaResult(seed) for seed in seeds]
    steps = total_steps(config, len(dataset.y_train))
    wanted = checkpoint_steps(config.train.checkpoints, steps)
    model = model_for(config, seeds, dataset).to(device)
    optimizer, schedule = make_optimizer(config.optimizer, model.parameters(), steps)
    average = mitigations.weight_average(model, config.mitigation)
    predictor = model if average is None else average.module
    targets = None if anchor is None else torch.from_numpy(anchor).to(device)
    objective = mitigations.Objective(config.mitigation, targets)
    x_train = encode_inputs(config.model, dataset.x_train).to(device)
    y_train = torch.from_numpy(dataset.y_train).to(device)
    x_test = encode_inputs(config.model, dataset.x_test).to(device)
    stream = TrainingStream(config, seeds, len(dataset.y_train))
    snapshots: list[np.ndarray] = []
    losses_before: list[float] = []

    opens_last_tenth = convergence_step(steps, config.optimizer.schedule)

    snapshot_steps = set(wanted[:-1].tolist())

    def predict(inputs: torch.Tensor) -> np.ndarray:
        """Each seed's predictions on `inputs` (see `mitigations.seed_predictions`)."""
        return mitigations.seed_predictions(predict_probabilities(predictor, inputs),
                                            config.mitigation)

    def observe(step: int) -> None:
        """Test predictions at a checkpoint before the last (the last are the final ones),
        and the training-set loss where the last tenth of training begins."""
        if step in snapshot_steps:
            snapshots.append(predict(x_test))
        if step == opens_last_tenth:
            losses_before.extend(log_loss(p, dataset.y_train) for p in predict(x_train))

    def update() -> None:
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(model)

    observe(0)
    with tqdm(total=steps, desc="train", unit="step", leave=False,
              disable=None if config.train.progress else True) as progress:
        _train_passes(config, model, objective, update, (x_train, y_train), stream,
                      results, progress, steps, observe)
    if not all(result.failure for result in results):
        _predict(predict(x_test), results, wanted, snapshots)
        train_predictions = predict(x_train)
        for result, before, after in zip(results, losses_before, train_predictions,
                                         strict=True):
            result.train_predictions = after
            result.train_loss = log_loss(after, dataset.y_train)
            result.loss_change = loss_change(before, result.train_loss)
    return results


def _train_passes(
    config, model, objective, update, train_set, stream, results, progress, total_steps,
    observe,
):
    """Every pass over the training data; stops early once every replica has diverged.

    `update()` steps the optimizer (its schedule, the weight average); `observe(step)` runs
    after every update. Replicas are seed-major, `objective.members` per seed, the members
    of a seed seeing the seed's batches.
    """
    x_train, y_train = train_set
    batch = config.train.batch_size
    group = objective.members
    loss_sum = torch.zeros(len(results) * group, dtype=torch.float64, device=x_train.device)
    since_log = step = 0
    seeds = [result.seed for result in results]
    for pass_index in range(config.train.passes):
        orders = stream.pass_rows(pass_index).to(x_train.device)
        if group > 1:
            orders = orders.repeat_interleave(group, dim=0)
        for start in range(0, stream.rows, batch):
            if step == stream.fork_step > 0:
                fork(config, seeds, model)
            # Padded rows (example 0) keep every replica's slab aligned; they leave the loss
            # before its mean, so their gradient is exactly zero.
            indices = pad_rows(orders[:, start:start + batch], dim=1)
            rows = min(batch, stream.rows - start)
            flat = indices.flatten()
            batch_x = x_train.index_select(0, flat).view(*indices.shape, *x_train.shape[1:])
            batch_y = y_train.index_select(0, flat).view(indices.shape)
            losses = objective(model(batch_x), batch_y, indices, rows, step)
            model.zero_grad(set_to_none=True)
            losses.sum().backward()
            update()
            loss_sum += losses.detach()
            since_log += 1
            step += 1
            progress.update()
            observe(step)
            if since_log == config.train.log_every or step == total_steps:
                _record(results, step, (loss_sum[::group] / since_log).tolist())
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


def _predict(final, results, wanted, snapshots) -> None:
    """Each seed's final test predictions (`final`, [K, N, ...]) unless it failed, and its
    checkpoints."""
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
