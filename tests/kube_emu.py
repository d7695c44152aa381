"""
A more realistic Kubernetes API emulator on top of kmock.KubernetesEmulator (kmock 0.8).

kmock gives: aiohttp server, request log + DSL (fault injection), discovery, in-memory
objects with history, watch buses.  This subclass adds what kopf / kubectl / the
`kubernetes` client need and what an operator's correctness depends on:

* metadata: namespace, uid, resourceVersion (global counter), generation, creationTimestamp,
  generateName;  409 AlreadyExists;  404 for unknown namespaces (strict_namespaces)
* PATCH by content type: json-patch (with `test` op -> 422 like a real apiserver, which kopf
  relies on for optimistic concurrency), merge-patch (RFC 7386), strategic-merge (approximation:
  lists of dicts with `name` merged by name; 415 for custom resources, as the real apiserver),
  apply-patch+yaml (server-side apply) -> 415;  PUT (replace) with resourceVersion conflict -> 409
* status subresource semantics: main endpoint ignores .status, /status only changes .status
* scale subresource: GET/PATCH/PUT .../scale as autoscaling/v1 Scale
* CRDs: creating a CRD registers the resource in discovery (+ Established condition);
  deleting it removes the resource and its objects
* /api/v1/namespaces works (kmock 0.8 returns 500 there); namespace deletion cascades
* list: kind/apiVersion/resourceVersion, labelSelector + fieldSelector (metadata.name/namespace)
* watch: resourceVersion continuation replayed from a bounded per-resource event history
  (deletions included; 410 Expired once the history no longer reaches back that far, as
  the real watch cache), timeoutSeconds, selectors, sendInitialEvents + BOOKMARK
* ownerReferences garbage collection (background), finalizers + deletionTimestamp
* /openapi/v3 stubs so `kubectl apply` validation works without --validate=false
* optional fake workload controller: Deployment -> Pods (no ReplicaSets), readiness after
  `ready_delay`, pod termination after `termination_delay`, scale-down victim order honours
  the `controller.kubernetes.io/pod-deletion-cost` annotation, then not-ready, then newest.

Not emulated: OpenAPI schema validation/pruning/defaulting, admission webhooks, RBAC,
server-side apply, version conversion, deletecollection, pagination (limit/continue ignored).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import random
import re
import string
import uuid
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import jsonschema
import kmock
from kmock._internal import enums, parsing

Key = tuple[kmock.resource, str | None, str]
HISTORY_EVENTS = 5000  # per resource; an older resourceVersion gets 410 Expired

# ---------------------------------------------------------------------------------------------
# kmock 0.8 URL parsing fixes: /api/v1/namespaces[/NAME[/status|finalize]] and PUT -> UPDATE.
# ---------------------------------------------------------------------------------------------
_orig_parse_path = parsing.parse_path
_orig_guess_k8s = parsing.guess_k8s


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 5:
        rest = parts[3:]
        if not rest:
            return parsing.ParsedPath("", "v1", "namespaces")
        if len(rest) == 1:
            return parsing.ParsedPath("", "v1", "namespaces", None, rest[0])
        if len(rest) == 2 and rest[1] in ("status", "finalize"):
            return parsing.ParsedPath("", "v1", "namespaces", None, rest[0], rest[1])
    return _orig_parse_path(path)


def _guess_k8s(
    k8s: parsing.ParsedPath, method: enums.method, query: dict[str, str]
) -> enums.action | None:
    if k8s.group is not None and k8s.name is not None and method == enums.method.PUT:
        return enums.action.UPDATE
    return _orig_guess_k8s(k8s, method, query)


parsing.parse_path = _parse_path
parsing.guess_k8s = _guess_k8s

NAMESPACES = kmock.resource("", "v1", "namespaces")
PODS = kmock.resource("", "v1", "pods")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Approximation of strategic merge patch: like merge patch, but lists of dicts that all
    have a `name` are merged by name (containers, env, ports, volumes...); directives dropped."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: v for k, v in copy.deepcopy(patch).items() if k != "$patch"}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # $setElementOrder/..., $retainKeys, $deleteFromPrimitiveList/...
            continue
        if value is None:
            result.pop(key, None)
        elif (
            isinstance(value, list)
            and isinstance(result.get(key), list)
            and value
            and all(isinstance(v, dict) and "name" in v for v in value)
            and all(isinstance(v, dict) and "name" in v for v in result[key])
        ):
            merged = {item["name"]: item for item in result[key]}
            for item in value:
                if item.get("$patch") == "delete":
                    merged.pop(item["name"], None)
                else:
                    merged[item["name"]] = _strategic_merge_patch(merged.get(item["name"]), item)
            result[key] = list(merged.values())
        else:
            result[key] = _strategic_merge_patch(result.get(key), value)
    return result


_SEL_SPLIT = re.compile(r",(?![^()]*\))")


def _match_labels(selector: str | None, labels: dict[str, str]) -> bool:
    """labelSelector: a=b, a==b, a!=b, a, !a, a in (x,y), a notin (x,y)."""
    if not selector:
        return True
    for term in filter(None, (t.strip() for t in _SEL_SPLIT.split(selector))):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = (labels.get(key) in vals) if op == "in" else (labels.get(key) not in vals)
        elif "!=" in term:
            key, val = term.split("!=", 1)
            ok = labels.get(key.strip()) != val.strip()
        elif "=" in term:
            key, val = term.replace("==", "=").split("=", 1)
            ok = labels.get(key.strip()) == val.strip()
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


def _match_fields(selector: str | None, obj: dict) -> bool:
    if not selector:
        return True
    meta = obj.get("metadata", {})
    for term in filter(None, (t.strip() for t in selector.split(","))):
        neg = "!=" in term
        key, val = re.split(r"!=|==|=", term, maxsplit=1)
        actual = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "status.phase": obj.get("status", {}).get("phase"),
        }.get(key.strip())
        if (actual == val.strip()) == neg:
            return False
    return True


def _to_json_schema(schema: Any, *, top: bool = False) -> Any:
    """An OpenAPI v3 structural schema as a JSON Schema (draft 7)."""
    if isinstance(schema, list):
        return [_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {
                k: _to_json_schema(v) for k, v in value.items() if not (top and k == "metadata")
            }
        elif key in ("items", "additionalProperties", "not") or key in ("allOf", "anyOf", "oneOf"):
            out[key] = _to_json_schema(value)
        elif key not in ("nullable", "format") and not key.startswith("x-kubernetes-"):
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"]
    return out


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def response(self) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": self.code,
                "reason": self.reason,
                "message": self.message,
                "details": self.details,
            },
            status=self.code,
        )


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    strict_namespaces: bool = True
    simulate_workloads: bool = True
    ready_delay: float = 0.0  # pod Pending -> Running+Ready
    termination_delay: float = 0.0  # pod Terminating -> gone (graceful shutdown window)
    validate_schemas: bool = True  # check custom resources against their CRD's schema
    _rv: int = attrs.field(default=0, init=False)
    _wlock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _bg: set = attrs.field(factory=set, init=False)
    _reconciling: bool = attrs.field(default=False, init=False)
    _dirty: bool = attrs.field(default=False, init=False)
    # every resource's recent events, so a watch from a list's resourceVersion replays what
    # happened in between: kubectl delete --wait lists, then watches, and a finalizer
    # removed in that gap must still reach it (it waited forever before)
    _history: dict = attrs.field(factory=dict, init=False)
    _forgotten_rv: dict = attrs.field(factory=dict, init=False)  # newest evicted, per resource

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        # kmock lists shortNames on subresource entries too; kubectl then warns on `get deploy`.
        self.fallback["get /openapi/v3"] << self._serve_openapi_root
        self.fallback["get", re.compile(r"/openapi/v3/.+")] << self._serve_openapi_gv
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._objects[NAMESPACES, None, ns] = self._fresh_meta(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
            )

    # ----------------------------------------------------------------------------- helpers
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _fresh_meta(self, body: dict) -> dict:
        meta = body.setdefault("metadata", {})
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=_now(),
            generation=1,
        )
        return body

    def _info(self, res: kmock.resource) -> kmock.ResourceInfo:
        if res not in self.resources:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({res.plural})"
            )
        return self.resources[res]

    def _key(self, res: kmock.resource, ns: str | None, name: str) -> Key:
        return (res, ns if self._info(res).namespaced else None, name)

    def _live(self, key: Key) -> dict | None:
        obj = self._objects._objects.get(key)
        return None if obj is None or obj.deleted else obj.raw

    def _iter_live(self, res: kmock.resource | None = None, ns: str | None = None):
        for (r, n, name), obj in list(self._objects.items()):
            if not obj.deleted and (res is None or r == res) and (ns is None or n == ns):
                yield (r, n, name), obj.raw

    def _gv(self, res: kmock.resource) -> str:
        return f"{res.group}/{res.version}" if res.group else res.version

    # ------------------------------------------------------------------- storage primitives
    async def _emit(self, res: kmock.resource, etype: str, body: dict) -> None:
        event = {"type": etype, "object": body}
        history = self._history.setdefault(res, collections.deque())
        history.append((int(body["metadata"]["resourceVersion"]), event))
        if len(history) > HISTORY_EVENTS:
            self._forgotten_rv[res] = history.popleft()[0]
        await self._buses[res].put(event)

    def _replay(self, res: kmock.resource, since: int, until: int) -> list[dict] | None:
        """The events of ``res`` after ``since`` up to ``until``; None: no longer known."""
        if since < self._forgotten_rv.get(res, 0):
            return None
        return [e for rv, e in self._history.get(res, ()) if since < rv <= until]

    async def _store_create(self, key: Key, body: dict) -> dict:
        res = key[0]
        if key in self._objects._objects:
            self._objects[key].create(body)
        else:
            self._objects[key] = body
        await self._emit(res, "ADDED", body)
        await self._after_change(key, None, body)
        return body

    async def _store_replace(self, key: Key, new: dict) -> dict:
        res = key[0]
        old = self._live(key)
        new = copy.deepcopy(new)
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].create(new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._objects[key].delete()
            await self._emit(res, "DELETED", new)
            await self._after_delete(key, new)
        else:
            await self._emit(res, "MODIFIED", new)
            await self._after_change(key, old, new)
        return new

    async def _store_delete(self, key: Key) -> dict:
        old = self._live(key)
        assert old is not None
        meta = old.get("metadata", {})
        if meta.get("deletionTimestamp"):
            return old
        if key[0] == NAMESPACES:  # namespace controller: delete the content first
            for k, _ in list(self._iter_live(ns=key[2])):
                if self._live(k) is not None:
                    await self._store_delete(k)
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        if key[0] == PODS and self.simulate_workloads and self.termination_delay > 0:
            # graceful termination: Terminating for termination_delay, then gone (unless finalizers)
            new["metadata"]["deletionGracePeriodSeconds"] = int(self.termination_delay)
            new["metadata"].setdefault("finalizers", [])
            new["metadata"]["finalizers"] = new["metadata"]["finalizers"] + ["kube-emu/kubelet"]
            self._later(self.termination_delay, self._kubelet_stop, key, meta.get("uid"))
        return await self._store_replace(key, new)

    def _later(self, delay: float, fn, *args) -> None:
        async def run():
            await asyncio.sleep(delay)
            async with self._wlock:
                await fn(*args)

        task = asyncio.get_running_loop().create_task(run())
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _after_delete(self, key: Key, body: dict) -> None:
        res = key[0]
        if res == CRDS:
            for r in self._crd_resources(body):
                for k, obj in list(self._iter_live(r)):
                    await self._store_replace(
                        k,
                        {
                            **obj,
                            "metadata": {
                                **obj["metadata"],
                                "finalizers": [],
                                "deletionTimestamp": _now(),
                            },
                        },
                    )
                for k in [k for k in self._objects if k[0] == r]:
                    del self._objects[k]
                if r in self.resources:
                    del self.resources[r]
        await self._collect_garbage()
        await self._after_change(key, body, None)

    async def _collect_garbage(self) -> None:
        live_uids = {o["metadata"].get("uid") for _, o in self._iter_live()}
        for key, obj in list(self._iter_live()):
            refs = obj.get("metadata", {}).get("ownerReferences") or []
            orphan = refs and not any(ref.get("uid") in live_uids for ref in refs)
            if (
                orphan
                and self._live(key) is not None
                and not obj["metadata"].get("deletionTimestamp")
            ):
                await self._store_delete(key)

    async def _after_change(self, key: Key, old: dict | None, new: dict | None) -> None:
        res = key[0]
        if res == CRDS and new is not None and old is None:
            self._register_crd(new)
            status = {
                "conditions": [
                    {
                        "type": "NamesAccepted",
                        "status": "True",
                        "reason": "NoConflicts",
                        "lastTransitionTime": _now(),
                    },
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "lastTransitionTime": _now(),
                    },
                ],
                "acceptedNames": new["spec"]["names"],
                "storedVersions": [
                    v["name"] for v in new["spec"].get("versions", []) if v.get("storage")
                ],
            }
            await self._store_replace(key, {**new, "status": status})
        elif (
            res == CRDS
            and new is not None
            and old is not None
            and new.get("spec") != old.get("spec")
        ):
            self._register_crd(new)
        if self.simulate_workloads and res in (DEPLOYMENTS, PODS):
            if self._reconciling:
                self._dirty = True
                return
            self._reconciling = True
            try:
                for _ in range(20):  # converge: our own writes mark the state dirty again
                    self._dirty = False
                    await self._reconcile_deployments(None)
                    if not self._dirty:
                        break
            finally:
                self._reconciling = False

    # ------------------------------------------------------------------------------ CRDs
    def _crd_schema(self, res: kmock.resource) -> dict | None:
        for _, crd in self._iter_live(CRDS):
            spec = crd.get("spec", {})
            if spec.get("group") != res.group or spec["names"]["plural"] != res.plural:
                continue
            for v in spec.get("versions", []):
                if v["name"] == res.version:
                    return (v.get("schema") or {}).get("openAPIV3Schema")
        return None

    def _validate(self, res: kmock.resource, obj: dict) -> None:
        """CRD structural-schema validation (no pruning or defaulting): 422 like the
        apiserver. OpenAPI's ``nullable`` and ``x-kubernetes-int-or-string`` are mapped to
        JSON Schema; other ``x-kubernetes-*`` keywords are ignored."""
        if not self.validate_schemas or not res.group:
            return
        schema = self._crd_schema(res)
        if not schema:
            return
        doc = {k: v for k, v in obj.items() if k != "metadata"}
        validator = jsonschema.Draft7Validator(_to_json_schema(schema, top=True))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            kind = self.resources[res].kind if res in self.resources else res.plural
            name = obj.get("metadata", {}).get("name", "")
            causes = [".".join(str(p) for p in e.absolute_path) + f": {e.message}" for e in errors]
            raise ApiError(
                422,
                "Invalid",
                f'{kind}.{res.group} "{name}" is invalid: ' + "; ".join(causes[:5]),
                {
                    "name": name,
                    "group": res.group,
                    "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": c} for c in causes],
                },
            )

    def _crd_resources(self, crd: dict) -> list[kmock.resource]:
        spec = crd.get("spec", {})
        return [
            kmock.resource(spec["group"], v["name"], spec["names"]["plural"])
            for v in spec.get("versions", [])
        ]

    def _register_crd(self, crd: dict) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for v in spec.get("versions", []):
            if not v.get("served", True):
                continue
            self.resources[kmock.resource(spec["group"], v["name"], names["plural"])] = (
                kmock.ResourceInfo(
                    kind=names["kind"],
                    singular=names.get("singular") or names["kind"].lower(),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    verbs={
                        "get",
                        "list",
                        "watch",
                        "create",
                        "update",
                        "patch",
                        "delete",
                        "deletecollection",
                    },
                    shortnames=names.get("shortNames", []),
                    categories=names.get("categories", []),
                    subresources=set((v.get("subresources") or {}).keys()),
                )
            )

    # ------------------------------------------------------------------ request handling
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None or request.action not in (
            enums.action.CREATE,
            enums.action.UPDATE,
            enums.action.DELETE,
        ):
            try:
                if (
                    request.resource is not None
                    and request.resource.plural
                    and request.resource.version
                ):
                    self._info(request.resource)  # 404 for undeclared resources (also for reads)
            except ApiError as e:
                return e.response()
            return await super()._handle(request)
        ctype = request.headers.get("Content-Type", "")
        if request.method != enums.method.DELETE and ("protobuf" in ctype or "cbor" in ctype):
            return ApiError(
                415, "UnsupportedMediaType", f"kube-emu speaks JSON only, not {ctype}"
            ).response()
        try:
            async with self._wlock:
                if request.action == enums.action.CREATE:
                    request = await self._api_create(request)
                elif request.action == enums.action.UPDATE:
                    await self._api_update(request)
                else:
                    await self._api_delete(request)
        except ApiError as e:
            return e.response()
        # Skip KubernetesEmulator._handle (its naive mutation); dispatch to reactions/fallbacks.
        return await kmock.RawHandler._handle(self, request)

    async def _api_create(self, request: kmock.Request) -> kmock.Request:
        res = request.resource
        info = self._info(res)
        body = copy.deepcopy(request.data)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        meta = body.setdefault("metadata", {})
        ns = request.namespace or meta.get("namespace")
        if info.namespaced:
            if not ns:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if (
                request.namespace
                and meta.get("namespace")
                and meta["namespace"] != request.namespace
            ):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            if self.strict_namespaces and self._live((NAMESPACES, None, ns)) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"},
                )
            meta["namespace"] = ns
        else:
            ns = None
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                )
            meta["name"] = meta["generateName"] + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        key = (res, ns, meta["name"])
        if self._live(key) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res.plural}.{res.group} "{meta["name"]}" already exists'.replace(". ", " "),
                {"name": meta["name"], "group": res.group, "kind": res.plural},
            )
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "uid"):
            meta.pop(k, None)
        body.setdefault("apiVersion", self._gv(res))
        body.setdefault("kind", info.kind)
        if "status" in info.subresources:
            body.pop("status", None)
        if res == NAMESPACES:
            body["status"] = {"phase": "Active"}
        self._validate(res, body)
        self._fresh_meta(body)
        await self._store_create(key, body)
        # kmock matches reactions to *recorded* requests by identity: swap the recorded one.
        new_request = attrs.evolve(request, data=body, namespace=ns, name=meta["name"])
        for i, r in enumerate(self._requests):
            if r is request:
                self._requests[i] = new_request
        return new_request

    async def _api_update(self, request: kmock.Request) -> None:
        res, sub = request.resource, request.subresource
        info = self._info(res)
        key = self._key(res, request.namespace, request.name)
        old = self._live(key)
        if old is None:
            raise ApiError(
                404,
                "NotFound",
                f'{res.plural} "{request.name}" not found',
                {"name": request.name, "kind": res.plural},
            )
        if sub not in (None, "status", "scale") or (
            sub and sub not in info.subresources and res != NAMESPACES
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        base = self._scale_view(old) if sub == "scale" else copy.deepcopy(old)
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        data = request.data
        if request.method == enums.method.PUT:
            if not isinstance(data, dict):
                raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
            rv = data.get("metadata", {}).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.plural} "{request.name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            patched = copy.deepcopy(data)
        elif ctype == "application/json-patch+json":
            try:
                patched = jsonpatch.apply_patch(base, data)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise ApiError(
                    422,
                    "Invalid",
                    f"the server rejected our request due to an error in our request: {e}",
                ) from None
        elif ctype == "application/merge-patch+json":
            patched = _merge_patch(base, data)
        elif ctype == "application/strategic-merge-patch+json":
            if res.group and res in self._crd_resources_all():
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml",
                )
            patched = _strategic_merge_patch(base, data)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"kube-emu does not support {ctype!r} (server-side apply)",
            )
        if isinstance(data, dict):
            rv = (data.get("metadata") or {}).get("resourceVersion")
            if (
                request.method != enums.method.PUT
                and rv
                and rv != old["metadata"]["resourceVersion"]
            ):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.plural} "{request.name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )

        if sub == "scale":
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["replicas"] = int(
                (patched.get("spec") or {}).get("replicas", 0)
            )
        elif sub == "status":
            new = copy.deepcopy(old)
            if "status" in patched:
                new["status"] = patched["status"]
            else:
                new.pop("status", None)
        else:
            new = patched
            if "status" in info.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        # immutable / server-owned metadata
        meta = new.setdefault("metadata", {})
        for k in (
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
        ):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
        if new == old:
            return  # no-op: no new resourceVersion, no watch event (as the real apiserver)

        def strip(o: dict) -> dict:
            return {k: v for k, v in o.items() if k not in ("metadata", "status")}

        if strip(new) != strip(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if meta.get("deletionTimestamp") and len(meta.get("finalizers") or []) > len(
            old["metadata"].get("finalizers") or []
        ):
            raise ApiError(
                422,
                "Invalid",
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object "
                "is being deleted",
            )
        self._validate(res, new)
        await self._store_replace(key, new)

    def _crd_resources_all(self) -> set[kmock.resource]:
        return {r for _, crd in self._iter_live(CRDS) for r in self._crd_resources(crd)}

    async def _api_delete(self, request: kmock.Request) -> None:
        res = request.resource
        if request.name is None:
            raise ApiError(405, "MethodNotAllowed", "deletecollection is not emulated")
        key = self._key(res, request.namespace, request.name)
        if self._live(key) is None:
            raise ApiError(
                404,
                "NotFound",
                f'{res.plural} "{request.name}" not found',
                {"name": request.name, "kind": res.plural},
            )
        await self._store_delete(key)

    # ----------------------------------------------------------------------- read paths
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):  # standard reasons, no tracebacks
            reason = {404: "NotFound", 409: "AlreadyExists"}.get(exc.status, exc.reason)
            return ApiError(exc.status, reason, exc.message or "").response()
        return await super()._render_error(exc)

    async def _serve_create(self, request: kmock.Request) -> Any:
        # 201 Created like the real apiserver: kubernetes-client 37 deserializes create
        # bodies only for 201
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    def _scale_view(self, obj: dict) -> dict:
        meta = obj["metadata"]
        sel = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sel.items()),
            },
        }

    async def _serve_fetch(self, request: kmock.Request) -> Any:
        # Answer 404 with the standard reason "NotFound" (kmock says "Object Not Found", which
        # older client-go, e.g. Debian's kubectl 1.20, does not recognise as NotFound).
        raw = self._live(self._key(request.resource, request.namespace, request.name))
        if raw is None:
            res = request.resource
            return kmock.Response(
                status=404,
                payload={
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                    "message": f'{res.plural}.{res.group} "{request.name}" not found'.replace(
                        ". ", " "
                    ),
                    "details": {"name": request.name, "group": res.group, "kind": res.plural},
                },
            )
        # NB: always set the status explicitly: kmock 0.8 copies a returned Response's status onto
        # the (shared) reaction, so one 404 would otherwise stick to all later fetches.
        return kmock.Response(
            status=200, payload=self._scale_view(raw) if request.subresource == "scale" else raw
        )

    async def _serve_update(self, request: kmock.Request) -> Any:
        raw = await super()._serve_update(request)
        # NB: always set the status explicitly: kmock 0.8 copies a returned Response's status onto
        # the (shared) reaction, so one 404 would otherwise stick to all later fetches.
        return kmock.Response(
            status=200, payload=self._scale_view(raw) if request.subresource == "scale" else raw
        )

    def _select(self, request: kmock.Request, obj: dict) -> bool:
        return (
            _match_labels(
                request.params.get("labelSelector"), obj.get("metadata", {}).get("labels") or {}
            )
            and _match_fields(request.params.get("fieldSelector"), obj)
            and (request.name is None or obj["metadata"].get("name") == request.name)
        )

    async def _serve_list(self, request: kmock.Request) -> Any:
        info = self._info(request.resource)
        items = [
            o
            for _, o in self._iter_live(request.resource, request.namespace)
            if self._select(request, o)
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        return {
            "apiVersion": self._gv(request.resource),
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _serve_watch(self, request: kmock.Request) -> kmock.Response:
        # kubectl/client-go refuse watch streams served as application/octet-stream
        # (kmock's default)
        return kmock.Response(
            headers={"Content-Type": "application/json"}, payload=self._watch(request)
        )

    def _wants(self, request: kmock.Request, obj: dict) -> bool:
        ns = obj["metadata"].get("namespace")
        if request.namespace is not None and ns != request.namespace:
            return False
        return self._select(request, obj)

    async def _watch(self, request: kmock.Request):
        yield b""
        res, params = request.resource, request.params
        bus = self._buses[res]
        async with self._wlock:  # no write between the marker, the snapshot and the list
            marker = await bus.mark()
            snapshot_rv = self._rv
            objs = [
                o for _, o in self._iter_live(res, request.namespace) if self._select(request, o)
            ]
        try:
            since = params.get("resourceVersion") or "0"
            if since == "0" or params.get("sendInitialEvents") == "true":
                for o in objs:
                    yield {"type": "ADDED", "object": o}
                if (
                    params.get("sendInitialEvents") == "true"
                    and params.get("allowWatchBookmarks") == "true"
                ):
                    yield {
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": self._gv(res),
                            "kind": self._info(res).kind,
                            "metadata": {
                                "resourceVersion": str(snapshot_rv),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
            else:
                replayed = self._replay(res, int(since), snapshot_rv) if since.isdigit() else None
                if replayed is None:
                    yield {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "code": 410,
                            "reason": "Expired",
                            "message": "too old resource version",
                        },
                    }
                    return
                for event in replayed:
                    if self._wants(request, event["object"]):
                        yield event
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
            try:
                async with asyncio.timeout(timeout):
                    async for event in bus.stream(since=marker):
                        obj = event["object"]
                        if int(obj["metadata"].get("resourceVersion", 0)) <= snapshot_rv:
                            continue
                        if self._wants(request, obj):
                            yield event
            except TimeoutError:
                return
        finally:
            await bus.unmark(marker)

    async def _serve_version(self, request: kmock.Request) -> Any:
        doc = await super()._serve_version(request)
        doc["groupVersion"] = doc["groupVersion"].lstrip("/")  # kmock 0.8 says "/v1" for core
        for r in doc["resources"]:
            if "/" in r["name"]:
                r["shortNames"] = []  # avoid kubectl ambiguity warnings
                r["categories"] = []
        return doc

    # -------------------------------------------------------------------------- openapi
    def _gvs(self) -> dict[str, list[kmock.resource]]:
        gvs: dict[str, list[kmock.resource]] = {}
        for res in self.resources:
            path = f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"
            gvs.setdefault(path, []).append(res)
        return gvs

    async def _serve_openapi_root(self, request: kmock.Request) -> Any:
        return {
            "paths": {
                gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._rv}"} for gv in self._gvs()
            }
        }

    async def _serve_openapi_gv(self, request: kmock.Request) -> Any:
        gv = request.url.path.removeprefix("/openapi/v3/")
        paths = {}
        for res in self._gvs().get(gv, []):
            info = self.resources[res]
            gvk = {"group": res.group, "version": res.version, "kind": info.kind}
            ns = "/namespaces/{namespace}" if info.namespaced else ""
            paths[f"/{gv}{ns}/{res.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "kube-emu", "version": "v1"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    # ---------------------------------------------------------- fake workload controller
    async def _reconcile_deployments(self, ns: str | None) -> None:
        for dkey, dep in list(self._iter_live(DEPLOYMENTS, ns)):
            if dep["metadata"].get("deletionTimestamp"):
                continue
            uid = dep["metadata"]["uid"]
            pods = [
                (k, p)
                for k, p in self._iter_live(PODS, dkey[1])
                if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            ]
            alive = [(k, p) for k, p in pods if not p["metadata"].get("deletionTimestamp")]
            want = int(dep.get("spec", {}).get("replicas", 1))
            tmpl = dep.get("spec", {}).get("template", {})
            for _ in range(want - len(alive)):
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                name = f"{dkey[2]}-{suffix}"
                pod = self._fresh_meta(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": name,
                            "namespace": dkey[1],
                            "labels": dict(tmpl.get("metadata", {}).get("labels") or {}),
                            "annotations": dict(tmpl.get("metadata", {}).get("annotations") or {}),
                            "ownerReferences": [
                                {
                                    "apiVersion": "apps/v1",
                                    "kind": "Deployment",
                                    "name": dkey[2],
                                    "uid": uid,
                                    "controller": True,
                                    "blockOwnerDeletion": True,
                                }
                            ],
                        },
                        "spec": copy.deepcopy(tmpl.get("spec") or {}),
                        "status": {"phase": "Pending"},
                    }
                )
                pkey = (PODS, dkey[1], name)
                await self._store_create(pkey, pod)
                self._later(self.ready_delay, self._kubelet_start, pkey, pod["metadata"]["uid"])
            if len(alive) > want:

                def victim_order(
                    kp,
                ):  # ReplicaSet order: not-ready first, lower deletion cost, newest
                    p = kp[1]
                    cost = int((p["metadata"].get("annotations") or {}).get(DELETION_COST, 0))
                    ready = p.get("status", {}).get("phase") == "Running"
                    return (ready, cost, -int(p["metadata"]["resourceVersion"]))

                for pkey, _ in sorted(alive, key=victim_order)[: len(alive) - want]:
                    await self._store_delete(pkey)
            await self._update_deployment_status(dkey)

    async def _update_deployment_status(self, dkey: Key) -> None:
        dep = self._live(dkey)
        if dep is None:
            return
        uid = dep["metadata"]["uid"]
        pods = [
            p
            for _, p in self._iter_live(PODS, dkey[1])
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
            and not p["metadata"].get("deletionTimestamp")
        ]
        ready = sum(1 for p in pods if p.get("status", {}).get("phase") == "Running")
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, int(dep.get("spec", {}).get("replicas", 1)) - ready),
        }
        status = {k: v for k, v in status.items() if v or k in ("observedGeneration", "replicas")}
        if dep.get("status") != status:
            new = copy.deepcopy(dep)
            new["status"] = status
            await self._store_replace(dkey, new)

    async def _kubelet_start(self, pkey: Key, uid: str) -> None:
        pod = self._live(pkey)
        if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp"):
            return
        new = copy.deepcopy(pod)
        new["status"] = {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "startTime": _now(),
        }
        await self._store_replace(pkey, new)

    async def _kubelet_stop(self, pkey: Key, uid: str) -> None:
        pod = self._live(pkey)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        new = copy.deepcopy(pod)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers", []) if f != "kube-emu/kubelet"
        ]
        await self._store_replace(pkey, new)


@contextlib.asynccontextmanager
async def serve(port: int = 0, host: str = "127.0.0.1", **kwargs: Any):
    """`async with serve() as (emu, srv): ...`  -- srv.url is the API server URL."""
    async with KubeEmulator(**kwargs) as emu, kmock.Server(emu, host=host, port=port) as srv:
        yield emu, srv


class EmuThread:
    """Run the emulator in a background thread (for sync tests, KopfRunner, kubectl)."""

    def __init__(self, port: int = 0, **kwargs: Any) -> None:
        import threading

        self._kwargs, self._port = kwargs, port
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.emu: KubeEmulator | None = None
        self.url: str = ""

    def _main(self) -> None:
        async def main():
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serve(self._port, **self._kwargs) as (emu, srv):
                self.emu, self.url = emu, str(srv.url).rstrip("/")
                self._ready.set()
                await self._stop.wait()

        asyncio.run(main())

    def call(self, fn, *args):
        """Run fn(*args) (sync or async) inside the emulator's loop, e.g. to inspect emu.objects."""

        async def wrapper():
            r = fn(*args)
            return await r if asyncio.iscoroutine(r) else r

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(10)

    def kubeconfig(self, path: str) -> str:
        with open(path, "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: '{self.url}'}}}}]
contexts: [{{name: emu, context: {{cluster: emu, user: emu, namespace: default}}}}]
current-context: emu
users: [{{name: emu, user: {{token: dummy}}}}]
""")
        return path

    def __enter__(self) -> EmuThread:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


if (
    __name__ == "__main__"
):  # python kube_emu.py PORT  -> standalone API server for kubectl / kopf run
    import sys

    async def _main() -> None:
        async with serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as (_emu, srv):
            print(f"kube-emu listening on {srv.url}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(_main())
