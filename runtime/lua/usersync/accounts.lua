-- usersync.accounts: `usersync accounts [--target T] [--unmanaged]
-- [--json|--csv]`, every account of a target with whether usersync
-- manages it, the Okta user it is linked to and since when, and for the
-- accounts usersync leaves alone, why.
--
--   local accounts = require "usersync.accounts"
--   local doc, err, code = accounts.build(cfg, { target = "jira" })
--   io.write(accounts.text(doc))      -- or accounts.csv(doc), accounts.json(doc)
--
-- Reads each target live (the whole account list, as a plan does), the
-- store's links, and Okta's users in scope of every sync entry that feeds
-- the target; plans each entry (usersync.plan, nothing applied) to tell
-- conflicts and adoptions. Writes nothing anywhere. Before the first sync
-- there is no store: every account is then unmanaged.
local explain = require "usersync.explain"
local plan = require "usersync.plan"
local source = require "usersync.source"
local snapshot = require "usersync.snapshot"
local state = require "usersync.state"
local secrets = require "usersync.secrets"

local M = {}

local EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
local lower = string.lower

-- Why an account nobody links is left alone (the reason's stable code).
M.WHY = {
  no_okta_user = "no Okta user in scope maps to it",
  conflict = "a conflict",
  excluded = "its Okta user is left out by the policy",
  adopt_next = "not linked yet: the next sync adopts it",
  no_sync = "no sync entry feeds this target",
}

-- What the Okta users of entry s say about the accounts of target tname:
-- by lowercase account name, { kind = "conflict"|"adopt_next"|"excluded",
-- message } (the first entry to say something about an account wins).
local function entry_findings(e, s, tname, snap, src, pol, found)
  local links = state.links(e.db, s.name, tname)
  local input = e:plan_input({ claimed = {}, single = true }, s, pol, src, tname, snap, links)
  local p = plan.build(input)

  local function say(name, kind, message)
    local key = lower(name)
    if not found[key] then found[key] = { kind = kind, message = secrets.mask(message), sync = s.name } end
  end
  local login_of = {}
  for _, u in ipairs(src.users) do login_of[u.id] = u.profile and u.profile.login or u.id end
  for _, c in ipairs(p.conflicts) do say(c.name, "conflict", "conflict: " .. c.message) end
  for _, o in ipairs(p.ops) do
    if o.kind == "link" then
      say(o.name, "adopt_next", ("not linked yet: the next sync adopts it for Okta user %s (%s)")
        :format(tostring(login_of[o.okta_id]), tostring(o.okta_id)))
    end
  end

  -- Users the policy leaves out: the account they would have by the
  -- default mapping, whatever their status.
  local ctx = plan.context(input)
  local any_status = setmetatable({ is_active = function() return true end }, { __index = ctx })
  local default = require "usersync.scripts.default_policy"
  for _, u in ipairs(src.users) do
    local acct, err = pol:user(u, ctx)
    if not acct and not err then
      local ok, would = pcall(default.user, u, any_status)
      if ok and would and would.name then
        local login = u.profile and u.profile.login or u.id
        say(would.name, "excluded", ("Okta user %s (%s, %s) is left out by the policy"):format(login, u.id,
          tostring(u.status)))
      end
    end
  end
end

-- The accounts of one target as rows, or nil, message.
local function target_rows(e, tname, entries, sources_read)
  local snap = snapshot.read(e, tname)
  if not snap.complete then
    return nil, ("reading %s failed: %s"):format(tname, secrets.mask(tostring(snap.error)))
  end

  local found, logins = {}, {}
  for _, s in ipairs(entries) do
    local pol, perr = e:policy(s)
    if not pol then return nil, perr end
    local src = sources_read[s.name]
    if not src then
      src = source.read(e, s, pol)
      if src.error then
        return nil, ("reading %s (sync %s) failed: %s"):format(s.source, s.name, secrets.mask(tostring(src.error)))
      end
      sources_read[s.name] = src
    end
    for _, u in ipairs(src.users) do logins[u.id] = u.profile and u.profile.login end
    entry_findings(e, s, tname, snap, src, pol, found)
  end

  local links = {}
  for _, l in ipairs(state.target_links(e.db, tname)) do
    local key = lower(l.account_name)
    links[key] = links[key] or l
  end

  local rows = {}
  for _, a in ipairs(snap.accounts) do
    local key = lower(a.name)
    local row = { account = a.name, display_name = a.display_name, email = a.email, active = a.active ~= false }
    local l = links[key]
    if l then
      row.managed = true
      row.sync, row.okta_id, row.linked_since, row.created_by_us = l.sync, l.okta_id, l.first_seen, l.created_by_us
      row.okta_login = logins[l.okta_id]
      row.reason = (l.created_by_us and "created by usersync" or "adopted")
        .. (row.okta_login and "" or "; its Okta user is no longer in scope")
    else
      row.managed = false
      local f = found[key]
      if #entries == 0 then
        row.why, row.reason = "no_sync", M.WHY.no_sync
      elseif f then
        row.why, row.reason, row.sync = f.kind, f.message, f.sync
      else
        row.why, row.reason = "no_okta_user", M.WHY.no_okta_user
      end
    end
    rows[#rows + 1] = row
  end
  table.sort(rows, function(x, y) return lower(x.account) < lower(y.account) end)
  return rows
end

-- The accounts of the target named (every target without one) as data.
-- opts: { target, unmanaged = true: only the accounts left alone, progress }.
-- Returns doc | nil, message, exit code.
function M.build(cfg, opts)
  opts = opts or {}
  local bad = explain.unknown_target(cfg, opts.target)
  if bad then return nil, bad, EXIT_USAGE end
  local names = {}
  if opts.target then names[1] = opts.target else
    for name in pairs(cfg.targets) do names[#names + 1] = name end
    table.sort(names)
  end

  local e, exists = explain.open_engine(cfg, { trigger = "manual", progress = opts.progress })
  if not e then return nil, exists, EXIT_FAILED end
  local _ <close> = setmetatable({}, { __close = function() e:close() end })

  local doc = { schema = "usersync.accounts/1", store = { path = cfg.state, exists = exists }, targets = {} }
  local sources_read = {}
  for _, tname in ipairs(names) do
    local rows, err = target_rows(e, tname, explain.entries_for(cfg, tname), sources_read)
    if not rows then return nil, err, EXIT_FAILED end
    local t = { target = tname, type = cfg.targets[tname].type, url = cfg.targets[tname].url,
                total = #rows, managed = 0, accounts = {} }
    for _, r in ipairs(rows) do
      if r.managed then t.managed = t.managed + 1 end
      if not (opts.unmanaged and r.managed) then t.accounts[#t.accounts + 1] = r end
    end
    doc.targets[#doc.targets + 1] = t
  end
  return doc
end

---------------------------------------------------------------- output

local function okta_of(r)
  if not r.okta_id then return "-" end
  return (r.okta_login and (r.okta_login .. " ") or "") .. "(" .. r.okta_id .. ")"
end

-- A name as the terminal shows it: control characters (an escape sequence
-- in an account name would clear the screen or retitle the window) and
-- bidi overrides written as \xNN / \uNNNN.
local function shown(s)
  s = tostring(s):gsub("[%z\1-\31\127]", function(c) return ("\\x%02x"):format(c:byte()) end)
  s = s:gsub("\194([\128-\159])", function(c) return ("\\u%04x"):format(c:byte()) end)
  return (s:gsub("\226([\128\129])([\170-\174\166-\169])", function(a, b)
    local cp = 0x2000 + (a:byte() - 128) * 64 + (b:byte() - 128)
    if (cp >= 0x202A and cp <= 0x202E) or (cp >= 0x2066 and cp <= 0x2069) then return ("\\u%04x"):format(cp) end
  end))
end

-- The readable table, one block per target.
function M.text(doc)
  local out = {}
  for i, t in ipairs(doc.targets) do
    if i > 1 then out[#out + 1] = "\n" end
    out[#out + 1] = ("%s (%s, %s): %d account%s, %d managed by usersync, %d left alone\n"):format(t.target, t.type, t.url,
      t.total, t.total == 1 and "" or "s", t.managed, t.total - t.managed)
    local head = { "ACCOUNT", "MANAGED", "ACTIVE", "OKTA USER", "LINKED SINCE", "WHY" }
    local rows = { head }
    for _, r in ipairs(t.accounts) do
      rows[#rows + 1] = { shown(r.account), r.managed and "yes" or "no", r.active and "yes" or "no", shown(okta_of(r)),
                          r.linked_since or "-",
                          shown((r.sync and r.managed) and (r.reason .. " (sync " .. r.sync .. ")") or r.reason) }
    end
    local width = {}
    for _, row in ipairs(rows) do
      for c = 1, #row - 1 do width[c] = math.max(width[c] or 0, utf8.len(row[c]) or #row[c]) end
    end
    for _, row in ipairs(rows) do
      local cells = {}
      for c = 1, #row - 1 do cells[c] = row[c] .. (" "):rep(width[c] - (utf8.len(row[c]) or #row[c])) end
      cells[#row] = row[#row]
      out[#out + 1] = "  " .. table.concat(cells, "  ") .. "\n"
    end
    if #t.accounts == 0 then out[#out + 1] = "  (none)\n" end
  end
  if not doc.store.exists then
    out[#out + 1] = ("\nstore %s does not exist yet (before the first sync): no account is linked\n"):format(doc.store.path)
  end
  return table.concat(out)
end

local CSV_COLUMNS = { "target", "account", "display_name", "email", "active", "managed", "sync", "okta_id",
                      "okta_login", "linked_since", "created_by_us", "why", "reason" }

-- RFC 4180 CSV with a header row, one row per account; fields written
-- as history's CSV (usersync.history.csv), whose leading quote keeps a
-- display name such as "=HYPERLINK(...)" text in a spreadsheet.
function M.csv(doc)
  local rows = {}
  for _, t in ipairs(doc.targets) do
    for _, r in ipairs(t.accounts) do rows[#rows + 1] = setmetatable({ target = t.target }, { __index = r }) end
  end
  return require("usersync.history").csv(CSV_COLUMNS, rows)
end

-- The usersync.accounts/1 JSON document.
function M.json(doc)
  local json = require "usersync.json"
  for _, t in ipairs(doc.targets) do json.array(t.accounts) end
  json.array(doc.targets)
  return assert(json.encode(doc, { sort_keys = true }))
end

-- `usersync accounts`: cli.lua parsed the options.
function M.main(opts, pos, cli)
  if pos[1] then cli.eprint("usersync accounts: unexpected argument " .. pos[1]); return EXIT_USAGE end
  if opts.json and opts.csv then cli.eprint("usersync accounts: --json and --csv exclude each other"); return EXIT_USAGE end
  local cfg = cli.load_config(opts, "accounts")
  if not cfg then return EXIT_USAGE end
  local reporter = cli.out.reporter
  local doc, err, code = M.build(cfg, { target = opts.target, unmanaged = opts.unmanaged,
    progress = function(ev) if reporter then pcall(reporter.event, reporter, ev) end end })
  if not doc then cli.eprint("usersync accounts: " .. err); return code end
  io.write(opts.json and (M.json(doc) .. "\n") or opts.csv and M.csv(doc) or M.text(doc))
  return EXIT_OK
end

return M
