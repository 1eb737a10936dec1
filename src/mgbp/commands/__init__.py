"""The command-line layer: one module per `mgbp` subcommand that is only a command (argument parsing,
files, messages). Each exposes `add_arguments(parser)` and `run(args) -> int` and is registered in
`mgbp.cli.COMMANDS`; a part of one command with an idea of its own sits beside it (`upscale_jobs`: which
outputs `mgbp upscale` writes). Library code never imports this package: the arrows point from commands to
the library.
"""
