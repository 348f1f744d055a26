"""Model-in-image builds: the serving base, the model layer, builders, OCI values, the registry
client, retention.
"""
