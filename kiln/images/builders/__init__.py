"""The image builders, one module each (`engine`, `layer`), and what a model image holds
(`model`). `kiln/images/build.py` picks a builder for each build."""
