"""`python -m kiln`: the `kiln` command."""

from kiln.cli.launch import main

main()
