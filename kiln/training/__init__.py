"""Training a model: data, parameters, training, ONNX export and parity, provenance, the gates,
the sequence.
"""
