"""python -m serving --model-dir DIR [--host 127.0.0.1] [--port 8000] [--workers N]

Serves a model directory (model.onnx, labels.json, metadata.json) with gunicorn and
uvicorn workers, configured by serving/gunicorn_conf.py. Other settings (LOG_LEVEL,
LOG_FORMAT, MAX_ROWS, MODEL_SHA256...) come from the environment.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.runner import exec_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a model directory (model.onnx, labels.json, metadata.json) with "
        "gunicorn and uvicorn workers; other settings come from the environment.",
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="the model directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: WORKERS or CPU count)"
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    exec_server(args.model_dir, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()
