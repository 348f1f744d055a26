"""The versioned artifact store: the pipeline's checkpoint (local folder or S3)."""
