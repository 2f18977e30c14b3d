"""Synthetic binary-label data from a known teacher (linear or quadratic logit)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from irrepro.config import DataConfig


@dataclass(frozen=True)
class Dataset:
    """Training and test examples, with the teacher's probability of each test label."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    p_test: np.ndarray
    digest: str


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
    """The study's data: a function of `config` (and so of `data.seed`) only."""
    return _make_dataset(dataclasses.astuple(config))


@functools.lru_cache(maxsize=4)
def _make_dataset(values: tuple) -> Dataset:
    config = DataConfig(*values)
    rng = np.random.default_rng(config.seed)
    teacher = make_teacher(config, rng)
    x_train, y_train, _ = _sample(teacher, config.n_train, config.dim, rng)
    x_test, y_test, p_test = _sample(teacher, config.n_test, config.dim, rng)
    digest = hashlib.sha256()
    for array in (x_train, y_train, x_test, y_test):
        digest.update(array.tobytes())
    return Dataset(x_train, y_train, x_test, y_test, p_test, digest.hexdigest()[:16])
