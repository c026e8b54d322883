"""A serving certificate for the webhook with nothing else installed (no cert-manager): the first
replica to start makes a CA and a certificate for the webhook's Service, stores them in a Secret
(creation is atomic: a second replica that loses the race reads the winner's), and puts the CA
into the webhook configurations so the API server trusts it. Every replica then serves the
Secret's pair. With cert-manager (deploy/kustomize/components/cert-manager) none of this runs:
the pod mounts cert-manager's Secret and cert-manager injects the CA."""

from __future__ import annotations

import base64
import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.errors import Conflict, InvalidRequest, NotFound
from shared.kube.client import KubeClient

log = logging.getLogger("hami.webhook.bootstrap")
VALIDITY = datetime.timedelta(days=3650)
"""Ten years: nothing here renews it (cert-manager's component does, for those who need it)."""


@dataclass(frozen=True)
class Bootstrap:
    secret: str
    """namespace/name of the kubernetes.io/tls Secret to use or create."""
    service: str
    """The webhook's Service name (its DNS names go into the certificate)."""
    configuration: str
    """The Mutating- and ValidatingWebhookConfiguration that get the CA."""

    @property
    def namespace(self) -> str:
        return self.secret.split("/", 1)[0]

    @property
    def secret_name(self) -> str:
        return self.secret.split("/", 1)[1]

    def __post_init__(self) -> None:
        if self.secret.count("/") != 1 or not all(self.secret.split("/")):
            raise InvalidRequest(f"--tls-secret {self.secret!r}: expected namespace/name")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pair(service: str, namespace: str) -> dict[str, bytes]:
    """A CA and a serving certificate for ``service.namespace.svc`` (ECDSA P-256)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{service} bootstrap CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    dns = [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[2])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {"ca.crt": _pem(ca), "tls.crt": _pem(cert), "tls.key": key_pem}


def _decoded(secret: dict[str, object]) -> dict[str, bytes]:
    data = secret.get("data")
    if not isinstance(data, dict) or not {"ca.crt", "tls.crt", "tls.key"} <= data.keys():
        raise InvalidRequest("the webhook's TLS secret lacks ca.crt, tls.crt or tls.key")
    return {k: base64.b64decode(str(data[k])) for k in ("ca.crt", "tls.crt", "tls.key")}


async def ensure_certificate(
    kube: KubeClient, plan: Bootstrap, directory: Path
) -> tuple[Path, Path]:
    """The Secret's pair written to ``directory`` (cert, key), the CA in the configurations."""
    try:
        pair = _decoded(await kube.get_secret(plan.namespace, plan.secret_name))
    except NotFound:
        pair = make_pair(plan.service, plan.namespace)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": plan.secret_name,
                "namespace": plan.namespace,
                "labels": {"app.kubernetes.io/part-of": "hami"},
            },
            "data": {k: base64.b64encode(v).decode() for k, v in pair.items()},
        }
        try:
            await kube.create_secret(plan.namespace, body)
            log.info("webhook certificate created", extra={"secret": plan.secret})
        except Conflict:  # another replica won: use its pair
            pair = _decoded(await kube.get_secret(plan.namespace, plan.secret_name))
    ca_bundle = base64.b64encode(pair["ca.crt"]).decode()
    for kind in ("mutating", "validating"):
        if await kube.set_webhook_ca_bundle(kind, plan.configuration, ca_bundle):
            log.info("CA bundle set", extra={"configuration": f"{kind}/{plan.configuration}"})
    return write_pair(directory, pair)


def write_pair(directory: Path, pair: dict[str, bytes]) -> tuple[Path, Path]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(pair["tls.crt"])
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair["tls.key"])
    return cert, key
