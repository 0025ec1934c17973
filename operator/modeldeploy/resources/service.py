"""Services: `<name>` (what clients call); `<name>-stable` and `<name>-canary` only where
one track is called by itself (see `rollout.layout`)."""

from modeldeploy.resources.common import Body, Owner, metadata, with_applied_hash
from modeldeploy.resources.names import HTTP_PORT_NAME, SERVICE_PORT


def service(owner: Owner, name: str, selector: dict[str, str]) -> Body:
    """A ClusterIP Service on port 80 -> the pods' `http` port."""
    return with_applied_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(owner, name),
            "spec": {
                "type": "ClusterIP",
                "selector": dict(selector),
                "ports": [
                    {
                        "name": HTTP_PORT_NAME,
                        "port": SERVICE_PORT,
                        "targetPort": HTTP_PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )
