"""The image builders, one module each (`engine`, `layer`), and what a model image holds
(`model`). `flows/image.py` picks a builder for each build."""
