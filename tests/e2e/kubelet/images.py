"""Container images without a registry: OCI archives that `ctr images import` loads.

busybox: Debian's static busybox with its applets as symlinks. pause: a few lines of C built
with `gcc -static`, the sandbox image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

BUSYBOX = "localhost/hami-busybox:test"
PAUSE = "localhost/hami-pause:test"
APPLETS = ("sh", "env", "cat", "ls", "sleep", "echo", "grep", "true", "sed", "head", "wc")
PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, done);
    signal(SIGINT, done);
    for (;;) pause();
}
"""


def busybox_pod(
    name: str, limits: dict[str, str], command: str, *, host_network: bool
) -> dict[str, object]:
    """A one-container test pod in `default` on the imported busybox image, run once."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "hostNetwork": host_network,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", command],
                    "resources": {"limits": limits},
                }
            ],
        },
    }


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, Path], links: dict[str, str], dirs: tuple[str, ...]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, source in files.items():
            data = source.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return raw.getvalue()


def write_image(path: Path, name: str, layer_tar: bytes, cmd: list[str]) -> None:
    """An image of one small in-memory layer (gzip)."""
    layer = gzip.compress(layer_tar, mtime=0)
    config = {"Cmd": cmd, "Env": ["PATH=/bin"]}
    write_archive(path, name, [(layer, _digest(layer_tar), GZIP_LAYER)], config)


GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"
Layer = tuple[bytes | Path, str, str]
"""A layer's blob (bytes, or a file too big to hold), its diff id, its media type."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def write_archive(path: Path, name: str, layers: list[Layer], config: dict[str, object]) -> None:
    """An OCI image layout as a tar, as `ctr images import` reads it; ``name`` is
    `localhost/<repository>:<tag>`."""
    blobs = [
        (blob, file_digest(blob) if isinstance(blob, Path) else _digest(blob))
        for blob, _, _ in layers
    ]
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id, _ in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(image_config),
                "size": len(image_config),
            },
            "layers": [
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": blob.stat().st_size if isinstance(blob, Path) else len(blob),
                }
                for (blob, digest), (_, _, media_type) in zip(blobs, layers, strict=True)
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
    ).encode()
    small = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": index,
        f"blobs/sha256/{_digest(image_config)[7:]}": image_config,
        f"blobs/sha256/{_digest(manifest)[7:]}": manifest,
    }
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for blob, digest in blobs:
            entry = f"blobs/sha256/{digest[7:]}"
            if isinstance(blob, Path):
                tar.add(blob, arcname=entry)
            else:
                small[entry] = blob
        for entry, data in small.items():
            info = tarfile.TarInfo(entry)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    partial.replace(path)  # a crash mid-way leaves no archive that looks whole


def build_images(directory: Path) -> list[Path]:
    """The busybox and pause archives in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    busybox = directory / "busybox.tar"
    links = {f"bin/{a}": "busybox" for a in APPLETS}
    dirs = ("bin", "etc", "tmp", "proc", "sys", "dev", "usr", "usr/local")
    write_image(
        busybox, BUSYBOX, _layer({"bin/busybox": Path("/bin/busybox")}, links, dirs), ["sh"]
    )
    source = directory / "pause.c"
    source.write_text(PAUSE_C)
    binary = directory / "pause"
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(source)], check=True)
    pause = directory / "pause.tar"
    write_image(pause, PAUSE, _layer({"pause": binary}, {}, ("dev", "proc", "sys")), ["/pause"])
    return [busybox, pause]
