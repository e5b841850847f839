"""The analysis' default caption prompt, in a module of its own so `vdtrain analyze ... --help` needs no torch."""

DEFAULT_PROMPT = "Please describe this image in detail."
