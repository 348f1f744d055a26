"""The gunicorn master's preload: the web framework's modules, imported while the model's
load check runs in a child, so each worker boots faster; never numpy or ONNX Runtime
(each starts a thread when imported), so the master still forks single-threaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys, threading
import serving.gunicorn_conf as conf
before = set(sys.modules)
conf.preload_web_modules()
print(json.dumps({
    "new": sorted(set(sys.modules) - before),
    "threads": threading.active_count(),
    "tasks": len(os.listdir("/proc/self/task")),
    "heavy": [m for m in ("numpy", "onnxruntime") if m in sys.modules],
}))
"""


def test_the_master_preloads_the_web_modules_and_stays_single_threaded(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert {"fastapi", "fastapi.routing", "serving.schemas"} <= set(seen["new"])
    assert seen["heavy"] == []
    assert (seen["threads"], seen["tasks"]) == (1, 1)


def test_the_load_check_runs_while_the_master_preloads(tmp_path):
    """`while_waiting` runs after the child is forked and before its verdict is read."""
    probe = f"""
import os, sys
sys.path.insert(0, {str(REPO / "tests" / "serving")!r})
from model_dirs import write_model_dir
from pathlib import Path
import serving.gunicorn_conf as conf
from serving.artifacts import read_artifacts
from serving.config import ServingConfig
directory = Path({str(tmp_path)!r}) / "model"
write_model_dir(directory)
artifacts = read_artifacts(ServingConfig.for_model_dir(directory))
children = []
def while_waiting():
    mine = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            mine.append(stat.parent.name)
    children.append(len(mine))
conf._check_loads(artifacts, while_waiting=while_waiting)
print(children)
"""
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1]"  # called once, with the check's child alive
