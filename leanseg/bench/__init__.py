"""Benchmark code behind ``leanseg bench ...`` (imports torch; the CLI imports it lazily)."""
