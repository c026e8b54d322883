"""NATS credentials on Kubernetes: one user per service, with the subjects of
shared.natsauth.permissions, kept in Secrets that this step makes once
(`python -m shared.natssecrets`, run by the `hami-credentials` Job of deploy/kustomize).

- `hami-nats-<user>` (key `credentials.json`: {user, password}) for each service, mounted by
  that service's pods only;
- `hami-nats-auth` (keys `auth.conf`, the server's users and permissions, and `routes.conf`,
  the cluster's route credentials and routes), mounted by the NATS pods.

Idempotent and safe to interrupt: the user Secrets come first and are reused when they exist,
the server's Secret last, so a rerun after a crash completes what is missing with the same
passwords. Rotation: delete the Secrets, rerun the Job, restart the pods."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import sys
from typing import Annotated

import msgspec

from shared import settings
from shared.errors import Conflict, HamiError, NotFound
from shared.kube.client import KubeClient
from shared.logs import setup_logging
from shared.natsauth import USERS, Credentials, permissions

log = logging.getLogger("hami.natssecrets")
SERVER_SECRET = "hami-nats-auth"
ROUTE_USER = "route"


def user_secret(user: str) -> str:
    return f"hami-nats-{user}"


def server_config(users: dict[str, Credentials]) -> str:
    """The `authorization` block: every service's user with its permissions, any node (on a
    cluster the node agents share one user; its subjects are limited to node-agent ones)."""
    entries = [
        {"user": c.user, "password": c.password, "permissions": permissions(c.user, None)}
        for c in users.values()
    ]
    return "authorization {\n  users = " + json.dumps(entries, indent=2) + "\n}\n"


def routes_config(route_password: str, service: str, namespace: str, replicas: int) -> str:
    """Inside the server's `cluster {}` block: who may connect as a route, and the routes."""
    auth = json.dumps({"user": ROUTE_USER, "password": route_password})
    routes = [
        f"nats://{ROUTE_USER}:{route_password}@{service}-{i}.{service}.{namespace}.svc:6222"
        for i in range(replicas)
    ]
    return f"authorization {auth}\nroutes = {json.dumps(routes)}\n"


def secret_manifest(name: str, namespace: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "hami"},
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def _user(kube: KubeClient, namespace: str, user: str) -> Credentials:
    """The user's existing credentials, or new ones stored first."""
    name = user_secret(user)
    for _ in range(2):
        try:
            found = await kube.get_secret(namespace, name)
            raw = base64.b64decode(found["data"]["credentials.json"])
            existing = Credentials(**json.loads(raw))
            if existing.user != user:
                raise HamiError(f"secret {namespace}/{name} holds user {existing.user!r}")
            return existing
        except NotFound:
            fresh = Credentials(user, secrets.token_urlsafe(24))
            body = json.dumps({"user": fresh.user, "password": fresh.password})
            try:
                await kube.create_secret(
                    namespace, secret_manifest(name, namespace, {"credentials.json": body})
                )
                log.info("credentials created", extra={"secret": f"{namespace}/{name}"})
                return fresh
            except Conflict:  # made meanwhile by another run: read it
                continue
    raise HamiError(f"secret {namespace}/{name} could not be read or created")


async def ensure_secrets(kube: KubeClient, namespace: str, service: str, replicas: int) -> bool:
    """Make what is missing; False when everything existed already."""
    try:
        await kube.get_secret(namespace, SERVER_SECRET)
        return False
    except NotFound:
        pass
    users = {user: await _user(kube, namespace, user) for user in USERS}
    data = {
        "auth.conf": server_config(users),
        "routes.conf": routes_config(secrets.token_urlsafe(24), service, namespace, replicas),
    }
    try:
        await kube.create_secret(namespace, secret_manifest(SERVER_SECRET, namespace, data))
    except Conflict:
        return False
    log.info("NATS server credentials created", extra={"secret": f"{namespace}/{SERVER_SECRET}"})
    return True


class CredentialsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    namespace: Annotated[str, msgspec.Meta(min_length=1)]
    """Where the Secrets go (HAMi's namespace)."""
    nats_service: str = "hami-nats"
    """The NATS servers' headless Service (the routes name its pods)."""
    nats_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 3
    """How many NATS servers the routes list."""
    kubeconfig: Annotated[str | None, msgspec.Meta(extra={"env": "KUBECONFIG"})] = None


def parse_settings(argv: list[str] | None = None) -> CredentialsSettings:
    return settings.load(
        CredentialsSettings, argv, prog="hami-credentials", description=__doc__.split("\n")[0]
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_settings(argv)
    setup_logging("credentials", "INFO")

    async def run() -> bool:
        kube = await KubeClient.from_config(args.kubeconfig)
        try:
            return await ensure_secrets(kube, args.namespace, args.nats_service, args.nats_replicas)
        finally:
            await kube.close()

    try:
        made = asyncio.run(run())
    except HamiError as e:
        sys.exit(f"hami-credentials: {e}")
    print("created" if made else "present")


if __name__ == "__main__":
    main()
