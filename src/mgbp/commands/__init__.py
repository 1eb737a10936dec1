"""The command-line layer: one module per `mgbp` subcommand that is only a command (argument parsing,
files, messages). Each exposes `add_arguments(parser)` and `run(args) -> int` and is registered in
`mgbp.cli.COMMANDS`. Library code never imports this package: the arrows point from commands to the library.
"""
