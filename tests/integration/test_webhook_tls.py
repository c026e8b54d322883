"""The webhook over real HTTPS: answers, 400 on garbage, and a renewed certificate is served
to new connections without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from pathlib import Path

import aiohttp
from cryptography import x509

from services.webhook.service import ServeSettings, serve
from tests.e2e.controlplane.pki import Pki


async def peer_serial(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_https_answers_and_certificate_reload(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path)
    first = pki.leaf("webhook")
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    live_cert.write_bytes(first.cert.read_bytes())
    live_key.write_bytes(first.key.read_bytes())
    stop, ready, ports = asyncio.Event(), asyncio.Event(), []

    def started(port: int) -> None:
        ports.append(port)
        ready.set()

    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        cert_file=str(live_cert),
        key_file=str(live_key),
        reload_interval_s=0.1,
    )
    task = asyncio.create_task(serve(settings, stop, started=started))
    await asyncio.wait_for(ready.wait(), 10)
    port = ports[0]
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"kind": "Pod"},
            "operation": "CREATE",
            "object": {
                "spec": {
                    "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
                }
            },
        },
    }
    async with aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{port}"
        async with session.post(f"{url}/mutate", json=review, ssl=context) as response:
            assert response.status == 200
            assert (await response.json())["response"]["allowed"] is True
        async with session.post(f"{url}/validate", data=b"\x00garbage", ssl=context) as response:
            assert response.status == 400
            assert "not JSON" in json.loads(await response.read())["error"]

    before = await peer_serial(port, pki.ca.cert)
    second = pki.leaf("webhook-renewed")
    os.replace(second.key, live_key)
    os.replace(second.cert, live_cert)
    deadline = asyncio.get_running_loop().time() + 5
    while await peer_serial(port, pki.ca.cert) == before:
        assert asyncio.get_running_loop().time() < deadline, "renewed certificate not served"
        await asyncio.sleep(0.1)
    stop.set()
    await task
