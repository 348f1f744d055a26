"""Rollouts: one orchestrator over small targets (local containers, Kubernetes).

- orchestrator.py: roll_out / roll_back / status, the one sequence every target follows,
  and serving_problem (does what is recorded as serving answer?)
- target.py: the Target protocol and the result types
- smoke.py: the smoke test every target runs on a new version
- local.py, kubernetes/: the targets (kubernetes/api.py and manifests.py serve the latter)
"""

from kiln.rollout.orchestrator import (
    pick_image,
    previous_of,
    roll_back,
    roll_out,
    serving_problem,
    status,
)
from kiln.rollout.target import (
    KUBERNETES,
    LOCAL,
    TARGETS,
    Deployed,
    RolloutResult,
    Target,
    TargetStatus,
    TransientError,
    is_transient,
    retry_if_transient,
)

__all__ = [
    "KUBERNETES",
    "LOCAL",
    "TARGETS",
    "Deployed",
    "RolloutResult",
    "Target",
    "TargetStatus",
    "TransientError",
    "is_transient",
    "retry_if_transient",
    "pick_image",
    "previous_of",
    "roll_back",
    "roll_out",
    "serving_problem",
    "status",
]
