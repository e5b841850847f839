"""The command layer: one module per `vdtrain` command, each with `main(argv) -> int`; the shared options in
`options`. Library modules hold no argparse code; `vdtrain.cli` dispatches to these inside one error boundary."""
