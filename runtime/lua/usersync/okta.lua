-- usersync.okta: the Okta client as the engine and scripts use it, built on
-- the raw primitives of usersync.okta_raw (runtime/bind_okta.c: endpoints,
-- jobs whose pages come back as events, auth, rate limits; all in C). This
-- file says what a read means: listings streamed or collected, the scope
-- snapshot, what changed since a cursor or watermark, the check report.
--
--   local okta = require "usersync.okta"
--   okta.client(http_client, source) -> Client
--     http_client: a usersync.http.Client; its engine carries every request
--     (it is kept alive by the Okta client; closing it first makes calls fail
--     with ECANCELED). source: the config's source table:
--       url (required), token = SSWS API token, or
--       oauth = { client_id, private_key (PEM), key_id, scopes = {..} or "a b",
--                 dpop = true },
--       app_id, filter, search (scope without app_id), budget_share = 0.5
--       (number in (0,1] or "50%": the share of every rate-limit bucket we
--       use; the rest is left for the org's other integrations),
--       concurrency = 8 (requests in flight), timeout (per attempt; seconds or
--       "30s"; default: the http client's), retries (default: the http
--       client's), max_wait (all retry waits of one request), type/status_map/
--       ca_file (accepted, not used here: ca_file belongs to the http client).
--     Unknown keys and wrong types raise.
--
--   Listings stream: fn(items, info) is called once per page with the page
--   decoded (usersync.json rules) and info = { page = n, count = n, list = 1 };
--   an error in fn stops the listing (nil, message, "ECALLBACK"). Without
--   fn the items of every page are collected into one array. Returns
--   { pages = n, items = n } (with fn) or the array (without), or
--   nil, message, code, err on failure, where err = { code, status,
--   error_code (Okta errorCode), summary, request_id, message, source = "okta" }.
--   A failed page fails the whole listing: there is never a silently short list.
--
--   c:users([{ filter=, search= }], [fn])   GET /api/v1/users?limit=200
--   c:user(id_or_login)                     -> user | nil, msg, code, err
--   c:app_user(app_id, user_id [, {expand="user"}])  GET /api/v1/apps/{id}/users/{uid}: the
--       AppUser when the app assigns the user | nil, msg, "ENOTFOUND", err
--   c:app(app_id)                           GET /api/v1/apps/{id}: the app | nil, msg, "ENOTFOUND"
--   c:user_groups(user_id, [fn])            GET /api/v1/users/{id}/groups?limit=200
--   c:groups([{ filter=, search= }], [fn])  GET /api/v1/groups?limit=200
--   c:group(group_id)                       -> group | nil, ...
--   c:group_members(group_id, [fn])         GET /api/v1/groups/{id}/users?limit=200
--   c:app_users([app_id], [fn])             GET /api/v1/apps/{id}/users?limit=500&expand=user
--   c:app_groups([app_id], [fn])            GET /api/v1/apps/{id}/groups?limit=200
--   c:logs{ cursor= | since=, filter=, limit=1000, max_pages= } [, fn]
--       System Log polling query: pages until an empty page; returns
--       { cursor = next URL to poll from, pages, items, events = {...},
--         user_ids, group_ids (no fn) }
--
--   c:scope{ app_id=, include = function(group) -> bool | group_ids = {..}, fields = {..} }
--       "users in scope, each with their groups": the snapshot plan.lua reads
--       as `source`: { users = { User + groups = {group ids} + app_assignment },
--       (each User without _links, credentials and type, which no policy
--       hook needs: the memory of a 100,000-user scope; the AppUser without
--       _links; with fields = { "id", "profile.login", ... } each user keeps
--       only id, status, groups and those fields, its profile only the
--       profile.x named: the policy's Policy:user_fields),
--       groups = { [id] = Group (counted groups only) }, complete = true,
--       problems = {}, requests = n }. With compact = true and fields, users
--       is a usersync.userset of the same users (runtime/bind_userset.c:
--       #, ipairs and [i] make each user as a fresh table; get(id) by id),
--       fed page by page: ~200 bytes a user instead of ~660.
--       First the groups are listed and `include` (called once per group;
--       default: every group counts) or `group_ids` picks those that count.
--       Then, all concurrently: the users in scope - with app_id (default:
--       the source's) the app's users with expand=user (every effective
--       assignee, direct or through a group; DEPROVISIONED users have no
--       assignments), without an app the users matching source.filter or
--       source.search (with neither: filter lastUpdated gt 1970, so
--       DEPROVISIONED users are seen) - and the members of every counted
--       group (only their ids reach Lua: the pages are not decoded); each
--       user gets the sorted ids of its counted groups. Members are listed
--       once per group, never groups once per user.
--       Failure: nil, message, code, partial where partial.complete == false
--       and partial.problems = { { code=, message=, status= } }: never
--       deprovision on it.
--       Optional progress = function(done, total, what), progress_interval =
--       0.1 (seconds between calls): called from the page loop at most once
--       per interval while the listings run, and once at the end of each
--       part with done == total: what = "groups" (groups listed; total nil
--       until the end: Okta gives no count), "users" (users in scope listed;
--       total nil until the end), "member lists" (counted groups whose
--       members are all read; total = the number of counted groups). An
--       error in it fails the read with ECALLBACK.
--   c:changes{ cursor = url | since = iso8601 (System Log from that time)
--              [, users = true, groups = true, max_pages = n] }
--       (max_pages, also for c:logs: at most n pages per poll; the cursor
--       then points after the last page read)
--       System Log polling from the stored cursor (an empty page ends it and
--       keeps the cursor); the users named in the events (targets of type
--       User) are re-read by id with their groups, concurrently
--       -> { cursor (store it), events = n, event_list = {LogEvent...},
--            users = { User + groups }, deleted = { ids answered 404 },
--            user_ids = { ids }, group_ids = { ids }, requests = n }
--   c:changes{ watermark = iso8601 [, groups = true] }
--       users with filter lastUpdated gt watermark (DEPROVISIONED included,
--       slimmed as in scope), with their groups -> { users = {...},
--       watermark = newest lastUpdated seen (move it back a little before
--       the next run: timestamps have whole seconds), requests = n }.
--       Hard-deleted users never show here: use the System Log or a full
--       scope read for them.
--   c:check() -> report for `usersync check` (never raises for remote failures):
--       { ok = bool, reachable = bool,
--         auth = { status, method = "ssws"|"oauth", scope (oauth), message, code },
--         app = {...} (only with app_id: "not_found" when the app is unknown),
--         users = {..}, groups = {..}, apps = {..} ("skipped" without app_id),
--         logs = {..} }
--       each { status = "ok" | "denied" (401/403/OAuth refusal) | "not_found" |
--       "error", message, code }.
--   c:budget() -> { ["/api/v1/users"] = { limit, remaining, reset (epoch),
--       reset_in (s), inflight, requests, waits, rate_limited }, ... } for the
--       buckets seen so far (for metrics)
--   c:requests() -> number of requests made (attempts with a response or a
--       transport failure, token requests included)
--   c:close()  idempotent; also __close (the raw client has __gc)
--
-- Request costs (A users assigned to the app, U users matching the filter,
-- G groups, m_g members of counted group g, E System Log events, T users
-- touched by them, W users changed since a watermark). Page sizes: users
-- 200 (max), groups 200, members 200 (not the default 1000), app users 500
-- (max), logs 1000 (max):
--   scope, app     ceil(A/500) + ceil(G/200) + sum over counted g of max(1, ceil(m_g/200))
--   scope, no app  ceil(U/200) + ceil(G/200) + the same member pages
--                  (genorg 10,000 users / 500 groups, 498 counted: 3 + 3 + 574
--                  with the app, 50 + 3 + 574 for every user; see tests/bench/okta_read.lua)
--   changes{cursor|since}  ceil(E/1000) + 1 (the empty page that ends a poll)
--                  + 2 T (each touched user and its groups; 1 T with groups=false,
--                  0 with users=false); a quiet org costs 1 request
--   changes{watermark}  max(1, ceil(W/200)) + W (each user's groups; 0 with groups=false)
--   user, group    1;  user_groups, group_members, app_*: pages as above
--   check          3 one-item probes (users, groups, logs) + 1 with app_id
--   OAuth adds one token request per hour (two when the DPoP nonce is new),
--   with DPoP one metadata request per client (the proof algorithms), and
--   one more call when the API asks for its own nonce or refuses a token.
-- Everything a call needs is requested once; independent listings run
-- concurrently, at most `concurrency` in flight, each bucket used up to
-- budget_share (the governor waits for the window's reset, computed from
-- the response Date, instead of running into 429).
--
-- Error codes: the target clients' (usersync.target): EAUTH, EFORBIDDEN,
-- ENOTFOUND, EINVALID, ERATELIMIT, EHTTP, ERESPONSE, EBADLINK, ECALLBACK (a
-- callback raised) and the transport codes of usersync.http; meanings in
-- include/usersync/okta.h.
--
-- Example (tests/lua/test_okta.lua runs it against the simulator; `url` is its address):
--   local http, okta = require "usersync.http", require "usersync.okta"
--   local hc <close> = http.client{ timeout = 30 }
--   local c <close> = okta.client(hc, { url = url, token = "test-token", app_id = "0oaApp" })
--   local snap, err, code = c:scope{ include = function(g) return g.type ~= "BUILT_IN" end }
--   if not snap then error(err .. " (" .. code .. ")") end
--   for _, u in ipairs(snap.users) do print(u.profile.login, #u.groups) end
--   local n = 0
--   assert(c:users({ search = 'status eq "DEPROVISIONED"' }, function(page) n = n + #page end))

local raw = require "usersync.okta_raw"
local config = require "usersync.config"
local json = require "usersync.json"
local time = require "usersync.time"
local userset = require "usersync.userset"

local ARRAY = json.array_mt

local M = {}

local Client = {}
Client.__index = Client

-- A source as a script may give it, in the numbers the raw client takes:
-- budget_share "N%" becomes a fraction, timeout and max_wait "30s" seconds,
-- by the config's parsers (the one grammar of each). A validated config's
-- source is so already (usersync.config normalises it).
local function raw_source(source)
  local copy = {}
  for k, v in pairs(source) do copy[k] = v end
  local share = type(source.budget_share) == "string" and config.parse_share(source.budget_share)
  if share and share.percent then copy.budget_share = share.percent / 100 end

  for _, k in ipairs{ "timeout", "max_wait" } do
    if type(source[k]) == "string" then
      copy[k] = config.parse_duration(source[k])
      if not copy[k] then error(("field '%s': expected seconds or a duration like \"30s\""):format(k), 3) end
    end
  end
  return copy
end

function M.client(http_client, source)
  local rc = raw.client(http_client, raw_source(source))
  return setmetatable({ raw = rc, app_id = source.app_id, url = source.url, filter = source.filter,
                        search = source.search }, Client)
end

function Client:close() self.raw:close() end
Client.__close = Client.close

function Client:__tostring()
  return (tostring(self.raw):gsub("RawClient", "Client"))
end

function Client:budget() return self.raw:budget() end
function Client:requests() return self.raw:requests() end

---------------------------------------------------------------- helpers

local function new_array() return setmetatable({}, ARRAY) end

-- nil, message, code, err for a failure that is ours, not Okta's.
local function fail(code, message)
  return nil, message, code, { code = code, status = 0, error_code = "", summary = "", request_id = "",
                               message = message, source = "okta" }
end

-- Calls fn(...) with a traceback on error; true, or false and the message.
local function protect(fn, ...)
  local ok, err = xpcall(fn, function(e)
    return debug.traceback(type(e) == "string" and e or ("(error object is a %s value)"):format(type(e)), 2)
  end, ...)
  return ok, err
end

-- Appends v to array t unless present.
local function append_unique(t, v)
  for i = 1, #t do if t[i] == v then return end end
  t[#t + 1] = v
end

-- Runs one job to its end: on_page(records, count, page, last) for each page
-- under a protected call. Returns the DONE result table, or the failure values.
local function run_job(self, op, on_page)
  local b <close> = self.raw:batch()
  b:submit(op)
  while true do
    -- page: records, count, page, last; done: result | nil, message, code, err
    local kind, _, x, y, z, w = b:next()
    if kind == nil then return fail("EHTTP", "okta: the listing ended without a result") end
    if kind == "done" then return x, y, z, w end
    local ok, err = protect(on_page, x, y, z, w)
    if not ok then return fail("ECALLBACK", "okta: page callback failed: " .. err) end
  end
end

-- A listing with fn (streamed) or without (collected into one array).
local function list(self, op, fn)
  if fn ~= nil and type(fn) ~= "function" then error("bad argument (function expected, got " .. type(fn) .. ")", 3) end
  local out = not fn and new_array() or nil
  local res, err, code, e = run_job(self, op, function(items, count, page)
    if fn then return fn(items, { page = page, count = count, list = 1 }) end
    local n = #out
    for i = 1, #items do out[n + i] = items[i] end
  end)
  if not res then return nil, err, code, e end
  if fn then return { pages = res.pages, items = res.items } end
  return out
end

-- A get: the one object, or the failure values.
local function get(self, op)
  local obj
  local res, err, code, e = run_job(self, op, function(o) obj = o end)
  if not res then return nil, err, code, e end
  return obj
end

-- c:m([opts], [fn]) arguments: opts (table or nil) and fn.
local function opts_and_fn(a, b)
  if type(a) == "function" then return nil, a end
  if a ~= nil and type(a) ~= "table" then error("bad argument #1 (table expected, got " .. type(a) .. ")", 3) end
  return a, b
end

local function filter_op(ep, opts)
  opts = opts or {}
  return { ep = ep, filter = opts.filter, search = opts.search }
end

-- The app id argument or the source's, and the function argument.
local function app_arg(self, a, b)
  if type(a) == "string" then return a, b end
  if a ~= nil and type(a) ~= "function" then error("bad argument #1 (expected an app id or a function)", 3) end
  if not self.app_id then error("no app id given and the source has no app_id", 3) end
  return self.app_id, a
end

local function check_id(id, n)
  if type(id) ~= "string" then error(("bad argument #%d (string expected, got %s)"):format(n, type(id)), 3) end
  return id
end

---------------------------------------------------------------- listings

function Client:users(opts, fn) opts, fn = opts_and_fn(opts, fn); return list(self, filter_op("users", opts), fn) end
function Client:groups(opts, fn) opts, fn = opts_and_fn(opts, fn); return list(self, filter_op("groups", opts), fn) end
function Client:user(id) return get(self, { ep = "user", id = check_id(id, 1) }) end
function Client:group(id) return get(self, { ep = "group", id = check_id(id, 1) }) end
function Client:app(id) return get(self, { ep = "app", id = check_id(id, 1) }) end

function Client:user_groups(id, fn) return list(self, { ep = "user_groups", id = check_id(id, 1) }, fn) end
function Client:group_members(id, fn) return list(self, { ep = "group_members", id = check_id(id, 1) }, fn) end

-- With expand = "user" the AppUser carries the User in _embedded.user: one
-- request tells both whether the user is in scope and what it looks like.
function Client:app_user(app, user, opts)
  check_id(app, 1); check_id(user, 2)
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #3 (table expected, got " .. type(opts) .. ")", 2) end
  local expand = opts and opts.expand
  if expand ~= nil and expand ~= "user" then error('bad argument #3 (expand must be "user")', 2) end
  return get(self, { ep = "app_user", id = app, user = user, expand_user = expand == "user" })
end

function Client:app_users(app, fn)
  app, fn = app_arg(self, app, fn)
  return list(self, { ep = "app_users", id = app, expand_user = true }, fn)
end

function Client:app_groups(app, fn)
  app, fn = app_arg(self, app, fn)
  return list(self, { ep = "app_groups", id = app }, fn)
end

---------------------------------------------------------------- System Log

-- The job of a System Log poll from opts (cursor, or since/filter/limit).
local function logs_op(opts)
  opts = opts or {}
  for _, k in ipairs({ "cursor", "since", "filter" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then error(("field '%s': expected a string"):format(k), 3) end
  end
  local limit = opts.limit
  if limit ~= nil and math.type(limit) ~= "integer" then error("field 'limit': expected an integer", 3) end
  if limit and (limit < 1 or limit > 1000) then error("field 'limit': expected 1 to 1000", 3) end
  local mp = opts.max_pages
  if mp ~= nil and (math.type(mp) ~= "integer" or mp < 0) then error("max_pages must be positive", 3) end
  if opts.cursor then return { ep = "logs", cursor = opts.cursor, max_pages = mp } end
  return { ep = "logs", since = opts.since, filter = opts.filter, limit = limit, max_pages = mp }
end

-- Appends the ids of the User and UserGroup targets of event ev.
local function touched(ev, user_ids, group_ids)
  if type(ev) ~= "table" or type(ev.target) ~= "table" then return end
  for _, t in ipairs(ev.target) do
    if type(t) == "table" and type(t.id) == "string" then
      if t.type == "User" then append_unique(user_ids, t.id)
      elseif t.type == "UserGroup" then append_unique(group_ids, t.id) end
    end
  end
end

-- Polls the System Log: with fn streamed, else the events and the ids they
-- touch collected. Returns the result table or the failure values.
local function poll(self, opts, fn)
  local events, user_ids, group_ids = new_array(), new_array(), new_array()
  local res, err, code, e = run_job(self, logs_op(opts), function(items, count, page)
    if fn then return fn(items, { page = page, count = count, list = 1 }) end
    for i = 1, #items do
      events[#events + 1] = items[i]
      touched(items[i], user_ids, group_ids)
    end
  end)
  if not res then return nil, err, code, e end
  local out = { cursor = res.cursor, pages = res.pages, items = res.items }
  if not fn then out.events, out.user_ids, out.group_ids = events, user_ids, group_ids end
  return out
end

function Client:logs(opts, fn)
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #1 (table expected, got " .. type(opts) .. ")", 2) end
  if fn ~= nil and type(fn) ~= "function" then error("bad argument #2 (function expected, got " .. type(fn) .. ")", 2) end
  return poll(self, opts, fn)
end

---------------------------------------------------------------- scope

-- The progress of a scope read: counters and the throttle.
local Progress = {}
Progress.__index = Progress

local function new_progress(opts)
  if opts.progress == nil then return nil end
  if type(opts.progress) ~= "function" then error("field 'progress': expected a function", 3) end
  local interval = opts.progress_interval
  if interval ~= nil and (type(interval) ~= "number" or interval < 0) then
    error("field 'progress_interval': expected seconds >= 0", 3)
  end
  return setmetatable({ fn = opts.progress, interval = interval or 0.1, last = 0,
                        groups = 0, users = 0, lists_done = 0, lists = 0 }, Progress)
end

-- Calls the function (throttled unless final); nil, or the failure message.
function Progress:call(done, total, what, final)
  if not final and self.last > 0 and time.monotonic() - self.last < self.interval then return nil end
  local ok, err = protect(self.fn, done, total, what)
  self.last = time.monotonic()
  if not ok then return "okta: progress callback failed: " .. err end
end

-- The set of counted group ids, or the include function, from opts.
local function include_of(opts)
  if opts.include ~= nil then
    if type(opts.include) ~= "function" then error("field 'include': expected a function", 3) end
    return opts.include
  end
  if opts.group_ids == nil then return nil end
  if type(opts.group_ids) ~= "table" then error("field 'group_ids': expected a list of group ids", 3) end
  local set = {}
  for _, id in ipairs(opts.group_ids) do
    if type(id) ~= "string" then error("field 'group_ids': expected a list of group ids", 3) end
    set[id] = true
  end
  return set
end

-- Marks snap incomplete with the failure; returns nil, message, code, snap.
local function scope_failed(snap, message, code, e)
  snap.complete = false
  snap.problems[#snap.problems + 1] = { code = code, message = message, status = e and e.status or 0 }
  return nil, message, code, snap
end

-- Drains batch b: on_page(job, records, count, last) per page, under
-- protection; it may return a failure message (a progress callback's).
-- nil when every job completed, else message, code, err of the first
-- failure (the batch is then abandoned: its other jobs are cancelled when
-- it closes).
local function drain(b, on_page)
  while true do
    local kind, job, x, y, z, w = b:next()
    if kind == nil then return nil end
    if kind == "done" then
      if not x then return y, z, w end
    else
      local ok, err = protect(on_page, job, x, y, w) -- records, count, last
      if not ok then return "okta: page callback failed: " .. err, "ECALLBACK" end
      if type(err) == "string" then return err, "ECALLBACK" end
    end
  end
end

-- Sorts the group ids of each user in place and attaches them.
local function attach_groups(users, memberships)
  for _, u in ipairs(users) do
    local g = memberships[u.id]
    if g then table.sort(g); u.groups = g end
  end
end

-- Phase 1: the groups, and which of them count. Fills snap.groups and
-- returns the counted ids, or nil and the failure.
local function scope_groups(b, snap, include, prog)
  local counted = {}
  b:submit{ ep = "groups" }
  local err, code, e = drain(b, function(_, items, count)
    for _, g in ipairs(items) do
      local ok = true
      if type(include) == "function" then ok = include(g)
      elseif include then ok = include[g.id] ~= nil end
      if ok and type(g.id) == "string" then snap.groups[g.id] = g; counted[#counted + 1] = g.id end
    end
    if prog then
      prog.groups = prog.groups + count
      return prog:call(prog.groups, nil, "groups")
    end
  end)

  if not err and prog then err, code = prog:call(prog.groups, prog.groups, "groups", true), "ECALLBACK" end
  if err then return nil, err, code, e end
  return counted
end

-- The user fields scope keeps, from opts.fields (a list of "id",
-- "profile.login"...): { top = {names}, profile = {names} }, or nil for all.
local function keep_of(opts)
  if opts.fields == nil then return nil end
  if type(opts.fields) ~= "table" then error("field 'fields': expected a list of user fields", 3) end
  local keep, seen = { top = { "id", "status" }, profile = {} }, { id = true, status = true }
  for _, f in ipairs(opts.fields) do
    if type(f) ~= "string" then error("field 'fields': expected a list of user fields", 3) end
    local attr = f:match("^profile%.(.+)$")
    local into = attr and keep.profile or keep.top
    local name = attr or f
    if not seen[f] and name ~= "groups" and name ~= "profile" then seen[f] = true; into[#into + 1] = name end
  end
  return keep
end

-- User u with only the fields of keep (its profile with only keep.profile).
local function trim_user(u, keep)
  local out = setmetatable({}, getmetatable(u)) -- still a JSON object
  for _, k in ipairs(keep.top) do out[k] = u[k] end
  local p = u.profile
  if type(p) == "table" then
    local np = setmetatable({}, getmetatable(p))
    for _, k in ipairs(keep.profile) do np[k] = p[k] end
    out.profile = np
  end
  return out
end

-- Phase 2, concurrently: the users in scope (job 1, slimmed) and the
-- member ids of every counted group; memberships are kept by user id and
-- attached at the end, so neither waits for the other.
local function scope_users(self, b, snap, app, counted, prog, keep)
  local users_job
  if app then
    users_job = b:submit{ ep = "app_users", id = app, expand_user = true, shape = "slim" }
  elseif self.search then
    users_job = b:submit{ ep = "users", search = self.search, shape = "slim" }
  else -- a filter shows DEPROVISIONED users; a plain list hides them
    users_job = b:submit{ ep = "users", filter = self.filter or 'lastUpdated gt "1970-01-01T00:00:00.000Z"',
                          shape = "slim" }
  end

  local group_of = {}
  for _, gid in ipairs(counted) do group_of[b:submit{ ep = "group_members", id = gid, shape = "ids" }] = gid end
  if prog then prog.lists = #counted end

  local memberships, users = {}, snap.users
  local set = type(users) == "userdata" and users or nil -- compact: each page goes into it
  local err, code, e = drain(b, function(job, items, count, last)
    if set and job == users_job then
      set:add_page(items)
      if prog then prog.users = prog.users + count; return prog:call(prog.users, nil, "users") end
      return
    elseif job == users_job then
      for i = 1, #items do
        local u = items[i]
        if keep then u = trim_user(u, keep) end
        u.groups = new_array()
        users[#users + 1] = u
      end
      if prog then prog.users = prog.users + count; return prog:call(prog.users, nil, "users") end
      return
    end

    local gid = group_of[job]
    if set then set:add_members(items, gid) end
    for i = 1, set and 0 or #items do
      local id = items[i]
      local g = memberships[id]
      if not g then g = new_array(); memberships[id] = g end
      append_unique(g, gid)
    end
    if prog then
      if last then prog.lists_done = prog.lists_done + 1 end
      return prog:call(prog.lists_done, prog.lists, "member lists")
    end
  end)

  if not err and prog then
    err = prog:call(prog.users, prog.users, "users", true) or prog:call(prog.lists, prog.lists, "member lists", true)
    code = "ECALLBACK"
  end
  if err then return err, code, e end
  if set then set:finish() else attach_groups(users, memberships) end
end

function Client:scope(opts)
  if opts ~= nil and type(opts) ~= "table" then error("bad argument #1 (table expected, got " .. type(opts) .. ")", 2) end
  opts = opts or {}
  if opts.app_id ~= nil and type(opts.app_id) ~= "string" then error("field 'app_id': expected a string", 2) end
  local app = opts.app_id or self.app_id
  local include = include_of(opts)
  local prog = new_progress(opts)
  local keep = keep_of(opts)
  -- compact (with fields): the users in a usersync.userset, fed page by page
  local users = opts.compact and keep and userset.new(keep) or new_array()
  local snap = { users = users, groups = {}, problems = new_array(), complete = true }
  local before = self.raw:requests()
  local b <close> = self.raw:batch()
  local counted, err, code, e = scope_groups(b, snap, include, prog)
  if counted then err, code, e = scope_users(self, b, snap, app, counted, prog, keep) end
  snap.requests = self.raw:requests() - before
  if err then return scope_failed(snap, err, code, e) end
  return snap
end

---------------------------------------------------------------- changes

-- Reads the users of `ids` concurrently: with gets, each user (GET
-- /users/{id}) appended to `users` as it arrives, ids answered 404 to
-- `deleted`; with groups, each user's group ids. Every user in `users` ends
-- with groups = sorted group ids (empty without groups). nil, or the failure.
local function read_users(self, ids, users, deleted, gets, groups)
  local b <close> = self.raw:batch()
  local id_of, is_get = {}, {}
  for _, id in ipairs(gets and ids or {}) do
    local j = b:submit{ ep = "user", id = id }
    id_of[j], is_get[j] = id, true
  end
  for _, id in ipairs(groups and ids or {}) do id_of[b:submit{ ep = "user_groups", id = id, shape = "ids" }] = id end

  local memberships = {}
  while true do
    local kind, job, a, msg, code, e = b:next()
    if kind == nil then break end
    if kind == "page" and is_get[job] then
      users[#users + 1] = a
    elseif kind == "page" then
      local g = memberships[id_of[job]] or new_array()
      memberships[id_of[job]] = g
      for _, gid in ipairs(a) do append_unique(g, gid) end
    elseif not a and code ~= "ENOTFOUND" then
      return msg, code, e
    elseif not a and is_get[job] then
      deleted[#deleted + 1] = id_of[job]
    end
  end

  for _, u in ipairs(users) do u.groups = memberships[u.id] or new_array(); table.sort(u.groups) end
end

-- The newest lastUpdated of users, or fallback.
local function newest(users, fallback)
  local best = fallback
  for _, u in ipairs(users) do
    if type(u.lastUpdated) == "string" and best < u.lastUpdated then best = u.lastUpdated end
  end
  return best
end

-- Users changed since the watermark; a filter shows DEPROVISIONED ones.
local function changes_since(self, wm, with_groups, before)
  local users = new_array()
  local res, err, code, e = run_job(self, { ep = "users", filter = ('lastUpdated gt "%s"'):format(wm), shape = "slim" },
    function(items)
      for i = 1, #items do
        local u = items[i]
        u.groups = new_array()
        users[#users + 1] = u
      end
    end)
  if not res then return nil, err, code, e end
  if with_groups then
    local ids = {}
    for i, u in ipairs(users) do ids[i] = u.id end
    err, code, e = read_users(self, ids, users, {}, false, true)
    if err then return nil, err, code, e end
  end
  return { users = users, watermark = newest(users, wm), requests = self.raw:requests() - before }
end

function Client:changes(opts)
  if type(opts) ~= "table" then error("bad argument #1 (table expected, got " .. type(opts) .. ")", 2) end
  local before = self.raw:requests()
  if opts.watermark ~= nil and type(opts.watermark) ~= "string" then error("field 'watermark': expected a string", 2) end
  local with_groups, with_users = opts.groups ~= false, opts.users ~= false
  if opts.watermark then return changes_since(self, opts.watermark, with_groups, before) end
  if not opts.cursor and not opts.since then error("changes: give cursor, since or watermark", 2) end
  local log, err, code, e = poll(self, opts)
  if not log then return nil, err, code, e end
  local users, deleted = new_array(), new_array()
  if with_users then
    err, code, e = read_users(self, log.user_ids, users, deleted, true, with_groups)
    if err then return nil, err, code, e end
  end
  return { cursor = log.cursor, events = log.items, event_list = log.events, users = users, deleted = deleted,
           user_ids = log.user_ids, group_ids = log.group_ids, requests = self.raw:requests() - before }
end

---------------------------------------------------------------- check

local DENIED = { EAUTH = true, EFORBIDDEN = true }

-- { status, message, code } of a probe: nil err for ok.
local function probe_status(err, code)
  if not err then return { status = "ok" } end
  return { status = DENIED[code] and "denied" or code == "ENOTFOUND" and "not_found" or "error",
           message = err, code = code }
end

-- The report when authentication itself failed.
local function auth_failed(err, code, e)
  local reach = not (e and e.transport)
  return { ok = false, reachable = reach, auth = { status = reach and "denied" or "error", message = err, code = code } }
end

function Client:check()
  local method = self.raw:auth()
  if method == "oauth" then
    local ok, err, code, e = self.raw:authenticate()
    if not ok then return auth_failed(err, code, e) end
  end

  -- probes: users, groups, logs (since an hour ago), the app's users
  local names = { "users", "groups", "logs", "app" }
  local b <close> = self.raw:batch()
  b:submit{ ep = "users", limit = 1, max_pages = 1 }
  b:submit{ ep = "groups", limit = 1, max_pages = 1 }
  b:submit{ ep = "logs", limit = 1, max_pages = 1, since = time.format(time.now() - 3600) }
  if self.app_id then b:submit{ ep = "app_users", id = self.app_id, limit = 1, max_pages = 1 } end

  local report, errs = { ok = true }, {}
  local reachable, authed = false, false
  while true do
    local kind, job, res, err, code, e = b:next()
    if kind == nil then break end
    if kind == "done" then
      report[names[job]] = probe_status(not res and err, code)
      if res or not (e and e.transport) then reachable = true end
      if res or code ~= "EAUTH" then authed = true end
      if not res then report.ok = false; errs[job] = { err, code } end
    end
  end

  local _, scope = self.raw:auth()
  local first = errs[1] or {}
  report.reachable = reachable
  report.auth = { status = not reachable and "error" or not authed and "denied" or "ok", method = method,
                  scope = method == "oauth" and scope or nil }
  if not authed or not reachable then report.auth.message, report.auth.code = first[1], first[2] end

  -- /api/v1/users exists in every org: a 404 there means the URL is not an
  -- org's API, so the credentials were never tried
  if reachable and report.users.status == "not_found" then
    report.auth = { status = "unknown", method = method, code = report.users.code,
                    message = ("%s answered 404 for /api/v1/users: the Okta URL must be the org's base URL "
                               .. "(https://example.okta.com)"):format(self.url or "the server") }
  end

  -- a 404 for the app's users: the app id names no app of this org
  if report.app and report.app.status == "not_found" and report.users.status == "ok" then
    report.app.message = ("the app id %s does not exist in this org; find it in the Okta admin console under "
      .. "Applications: the app's URL ends in /instance/ID/"):format(tostring(self.app_id))
  end

  -- the app probe answers both "app found" and "apps readable"
  report.apps = report.app or { status = "skipped", message = "no app_id configured" }
  return report
end

return M
