"""Shell completion of ModelDeployment names (`modeldeploy --install-completion`, then
`modeldeploy status <TAB>`): the names in the namespace of the command line typed so far
(`-n`, `--context`, `--kubeconfig`, `--as`), read from the cluster.

Completion runs on every TAB, so it waits at most COMPLETION_TIMEOUT and fails silent: an
unreachable cluster, a bad kubeconfig or no permission complete nothing, never an error in
the middle of someone's prompt.
"""

from collections.abc import Iterable

import typer


def matching(names: Iterable[str], incomplete: str) -> list[str]:
    """The names that start with what was typed, sorted, each once."""
    return sorted({name for name in names if name.startswith(incomplete)})


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    from modeldeploy.console.access import COMPLETION_TIMEOUT, Cluster, Target

    given = ctx.params
    target = Target(
        kubeconfig=given.get("kubeconfig"),
        context=given.get("context"),
        namespace=given.get("namespace"),
        as_user=given.get("as_user"),
    )
    try:
        with Cluster(target, timeout=COMPLETION_TIMEOUT, retries=0) as cluster:
            names = cluster.names()
    except Exception:  # whatever went wrong, the prompt must stay quiet: nothing to offer
        return []
    return matching(names, incomplete)
