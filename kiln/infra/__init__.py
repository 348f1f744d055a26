"""What kiln runs on: the container engine, background daemons, locks, retries, redaction, the
Prefect server.
"""
