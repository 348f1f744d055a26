"""One error hierarchy: the CLI prints any KilnError as one line and exits non-zero."""


class KilnError(Exception):
    """Base for every error kiln reports to its user."""


class DataError(KilnError):
    """The input data is unusable (missing column, non-numeric value, one class...)."""


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
