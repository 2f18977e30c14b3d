"""Real data: CSV and Parquet tables and scikit-learn's bundled sets, binary or multiclass."""

import numpy as np
import pandas as pd
import pytest

from irrepro.config import DataConfig
from irrepro.data import DataError, make_dataset


def table(rows=100, classes=("no", "yes"), seed=0):
    """A frame with two numeric features, a constant, a text column and a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.normal(40, 10, rows),
        "income": rng.lognormal(3, 1, rows),
        "constant": np.full(rows, 7.0),
        "city": rng.choice(["Oslo", "Lima"], rows),
        "kind": np.resize(np.array(classes), rows),
    })


def write(frame, path):
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return str(path)


def load(path, **options):
    return make_dataset(DataConfig(name="table", path=path, label="kind", **options))


def test_a_binary_table_is_split_stratified_and_standardized(tmp_path):
    data = load(write(table(), tmp_path / "rows.csv"))
    assert data.classes == ("no", "yes") and data.n_classes == 2 and data.p_test is None
    # every numeric column but the label; the text column is not a feature
    assert data.x_train.shape == (80, 3) and data.x_test.shape == (20, 3)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.float32
    assert set(np.unique(data.y_train)) == {0.0, 1.0}
    assert data.y_train.mean() == data.y_test.mean() == 0.5  # stratified
    np.testing.assert_allclose(data.x_train[:, :2].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(data.x_train[:, :2].std(axis=0), 1, atol=1e-5)
    assert not data.x_train[:, 2].any() and not data.x_test[:, 2].any()  # centered constant


def test_the_split_depends_on_the_data_seed_and_the_file_only(tmp_path):
    path = write(table(), tmp_path / "rows.csv")
    first, again, other = load(path), load(path, seed=1234), load(path, seed=5)
    assert first.digest == again.digest
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert other.digest != first.digest
    write(table(seed=1), tmp_path / "rows.csv")  # a changed file is read again
    assert load(path).digest != first.digest


def test_csv_and_parquet_of_one_table_give_the_same_data(tmp_path):
    frame = table()
    from_csv = load(write(frame, tmp_path / "rows.csv"))
    from_parquet = load(write(frame, tmp_path / "rows.parquet"))
    np.testing.assert_array_equal(from_csv.x_train, from_parquet.x_train)
    assert from_csv.digest == from_parquet.digest


def test_multiclass_labels_with_a_test_file_and_chosen_features(tmp_path):
    train = write(table(90, classes=("c", "a", "b")), tmp_path / "train.csv")
    test = write(table(30, classes=("b", "c", "a"), seed=1), tmp_path / "test.parquet")
    data = load(train, test_path=test, features=["income", "age"])
    assert data.classes == ("a", "b", "c") and data.n_classes == 3
    assert data.x_train.shape == (90, 2) and data.x_test.shape == (30, 2)
    assert data.y_train.dtype == np.int64 and data.y_train[:3].tolist() == [2, 0, 1]
    assert data.y_test[:3].tolist() == [1, 2, 0]
    income = pd.read_csv(train)["income"].to_numpy()
    expected = (income - income.mean()) / income.std()
    np.testing.assert_allclose(data.x_train[:, 0], expected, rtol=1e-5)
    assert load(train, test_path=test, features=["age", "income"]).digest != data.digest


def test_numeric_labels_keep_their_values_and_the_larger_is_label_one(tmp_path):
    frame = table(classes=(2, -1))
    data = load(write(frame, tmp_path / "rows.csv"))
    assert data.classes == (-1, 2)
    positive = frame["kind"].to_numpy() == 2
    assert data.y_train.sum() + data.y_test.sum() == positive.sum()


def with_gaps(frame):
    frame.loc[[3, 8, 9], "income"] = np.nan
    return frame


def with_infinities(frame):
    frame.loc[[2, 5], "age"] = [np.inf, -np.inf]
    return frame


@pytest.mark.parametrize(
    "name, frame, options, message",
    [("rows.csv", None, {}, r"data\.path=.*rows\.csv: no such file"),
     ("rows.txt", table(), {}, r"unknown extension '\.txt'"),
     ("rows.csv", table().drop(columns="kind"), {}, r"data\.label: no column 'kind'"),
     ("rows.csv", table(), {"features": ["age", "height"]}, r"no column 'height'"),
     ("rows.csv", table(), {"features": ["age", "city"]}, r"column 'city' .* is not numeric"),
     ("rows.csv", with_gaps(table()), {}, r"column 'income' .* has 3 missing values"),
     ("rows.csv", with_infinities(table()), {}, r"column 'age' .* has 2 infinite values"),
     ("rows.csv", table(classes=("yes",)), {}, r"single class \('yes'\)"),
     ("rows.csv", table(22, classes=("a",) * 10 + ("b",)), {"test_fraction": 0.9},
      r"test split leaves class 'b' out of training"),
     ("rows.csv", table(21, classes=("a",) * 20 + ("b",)), {}, r"only 1 member")],
)
def test_unusable_data_fail_with_one_line_naming_the_problem(tmp_path, name, frame, options,
                                                             message):
    path = tmp_path / name
    if frame is not None:
        frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=message) as error:
        load(str(path), **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("extension", [".csv", ".parquet"])
def test_a_header_that_names_a_column_twice_is_refused(tmp_path, extension):
    # pandas would read the second 'kind' of a CSV as 'kind.1', a feature holding the label
    import pyarrow as pa
    import pyarrow.parquet

    frame = table()
    columns = [pa.array(frame[name]) for name in ("age", "kind", "kind")]
    path = tmp_path / f"rows{extension}"
    if extension == ".csv":
        frame[["age", "kind", "kind"]].to_csv(path, index=False)
    else:
        pyarrow.parquet.write_table(pa.table(columns, names=["age", "kind", "kind"]), path)
    with pytest.raises(DataError, match=rf"data\.path=.*rows\{extension}: its header names "
                                        r"column 'kind' 2 times$"):
        load(str(path))


def test_a_continuous_label_is_refused_unless_data_max_classes_allows_its_values(tmp_path):
    # 120 prices, each twice: a split stratified by them works, and would train 120 classes
    frame = table(240)
    frame["kind"] = np.repeat(np.random.default_rng(0).lognormal(3, 1, 120).round(2), 2)
    path = write(frame, tmp_path / "rows.csv")
    with pytest.raises(DataError, match=r"^data\.label: column 'kind' of .*rows\.csv holds 120 "
                                        r"distinct values, more classes than "
                                        r"data\.max_classes=100 \(a continuous target\?\)$"):
        load(path)
    assert load(path, max_classes=120, test_fraction=0.5).n_classes == 120


def test_columns_left_unnamed_are_not_names_repeated(tmp_path):
    frame = table()[["age", "income", "kind"]]
    frame.to_csv(tmp_path / "rows.csv", index=False, header=["", "", "kind"])
    assert load(str(tmp_path / "rows.csv")).x_train.shape == (80, 2)


def test_infinite_values_in_a_test_file_are_refused(tmp_path):
    test = write(with_infinities(table()), tmp_path / "test.csv")
    with pytest.raises(DataError, match=r"column 'age' of .*test\.csv has 2 infinite values"):
        load(write(table(), tmp_path / "train.csv"), test_path=test)


def test_a_test_file_with_a_class_unseen_in_training_is_refused(tmp_path):
    train = write(table(classes=("a", "b")), tmp_path / "train.csv")
    test = write(table(classes=("a", "z")), tmp_path / "test.csv")
    with pytest.raises(DataError, match=r"data\.test_path=.* leaves class 'z' out of training"):
        load(train, test_path=test)


@pytest.mark.parametrize(
    "dataset, n_features, n_classes", [("digits", 64, 10), ("breast_cancer", 30, 2),
                                       ("wine", 13, 3), ("iris", 4, 3)],
)
def test_scikit_learn_sets_load_offline_and_split_stratified(dataset, n_features, n_classes):
    data = make_dataset(DataConfig(name="sklearn", dataset=dataset))
    n = data.x_train.shape[0] + data.x_test.shape[0]
    assert data.x_train.shape[1] == n_features and data.n_classes == n_classes
    assert data.x_test.shape[0] == int(np.ceil(0.2 * n))
    assert data.classes == tuple(range(n_classes))
    train_share = np.bincount(data.y_train.astype(np.int64)) / data.y_train.size
    test_share = np.bincount(data.y_test.astype(np.int64)) / data.y_test.size
    np.testing.assert_allclose(train_share, test_share, atol=0.03)


def test_a_scikit_learn_set_takes_chosen_features():
    data = make_dataset(DataConfig(name="sklearn", dataset="iris", test_fraction=0.5,
                                   features=["petal length (cm)"]))
    assert data.x_train.shape == (75, 1) and data.x_test.shape == (75, 1)


def test_synthetic_data_keep_binary_labels_and_the_teacher():
    data = make_dataset(DataConfig(n_train=50, n_test=20))
    assert data.classes == (0, 1) and data.n_classes == 2
    assert data.p_test.shape == (20,) and data.y_test.dtype == np.float32
