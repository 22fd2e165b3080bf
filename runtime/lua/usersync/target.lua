-- usersync.target: the Jira, Confluence and Bitbucket Data Center clients
-- as the engine and scripts use them, built on the raw primitives of
-- usersync.target_raw (runtime/bind_target.c: one operation at a time,
-- batches of jobs whose pages come back as events; the endpoints, paging
-- and error bodies are the product files' in C). This file says what a
-- listing, a snapshot and an apply mean.
--
--   local target = require "usersync.target"
--   local t = target.new(http_client, {
--     type = "jira" | "confluence" | "bitbucket",   -- required (target.products())
--     url = "https://jira.example.com",              -- required, context path included
--     user = "svc", password = "...",                -- HTTP Basic, or
--     token = "...",                                 -- Authorization: Bearer (PAT)
--     concurrency = 8,      -- requests of this target in flight at once
--     timeout = 30,         -- per attempt (default: the http client's)
--     page_size = nil,      -- listings: at most this many per page (tests)
--     add_to_default_group = true,  -- Bitbucket create_user
--     task_wait = 120,      -- Confluence: how long to follow a delete task
--     name = "jira-prod",   -- informational
--   })                      -> Target (misuse and bad config raise)
--   ca_file is refused here: TLS (verification on, CA file) is the http
--   client's business, so give it to usersync.http.client. The http client
--   is shared: every request of every target runs on its engine.
--   target.products() -> { { type = "jira", caps = {...} }, ... }
--
--   Every failure is nil, msg, code, err with err = { source = the target's
--   type, code =, status = (0: no HTTP answer), message = }, as the Okta
--   client's (the bulk adds return their results table instead of err;
--   each failed item there carries source and status). A callback that
--   raises stops the call: nil, "<what> callback failed: <error with its
--   traceback>", "ECALLBACK".
--
--   t:type() -> "jira" ...;   t:requests() -> requests made so far
--   t:capabilities() -> { deactivate=, reactivate=, rename=, leads=, bulk_add= }
--   t:close()  (also __gc and __close; a target in use raises)
--
--   t:get(name [, id]) -> { name=, key=, display_name=, email=, active=, groups={...}, raw=decoded }
--                  | nil, msg, code ("ENOTFOUND" when there is no such user)
--       id: the account's id in the service where it has ids (SCIM): the
--       account is read by it (GET /Users/{id}), whatever its name is now;
--       the other products read by name.
--       groups is nil when the product's answer did not tell them (a Jira
--       that ignores expand=groups): unknown, not "no groups"; read them
--       with t:members of the groups that matter.
--   Writes: -> true [, note] | nil, msg, code. note is "already exists",
--   "already a member", "not a member" or "nothing to change" when the
--   product said so (or nothing needed doing).
--   t:create_user{ name=, display_name=, email=, password=nil, notify=false }
--   t:update_user(name, { display_name=, email= })   -- absent: unchanged
--   t:rename_user(from, to)            t:deactivate_user(name)
--   t:reactivate_user(name)            t:delete_user(name)
--   t:create_group(group)              t:delete_group(group)
--   t:add_member(group, name)          t:remove_member(group, name)
--   t:group_exists(group) -> true | false | nil, msg, code   (Jira: one
--       request; EUNSUPPORTED elsewhere, whose group listings are complete)
--   t:handover_lead{ name=, projects={}, components={}, to_project_lead=,
--                    to_component_lead= }                    (Jira)
--   t:check() -> { type=, reachable=bool, product=, version=, user=,
--                  admin=true|false|nil (unknown), detail=, code= }
--
--   Listings stream pages to a callback; a failed page fails the listing:
--   never a silently short list.
--   t:accounts(function(page) end)        -> true | nil, msg, code
--       page = { {name=, key=, display_name=, email=, active=}, ... }
--       (inactive accounts included; email nil where the product hides it;
--       active nil when unknown)
--   t:groups(function(names) end)         -> true | nil, msg, code
--       ("ETRUNCATED" when the product answered part of the groups: the
--       callback got them, the rest must be looked up by name)
--   t:members(group, function(page) end)  -> true | nil, msg, code (inactive included)
--   t:add_members(group, {names})  -> true, results | nil, msg, code, results
--   t:add_to_groups(name, {groups}) -> same; results[item] = {ok=, note=, message=,
--                                      code=, status=, source=}
--   t:leads({names}) -> { [lower(name)] = { projects={keys}, components={ids} } } (Jira)
--
--   t:snapshot([opts]) -> { accounts = { {name=, key=, display_name=, email=,
--       active=, groups={...}} }, groups = { names }, complete = true,
--       requests = n, time = s } | nil, msg, code
--     Accounts, groups and every group's members, read concurrently; each
--     account's groups come from the member listings (unordered). Any failed
--     page fails the snapshot. When the product cut its groups listing short
--     (Jira's groups/picker under a server limit) the result has
--     groups_partial = true: `groups` holds what came, no memberships were
--     read (every account's groups is empty), and the caller looks up the
--     groups it needs by name with t:members. Request costs: see the product
--     files' headers (runtime/target_<type>.c).
--     opts.progress = function(done, total, what), progress_interval = 0.1:
--     called at most once per interval while pages arrive, what = "accounts"
--     or "memberships" (entries read), total nil; at the end once per part
--     with done == total. An error in it: "progress callback failed: ...".
--     opts.started = a read t:snapshot_start() returned: its result.
--     opts.compact = true: accounts is a usersync.accountset instead of a
--     list (the same accounts in C, about 15 MB for 100,000 where the list
--     takes over 100): #accounts, accounts[i] and ipairs as a list's, each
--     account a new table each time it is asked for; accounts:get(name)
--     (any case), accounts:by_id(id), accounts:add_member(name, group).
--     No Lua table is made per account while the pages arrive.
--   t:snapshot_start([{ compact = true }]) -> read: starts the snapshot's
--     requests and returns at once; they run while anything drives the
--     shared http engine, their results held until t:snapshot{ started =
--     read } takes them (once). A compact read puts each page's accounts
--     into its account set as the page arrives (nothing held per page) and
--     its snapshot is compact. read:close() (also __close) cancels it.
--     read:ended(): true once its requests have all ended (well or not),
--     so that taking it does not wait for the network.
--
--   t:apply(ops, callback [, { phases = true }]) -> { ok = n, failed = n }
--     ops are the planner's operation tables (plan.lua; their kinds are
--     usersync.targets.ORDER). They run concurrently within the target's
--     concurrency; with phases (default) one kind after the other in plan
--     order. add_member ops of one group go out as one bulk request where
--     the product has one; a link needs no request. callback(op, true, note)
--     or callback(op, nil, message, code, err) runs as each completes.
--     Without a callback the outcomes are in summary.results[i] = { ok=,
--     note=, message=, code=, status=, source= }.
--   t:apply_start(ops) -> Pending: sends ops (as t:apply without phases) and
--     returns at once; the requests run while anything drives the engine.
--   pending:poll(callback [, wait]) -> true (more to come) | false (done)
--                                     | nil, msg, "ECALLBACK"
--     reports the outcomes that arrived; when none had and wait (seconds)
--     > 0, drives the shared engine up to wait first.
--   pending:close() (also __close): cancels what is unfinished.
local raw = require "usersync.target_raw"
local accountset = require "usersync.accountset"
local core = require "usersync.core"
local targets = require "usersync.targets"
local monotonic = require("usersync.time").monotonic

local M = { new = raw.new, products = raw.products }
local T = raw.methods

local lower = string.lower

-- nil, msg, code, err: a failure of target t.
local function fail(t, msg, code, status)
  return nil, msg, code, { source = t:type(), code = code, status = status or 0, message = msg }
end

-- A callback's error (as core.traceback left it) as a failure.
local function callback_failed(t, what, e)
  local m = (type(e) == "string" or type(e) == "number") and tostring(e)
    or ("(error object is a %s value)"):format(type(e))
  return fail(t, what .. " callback failed: " .. m, "ECALLBACK", 0)
end

local function check(v, ty, n, fname)
  if type(v) ~= ty and not (ty == "string" and type(v) == "number") then
    error(("bad argument #%d to '%s' (%s expected, got %s)"):format(n, fname, ty, type(v)), 3)
  end
end

-- One outcome as a results entry.
local function result(t, ok, x, code, status)
  if ok then return { ok = true, note = x } end
  return { ok = false, message = x, code = code, status = status, source = t:type() }
end


---------------------------------------------------------------- one operation

-- Runs raw op to its end: its DONE's ok, note or message, code, status and
-- record; nothing when it ended without one.
local function run_one(t, op)
  local b <close> = t:batch()
  b:hold()
  b:submit(op)
  while true do
    local kind, _, ok, x, code, status, _, _, record = b:next()
    if kind == nil then return end
    if kind == "done" then return ok, x, code, status, record end
  end
end

-- A write: true [, note] | nil, msg, code, err.
local function write(t, op)
  local ok, x, code, status = run_one(t, op)
  if ok == nil then return fail(t, "target: the operation ended without a result", "EHTTP") end
  if not ok then return fail(t, x, code, status) end
  if x then return true, x end
  return true
end

-- A write of kind on one name (or group): the argument checked.
local function write1(kind, field)
  return function(self, v)
    check(v, "string", 1, kind)
    return write(self, { kind = kind, [field] = v })
  end
end

T.deactivate_user = write1("deactivate_user", "name")
T.reactivate_user = write1("reactivate_user", "name")
T.delete_user = write1("delete_user", "name")
T.create_group = write1("create_group", "group")
T.delete_group = write1("delete_group", "group")

function T:create_user(u)
  check(u, "table", 1, "create_user")
  if u.name == nil then error("bad argument #1 to 'create_user' (field 'name' is required)", 2) end
  return write(self, { kind = "create_user", name = u.name, display_name = u.display_name,
                       email = u.email, password = u.password, notify = u.notify })
end

function T:update_user(name, changes)
  check(name, "string", 1, "update_user")
  check(changes, "table", 2, "update_user")
  return write(self, { kind = "update_user", name = name, display_name = changes.display_name,
                       email = changes.email })
end

function T:rename_user(from, to)
  check(from, "string", 1, "rename_user")
  check(to, "string", 2, "rename_user")
  return write(self, { kind = "rename_user", name = from, to = to })
end

function T:add_member(group, name)
  check(group, "string", 1, "add_member")
  check(name, "string", 2, "add_member")
  return write(self, { kind = "add_members", group = group, list = { name } })
end

function T:remove_member(group, name)
  check(group, "string", 1, "remove_member")
  check(name, "string", 2, "remove_member")
  return write(self, { kind = "remove_member", group = group, name = name })
end

function T:handover_lead(h)
  check(h, "table", 1, "handover_lead")
  return write(self, { kind = "handover_lead", name = h.name, to = h.to_project_lead,
                       to2 = h.to_component_lead,
                       list = type(h.projects) == "table" and h.projects or nil,
                       list2 = type(h.components) == "table" and h.components or nil })
end

function T:group_exists(group)
  check(group, "string", 1, "group_exists")
  local ok, note, code, err = write(self, { kind = "find_group", group = group })
  if ok then return note ~= "no such group" end
  return ok, note, code, err
end

function T:get(name, id)
  check(name, "string", 1, "get")
  if id ~= nil then check(id, "string", 2, "get") end
  local ok, x, code, status, account = run_one(self, { kind = "get", name = name, id = id })
  if ok == false then return fail(self, x, code, status) end
  if not account then return fail(self, "target: get ended without an account", "ERESPONSE") end
  return account
end

function T:check()
  local _, _, _, _, report = run_one(self, { kind = "check" })
  report = report or {}
  report.type = self:type()
  return report
end


---------------------------------------------------------------- listings

-- Runs op (a listing or leads; `what` names it in a failure) to its end,
-- on_event(x, y, code) for each event before its DONE. true when it ended
-- well; else the failure, or the one on_event returned (nil, msg, ...).
local function drain(t, op, what, on_event)
  local b <close> = t:batch()
  b:hold()
  b:submit(op)
  while true do
    local kind, _, x, y, code, status = b:next()
    if kind == nil then return fail(t, "target: " .. what .. " ended without a result", "EHTTP") end
    if kind == "done" then
      if x then return true end
      return fail(t, y, code, status)
    end

    local failed, msg, fcode, err = on_event(x, y, code)
    if failed == nil and msg ~= nil then return nil, msg, fcode, err end
  end
end

-- Runs listing op to its end, fn(page) for each page.
local function listing(t, op, fn)
  return drain(t, op, "the listing", function(page)
    local ok, err = xpcall(fn, core.traceback, page)
    if not ok then return callback_failed(t, "listing", err) end
  end)
end

function T:accounts(fn)
  check(fn, "function", 1, "accounts")
  return listing(self, { kind = "accounts" }, fn)
end

function T:groups(fn)
  check(fn, "function", 1, "groups")
  return listing(self, { kind = "groups" }, fn)
end

function T:members(group, fn)
  check(group, "string", 1, "members")
  check(fn, "function", 2, "members")
  return listing(self, { kind = "members", group = group }, fn)
end

-- add_members / add_to_groups: one outcome per item.
local function bulk(t, op)
  local res, first = {}, nil
  local b <close> = t:batch()
  b:hold()
  b:submit(op)
  while true do
    local kind, _, ok, x, code, status, item = b:next()
    if kind == nil then break end
    if kind == "done" and item then
      res[item] = result(t, ok, x, code, status)
      if not ok and not first then first = { x, code } end
    end
  end
  if not first then return true, res end
  return nil, first[1], first[2], res
end

function T:add_members(group, names)
  check(group, "string", 1, "add_members")
  check(names, "table", 2, "add_members")
  return bulk(self, { kind = "add_members", group = group, list = names })
end

function T:add_to_groups(name, groups)
  check(name, "string", 1, "add_to_groups")
  check(groups, "table", 2, "add_to_groups")
  return bulk(self, { kind = "add_to_groups", name = name, list = groups })
end

function T:leads(names)
  check(names, "table", 1, "leads")
  local res = {}
  local ok, msg, code, err = drain(self, { kind = "leads", list = names }, "leads", function(name, key, is_component)
    -- "lead", name, key or id, is_component; keyed by lower(name) as plan.lua
    local k = lower(name)
    local l = res[k]
    if not l then l = { projects = {}, components = {} }; res[k] = l end
    local list = is_component and l.components or l.projects
    list[#list + 1] = key
  end)
  if not ok then return nil, msg, code, err end
  return res
end


---------------------------------------------------------------- snapshot

-- The progress callback of a snapshot, throttled; nil without one.
local function progress_of(opts)
  local fn = opts.progress
  if fn == nil then return nil end
  if type(fn) ~= "function" then error("snapshot: field 'progress': expected a function", 3) end
  local interval = opts.progress_interval
  if interval ~= nil and (type(interval) ~= "number" or interval < 0) then
    error("snapshot: field 'progress_interval': expected seconds >= 0", 3)
  end
  return { fn = fn, interval = interval or 0.1, last = 0 }
end

-- Calls the progress function when final or its interval has passed.
-- true, or false and the error.
local function progress(p, done, what, final)
  if not p or (not final and p.last > 0 and monotonic() - p.last < p.interval) then return true end
  p.last = monotonic()
  return xpcall(p.fn, core.traceback, done, final and done or nil, what)
end

local Read = {}
Read.__index = Read

function Read:close()
  if self.batch then self.batch:close() end
  self.batch = nil
end
Read.__close = Read.close

-- Whether the read's requests have all ended (well or not): t:snapshot{
-- started = read } then returns without waiting for the network.
function Read:ended()
  return not self.batch or self.batch:running() == 0
end

function T:snapshot_start(opts)
  if opts ~= nil then check(opts, "table", 1, "snapshot_start") end
  local b = self:batch(true)
  local read = setmetatable({ target = self, batch = b, before = self:requests(), t0 = monotonic() }, Read)
  if opts and opts.compact then
    read.set = accountset.new() -- the pages' records go in as they arrive
    b:feed(read.set)
  end
  b:submit{ kind = "snapshot" }
  return read
end

-- The read a snapshot takes: opts.started's, or a new one.
local function take_read(t, opts)
  local read = opts.started
  if read == nil then return t:snapshot_start{ compact = opts.compact } end
  if getmetatable(read) ~= Read or read.target ~= t or not read.batch then
    error("snapshot: field 'started': not an unused read of this target", 3)
  end
  return read
end

-- Adds account a (a listing's record) to the snapshot s under key k.
local function add_account(s, k, a)
  a.groups = {}
  s.index[k] = a
  s.n = s.n + 1
  s.accounts[s.n] = a
  return a
end

-- Takes one page event into s; true, or false and a progress error. A
-- members page is slim (names): the whole record of a member is fetched
-- (b:record) only when the account listing has not brought it yet.
local function take_page(s, b, kind, page, group)
  if s.set and kind ~= "groups" then -- b:feed: page is the count, the accounts went into s.set
    if kind == "accounts" then
      s.nacc = s.nacc + page
      return progress(s.progress, s.nacc, "accounts")
    end
    s.nmem = s.nmem + page
    return progress(s.progress, s.nmem, "memberships")
  end
  local index = s.index
  if kind == "accounts" then
    for i = 1, #page do
      local a = page[i]
      local k = lower(a.name)
      local known = index[k]
      if not known then
        add_account(s, k, a)
      else
        for f, v in pairs(a) do known[f] = v end -- the listing's record wins
      end
    end
    s.nacc = s.nacc + #page
    return progress(s.progress, s.nacc, "accounts")
  elseif kind == "members" then
    for i = 1, #page do
      local k = lower(page[i])
      local a = index[k] or add_account(s, k, b:record(i))
      local gs = a.groups
      gs[#gs + 1] = group
    end
    s.nmem = s.nmem + #page
    return progress(s.progress, s.nmem, "memberships")
  end

  local groups = s.groups
  for i = 1, #page do groups[#groups + 1] = page[i] end
  return true
end

-- The snapshot s read, once the read ended well.
local function finish(t, s, read, partial)
  local p = s.progress
  local ok, err = progress(p, s.nacc, "accounts", true)
  if ok then ok, err = progress(p, s.nmem, "memberships", true) end
  if not ok then return callback_failed(t, "progress", err) end
  return { accounts = s.set or s.accounts, groups = s.groups, complete = true, groups_partial = partial or nil,
           requests = t:requests() - read.before, time = monotonic() - read.t0 }
end

function T:snapshot(opts)
  if opts ~= nil then check(opts, "table", 1, "snapshot") end
  opts = opts or {}
  local s = { accounts = {}, index = {}, groups = {}, n = 0, nacc = 0, nmem = 0,
              progress = progress_of(opts) }
  local read <close> = take_read(self, opts)
  local b = read.batch
  b:hold()
  s.set = read.set
  if opts.compact and not s.set then -- a read started plain: its pages go in as they are taken
    s.set = accountset.new()
    b:feed(s.set)
  end

  while true do
    -- a page: kind, tag, page, group; done: ok, message, code, status, item, partial
    local kind, _, page, x, code, status, _, partial = b:next()
    if kind == nil then return fail(self, "target: the snapshot ended without a result", "EHTTP") end
    if kind == "done" then
      read:close()
      if not page then return fail(self, x, code, status) end
      return finish(self, s, read, partial)
    end

    local ok, err = take_page(s, b, kind, page, x)
    if not ok then return callback_failed(self, "progress", err) end
  end
end


---------------------------------------------------------------- apply

-- The raw operation of each kind of plan op (false: none, a link; an
-- add_member goes out in bulk with the others of its group). Their order
-- is usersync.targets.ORDER.
local RAW = {
  create_group = "create_group", create_user = "create_user", link = false,
  update_user = "update_user", rename_user = "rename_user", reactivate_user = "reactivate_user",
  add_member = "add_members", remove_member = "remove_member", handover_lead = "handover_lead",
  deactivate_user = "deactivate_user", delete_user = "delete_user",
}
local RANK = targets.RANK

-- Op i's raw kind and plan rank; an op that is no table or of an unknown
-- kind raises.
local function kind_of(ops, i, what)
  local op = ops[i]
  if type(op) ~= "table" then error(("%s: op %d is not a table"):format(what, i), 0) end
  local k = op.kind
  local rank = type(k) == "string" and rawget(RANK, k)
  if not rank or RAW[k] == nil then
    error(("apply: op %d has an unknown kind '%s'"):format(i, type(k) == "string" and k or "?"), 0)
  end
  return RAW[k], rank
end

local function to(change)
  return type(change) == "table" and change.to or nil
end

-- The raw op of plan op `op` (number i, raw kind `kind`).
local function raw_op(op, i, kind)
  local r = { kind = kind, tag = i, name = op.name, id = op.id } -- id: the service's (SCIM)

  if kind == "create_group" then
    r.group = op.group
  elseif kind == "create_user" then
    r.display_name, r.email, r.password = op.display_name, op.email, op.password
    r.external_id = op.okta_id -- SCIM: the user's externalId
  elseif kind == "update_user" then
    local ch = type(op.changes) == "table" and op.changes or {}
    r.display_name, r.email = to(ch.display_name), to(ch.email)
  elseif kind == "rename_user" then
    r.name, r.to = op.from, op.to
  elseif kind == "remove_member" then
    r.group = op.group
  elseif kind == "handover_lead" then
    r.to, r.to2 = op.to_project_lead, op.to_component_lead
    r.list = type(op.projects) == "table" and op.projects or nil
    r.list2 = type(op.components) == "table" and op.components or nil
  end
  return r
end

-- Submits the add_member ops numbered in idx, one bulk job per group. The
-- accounts' ids the ops carry (op.id, SCIM) go with the names (list2,
-- "" where unknown), so the service needs no lookup by name for them.
local function submit_adds(b, ops, idx)
  local by, order = {}, {}
  for _, i in ipairs(idx) do
    local op = ops[i]
    local g, name = op.group, op.name
    if g == nil then error(("apply: add_member op %d has no group"):format(i), 0) end
    if type(name) ~= "string" then error(("apply: add_member op %d has no name"):format(i), 0) end
    local l = by[g]
    if not l then l = { names = {}, tags = {}, ids = {} }; by[g] = l; order[#order + 1] = g end
    local n = #l.names + 1
    l.names[n], l.tags[n], l.ids[n] = name, i, type(op.id) == "string" and op.id or ""
    l.has_ids = l.has_ids or op.id ~= nil
  end
  for _, g in ipairs(order) do
    local l = by[g]
    b:submit{ kind = "add_members", group = g, list = l.names, tags = l.tags,
              list2 = l.has_ids and l.ids or nil }
  end
end

-- Submits ops[i] for each i of idx to batch b; the links' numbers are
-- returned (they need no request).
local function submit_ops(b, ops, idx)
  local links, adds = {}, {}
  for _, i in ipairs(idx) do
    local kind = kind_of(ops, i, "apply")
    if kind == false then
      links[#links + 1] = i
    elseif kind == "add_members" then
      adds[#adds + 1] = i
    else
      b:submit(raw_op(ops[i], i, kind))
    end
  end
  if #adds > 0 then submit_adds(b, ops, adds) end
  return links
end

-- Reports op i's outcome: to a.cb (true, or false and its error), or
-- into a.results.
local function report(a, i, ok, x, code, status)
  if not a.cb then
    a.results[i] = result(a.t, ok, x, code, status)
    return true
  end
  if ok then return xpcall(a.cb, core.traceback, a.ops[i], true, x) end
  return xpcall(a.cb, core.traceback, a.ops[i], fail(a.t, x, code, status))
end

-- Reports the links (no request) of a as done.
local function report_links(a, links)
  for _, i in ipairs(links) do
    local ok, err = report(a, i, true, "no request needed")
    if not ok then return false, err end
    a.nok = a.nok + 1
  end
  return true
end

-- Reports the outcomes of batch b that are ready (wait as b:next's; nil:
-- until the batch is done). true, or false and a callback's error.
local function deliver(a, b, wait)
  while true do
    local kind, i, ok, x, code, status = b:next(wait)
    if wait then wait = 0 end -- the engine is driven once at most
    if kind == nil then return true end
    if kind == "done" then
      if ok then a.nok = a.nok + 1 else a.nfail = a.nfail + 1 end
      local rok, err = report(a, i, ok, x, code, status)
      if not rok then return false, err end
    end
  end
end

-- Sends the ops numbered in idx as one batch and reports each outcome.
local function apply_bucket(a, idx)
  local b <close> = a.t:batch()
  b:hold()
  local ok, err = report_links(a, submit_ops(b, a.ops, idx))
  if not ok then return false, err end
  return deliver(a, b)
end

function T:apply(ops, cb, opts)
  check(ops, "table", 1, "apply")
  if cb ~= nil then check(cb, "function", 2, "apply") end
  local phases = true
  if type(opts) == "table" and opts.phases ~= nil then phases = not not opts.phases end

  local buckets, nb = {}, 1
  for i = 1, #ops do
    local _, r = kind_of(ops, i, "apply")
    r = phases and r or 1
    if r > nb then nb = r end
    buckets[r] = buckets[r] or {}
    table.insert(buckets[r], i)
  end

  local a = { t = self, ops = ops, cb = cb, results = {}, nok = 0, nfail = 0 }
  for r = 1, nb do
    if buckets[r] then
      local ok, err = apply_bucket(a, buckets[r])
      if not ok then return callback_failed(self, "apply", err) end
    end
  end
  return { ok = a.nok, failed = a.nfail, results = not cb and a.results or nil }
end

local Pending = {}
Pending.__index = Pending

function Pending:close()
  if self.batch then self.batch:close() end
  self.batch = nil
end
Pending.__close = Pending.close

function T:apply_start(ops)
  check(ops, "table", 1, "apply_start")
  local all = {}
  for i = 1, #ops do
    kind_of(ops, i, "apply_start") -- every op checked before anything is sent
    all[i] = i
  end
  local b = self:batch()
  b:hold()
  local p = setmetatable({ t = self, batch = b, ops = ops }, Pending)
  p.links = submit_ops(b, ops, all)
  return p
end

function Pending:poll(cb, wait)
  check(cb, "function", 1, "poll")
  wait = wait or 0
  local b = self.batch
  if not b then return false end

  local a = { t = self.t, ops = self.ops, cb = cb, nok = 0, nfail = 0 }
  local links = self.links
  self.links = {}
  local ok, err = report_links(a, links)
  if ok then ok, err = deliver(a, b, 0) end
  if ok and a.nok + a.nfail == 0 and wait > 0 and b:pending() > 0 then
    ok, err = deliver(a, b, wait)
  end
  if not ok then
    self:close()
    return callback_failed(self.t, "apply", err)
  end

  if b:pending() == 0 then
    self:close()
    return false
  end
  return true
end

return M
