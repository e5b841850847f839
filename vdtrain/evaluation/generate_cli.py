"""Moved to `vdtrain.commands.eval_generate` (the command layer); these names stay importable from here."""

from vdtrain.commands.eval_generate import add_decoding_arguments, decoding_options, load_model, main

__all__ = ["add_decoding_arguments", "decoding_options", "load_model", "main"]
