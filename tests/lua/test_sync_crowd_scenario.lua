-- A worked Crowd scenario: an Okta org of six users, each with one of the
-- awkward traits (STAGED, later SUSPENDED, later DEPROVISIONED, a renamed
-- login, a Crowd account already there under another case, a member of a
-- group only through a nested Crowd group), synced into Crowd with
-- keep_existing = false and a default group. The exact Crowd state after
-- each sync was worked out by hand from the sync rules before the test was
-- first run; the test compares the whole state, not samples of it.
local test = require "tap"
local world = require "support.world"

local SYNC = { groups = { mode = "manual", keep_existing = false,
                          map = { Engineering = { "developers" }, Ops = { "operations" } } },
               defaults = { all_users = { "okta-synced" } } }

-- Crowd before the first sync (one whose administrator allows e-mail
-- changes from applications: Crowd 4.4 and later refuse them by default,
-- the second test): Bob under another case (with an admin's own
-- first name), Frank only in "contractors", which is nested in "operations";
-- svc-backup is nobody's in Okta.
local CROWD = {
  users = {
    { name = "Bob.Stone@Example.com", ["first-name"] = "Robert", ["last-name"] = "Stone",
      ["display-name"] = "Bob Stone", email = "bob.stone@example.com", active = true },
    { name = "frank.ng@example.com", ["first-name"] = "frank", ["last-name"] = "ng",
      ["display-name"] = "frank ng", email = "frank.ng@example.com", active = true },
    { name = "svc-backup", ["first-name"] = "Backup", ["last-name"] = "Service",
      ["display-name"] = "Backup Service", email = "backup@example.com", active = true },
  },
  groups = { "developers", "operations", "contractors", "hand-made" },
  members = { operations = { "Bob.Stone@Example.com", "svc-backup" },
              contractors = { "frank.ng@example.com", "Bob.Stone@Example.com" },
              ["hand-made"] = { "Bob.Stone@Example.com" } },
  nested = { operations = { "contractors" } },
  allow_email_change = true,
}

-- The whole Crowd state, reduced to what the rules decide: users by exact
-- name, each group's direct members (exact names, sorted), the nesting.
local function crowd_state(w)
  local st = w.crowd:state()
  local users, members = {}, {}
  for _, u in ipairs(st.users) do
    users[u.name] = { first = u["first-name"], last = u["last-name"], display = u["display-name"],
                      email = u.email, active = u.active }
  end
  for _, g in ipairs(st.groups) do
    local list = {}
    for _, n in ipairs(st.members[g] or {}) do list[#list + 1] = n end
    table.sort(list)
    members[g] = list
  end
  return users, members, st.nested or {}, st
end

local function u(first, last, display, email, active)
  return { first = first, last = last, display = display, email = email, active = active }
end

test("six Okta users into Crowd (keep_existing = false, a default group): the exact state after each sync", function(t)
  local w <close> = world.new { products = { "crowd" }, crowd = CROWD, sync = SYNC }
  w:okta_group("00gEng", "Engineering")
  w:okta_group("00gOps", "Ops")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:okta_user("00u2", "bob.stone@example.com", { groups = { "00gEng" } })
  w:okta_user("00u3", "carol.king@example.com", { groups = { "00gOps" }, status = "STAGED" })
  w:okta_user("00u4", "dan.park@example.com", { groups = { "00gEng" } })
  w:okta_user("00u5", "erin.wu@example.com", { groups = { "00gOps" } })
  w:okta_user("00u6", "frank.ng@example.com", { groups = { "00gOps" } })
  w:load()

  -- Sync 1, worked out by hand:
  --  ann, dan, erin: created, first / last from the display name "first last";
  --  bob: adopted under his Crowd spelling; his display name follows Okta
  --    ("bob stone"), his first name "Robert" stays (it was not the split of
  --    "Bob Stone"); he leaves "operations" (managed, not his Okta group),
  --    stays in "hand-made" and "contractors" (groups usersync does not manage);
  --  carol (STAGED): no account;
  --  frank: adopted unchanged; Ops wants "operations", where he is only a
  --    member through "contractors": he is added directly;
  --  svc-backup: untouched, also its membership of "operations";
  --  "okta-synced" is created and holds every active linked account.
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  local users, members, nested = crowd_state(w)
  t:same(users, {
    ["ann.lee@example.com"] = u("ann", "lee", "ann lee", "ann.lee@example.com", true),
    ["Bob.Stone@Example.com"] = u("Robert", "Stone", "bob stone", "bob.stone@example.com", true),
    ["dan.park@example.com"] = u("dan", "park", "dan park", "dan.park@example.com", true),
    ["erin.wu@example.com"] = u("erin", "wu", "erin wu", "erin.wu@example.com", true),
    ["frank.ng@example.com"] = u("frank", "ng", "frank ng", "frank.ng@example.com", true),
    ["svc-backup"] = u("Backup", "Service", "Backup Service", "backup@example.com", true),
  })
  t:same(members, {
    developers = { "Bob.Stone@Example.com", "ann.lee@example.com", "dan.park@example.com" },
    operations = { "erin.wu@example.com", "frank.ng@example.com", "svc-backup" },
    contractors = { "Bob.Stone@Example.com", "frank.ng@example.com" },
    ["hand-made"] = { "Bob.Stone@Example.com" },
    ["okta-synced"] = { "Bob.Stone@Example.com", "ann.lee@example.com", "dan.park@example.com",
                        "erin.wu@example.com", "frank.ng@example.com" },
  })
  t:same(nested, { operations = { "contractors" } })
  local function key_of(state, name)
    for _, x in ipairs(state.users) do if x.name == name then return x.key end end
  end
  local ann_key = key_of(w.crowd:state(), "ann.lee@example.com")

  -- Sync 2, worked out by hand:
  --  ann's login becomes ann.smith: a rename (same key), then her display
  --    name and e-mail; first / last follow (they were the old split);
  --  dan SUSPENDED, erin DEPROVISIONED: deactivated (active false), every
  --    other field and every membership kept;
  --  nobody else changes.
  local ann = w:find_user("00u1")
  ann.profile.login = "ann.smith@example.com"
  ann.profile.email = "ann.smith@example.com"
  ann.profile.lastName = "smith"
  w:find_user("00u4").status = "SUSPENDED"
  w:find_user("00u5").status = "DEPROVISIONED"
  w:load()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  local st
  users, members, nested, st = crowd_state(w)
  t:same(users, {
    ["ann.smith@example.com"] = u("ann", "smith", "ann smith", "ann.smith@example.com", true),
    ["Bob.Stone@Example.com"] = u("Robert", "Stone", "bob stone", "bob.stone@example.com", true),
    ["dan.park@example.com"] = u("dan", "park", "dan park", "dan.park@example.com", false),
    ["erin.wu@example.com"] = u("erin", "wu", "erin wu", "erin.wu@example.com", false),
    ["frank.ng@example.com"] = u("frank", "ng", "frank ng", "frank.ng@example.com", true),
    ["svc-backup"] = u("Backup", "Service", "Backup Service", "backup@example.com", true),
  })
  t:same(members, {
    developers = { "Bob.Stone@Example.com", "ann.smith@example.com", "dan.park@example.com" },
    operations = { "erin.wu@example.com", "frank.ng@example.com", "svc-backup" },
    contractors = { "Bob.Stone@Example.com", "frank.ng@example.com" },
    ["hand-made"] = { "Bob.Stone@Example.com" },
    ["okta-synced"] = { "Bob.Stone@Example.com", "ann.smith@example.com", "dan.park@example.com",
                        "erin.wu@example.com", "frank.ng@example.com" },
  })
  t:same(nested, { operations = { "contractors" } })
  t:ok(ann_key, "ann had a key")
  t:eq(key_of(st, "ann.smith@example.com"), ann_key, "ann renamed, not re-created")

  -- Sync 3: nothing left to do.
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  t:eq(#w:writes("crowd"), 0, "a third sync writes nothing")
end)

test("a renamed login on a Crowd that refuses e-mail changes: renamed, display name applied, the e-mail change reported", function(t)
  local w <close> = world.new { products = { "crowd" }, sync = SYNC }
  w:okta_group("00gEng", "Engineering")
  w:okta_user("00u1", "ann.lee@example.com", { groups = { "00gEng" } })
  w:load()
  local r = w:usersync("sync")
  t:eq(r.code, 0, r.stdout .. r.stderr)
  local ann = w:find_user("00u1")
  ann.profile.login = "ann.smith@example.com"
  ann.profile.email = "ann.smith@example.com"
  ann.profile.lastName = "smith"
  w:load()
  -- Worked out by hand: the update (display name and e-mail) comes first,
  -- under the old name: its PUT is refused for the e-mail (403), the
  -- display name is sent again without it; the rename is its own
  -- operation and goes through; the run reports the one failure (exit 1).
  r = w:usersync("sync")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "Crowd refused the e-mail change (HTTP 403: External applications are not allowed to change user emails")
  local users, members = crowd_state(w)
  t:same(users, { ["ann.smith@example.com"] = u("ann", "smith", "ann smith", "ann.lee@example.com", true) })
  t:same(members, { developers = { "ann.smith@example.com" },
                    ["okta-synced"] = { "ann.smith@example.com" } })
  -- Every later sync asks once more for the e-mail alone (one refused PUT)
  -- and says so, until Crowd's administrator allows it.
  w:clear_requests()
  r = w:usersync("sync")
  t:eq(r.code, 1, r.stdout .. r.stderr)
  t:contains(r.stderr, "Crowd refused the e-mail change")
  t:eq(#w:writes("crowd"), 1, "one PUT, refused")
  t:same((crowd_state(w)), { ["ann.smith@example.com"] = u("ann", "smith", "ann smith", "ann.lee@example.com", true) })
end)

return test.done()
