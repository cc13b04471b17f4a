"""The rules crd_schema.py adds to a CRD's openAPIV3Schema, each on a small structural schema of its
own (the kept CRDs have no preserve-unknown-fields node, and no CEL rule on a field the roles set);
the rendered objects themselves are checked in test_render.py."""

from __future__ import annotations

from typing import Any

from crd_schema import CRD_FILES, CRDValidator, openapi_schema, to_json_schema


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    return sorted(e.message for e in CRDValidator(to_json_schema(schema)).iter_errors(instance))


SPEC = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
        "size": {"x-kubernetes-int-or-string": True},
        "free": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"count": {"type": "integer"}},
        },
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "empty": {"type": "object"},
        "when": {"type": "string", "nullable": True},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "ports": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}},
        },
        "owner": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}],
        },
        "embedded": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {}},
        "either": {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"required": ["a"]}]},
    },
}


def test_unknown_fields_are_errors_except_under_preserve_unknown_fields() -> None:
    assert _errors(SPEC, {"nmae": "x"}) == ["Additional properties are not allowed ('nmae' was unexpected)"]
    assert _errors(SPEC, {"empty": {"x": 1}}) == [
        "Additional properties are not allowed ('x' was unexpected)"
    ]
    assert _errors(SPEC, {"free": {"anything": {"at": ["all"]}, "count": 3}, "labels": {"k": "v"}}) == []
    assert _errors(SPEC, {"free": {"count": "3"}}) == ["'3' is not of type 'integer'"]  # still checked
    assert _errors(SPEC, {"labels": {"k": 1}}) == ["1 is not of type 'string'"]
    # allOf / anyOf / oneOf branches only add checks: no unknown-field rule of their own
    assert _errors(SPEC, {"either": {"a": "x"}}) == []
    assert _errors(SPEC, {"either": {}}) == ["{} is not valid under any of the given schemas"]
    embedded = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert _errors(SPEC, {"embedded": embedded}) == []
    assert _errors(SPEC, {"embedded": {**embedded, "data": {}}}) == [
        "Additional properties are not allowed ('data' was unexpected)"
    ]


def test_int_or_string_takes_an_integer_or_a_string_only() -> None:
    for field in ("port", "size"):
        assert _errors(SPEC, {field: 8080}) == [] and _errors(SPEC, {field: "metrics"}) == []
        assert len(_errors(SPEC, {field: 1.5})) == 1 and len(_errors(SPEC, {field: [1]})) == 1
        assert len(_errors(SPEC, {field: None})) == 1


def test_null_only_where_nullable() -> None:
    assert _errors(SPEC, {"when": None}) == []
    assert _errors(SPEC, {"name": None}) == ["None is not of type 'string'"]


def test_list_types_refuse_duplicates() -> None:
    assert _errors(SPEC, {"tags": ["a", "b"], "ports": [{"name": "a", "n": 1}, {"name": "b", "n": 1}]}) == []
    assert _errors(SPEC, {"tags": ["a", "a"]}) == ["duplicate item in a list of type set: 'a'"]
    assert _errors(SPEC, {"ports": [{"name": "a", "n": 1}, {"name": "a", "n": 2}]}) == [
        "duplicate item in a list of type map: keys ['name'] = ['a']"
    ]


def test_a_cel_rule_is_reported_not_passed() -> None:
    assert _errors(SPEC, {"name": "x"}) == []
    assert _errors(SPEC, {"owner": "me"}) == [
        "a field with CEL rules, which this check does not evaluate: self == oldSelf (immutable)"
    ]


def test_every_kept_crd_is_a_structural_schema_that_converts() -> None:
    """Each kept file loads, is an object schema with spec, and converts without losing a node type."""
    for api_version, kind in CRD_FILES:
        schema = openapi_schema(api_version, kind)
        converted = to_json_schema(schema)
        assert schema["type"] == "object" and "spec" in schema["properties"]
        assert converted["additionalProperties"] is False
