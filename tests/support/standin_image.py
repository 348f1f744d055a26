"""Images of the stand-in server (tests/support/standin/server.py) with a model baked in: the
shape of a kiln serving image, built in seconds, for rollout tests with the real engine."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from serving.reuseport import IMAGE_LABEL, IMAGE_LABEL_VALUE

STANDIN = Path(__file__).parent / "standin" / "server.py"
REUSEPORT = Path(__file__).parents[2] / "serving" / "reuseport.py"
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
    oldest_takes_all: bool = True,
) -> str:
    """Build `tag` serving `model` as `version` (`sha256`: what it claims, by default the
    model's own); return the tag. `oldest_takes_all`: as kiln's server since
    serving/reuseport.py (and labelled so), else as one from before it."""
    (context / "models").mkdir(parents=True)
    (context / "models" / "model.bin").write_bytes(model)
    shutil.copy(STANDIN, context / "server.py")
    shutil.copy(REUSEPORT, context / "reuseport.py")
    sha = sha256 or hashlib.sha256(model).hexdigest()
    steering = (
        f'LABEL {IMAGE_LABEL}="{IMAGE_LABEL_VALUE}"\nENV OLDEST_TAKES_ALL=1\n'
        if oldest_takes_all
        else ""
    )
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "COPY server.py reuseport.py /srv/\nCOPY models/ /models/\n"
        f"{steering}"
        f"ENV MODEL_VERSION={version} MODEL_SHA256={sha} PREDICT_STATUS={predict_status}\n"
        "USER 10001:10001\nEXPOSE 8000\n"
        'CMD ["python3", "-u", "/srv/server.py"]\n'
    )
    client.images.build(path=str(context), tag=tag, rm=True)
    return tag
