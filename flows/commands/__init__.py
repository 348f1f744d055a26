"""Typer command functions, one module per area; flows/cli.py registers them."""
