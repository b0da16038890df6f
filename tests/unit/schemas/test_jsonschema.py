"""JSON Schema export: files, metadata, descriptions, and the docs examples validate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from core.errors import ConfigError
from schemas.events import EVENT_MODELS
from schemas.jsonschema import DIALECT, ID_PREFIX, event_json_schema, export_json_schemas
from streamrec.commands.schemas import app
from tests.support import REPO

DOCS = REPO / "docs" / "events.md"
NAMES = ("exposure.v1", "outcome.v1", "item.v1", "alert.v1", "deadletter.v1")


def doc_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)
    return [json.loads(block) for block in blocks]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("schemas")
    paths = export_json_schemas(directory)
    assert sorted(p.name for p in paths) == sorted(f"{n}.json" for n in NAMES)
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in paths}


def test_one_file_per_contract_with_metadata(exported: dict[str, dict[str, Any]]) -> None:
    assert set(exported) == set(NAMES) == set(EVENT_MODELS)
    for name, schema in exported.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == DIALECT
        assert schema["$id"] == f"{ID_PREFIX}{name}"
        assert schema["title"] == name
        assert "topic" in schema["description"]
        assert schema["additionalProperties"] is False
        assert schema["properties"]["schema"]["const"] == name


def test_every_field_description_is_exported(exported: dict[str, dict[str, Any]]) -> None:
    for name, schema in exported.items():
        model = EVENT_MODELS[name]
        props = schema["properties"]
        assert set(props) == {f.alias or key for key, f in model.model_fields.items()}
        for key, field in model.model_fields.items():
            description = props[field.alias or key].get("description")
            assert description, f"{name}.{key} has no description"
            if field.description:
                assert description == field.description


def test_required_fields_match_the_model(exported: dict[str, dict[str, Any]]) -> None:
    for name, schema in exported.items():
        model = EVENT_MODELS[name]
        required = {f.alias or k for k, f in model.model_fields.items() if f.is_required()}
        assert set(schema.get("required", [])) == required


def test_docs_have_one_example_per_contract() -> None:
    names = [str(example.get("schema")) for example in doc_examples()]
    assert sorted(names) == sorted(NAMES)


@pytest.mark.parametrize("example", doc_examples(), ids=lambda e: str(e.get("schema")))
def test_docs_example_validates_against_schema_and_model(
    example: dict[str, Any], exported: dict[str, dict[str, Any]]
) -> None:
    name = example["schema"]
    jsonschema.Draft202012Validator(exported[name]).validate(example)
    EVENT_MODELS[name].model_validate(example)


@pytest.mark.parametrize("example", doc_examples(), ids=lambda e: str(e.get("schema")))
def test_schema_and_model_both_reject_broken_examples(
    example: dict[str, Any], exported: dict[str, dict[str, Any]]
) -> None:
    name = example["schema"]
    validator = jsonschema.Draft202012Validator(exported[name])
    model = EVENT_MODELS[name]
    required = exported[name]["required"]
    broken = [
        {**example, "surprise": 1},
        {k: v for k, v in example.items() if k != required[0]},
        {**example, "ts": True},
        {**example, "schema": "other.v9"},
        {**example, required[0]: [1]},
        {**example, "ts": "2024-05-01T12:00:00"},
    ]
    for bad in broken:
        assert not validator.is_valid(bad), bad
        with pytest.raises(ValidationError):
            model.model_validate(bad)


def test_event_json_schema_is_deterministic() -> None:
    assert event_json_schema("outcome.v1") == event_json_schema("outcome.v1")
    with pytest.raises(KeyError):
        event_json_schema("outcome.v9")


def cli() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(app, name="schemas")
    return root


def test_cli_export(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), ["schemas", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{n}.json" for n in NAMES
    )
    assert str(tmp_path / "out" / "item.v1.json") in result.output


def test_cli_export_into_a_file_fails(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(cli(), ["schemas", "export", str(target)])
    assert isinstance(result.exception, ConfigError)
    assert "not a directory" in str(result.exception)


def test_cli_show() -> None:
    result = CliRunner().invoke(cli(), ["schemas", "show", "item.v1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == event_json_schema("item.v1")
    result = CliRunner().invoke(cli(), ["schemas", "show", "item.v7"])
    assert result.exit_code == 2
    assert "unknown contract" in result.output
