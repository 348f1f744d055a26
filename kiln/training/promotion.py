"""The champion/challenger gate: a new model replaces what runs only when it is not worse.

The champion is what the target runs now (the store's deployment record for it). A
challenger whose input schema differs from the champion's (a column added, removed or of
another type) is refused, since it would break every client, unless the policy says to
replace the schema. Otherwise both models are scored through ONNX Runtime on the same rows,
the challenger's holdout, on the gate metric; the challenger ships when its score is not
worse than the champion's beyond the tolerance (lower is better for an error metric such as
rmse). When the two models do not give the same labels the rows cannot be shared, and each
model's own recorded holdout score decides instead. Plain functions; the store is handed in.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from kiln.config.errors import KilnError, ParameterError, QualityGateError
from kiln.store.artifact_store import ArtifactStore, StoredModel
from kiln.training import metrics as scores
from kiln.training.schema import (
    TableSchema,
    Task,
    describe_difference,
    onnx_feed,
    schema_of_metadata,
)
from kiln.training.train import QualityBar

log = logging.getLogger(__name__)

PROMOTE = "promote"  # ships: better, not worse beyond the tolerance, or nothing to beat
REFUSE = "refuse"  # stored for audit, never built or rolled out
FORCE = "force"  # would have been refused; ships because it was forced
SAME = "same"  # the challenger is the very model the target runs: nothing to do

SHARED_ROWS = "the same holdout rows"
SCHEMA = "the input schema"
RECORDED = "each model's recorded holdout metric"
NO_CHAMPION = "the absolute gate alone (no champion)"
# Anything closer than this is the same score.
EPSILON = 1e-12
# The quality gate's threshold when none is set: at least this much, per metric. Error
# metrics (rmse, mae) are in the target's units: they have no default and need one set.
DEFAULT_THRESHOLDS = {
    "accuracy": 0.9,
    "balanced_accuracy": 0.8,
    "f1_macro": 0.8,
    "roc_auc": 0.8,
    "r2": 0.3,
}


@dataclass(frozen=True)
class GatePolicy:
    """How a trained model is judged: the absolute gate, then against `target`'s champion.

    `metric` and `threshold` None: the task's default (accuracy >= 0.9 for a classification,
    r2 >= 0.3 for a regression; see `for_task`)."""

    metric: str | None = None
    threshold: float | None = None
    tolerance: float = 0.0
    target: str | None = None  # None: no champion to compare with (plain `kiln train`)
    force: bool = False
    min_class_recall: float | None = None
    replace_schema: bool = False  # ship a model that takes other columns than the champion

    def for_task(self, task: Task) -> GatePolicy:
        """This policy with the metric and threshold settled for `task`; ParameterError
        when the metric does not apply to it or an error metric has no threshold."""
        metric = self.metric or scores.DEFAULT_METRIC[task]
        if metric not in scores.metrics_for(task):
            raise ParameterError(
                f"gate metric {metric!r} does not apply to a {task}; use one of "
                f"{', '.join(scores.metrics_for(task))} (KILN_GATE_METRIC)"
            )
        threshold = self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS.get(metric)
        if threshold is None:
            raise ParameterError(
                f"gate metric {metric} is an error in the target's units: set its limit with "
                "KILN_GATE_THRESHOLD (or --min-score)"
            )
        return replace(self, metric=metric, threshold=threshold)

    def bar(self) -> QualityBar:
        assert self.metric is not None and self.threshold is not None, "call for_task first"
        return QualityBar(self.metric, self.threshold, self.min_class_recall)


@dataclass(frozen=True)
class Challenger:
    """What the gate needs of the freshly trained model."""

    version: str
    onnx_bytes: bytes
    schema: TableSchema
    X_holdout: Any  # a pandas DataFrame of the holdout's features
    y_holdout: np.ndarray
    metrics: dict[str, Any]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.schema.target.classes


@dataclass(frozen=True)
class Decision:
    outcome: str  # PROMOTE, REFUSE, FORCE or SAME
    reason: str  # one sentence naming both versions and both scores
    target: str | None
    metric: str
    tolerance: float
    basis: str  # SHARED_ROWS, RECORDED, NO_CHAMPION or SCHEMA
    challenger: str
    challenger_score: float
    challenger_rows: int
    champion: str | None = None
    champion_score: float | None = None
    champion_rows: int | None = None

    @property
    def ships(self) -> bool:
        return self.outcome in (PROMOTE, FORCE)

    @property
    def forced(self) -> bool:
        return self.outcome == FORCE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(store: ArtifactStore, policy: GatePolicy, challenger: Challenger) -> Decision:
    """Judge the challenger against what `policy.target` runs now."""
    policy = policy.for_task(challenger.schema.task)
    record = store.deployment(policy.target) if policy.target else None
    if record is None:
        decision = _without_champion(policy, challenger)
    elif record.current == challenger.version:
        decision = _already_running(policy, challenger)
    else:
        decision = _against_champion(store, policy, challenger, record.current)
    log.info("champion gate: %s", decision.reason)
    return decision


def _against_champion(
    store: ArtifactStore, policy: GatePolicy, challenger: Challenger, current: str
) -> Decision:
    recorded = _recorded_against(store, policy, challenger, current)
    if recorded is not None:
        return recorded
    champion = store.get(current)
    theirs = schema_of_metadata(champion.metadata)
    difference = describe_difference(theirs, challenger.schema)
    if difference is None or policy.replace_schema:
        return _against(champion, theirs, policy, challenger, difference)
    return _decision(
        REFUSE,
        f"challenger {challenger.version} takes other input than champion {champion.version} "
        f"on {policy.target} ({difference}): it would break every client; refused, "
        f"{champion.version} keeps serving (--replace-schema ships it anyway)",
        policy,
        SCHEMA,
        challenger,
        _own_score(policy, challenger),
        (champion.version, None, None),
    )


def _recorded_against(
    store: ArtifactStore, policy: GatePolicy, challenger: Challenger, champion: str
) -> Decision | None:
    """The comparison with this champion on the same rows, as an earlier attempt recorded it.

    A retried run stores the same challenger (same data, parameters and code: same version)
    and met the same champion before it failed: its recorded scores are what scoring both
    models again would give, without fetching the champion or running either model. Only a
    record that matches in every input of the comparison is used; anything else is scored.
    """
    try:  # none when the challenger was never stored: no earlier attempt got this far
        records = store.decisions(challenger.version)
    except (OSError, ValueError, KilnError) as err:  # pruned meanwhile, unreadable: score
        log.info("champion gate: no recorded decision about %s (%s)", challenger.version, err)
        return None
    own = _own_score(policy, challenger)
    for record in reversed(records):
        if _compares_the_same(record, policy, challenger, champion, own):
            decision = _decision(
                _outcome(own, float(record["champion_score"]), policy),
                "",
                policy,
                SHARED_ROWS,
                challenger,
                own,
                (champion, float(record["champion_score"]), int(record["champion_rows"])),
            )
            log.info(
                "champion gate: scores of %s and %s as recorded earlier",
                challenger.version,
                champion,
            )
            return replace(decision, reason=_reason(decision, ""))
    return None


def _compares_the_same(
    record: dict[str, Any], policy: GatePolicy, challenger: Challenger, champion: str, own: float
) -> bool:
    """Whether a recorded decision scored this challenger and champion on these rows."""
    try:
        return (
            record.get("basis") == SHARED_ROWS
            and record.get("target") == policy.target
            and record.get("champion") == champion
            and record.get("challenger") == challenger.version
            and record.get("metric") == policy.metric
            and record.get("basis") != SCHEMA
            and int(record["challenger_rows"]) == len(challenger.y_holdout)
            and int(record["champion_rows"]) == len(challenger.y_holdout)
            and abs(float(record["challenger_score"]) - own) <= EPSILON
            and record.get("champion_score") is not None
        )
    except (KeyError, TypeError, ValueError):
        return False  # a record of another shape: score again


def _outcome(ours: float, theirs: float, policy: GatePolicy) -> str:
    assert policy.metric is not None
    allowed = policy.tolerance + EPSILON
    if policy.metric in scores.LOWER_IS_BETTER:
        not_worse = ours - allowed <= theirs
    else:
        not_worse = ours + allowed >= theirs
    if not_worse:
        return PROMOTE
    return FORCE if policy.force else REFUSE


def _own_score(policy: GatePolicy, challenger: Challenger) -> float:
    """The challenger's recorded holdout score on the gate metric (settled by for_task)."""
    assert policy.metric is not None
    value = challenger.metrics.get(policy.metric)
    if value is None:
        raise QualityGateError(f"champion gate: {policy.metric} is undefined on this holdout")
    return float(value)


def _without_champion(policy: GatePolicy, challenger: Challenger) -> Decision:
    own = _own_score(policy, challenger)
    where = f"on {policy.target}" if policy.target else "(no target given)"
    reason = (
        f"{challenger.version} {policy.metric} {own:.4f}: no champion {where}, "
        f"judged by {NO_CHAMPION}"
    )
    return _decision(PROMOTE, reason, policy, NO_CHAMPION, challenger, own)


def _already_running(policy: GatePolicy, challenger: Challenger) -> Decision:
    own = _own_score(policy, challenger)
    rows = len(challenger.y_holdout)
    reason = (
        f"{challenger.version} is the model {policy.target} runs already "
        "(same data, parameters and code): nothing to do"
    )
    return _decision(
        SAME, reason, policy, SHARED_ROWS, challenger, own, (challenger.version, own, rows)
    )


def _against(
    champion: StoredModel,
    theirs_schema: TableSchema,
    policy: GatePolicy,
    challenger: Challenger,
    schema_difference: str | None,
) -> Decision:
    """Scores on shared rows when both take the same input and give the same labels; else
    each model's recorded score (a schema replaced on purpose, other labels)."""
    assert policy.metric is not None
    shared = None
    if schema_difference is None:
        shared = _shared_scores(champion, theirs_schema, challenger, policy.metric)
    if shared is not None:
        basis = SHARED_ROWS
        (ours, ours_rows), (theirs, theirs_rows) = shared
    else:
        basis = RECORDED
        ours, ours_rows = _recorded(challenger.metrics, challenger.version, policy.metric)
        theirs, theirs_rows = _recorded(
            champion.metadata.get("metrics", {}), champion.version, policy.metric
        )
    decision = _decision(
        _outcome(ours, theirs, policy),
        "",
        policy,
        basis,
        challenger,
        ours,
        (champion.version, theirs, theirs_rows),
    )
    decision = replace(decision, challenger_rows=ours_rows)
    difference = schema_difference or _signature_difference(champion, challenger)
    return replace(decision, reason=_reason(decision, difference))


def _decision(
    outcome: str,
    reason: str,
    policy: GatePolicy,
    basis: str,
    challenger: Challenger,
    own: float,
    champion: tuple[str, float | None, int | None] | None = None,
) -> Decision:
    champion_version, champion_score, champion_rows = champion or (None, None, None)
    assert policy.metric is not None
    return Decision(
        outcome=outcome,
        reason=reason,
        target=policy.target,
        metric=policy.metric,
        tolerance=policy.tolerance,
        basis=basis,
        challenger=challenger.version,
        challenger_score=own,
        challenger_rows=len(challenger.y_holdout),
        champion=champion_version,
        champion_score=champion_score,
        champion_rows=champion_rows,
    )


def _reason(decision: Decision, difference: str) -> str:
    d = decision
    compared = (
        f"challenger {d.challenger} {d.metric} {d.challenger_score:.4f} vs champion "
        f"{d.champion} {d.metric} {d.champion_score:.4f}"
    )
    if d.basis == SHARED_ROWS:
        compared += f" on the same {d.challenger_rows} holdout rows"
    else:
        compared += f": the input signatures differ ({difference}), so compared by {RECORDED}"
        if "labels" not in difference and "tasks" not in difference:
            compared += " (the input schema is replaced, as asked)"
    tolerance = f"tolerance {d.tolerance:g}"
    if d.outcome == PROMOTE:
        return f"{compared}: not worse beyond the {tolerance}; promoted on {d.target}"
    worse = (
        f"worse by {abs((d.champion_score or 0) - d.challenger_score):.4f}, more than the "
        f"{tolerance}"
    )
    if d.outcome == FORCE:
        return f"{compared}: {worse}; shipped anyway because it was forced"
    return f"{compared}: {worse}; refused, {d.champion} keeps serving on {d.target}"


def _signature_difference(champion: StoredModel, challenger: Challenger) -> str:
    labels = _labels(champion)
    if labels != challenger.class_names:
        return f"labels {list(labels)} vs {list(challenger.class_names)}"
    return "tasks differ"


def _labels(model: StoredModel) -> tuple[str, ...]:
    return tuple(model.labels[key] for key in sorted(model.labels, key=int))


def _recorded(metrics: dict[str, Any], version: str, metric: str) -> tuple[float, int]:
    """A model's own holdout score and the number of rows it was measured on."""
    if metrics.get(metric) is None:
        raise QualityGateError(
            f"champion gate: {version} recorded no {metric}; the two models cannot be compared"
        )
    return float(metrics[metric]), int(metrics.get("holdout_rows", 0))


def _shared_scores(
    champion: StoredModel, theirs_schema: TableSchema, challenger: Challenger, metric: str
) -> tuple[tuple[float, int], tuple[float, int]] | None:
    """Both models scored on the challenger's holdout; None when the rows cannot be shared
    (other labels, or another task)."""
    task = challenger.schema.task
    if _labels(champion) != challenger.class_names or theirs_schema.task != task:
        return None
    X, y = challenger.X_holdout, challenger.y_holdout
    ours = _score_onnx(challenger.onnx_bytes, challenger.schema, X, y, metric, challenger.version)
    theirs = _score_onnx(champion.model_bytes, theirs_schema, X, y, metric, champion.version)
    if ours is None or theirs is None:
        return None  # undefined on these rows (a class missing for roc_auc): use the records
    return (ours, len(y)), (theirs, len(y))


def _score_onnx(
    onnx_bytes: bytes, schema: TableSchema, X: Any, y: np.ndarray, metric: str, version: str
) -> float | None:
    predicted, probabilities = predict_onnx(onnx_bytes, schema, X, version)
    return scores.score(metric, schema.task, y, predicted, probabilities)


def predict_onnx(
    onnx_bytes: bytes, schema: TableSchema, X: Any, version: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """A kiln model run in ONNX Runtime, as the server runs it: class indices and
    probabilities (classification), or values and None (regression)."""
    import onnxruntime as ort  # here, so `kiln models` can read decisions without it

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        outputs = session.run(None, onnx_feed(schema, X))
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise QualityGateError(
            f"champion gate: cannot run {version} in ONNX Runtime: {err}"
        ) from err
    if schema.task == "regression":
        return np.asarray(outputs[0]).reshape(-1), None
    return np.asarray(outputs[0]).reshape(-1), np.asarray(outputs[1])


def latest_decision(store: ArtifactStore, version: str) -> dict[str, Any] | None:
    """The newest champion gate decision recorded about a version, if any."""
    decisions = store.decisions(version)
    return decisions[-1] if decisions else None


def decision_summary(decision: dict[str, Any] | None) -> str:
    """A recorded decision in short, e.g. 'refuse on local'; '' for none."""
    return f"{decision['outcome']} on {decision['target']}" if decision else ""
