"""The champion/challenger gate: a new model replaces what runs only when it is not worse.

The champion is what the target runs now (the store's deployment record for it). Both
models are scored through ONNX Runtime on the same rows, the challenger's holdout, on the
gate metric; the challenger ships when its score is at least the champion's minus the
tolerance. When the two models do not take the same features or give the same labels the
rows cannot be shared, and each model's own recorded holdout score decides instead.
Plain functions; the store is handed in.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from kiln.config.errors import KilnError, QualityGateError
from kiln.store.artifact_store import ArtifactStore, StoredModel

log = logging.getLogger(__name__)

PROMOTE = "promote"  # ships: better, not worse beyond the tolerance, or nothing to beat
REFUSE = "refuse"  # stored for audit, never built or rolled out
FORCE = "force"  # would have been refused; ships because it was forced
SAME = "same"  # the challenger is the very model the target runs: nothing to do

SHARED_ROWS = "the same holdout rows"
RECORDED = "each model's recorded holdout metric"
NO_CHAMPION = "the absolute gate alone (no champion)"
# Scores are fractions of rows; anything closer than this is the same score.
EPSILON = 1e-12


@dataclass(frozen=True)
class GatePolicy:
    """How a trained model is judged: the absolute gate, then against `target`'s champion."""

    metric: str = "accuracy"
    threshold: float = 0.9
    tolerance: float = 0.0
    target: str | None = None  # None: no champion to compare with (plain `kiln train`)
    force: bool = False


@dataclass(frozen=True)
class Challenger:
    """What the gate needs of the freshly trained model."""

    version: str
    onnx_bytes: bytes
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    X_holdout: np.ndarray
    y_holdout: np.ndarray
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Decision:
    outcome: str  # PROMOTE, REFUSE, FORCE or SAME
    reason: str  # one sentence naming both versions and both scores
    target: str | None
    metric: str
    tolerance: float
    basis: str  # SHARED_ROWS, RECORDED or NO_CHAMPION
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
    record = store.deployment(policy.target) if policy.target else None
    if record is None:
        decision = _without_champion(policy, challenger)
    elif record.current == challenger.version:
        decision = _already_running(policy, challenger)
    else:
        recorded = _recorded_against(store, policy, challenger, record.current)
        decision = recorded or _against(store.get(record.current), policy, challenger)
    log.info("champion gate: %s", decision.reason)
    return decision


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
    own = float(challenger.metrics[policy.metric])
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
            and int(record["challenger_rows"]) == len(challenger.y_holdout)
            and int(record["champion_rows"]) == len(challenger.y_holdout)
            and abs(float(record["challenger_score"]) - own) <= EPSILON
            and record.get("champion_score") is not None
        )
    except (KeyError, TypeError, ValueError):
        return False  # a record of another shape: score again


def _outcome(ours: float, theirs: float, policy: GatePolicy) -> str:
    if ours + policy.tolerance + EPSILON >= theirs:
        return PROMOTE
    return FORCE if policy.force else REFUSE


def _without_champion(policy: GatePolicy, challenger: Challenger) -> Decision:
    own = float(challenger.metrics[policy.metric])
    where = f"on {policy.target}" if policy.target else "(no target given)"
    reason = (
        f"{challenger.version} {policy.metric} {own:.4f}: no champion {where}, "
        f"judged by {NO_CHAMPION}"
    )
    return _decision(PROMOTE, reason, policy, NO_CHAMPION, challenger, own)


def _already_running(policy: GatePolicy, challenger: Challenger) -> Decision:
    own = float(challenger.metrics[policy.metric])
    rows = len(challenger.y_holdout)
    reason = (
        f"{challenger.version} is the model {policy.target} runs already "
        "(same data, parameters and code): nothing to do"
    )
    return _decision(
        SAME, reason, policy, SHARED_ROWS, challenger, own, (challenger.version, own, rows)
    )


def _against(champion: StoredModel, policy: GatePolicy, challenger: Challenger) -> Decision:
    scores = _shared_scores(champion, challenger, policy.metric)
    if scores is not None:
        basis = SHARED_ROWS
        (ours, ours_rows), (theirs, theirs_rows) = scores
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
    return replace(decision, reason=_reason(decision, _signature_difference(champion, challenger)))


def _decision(
    outcome: str,
    reason: str,
    policy: GatePolicy,
    basis: str,
    challenger: Challenger,
    own: float,
    champion: tuple[str, float, int] | None = None,
) -> Decision:
    champion_version, champion_score, champion_rows = champion or (None, None, None)
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
    tolerance = f"tolerance {d.tolerance:g}"
    if d.outcome == PROMOTE:
        return f"{compared}: not worse beyond the {tolerance}; promoted on {d.target}"
    worse = (
        f"worse by {(d.champion_score or 0) - d.challenger_score:.4f}, more than the {tolerance}"
    )
    if d.outcome == FORCE:
        return f"{compared}: {worse}; shipped anyway because it was forced"
    return f"{compared}: {worse}; refused, {d.champion} keeps serving on {d.target}"


def _signature_difference(champion: StoredModel, challenger: Challenger) -> str:
    theirs = tuple(champion.metadata.get("feature_names") or ())
    labels = _labels(champion)
    parts = []
    if theirs != challenger.feature_names:
        parts.append(f"features {list(theirs)} vs {list(challenger.feature_names)}")
    if labels != challenger.class_names:
        parts.append(f"labels {list(labels)} vs {list(challenger.class_names)}")
    return "; ".join(parts)


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
    champion: StoredModel, challenger: Challenger, metric: str
) -> tuple[tuple[float, int], tuple[float, int]] | None:
    """Both models scored on the challenger's holdout; None when the rows cannot be shared."""
    features = tuple(champion.metadata.get("feature_names") or ())
    if features != challenger.feature_names or _labels(champion) != challenger.class_names:
        return None
    X, y = challenger.X_holdout, challenger.y_holdout
    ours = score(predict_labels(challenger.onnx_bytes, X, challenger.version), y, metric)
    theirs = score(predict_labels(champion.model_bytes, X, champion.version), y, metric)
    return (ours, len(y)), (theirs, len(y))


def predict_labels(onnx_bytes: bytes, X: np.ndarray, version: str) -> np.ndarray:
    """Class indices from a kiln model run in ONNX Runtime, as the server runs it."""
    import onnxruntime as ort  # here, so `kiln models` can read decisions without it

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in session.get_outputs()]
        name = "label" if "label" in outputs else outputs[0]
        [labels] = session.run([name], {session.get_inputs()[0].name: X.astype(np.float32)})
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise QualityGateError(
            f"champion gate: cannot run {version} in ONNX Runtime: {err}"
        ) from err
    return np.asarray(labels).reshape(-1)


def score(predicted: np.ndarray, y: np.ndarray, metric: str) -> float:
    """The gate metric, computed as kiln.training.train.evaluate computes it."""
    from sklearn.metrics import accuracy_score, f1_score

    if metric == "accuracy":
        return float(accuracy_score(y, predicted))
    if metric == "f1_macro":
        return float(f1_score(y, predicted, average="macro", zero_division=0))
    raise QualityGateError(f"champion gate: unknown metric {metric!r}")


def latest_decision(store: ArtifactStore, version: str) -> dict[str, Any] | None:
    """The newest champion gate decision recorded about a version, if any."""
    decisions = store.decisions(version)
    return decisions[-1] if decisions else None


def decision_summary(decision: dict[str, Any] | None) -> str:
    """A recorded decision in short, e.g. 'refuse on local'; '' for none."""
    return f"{decision['outcome']} on {decision['target']}" if decision else ""
