-- usersync.status_page: renders the status page of `usersync serve`
-- (serve.status). Runs in a Lua state of its own on the server's request
-- threads (runtime/bind_server.c), one request at a time, after the server
-- has checked HTTP Basic auth. It reads the store through a connection of
-- its own (WAL: readers never wait for a run) and the live state serve
-- publishes (usersync.status). Server-rendered HTML, no JavaScript; every
-- value from the store, the config or Okta is escaped (usersync.html).
--
-- Pages:  GET /                      overview
--         GET /status/runs/ID        one run: its operations and what it could not do
--         GET /status/targets/NAME   the accounts usersync manages on a target
--         GET /status/style.css      the style sheet (usersync.status_css), /status/icon.svg
--         POST /status/sync          "sync now" for an entry or one user -> 303 /
-- The POST is refused (403) unless it comes from this page: a per-process
-- token in a hidden field, the same token in a SameSite=Strict cookie, and
-- an Origin (or Referer) of this server.
local html = require "usersync.html"
local json = require "usersync.json"
local time = require "usersync.time"
local crypto = require "usersync.crypto"
local history = require "usersync.history"
local log = require "usersync.log"

local M = {}
-- esc: element text (long unbroken runs get <wbr>); attr: attribute values and <title>
local esc, attr = html.text, html.esc

M.MAX_ROWS = 200     -- rows of a problems table
M.MAX_ACCOUNTS = 2000 -- rows of a target's accounts page

-- ---------------------------------------------------------------- helpers

local function iso(t)
  if type(t) == "number" then return time.format(math.floor(t)) end
  return t
end

-- "3 min ago" / "in 2 h" relative to now.
local function relative(t, now)
  local at = type(t) == "number" and t or time.parse(t or "")
  if not at then return "" end
  local d = at - now
  local a = math.abs(d)
  local text
  if a < 5 then return "now"
  elseif a < 90 then text = ("%d s"):format(math.floor(a + 0.5))
  elseif a < 5400 then text = ("%d min"):format(math.floor(a / 60 + 0.5))
  elseif a < 172800 then text = ("%d h"):format(math.floor(a / 3600 + 0.5))
  else text = ("%d days"):format(math.floor(a / 86400 + 0.5)) end
  return d < 0 and (text .. " ago") or ("in " .. text)
end

-- "2026-12-04 21:56:22 UTC" for a timestamp or Unix time.
local function utc(t)
  return (tostring(iso(t)):gsub("T", " "):gsub("%.%d+Z$", "Z"):gsub("Z$", " UTC"))
end

-- A <time> element: the UTC time and, after it, how long ago / until.
local function when(t, now)
  if t == nil then return '<span class="muted">never</span>' end
  local s = iso(t)
  local shown = utc(t)
  return ('<time datetime="%s">%s</time> <span class="muted">(%s)</span>'):format(attr(s), esc(shown),
    esc(relative(t, now)))
end

local function duration(sec)
  if not sec then return "–" end
  if sec < 1 then return ("%d ms"):format(math.floor(sec * 1000 + 0.5)) end
  if sec < 60 then return ("%.1f s"):format(sec) end
  if sec < 3600 then return ("%d min %d s"):format(sec // 60, math.floor(sec % 60)) end
  return ("%d h %d min"):format(sec // 3600, math.floor(sec % 3600) // 60)
end

local function badge(word)
  word = tostring(word or "?")
  local label = word:gsub("_", " ")
  return ('<span class="badge b-%s">%s</span>'):format(attr(word:gsub("[^%w_]", "")), esc(label))
end

local function counts_text(counts)
  local parts = {}
  for _, kind in ipairs(require("usersync.plan").ORDER) do
    if counts and counts[kind] then parts[#parts + 1] = ("%s %d"):format(kind:gsub("_", " "), counts[kind]) end
  end
  return #parts > 0 and table.concat(parts, ", ") or "no changes"
end

local function run_link(id)
  return ('<a href="/status/runs/%d">run %d</a>'):format(id, id)
end

-- A table whose rows turn into cards on a phone: cols = { {label, class} }.
local function table_open(b, caption, cols)
  b('<table class="stack">')
  if caption then b("<caption>", esc(caption), "</caption>") end
  b("<thead><tr>")
  for _, c in ipairs(cols) do
    b('<th scope="col"', c[2] and (' class="' .. c[2] .. '"') or "", ">", esc(c[1]), "</th>")
  end
  b("</tr></thead><tbody>")
end

-- One row: cells are raw HTML (escaped by the caller), labelled for phones.
local function row(b, cols, cells)
  b("<tr>")
  for i, c in ipairs(cols) do
    b('<td data-label="', attr(c[1]), '"', c[2] and (' class="' .. c[2] .. '"') or "", ">", cells[i] or "", "</td>")
  end
  b("</tr>")
end

local function page(ctx, title, body_fn)
  local b = html.buffer()
  b('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<meta name="robots" content="noindex">',
    "<title>", attr(title), " – usersync</title>",
    '<link rel="stylesheet" href="/status/style.css"><link rel="icon" href="/status/icon.svg" type="image/svg+xml">',
    "</head><body>",
    '<a class="skip" href="#main">Skip to content</a>',
    '<header class="top"><p><a href="/">usersync status</a>',
    ctx.version and (" · version " .. esc(ctx.version)) or "", "</p></header>",
    '<main id="main" tabindex="-1"><h1>', esc(title), "</h1>")
  body_fn(b)
  b("</main><footer>Rendered ", esc(utc(time.now())),
    " · read-only except “Sync now” · <a href=\"/metrics\">metrics</a></footer></body></html>\n")
  return b:text()
end

local function html_response(ctx, status, text, req)
  local cookie = ("usersync_csrf=%s; Path=/; HttpOnly; SameSite=Strict%s"):format(ctx.token,
    req.tls and "; Secure" or "")
  return { status = status, type = "text/html; charset=utf-8", body = text, cookie = cookie }
end

local function plain(status, text)
  return { status = status, type = "text/plain; charset=utf-8", body = text }
end

-- ---------------------------------------------------------------- store

local function db_of(ctx)
  if ctx.db then return ctx.db end
  local db, err = require("usersync.store").open(ctx.store, { busy_timeout_ms = 2000 })
  if not db then return nil, err end
  ctx.db = db
  return db
end

local function q(db, sql, ...)
  local rows, err = db:query(sql, ...)
  if not rows then error("store: " .. tostring(err), 0) end
  return rows
end

-- ---------------------------------------------------------------- overview

local function entry_card(b, ctx, e, i, snap, db, now)
  local src = (snap.sources or {})[e.source] or {}
  b('<section class="card" aria-labelledby="entry-', i, '"><h3 id="entry-', i, '">', esc(e.name), "</h3>")
  b('<dl class="facts"><dt>Source</dt><dd>', esc(e.source), ' <span class="muted">(', esc(src.type or "?"),
    src.url and (", " .. esc(src.url)) or "", ")</span></dd>")
  local ts = {}
  for _, t in ipairs(e.targets or {}) do
    local tc = (snap.targets or {})[t] or {}
    ts[#ts + 1] = esc(t) .. ' <span class="muted">(' .. esc(tc.type or "?") .. ")</span>"
  end
  b("<dt>Targets</dt><dd>", table.concat(ts, ", "), "</dd>")
  b("<dt>Schedule</dt><dd>", e.every and ("every " .. esc(e.every)) or '<span class="muted">not scheduled</span>', "</dd>")
  b("<dt>Next run</dt><dd>", e.next_at and when(e.next_at, now) or '<span class="muted">–</span>',
    e.requested and " (a full run was asked for by a group change)" or "", "</dd>")
  local last = history.runs(db, { sync = e.name, limit = 1 })[1]
  if last then
    b("<dt>Last run</dt><dd>", run_link(last.id), " ", badge(last.outcome), "<br>", when(last.started, now),
      "<br>", esc(last.trigger), ", ", esc(last.covers), ", ", esc(duration(last.duration)), "<br>",
      esc(counts_text(last.counts)),
      last.failed > 0 and (", " .. last.failed .. " failed") or "",
      (last.findings or 0) > 0 and (", " .. last.findings .. " not done") or "", "</dd>")
  else
    b('<dt>Last run</dt><dd class="muted">none yet</dd>')
  end
  local ok = db:first([[SELECT id, ended FROM runs WHERE sync = ? AND outcome = 'ok' AND scope IS NULL
      AND ended IS NOT NULL ORDER BY id DESC LIMIT 1]], e.name)
  b("<dt>Last full success</dt><dd>", ok and (when(ok.ended, now) .. " · " .. run_link(ok.id)) or
    '<span class="muted">never</span>', "</dd></dl>")
  -- sync now: the whole entry, or one user
  b('<form method="post" action="/status/sync" class="row">',
    '<input type="hidden" name="csrf" value="', ctx.token, '">',
    '<input type="hidden" name="sync" value="', attr(e.name), '">',
    '<button type="submit">Sync ', esc(e.name), " now</button></form>")
  b('<form method="post" action="/status/sync" class="row">',
    '<input type="hidden" name="csrf" value="', ctx.token, '">',
    '<input type="hidden" name="sync" value="', attr(e.name), '">',
    '<div class="field"><label for="user-', i, '">Okta login of one user</label>',
    '<input type="text" id="user-', i, '" name="user" required maxlength="256" autocomplete="off" spellcheck="false"></div>',
    '<button type="submit" class="secondary">Sync this user</button></form>')
  b("</section>")
end

local function in_progress(b, snap, db, now)
  local rows = q(db, [[SELECT r.id, r.sync, r.trigger, r.scope, r.pid, r.host, r.started,
      (SELECT count(*) FROM operations o WHERE o.run_id = r.id) AS planned,
      (SELECT count(*) FROM operations o WHERE o.run_id = r.id AND o.status IN ('done', 'failed', 'skipped')) AS finished
      FROM runs r WHERE r.outcome = 'running' ORDER BY r.id]])
  local live = snap.running
  b('<section aria-labelledby="h-progress"><h2 id="h-progress">Runs in progress</h2>')
  if #rows == 0 and not live then
    b('<p class="muted">No run in progress.</p></section>')
    return
  end
  if live and #rows == 0 then
    b("<p>", esc(live.sync or "every sync entry"), " (", esc(live.trigger), live.users and (", " .. live.users .. " user(s)") or "",
      ") started ", when(live.started, now), ": reading.</p>")
  end
  for _, r in ipairs(rows) do
    b('<div class="card"><h3>', run_link(r.id), " · ", esc(r.sync), "</h3><p>", esc(r.trigger),
      r.scope and (", " .. esc(r.scope)) or "", ", started ", when(r.started, now), ", process ", esc(r.pid),
      r.host and (" on " .. esc(r.host)) or "", "</p>")
    if r.planned > 0 then
      b('<div class="phase"><label for="ops-', r.id, '">Operations applied: ', r.finished, " of ", r.planned,
        '</label><progress id="ops-', r.id, '" max="', r.planned, '" value="', r.finished, '">',
        r.finished, " of ", r.planned, "</progress></div>")
    end
    if live and live.sync == r.sync then
      for k, ph in ipairs(live.phases or {}) do
        local label = ("%s %s: %s"):format(ph.phase == "okta" and "Reading" or ph.phase == "target" and "Reading" or "Applying to",
          tostring(ph.name), tostring(ph.state))
        local id = ("ph-%d-%d"):format(r.id, k)
        if ph.total and ph.total > 0 then
          local done = math.min(ph.done or 0, ph.total)
          b('<div class="phase"><label for="', id, '">', esc(label), " – ", done, " of ", ph.total, " ", esc(ph.what or ""),
            '</label><progress id="', id, '" max="', ph.total, '" value="', done, '">', done, " of ", ph.total, "</progress></div>")
        else
          b('<p class="phase">', esc(label), ph.done and (" – " .. ph.done .. " so far") or "", "</p>")
        end
      end
    end
    b("</div>")
  end
  b("</section>")
end

-- Failures and withheld changes, policy errors: from each entry's last
-- full run and the runs after it.
local function problems(b, snap, db)
  local failures, policy = {}, {}
  for _, e in ipairs(snap.entries or {}) do
    local base = db:first([[SELECT max(id) AS id FROM runs WHERE sync = ? AND scope IS NULL AND ended IS NOT NULL]], e.name)
    local from = base and base.id or 0
    for _, o in ipairs(q(db, [[SELECT o.run_id, o.target, o.kind, o.subject, o.error, o.code FROM operations o
        JOIN runs r ON r.id = o.run_id WHERE r.sync = ? AND r.id >= ? AND o.status = 'failed'
        ORDER BY o.run_id DESC, o.seq LIMIT ?]], e.name, from, M.MAX_ROWS)) do
      failures[#failures + 1] = { run = o.run_id, sync = e.name, target = o.target, what = "failed", kind = o.kind,
        subject = o.subject, reason = (o.error or "") .. (o.code and (" [" .. o.code .. "]") or "") }
    end
    for _, f in ipairs(q(db, [[SELECT f.run_id, f.target, f.kind, f.subject, f.okta_id, f.op, f.message FROM findings f
        JOIN runs r ON r.id = f.run_id WHERE r.sync = ? AND r.id >= ? ORDER BY f.run_id DESC, f.seq LIMIT ?]],
        e.name, from, M.MAX_ROWS)) do
      local item = { run = f.run_id, sync = e.name, target = f.target, what = f.kind, kind = f.op,
        subject = f.subject or f.okta_id, reason = f.message }
      if f.kind == "policy_error" then policy[#policy + 1] = item else failures[#failures + 1] = item end
    end
  end
  local cols = { { "Run" }, { "Target" }, { "What" }, { "Change" }, { "Account or group" }, { "Reason" } }
  b('<section aria-labelledby="h-problems"><h2 id="h-problems">Failures and withheld changes</h2>')
  if #failures == 0 then
    b('<p class="muted">None in the last full run of any sync entry or the runs since.</p>')
  else
    table_open(b, ("%d from the last full run of each sync entry and the runs since"):format(#failures), cols)
    for i, p in ipairs(failures) do
      if i > M.MAX_ROWS then break end
      row(b, cols, { run_link(p.run), esc(p.target), badge(p.what), esc(p.kind and p.kind:gsub("_", " ") or "–"),
        esc(p.subject or "–"), esc(p.reason) })
    end
    b("</tbody></table>")
  end
  b("</section>")
  local pcols = { { "Run" }, { "Target" }, { "User" }, { "Error" } }
  b('<section aria-labelledby="h-policy"><h2 id="h-policy">Policy errors</h2>')
  if #policy == 0 then
    b('<p class="muted">None in the last full run of any sync entry or the runs since.</p>')
  else
    table_open(b, nil, pcols)
    for i, p in ipairs(policy) do
      if i > M.MAX_ROWS then break end
      row(b, pcols, { run_link(p.run), esc(p.target), esc(p.subject or "–"), esc(p.reason) })
    end
    b("</tbody></table>")
  end
  b("</section>")
end

local function accounts(b, snap, db)
  local linked, groups = {}, {}
  for _, r in ipairs(q(db, [[SELECT target, count(DISTINCT lower(account_name)) AS n,
      sum(created_by_us) AS created FROM links GROUP BY target]])) do linked[r.target] = r end
  for _, r in ipairs(q(db, "SELECT target, count(*) AS n FROM owned_groups GROUP BY target")) do groups[r.target] = r.n end
  local names = {}
  for name in pairs(snap.targets or {}) do names[#names + 1] = name end
  table.sort(names)
  local cols = { { "Target" }, { "Type" }, { "Managed accounts", "num" }, { "Created by usersync", "num" },
                 { "Groups usersync created", "num" } }
  b('<section aria-labelledby="h-accounts"><h2 id="h-accounts">Managed accounts</h2>')
  table_open(b, nil, cols)
  for _, name in ipairs(names) do
    local l = linked[name] or { n = 0, created = 0 }
    row(b, cols, { ('<a href="/status/targets/%s">%s</a>'):format(html.url_encode(name), esc(name)),
      esc(snap.targets[name].type), tostring(l.n), tostring(l.created or 0), tostring(groups[name] or 0) })
  end
  b("</tbody></table></section>")
end

local function budget(b, snap, now)
  b('<section aria-labelledby="h-budget"><h2 id="h-budget">Okta rate limits</h2>')
  local list = snap.budget or {}
  if #list == 0 then
    b('<p class="muted">No Okta request since this server started.</p></section>')
    return
  end
  local cols = { { "Source" }, { "Endpoint" }, { "Remaining", "num" }, { "Limit", "num" }, { "Window resets" },
                 { "Waits / 429s", "num" } }
  table_open(b, "From the rate-limit headers of Okta's last answers", cols)
  for _, x in ipairs(list) do
    row(b, cols, { esc(x.source), esc(x.bucket), esc(x.remaining or "?"), esc(x.limit or "?"),
      x.reset and when(x.reset, now) or "–", esc(("%s / %s"):format(x.waits or 0, x.rate_limited or 0)) })
  end
  b("</tbody></table></section>")
end

local function hook(b, snap, req, now)
  b('<section aria-labelledby="h-hook"><h2 id="h-hook">Okta event hook</h2>')
  if not snap.hook then
    b('<p class="muted">No event hook configured (serve.okta_hook).</p>')
  else
    local st = req.stats or {}
    b("<p>At <code>", esc(snap.hook.path), "</code>: ", esc(st.deliveries or 0), " deliveries since start (",
      esc(st.accepted or 0), " accepted, ", esc(st.unauthorized or 0), " refused for their Authorization, ",
      esc((st.malformed or 0) + (st.too_large or 0)), " malformed or too large, ", esc(st.queue_full or 0),
      " while the queue was full); ", esc(st.events or 0), " events, ", esc(st.duplicates or 0), " duplicates.</p>")
    local list = req.deliveries or {}
    if #list == 0 then
      b('<p class="muted">No delivery since this server started.</p>')
    else
      local cols = { { "Received" }, { "Result" }, { "New events", "num" }, { "Duplicates", "num" } }
      table_open(b, "The last deliveries, newest first", cols)
      for _, d in ipairs(list) do
        row(b, cols, { when(d.at, now), badge(d.result), esc(d.events), esc(d.duplicates) })
      end
      b("</tbody></table>")
    end
  end
  b("<p>Users waiting to be synced (from events or the System Log): ", esc(snap.waiting or 0), ".")
  if snap.poll then
    b(" System Log poll every ", esc(snap.poll.every), " s, next ", when(snap.poll.next_at, now), ".")
  end
  b("</p></section>")
end

local function recent_runs(b, ctx, db, now)
  local runs = history.runs(db, { limit = ctx.runs })
  b('<section aria-labelledby="h-runs"><h2 id="h-runs">Recent runs</h2>')
  if #runs == 0 then
    b('<p class="muted">No run recorded yet.</p></section>')
    return
  end
  local cols = { { "Run" }, { "Started" }, { "Sync" }, { "Trigger" }, { "Covers" }, { "Duration", "num" },
                 { "Outcome" }, { "Changes" } }
  table_open(b, ("The last %d, newest first"):format(#runs), cols)
  for _, r in ipairs(runs) do
    local changes = esc(counts_text(r.counts))
    if r.failed > 0 then changes = changes .. (", %d failed"):format(r.failed) end
    if r.unknown > 0 then changes = changes .. (", %d sent, outcome unknown"):format(r.unknown) end
    if (r.findings or 0) > 0 then changes = changes .. (", %d not done"):format(r.findings) end
    row(b, cols, { run_link(r.id), when(r.started, now), esc(r.sync), esc(r.trigger), esc(r.covers),
      esc(duration(r.duration)), badge(r.outcome), changes })
  end
  b("</tbody></table></section>")
end

local function overview(ctx, req, snap, db)
  local now = time.now()
  return page(ctx, "Sync status", function(b)
    local args = req.args or {}
    if args.requested then
      b('<p class="notice" role="status">Sync now asked for <strong>', esc(args.requested), "</strong>",
        args.user and (" (user <strong>" .. esc(args.user) .. "</strong>)") or "",
        ": it starts as soon as the server is free and shows under Recent runs.</p>")
    end
    if not snap.entries then
      b('<p class="notice" role="status">The server is starting; reload in a moment.</p>')
    elseif snap.ready == false then
      b('<p class="notice" role="status"><strong>Not ready:</strong> ', esc(table.concat(snap.not_ready or {}, "; ")), "</p>")
    end
    b('<p class="muted">Server process ', esc(snap.pid or "?"), snap.started and (", up since " .. when(snap.started, now)) or "",
      ".</p>")
    in_progress(b, snap, db, now)
    b('<section aria-labelledby="h-entries"><h2 id="h-entries">Sync entries</h2><div class="cards">')
    for i, e in ipairs(snap.entries or {}) do entry_card(b, ctx, e, i, snap, db, now) end
    b("</div></section>")
    problems(b, snap, db)
    accounts(b, snap, db)
    recent_runs(b, ctx, db, now)
    budget(b, snap, now)
    hook(b, snap, req, now)
  end)
end

-- ---------------------------------------------------------------- run page

local function op_detail(d)
  if type(d) ~= "table" then return "" end
  local parts = {}
  if d.display_name then parts[#parts + 1] = "display name “" .. esc(d.display_name) .. "”" end
  if d.email then parts[#parts + 1] = "email " .. esc(d.email) end
  if type(d.changes) == "table" then
    for k, v in pairs(d.changes) do
      if type(v) == "table" then
        parts[#parts + 1] = esc(tostring(k):gsub("_", " ")) .. " “" .. esc(v.from) .. "” → “" .. esc(v.to) .. "”"
      end
    end
  end
  if d.from then parts[#parts + 1] = "from " .. esc(d.from) end
  return table.concat(parts, "; ")
end

local function run_page(ctx, id, db)
  local run, ops, findings, details = history.show(db, id)
  if not run then return nil end
  local now = time.now()
  return page(ctx, ("Run %d"):format(run.id), function(b)
    b('<p><a href="/">← Overview</a></p><dl class="facts">',
      "<dt>Sync entry</dt><dd>", esc(run.sync), "</dd>",
      "<dt>Outcome</dt><dd>", badge(run.outcome), "</dd>",
      "<dt>Trigger</dt><dd>", esc(run.trigger), " (", esc(run.command or "?"), ")</dd>",
      "<dt>Covers</dt><dd>", esc(run.covers), "</dd>",
      "<dt>Started</dt><dd>", when(run.started, now), "</dd>",
      "<dt>Ended</dt><dd>", run.ended and when(run.ended, now) or "not ended", "</dd>",
      "<dt>Duration</dt><dd>", esc(duration(run.duration)), "</dd>",
      "<dt>Changes</dt><dd>", esc(counts_text(run.counts)), "</dd>")
    if run.error then b("<dt>Error</dt><dd>", esc(run.error), "</dd>") end
    b("</dl>")
    b('<section aria-labelledby="h-ops"><h2 id="h-ops">Operations (', #ops, ")</h2>")
    if #ops == 0 then
      b('<p class="muted">This run planned no change.</p>')
    else
      local cols = { { "#", "num" }, { "Target" }, { "Operation" }, { "Account or group" }, { "Details" },
                     { "Outcome" }, { "Reason or error" } }
      table_open(b, nil, cols)
      for _, o in ipairs(ops) do
        row(b, cols, { tostring(o.seq), esc(o.target), esc(o.kind:gsub("_", " ")),
          esc(o.subject) .. ((o.group and o.group ~= o.subject) and (" in " .. esc(o.group)) or ""),
          op_detail(details[o.seq]),
          badge(o.status) .. (o.unsure and " (outcome unsure)" or ""),
          o.error and (esc(o.error) .. (o.code and (" [" .. esc(o.code) .. "]") or "")) or esc(o.reason or "") })
      end
      b("</tbody></table>")
    end
    b("</section>")
    b('<section aria-labelledby="h-findings"><h2 id="h-findings">Not done (', #findings, ")</h2>")
    if #findings == 0 then
      b('<p class="muted">Nothing withheld, no policy error, no conflict.</p>')
    else
      local cols = { { "#", "num" }, { "Target" }, { "What" }, { "Change" }, { "Subject" }, { "Reason" } }
      table_open(b, nil, cols)
      for _, f in ipairs(findings) do
        row(b, cols, { tostring(f.seq), esc(f.target), badge(f.kind), esc(f.op and f.op:gsub("_", " ") or "–"),
          esc(f.subject or f.okta_id or "–"), esc(f.message) })
      end
      b("</tbody></table>")
    end
    b("</section>")
  end)
end

local function target_page(ctx, name, snap, db)
  local t = (snap.targets or {})[name]
  if not t then return nil end
  local rows = q(db, [[SELECT account_name, okta_id, sync, created_by_us, first_seen, last_seen FROM links
      WHERE target = ? ORDER BY lower(account_name), sync LIMIT ?]], name, M.MAX_ACCOUNTS + 1)
  local now = time.now()
  return page(ctx, ("Managed accounts on %s"):format(name), function(b)
    b('<p><a href="/">← Overview</a></p><p>', esc(t.type), t.url and (" at " .. esc(t.url)) or "",
      ". Accounts usersync links to an Okta user (only these are ever deactivated or deleted).</p>")
    if #rows == 0 then
      b('<p class="muted">No managed account yet.</p>')
      return
    end
    local cols = { { "Account" }, { "Okta user id" }, { "Sync entry" }, { "How" }, { "Linked since" }, { "Last seen" } }
    table_open(b, #rows > M.MAX_ACCOUNTS and ("The first %d by name"):format(M.MAX_ACCOUNTS) or
      ("%d accounts"):format(#rows), cols)
    for i, r in ipairs(rows) do
      if i > M.MAX_ACCOUNTS then break end
      row(b, cols, { esc(r.account_name), esc(r.okta_id), esc(r.sync), r.created_by_us == 1 and "created" or "adopted",
        when(r.first_seen, now), when(r.last_seen, now) })
    end
    b("</tbody></table>")
  end)
end

-- ---------------------------------------------------------------- sync now

local function same(a, b)
  return type(a) == "string" and type(b) == "string" and crypto.sha256(a) == crypto.sha256(b)
end

-- Why a POST is not from this page, or nil.
local function csrf_refusal(ctx, req, form)
  local origin = (req.tls and "https://" or "http://") .. tostring(req.host or "")
  if not req.host then return "no Host header" end
  if req.origin then
    if req.origin ~= origin then return "the form came from another site (Origin)" end
  elseif req.referer then
    if req.referer ~= origin and req.referer:sub(1, #origin + 1) ~= origin .. "/" then
      return "the form came from another site (Referer)"
    end
  else
    return "neither Origin nor Referer was sent"
  end
  if not same(form.csrf, ctx.token) then return "the form's token does not match (reload the page)" end
  local cookie = (req.cookie or ""):match("usersync_csrf=(%x+)")
  if not same(cookie, ctx.token) then return "the token cookie is missing or does not match (reload the page)" end
  return nil
end

local function refused(ctx, req, status, why)
  return html_response(ctx, status, page(ctx, "Not done", function(b)
    b('<p role="alert">', esc(why), '</p><p><a href="/">Back to the overview</a></p>')
  end), req)
end

local function sync_now(ctx, req, snap)
  local form = html.form_decode(req.body)
  local why = csrf_refusal(ctx, req, form)
  if why then
    log.warn { msg = "status page: sync now refused", reason = why }
    return refused(ctx, req, 403, "Sync now refused: " .. why .. ".")
  end
  local known = false
  for _, e in ipairs(snap.entries or {}) do if e.name == form.sync then known = true end end
  if not known then return refused(ctx, req, 400, "There is no sync entry of that name.") end
  local user = form.user and form.user:match("^%s*(.-)%s*$") or nil
  if user == "" then user = nil end
  if user and (#user > 256 or user:find("[%c]")) then
    return refused(ctx, req, 400, "That is not an Okta login.")
  end
  local loc = "/?requested=" .. html.url_encode(form.sync) .. (user and ("&user=" .. html.url_encode(user)) or "")
  -- the server keeps at most 255 bytes of a Location: a long login (a
  -- 240-byte UTF-8 one is 720 percent-encoded) is left out of the notice
  -- rather than cut in the middle of an escape
  if #loc > 255 then loc = "/?requested=" .. html.url_encode(form.sync) end
  if #loc > 255 then loc = "/" end
  return { status = 303, location = loc, type = "text/plain; charset=utf-8", body = "see " .. loc .. "\n",
           action = json.encode{ sync = form.sync, user = user } }
end

-- ---------------------------------------------------------------- dispatch

-- The tab's icon: a "u" on the header's colour.
M.ICON = [[<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#16324f"/>]] ..
  [[<path d="M4.5 4v4.5a3.5 3.5 0 0 0 7 0V4" stroke="#fff" stroke-width="2" fill="none"/></svg>]]

function M.handle(ctx, req, snap_text)
  local snap = snap_text and json.decode(snap_text) or {}
  if type(snap) ~= "table" then snap = {} end
  local path, method = req.path, req.method
  if path == "/status/style.css" then
    if method == "POST" then return plain(405, "method not allowed\n") end
    return { status = 200, type = "text/css; charset=utf-8", body = require("usersync.status_css"), cacheable = true }
  end
  if path == "/status/icon.svg" then
    return { status = 200, type = "image/svg+xml", body = M.ICON, cacheable = true }
  end
  if path == "/status/sync" then
    if method ~= "POST" then return plain(405, "use the Sync now buttons on the overview\n") end
    return sync_now(ctx, req, snap)
  end
  if method == "POST" then return plain(405, "method not allowed\n") end
  local db, err = db_of(ctx)
  if not db then return plain(503, "the store cannot be read: " .. tostring(err) .. "\n") end
  local text
  if path == "/" then
    text = overview(ctx, req, snap, db)
  else
    local id = path:match("^/status/runs/(%d+)$")
    -- the server hands over the path percent-decoded once already: a target
    -- named "jira+eu/x" arrives as itself (decoding again made it "jira eu/x")
    local target = path:match("^/status/targets/(.+)$")
    if id then text = run_page(ctx, math.tointeger(tonumber(id)), db)
    elseif target then text = target_page(ctx, target, snap, db) end
  end
  if not text then
    return html_response(ctx, 404, page(ctx, "Not found", function(b)
      b('<p>Nothing here. <a href="/">Back to the overview</a></p>')
    end), req)
  end
  return html_response(ctx, 200, text, req)
end

-- The handler bind_server.c calls: init is JSON { store, runs, version, log_format }.
function M.handler(init_text)
  local init = json.decode(init_text) or {}
  if init.log_format == "json" or init.log_format == "text" then log.configure{ format = init.log_format } end
  local ctx = { store = init.store, runs = init.runs or 20, version = init.version,
                token = crypto.random_hex(32) }
  return function(req, snap_text)
    local ok, res = xpcall(M.handle, debug.traceback, ctx, req, snap_text)
    if ok then return res end
    log.error { msg = "status page failed", path = req.path, error = tostring(res) }
    if ctx.db then pcall(ctx.db.close, ctx.db); ctx.db = nil end
    return plain(500, "internal error; see the server's log\n")
  end
end

return M
