"""The minionflow command line (typer + rich)."""
