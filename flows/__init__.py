"""The Prefect flows (`pipeline.py`: retrain, ship, prune), which `prefect.yaml` names.

Each task wraps a plain function of the `kiln` library; nothing else lives here.
"""
