-- usersync.explain: `usersync explain USER [--target T]`, one Okta user's
-- way through the policy: the Okta record, each hook's answer with the
-- config rule behind it (attribute mapping, group include/exclude, the
-- group map or rename rule, the defaults), the account it is linked to,
-- and what a plan of this user would change and why. Works before the
-- first sync: without a store the plan is planned against an empty one in
-- memory (nothing linked), and no file is created.
--
--   local explain = require "usersync.explain"
--   local doc, err, code = explain.build(cfg, "ann@example.com", { target = "jira" })
--   io.write(explain.text(doc))         -- or explain.json(doc): usersync.explain/1
--
-- Reads Okta (the user, their groups, their app assignment: 3 requests per
-- sync entry) and plans through the engine (engine:plan{ user = ... }), so
-- the plan shown is the one `usersync plan --user USER` prints. Writes
-- nothing to a server; the store only as `plan` does.
local engine = require "usersync.engine"
local plan = require "usersync.plan"
local source = require "usersync.source"
local state = require "usersync.state"
local secrets = require "usersync.secrets"
local attributes = require "usersync.attributes"
local report = require "usersync.report"

local M = {}

local EXIT_FAILED, EXIT_USAGE = 1, 2

-- Opens the engine on the configured store when it exists, else on an
-- empty store in memory (before the first sync; nothing is created).
-- Returns engine, store_exists | nil, message.
function M.open_engine(cfg, opts)
  local f = io.open(cfg.state, "rb")
  local exists = f ~= nil
  if f then f:close() end
  local use = cfg
  if not exists then
    use = setmetatable({ state = ":memory:" }, { __index = cfg })
  end
  local e, err = engine.open(use, opts)
  if not e then return nil, err end
  return e, exists
end

-- The sync entries that feed target `tname` (all of them without one).
function M.entries_for(cfg, tname)
  local out = {}
  for _, s in ipairs(cfg.sync) do
    local hit = tname == nil
    for _, t in ipairs(s.targets) do hit = hit or t == tname end
    if hit then out[#out + 1] = s end
  end
  return out
end

-- nil when `tname` names a configured target (or is nil), else the
-- message of the usage error.
function M.unknown_target(cfg, tname)
  if tname == nil or cfg.targets[tname] then return nil end
  local names = {}
  for name in pairs(cfg.targets) do names[#names + 1] = name end
  table.sort(names)
  local near = require("usersync.cli").nearest(tname, names)
  return ("no target '%s' (known: %s)%s"):format(tname, table.concat(names, ", "),
    near and ("; did you mean " .. near .. "?") or "")
end

-- The profile fields explain shows: the ones the default mapping reads and
-- those the entry's attribute mapping names.
local PROFILE_FIELDS = { "login", "email", "firstName", "lastName", "displayName" }

local function profile_of(u, entries)
  local p, out, seen = u.profile or {}, {}, {}
  local function add(k)
    if seen[k] then return end
    seen[k] = true
    local v = p[k]
    if type(v) == "table" or type(v) == "boolean" then
      -- an array or boolean attribute: shown as JSON, not as "not set" (a
      -- mapping that names it is a policy error, which must make sense)
      local ok, text = pcall(require("usersync.json").encode, v)
      out[#out + 1] = { field = k, value = ok and text or tostring(v), json = true }
    else
      out[#out + 1] = { field = k, value = (type(v) == "string" or type(v) == "number") and tostring(v) or nil }
    end
  end
  for _, k in ipairs(PROFILE_FIELDS) do add(k) end
  for _, s in ipairs(entries) do
    for _, f in ipairs(attributes.FIELDS) do
      local spec = s.attributes and s.attributes[f] and attributes.parse(s.attributes[f])
      for _, path in ipairs(spec and spec.fields or {}) do
        local k = path:match("^profile%.(.+)$")
        if k then add(k) end
      end
    end
  end
  return out
end

-- Whether Okta user u is in the scope of source config scfg, and how it
-- was told: true|false, how | nil, message, code.
local function scope_of(src, scfg, u)
  if scfg.app_id then
    local assigned, err, code = src:app_user(scfg.app_id, u.id)
    if assigned then
      return true, ("assigned to app %s (%s)"):format(scfg.app_id,
        assigned.scope == "GROUP" and "through a group" or "directly")
    end
    if code ~= "ENOTFOUND" then return nil, err, code end
    local app, aerr, acode = src:app(scfg.app_id)
    if not app then
      if acode == "ENOTFOUND" then return nil, ("the Okta app %s does not exist"):format(scfg.app_id), acode end
      return nil, aerr, acode
    end
    return false, ("not assigned to app %s (directly or through a group)"):format(scfg.app_id)
  end
  if scfg.filter or scfg.search then
    local key = scfg.search and "search" or "filter"
    local found, err, code = src:users{ [key] = ("(%s) and id eq \"%s\""):format(scfg[key], u.id) }
    if not found then return nil, err, code end
    if #found == 0 then return false, ("does not match the source's %s"):format(key) end
    return true, ("matches the source's %s"):format(key)
  end
  return true, "every Okta user (the source has no app_id, filter or search)"
end

-- Who answers a hook: the policy file, or the default policy.
local function by(pol, hook)
  return pol.custom[hook] and (hook .. " hook of " .. pol.path) or "default policy"
end

local function compile(p) return assert(require("usersync.re").compile(p)) end

-- Why the default include_group counts group g or not (its rules, in its order).
local function include_rule(g, settings)
  local gs = settings.groups or {}
  local name = g.profile and g.profile.name
  if type(name) ~= "string" or name == "" then return "the group has no name" end
  if gs.mode == "on_the_fly" and g.type == "BUILT_IN" then
    return "an Okta built-in group (never counts in on_the_fly mode)"
  end
  local include = gs.include or {}
  if #include > 0 then
    local hit
    for i, p in ipairs(include) do
      if compile(p):find(name) then hit = ("matches groups.include[%d] %q"):format(i, p); break end
    end
    if not hit then return "matches no groups.include pattern" end
    for j, p in ipairs(gs.exclude or {}) do
      if compile(p):find(name) then return ("%s, but also groups.exclude[%d] %q"):format(hit, j, p) end
    end
    return hit
  end
  for j, p in ipairs(gs.exclude or {}) do
    if compile(p):find(name) then return ("matches groups.exclude[%d] %q"):format(j, p) end
  end
  if #(gs.exclude or {}) > 0 then return "matches no groups.exclude pattern" end
  return "no groups.include or exclude rules: every group counts"
end

-- Why the default groups hook gives each target group: { group = why }.
local function group_rules(ugroups, settings)
  local gs, out = settings.groups or {}, {}
  for _, g in ipairs(ugroups) do
    local name = g.profile.name
    if gs.mode == "on_the_fly" then
      local renamed
      for i, rule in ipairs(gs.rename or {}) do
        local r = compile(rule[1])
        if r:find(name) then
          renamed = r:gsub(name, rule[2], 1)
          out[renamed:lower()] = ("Okta group %q renamed by groups.rename[%d] { %q, %q }")
            :format(name, i, rule[1], rule[2])
          break
        end
      end
      if not renamed then out[name:lower()] = ("Okta group %q (on_the_fly: same name)"):format(name) end
    else
      local mapped = (gs.map or {})[name]
      for _, t in ipairs(type(mapped) == "table" and mapped or { mapped }) do
        out[t:lower()] = out[t:lower()] or ("Okta group %q via groups.map[%q]"):format(name, name)
      end
    end
  end
  return out
end

-- Each account field: its value and where it came from.
local function field_sources(pol, s, acct, base, ttype)
  local out = {}
  for _, f in ipairs(attributes.FIELDS) do
    local spec = s.attributes and s.attributes[f]
    local from
    if pol.custom.user and base and acct and acct[f] ~= base[f] then
      from = "user hook of " .. pol.path
    elseif spec then
      from = ("attributes.%s = %q"):format(f, spec)
    else
      from = "default: " .. attributes.DEFAULTS[f]
    end
    if f == "name" and ttype == "confluence" and not (pol.custom.user and from:find("^user hook")) then
      from = from .. " (Confluence: lowercase, \\ , + < > ' \" and spaces as _)"
    end
    out[#out + 1] = { field = f, value = acct and acct[f], from = from }
  end
  return out
end

local function copy_list(t)
  local out = {}
  for i, v in ipairs(t or {}) do out[i] = v end
  return out
end

-- The hooks' answers for Okta user u on target tname of entry s.
local function hooks_for(pol, s, ctx, u, groups, linked)
  local t = {}
  local ok, base = pcall(require("usersync.scripts.default_policy").user, u, ctx)
  if not ok then base = nil end
  local acct, err = pol:user(u, ctx)
  t.user_hook = { by = by(pol, "user"), result = acct, error = err and secrets.mask(err) }
  t.attributes = field_sources(pol, s, acct, base, ctx.target_type)

  -- include_group, for each of the user's Okta groups
  local counted = {}
  t.okta_groups, t.include_by = {}, by(pol, "include_group")
  for _, g in ipairs(groups) do
    local yes, gerr = pol:include_group(g, ctx)
    local rule = gerr and ("error: " .. secrets.mask(gerr))
      or (pol.custom.include_group and by(pol, "include_group")) or include_rule(g, s)
    t.okta_groups[#t.okta_groups + 1] = { id = g.id, name = g.profile and g.profile.name, type = g.type,
      counts = yes == true, rule = rule }
    if yes then counted[#counted + 1] = g end
  end
  table.sort(counted, function(a, b) return a.profile.name < b.profile.name end)
  if not acct or not acct.active then return t end

  -- groups and default_groups: the target groups with what put them there
  local names, nerr = pol:groups(u, counted, ctx)
  t.groups_hook = { by = by(pol, "groups"), result = names, error = nerr and secrets.mask(nerr) }
  local all, aerr = pol:default_groups(acct, false, ctx)
  local new, werr = pol:default_groups(acct, true, ctx)
  t.default_groups_hook = { by = by(pol, "default_groups"), all_users = all, new_users = new,
                            error = (aerr or werr) and secrets.mask(aerr or werr) }
  local why = pol.custom.groups and {} or group_rules(counted, s)
  local rows, seen = {}, {}
  local function add(g, from)
    if seen[g:lower()] then return end
    seen[g:lower()] = true
    rows[#rows + 1] = { group = g, from = from }
  end
  for _, g in ipairs(names or {}) do add(g, why[g:lower()] or by(pol, "groups")) end
  local all_set = {}
  for _, g in ipairs(all or {}) do
    all_set[g:lower()] = true
    add(g, pol.custom.default_groups and by(pol, "default_groups") or "defaults.all_users")
  end
  for _, g in ipairs(new or {}) do
    if not all_set[g:lower()] then
      add(g, (pol.custom.default_groups and by(pol, "default_groups") or "defaults.new_users")
        .. (linked and " (given when usersync created the account)" or " (given when usersync creates the account)"))
    end
  end
  t.target_groups = rows
  t.groups_hook.result = names and copy_list(names) or nil
  return t
end

-- One plan operation as explain shows it.
local function op_row(o)
  local l = report.LABEL[o.kind] or { "?", o.kind }
  local what = report.describe(o)
  if o.kind == "create_user" then
    what = what .. (o.display_name and (" %q"):format(o.display_name) or "") .. (o.email and (" <" .. o.email .. ">") or "")
  end
  return { kind = o.kind, sign = l[1], label = l[2], subject = o.subject, text = what,
           reason = o.reason and secrets.mask(o.reason) or nil }
end

-- The part of target plan tp that concerns Okta user `id` (its ops, and the
-- conflicts, errors and notes that name the user or the account).
local function plan_part(tp, id, names)
  local out = { ops = {}, conflicts = {}, errors = {}, notes = {},
                read_error = tp.read_error and secrets.mask(tp.read_error) }
  local function names_user(text)
    text = tostring(text or ""):lower()
    for _, n in ipairs(names) do
      if n ~= "" and text:find(n:lower(), 1, true) then return true end
    end
    return false
  end
  for _, o in ipairs(tp.ops) do
    if o.okta_id == id or (not o.okta_id and names_user(o.subject)) then out.ops[#out.ops + 1] = op_row(o) end
  end
  for _, c in ipairs(tp.conflicts) do
    if c.okta_id == id or names_user(c.message) then out.conflicts[#out.conflicts + 1] = secrets.mask(c.message) end
  end
  for _, e in ipairs(tp.errors) do
    if e.okta_id == id then out.errors[#out.errors + 1] = secrets.mask(tostring(e.message)) end
  end
  for _, n in ipairs(tp.notes) do
    if names_user(n) then out.notes[#out.notes + 1] = secrets.mask(n) end
  end
  return out
end

local function find_target(entry_plan, tname)
  for _, tp in ipairs(entry_plan and entry_plan.targets or {}) do
    if tp.target == tname then return tp end
  end
end

-- The explanation of Okta user `who` (login or id) as data (see M.json).
-- opts: { target = name }. Returns doc | nil, message, exit code.
function M.build(cfg, who, opts)
  opts = opts or {}
  local bad = M.unknown_target(cfg, opts.target)
  if bad then return nil, bad, EXIT_USAGE end
  local entries = M.entries_for(cfg, opts.target)

  local e, exists = M.open_engine(cfg, { trigger = "manual" })
  if not e then return nil, exists, EXIT_FAILED end
  local _ <close> = setmetatable({}, { __close = function() e:close() end })

  -- The Okta record and groups, from each source the entries read (sync
  -- entries of several sources each know the user by their own id).
  local read = {}
  local function okta_user(source_name)
    local r = read[source_name]
    if r then return r end
    local src = e:source(source_name)
    local u, err, code = src:user(read.login or who)
    if not u then
      r = { missing = code == "ENOTFOUND", error = err }
    else
      local groups, gerr = src:user_groups(u.id)
      if not groups then
        r = { error = ("reading the groups of %s failed: %s"):format(who, tostring(gerr)) }
      else
        table.sort(groups, function(a, b) return tostring(a.profile and a.profile.name) < tostring(b.profile and b.profile.name) end)
        r = { user = u, groups = groups }
      end
    end
    read[source_name] = r
    return r
  end

  local first = okta_user(entries[1].source)
  if first.missing then
    return nil, ("no Okta user '%s' (by login or id) in source %s"):format(who, entries[1].source), EXIT_USAGE
  elseif first.error then
    return nil, ("reading Okta user %s failed: %s"):format(who, secrets.mask(tostring(first.error))), EXIT_FAILED
  end
  local u = first.user
  local login = u.profile and u.profile.login or u.id
  read.login = login
  local doc = { schema = "usersync.explain/1", store = { path = cfg.state, exists = exists },
                user = { id = u.id, login = login, status = u.status, profile = profile_of(u, entries) },
                syncs = {} }

  -- The plan of this user, as `usersync plan --user` makes it.
  local run_plan, perr, pcode = e:plan{ user = login }
  if not run_plan then return nil, ("planning %s failed: %s"):format(who, secrets.mask(tostring(perr))), pcode or EXIT_FAILED end
  local plans = {}
  for _, sp in ipairs(run_plan.syncs) do plans[sp.name] = sp end

  for _, s in ipairs(entries) do
    local scfg = cfg.sources[s.source]
    local r = okta_user(s.source)
    if r.error and not r.missing then
      return nil, ("reading Okta user %s in source %s failed: %s"):format(login, s.source, secrets.mask(tostring(r.error))),
        EXIT_FAILED
    end
    local in_scope, how, scode = false, ("source %s has no user %s"):format(s.source, login), nil
    local su, groups = r.user or u, r.groups -- this source's record of the user
    if r.user then
      in_scope, how, scode = scope_of(e:source(s.source), scfg, su)
    end
    if in_scope == nil then
      return nil, ("reading the scope of %s in source %s failed: %s"):format(who, s.source, secrets.mask(tostring(how))),
        scode == "ENOTFOUND" and EXIT_USAGE or EXIT_FAILED
    end
    local pol, polerr = e:policy(s)
    if not pol then return nil, polerr, EXIT_USAGE end
    local sdoc = { name = s.name, source = s.source, in_scope = in_scope, scope = how,
                   policy = s.policy or "default policy", targets = {} }
    local entry_plan = plans[s.name]
    if entry_plan and entry_plan.read and entry_plan.read.failed then
      sdoc.read_error = secrets.mask(tostring(entry_plan.read.problems and entry_plan.read.problems[1]))
    end
    for _, tname in ipairs(s.targets) do
      if opts.target == nil or opts.target == tname then
        local ttype = cfg.targets[tname].type
        local ctx = plan.context{ sync = s, target = { name = tname, type = ttype },
          status_map = source.status_map(scfg),
          kv = { get = function(ns, key) return e.db:kv(ns):get(key) end } }
        local linked = r.user and state.link(e.db, s.name, tname, su.id) or nil
        local active = ctx.is_active(su.status)
        local t = { target = tname, type = ttype,
          status = { okta = su.status, account = active == nil and "skip" or (active and "active" or "inactive") },
          linked = linked and { account = linked.account_name, since = linked.first_seen,
                                created_by_us = linked.created_by_us } or nil }
        if in_scope then
          for k, v in pairs(hooks_for(pol, s, ctx, su, groups, linked)) do t[k] = v end
        end
        if linked and not in_scope then
          local action, derr = pol:deprovision({ name = linked.account_name }, "no longer in scope", ctx)
          t.deprovision_hook = { by = by(pol, "deprovision"), result = action, error = derr and secrets.mask(derr) }
        end
        local names = { login, su.id }
        if t.user_hook and t.user_hook.result then names[#names + 1] = t.user_hook.result.name end
        if linked then names[#names + 1] = linked.account_name end
        local tp = find_target(entry_plan, tname)
        t.plan = tp and plan_part(tp, su.id, names) or { ops = {}, conflicts = {}, errors = {}, notes = {} }
        sdoc.targets[#sdoc.targets + 1] = t
      end
    end
    doc.syncs[#doc.syncs + 1] = sdoc
  end
  return doc
end

---------------------------------------------------------------- output

local function q(v) return v == nil and "-" or ("%q"):format(tostring(v)) end

-- The readable explanation.
function M.text(doc)
  local out = {}
  local function w(fmt, ...) out[#out + 1] = (select("#", ...) > 0 and fmt:format(...) or fmt) .. "\n" end
  local u = doc.user
  w("Okta user %s (%s), status %s", u.login, u.id, tostring(u.status))
  for _, p in ipairs(u.profile) do
    w("  profile.%-14s %s", p.field, p.json and p.value or p.value and q(p.value) or "(not set)")
  end
  if not doc.store.exists then
    w("store %s: does not exist yet (before the first sync): nothing is linked, planned as a first sync", doc.store.path)
  end
  for _, s in ipairs(doc.syncs) do
    w("")
    w("sync %q (source %s, policy %s)", s.name, s.source, s.policy)
    w("  scope: %s", (s.in_scope and "in scope, " or "NOT in scope, ") .. s.scope)
    if s.read_error then w("  ! reading Okta failed: %s", s.read_error) end
    for _, t in ipairs(s.targets) do
      w("")
      w("  target %s (%s)", t.target, t.type)
      w("    status: Okta %s -> %s", tostring(t.status.okta),
        t.status.account == "skip" and "skipped (no account is provisioned for this status)" or (t.status.account .. " account"))
      if t.linked then
        w("    linked: account %s since %s (%s)", t.linked.account, t.linked.since,
          t.linked.created_by_us and "created by usersync" or "adopted")
      else
        w("    linked: no account yet")
      end
      local uh = t.user_hook
      if uh then
        if uh.error then
          w("    user hook (%s): ERROR %s", uh.by, uh.error)
        elseif not uh.result then
          w("    user hook (%s): nil, the user is left out (no account)", uh.by)
        else
          w("    user hook (%s): %s", uh.by, uh.result.active and "active account" or "inactive account")
          for _, a in ipairs(t.attributes) do w("      %-13s %-32s from %s", a.field, q(a.value), a.from) end
        end
      end
      if t.okta_groups then
        w("    Okta groups (include_group: %s):", t.include_by)
        if #t.okta_groups == 0 then w("      (none)") end
        for _, g in ipairs(t.okta_groups) do
          w("      %-8s %-24s %s", g.counts and "counts" or "ignored", g.name or g.id, g.rule)
        end
      end
      if t.groups_hook and t.groups_hook.error then w("    groups hook (%s): ERROR %s", t.groups_hook.by, t.groups_hook.error) end
      if t.default_groups_hook and t.default_groups_hook.error then
        w("    default_groups hook (%s): ERROR %s", t.default_groups_hook.by, t.default_groups_hook.error)
      end
      if t.target_groups then
        w("    target groups (groups: %s; default_groups: %s):", t.groups_hook.by, t.default_groups_hook.by)
        if #t.target_groups == 0 then w("      (none)") end
        for _, g in ipairs(t.target_groups) do w("      %-24s %s", g.group, g.from) end
      end
      if t.deprovision_hook then
        w("    deprovision hook (%s): %s", t.deprovision_hook.by,
          t.deprovision_hook.error and ("ERROR " .. t.deprovision_hook.error) or tostring(t.deprovision_hook.result))
      end
      local p = t.plan
      w("    plan:")
      if p.read_error then w("      ! %s", p.read_error) end
      for _, o in ipairs(p.ops) do w("      %s %-14s %s  (%s)", o.sign, o.label, o.text, o.reason or "") end
      for _, c in ipairs(p.conflicts) do w("      ! conflict: %s", c) end
      for _, e in ipairs(p.errors) do w("      ! policy error: %s", e) end
      for _, n in ipairs(p.notes) do w("      . %s", n) end
      if #p.ops + #p.conflicts + #p.errors + #p.notes == 0 and not p.read_error then
        w("      nothing to change")
      end
    end
  end
  return table.concat(out)
end

-- The usersync.explain/1 JSON document.
function M.json(doc)
  local json = require "usersync.json"
  local function arrays(t)
    for k, v in pairs(t) do
      if type(v) == "table" then
        arrays(v)
        if #v > 0 or next(v) == nil then t[k] = json.array(v) end
      end
    end
    return t
  end
  return assert(json.encode(arrays(doc), { sort_keys = true }))
end

-- Whether the plan part of the explanation has a failure (exit 1): a
-- policy error, a conflict, a target or Okta read that failed.
function M.failed(doc)
  for _, s in ipairs(doc.syncs) do
    if s.read_error then return true end
    for _, t in ipairs(s.targets) do
      if t.plan.read_error or #t.plan.errors > 0 or #t.plan.conflicts > 0 then return true end
    end
  end
  return false
end


-- `usersync explain`: cli.lua parsed the options (opts) and arguments (pos).
function M.main(opts, pos, cli)
  local who = pos[1]
  if not who then cli.eprint("usersync explain: which user? (usersync explain LOGIN-OR-ID)"); return EXIT_USAGE end
  if pos[2] then cli.eprint("usersync explain: unexpected argument " .. pos[2]); return EXIT_USAGE end
  local cfg = cli.load_config(opts, "explain")
  if not cfg then return EXIT_USAGE end
  local doc, err, code = M.build(cfg, who, { target = opts.target })
  if not doc then cli.eprint("usersync explain: " .. err); return code end
  io.write(opts.json and (M.json(doc) .. "\n") or M.text(doc))
  return M.failed(doc) and EXIT_FAILED or 0
end

return M
