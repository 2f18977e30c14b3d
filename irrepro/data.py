"""The study's data: synthetic binary labels from a known teacher (linear or quadratic logit),
or real tables (CSV, Parquet, scikit-learn's bundled sets) with binary or multiclass labels."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from irrepro.config import SYNTHETIC_DATA, DataConfig

if TYPE_CHECKING:
    import pandas as pd

TABLE_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}
# scikit-learn's bundled sets (as_frame=True) hold their label in this column.
SKLEARN_LABEL = "target"


class DataError(ValueError):
    """Data that cannot be used as given; the one-line message names the problem."""


@dataclass(frozen=True)
class Dataset:
    """Training and test examples: features float32 [N, D]; labels float32 0/1 [N] for two
    classes, int64 class indices [N] for more. `p_test` is the teacher's probability of each
    test label 1 (synthetic data only, else None); `classes` the sorted label values."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    p_test: np.ndarray | None
    digest: str
    classes: tuple = (0, 1)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Teacher:
    """logit(x) = x^T A x - tr(A) + w.x + bias; A is zero for the linear data model."""

    weights: np.ndarray
    quadratic: np.ndarray
    bias: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        """The Bayes-optimal probability of label 1."""
        logit = x @ self.weights + self.bias
        if self.quadratic.any():
            logit += np.einsum("ni,ij,nj->n", x, self.quadratic, x) - np.trace(self.quadratic)
        return 1.0 / (1.0 + np.exp(-logit))


def make_teacher(config: DataConfig, rng: np.random.Generator) -> Teacher:
    """Draw a teacher whose linear logit has std `scale` and quadratic part `quadratic_scale`."""
    weights = rng.standard_normal(config.dim)
    weights *= config.scale / np.linalg.norm(weights)
    quadratic = np.zeros((config.dim, config.dim))
    if config.name == "quadratic":
        raw = rng.standard_normal((config.dim, config.dim))
        symmetric = (raw + raw.T) / 2
        # For x ~ N(0, I): var(x^T A x) = 2 ||A||_F^2.
        quadratic = symmetric * config.quadratic_scale / (np.sqrt(2) * np.linalg.norm(symmetric))
    return Teacher(weights, quadratic, config.bias)


def _sample(teacher: Teacher, n: int, dim: int, rng: np.random.Generator):
    x = rng.standard_normal((n, dim))
    p = teacher.probability(x)
    y = (rng.random(n) < p).astype(np.float32)
    return x.astype(np.float32), y, p


def make_dataset(config: DataConfig) -> Dataset:
    """The study's data: a function of `config` (and so of `data.seed`) and, for tables, of
    the files' contents only."""
    files = tuple(_file_state(path) for path in (config.path, config.test_path) if path)
    if config.name in SYNTHETIC_DATA:
        files = ()
    return _make_dataset(json.dumps(dataclasses.asdict(config), sort_keys=True), files)


def _file_state(path: str) -> tuple:
    """What tells a changed file from its cached contents: size and modification time."""
    try:
        stat = os.stat(path)
    except OSError:
        return (path,)
    return (path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _make_dataset(key: str, files: tuple) -> Dataset:
    config = DataConfig(**json.loads(key))
    if config.name in SYNTHETIC_DATA:
        return _synthetic(config)
    if config.name == "sklearn":
        train, label, test = _sklearn_frame(config.dataset), SKLEARN_LABEL, None
        source = f"scikit-learn's {config.dataset}"
    else:
        train, label = _read_table(config.path, "data.path"), config.label
        test = _read_table(config.test_path, "data.test_path") if config.test_path else None
        source = config.path
    return _from_frames(train, test, label, config, source)


def _synthetic(config: DataConfig) -> Dataset:
    rng = np.random.default_rng(config.seed)
    teacher = make_teacher(config, rng)
    x_train, y_train, _ = _sample(teacher, config.n_train, config.dim, rng)
    x_test, y_test, p_test = _sample(teacher, config.n_test, config.dim, rng)
    for name, labels in (("training", y_train), ("test", y_test)):
        if np.unique(labels).size < 2:
            raise DataError(f"data.bias={config.bias}, data.scale={config.scale}: the teacher "
                            f"labels all {labels.size} {name} examples {labels[0]:g}, a single "
                            "class")
    digest = _digest(x_train, y_train, x_test, y_test)
    return Dataset(x_train, y_train, x_test, y_test, p_test, digest)


def _digest(*arrays: np.ndarray, classes: tuple = ()) -> str:
    """Hash of the examples the models see (and of the label values, for real data)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.tobytes())
    if classes:
        digest.update(json.dumps([str(value) for value in classes]).encode())
    return digest.hexdigest()[:16]


def _read_table(path: str, key: str) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, by its extension, once its header is known to
    name each column once (pandas would rename a repeated `y` to `y.1`)."""
    import pandas as pd

    extension = os.path.splitext(path)[1].lower()
    if extension not in TABLE_READERS:
        raise DataError(f"{key}={path}: unknown extension {extension!r} "
                        f"(use {', '.join(TABLE_READERS)})")
    if not os.path.isfile(path):
        raise DataError(f"{key}={path}: no such file")
    counts = Counter(_reading(path, key, _header, path, extension))
    repeated = [name for name, count in counts.items() if count > 1 and name]  # '': unnamed
    if repeated:
        raise DataError(f"{key}={path}: its header names column {repeated[0]!r} "
                        f"{counts[repeated[0]]} times")
    return _reading(path, key, getattr(pd, TABLE_READERS[extension]), path)


def _reading(path: str, key: str, read, *args):
    """`read(*args)`, its failure a DataError naming the file."""
    try:
        return read(*args)
    except (ValueError, OSError, ImportError) as error:
        message = " ".join(str(error).split())
        raise DataError(f"{key}={path}: cannot read it: {message}") from None


def _header(path: str, extension: str) -> list[str]:
    """The column names of a table's file as it spells them."""
    if extension == ".csv":
        import pandas as pd

        row = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
        return list(row.iloc[0])
    import pyarrow.parquet

    return pyarrow.parquet.read_schema(path).names


def _sklearn_frame(name: str) -> pd.DataFrame:
    """One of scikit-learn's bundled data sets, its label in the column `target`."""
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(as_frame=True).frame


def _columns(frame: pd.DataFrame, label: str, features: list[str] | None, source: str):
    """The feature columns to use, after checking the label and features exist and are
    numeric."""
    from pandas.api.types import is_numeric_dtype

    if label not in frame.columns:
        raise DataError(f"data.label: no column {label!r} in {source}")
    if features is None:
        columns = [c for c in frame.columns if c != label and is_numeric_dtype(frame[c])]
        if not columns:
            raise DataError(f"data.features: {source} has no numeric column besides {label!r}")
        return columns
    for column in features:
        if column not in frame.columns:
            raise DataError(f"data.features: no column {column!r} in {source}")
        if not is_numeric_dtype(frame[column]):
            raise DataError(f"data.features: column {column!r} of {source} is not numeric "
                            f"({frame[column].dtype})")
    if label in features:
        raise DataError(f"data.features: the label column {label!r} cannot be a feature")
    return list(features)


def _check_complete(frame: pd.DataFrame, columns: list[str], source: str) -> None:
    """Refuse missing and infinite values in the columns used."""
    import pandas as pd

    missing = frame[columns].isna().sum()
    missing = missing[missing > 0]
    if len(missing):
        column, count = next(iter(missing.items()))
        raise DataError(f"column {column!r} of {source} has {count} missing values")
    numbers = frame[columns].select_dtypes("number")
    infinite = pd.Series(np.isinf(numbers.to_numpy(np.float64)).sum(axis=0), numbers.columns)
    infinite = infinite[infinite > 0]
    if len(infinite):
        column, count = next(iter(infinite.items()))
        raise DataError(f"column {column!r} of {source} has {count} infinite values")


def _split(labels: np.ndarray, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and test row indices: a split of `test_fraction`, stratified by label and
    drawn with `data.seed`."""
    from sklearn.model_selection import train_test_split

    random_state = np.random.RandomState(np.random.MT19937(config.seed))
    try:
        return train_test_split(np.arange(labels.size), test_size=config.test_fraction,
                                stratify=labels, random_state=random_state)
    except ValueError as error:
        raise DataError(f"data.test_fraction={config.test_fraction}: cannot split "
                        f"{labels.size} examples by class: {error}") from None


def _encode(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Labels as float32 0/1 (label 1 = the larger value) for two classes, else int64
    indices into `classes`."""
    indices = np.searchsorted(classes, labels)
    return indices.astype(np.float32 if classes.size == 2 else np.int64)


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled with the training set's mean and std (constant columns centered)."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def _from_frames(train: pd.DataFrame, test: pd.DataFrame | None, label: str,
                 config: DataConfig, source: str) -> Dataset:
    columns = _columns(train, label, config.features, source)
    _check_complete(train, [*columns, label], source)
    if test is not None:
        _columns(test, label, columns, config.test_path)
        _check_complete(test, [*columns, label], config.test_path)
    labels = train[label].to_numpy()
    classes = np.unique(labels)
    if classes.size < 2:
        raise DataError(f"data.label: column {label!r} of {source} holds a single class "
                        f"({classes[0]!r})")
    if classes.size > config.max_classes:
        raise DataError(f"data.label: column {label!r} of {source} holds {classes.size} "
                        f"distinct values, more classes than data.max_classes="
                        f"{config.max_classes} (a continuous target?)")
    if test is None:
        train_rows, test_rows = _split(labels, config)
        train, test = train.iloc[np.sort(train_rows)], train.iloc[np.sort(test_rows)]
        left_out = np.setdiff1d(classes, train[label].to_numpy())
        where = f"data.test_fraction={config.test_fraction}: the test split"
    else:
        left_out = np.setdiff1d(test[label].to_numpy(), classes)
        where = f"data.test_path={config.test_path}"
    if left_out.size:
        raise DataError(f"{where} leaves class {left_out[0]!r} out of training")
    x_train, x_test = _standardize(train[columns].to_numpy(np.float64),
                                   test[columns].to_numpy(np.float64))
    y_train = _encode(train[label].to_numpy(), classes)
    y_test = _encode(test[label].to_numpy(), classes)
    values = tuple(value.item() if isinstance(value, np.generic) else value for value in classes)
    return Dataset(x_train, y_train, x_test, y_test, None,
                   _digest(x_train, y_train, x_test, y_test, classes=values), values)
