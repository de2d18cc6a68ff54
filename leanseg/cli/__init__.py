"""The ``leanseg`` command line: a thin typer layer over the Python API (see main.py)."""
