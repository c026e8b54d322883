"""Admission decisions: mutation, validation, protection of internal annotations, robustness."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.webhook.core.admission import mutate, validate
from services.webhook.core.settings import WebhookSettings
from services.webhook.service import answer

S = WebhookSettings()


def pod(
    *containers: dict[str, Any],
    annotations: dict[str, str] | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if scheduler is not None:
        spec["schedulerName"] = scheduler
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}},
        "spec": spec,
    }


def ctr(name: str = "c", **limits: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "x",
        "resources": {
            "limits": {
                k.replace("_", "-").replace("nvidia-com-", "nvidia.com/"): v
                for k, v in limits.items()
            }
        },
    }


def gpu(**limits: Any) -> dict[str, Any]:
    return {"name": "c", "image": "x", "resources": {"limits": limits}}


def request(
    obj: dict[str, Any],
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    user: str = "alice",
) -> dict[str, Any]:
    return {
        "uid": "u1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": operation,
        "object": obj,
        "oldObject": old,
        "userInfo": {"username": user},
    }


def applied(obj: dict[str, Any], settings_: WebhookSettings = S) -> dict[str, Any]:
    verdict = mutate(request(obj), settings_)
    assert verdict.allowed
    return jsonpatch.apply_patch(copy.deepcopy(obj), list(verdict.patch))  # type: ignore[no-any-return]


def test_pod_without_managed_resources_is_untouched() -> None:
    plain = pod({"name": "c", "image": "x", "resources": {"limits": {"cpu": "1"}}})
    assert mutate(request(plain), S).patch == ()
    assert validate(request(plain), S).allowed


def test_scheduler_is_set_and_defaults_filled() -> None:
    settings_ = WebhookSettings(default_mem=2000, default_cores=20)
    out = applied(pod(gpu(**{"nvidia.com/gpu": "1"})), settings_)
    assert out["spec"]["schedulerName"] == "hami-scheduler"
    limits = out["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem": "2000",
        "nvidia.com/gpucores": "20",
    }


def test_default_count_added_when_only_memory_given() -> None:
    out = applied(pod(gpu(**{"nvidia.com/gpumem": "3000"})))
    assert out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_memory_default_zero_means_whole_device_and_adds_nothing() -> None:
    out = applied(pod(gpu(**{"nvidia.com/gpu": "2"})))
    assert out["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}


def test_container_without_resources_gets_a_limits_map() -> None:
    settings_ = WebhookSettings(default_gpu_num=1)
    obj = pod(gpu(**{"nvidia.com/gpucores": "30"}), {"name": "side", "image": "y"})
    out = applied(obj, settings_)
    assert "resources" not in out["spec"]["containers"][1]


def test_integrated_scheduler_is_kept_others_replaced() -> None:
    kept = applied(pod(gpu(**{"nvidia.com/gpu": "1"}), scheduler="volcano"))
    assert kept["spec"]["schedulerName"] == "volcano"
    replaced = applied(pod(gpu(**{"nvidia.com/gpu": "1"}), scheduler="default-scheduler"))
    assert replaced["spec"]["schedulerName"] == "hami-scheduler"


def test_forged_internal_annotations_are_removed_on_create() -> None:
    forged = pod(
        gpu(**{"nvidia.com/gpu": "1"}),
        annotations={"hami.io/vgpu-node": "n1", "hami.io/bind-phase": "success", "keep": "me"},
    )
    out = applied(forged)
    assert out["metadata"]["annotations"] == {"keep": "me"}
    assert not validate(request(forged), S).allowed  # if mutation was bypassed


def test_only_trusted_users_change_internal_annotations_on_update() -> None:
    old = pod(gpu(**{"nvidia.com/gpu": "1"}))
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["hami.io/vgpu-devices-to-allocate"] = "GPU-x,NVIDIA,1,0:;"
    denied = validate(request(new, "UPDATE", old, user="alice"), S)
    assert not denied.allowed and "internal annotations" in denied.message
    trusted = S.trusted_users[0]
    assert validate(request(new, "UPDATE", old, user=trusted), S).allowed
    unchanged = copy.deepcopy(new)
    assert validate(request(unchanged, "UPDATE", new, user="alice"), S).allowed


def test_every_kinds_device_annotations_are_internal() -> None:
    forged = pod(
        gpu(**{"huawei.com/Ascend910B3": "1"}),
        annotations={
            "hami.io/Ascend910B3-devices-to-allocate": "NPU-x,Ascend910B3,65536,100:;",
            "hami.io/cambricon-mlu-devices-allocated": "MLU-x,MLU,4096,0:;",
            "keep": "me",
        },
    )
    assert applied(forged)["metadata"]["annotations"] == {"keep": "me"}
    old = pod(gpu(**{"huawei.com/Ascend910B3": "1"}))
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["hami.io/dcu-devices-to-allocate"] = "DCU-x,DCU,1,0:;"
    denied = validate(request(new, "UPDATE", old, user="alice"), S)
    assert not denied.allowed and "changed: hami.io/dcu-devices-to-allocate" in denied.message


@pytest.mark.parametrize(
    ("limits", "needle"),
    [
        (
            {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "150"},
            "nvidia.com/gpucores=150 must be 0..100",
        ),
        ({"nvidia.com/gpu": "-1"}, "must not be negative"),
        ({"nvidia.com/gpu": "1.5"}, "whole number"),
        ({"nvidia.com/gpumem": "1500m"}, "whole number of MiB"),
        ({"nvidia.com/gpumem": "3Gi"}, "exceeds the largest device"),
        ({"nvidia.com/gpumem": "3000", "nvidia.com/gpumem-percentage": "50"}, "not both"),
        ({"nvidia.com/gpumem": "999999"}, "exceeds the largest device"),
        ({"nvidia.com/gpumem-percentage": "101"}, "1..100"),
        ({"nvidia.com/gpu": "1", "nvidia.com/priority": "5"}, "0 (high) or 1 (low)"),
    ],
)
def test_invalid_pods_are_denied_with_container_and_field(
    limits: dict[str, str], needle: str
) -> None:
    verdict = validate(request(pod(gpu(**limits))), S)
    assert not verdict.allowed
    assert needle in verdict.message and "container 'c'" in verdict.message


def test_unknown_policy_annotation_is_denied() -> None:
    verdict = validate(
        request(
            pod(
                gpu(**{"nvidia.com/gpu": "1"}),
                annotations={"hami.io/gpu-scheduler-policy": "tight"},
            )
        ),
        S,
    )
    assert (
        not verdict.allowed
        and "allowed: binpack, spread, best-fit, fragmentation" in verdict.message
    )


def review(obj: dict[str, Any], operation: str = "CREATE") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request(obj, operation),
        }
    ).encode()


def test_review_response_shape() -> None:
    status, body = answer(review(pod(gpu(**{"nvidia.com/gpu": "1"}))), mutate, S)
    assert status == 200 and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == "u1" and response["allowed"] and response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"]))
    status, body = answer(review(pod(gpu(**{"nvidia.com/gpucores": "200"}))), validate, S)
    assert status == 200 and not body["response"]["allowed"]
    assert body["response"]["status"]["code"] == 403


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'{"request": {}}',
        b'{"request": {"uid": 5}}',
        b'{"apiVersion": "admission.k8s.io/v1beta1", "request": {"uid": "x"}}',
    ],
)
def test_malformed_reviews_get_400(body: bytes) -> None:
    status, payload = answer(body, mutate, S)
    assert status == 400 and payload["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
quantities = st.one_of(
    st.sampled_from(["0", "1", "2", "50", "100", "101", "-3", "1.5", "3Gi", "", "3000", "200000"]),
    st.integers(-5, 300),
    json_values,
)
resource_maps = st.dictionaries(
    st.sampled_from(
        [
            "nvidia.com/gpu",
            "nvidia.com/gpumem",
            "nvidia.com/gpumem-percentage",
            "nvidia.com/gpucores",
            "nvidia.com/priority",
            "cpu",
            "a/b~c",
        ]
    ),
    quantities,
    max_size=4,
)
containers = st.fixed_dictionaries(
    {"name": st.text(max_size=5)},
    optional={
        "resources": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"limits": resource_maps, "requests": resource_maps}
            ),
            json_values,
        )
    },
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "annotations": st.dictionaries(
                    st.sampled_from(
                        ["hami.io/vgpu-node", "hami.io/gpu-scheduler-policy", "x", "a/b"]
                    ),
                    st.text(max_size=6),
                    max_size=3,
                )
            },
        ),
        "spec": st.fixed_dictionaries(
            {"containers": st.lists(containers, max_size=3)},
            optional={
                "schedulerName": st.text(max_size=6),
                "initContainers": st.lists(containers, max_size=2),
            },
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(obj=pods)
def test_any_pod_gets_an_answer_and_a_patch_that_applies(obj: dict[str, Any]) -> None:
    for decide in (mutate, validate):
        status, body = answer(review(obj), decide, S)
        assert status == 200 and isinstance(body["response"]["allowed"], bool)
        if "patch" in body["response"]:
            ops = json.loads(base64.b64decode(body["response"]["patch"]))
            jsonpatch.apply_patch(copy.deepcopy(obj), ops)  # raises if the patch does not apply


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_bytes_never_crash(body: bytes) -> None:
    status, payload = answer(body, mutate, S)
    assert status in (200, 400) and isinstance(payload, dict)


@pytest.mark.parametrize("count", ["1e30", "17", 10**20])
def test_more_devices_than_a_container_may_have_are_denied(count: object) -> None:
    verdict = validate(request(pod(gpu(**{"nvidia.com/gpu": count}))), S)
    assert not verdict.allowed and "more devices than one container may have" in verdict.message


def test_deep_nesting_is_a_400_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    status, payload = answer(b'{"request": {"uid": "u", "object": ' + deep + b"}}", mutate, S)
    assert status == 400 and "nested" in payload["error"]


def test_a_managed_pod_carries_its_admission_trace_context() -> None:
    from shared.resources import TRACE_ANNOTATION

    context = "traceparent=00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    for existing in (None, {}, {"x": "y"}, {TRACE_ANNOTATION: "forged"}):
        obj = pod(gpu(**{"nvidia.com/gpu": "1"}))
        if existing is None:
            del obj["metadata"]["annotations"]
        else:
            obj["metadata"]["annotations"] = dict(existing)
        verdict = mutate(request(obj), S, trace_context=context)
        patched = jsonpatch.apply_patch(copy.deepcopy(obj), list(verdict.patch))
        assert patched["metadata"]["annotations"][TRACE_ANNOTATION] == context
    plain = pod(ctr())
    assert not mutate(request(plain), S, trace_context=context).patch  # not ours: untouched


async def test_admissions_are_counted_by_verdict_and_served_as_metrics() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.webhook.service import application

    async with TestClient(TestServer(application(S))) as client:
        managed = review(pod(gpu(**{"nvidia.com/gpu": "1"})))
        assert (await client.post("/mutate", data=managed)).status == 200
        assert (await client.post("/mutate", data=review(pod(ctr())))).status == 200
        bad = review(pod(gpu(**{"nvidia.com/gpu": "1", "nvidia.com/gpucores": "150"})))
        assert (await client.post("/validate", data=bad)).status == 200
        assert (await client.post("/validate", data=b"{")).status == 400
        text = await (await client.get("/metrics")).text()
    for review_, verdict in (
        ("mutate", "patched"),
        ("mutate", "allowed"),
        ("validate", "denied"),
        ("validate", "malformed"),
    ):
        assert (
            f'hami_webhook_admissions_total{{review="{review_}",verdict="{verdict}"}} 1.0' in text
        ), text


DRA = WebhookSettings(dra=True)


def test_dra_mode_turns_hamis_resources_into_a_claim_of_the_same_shape() -> None:
    obj = pod(
        gpu(**{"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"}),
        ctr("plain"),
    )
    obj["spec"]["containers"][1]["resources"] = {"limits": {"cpu": "1"}}
    verdict = mutate(request(obj), DRA)
    assert verdict.allowed, verdict.message
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), list(verdict.patch))
    first, plain = patched["spec"]["containers"]
    assert first["resources"]["limits"] == {}  # HAMi's names are gone: DRA serves them
    assert first["resources"]["claims"] == [{"name": "hami-gpu-0"}]
    assert "claims" not in plain["resources"]
    assert patched["spec"]["resourceClaims"] == [
        {"name": "hami-gpu-0", "resourceClaimTemplateName": "hami-gpu-1x-3000mi-30c"}
    ]
    assert "schedulerName" not in patched["spec"]  # kube-scheduler allocates claims itself
    [template] = verdict.templates
    assert template["metadata"] == {
        "name": "hami-gpu-1x-3000mi-30c",
        "namespace": "ns",
        "labels": {"app.kubernetes.io/managed-by": "hami-webhook"},
    }
    [req] = template["spec"]["spec"]["devices"]["requests"]
    assert req["exactly"] == {
        "deviceClassName": "gpu.hami.io",
        "count": 1,
        "capacity": {"requests": {"memory": "3000Mi", "cores": "30"}},
    }


def test_dra_mode_whole_gpus_priority_and_what_cannot_be_expressed() -> None:
    whole = mutate(request(pod(gpu(**{"nvidia.com/gpu": "2"}))), DRA)
    [template] = whole.templates
    exactly = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly == {"deviceClassName": "gpu.hami.io", "count": 2}  # no capacity: whole GPUs
    high = mutate(
        request(pod(gpu(**{"nvidia.com/gpumem": "1000", "nvidia.com/priority": "0"}))), DRA
    )
    [template] = high.templates
    [config] = template["spec"]["spec"]["devices"]["config"]
    assert config["opaque"] == {"driver": "gpu.hami.io", "parameters": {"priority": 0}}
    percent = mutate(request(pod(gpu(**{"nvidia.com/gpumem-percentage": "50"}))), DRA)
    assert not percent.allowed and "gpumem-percentage" in percent.message
    mig = mutate(
        request(
            pod(gpu(**{"nvidia.com/gpumem": "1000"}), annotations={"nvidia.com/vgpu-mode": "mig"})
        ),
        DRA,
    )
    assert not mig.allowed and "vgpu-mode: mig" in mig.message
    invalid = mutate(request(pod(gpu(**{"nvidia.com/gpucores": "150"}))), DRA)
    assert not invalid.allowed
    untouched = mutate(request(pod(ctr())), DRA)
    assert untouched.allowed and not untouched.templates


async def test_dra_mode_makes_templates_first_skips_them_on_dry_run_and_fails_closed() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.webhook.service import application
    from shared.errors import Unavailable

    made: list[str] = []
    fail = False

    async def ensure(templates: Any) -> None:
        if fail:
            raise Unavailable("API server away")
        made.extend(t["metadata"]["name"] for t in templates)

    managed = pod(gpu(**{"nvidia.com/gpumem": "2000"}))
    async with TestClient(TestServer(application(DRA, ensure_templates=ensure))) as client:
        reply = await (await client.post("/mutate", data=review(managed))).json()
        assert reply["response"]["allowed"] and made == ["hami-gpu-1x-2000mi-0c"]
        dry = json.loads(review(managed))
        dry["request"]["dryRun"] = True
        reply = await (await client.post("/mutate", data=json.dumps(dry))).json()
        assert reply["response"]["allowed"] and len(made) == 1  # no side effect on dry run
        fail = True
        reply = await (await client.post("/mutate", data=review(managed))).json()
        assert not reply["response"]["allowed"]
        assert "ResourceClaimTemplate" in reply["response"]["status"]["message"]


def test_other_vendors_pods_go_to_hamis_scheduler_without_nvidias_defaults() -> None:
    settings_ = WebhookSettings(default_mem=1000, default_cores=10)
    for limits in (
        {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "2000"},
        {"cambricon.com/vmlu": "1"},
        {"enflame.com/gcu": "1"},
    ):
        patched = applied(pod(gpu(**limits)), settings_)
        assert patched["spec"]["schedulerName"] == "hami-scheduler"
        assert patched["spec"]["containers"][0]["resources"]["limits"] == limits
