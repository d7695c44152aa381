#!/usr/bin/env python3
"""Check the Kubernetes side of Hewer: CRDs, kustomize renders, examples.

    .venv/bin/python scripts/check_manifests.py

1. Every CRD in ``crds/`` is structurally sound: each schema node has a type, defaults obey
   their own schema, list-map keys are required, CEL rules compile and the lists and strings
   they walk are bounded, printer-column and scale paths exist in the schema.
2. ``kubectl kustomize`` renders ``crds``, ``manifests/base``, both overlays and
   ``manifests/examples`` without error.
3. Every rendered built-in object validates against the Kubernetes 1.32 OpenAPI schemas
   (``kubernetes-validate``, strict: unknown fields are errors, as with ``kubectl apply``).
4. Every rendered custom resource validates against its CRD the way the API server would:
   defaults applied, the openAPIV3Schema (unknown fields rejected), list-type uniqueness and
   the ``x-kubernetes-validations`` CEL rules (evaluated with cel-python).
5. Cross-references hold in each render: Secrets, ServiceAccounts, Service selectors and
   target ports, the namespace, and the containers' security settings.

Exit status 1 with one line per problem. ``tests/unit/test_manifests.py`` imports this file.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "crds"
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "hewer-system"

# What each render must contain or may leave to the user (documented in README and overlays).
RENDERS: dict[str, dict[str, Any]] = {
    "crds": {"custom_resources": False},
    "manifests/base": {"external_secrets": {"hewer-database", "hewer-operator-token"}},
    "manifests/overlays/dev": {"external_secrets": {"hewer-operator-token"}},
    "manifests/overlays/production": {
        "external_secrets": {"hewer-database", "hewer-operator-token"}
    },
    "manifests/examples": {"namespace": None},
}

Obj = dict[str, Any]


class ManifestError(Exception):
    """kubectl is missing or a render failed."""


# ---------------------------------------------------------------------------------------------
# loading


def load_yaml_documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if not path:
        raise ManifestError(
            "kubectl not found: install kubectl (it bundles kustomize) to render the manifests"
        )
    return path


def render(directory: str | Path) -> list[Obj]:
    """``kubectl kustomize DIR`` as a list of objects."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(REPO / directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise ManifestError(f"kubectl kustomize {directory} failed: {proc.stderr.strip()}")
    return load_yaml_documents(proc.stdout)


def ident(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {ns}{meta.get('name')}"


# ---------------------------------------------------------------------------------------------
# CRD schemas -> validation


def to_json_schema(node: Obj) -> Obj:
    """A structural OpenAPI v3 schema as JSON Schema, with unknown fields rejected where the
    API server's strict field validation would reject them."""
    out: Obj = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        node.get("type") == "object"
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "properties" in node
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(schema: Obj, value: Any) -> Any:
    """Fill in ``default``s the way the API server does (objects that are present only)."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = schema.get("properties") or {}
            for name in value:
                if name not in known:
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def _path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


_CEL_ENV = celpy.Environment()


def compile_rule(rule: str) -> Any:
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


def _cel_true(program: Any, value: Any) -> tuple[bool, str]:
    try:
        result = program.evaluate({"self": celpy.json_to_cel(value)})
    except Exception as exc:  # celpy raises its own types for runtime errors
        return False, f"evaluation error: {exc}"
    if isinstance(result, celpy.celtypes.BoolType):
        return bool(result), ""
    return False, f"evaluation error: {result}"


def semantic_errors(schema: Obj, value: Any, path: list[Any]) -> Iterator[str]:
    """List-type uniqueness and CEL rules, depth first (what jsonschema does not know)."""
    if value is None:
        return
    list_type = schema.get("x-kubernetes-list-type")
    if (
        isinstance(value, list)
        and list_type == "set"
        and len(value) != len({yaml.safe_dump(v) for v in value})
    ):
        yield f"{_path(path)}: duplicate entries in a set"
    if isinstance(value, list) and list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen:
                named = dict(zip(keys, key, strict=True))
                yield f"{_path([*path, i])}: duplicate entry with {named}"
            seen.add(key)
    for rule in schema.get("x-kubernetes-validations") or []:
        if "oldSelf" in rule["rule"]:
            continue  # transition rules need the stored object
        ok, detail = _cel_true(compile_rule(rule["rule"]), value)
        if not ok:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            yield f"{_path(path)}: {message}" + (f" ({detail})" if detail else "")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, sub_value in value.items():
            sub = props.get(name) if name in props else (extra if isinstance(extra, dict) else None)
            if sub is not None:
                yield from semantic_errors(sub, sub_value, [*path, name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from semantic_errors(schema["items"], item, [*path, i])


@dataclass
class CrdSchema:
    crd: Obj
    version: Obj
    schema: Obj = field(init=False)
    validator: jsonschema.protocols.Validator = field(init=False)

    def __post_init__(self) -> None:
        self.schema = self.version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft7Validator(to_json_schema(self.schema))

    def validate(self, obj: Obj) -> list[str]:
        """Problems the API server would reject ``obj`` for (empty if none)."""
        obj = apply_defaults(self.schema, copy.deepcopy(obj))
        errors = [
            f"{_path(list(e.absolute_path))}: {e.message}"
            for e in sorted(self.validator.iter_errors(obj), key=lambda e: list(e.path))
        ]
        if errors:
            return errors
        return list(semantic_errors(self.schema, obj, []))

    def defaulted(self, obj: Obj) -> Obj:
        return apply_defaults(self.schema, copy.deepcopy(obj))


def load_crds(directory: Path = CRD_DIR) -> dict[tuple[str, str], CrdSchema]:
    """(apiVersion, kind) -> schema, for every served version of every CRD file."""
    out: dict[tuple[str, str], CrdSchema] = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in load_yaml_documents(path.read_text()):
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                api_version = f"{spec['group']}/{version['name']}"
                out[(api_version, spec["names"]["kind"])] = CrdSchema(doc, version)
    return out


def validate_custom_resource(crds: dict[tuple[str, str], CrdSchema], obj: Obj) -> list[str]:
    found = crds.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if found is None:
        return [f"no CRD for {obj.get('apiVersion')} {obj.get('kind')}"]
    return found.validate(obj)


# ---------------------------------------------------------------------------------------------
# CRD soundness


def _walk(node: Obj, path: str) -> Iterator[tuple[str, Obj]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema_at(schema: Obj, json_path: str) -> Obj | None:
    """The schema node a printer-column / scale JSONPath points at (filters skipped)."""
    node: Obj | None = schema
    for part in re.sub(r"\[\?\(.*?\)\]", "[]", json_path).strip(".").split("."):
        name, _, rest = part.partition("[")
        if node is None:
            return None
        if name == "metadata" and node is schema:
            return {"type": "object"}
        node = (node.get("properties") or {}).get(name)
        if node is not None and rest:
            node = node.get("items")
    return node


def crd_problems(crd: Obj, filename: str | None = None) -> list[str]:
    """Reasons the API server would refuse this CRD, or our conventions are not met."""
    problems: list[str] = []
    spec = crd["spec"]
    names = spec["names"]
    where = f"CRD {crd['metadata']['name']}"

    def problem(text: str) -> None:
        problems.append(f"{where}: {text}")

    if crd["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
        problem("metadata.name must be <plural>.<group>")
    if filename is not None and filename != f"{spec['group']}_{names['plural']}.yaml":
        problem(f"file should be named {spec['group']}_{names['plural']}.yaml, not {filename}")
    if spec.get("scope") != "Namespaced":
        problem("scope must be Namespaced")
    if not names.get("shortNames"):
        problem("no shortNames")
    for version in spec["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        if "status" not in (version.get("subresources") or {}):
            problem(f"{version['name']}: no status subresource")
        columns = {c["name"] for c in version.get("additionalPrinterColumns") or []}
        for wanted in ("Ready", "Reason", "Age"):
            if wanted not in columns:
                problem(f"{version['name']}: no {wanted} printer column")
        for column in version.get("additionalPrinterColumns") or []:
            if _schema_at(schema, column["jsonPath"]) is None:
                problem(f"printer column {column['name']}: {column['jsonPath']} not in schema")
        scale = (version.get("subresources") or {}).get("scale")
        if scale:
            for key in ("specReplicasPath", "statusReplicasPath", "labelSelectorPath"):
                if key in scale and _schema_at(schema, scale[key]) is None:
                    problem(f"scale {key} {scale[key]} not in schema")
        problems.extend(f"{where}: {p}" for p in schema_problems(schema))
    return problems


def schema_problems(schema: Obj) -> list[str]:
    problems: list[str] = []
    for path, node in _walk(schema, ""):
        here = path or "."
        preserved = node.get("x-kubernetes-preserve-unknown-fields")
        if "type" not in node and not preserved and not node.get("x-kubernetes-int-or-string"):
            problems.append(f"{here}: no type (not a structural schema)")
        if "properties" in node and isinstance(node.get("additionalProperties"), dict):
            problems.append(f"{here}: both properties and additionalProperties")
        for prop in node.get("required") or []:
            if prop not in (node.get("properties") or {}):
                problems.append(f"{here}: required {prop!r} is not a property")
        if "default" in node:
            errors = list(
                jsonschema.Draft7Validator(to_json_schema(node)).iter_errors(node["default"])
            )
            if errors:
                problems.append(f"{here}: default {node['default']!r}: {errors[0].message}")
        if "pattern" in node:
            try:
                re.compile(node["pattern"])
            except re.error as exc:
                problems.append(f"{here}: bad pattern: {exc}")
        if node.get("x-kubernetes-list-type") == "map":
            items = node.get("items") or {}
            for key in node.get("x-kubernetes-list-map-keys") or []:
                key_schema = (items.get("properties") or {}).get(key) or {}
                if key not in (items.get("required") or []) and "default" not in key_schema:
                    problems.append(f"{here}: list-map key {key!r} must be required")
        for rule in node.get("x-kubernetes-validations") or []:
            try:
                compile_rule(rule["rule"])
            except Exception as exc:
                problems.append(f"{here}: CEL rule {rule['rule']!r} does not compile: {exc}")
            # The API server estimates a rule's worst-case cost from the bounds of what it
            # can reach; unbounded lists or strings below a rule make that estimate explode.
            for sub_path, sub in _walk(node, here):
                if sub.get("x-kubernetes-preserve-unknown-fields"):
                    continue
                if sub.get("type") == "array" and "maxItems" not in sub:
                    problems.append(f"{sub_path}: array under a CEL rule needs maxItems")
                if (
                    sub.get("type") == "string"
                    and "maxLength" not in sub
                    and "enum" not in sub
                    and "format" not in sub
                ):
                    problems.append(f"{sub_path}: string under a CEL rule needs maxLength")
                if isinstance(sub.get("additionalProperties"), dict) and "maxProperties" not in sub:
                    problems.append(f"{sub_path}: map under a CEL rule needs maxProperties")
    return sorted(set(problems))


# ---------------------------------------------------------------------------------------------
# built-in objects


def validate_builtin(obj: Obj) -> list[str]:
    """Kubernetes OpenAPI validation (strict); [] if valid, None-like skip for unknown kinds."""
    import kubernetes_validate  # imported late: it loads a large schema package

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_path(list(exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"no Kubernetes schema: {exc.message}"]
    return []


def _pod_specs(obj: Obj) -> Iterator[Obj]:
    kind = obj.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield obj["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield obj["spec"]


def reference_problems(
    objs: list[Obj], *, external_secrets: set[str], namespace: str | None
) -> list[str]:
    """Dangling references and missing hardening in one render."""
    problems: list[str] = []
    have = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objs}
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in objs:
        where = ident(obj)
        meta = obj.get("metadata") or {}
        if (
            namespace
            and obj.get("kind") not in cluster_scoped
            and meta.get("namespace") != namespace
        ):
            problems.append(f"{where}: not in namespace {namespace}")
        for pod in _pod_specs(obj):
            sa = pod.get("serviceAccountName")
            if sa and ("ServiceAccount", sa) not in have:
                problems.append(f"{where}: ServiceAccount {sa} is not in the render")
            pod_ctx = pod.get("securityContext") or {}
            for container in (pod.get("initContainers") or []) + pod["containers"]:
                cwhere = f"{where} container {container['name']}"
                ctx = container.get("securityContext") or {}
                if not (ctx.get("runAsNonRoot") or pod_ctx.get("runAsNonRoot")):
                    problems.append(f"{cwhere}: runAsNonRoot is not set")
                if ctx.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{cwhere}: allowPrivilegeEscalation is not false")
                if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
                    problems.append(f"{cwhere}: capabilities do not drop ALL")
                if ":" not in container["image"] or container["image"].endswith(":latest"):
                    problems.append(f"{cwhere}: image {container['image']} has no pinned tag")
                if not (container.get("resources") or {}).get("requests"):
                    problems.append(f"{cwhere}: no resource requests")
                refs = [
                    (e["valueFrom"]["secretKeyRef"])
                    for e in container.get("env") or []
                    if "secretKeyRef" in (e.get("valueFrom") or {})
                ] + [e["secretRef"] for e in container.get("envFrom") or [] if "secretRef" in e]
                for ref in refs:
                    name = ref["name"]
                    if ref.get("optional") or name in external_secrets:
                        continue
                    if ("Secret", name) not in have:
                        problems.append(f"{cwhere}: Secret {name} is not in the render")
        if obj.get("kind") == "Service" and obj["spec"].get("selector"):
            selector = obj["spec"]["selector"]
            pods = [
                (o, p)
                for o in objs
                for p in _pod_specs(o)
                if selector.items()
                <= (o["spec"]["template"]["metadata"].get("labels") or {}).items()
            ]
            if not pods:
                problems.append(f"{where}: selector {selector} matches no pod template")
            ports = {
                port.get("name")
                for _o, p in pods
                for c in p["containers"]
                for port in c.get("ports") or []
            }
            for port in obj["spec"].get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str) and pods and target not in ports:
                    problems.append(f"{where}: targetPort {target} is no container port")
        if obj.get("kind") == "ClusterRoleBinding":
            for subject in obj.get("subjects") or []:
                if (
                    subject.get("kind") == "ServiceAccount"
                    and namespace
                    and subject.get("namespace") != namespace
                ):
                    problems.append(f"{where}: subject {subject['name']} not in {namespace}")
    return problems


# ---------------------------------------------------------------------------------------------
# main


def check_render(name: str, objs: list[Obj], crds: dict[tuple[str, str], CrdSchema]) -> list[str]:
    options = RENDERS.get(name, {})
    problems: list[str] = []
    if not objs:
        return [f"{name}: renders nothing"]
    for obj in objs:
        api_group = obj.get("apiVersion", "").partition("/")[0]
        if api_group.endswith("hewer.dev"):
            if not options.get("custom_resources", True):
                problems.append(f"{name}: {ident(obj)}: unexpected custom resource")
            errors = validate_custom_resource(crds, obj)
        else:
            errors = validate_builtin(obj)
        if obj.get("kind") == "CustomResourceDefinition":
            errors += crd_problems(obj)
        problems.extend(f"{name}: {ident(obj)}: {e}" for e in errors)
    problems.extend(
        f"{name}: {p}"
        for p in reference_problems(
            objs,
            external_secrets=set(options.get("external_secrets", ())),
            namespace=options.get("namespace", NAMESPACE),
        )
    )
    return problems


def main() -> int:
    problems: list[str] = []
    crds = load_crds()
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in load_yaml_documents(path.read_text()):
            if doc.get("kind") == "CustomResourceDefinition":
                problems.extend(crd_problems(doc, path.name))
    total = 0
    for name in RENDERS:
        try:
            objs = render(name)
        except ManifestError as exc:
            problems.append(str(exc))
            continue
        total += len(objs)
        found = check_render(name, objs, crds)
        problems.extend(found)
        print(f"{name}: {len(objs)} objects, {len(found)} problems")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        print(f"check-manifests: FAILED with {len(problems)} problems", file=sys.stderr)
        return 1
    print(f"check-manifests: ok ({len(crds)} CRDs, {total} rendered objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
