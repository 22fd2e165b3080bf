-- The status page in a real browser: headless Chromium (Debian's chromium
-- and chromium-driver, driven by python3-selenium through
-- support/status_browser.py) loads the pages of `usersync serve` after real
-- syncs against the simulators — one with a policy error, one a safety stop
-- withheld changes in — clicks "Sync main now", and the test checks the
-- DOM for the figures the store holds (run ids and outcomes, managed
-- accounts, an account name, the withheld changes' reason, the policy
-- error) and the layout at 375 px and 1280 px: nothing wider than the
-- viewport. Screenshots land in status-screenshots/ of the test's working
-- directory (the build directory under ctest).
local test = require "tap"
local world = require "support.world"
local serve = require "support.serve"
local proc = require "support.proc"
local json = require "usersync.json"
local store = require "usersync.store"

local PASSWORD = "status-page-password-1"
local EVIL = "<script>alert(1)</script>"

for _, need in ipairs{ "/usr/bin/chromium", "/usr/bin/chromedriver" } do
  if not io.open(need) then
    error(need .. " is missing: run tests/install-deps.sh (Debian packages chromium, chromium-driver, python3-selenium)")
  end
end

local cwd = io.popen("pwd"):read("l")
local OUT = cwd .. "/status-screenshots"

local w <close> = world.new{ products = { "jira", "confluence" }, extra = { raw = [[
  serve = {
    listen = "127.0.0.1:0",
    okta_hook = { path = "/hooks/okta", secret = env "US_TEST_HOOK_SECRET" },
    status = { user = "admin", password = env "USERSYNC_UI_PASSWORD" },
  },]] } }
local policy = w.dir .. "/policy.lua"
local f = assert(io.open(policy, "w"))
f:write([[
return { user = function(u, ctx)
  -- the message ends in one unbroken 600-character word: a table cell must wrap it, not widen the page
  if u.profile.login == "erin.gray@example.com" then error("no cost centre for " .. u.profile.login .. " " .. ("x"):rep(600)) end
  return {}
end }
]])
f:close()
w.sync = { groups = { mode = "manual", map = { Engineering = { "developers" }, Ops = { "operators" } } },
           defaults = { all_users = { "okta-synced" } }, policy = policy, every = "6h",
           limits = { max_deprovision = 1 } }
w:write_config()
w:okta_group("00gEng", "Engineering")
w:okta_group("00gOps", "Ops")
w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" }, profile = { firstName = EVIL } })
w:okta_user("00u4", "dan.moss@example.com", { groups = { "00gOps" } })
w:okta_user("00u5", "erin.gray@example.com", { groups = { "00gOps" } })
w:load()
local r1 = w:usersync("sync")
-- bob and dan leave the app: two deprovisions, over the limit of one
w.app_users = { "00u1", "00u3", "00u5" }
w:load()
local r2 = w:usersync("sync")

local d <close> = serve.start(w, { env = { USERSYNC_UI_PASSWORD = PASSWORD } })

local spec = proc.tempfile(json.encode{
  base = d.base, out = OUT, widths = { 375, 1280 }, sync_entry = "main",
  authorization = "Basic " .. (proc.run({ "sh", "-c", "printf %s \"$1\" | base64 -w0", "-", "admin:" .. PASSWORD }).stdout),
  pages = { "/", "/status/runs/1", "/status/runs/2", "/status/targets/jira" },
}, ".json")
local br = proc.run({ os.getenv("PYTHON3") or "python3", os.getenv("SOURCE_DIR") .. "/tests/lua/support/status_browser.py", spec })
local result = json.decode(br.stdout)
do -- kept beside the screenshots: what the browser saw
  local out = io.open(OUT .. "/status-browser.json", "w")
  if out then out:write(br.stdout); out:close() end
end

local db = assert(store.open(w.dir .. "/usersync.db"))

test("the setup: a sync with a policy error, then a safety stop", function(t)
  t:eq(r1.code, 1, "policy error: exit 1: " .. r1.stdout .. r1.stderr)
  t:ok(r2.code ~= 0, "the second sync did not go through")
  t:contains(r2.stderr, "stopped by a safety limit", "a safety stop withheld the deprovisions")
  t:ok(type(result) == "table", "the browser script ran: " .. br.stderr:sub(-3000))
end)
if type(result) ~= "table" then return test.done() end

local function pg(path, width) return result.pages[("%s@%d"):format(path, width)] or {} end

test("layout: nothing is wider than the viewport at 375 px and 1280 px", function(t)
  for _, width in ipairs{ 375, 1280 } do
    for _, path in ipairs{ "/", "/status/runs/1", "/status/runs/2", "/status/targets/jira" } do
      local m = pg(path, width)
      local at = ("%s at %d px"):format(path, width)
      t:eq(m.inner_width, width, at .. ": viewport")
      t:ok(m.scroll_width and m.scroll_width <= m.inner_width,
        ("%s: document %s px wide"):format(at, tostring(m.scroll_width)))
      t:eq(#(m.wide or { "?" }), 0, at .. ": elements past the right edge: " .. table.concat(m.wide or {}, ", "))
      t:ok(m.css_loaded, at .. ": the style sheet applied")
      t:ok(io.open(m.screenshot or ""), at .. ": screenshot saved")
    end
  end
end)

test("accessibility basics on every page", function(t)
  for key, m in pairs(result.pages) do
    t:eq(m.lang, "en", key)
    t:eq(#m.h1, 1, key .. ": one h1")
    t:eq(m.scripts, 0, key .. ": no script")
    t:eq(m.unlabelled_inputs, 0, key .. ": inputs without a label")
    t:eq(m.empty_buttons, 0, key .. ": buttons without text")
    t:eq(m.th_without_scope, 0, key .. ": header cells without scope")
  end
  local ff = result.first_focus or {}
  t:eq(ff.cls, "skip", "the first Tab stop is the skip link")
  t:ok(ff.visible, "and it shows when focused")
  t:ok(ff.outline and not ff.outline:find("^none"), "with a focus outline: " .. tostring(ff.outline))
end)

test("sync now in the browser: the form posts, 303 back to the page, the run is recorded", function(t)
  local ac = result.after_click or {}
  t:eq(ac.url, d.base .. "/?requested=main")
  t:contains(ac.notice or "", "Sync now asked for main")
  local run = db:first("SELECT id, trigger, scope, outcome FROM runs ORDER BY id DESC LIMIT 1")
  t:eq(run.id, 3, "a third run")
  t:eq(run.trigger, "manual")
  t:eq(run.scope, nil, "a full run")
end)

test("the DOM holds the figures the store holds", function(t)
  local m = pg("/", 1280)
  -- every run, newest first
  local ids = {}
  for _, r in ipairs(db:query("SELECT id FROM runs ORDER BY id DESC")) do ids[#ids + 1] = "run " .. r.id end
  local listed = {}
  local seen = {}
  for _, text in ipairs(m.run_links or {}) do
    if not seen[text] then seen[text] = true; listed[#listed + 1] = text end
  end
  local in_table = {}
  for _, text in ipairs(listed) do in_table[text] = true end
  for _, id in ipairs(ids) do t:ok(in_table[id], id .. " is linked from the overview") end
  -- outcomes of the runs as the store has them
  for _, r in ipairs(db:query("SELECT id, outcome FROM runs")) do
    t:match(m.text, ("run %d\t[^\n]*\t%s\t"):format(r.id, r.outcome), "run " .. r.id .. "'s row shows " .. r.outcome)
  end
  -- managed accounts per target
  for _, r in ipairs(db:query([[SELECT target, count(DISTINCT lower(account_name)) AS n FROM links GROUP BY target]])) do
    t:match(m.text, ("\n%s\t%s\t%d\t"):format(r.target, r.target, r.n), r.target .. ": " .. r.n .. " managed accounts")
  end
  -- the withheld changes and their reason, the policy error
  local withheld = db:first("SELECT subject, message FROM findings WHERE kind = 'withheld' ORDER BY run_id DESC LIMIT 1")
  t:ok(withheld, "the store holds withheld changes")
  if withheld then
    t:contains(m.text, withheld.subject)
    t:contains(m.text, withheld.message)
  end
  t:contains(m.text, "no cost centre for erin.gray@example.com")
  t:contains(m.text, "Sync main now")
  -- the Okta rate-limit budget once serve has talked to Okta (the sync now)
  t:match(m.text, "okta\t/api/v1/[^\t]*\t%d+\t%d+", "Okta budget rows")
  -- an account name on the target page, the escaped display name on run 1
  local acct = db:first("SELECT account_name FROM links WHERE target = 'jira' ORDER BY account_name LIMIT 1")
  t:contains(pg("/status/targets/jira", 375).text or "", acct.account_name)
  t:contains(pg("/status/runs/1", 1280).text or "", EVIL, "the display name shows as text")
  t:eq(pg("/status/runs/1", 1280).scripts, 0, "and is no script element")
end)

test("page weight and render time of /", function(t)
  local tm = result.timing or {}
  local css, others = nil, {}
  for _, res in ipairs(tm.resources or {}) do
    if res.name == d.base .. "/status/style.css" then css = res.body
    elseif res.name ~= d.base .. "/status/icon.svg" then others[#others + 1] = res.name end
  end
  io.write(("# / : document %d bytes (%d transferred), style sheet %d bytes; server %.1f ms, DOMContentLoaded %.1f ms, load %.1f ms (a loaded machine)\n")
    :format(tm.document_body or -1, tm.document_transfer or -1, css or -1, tm.server_ms or -1,
      tm.dom_content_loaded_ms or -1, tm.load_ms or -1))
  t:ok((tm.document_body or 0) > 0 and tm.document_body < 200000, "the overview is small")
  t:ok(css and css > 0, "the style sheet loaded")
  t:eq(table.concat(others, " "), "", "nothing else is fetched (but the icon)")
end)

db:close()
local stopped = d:stop()
test("serve stops cleanly", function(t) t:eq(stopped, 0) end)

return test.done()
