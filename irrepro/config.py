"""Structured config schema, validation, and the hashes that identify runs and groups."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from irrepro.schedule import checkpoint_steps, total_steps, training_rows

DATA_KINDS = ("linear", "quadratic", "table", "sklearn")
SYNTHETIC_DATA = ("linear", "quadratic")
SKLEARN_DATASETS = ("breast_cancer", "digits", "wine", "iris")
MODELS = ("logistic", "one_unit", "two_units", "mlp", "embedding", "module")
ACTIVATIONS = (
    "relu", "smelu", "swish", "gelu", "softplus", "elu", "leaky_relu", "tanh", "sigmoid",
    "identity",
)
RANDOMNESS = ("none", "init", "shuffle", "all", "perturb", "dropout", "data")
# The randomness sources, in the order that gives each its stream id (irrepro.seeds).
SOURCES = ("init", "shuffle", "perturb", "dropout", "data")
OPTIMIZERS = ("sgd", "adagrad", "adam")
MITIGATIONS = ("none", "min_entropy", "codistill", "anchor", "ema", "ensemble")
SCHEDULES = ("constant", "cosine", "linear")
DEVICES = ("cpu", "cuda")
MAX_CLASSES = 100

# Keys that change how or where a run executes, not what it computes.
# Checkpoints only observe training: the final predictions do not depend on them.
EXECUTION_KEYS = (
    "replicas", "seeds", "force", "tracking", "train.progress", "train.checkpoints", "hydra",
    "optuna",
)


def _check(**rules: Any) -> dict[str, Any]:
    """Field metadata with range rules: gt, ge, choices."""
    return {"rules": rules}


@dataclass
class DataConfig:
    name: str = field(default="linear", metadata=_check(choices=DATA_KINDS))
    dim: int = field(default=20, metadata=_check(ge=1))
    n_train: int = field(default=20000, metadata=_check(ge=1))
    n_test: int = field(default=5000, metadata=_check(ge=2))
    scale: float = field(default=3.0, metadata=_check(ge=0.0))
    quadratic_scale: float = field(default=0.0, metadata=_check(ge=0.0))
    bias: float = 0.0
    seed: int = field(default=1234, metadata=_check(ge=0))
    # Real data (table, sklearn): a file, its label column and feature columns (default: every
    # other numeric column), a test file or else a stratified split fixed by `seed`.
    path: str | None = None
    test_path: str | None = None
    label: str | None = None
    features: list[str] | None = None
    test_fraction: float = field(default=0.2, metadata=_check(gt=0.0))
    dataset: str = field(default="breast_cancer", metadata=_check(choices=SKLEARN_DATASETS))
    # the most distinct label values taken as classes (more: a continuous target, refused)
    max_classes: int = field(default=MAX_CLASSES, metadata=_check(ge=2))


@dataclass
class ModelConfig:
    name: str = field(default="two_units", metadata=_check(choices=MODELS))
    depth: int = field(default=1, metadata=_check(ge=0))
    width: int = field(default=2, metadata=_check(ge=1))
    embedding_dim: int = field(default=8, metadata=_check(ge=1))
    buckets: int = field(default=16, metadata=_check(ge=2))
    # mlp, embedding: the probability of dropping each hidden unit while training
    dropout: float = field(default=0.0, metadata=_check(ge=0.0))
    # model=module: the dotted path of a factory, called as
    # factory(in_features=D, out_features=O, **kwargs), and the keyword arguments it gets.
    target: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActivationConfig:
    name: str = field(default="relu", metadata=_check(choices=ACTIVATIONS))
    beta: float = field(default=1.0, metadata=_check(gt=0.0))
    negative_slope: float = field(default=0.01, metadata=_check(ge=0.0))


@dataclass
class RandomnessConfig:
    name: str = field(default="all", metadata=_check(choices=RANDOMNESS))
    window: int = field(default=1024, metadata=_check(ge=1))
    # sources `seed` drives besides those of `name`
    extra: list[str] = field(default_factory=list)
    # before this update every seed follows the fixed base streams; the sources act after it
    fork_step: int = field(default=0, metadata=_check(ge=0))
    # the fraction of the training set each run draws without replacement (data source);
    # null: a bootstrap of n_train rows when the data source is random, else every row
    subsample: float | None = field(default=None, metadata=_check(gt=0.0))


@dataclass
class OptimizerConfig:
    name: str = field(default="sgd", metadata=_check(choices=OPTIMIZERS))
    lr: float = field(default=0.1, metadata=_check(gt=0.0))
    schedule: str = field(default="constant", metadata=_check(choices=SCHEDULES))
    weight_decay: float = field(default=0.0, metadata=_check(ge=0.0))


@dataclass
class MitigationConfig:
    """A change to the objective or to the weights that predict (irrepro.mitigations)."""

    name: str = field(default="none", metadata=_check(choices=MITIGATIONS))
    # min_entropy, codistill, anchor: the strength of the added term (anchor: at most 1)
    weight: float = field(default=0.0, metadata=_check(ge=0.0))
    # codistill, ensemble: models trained per seed; codistill: updates before distillation
    members: int = field(default=2, metadata=_check(ge=2))
    burn_in: int = field(default=0, metadata=_check(ge=0))
    # ema: the moving average's decay per update (0 predicts from the last weights)
    decay: float = field(default=0.0, metadata=_check(ge=0.0))


@dataclass
class TrainConfig:
    batch_size: int = field(default=64, metadata=_check(ge=1))
    passes: int = field(default=2, metadata=_check(ge=1))
    device: str = field(default="cpu", metadata=_check(choices=DEVICES))
    threads: int = field(default=1, metadata=_check(ge=1))
    log_every: int = field(default=50, metadata=_check(ge=1))
    checkpoints: int = field(default=0, metadata=_check(ge=0))
    progress: bool = True


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "irrepro"


@dataclass
class OptunaTrialConfig:
    """Set by the Optuna sweeper on each trial; a job with a trial returns its objectives."""

    trial: int | None = None
    study: str | None = None


@dataclass
class Config:
    seed: int = field(default=0, metadata=_check(ge=0))
    replicas: int = field(default=1, metadata=_check(ge=1))
    # The seeds one job trains; empty: seed .. seed+replicas-1. Set by the batching sweeper.
    seeds: list[int] = field(default_factory=list)
    force: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    randomness: RandomnessConfig = field(default_factory=RandomnessConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    optuna: OptunaTrialConfig = field(default_factory=OptunaTrialConfig)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore as `irrepro_schema`."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="irrepro_schema", node=Config)


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the key."""


def _validate_node(node: Any, prefix: str) -> None:
    for f in dataclasses.fields(node):
        key = f"{prefix}{f.name}"
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _validate_node(value, key + ".")
            continue
        rules = f.metadata.get("rules", {})
        if value is None:  # an optional key left unset
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number")
        if "choices" in rules and value not in rules["choices"]:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(rules['choices'])}")
        if "gt" in rules and not value > rules["gt"]:
            raise ConfigError(f"{key}={value!r} must be > {rules['gt']}")
        if "ge" in rules and not value >= rules["ge"]:
            raise ConfigError(f"{key}={value!r} must be >= {rules['ge']}")


def to_config(cfg: DictConfig | dict) -> Config:
    """Validate a composed config and return it as a typed `Config`."""
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    config = OmegaConf.to_object(merged)
    _validate_node(config, "")
    _validate_options(config)
    return config


def _validate_options(config: Config) -> None:
    """Rules beyond single-key ranges: the keys an option requires."""
    data, model = config.data, config.model
    if data.name == "table":
        for key in ("path", "label"):
            if not getattr(data, key):
                raise ConfigError(f"data.{key} is required for data=table")
    if not data.test_fraction < 1:
        raise ConfigError(f"data.test_fraction={data.test_fraction!r} must be < 1")
    if data.features is not None and not data.features:
        raise ConfigError("data.features=[] must name at least one column (or be null)")
    _validate_randomness(config)
    train = config.train
    if data.name in SYNTHETIC_DATA:  # real data: checked before training, once loaded
        rows = training_rows(data.n_train, config.randomness.subsample)
        check_steps(config, total_steps(rows, train.batch_size, train.passes))
    mitigation = config.mitigation
    if mitigation.name == "anchor" and not mitigation.weight <= 1:
        raise ConfigError(f"mitigation.weight={mitigation.weight!r} must be <= 1 for "
                          "mitigation=anchor (the anchor's share of the target)")
    if mitigation.name == "ema" and not mitigation.decay < 1:
        raise ConfigError(f"mitigation.decay={mitigation.decay!r} must be < 1 (at 1 the "
                          "average never leaves the initialization)")
    if any(seed < 0 for seed in config.seeds):
        raise ConfigError(f"seeds={list(config.seeds)} must hold integers >= 0")
    if model.name == "module" and not model.target:
        raise ConfigError("model.target is required for model=module (PKG.MOD.FACTORY)")
    reserved = sorted({"in_features", "out_features", "activation"} & set(model.kwargs))
    if reserved:
        raise ConfigError(f"model.kwargs.{reserved[0]} is set by irrepro, not by model.kwargs")


def _validate_randomness(config: Config) -> None:
    """The sources a run's randomness names, its fork, its subsample and its dropout."""
    randomness, model = config.randomness, config.model
    unknown = [source for source in randomness.extra if source not in SOURCES]
    if unknown:
        raise ConfigError(f"randomness.extra={list(randomness.extra)}: {unknown[0]!r} is not "
                          f"one of {', '.join(SOURCES)}")
    sources = random_sources(randomness)
    if randomness.fork_step > 0 and "init" in sources:
        raise ConfigError(f"randomness.fork_step={randomness.fork_step}: an initialization "
                          f"cannot fork mid-training (randomness={randomness.name} with "
                          f"extra={list(randomness.extra)} drives init)")
    if randomness.fork_step > 0 and not sources:
        raise ConfigError(f"randomness.fork_step={randomness.fork_step} forks nothing: "
                          "randomness=none drives no source")
    if randomness.subsample is not None and not randomness.subsample <= 1:
        raise ConfigError(f"randomness.subsample={randomness.subsample!r} must be <= 1")
    if not model.dropout < 1:
        raise ConfigError(f"model.dropout={model.dropout!r} must be < 1")
    if model.dropout > 0 and model.name not in ("mlp", "embedding"):
        raise ConfigError(f"model.dropout={model.dropout!r} is for model=mlp or embedding, "
                          f"not {model.name}")
    if "dropout" in sources and model.dropout == 0:
        raise ConfigError("the dropout source needs model.dropout > 0 (model=mlp or embedding)")


# The sources each randomness option lets `seed` drive; the others use a fixed stream.
NAMED_SOURCES = {"none": (), "init": ("init",), "shuffle": ("shuffle",),
                  "all": ("init", "shuffle"), "perturb": ("perturb",), "dropout": ("dropout",),
                  "data": ("data",)}


def random_sources(randomness: RandomnessConfig) -> frozenset[str]:
    """The sources `seed` drives: those of the randomness option and its `extra` ones."""
    return frozenset(NAMED_SOURCES[randomness.name]) | frozenset(randomness.extra)


def check_steps(config: Config, steps: int) -> None:
    """Raise ConfigError for what the run's `steps` updates cannot hold: its checkpoints, a
    co-distillation whose burn-in outlasts training, or a fork after its last update."""
    try:
        checkpoint_steps(config.train.checkpoints, steps)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.randomness.fork_step > steps:
        raise ConfigError(f"randomness.fork_step={config.randomness.fork_step} must be <= the "
                          f"run's {steps} updates")
    mitigation = config.mitigation
    if mitigation.name == "codistill" and mitigation.burn_in >= steps:
        raise ConfigError(f"mitigation.burn_in={mitigation.burn_in} must be < the run's "
                          f"{steps} updates (else members never distill)")


def as_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict of a config."""
    return dataclasses.asdict(config)


def _without(cfg: DictConfig | dict, keys: tuple[str, ...]) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    data = json.loads(json.dumps(data))
    for key in keys:
        *parents, leaf = key.split(".")
        node = data
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return data


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict into dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _digest(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# The synthetic data's teacher and sizes (quadratic_scale aside), and the keys only real data
# read.
_TEACHER_KEYS = ("dim", "n_train", "n_test", "scale", "bias")
_REAL_DATA_KEYS = ("path", "test_path", "label", "features", "test_fraction", "dataset",
                   "max_classes")


def unused_keys(config: Config) -> tuple[str, ...]:
    """Keys that the chosen options ignore (SmeLU's beta under ReLU, say)."""
    unused = []
    if config.activation.name != "smelu":
        unused.append("activation.beta")
    if config.activation.name != "leaky_relu":
        unused.append("activation.negative_slope")
    if config.model.name not in ("mlp", "embedding"):
        unused += ["model.depth", "model.width"]
    if config.model.name != "embedding":
        unused += ["model.embedding_dim", "model.buckets"]
    if config.data.name != "quadratic":
        unused.append("data.quadratic_scale")
    if config.model.name != "module":
        unused += ["model.target", "model.kwargs"]
    if config.optimizer.schedule == "constant":  # no schedule: runs logged before keep theirs
        unused.append("optimizer.schedule")
    if config.optimizer.weight_decay == 0:
        unused.append("optimizer.weight_decay")
    if config.model.dropout == 0:
        unused.append("model.dropout")
    randomness = config.randomness
    unused += [f"randomness.{key}" for key, default in
               (("extra", []), ("fork_step", 0), ("subsample", None))
               if getattr(randomness, key) == default]
    unused += _unused_mitigation_keys(config.mitigation.name)
    if config.data.name in SYNTHETIC_DATA:
        unused += [f"data.{key}" for key in _REAL_DATA_KEYS]
    else:
        unused += [f"data.{key}" for key in _TEACHER_KEYS]
    if config.data.name == "sklearn":
        unused += ["data.path", "data.test_path", "data.label"]
    if config.data.max_classes == MAX_CLASSES:
        unused.append("data.max_classes")
    if config.data.name == "table":
        unused.append("data.dataset")
        if config.data.test_path:
            unused += ["data.test_fraction", "data.seed"]
    return tuple(unused)


_MITIGATION_KEYS = {
    "min_entropy": ("weight",), "codistill": ("weight", "members", "burn_in"),
    "anchor": ("weight",), "ema": ("decay",), "ensemble": ("members",),
}


def _unused_mitigation_keys(name: str) -> list[str]:
    """The mitigation keys that option `name` ignores; the whole node for `none`, so that runs
    without a mitigation keep the identities they had before mitigations existed."""
    if name == "none":
        return ["mitigation"]
    return [f"mitigation.{key}" for key in ("weight", "members", "burn_in", "decay")
            if key not in _MITIGATION_KEYS[name]]


def is_mitigation_key(key: str) -> bool:
    """Keys that make a mitigation: the mitigation group's and the optimizer's weight decay."""
    return key.startswith("mitigation.") or key == "optimizer.weight_decay"


def mitigation_label(column: dict[str, Any]) -> str:
    """A group's mitigation in words, from its config columns (dotted keys, as in a summary
    row): its name and strengths ('none' without one; None or NaN count as absent)."""
    column = {key: value for key, value in column.items()
              if value is not None and not (isinstance(value, float) and math.isnan(value))}
    parts = []
    if "mitigation.name" in column:
        strengths = [f"{key.split('.', 1)[1]}={column[key]:g}" for key in
                     ("mitigation.weight", "mitigation.decay") if key in column]
        members = column.get("mitigation.members", 2)
        if column["mitigation.name"] == "ensemble" or members != 2:
            strengths.append(f"members={int(members)}")
        parts.append(" ".join([column["mitigation.name"], *strengths]))
    if "optimizer.weight_decay" in column:
        parts.append(f"weight_decay={column['optimizer.weight_decay']:g}")
    return ", ".join(parts) or "none"


def run_params(config: Config) -> dict[str, Any]:
    """What a run computes: the config without execution settings and without the keys its
    options ignore (so they split no group), as a nested dict."""
    return _without(as_dict(config), EXECUTION_KEYS + unused_keys(config))


def config_hash(config: Config) -> str:
    """Identity of one run: everything it computes, seed included."""
    return _digest(run_params(config))


def group_key(config: Config) -> str:
    """Identity of a group of runs that differ only in `seed`."""
    return _digest(_without(run_params(config), ("seed",)))
