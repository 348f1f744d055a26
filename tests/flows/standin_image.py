"""Images of the stand-in server (tests/flows/standin/server.py) with a model baked in: the
shape of a kiln serving image, built in seconds, for rollout tests with the real engine."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

STANDIN = Path(__file__).parent / "standin" / "server.py"
BASE_IMAGE = "docker.io/library/python:3.11-slim"


def build_standin_image(
    client,
    model: bytes,
    version: str,
    tag: str,
    context: Path,
    *,
    sha256: str | None = None,
    predict_status: int = 200,
) -> str:
    """Build `tag` serving `model` as `version` (`sha256`: what it claims, by default the
    model's own); return the tag."""
    (context / "models").mkdir(parents=True)
    (context / "models" / "model.bin").write_bytes(model)
    shutil.copy(STANDIN, context / "server.py")
    sha = sha256 or hashlib.sha256(model).hexdigest()
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "COPY server.py /srv/server.py\nCOPY models/ /models/\n"
        f"ENV MODEL_VERSION={version} MODEL_SHA256={sha} PREDICT_STATUS={predict_status}\n"
        "USER 10001:10001\nEXPOSE 8000\n"
        'CMD ["python3", "-u", "/srv/server.py"]\n'
    )
    client.images.build(path=str(context), tag=tag, rm=True)
    return tag
