"""Contract-test helpers for the simulators: vendor OpenAPI specs and recorded fixtures.

Generic over OpenAPI 3 (JSON or YAML) and Swagger 2; used for Okta, Jira, Confluence and
Bitbucket. Needs Debian's python3-yaml (only for YAML specs) and python3-jsonschema.

Specs
    load_spec(path) -> dict                       parsed spec, cached per path
    find_operation(spec, method, path) -> (template, operation) or (None, None)
        `path` is a template ("/api/v1/users/{id}") or a concrete request path
        ("/api/v1/users/00u1", "/rest/api/2/user"); a path prefix from the spec's `servers`
        (e.g. "/rest" of "http://{baseurl}/rest") is stripped when needed. Literal segments
        beat parameters when several templates match.
    response_schema(spec, method, path, status) -> schema or None
        the JSON schema of that response (status exact, then "4XX"-style, then "default");
        None when the operation declares no JSON body for it. Raises KeyError when the
        operation or the status is not in the spec.
    resolve(spec, schema, depth=8) -> schema with every $ref inlined (recursion cut at
        `depth` levels of nested refs, where the $ref is left in place); for reading/tests.
    lenient(schema) -> a copy following specs/README.md: every type also allows null, extra
        properties are allowed, enums are open (unknown values accepted), oneOf becomes anyOf
        (overlapping lenient branches would otherwise fail "exactly one"); `required` is kept
        unless drop_required=True (real services may omit null properties).
    validate(spec, method, path, status, body, drop_required=False) -> [error strings]
        validates a parsed JSON body against the lenient response schema; [] means valid.
        $refs are resolved through a definitions table, so recursive schemas work.

Fixtures (tests/data/fixtures/<product>/*.json)
    load_fixture(path) -> [(request, response)] normalised: request {"method","url"} and
        response {"status", "headers": [(name, value)] with repeated headers as separate
        items, "body"}; understands vcrpy and go-vcr recordings and bare {"body": ...}.
    field_paths(obj) -> set of dotted field paths ("[]" for array items, e.g. "[].profile.login")
    compare_to_fixture(actual_headers, actual_body, fixture_response, headers=(...),
                       ignore=()) -> [problem strings]
        every field path of the fixture body must exist in the actual body (paths under a
        prefix in `ignore` are skipped; a fixture path below a null/absent parent is not
        required when the actual value is null), values that are non-null on both sides
        must have the same JSON type, and for each header name in `headers` that the fixture
        has, the actual response must have it in the same form: same number of lines per
        relation for `link` (one relation per line, `<absolute URL>; rel="name"`), integer
        for x-rate-limit-*, RFC 7231 date for `date`, media type for `content-type`.
"""

import copy
import json
import re
from email.utils import parsedate_to_datetime

__all__ = ["load_spec", "find_operation", "response_schema", "resolve", "lenient",
           "validate", "load_fixture", "field_paths", "compare_to_fixture", "header_form"]

_SPECS = {}
_VALIDATORS = {}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


# ------------------------------------------------------------------------------------------
# Specs

def load_spec(path):
    """Parse a JSON or YAML spec (cached)."""
    if path not in _SPECS:
        with open(path, "rb") as fh:
            data = fh.read()
        if path.endswith(".json"):
            spec = json.loads(data.decode("utf-8"))
        else:
            import yaml
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            spec = yaml.load(data, Loader=loader)
        _SPECS[path] = spec
    return _SPECS[path]


def _server_prefixes(spec):
    out = []
    for s in spec.get("servers", []) or []:
        url = s.get("url", "")
        m = re.match(r"^(?:[a-z]+:)?//[^/]*(/.*)?$", url)
        p = (m.group(1) if m else url) or ""
        p = p.rstrip("/")
        if p and p.startswith("/"):
            out.append(p)
    bp = spec.get("basePath")  # Swagger 2
    if bp and bp != "/":
        out.append(bp.rstrip("/"))
    return out


def _template_regex(t):
    parts = re.split(r"(\{[^}]+\})", t)
    rx = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile("^" + rx + "$")


def find_operation(spec, method, path):
    """(template, operation) for `method` and `path`, or (None, None)."""
    paths = spec.get("paths", {})
    m = method.lower()
    path = path.split("?", 1)[0]
    candidates = [path] + [path[len(p):] for p in _server_prefixes(spec)
                           if path.startswith(p + "/")]
    for cand in candidates:
        if cand in paths and m in paths[cand]:
            return cand, paths[cand][m]
    for cand in candidates:
        best = None
        for t, item in paths.items():
            if m not in item or "{" not in t:
                continue
            if _template_regex(t).match(cand):
                score = len(re.sub(r"\{[^}]+\}", "", t))  # more literal text wins
                if best is None or score > best[0]:
                    best = (score, t, item[m])
        if best:
            return best[1], best[2]
    return None, None


def _json_schema_of(resp):
    content = resp.get("content")
    if content is None:  # Swagger 2
        return resp.get("schema")
    for ct in sorted(content, key=lambda c: (not c.startswith("application/json"),
                                             "json" not in c, c)):
        if "json" in ct or ct == "*/*":
            return content[ct].get("schema")
    return None


def response_schema(spec, method, path, status):
    """The declared JSON schema of (method, path, status); see the module docstring."""
    t, op = find_operation(spec, method, path)
    if op is None:
        raise KeyError("no operation %s %s in spec" % (method.upper(), path))
    responses = op.get("responses", {})
    s = str(status)
    resp = responses.get(s) or responses.get(int(s) if s.isdigit() else s) \
        or responses.get(s[0] + "XX") or responses.get(s[0] + "xx") or responses.get("default")
    if resp is None:
        raise KeyError("%s %s declares no response %s (has %s)"
                       % (method.upper(), t, s, ", ".join(map(str, responses))))
    resp = _deref(spec, resp)
    return _json_schema_of(resp)


def _lookup(spec, ref):
    if not ref.startswith("#/"):
        raise KeyError("external $ref not supported: %s" % ref)
    node = spec
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def _deref(spec, node):
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = _lookup(spec, node["$ref"])
        seen += 1
        if seen > 50:
            raise ValueError("$ref loop")
    return node


def resolve(spec, schema, depth=8):
    """`schema` with $refs inlined (depth-limited for recursive schemas)."""
    def walk(node, d):
        if isinstance(node, dict):
            if "$ref" in node and isinstance(node["$ref"], str):
                if d >= depth:
                    return dict(node)
                return walk(_lookup(spec, node["$ref"]), d + 1)
            return {k: walk(v, d) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, d) for v in node]
        return node
    return walk(schema, 0)


_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "additionalItems", "contains",
               "propertyNames")
_DROP = ("example", "examples", "default", "discriminator", "xml", "externalDocs",
         "readOnly", "writeOnly", "deprecated", "format", "nullable", "x-nullable",
         "description", "title")


def lenient(schema, drop_required=False, _ref_rewrite=None):
    """A lenient copy of an OpenAPI schema as a JSON Schema (see module docstring)."""
    def walk(node):
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k.startswith("x-") or k in _DROP or k == "enum":
                continue
            if k == "$ref" and isinstance(v, str):
                out[k] = _ref_rewrite(v) if _ref_rewrite else v
            elif k in _SCHEMA_MAPS and isinstance(v, dict):
                out[k] = {pk: walk(pv) for pk, pv in v.items()}
            elif k in _SCHEMA_LISTS and isinstance(v, list):
                out["anyOf" if k == "oneOf" else k] = [walk(x) for x in v]
            elif k == "additionalProperties":
                continue  # extra properties are always allowed
            elif k in _SCHEMA_ONE:
                out[k] = [walk(x) for x in v] if isinstance(v, list) else walk(v)
            elif k == "required":
                if not drop_required:
                    out[k] = v
            elif k == "type":
                types = v if isinstance(v, list) else [v]
                if "null" not in types:
                    types = list(types) + ["null"]
                out[k] = types
            else:
                out[k] = v
        if "$ref" in out:
            # JSON Schema draft 7 ignores siblings of $ref; allow null explicitly
            return {"anyOf": [{"$ref": out["$ref"]}, {"type": "null"}]}
        for comb in ("allOf", "anyOf"):
            if comb in out and "type" not in out:
                out = {"anyOf": [out, {"type": "null"}]}
                break
        return out
    return walk(schema)


def _validator(spec, schema, drop_required):
    import jsonschema
    key = (id(spec), json.dumps(schema, sort_keys=True), drop_required)
    v = _VALIDATORS.get(key)
    if v is not None:
        return v

    def rewrite(ref):
        return "#/definitions/" + ref[2:].replace("/", "__")

    # Collect every schema reachable through $ref into a flat definitions table.
    defs = {}
    todo = [schema]
    while todo:
        node = todo.pop()
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, dict):
                r = n.get("$ref")
                if isinstance(r, str) and r.startswith("#/"):
                    name = r[2:].replace("/", "__")
                    if name not in defs:
                        target = _lookup(spec, r)
                        defs[name] = None
                        todo.append(target)
                        defs[name] = target
                stack.extend(v for v in n.values() if isinstance(v, (dict, list)))
            elif isinstance(n, list):
                stack.extend(v for v in n if isinstance(v, (dict, list)))
    root = lenient(schema, drop_required, rewrite)
    root = dict(root) if isinstance(root, dict) else root
    root["definitions"] = {k: lenient(v, drop_required, rewrite) for k, v in defs.items()}
    v = jsonschema.Draft7Validator(root)
    _VALIDATORS[key] = v
    return v


def validate(spec, method, path, status, body, drop_required=False):
    """Validate the parsed JSON `body` leniently; returns a list of error strings."""
    schema = response_schema(spec, method, path, status)
    if schema is None:
        return [] if body in (None, b"", "") else \
            ["%s %s %s declares no JSON body" % (method.upper(), path, status)]
    v = _validator(spec, schema, drop_required)
    from jsonschema.exceptions import best_match
    errs = []
    for e in sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path)):
        while e.context:  # descend into anyOf branches (the null branch is never the answer)
            sub = [x for x in e.context if "None is not of type" not in x.message
                   and "is not of type 'null'" not in x.message]
            e = best_match(sub or e.context)
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        errs.append("%s: %s" % (where, e.message[:300]))
        if len(errs) >= 20:
            break
    return errs


# ------------------------------------------------------------------------------------------
# Fixtures

def _norm_headers(h):
    out = []
    if isinstance(h, dict):
        for k, v in h.items():
            for x in (v if isinstance(v, list) else [v]):
                out.append((k, str(x)))
    elif isinstance(h, list):
        out = [(k, str(v)) for k, v in h]
    return out


def load_fixture(path):
    """[(request, response)] from a recorded fixture file (see module docstring)."""
    with open(path, "rb") as fh:
        d = json.loads(fh.read().decode("utf-8"))
    pairs = []
    if "interactions" in d:
        items = d["interactions"]
    elif "response" in d:
        items = [d]
    else:
        items = [{"request": {}, "response": {"status": 200, "headers": {},
                                              "body": d.get("body")}}]
    for it in items:
        req = it.get("request", {}) or {}
        resp = it.get("response", {}) or {}
        pairs.append(({"method": req.get("method"), "url": req.get("url"),
                       "headers": _norm_headers(req.get("headers", {}))},
                      {"status": resp.get("status"),
                       "headers": _norm_headers(resp.get("headers", {})),
                       "body": resp.get("body")}))
    return pairs


def field_paths(obj, prefix=""):
    """Dotted field paths of a JSON value; array items are merged under "[]"."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            p = prefix + "." + k if prefix else k
            out.add(p)
            out |= field_paths(v, p)
    elif isinstance(obj, list):
        for v in obj:
            out |= field_paths(v, prefix + "[]")
    return out


def _values_at(obj, path):
    """All values found at a dotted path (with [] for arrays); missing parents are skipped."""
    toks = re.findall(r"\[\]|[^.\[\]]+", path)
    cur = [obj]
    for t in toks:
        nxt = []
        for c in cur:
            if t == "[]":
                if isinstance(c, list):
                    nxt.extend(c)
            elif isinstance(c, dict) and t in c:
                nxt.append(c[t])
        cur = nxt
    return cur


def _present(obj, path):
    """True when `path` exists in obj, or when some parent on the way is null (a null parent
    legitimately has no children) or an empty array."""
    toks = re.findall(r"\[\]|[^.\[\]]+", path)
    cur = [obj]
    for t in toks:
        nxt = []
        for c in cur:
            if c is None:
                return True
            if t == "[]":
                if isinstance(c, list):
                    if not c:
                        return True
                    nxt.extend(c)
            elif isinstance(c, dict) and t in c:
                nxt.append(c[t])
        if not nxt:
            return False
        cur = nxt
    return True


def _jtype(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


_LINK_RX = re.compile(r'^<(https?://[^>]+)>;\s*rel="([a-z]+)"$')


def header_form(name, value):
    """A short description of a header value's form, used to compare with a fixture."""
    n = name.lower()
    if n == "link":
        rels = []
        for part in value.split(", <") if value.count("rel=") > 1 else [value]:
            m = _LINK_RX.match(part if part.startswith("<") else "<" + part)
            rels.append(m.group(2) if m else "malformed")
        return "link:" + ",".join(rels)
    if n.startswith("x-rate-limit-") or n.startswith("x-ratelimit-") or n == "retry-after":
        return "int" if re.fullmatch(r"\d+", value) else "not-int"
    if n == "date":
        try:
            parsedate_to_datetime(value)
            return "http-date"
        except (TypeError, ValueError):
            return "not-date"
    if n == "content-type":
        return value.split(";", 1)[0].strip().lower()
    return "present"


def compare_to_fixture(actual_headers, actual_body, fixture_response,
                       headers=("content-type", "date", "link", "x-rate-limit-limit",
                                "x-rate-limit-remaining", "x-rate-limit-reset",
                                "x-okta-request-id"),
                       ignore=()):
    """Problems (strings) between an actual response and a recorded one; [] when alike.
    actual_headers: list of (name, value) as received (repeated headers as separate items)."""
    problems = []
    fx_body = fixture_response.get("body")
    # Bodies: field names and types.
    if isinstance(fx_body, list) and isinstance(actual_body, list) and fx_body and not actual_body:
        problems.append("fixture body has items, actual body is empty (nothing to compare)")
    missing = []
    for p in sorted(field_paths(fx_body)):
        if any(p == i or p.startswith(i + ".") or p.startswith(i + "[") for i in ignore):
            continue
        if any(p.startswith(m + ".") or p.startswith(m + "[") for m in missing):
            continue
        if not _present(actual_body, p):
            problems.append("field %s missing" % p)
            missing.append(p)
            continue
        ft = {_jtype(v) for v in _values_at(fx_body, p)} - {None}
        at = {_jtype(v) for v in _values_at(actual_body, p)} - {None}
        if ft and at and not (at <= ft or ft <= at):
            problems.append("field %s: type %s, fixture has %s" % (p, sorted(at), sorted(ft)))
    if _jtype(fx_body) != _jtype(actual_body) and fx_body is not None:
        problems.append("body is %s, fixture has %s" % (_jtype(actual_body), _jtype(fx_body)))
    # Headers: presence and form.
    fx = fixture_response.get("headers", [])
    for name in headers:
        n = name.lower()
        fvals = [v for k, v in fx if k.lower() == n]
        if not fvals:
            continue
        avals = [v for k, v in actual_headers if k.lower() == n]
        if not avals:
            problems.append("header %s missing" % name)
            continue
        if n == "link":
            for v in avals:
                f = header_form(n, v)
                if "," in f or "malformed" in f:
                    problems.append("link header line %r: want one relation per line "
                                    "as <absolute URL>; rel=\"name\"" % v)
            continue
        fforms = {header_form(n, v) for v in fvals}
        aforms = {header_form(n, v) for v in avals}
        if n == "content-type":
            if not aforms <= fforms:
                problems.append("content-type %s, fixture has %s" % (sorted(aforms),
                                                                     sorted(fforms)))
        elif aforms != fforms:
            problems.append("header %s form %s, fixture has %s" % (name, sorted(aforms),
                                                                   sorted(fforms)))
    return problems


def deep_copy(x):
    """Convenience for tests that mutate fixture bodies."""
    return copy.deepcopy(x)
