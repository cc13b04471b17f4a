"""Custom resources checked against their CRD's own `openAPIV3Schema`, as the API server checks them.

The schemas are the pinned releases' own (KubeRay's RayService and RayCluster, the Prometheus
Operator's PodMonitor and ServiceMonitor), kept verbatim under `schemas/crds/` (sources, versions and
licence: its README). A CRD schema is a Kubernetes *structural* schema, an OpenAPI v3 dialect: it is
turned into JSON Schema (draft 4, whose keywords OpenAPI v3 uses) the way the API server reads it
under `kubectl apply --validate=strict`:

- an unknown field is an error: every object node without `additionalProperties` gets
  `additionalProperties: false`, except where `x-kubernetes-preserve-unknown-fields: true` keeps
  whatever is there (its declared properties are still checked);
- `x-kubernetes-int-or-string: true` takes an integer or a string, nothing else;
- `nullable: true` admits null; elsewhere a null is an error (the API server would drop it: in a
  rendered object it is a template mistake);
- `x-kubernetes-embedded-resource: true` admits `apiVersion`, `kind` and `metadata`;
- `x-kubernetes-list-type: set` items are unique, `map` items unique by their
  `x-kubernetes-list-map-keys` (the API server rejects duplicates);
- the root `metadata` is the Kubernetes ObjectMeta of the pinned minor (kubernetes-validate's strict
  schema), as the API server validates it, not the CRD's `type: object`;
- `x-kubernetes-validations` (CEL rules) are not evaluated here: a value at such a field is reported
  as an error naming the rule, so that a render reaching one is noticed rather than passed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

CRD_DIR = Path(__file__).parent / "schemas" / "crds"

# (apiVersion, kind) -> the file under schemas/crds/ holding that CRD version's openAPIV3Schema.
CRD_FILES = {
    ("ray.io/v1", "RayService"): "ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "ray.io_rayclusters.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
}

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_LOGIC = ("allOf", "anyOf", "oneOf")


@functools.cache
def openapi_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD's own openAPIV3Schema for `apiVersion` / `kind`, as kept under schemas/crds/."""
    data = yaml.load((CRD_DIR / CRD_FILES[(api_version, kind)]).read_text(), Loader=_LOADER)
    schema: dict[str, Any] = data["openAPIV3Schema"]
    return schema


def to_json_schema(node: Mapping[str, Any], *, structural: bool = True) -> dict[str, Any]:
    """One structural-schema node as JSON Schema with the API server's strict reading (module doc).

    `structural` is False inside allOf / anyOf / oneOf / not, whose branches only add value checks
    (a structural schema declares every field outside them), so no unknown-field rule is added there.
    """
    out = dict(node)
    if "properties" in out:
        out["properties"] = {
            k: to_json_schema(v, structural=structural) for k, v in out["properties"].items()
        }
    if isinstance(out.get("items"), Mapping):
        out["items"] = to_json_schema(out["items"], structural=structural)
    if isinstance(out.get("additionalProperties"), Mapping):
        out["additionalProperties"] = to_json_schema(out["additionalProperties"], structural=structural)
    for key in _LOGIC:
        if key in out:
            out[key] = [to_json_schema(branch, structural=False) for branch in out[key]]
    if "not" in out:
        out["not"] = to_json_schema(out["not"], structural=False)
    if out.get("x-kubernetes-embedded-resource"):
        out["properties"] = {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            **out.get("properties", {}),
        }
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    elif out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        structural
        and out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _list_type(validator: Any, list_type: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[Any]:
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", []) if list_type == "map" else []
    seen: list[Any] = []
    for item in instance:
        identity = [item.get(k) for k in keys] if keys and isinstance(item, dict) else item
        if identity in seen:
            what = f"keys {keys} = {identity}" if keys else repr(item)
            yield jsonschema.ValidationError(f"duplicate item in a list of type {list_type}: {what}")
        seen.append(identity)


def _cel_rules(validator: Any, rules: list[Mapping[str, str]], instance: Any, schema: Any) -> Iterator[Any]:
    yield jsonschema.ValidationError(
        "a field with CEL rules, which this check does not evaluate: "
        + "; ".join(f"{r.get('rule')} ({r.get('message', '')})" for r in rules)
    )


CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel_rules},
)


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    schema = to_json_schema(openapi_schema(api_version, kind))
    # metadata is checked on its own, against ObjectMeta (_metadata_errors).
    schema["properties"] = {**schema["properties"], "metadata": {"type": "object"}}
    return CRDValidator(schema)


@functools.cache
def _object_meta_validator(kube_minor: str) -> Any:
    version = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= kube_minor][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    schema = kv_utils.schema_contents(f"{folder}/objectmeta-meta-v1.json", kube_minor)
    definitions = kv_utils.schema_contents(f"{folder}/_definitions.json", kube_minor)
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(root)"


def crd_errors(obj: Mapping[str, Any], kube_minor: str) -> list[str]:
    """Every reason the API server of `kube_minor` would refuse `obj` under strict validation
    (its kind's CRD schema, ObjectMeta for `metadata`); empty when it would take it."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_FILES:
        return [f"no CRD kept for apiVersion {key[0]!r} kind {key[1]!r} (schemas/crds/)"]
    errors = [f"{_where(e)}: {e.message}" for e in _validator(*key).iter_errors(obj)]
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        errors += [
            f"metadata/{_where(e)}: {e.message}"
            for e in _object_meta_validator(kube_minor).iter_errors(metadata)
        ]
    return sorted(errors)


def raycluster_of(rayservice: Mapping[str, Any]) -> dict[str, Any]:
    """The RayCluster KubeRay makes of a RayService: its `rayClusterConfig` as a RayCluster's spec."""
    return {
        "apiVersion": rayservice["apiVersion"],
        "kind": "RayCluster",
        "metadata": {
            "name": rayservice["metadata"]["name"],
            "namespace": rayservice["metadata"]["namespace"],
        },
        "spec": rayservice["spec"]["rayClusterConfig"],
    }


def assert_valid(obj: Mapping[str, Any], kube_minor: str) -> None:
    """`obj` is valid against its CRD; for a RayService, its cluster against the RayCluster CRD too.

    Every kept CRD is namespaced: the object must also name its namespace (without one it would land
    in whatever namespace the kubectl context has) and be named by a DNS label."""
    metadata = obj.get("metadata", {})
    assert metadata.get("namespace"), f"{obj.get('kind')} without a namespace"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", metadata.get("name", "")), metadata
    objects = [obj] + ([raycluster_of(obj)] if obj.get("kind") == "RayService" else [])
    for each in objects:
        errors = crd_errors(each, kube_minor)
        assert not errors, f"{each.get('kind')} {each.get('metadata', {}).get('name')}: " + "\n".join(errors)
