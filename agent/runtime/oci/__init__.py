"""The OCI side of the runtime: config.json (config.py), the `mctl-runtime` command
(cli.py, cli_args.py, cli_state.py) and driving OCI runtime commands such as
runc and crun (client.py, command.py).
"""
