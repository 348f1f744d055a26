"""The champion/challenger gate on real iris models, their ONNX files and a real store.

On iris with seed 42 (38 holdout rows): C=4.0 scores 0.9737, the default C=1.0 and C=0.9
score 0.9474, C=0.5 scores 0.9211, each through ONNX Runtime on the same rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from kiln.training.promotion import (
    FORCE,
    NO_CHAMPION,
    PROMOTE,
    RECORDED,
    REFUSE,
    SAME,
    SHARED_ROWS,
    GatePolicy,
)
from kiln.training.reports import model_card
from kiln.training.sequence import run_training
from tests.support.factories import write_csv

IMAGE = "127.0.0.1:5000/kiln/iris@sha256:" + "0" * 64


def champion(store: ArtifactStore, params: TrainParams, target: str = "local") -> str:
    """Store a model and record it as what `target` runs."""
    version = run_training(store, params).version
    store.record_deployment(target, version, IMAGE)
    return version


def judge(store: ArtifactStore, params: TrainParams, **policy):
    return run_training(store, params, GatePolicy(target="local", **policy))


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_first_model_on_a_target_ships_on_the_absolute_gate_alone(store):
    outcome = judge(store, TrainParams())
    decision = outcome.decision
    assert (decision.outcome, decision.basis, decision.champion) == (PROMOTE, NO_CHAMPION, None)
    assert decision.ships
    assert "no champion on local" in decision.reason
    [recorded] = store.decisions(outcome.version)
    assert recorded["outcome"] == PROMOTE and recorded["target"] == "local"


def test_a_better_challenger_ships(store):
    old = champion(store, TrainParams())
    decision = judge(store, TrainParams(C=4.0)).decision
    assert decision.outcome == PROMOTE and decision.basis == SHARED_ROWS
    assert decision.champion == old
    assert decision.challenger_score == pytest.approx(37 / 38)
    assert decision.champion_score == pytest.approx(36 / 38)
    assert decision.challenger_rows == decision.champion_rows == 38


def test_a_worse_challenger_is_refused_but_stored_for_audit(store):
    better = champion(store, TrainParams(C=4.0))
    outcome = judge(store, TrainParams())
    decision = outcome.decision
    assert decision.outcome == REFUSE and not decision.ships
    for text in (outcome.version, better, "0.9474", "0.9737", f"{better} keeps serving"):
        assert text in decision.reason
    [recorded] = store.decisions(outcome.version)
    assert recorded["outcome"] == REFUSE
    assert recorded["champion"] == better
    assert recorded["challenger_score"] == pytest.approx(36 / 38)
    assert recorded["champion_score"] == pytest.approx(37 / 38)
    assert store.deployment("local").current == better  # untouched


def test_a_tie_ships_and_a_worse_score_only_within_the_tolerance(store):
    champion(store, TrainParams(C=0.9))
    tie = judge(store, TrainParams()).decision  # 0.9474 both
    assert tie.challenger_score == tie.champion_score and tie.outcome == PROMOTE

    other = ArtifactStore(f"{store.url}-2")
    champion(other, TrainParams())
    worse = TrainParams(C=0.5)  # 0.9211 against 0.9474: worse by 0.0263
    assert judge(other, worse).decision.outcome == REFUSE
    assert judge(other, worse, tolerance=0.02).decision.outcome == REFUSE
    allowed = judge(other, worse, tolerance=0.03).decision
    assert allowed.outcome == PROMOTE and "tolerance 0.03" in allowed.reason


def test_a_changed_signature_falls_back_to_recorded_metrics_and_says_so(store, tmp_path):
    from kiln.training.data import load_iris_dataset

    iris = load_iris_dataset()
    header = [f"cm_{name}" for name in iris.feature_names] + ["label"]
    rows = [[*x, iris.class_names[y]] for x, y in zip(iris.X, iris.y, strict=True)]
    csv = write_csv(tmp_path / "renamed.csv", header, rows)
    old = champion(store, TrainParams(data=str(csv), C=4.0))
    decision = judge(store, TrainParams(), replace_schema=True).decision
    assert decision.basis == RECORDED
    assert decision.outcome == REFUSE  # recorded 0.9474 against the champion's recorded 0.9737
    assert "input signatures differ (removed cm_sepal_length" in decision.reason
    assert "each model's recorded holdout metric" in decision.reason
    assert decision.champion == old and decision.champion_score == pytest.approx(37 / 38)


def test_a_challenger_with_other_columns_is_refused_unless_the_schema_is_replaced(store, tmp_path):
    """Its clients send the champion's columns: shipping it would break every one of them."""
    from kiln.training.data import load_iris_dataset

    iris = load_iris_dataset()
    keep = [0, 2, 3]  # sepal_width left out
    header = [*(iris.feature_names[i] for i in keep), "label"]
    rows = [[*x[keep], iris.class_names[y]] for x, y in zip(iris.X, iris.y, strict=True)]
    csv = write_csv(tmp_path / "three.csv", header, rows)
    old = champion(store, TrainParams())
    refused = judge(store, TrainParams(data=str(csv)), force=True).decision
    assert (refused.outcome, refused.basis) == (REFUSE, "the input schema")
    assert "removed sepal_width" in refused.reason and "--replace-schema" in refused.reason
    assert refused.champion == old and not refused.ships  # --force does not override it
    replaced = judge(store, TrainParams(data=str(csv)), replace_schema=True, force=True).decision
    assert replaced.ships and replaced.basis == RECORDED
    assert "the input schema is replaced, as asked" in replaced.reason


def test_force_ships_a_worse_model_and_records_that_it_was_forced(store):
    champion(store, TrainParams(C=4.0))
    refused = judge(store, TrainParams())
    outcome = judge(store, TrainParams(), force=True)
    assert outcome.version == refused.version
    assert outcome.decision.outcome == FORCE and outcome.decision.ships
    assert "shipped anyway because it was forced" in outcome.decision.reason
    # the same version judged twice: both decisions kept, oldest first; the model untouched
    assert [d["outcome"] for d in store.decisions(outcome.version)] == [REFUSE, FORCE]
    assert "promotion" not in store.metadata(outcome.version)


def test_the_model_already_running_changes_nothing(store):
    running = champion(store, TrainParams())
    created = store.metadata(running)["created"]
    decision = judge(store, TrainParams()).decision
    assert decision.outcome == SAME and not decision.ships
    assert "runs already" in decision.reason and "nothing to do" in decision.reason
    assert [v.version for v in store.list_versions()] == [running]
    assert store.metadata(running)["created"] == created
    assert store.decisions(running) == []  # nothing recorded: nothing happened


def test_the_model_card_shows_challenger_and_champion_side_by_side(store):
    better = champion(store, TrainParams(C=4.0))
    outcome = judge(store, TrainParams())
    stored = store.get(outcome.version)
    card = model_card(stored.metadata, stored.labels, {}, outcome.decision)
    assert "## Champion gate on local: refuse" in card
    assert "| | challenger | champion |" in card
    assert f"| version | `{outcome.version}` | `{better}` |" in card
    assert "| accuracy | 0.9474 | 0.9737 |" in card
    assert "| rows scored | 38 | 38 |" in card
    assert "compared on the same holdout rows; tolerance 0" in card


def test_kiln_train_with_a_target_prints_the_decision_and_models_lists_it(store, kiln_cli):
    better = champion(store, TrainParams(C=4.0))
    trained = kiln_cli("train", "--target", "local", store=store)
    assert trained.returncode == 0, trained.stderr
    assert "decision refuse: challenger" in trained.stdout
    assert f"{better} keeps serving on local" in trained.stdout
    listed = {
        row["version"]: row for row in json.loads(kiln_cli("models", "--json", store=store).stdout)
    }
    refused = next(v for v in listed if v != better)
    assert listed[refused]["decision"]["outcome"] == REFUSE
    assert listed[better]["deployed_on"] == ["local"]
    table = kiln_cli("models", store=store).stdout
    assert "refuse on local" in table


def test_kiln_train_rejects_an_unknown_target_before_training(store, kiln_cli):
    result = kiln_cli("train", "--target", "mars", store=store)
    assert result.returncode == 2  # a usage error
    assert "'mars'" in result.stderr and "Traceback" not in result.stderr
    assert store.list_versions() == []


def test_a_retried_run_reuses_the_recorded_scores_without_reading_the_champion(store):
    old = champion(store, TrainParams(C=4.0))
    first = judge(store, TrainParams()).decision
    assert first.outcome == REFUSE and first.basis == SHARED_ROWS
    # The champion's model file is unreadable now: scoring it again would fail the gate.
    (Path(store.root) / "versions" / old / "model.onnx").write_bytes(b"not the model")
    again = judge(store, TrainParams()).decision  # a retry: same challenger, same champion
    assert again == first
    forced = judge(store, TrainParams(), force=True).decision  # the policy still applies
    assert forced.outcome == FORCE and forced.champion_score == first.champion_score
    lenient = judge(store, TrainParams(), tolerance=0.05).decision
    assert lenient.outcome == PROMOTE and "tolerance 0.05" in lenient.reason


def test_scores_are_not_reused_for_another_champion_or_metric(store):
    from kiln.config.errors import IntegrityError

    champion(store, TrainParams(C=4.0))
    judge(store, TrainParams())  # recorded against the C=4.0 champion, on accuracy
    other = champion(store, TrainParams(C=0.5))  # the target runs another model now
    decision = judge(store, TrainParams()).decision
    assert decision.champion == other and decision.outcome == PROMOTE  # scored afresh
    (Path(store.root) / "versions" / other / "model.onnx").write_bytes(b"not the model")
    with pytest.raises(IntegrityError):  # another metric: both models are scored again
        judge(store, TrainParams(), metric="f1_macro")
