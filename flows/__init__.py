"""kiln's pipeline: training, ONNX export, the artifact store, image builds, rollout, flows."""
