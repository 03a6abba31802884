"""Every public entry point beyond the ops has bad-input tests.

The entry points are ``mfext.factorize``, every public method of
``MatrixFactorization`` (and its hyperparameters), ``ImplicitALS``'s
hyperparameters and ``fit`` (its other methods are the recommender base's,
which the shared contract covers for every model), the public callables of
``mfext.datasets`` and ``mfext.metrics``, and the CLI. Each bad input must give a clear
``ValueError``/``TypeError`` (or a documented error type) naming the argument,
never a crash, hang, deep traceback or garbage. The tests live with their
capability (tests/dense, tests/recommenders, tests/data, tests/cli); ``COVERED``
names, per entry point, the case tables and the test functions there that feed
it bad input. The op-level checks are tests/ops/test_loss_bad_inputs.py,
test_loss_fuzz.py and test_sgd_epoch_bad_inputs.py, and the ALS ops' table in
test_als_ops.py.
"""
from __future__ import annotations

import mfext
from mfext import MatrixFactorization
from helpers import import_test_module

# Entry point -> its sources, each "file::NAME" (file relative to tests/): NAME is a
# case table (a dict or list; "NAME[key]" picks one entry of a dict of tables) or a
# test function ("Class.test_x" for a method). The counts are computed from the
# tables; test_coverage_counts checks that every public entry point is here (a new
# public method without bad-input tests fails it) and that every named test exists.
_FIT = "recommenders/test_mf_fit_bad_inputs.py"
_SERVING = "recommenders/test_mf_serving_bad_inputs.py"
_FILES = "recommenders/test_mf_persistence_bad_inputs.py"
_CONTRACT = "recommenders/contract.py"
_DATA = "data/test_datasets_bad_inputs.py"
COVERED = {
    "factorize": ["dense/test_factorize_inputs.py::FACTORIZE_CASES"],
    "MatrixFactorization(hyperparameters)": [f"{_FIT}::HYPER_CASES"],
    "MatrixFactorization.fit": [f"{_FIT}::FIT_CASES", f"{_FIT}::PAIRS_CASES",
                                f"{_FIT}::test_fit_bad_validation_and_early_stopping",
                                f"{_FIT}::test_ratings_overflowing_the_dtype"],
    "MatrixFactorization.predict": [f"{_SERVING}::PREDICT_CASES", f"{_SERVING}::PREDICT_PAIRS_CASES",
                                    f"{_SERVING}::test_predict_unknown_fallback_is_finite"],
    "MatrixFactorization.recommend": [f"{_SERVING}::RECOMMEND_CASES",
                                      f"{_SERVING}::test_recommend_unknown_user_and_not_fitted"],
    "MatrixFactorization.similar_items": [f"{_SERVING}::SIMILAR_CASES"],
    "MatrixFactorization.similar_users": [
        f"{_CONTRACT}::SIMILAR_USERS_CASES",
        f"{_CONTRACT}::RecommenderContract.test_similar_users_bad_input"],
    "MatrixFactorization.user_index": [f"{_SERVING}::INDEX_CASES"],
    "MatrixFactorization.item_index": [f"{_SERVING}::INDEX_CASES"],
    "MatrixFactorization.fold_in": [f"{_SERVING}::FOLD_IN_CASES",
                                    f"{_SERVING}::test_fold_in_ratings_overflowing_the_dtype"],
    "MatrixFactorization.partial_fit_users": [
        f"{_CONTRACT}::PARTIAL_FIT_USERS_CASES",
        f"{_CONTRACT}::RecommenderContract.test_partial_fit_users_bad_input",
        f"{_CONTRACT}::RecommenderContract.test_partial_fit_bad_inputs_change_nothing"],
    "MatrixFactorization.partial_fit_items": [
        f"{_CONTRACT}::PARTIAL_FIT_ITEMS_CASES",
        f"{_CONTRACT}::RecommenderContract.test_partial_fit_items_bad_input",
        f"{_CONTRACT}::RecommenderContract.test_partial_fit_bad_inputs_change_nothing"],
    "MatrixFactorization.to": [f"{_CONTRACT}::TO_CASES",
                               f"{_CONTRACT}::RecommenderContract.test_to_bad_device",
                               f"{_CONTRACT}::RecommenderContract.test_to_moves_the_model"],
    "MatrixFactorization.score": [f"{_SERVING}::SCORE_CASES", f"{_SERVING}::PREDICT_PAIRS_CASES",
                                  f"{_SERVING}::test_score_unknown_ids_fall_back"],
    "MatrixFactorization.set_params": [f"{_FIT}::SET_PARAMS_CASES"],
    "MatrixFactorization.load": [f"{_FILES}::LOAD_CASES", f"{_FILES}::LOAD_ARG_CASES",
                                 f"{_FILES}::test_load_missing_file",
                                 f"{_FILES}::test_load_directory"],
    "MatrixFactorization.save": [f"{_FILES}::test_save_failure_keeps_previous_file",
                                 f"{_FILES}::test_save_bad_destination"],
    "datasets.load_movielens": [f"{_DATA}::DATASET_CASES", f"{_DATA}::test_load_movielens_missing"],
    "datasets.Ratings": [f"{_DATA}::DATASETS_CASES[Ratings]"],
    "datasets.train_test_split": [f"{_DATA}::DATASETS_CASES[train_test_split]"],
    "datasets.synthetic_ratings": [f"{_DATA}::DATASETS_CASES[synthetic_ratings]"],
    "datasets.to_implicit": ["data/test_splits.py::test_to_implicit_bad_arguments"],
    "ImplicitALS(hyperparameters)": [
        "recommenders/test_implicit_als.py::test_bad_parameters_name_themselves"],
    "ImplicitALS.fit": ["recommenders/test_implicit_als.py::test_negative_or_nan_values_are_refused",
                        "recommenders/test_implicit_als.py::test_bad_validation"],
    **{f"metrics.{name}": ["metrics/test_ranking_metrics.py::test_bad_input_names_the_argument"]
       for name in mfext.metrics.__all__ if callable(getattr(mfext.metrics, name))},
    "cli": ["cli/test_cli_bad_inputs.py::CLI_CASES"],
    "sgd_epoch_ (aliasing)": ["ops/test_sgd_epoch_bad_inputs.py::ALIAS_CASES",
                              "ops/test_sgd_epoch_bad_inputs.py::INPUT_ALIAS_CASES"],
}
# Public callables without arguments to get wrong (the ops are covered in tests/ops).
NOT_COVERED_HERE = {"MatrixFactorization.get_params": "takes only deep, which it ignores"}


def _public_entry_points() -> set:
    methods = {f"MatrixFactorization.{name}" for name in dir(MatrixFactorization)
               if not name.startswith("_") and callable(getattr(MatrixFactorization, name))}
    return (methods | {f"datasets.{name}" for name in mfext.datasets.__all__}
            | {f"metrics.{name}" for name in mfext.metrics.__all__
               if callable(getattr(mfext.metrics, name))}
            | {"factorize", "MatrixFactorization(hyperparameters)", "cli",
               "ImplicitALS(hyperparameters)", "ImplicitALS.fit"})


def _resolve(source: str):
    """The object a "file::NAME" source names (see COVERED)."""
    path, _, name = source.partition("::")
    obj = import_test_module(path)
    key = None
    if name.endswith("]"):
        name, _, key = name[:-1].partition("[")
    for part in name.split("."):
        obj = getattr(obj, part, None)
        assert obj is not None, f"{source}: {path} has no {name}"
    return obj if key is None else obj[key]


def test_coverage_counts():
    public = _public_entry_points()
    assert "MatrixFactorization.fit" in public and "datasets.load_movielens" in public
    missing = sorted(public - set(COVERED) - set(NOT_COVERED_HERE))
    assert not missing, f"public entry points without bad-input tests: {missing}"
    counts = {}
    for entry, sources in COVERED.items():
        count = 0
        for source in sources:
            obj = _resolve(source)
            test = source.rpartition("::")[2].rpartition(".")[2]
            if test.startswith("test_"):
                assert callable(obj), f"{entry}: {source} is not a test"
                count += 1
            else:
                assert isinstance(obj, (dict, list)) and obj, f"{entry}: {source} is no case table"
                count += len(obj)
        assert count > 0, entry
        counts[entry] = count
    print(counts)
