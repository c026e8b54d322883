from shared import apidoc


def test_nats_api_doc_matches_the_code() -> None:
    document = apidoc.DOC_PATH.read_text()
    assert apidoc.splice(document, apidoc.render()) == document, (
        "docs/nats-api.md is out of date: run `python -m shared.apidoc`"
    )


def test_every_subject_and_schema_is_documented() -> None:
    rendered = apidoc.render()
    for spec in apidoc.ALL_SUBJECTS:
        assert f"`{spec.subject}`" in rendered
        assert f"### `{spec.message.__name__}`" in rendered
    assert "### `DeviceInfo`" in rendered and "### `DeviceGrant`" in rendered
