"""Time K seeds trained as one stacked job against what else trains K seeds, in one process.

    python bench/replicas.py [--replicas 1 10 50] [--device cpu]

Prints, per model and K, the seconds of one K-replica irrepro job against: K single
irrepro runs; K runs of a plain PyTorch loop that a user would write (an `nn.Sequential` of
the same shape on the same data, SGD at the same rate, batches of the same size, each seed's
own order, then its test predictions); and PyTorch's model-ensembling recipe
(`torch.func.stack_module_state` + `vmap` of `grad`) training the same K models at once.
Each ratio is the other's seconds over the K-job's (above 1: the K-job is faster). Then the
seconds of logging the runs of the largest K-replica job to a fresh SQLite MLflow store, run
by run through MLflow's client and in bulk through the SQL writer, against the seconds that
job trained.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from irrepro.config import group_key, to_config
from irrepro.data import make_dataset
from irrepro.job import finished_run, start_runs
from irrepro.training import train_replicas

MODELS = {
    "two_units": {"model": {"name": "two_units", "depth": 1, "width": 2}},
    "mlp(2x16)": {"model": {"name": "mlp", "depth": 2, "width": 16}},
}


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_each(config, seeds, dataset):
    """One single-replica job per seed, one after another."""
    return [train_replicas(config, [seed], dataset) for seed in seeds]


def plain_model(config, in_features: int) -> nn.Sequential:
    """The config's ReLU model as a user would write it: Linear layers and ReLUs."""
    widths = [in_features] + [config.model.width] * config.model.depth
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 1))


def plain_tensors(dataset, device):
    x = torch.as_tensor(dataset.x_train, dtype=torch.float32, device=device)
    y = torch.as_tensor(dataset.y_train, dtype=torch.float32, device=device)
    return x, y, torch.as_tensor(dataset.x_test, dtype=torch.float32, device=device)


def plain_runs(config, seeds, dataset, device):
    """K runs of a plain PyTorch training loop, one after another."""
    x, y, x_test = plain_tensors(dataset, device)
    batch, passes, lr = config.train.batch_size, config.train.passes, config.optimizer.lr
    loss = nn.BCEWithLogitsLoss()
    for seed in seeds:
        torch.manual_seed(seed)
        model = plain_model(config, x.shape[1]).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(passes):
            for rows in torch.randperm(len(x), device=device).split(batch):
                optimizer.zero_grad()
                loss(model(x[rows]).squeeze(-1), y[rows]).backward()
                optimizer.step()
        with torch.no_grad():
            torch.sigmoid(model(x_test).squeeze(-1))


def vmap_runs(config, seeds, dataset, device):
    """The same K models trained at once by PyTorch's ensembling recipe: parameters stacked
    with `stack_module_state`, gradients by `vmap(grad(...))`, an SGD step on the stacks."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    x, y, x_test = plain_tensors(dataset, device)
    batch, passes, lr = config.train.batch_size, config.train.passes, config.optimizer.lr
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(plain_model(config, x.shape[1]).to(device))
    params, buffers = stack_module_state(models)
    params = {name: value.detach() for name, value in params.items()}
    base = plain_model(config, x.shape[1]).to("meta")

    def loss(weights, state, inputs, labels):
        logits = functional_call(base, (weights, state), (inputs,)).squeeze(-1)
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)

    gradients = vmap(grad(loss))
    orders = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    for _ in range(passes):
        order = torch.stack([torch.randperm(len(x), generator=g, device=device)
                             for g in orders])
        for rows in order.split(batch, dim=1):
            steps = gradients(params, buffers, x[rows], y[rows])
            params = {name: value - lr * steps[name] for name, value in params.items()}
    with torch.no_grad():
        vmap(lambda w, b: functional_call(base, (w, b), (x_test,)))(params, buffers)


def bench_training(replica_counts, device):
    print("seconds of each way to train K seeds; ratio: that way's seconds / one K-job's")
    print(f"{'model':<10} {'K':>3} {'one K-job':>10} {'K irrepro runs':>15} "
          f"{'K plain PyTorch':>16} {'vmap recipe':>12}")
    torch.set_num_threads(1)  # as a job trains (train.threads=1)
    for name, overrides in MODELS.items():
        config = to_config(OmegaConf.create(
            {**overrides, "train": {"progress": False, "device": device}}))
        dataset = make_dataset(config.data)
        train_replicas(config, [0], dataset)  # warm-up
        plain_runs(config, [0], dataset, device)
        vmap_runs(config, [0, 1], dataset, device)
        for k in replica_counts:
            seeds = list(range(k))
            stacked = seconds(partial(train_replicas, config, seeds, dataset))
            others = [seconds(partial(train_each, config, seeds, dataset)),
                      seconds(partial(plain_runs, config, seeds, dataset, device)),
                      seconds(partial(vmap_runs, config, seeds, dataset, device))]
            cells = [f"{other:.2f} ({other / stacked:.1f}x)" for other in others]
            print(f"{name:<10} {k:>3} {stacked:>10.2f} {cells[0]:>15} {cells[1]:>16} "
                  f"{cells[2]:>12}")


def log_job(tracker, config, results, dataset, train_seconds):
    """Log a job's runs as `run_job` does: start them, then finish them together."""
    seeds = [result.seed for result in results]
    run_ids = start_runs(config, seeds, group_key(config), dataset.digest, tracker)
    records, files = {}, {}
    for result in results:
        run_id = run_ids[result.seed]
        records[run_id], files[run_id] = finished_run(config, result, dataset, train_seconds)
    tracker.finish_runs(records, files)


def bench_logging(k):
    """Seconds to log the k runs of a k-replica job to a fresh SQLite store, through each
    writer, against the seconds that job trained, all measured here."""
    from irrepro import tracking
    from irrepro.run_writers import ClientWriter

    config = to_config(OmegaConf.create({"train": {"progress": False}}))
    dataset = make_dataset(config.data)
    seeds = list(range(k))
    train_replicas(config, seeds, dataset)  # warm-up
    started = time.perf_counter()
    results = train_replicas(config, seeds, dataset)
    train = time.perf_counter() - started
    print(f"training the {k}-replica job: {train:.2f} s, {train / k * 1000:.1f} ms per run")
    for writer in ("client", "sql"):
        with tempfile.TemporaryDirectory() as folder:
            tracker = tracking.Tracker(f"sqlite:///{folder}/mlflow.db", "bench")
            if writer == "client":
                tracker.writer = ClientWriter(tracker.client)
            logging = seconds(partial(log_job, tracker, config, results, dataset, train))
        print(f"logging its {k} runs, {writer} writer: {logging:.2f} s, "
              f"{logging / k * 1000:.1f} ms per run (logging / training: {logging / train:.2f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    np.set_printoptions(precision=3)
    bench_training(args.replicas, args.device)
    bench_logging(max(args.replicas))


if __name__ == "__main__":
    main()
