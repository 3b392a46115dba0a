"""CLI command modules: each maps one subcommand group to the library functions (imports stay lazy)."""
