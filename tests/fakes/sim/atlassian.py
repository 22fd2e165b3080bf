"""Shared machinery of the Atlassian Data Center simulators (jira.py, confluence.py, bitbucket.py).

Provides:
  AtlassianProduct   Product subclass: authentication, the XSRF rule, optional token-bucket rate
                     limiting, method+path routing and per-product error bodies. Subclasses fill
                     in `routes`, the error constructors and the state methods.
  ApiError           raise from a route handler to answer with the product's error body.
  TokenBucket        the rate limiter (simulated clock, continuous refill).
  int_arg(), bool_arg(), fold()   query-parameter parsing and case folding helpers.

Uses sim.common (Request, Response, json_response, Product). Every method here runs with
Server.lock held (common.py contract), so no locking of its own.

Behaviour as the vendors document it:
  * Credentials: HTTP Basic admin:admin, or "Authorization: Bearer
    test-token" (a personal access token owned by admin). Anything else is the product's 401.
  * XSRF (reference 1.1): every POST/PUT/DELETE must carry "X-Atlassian-Token: no-check",
    otherwise 403 with the plain-text body "XSRF check failed". The reference gives this as a
    cross-product rule, so all three products enforce it. Authentication is checked first (the
    servlet filters run before the REST XSRF filter), so bad credentials give 401, not 403.
  * A Content-Type header on a request without a body (any method) is a 400 in the product's
    error shape, "body cannot be empty when content-type is set", as strict servers answer:
    a client sends a media type only with a body. Checked after authentication and XSRF.
  * Rate limiting (reference 1.2): faults "rate_limit_per_min" = N switches on a token bucket
    refilled continuously at N tokens per 60 s, holding at most "rate_limit_burst" tokens
    (an extra fault of these simulators; default N). Only authenticated API requests take
    tokens. Jira (and, UNCONFIRMED, Bitbucket) send X-RateLimit-Limit / -Remaining /
    -Interval-Seconds / -FillRate and a lower-case "retry-after" on every counted response
    (retry-after 0 while tokens remain); an empty bucket answers 429 with retry-after = seconds
    until the next token. Confluence's headers are UNCONFIRMED: it sends only Retry-After on 429.
  * Fault "max_inflight" = N (default null: no limit): a request arriving while more than N
    API requests are being served (latency_ms included) is refused with 503 in the product's
    error shape, without acting on it. Tests use it to see a client's concurrency from the
    server's side instead of timing it.
  * Paging faults (every paged list of the three products; see page_window()): "page_cap" N
    applies a page size of at most N (and reports it), "page_short" makes every page but the
    last hold one item fewer than the page size (the next page starts after the items given),
    "page_lazy_last" says "last page" only on a page with fewer items than the page size (an
    exactly full last page is followed by an empty one), "page_no_flags" leaves out the
    optional last-page flags (Jira isLast, Bitbucket isLastPage). Defaults: off.
  * Fault "ratelimit_header_prefix" (Jira and Bitbucket): "X-RateLimit" (default, GA) or
    "X-RateLimiting" (the Jira 8.6 EAP names, reference 1.2 / 7.9) for every rate-limit header
    but retry-after.
  * Injected 429s (faults fail_rate + fail_status 429) look like a real empty bucket: the
    product's 429 body plus retry-after = fault "fail_retry_after" (default 1 s) and, for Jira
    and Bitbucket, X-RateLimit-Remaining 0 with the other X-RateLimit-* headers (Limit and
    FillRate from rate_limit_burst / rate_limit_per_min when set, else 100 per 60 s; the value
    is a decision, Atlassian publishes no default).
  * Bad credentials (reference 1.3: "401/403 may come back as HTML"): Jira and Confluence
    answer wrong Basic or Bearer credentials with an HTML 401 page (text/html;charset=UTF-8,
    title "Unauthorized (401)") and X-Seraph-LoginReason: AUTHENTICATED_FAILED by default; fault
    "html_auth_errors": false selects their JSON error body instead. Missing credentials on a
    REST resource stay a JSON 401 (the REST layer answers those itself). Bitbucket always
    answers JSON (its REST layer owns authentication).
"""

import base64
import binascii
import math
import re

from sim.common import Product, Response, json_response

ADMIN = "admin"
ADMIN_PASSWORD = "admin"
BEARER_TOKEN = "test-token"


class ApiError(Exception):
    """A product error: status plus product-specific detail. Products turn it into their own
    error body in error_response(). `field` names the request field at fault (Jira `errors`
    map, Bitbucket `context`)."""

    def __init__(self, status, message, field=None, exception=None):
        Exception.__init__(self, message)
        self.status = status
        self.message = message
        self.field = field
        self.exception = exception


def fold(s):
    """Case-insensitive identity of a user or group name (Atlassian directories compare names
    case-insensitively)."""
    return s.casefold() if isinstance(s, str) else s


def int_arg(req, name, default, minimum=0, maximum=None):
    """Integer query parameter `name`, `default` when absent or empty. A value that is not an
    integer, or below `minimum`, raises ApiError(400). Values above `maximum` are clamped (the
    products silently cap page sizes)."""
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, "Invalid value '%s' for parameter '%s'" % (raw, name), field=name)
    if v < minimum:
        raise ApiError(400, "Parameter '%s' must be at least %d" % (name, minimum), field=name)
    if maximum is not None and v > maximum:
        v = maximum
    return v


def bool_arg(req, name, default):
    """Boolean query parameter: "true"/"false" (any case); absent or empty gives `default`.
    Anything else counts as false, as Jersey's Boolean.valueOf does."""
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    return raw.lower() == "true"


class TokenBucket:
    """Token bucket on the simulated clock. configure() is called with the current faults
    before each use; a change of settings refills the bucket."""

    def __init__(self):
        self.config = None
        self.tokens = 0.0
        self.stamp = 0.0

    def configure(self, per_min, burst, now):
        cfg = (per_min, burst)
        if cfg != self.config:
            self.config = cfg
            self.tokens = float(self.capacity())
            self.stamp = now

    def enabled(self):
        return self.config is not None and self.config[0] is not None

    def capacity(self):
        per_min, burst = self.config
        if burst is not None:
            return burst
        return per_min or 0

    def rate(self):
        """Tokens per second."""
        return (self.config[0] or 0) / 60.0

    def take(self, now):
        """Refill up to `now`, then try to take one token. Returns (allowed, retry_after_s)."""
        cap = self.capacity()
        if now > self.stamp:
            self.tokens = min(float(cap), self.tokens + (now - self.stamp) * self.rate())
        self.stamp = max(self.stamp, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True, 0
        r = self.rate()
        if r <= 0:
            return False, 60
        return False, max(1, int(math.ceil((1.0 - self.tokens) / r)))

    def remaining(self):
        return int(math.floor(self.tokens))


def plain_response(status, text, headers=None):
    hs = list(headers or [])
    hs.append(("Content-Type", "text/plain;charset=UTF-8"))
    return Response(status, hs, text.encode("utf-8"))


class AtlassianProduct(Product):
    """Common request pipeline: authenticate, XSRF, route, map ApiError to the product's body.

    Subclasses provide:
      prefixes       tuple of path prefixes the REST API lives under (e.g. "/rest/api/2")
      routes         list of (METHOD, regex on the path after the prefix, method name)
      anonymous      set of method names that may be called without credentials
      error_response(status, ApiError) -> Response    the product's error body
      unauthorized_response(req, bad_credentials) -> Response
      not_found_response(req) -> Response              unknown resource path
      ratelimit_headers: bool   whether X-RateLimit-* headers are sent (Jira, Bitbucket)
    """

    prefixes = ()
    routes = []
    anonymous = frozenset()
    ratelimit_headers = True
    extra_faults = {"rate_limit_burst": None, "ratelimit_header_prefix": "X-RateLimit",
                    "fail_retry_after": 1, "html_auth_errors": True, "max_inflight": None,
                    "page_cap": None, "page_short": False, "page_lazy_last": False,
                    "page_no_flags": False, "echo_credentials": False}
    html_auth = False  # Jira and Confluence: HTML 401 for bad credentials (html_auth_errors)

    def __init__(self, server):
        Product.__init__(self, server)
        self.bucket = TokenBucket()
        self._counted = None  # (req, headers) of the request throttle() charged
        self._compiled = [(m, re.compile(p + r"\Z"), name) for m, p, name in self.routes]

    # -- faults ----------------------------------------------------------------------------
    def validate_fault(self, key, value):
        if key == "rate_limit_burst":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError("rate_limit_burst must be an integer >= 1 or null")
        if key == "ratelimit_header_prefix":
            if value not in ("X-RateLimit", "X-RateLimiting"):
                raise ValueError('ratelimit_header_prefix must be "X-RateLimit" or '
                                 '"X-RateLimiting"')
        if key == "fail_retry_after":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("fail_retry_after must be an integer >= 0")
        if key == "page_cap":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError("page_cap must be an integer >= 1 or null")
        if key in ("page_short", "page_lazy_last", "page_no_flags"):
            if not isinstance(value, bool):
                raise ValueError("%s must be true or false" % key)
        if key == "max_inflight":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError("max_inflight must be an integer >= 1 or null")
        if key in ("html_auth_errors", "echo_credentials"):
            if not isinstance(value, bool):
                raise ValueError("%s must be true or false" % key)
        return value

    def page_window(self, start, n, count):
        """Paging under the paging faults, for a page asked at `start` with page size `n`
        over `count` items. Returns (n, end, last): the page size the server applies, the
        end of the items it returns (items[start:end]; the next page starts at `end`) and
        whether it says this is the last page. The spec's paging rules allow every one of
        these readings:
          page_cap N        the server applies min(n, N) and reports that size
          page_short        a page that is not the last holds one item fewer than the page
                            size (the next page starts after the items given)
          page_lazy_last    only a page with fewer items than the page size says it is the
                            last: an exactly full last page is followed by an empty last one
                            (with page_short every short page would say "last": do not
                            combine the two)
        (page_no_flags, leaving the optional last-page flags out, is applied by each list.)"""
        f = self.server.faults
        if f.get("page_cap"):
            n = min(n, f["page_cap"])
        take = n
        if f.get("page_short") and n > 1 and start + n < count:
            take = n - 1
        end = max(start, min(start + take, count))
        last = (end - start) < n if f.get("page_lazy_last") else end >= count
        return n, end, last

    def faults_changed(self):
        self.bucket.config = None  # new settings: full bucket on next use

    # -- authentication ----------------------------------------------------------------------
    def authenticate(self, req):
        """"admin" when the credentials are good, None when there are none, False when they
        are present but wrong."""
        h = req.headers.get("authorization")
        if h is None:
            return None
        scheme, _, value = h.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                user, sep, pw = base64.b64decode(value, validate=True).decode("utf-8") \
                    .partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False
            return ADMIN if sep and user == ADMIN and pw == ADMIN_PASSWORD else False
        if scheme.lower() == "bearer":
            return ADMIN if value == BEARER_TOKEN else False
        return False

    # -- pipeline ----------------------------------------------------------------------------
    def _route(self, req):
        """(handler name, match groups) or (None, reason) where reason is 404 or 405."""
        sub = None
        for p in self.prefixes:
            if req.path == p or req.path.startswith(p + "/"):
                sub = req.path[len(p):] or "/"
                break
        if sub is None:
            return None, 404
        allowed = False
        for m, rx, name in self._compiled:
            mo = rx.match(sub)
            if mo:
                if m == req.method:
                    return name, mo.groups()
                allowed = True
        return None, 405 if allowed else 404

    def throttle(self, req):
        self._counted = None
        f = self.server.faults
        cap = f.get("max_inflight")
        if cap is not None and self.server.inflight > cap:
            # a saturated node behind the load balancer: the request was not acted on
            return self.error_response(ApiError(503, "Too many concurrent requests: at most %d "
                                                     "in flight." % cap))
        per_min = f.get("rate_limit_per_min")
        if per_min is None or self.authenticate(req) != ADMIN:
            return None
        now = self.server.now()
        self.bucket.configure(per_min, f.get("rate_limit_burst"), now)
        ok, retry = self.bucket.take(now)
        headers = self.rate_headers(retry)
        self._counted = (req, headers)
        if ok:
            return None
        return self.too_many_response(req, retry)

    def rate_headers(self, retry, limit=None, remaining=None, fill=None):
        """Rate-limit headers of a counted response (bucket values unless given)."""
        if not self.ratelimit_headers:
            return [("Retry-After", str(retry))] if retry else []
        if limit is None:
            limit, remaining, fill = (self.bucket.capacity(), self.bucket.remaining(),
                                      self.bucket.config[0])
        p = self.server.faults.get("ratelimit_header_prefix") or "X-RateLimit"
        return [(p + "-Limit", str(limit)),
                (p + "-Remaining", str(remaining)),
                (p + "-Interval-Seconds", "60"),
                (p + "-FillRate", str(fill)),
                ("retry-after", str(retry))]

    def too_many_response(self, req, retry):
        return self.error_response(ApiError(429, "Rate limit exceeded."))

    def finish(self, req, resp):
        c = self._counted
        if c is not None and c[0] is req:
            resp.headers.extend(c[1])
        self._counted = None
        return resp

    def fault_response(self, req, status):
        if status == 429:
            f = self.server.faults
            retry = f.get("fail_retry_after", 1)
            per_min = f.get("rate_limit_per_min")
            fill = per_min if per_min is not None else 100
            limit = f.get("rate_limit_burst") or fill
            resp = self.too_many_response(req, retry)
            hs = self.rate_headers(retry, limit, 0, fill)
            if not self.ratelimit_headers:
                hs = [("Retry-After", str(retry))]
            resp.headers.extend(hs)
            return resp
        if self.server.faults.get("echo_credentials"):
            # a proxy or servlet filter that quotes the request in its error page
            return plain_response(status, "Upstream error for %s %s (Authorization: %s; Cookie: %s)"
                                  % (req.method, req.path, req.headers.get("authorization", "-"),
                                     req.headers.get("cookie", "-")))
        return self.error_response(ApiError(status, "Injected failure: the server could not "
                                                    "process the request."))

    def handle(self, req):
        self.before_request(req)
        name, groups = self._route(req)
        who = self.authenticate(req)
        if who is False and self.html_auth and self.server.faults.get("html_auth_errors", True):
            return self.html_unauthorized(req)
        if who is False or (who is None and name not in self.anonymous):
            return self.unauthorized_response(req, who is False)
        if name is None:
            if groups == 405:
                return Response(405, [("Allow", ", ".join(sorted(
                    {m for m, rx, _ in self._compiled if rx.match(self._sub(req))})))])
            return self.not_found_response(req)
        if req.method in ("POST", "PUT", "DELETE", "PATCH") and \
                (req.headers.get("x-atlassian-token") or "").strip().lower() != "no-check":
            return plain_response(403, "XSRF check failed")
        if "content-type" in req.headers and not req.body:
            # A declared media type with nothing to read: strict JAX-RS stacks and
            # spec-conformant reimplementations refuse it, so the simulators do too.
            return self.error_response(ApiError(400, "body cannot be empty when content-type "
                                                     "is set"))
        write = req.method not in ("GET", "HEAD")
        if write:
            # a write handler answers with views of the state it made (Bitbucket's update and
            # rename return the user): none built before it may serve them
            self.changed()
        try:
            return getattr(self, name)(req, *groups)
        except ApiError as e:
            return self.error_response(e)
        finally:
            if write:
                self.changed()  # whatever a write handler did, its views are rebuilt

    def _sub(self, req):
        for p in self.prefixes:
            if req.path.startswith(p + "/"):
                return req.path[len(p):]
        return req.path

    def before_request(self, req):
        """Hook run at the start of every API request (Confluence advances long tasks)."""

    # -- views of the state, built once between changes ----------------------------------------
    def memo(self, key, make):
        """make() computed once and reused until the state next changes, so that a page of a
        listing costs what it returns, not a sort of everything (at 100,000 users a sort per
        page made the simulator the bottleneck of every benchmark). The state changes with
        every API request that is not a GET or HEAD (handle() calls changed() before it and
        after it, even when it failed), a state upload (load_state calls changed()) and a
        change a product makes on its own (Confluence's long tasks): each calls changed().
        A memoised value is shared: callers never modify it."""
        m = self.__dict__.get("_memo")
        if m is None:
            m = self._memo = {}
        v = m.get(key)
        if v is None:
            v = m[key] = make()
        return v

    def changed(self):
        """Forget every memoised view (see memo())."""
        self._memo = {}

    def body_object(self, req):
        """The JSON body as an object; 400 in the product's shape when it is missing or not
        a JSON object (Jersey cannot map it to the bean)."""
        if not req.body:
            raise ApiError(400, "No content to map to Object due to end of input")
        try:
            b = req.json()
        except ValueError:
            raise ApiError(400, "Unexpected character in the request body: not valid JSON")
        if not isinstance(b, dict):
            raise ApiError(400, "Can not deserialize the request body: expected a JSON object")
        return b

    def html_unauthorized(self, req):
        """The HTML 401 page of Jira and Confluence for bad credentials (their Seraph login
        filter answers before the REST layer, so the body is the product's error page)."""
        title = "Unauthorized (401)"
        body = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"UTF-8\">\n"
                "<title>%s</title>\n</head>\n<body id=\"%s\" class=\"aui-layout\">\n"
                "<div class=\"aui-page-panel\"><h1>%s</h1>\n<p>Basic authentication with "
                "the given credentials failed. Check the user name and password, or the "
                "token.</p></div>\n</body>\n</html>\n") % (title, self.name, title)
        hs = self.auth_headers(req) + [("X-Seraph-LoginReason", "AUTHENTICATED_FAILED"),
                                       ("Content-Type", "text/html;charset=UTF-8")]
        return Response(401, hs, body.encode("utf-8"))

    def auth_headers(self, req):
        """WWW-Authenticate of the product's 401 answers."""
        return []

    # -- subclass hooks -------------------------------------------------------------------
    def error_response(self, err):
        return json_response(err.status, {"message": err.message})

    def unauthorized_response(self, req, bad_credentials):
        return json_response(401, {"message": "unauthorized"})

    def not_found_response(self, req):
        return json_response(404, {"message": "null for uri: %s%s" % (req.base_url,
                                                                       req.raw_path)})


def check_state_list(state, key, fields, types=None):
    """Validate state[key] as a list of objects carrying `fields`; returns the list.
    `types` maps a field to a type or tuple of types it must have."""
    v = state.get(key, [])
    if not isinstance(v, list):
        raise ValueError("%s must be a list" % key)
    for i, item in enumerate(v):
        if not isinstance(item, dict):
            raise ValueError("%s[%d] must be an object" % (key, i))
        for f in fields:
            if f not in item:
                raise ValueError("%s[%d] lacks %r" % (key, i, f))
        for f, t in (types or {}).items():
            if f in item and not isinstance(item[f], t):
                raise ValueError("%s[%d].%s has the wrong type" % (key, i, f))
    return v


def check_groups_members(state, user_names):
    """Validate "groups" (list of unique names) and "members" ({group: [user names]}) against
    the known user names (folded). Returns (groups, members) with members keyed by the group
    names as spelled in "groups"."""
    groups = state.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise ValueError("groups must be a list of non-empty strings")
    byfold = {}
    for g in groups:
        if fold(g) in byfold:
            raise ValueError("duplicate group %r" % g)
        byfold[fold(g)] = g
    members = state.get("members", {})
    if not isinstance(members, dict):
        raise ValueError("members must be an object {group: [user names]}")
    out = {g: [] for g in groups}
    for g, names in members.items():
        if fold(g) not in byfold:
            raise ValueError("members names unknown group %r" % g)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("members[%r] must be a list of user names" % g)
        seen = set()
        for n in names:
            if fold(n) not in user_names:
                raise ValueError("members[%r] names unknown user %r" % (g, n))
            if fold(n) not in seen:
                seen.add(fold(n))
                out[byfold[fold(g)]].append(user_names[fold(n)])
    return groups, out
