"""`kiln up --team`: PostgreSQL, a Prefect server on it, object storage, result storage and
workers, each a small module; `up.py` starts them in order and `down` stops them."""
