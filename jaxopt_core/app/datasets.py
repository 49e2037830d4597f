"""Built-in datasets for the CLI, the notebooks and quick experiments.

Every dataset is small, ships with scikit-learn or is generated, and needs no
network. :func:`load_dataset` returns a :class:`Dataset`: standardized
float32 features, a held-out validation split and the kind of task.

Conventions, stated once:

* the split is fixed (``split_seed=0`` by default) and, for classification,
  stratified, so runs with different ``--seed`` values see the same data;
* features are standardized with the *training* mean and standard deviation
  (constant columns, such as the border pixels of ``digits``, are left at 0);
* regression targets are standardized the same way, so one learning-rate range
  suits every dataset; R² does not change under that rescaling;
* classification labels are int32 class indices ``0 .. num_classes - 1``.

scikit-learn is imported when a dataset is loaded, not with the package.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CLASSIFICATION = "classification"
REGRESSION = "regression"

# name -> (task, one-line description); the order is the order shown in --help.
DATASETS = {
    "digits": (CLASSIFICATION, "8x8 images of handwritten digits, 1797 x 64, 10 classes"),
    "breast_cancer": (CLASSIFICATION, "Wisconsin breast cancer, 569 x 30, 2 classes"),
    "diabetes": (REGRESSION, "diabetes progression, 442 x 10, regression"),
    "synthetic": (
        REGRESSION,
        "sparse linear regression, 600 x 30 with 5 non-zero weights, noise 0.5",
    ),
}


class Dataset(NamedTuple):
    """A train/validation split ready for training.

    Attributes:
        name: the dataset's name (a key of :data:`DATASETS`).
        task: ``"classification"`` or ``"regression"``.
        x_train: ``[n_train, n_features]`` float32, standardized.
        y_train: ``[n_train]`` int32 labels or float32 targets.
        x_val: ``[n_val, n_features]`` float32, standardized with train stats.
        y_val: ``[n_val]``, like ``y_train``.
        num_classes: number of classes; 0 for regression.
        coef: the true weights of a generated problem (``synthetic``, in the
            units of the raw data; its support is the point), else None.
    """

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    coef: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        """Width of a model's output: ``num_classes``, or 1 for regression."""
        return self.num_classes if self.task == CLASSIFICATION else 1

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """The training data as an ``(x, y)`` batch."""
        return self.x_train, self.y_train

    @property
    def val(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation data as an ``(x, y)`` batch."""
        return self.x_val, self.y_val


def load_dataset(name: str, *, val_fraction: float = 0.25, split_seed: int = 0) -> Dataset:
    """Load a built-in dataset, split it and standardize it.

    Args:
        name: one of ``digits``, ``breast_cancer``, ``diabetes``, ``synthetic``.
        val_fraction: share of the examples held out for validation, in (0, 1).
        split_seed: seed of the split (and of the generated ``synthetic`` data).

    Returns:
        A :class:`Dataset`.

    Raises:
        ValueError: unknown name or ``val_fraction`` outside (0, 1).

    Example:
        >>> from jaxopt_core.app.datasets import load_dataset
        >>> ds = load_dataset("digits")
        >>> ds.task, ds.num_classes, ds.x_train.shape, ds.x_val.shape
        ('classification', 10, (1347, 64), (450, 64))
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction!r}")
    from sklearn.model_selection import train_test_split

    task = DATASETS[name][0]
    x, y, coef = _raw(name, split_seed)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x,
        y,
        test_size=val_fraction,
        random_state=split_seed,
        stratify=y if task == CLASSIFICATION else None,
    )
    x_tr, x_va = _standardize(x_tr, x_va)
    if task == CLASSIFICATION:
        y_tr, y_va = y_tr.astype(np.int32), y_va.astype(np.int32)
        num_classes = int(y.max()) + 1
    else:
        y_tr, y_va = (a[:, 0] for a in _standardize(y_tr[:, None], y_va[:, None]))
        num_classes = 0
    return Dataset(name, task, x_tr, y_tr, x_va, y_va, num_classes, coef)


def _raw(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from sklearn import datasets

    if name == "synthetic":
        rng = np.random.default_rng(seed)
        n, d, k = 600, 30, 5
        x = rng.standard_normal((n, d))
        coef = np.zeros(d)
        coef[rng.choice(d, k, replace=False)] = rng.choice([-1.0, 1.0], k) * rng.uniform(1, 3, k)
        y = x @ coef + 0.5 * rng.standard_normal(n)
        return x, y, coef.astype(np.float32)
    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }[name]
    x, y = loader(return_X_y=True)
    return x, y, None


def _standardize(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant columns stay 0, not NaN
    return (
        ((train - mean) / std).astype(np.float32),
        ((val - mean) / std).astype(np.float32),
    )
