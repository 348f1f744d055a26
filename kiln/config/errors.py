"""One error hierarchy: the CLI prints any KilnError as one line and exits non-zero."""

from __future__ import annotations


class KilnError(Exception):
    """Base for every error kiln reports to its user."""


class DataError(KilnError):
    """The input data is unusable (missing column, non-numeric value, one class...)."""


class ParameterError(KilnError):
    """A training parameter is invalid (found before any work is done)."""


class QualityGateError(KilnError):
    """The trained model scored below the configured threshold."""


class ParityError(KilnError):
    """ONNX Runtime and scikit-learn disagree on the holdout set."""


class StoreError(KilnError):
    """The artifact store cannot do what was asked."""


class VersionNotFound(StoreError):
    """No stored version has the given id."""


class IntegrityError(StoreError):
    """A stored file does not match the sha256 recorded for it."""


class BuildError(KilnError):
    """An image build or push failed."""


class RolloutError(KilnError):
    """A rollout failed (and was rolled back where possible)."""


class SettingsError(KilnError):
    """A KILN_* variable or a flag has a value kiln cannot use."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class EngineUnavailable(KilnError):
    """The container engine (Docker or podman's API socket) does not answer."""


class ClusterUnavailable(KilnError):
    """No usable Kubernetes configuration, or the cluster does not answer."""
