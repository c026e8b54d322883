"""Identities and permissions on NATS: one user per service, each allowed only the subjects it
needs, so a node agent cannot write allocations, a job client cannot write any bucket, and a
process without credentials is refused.

Local mode (`hami up`) generates the users into `<state>/credentials/<user>.json` (0600, in a
0700 directory: readable by the user who started it alone) and the server's authorization
block from the same table; services are given their file with `--nats-credentials`."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import msgspec

from shared.errors import InvalidRequest
from shared.schemas.base import PREFIX, node_token
from shared.schemas.inventory import NODES_BUCKET
from shared.schemas.placement import ALLOCATIONS_BUCKET

USERS = ("allocator", "nodeagent", "telemetry", "client")
CREDENTIALS_DIR = "credentials"
"""Under the state directory, in local mode."""


class Credentials(msgspec.Struct, frozen=True):
    user: str
    password: str


def load_credentials(path: str | Path) -> Credentials:
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=Credentials)
    except OSError as e:
        raise InvalidRequest(f"NATS credentials {path}: {e.strerror}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise InvalidRequest(f"NATS credentials {path}: expected {{user, password}}: {e}") from None


def credentials_of(path: str | None) -> Credentials | None:
    return None if path is None else load_credentials(path)


def _reader(bucket: str) -> list[str]:
    """What following a KV bucket needs: its stream's info, an ordered consumer, flow control."""
    stream = f"KV_{bucket}"
    return [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
    ]


def permissions(user: str, node: str | None) -> dict[str, object]:
    """The subjects ``user`` may publish to and subscribe to (nats-server's syntax). ``node``:
    the one node a node agent speaks for (local mode); None: any node (a cluster, where the
    node agents share one user)."""
    inbox = {"allow": ["_INBOX.>"]}
    common = ["$JS.API.INFO", "$JS.FC.>"]
    token = "*" if node is None else node_token(node)
    if user == "allocator":  # the core: it owns the buckets and serves the API
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    if user == "nodeagent":
        return {
            "publish": {
                "allow": [
                    *common,
                    f"$JS.API.STREAM.CREATE.KV_{NODES_BUCKET}",
                    f"$JS.API.STREAM.INFO.KV_{NODES_BUCKET}",
                    f"$KV.{NODES_BUCKET}.{token}",
                    f"{PREFIX}.usage.{token}",
                    f"{PREFIX}.inventory.changed.{token}",
                    *_reader(ALLOCATIONS_BUCKET),  # the device plugin checks pods against it
                ]
            },
            "subscribe": inbox,
        }
    if user == "telemetry":
        return {
            "publish": {
                "allow": [
                    *common,
                    *_reader(NODES_BUCKET),
                    *_reader(ALLOCATIONS_BUCKET),
                    f"{PREFIX}.alloc.status",  # the waiting requests, for the web page
                ]
            },
            "subscribe": {"allow": ["_INBOX.>", f"{PREFIX}.usage.>"]},
        }
    if user == "client":  # hami run / hami status: the placement API and its events only
        return {
            "publish": {"allow": [f"{PREFIX}.alloc.>"]},
            "subscribe": {"allow": ["_INBOX.>", f"{PREFIX}.alloc.events.>"]},
        }
    raise ValueError(f"unknown NATS user {user!r}")


def generate(directory: Path, node: str) -> str:
    """Fresh credentials for every user into ``directory`` (0600 files), and the server's
    `authorization` block for them. New passwords at every start: old files stop working."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    users = []
    for user in USERS:
        credentials = Credentials(user, secrets.token_urlsafe(24))
        path = directory / f"{user}.json"
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(credentials))
        os.replace(path.with_suffix(".tmp"), path)
        users.append(
            {
                "user": user,
                "password": credentials.password,
                "permissions": permissions(user, node),
            }
        )
    # nats-server reads JSON values inside its configuration format.
    return "authorization {\n  users = " + json.dumps(users, indent=2) + "\n}\n"


def credentials_file(directory: Path, user: str) -> Path:
    return directory / f"{user}.json"
