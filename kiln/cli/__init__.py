"""The `kiln` command: one module per command group; `launch` is the console script, `warm` the
warm runner.
"""
