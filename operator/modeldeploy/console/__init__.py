"""Seeing and steering rollouts from a terminal: `modeldeploy list/status/history/promote/...`
(also `kubectl modeldeploy ...`).

    exits     exit codes and the errors that carry them (what CI scripts branch on)
    views     pure: a ModelDeployment object (+ its Events) -> plain dicts (JSON/YAML output)
    explain   pure: why the last decision was taken
    steering  pure: what each steering command writes, or why it does not apply now
    render    pure: views -> rich tables and text
    access    the only I/O: kubeconfig, the apiserver, errors a person understands
    commands  the typer commands, registered on the `modeldeploy` app by `register(app)`

Only `access` imports the kubernetes client, and only when a command runs, so that
`modeldeploy serve` in a model image needs none of it.
"""
