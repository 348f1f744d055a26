"""The image builders, one module each (`engine`, `layer`); `kiln/images/contents.py` says what
a model image holds and `kiln/images/build.py` picks a builder for each build."""
