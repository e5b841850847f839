"""Moved to `vdtrain.commands.train` (the command layer); these names stay importable from here."""

from vdtrain.commands.train import load_config, main, parser

__all__ = ["load_config", "main", "parser"]
