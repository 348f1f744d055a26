"""The layer builder: no daemon, only the registry.

Reads the serving base from the registry as an `Image` value, appends one deterministic
layer with the model files, sets the model's env and labels, and writes the result: the base
layers are mounted across repositories, so only the model layer, the config and the
manifest travel (a few KB).
"""

from __future__ import annotations

from pathlib import Path

from kiln.config.errors import BuildError
from kiln.images.contents import ModelImageSpec, epoch_of, model_image, model_layer
from kiln.images.registry import Registry


def append_model_layer(
    registry: Registry,
    model_dir: Path,
    spec: ModelImageSpec,
    repository: str,
    tag: str,
    base_repository: str,
) -> str:
    """Base from the registry + one model layer, pushed as repository:tag. Returns the digest."""
    if registry.manifest_digest(base_repository, spec.base_key) is None:
        raise BuildError(
            f"the serving base {base_repository}:{spec.base_key} is not in "
            f"{registry.host}; build once with --builder engine (or auto)"
        )
    base = registry.read_image(base_repository, spec.base_key)
    image = model_image(base, model_layer(model_dir, epoch_of(spec.created)), spec)
    return registry.write_image(repository, tag, image)
