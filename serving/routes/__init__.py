"""The FastAPI routers: prediction, health and metrics, model metadata, V2."""
