"""Seeing and steering rollouts from a terminal: `modeldeploy list/status/history/promote/...`
(also `kubectl modeldeploy ...`).

    exits     exit codes and the errors that carry them (what CI scripts branch on)
    views     pure: a ModelDeployment object (+ its Events) -> plain dicts (JSON/YAML output)
    objects   pure: what it owns (Deployments, pods, HPAs, PDBs, Services, route) -> the tree's data
    explain   pure: why the last decision was taken
    steering  pure: what each steering command writes, or why it does not apply now
    render    pure: views -> rich tables and text
    access    the only I/O: kubeconfig, the apiserver, errors a person understands
    completion  shell completion of names (reads through access, fails silent)
    commands  the typer commands, registered on the `modeldeploy` app by `register(app)`

Only `access` imports the kubernetes client, and only when a command runs, so that
`modeldeploy serve` in a model image needs none of it.
"""
