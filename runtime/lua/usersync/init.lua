-- usersync.init: `usersync init`, a commented starter config, then
-- `usersync check` on it. On a terminal it asks for what the flags leave
-- out (the Okta org URL, where the token comes from, the app id, the
-- targets); without one the flags must say it. It never overwrites a file,
-- and never asks for or writes a secret: the config names where each
-- secret comes from (env "NAME" or file "PATH").
--
--   local init = require "usersync.init"
--   local text = init.render{ okta_url = "https://example.okta.com", token_env = "OKTA_API_TOKEN",
--                             app_id = "0oa1", targets = { jira = "https://jira.example.com" } }
local core = require "usersync.core"

local M = {}

local EXIT_USAGE = 2

-- The targets init offers, in the order asked, with the variable each
-- one's token is read from.
M.TARGETS = {
  { kind = "jira", label = "Jira", env = "JIRA_TOKEN" },
  { kind = "confluence", label = "Confluence", env = "CONFLUENCE_TOKEN" },
  { kind = "bitbucket", label = "Bitbucket", env = "BITBUCKET_TOKEN" },
}

-- nil when url is an http(s) URL (of an Okta org: without a path), else why not.
local function bad_url(url, okta)
  -- a user name or password in the URL is a secret: refused, and not repeated
  if type(url) == "string" and url:match("^%a[%w+.-]*://[^/]*@") then
    return "a URL with a user name or password in it is refused (not shown here): "
      .. "tokens come from the environment or a file"
  end
  if type(url) ~= "string" or not url:match("^https?://[^/%s]+") or url:find("%s") then
    return ("%q is not an http:// or https:// URL"):format(tostring(url))
  end
  if okta then
    local base, rest = url:match("^(https?://[^/]+)(/.+)$")
    if base and rest ~= "/" then return ("the Okta URL is the org's base URL (%s), not %s"):format(base, url) end
  end
  return nil
end

local function bad_env_name(name)
  -- not repeated: what was typed or passed may be the token itself
  if not name:match("^[%a_][%w_]*$") then
    return "that is not an environment variable name (letters, digits and _; not shown here, "
      .. "in case it was the token itself): give the variable's name, e.g. OKTA_API_TOKEN"
  end
  return nil
end

local function q(s) return ("%q"):format(s) end

-- The config text for answers a = { okta_url, token_env | token_file,
-- app_id, targets = { kind = url } }.
function M.render(a)
  local out = {}
  local function w(s) out[#out + 1] = s end
  local names = {}
  for _, t in ipairs(M.TARGETS) do if a.targets[t.kind] then names[#names + 1] = q(t.kind) end end
  w("-- usersync config, written by `usersync init`.")
  w("-- Next: `usersync check` (reaches every server), `usersync plan` (what a sync")
  w("-- would change, writing nothing), then `usersync sync`. Every key is described")
  w("-- in the README's Configuration section.")
  w("-- Secrets never sit in this file: env \"NAME\" reads an environment variable,")
  w("-- file \"PATH\" a file. Relative paths are taken from this file's directory.")
  w("return {")
  w("  state = \"usersync.db\",   -- the store: links, runs and the audit log")
  w("")
  w("  sources = {")
  w(("    okta = { type = \"okta\", url = %s,"):format(q(a.okta_url:gsub("/+$", ""))))
  if a.token_file then
    w(("             token = file %s,   -- an SSWS API token of an Okta admin"):format(q(a.token_file)))
  else
    w(("             token = env %s,   -- an SSWS API token of an Okta admin"):format(q(a.token_env)))
  end
  if a.app_id then
    w(("             app_id = %s,   -- scope: the users assigned to this app (directly or through groups)"):format(q(a.app_id)))
  else
    w("             -- app_id = \"0oa...\",   -- without it, every user of the org is in scope")
  end
  w("    },")
  w("  },")
  w("")
  w("  targets = {   -- each token: a personal access token of an administrator")
  for _, t in ipairs(M.TARGETS) do
    local url = a.targets[t.kind]
    if url then
      w(("    %s = { type = %s, url = %s, token = env %s },"):format(t.kind, q(t.kind), q(url:gsub("/+$", "")), q(t.env)))
    end
  end
  w("  },")
  w("")
  w("  sync = {")
  w(("    { name = \"okta-to-atlassian\", source = \"okta\", targets = { %s },"):format(table.concat(names, ", ")))
  w("      every = \"30m\",   -- how often `usersync serve` runs it")
  w("      users = { create = true, update = true, deactivate = true, reactivate = true, delete = false },")
  w("      groups = {")
  w("        mode = \"manual\",   -- groups.map says which target groups an Okta group gives;")
  w("                           -- \"on_the_fly\": target groups named like the Okta groups")
  w("        map = {")
  w("          -- [\"Engineering\"] = { \"developers\" },")
  w("        },")
  w("        create_missing = true,   -- create mapped groups a target does not have")
  w("        keep_existing = true,    -- never remove a membership usersync did not add")
  w("      },")
  w("      defaults = {")
  w("        new_users = {},   -- groups for the accounts usersync creates, e.g. { \"jira-software-users\" }")
  w("        all_users = {},   -- groups for every account it manages")
  w("      },")
  w("      -- attributes = { display_name = \"{profile.firstName} {profile.lastName}\" },  -- Okta fields")
  w("      -- policy = \"policy.lua\",   -- optional Lua hooks; `usersync test` runs their tests")
  w("      limits = { max_deprovision = \"5%\" },   -- more deprovisions than this stop a run (exit 3)")
  w("    },")
  w("  },")
  w("}")
  return table.concat(out, "\n") .. "\n"
end

-- Asks on the terminal until check(answer) is nil; "" keeps `default`
-- (nil: the answer may be empty when `optional`). Returns the answer, or
-- nil at end of input.
local function ask(question, default, check, optional)
  for _ = 1, 5 do
    io.write(question, default and (" [" .. default .. "]") or "", ": ")
    io.stdout:flush()
    local line = io.read("l")
    if line == nil then io.write("\n"); return nil end
    line = line:match("^%s*(.-)%s*$")
    if line == "" then line = default end
    if line == nil or line == "" then
      if optional then return "" end
      io.write("  an answer is needed\n")
    else
      local why = check and check(line)
      if not why then return line end
      io.write("  ", why, "\n")
    end
  end
  return nil
end

-- The answers from the flags, completed on a terminal. Returns answers |
-- nil, message.
local function answers(opts, interactive)
  local a = { okta_url = opts["okta-url"], app_id = opts["app-id"], targets = {},
              token_env = opts["token-env"], token_file = opts["token-file"] }
  if a.token_env and a.token_file then return nil, "--token-env and --token-file exclude each other" end
  for _, t in ipairs(M.TARGETS) do a.targets[t.kind] = opts[t.kind] end

  local given_target = next(a.targets) ~= nil
  if interactive then
    io.write("usersync init: a starter config; the flags answer these too (usersync init --help)\n")
    if not a.okta_url then
      a.okta_url = ask("Okta org URL (https://example.okta.com)", nil, function(v) return bad_url(v, true) end)
      if not a.okta_url then return nil, "no Okta URL given" end
    end
    if not a.token_env and not a.token_file then
      local src = ask("Okta API token from an environment variable, or file:PATH", "OKTA_API_TOKEN", function(v)
        if v:match("^file:") then return #v > 5 and nil or "file: needs a path" end
        return bad_env_name(v)
      end)
      if not src then return nil, "no token source given" end
      if src:match("^file:") then a.token_file = src:sub(6) else a.token_env = src end
    end
    if not a.app_id then
      local id = ask("Okta app id (its assigned users are synced; empty: every user)", nil, nil, true)
      if id == nil then return nil, "input ended" end
      a.app_id = id ~= "" and id or nil
    end
    if not given_target then
      for _, t in ipairs(M.TARGETS) do
        local url = ask(t.label .. " URL (empty: none)", nil, bad_url, true)
        if url == nil then return nil, "input ended" end
        if url ~= "" then a.targets[t.kind] = url end
      end
    end
  elseif not a.okta_url or not given_target then
    return nil, "without a terminal, give --okta-url and at least one of --jira, --confluence, --bitbucket"
      .. " (usersync init --help)"
  end

  a.token_env = (not a.token_file) and (a.token_env or "OKTA_API_TOKEN") or nil
  local why = bad_url(a.okta_url, true) or (a.token_env and bad_env_name(a.token_env))
  if why then return nil, "--okta-url / --token-env: " .. why end
  for _, t in ipairs(M.TARGETS) do
    if a.targets[t.kind] then
      why = bad_url(a.targets[t.kind])
      if why then return nil, ("--%s: %s"):format(t.kind, why) end
    end
  end
  if next(a.targets) == nil then return nil, "no target given: a config needs at least one" end
  return a
end

-- `usersync init`: cli.lua parsed the options.
function M.main(opts, pos, cli)
  if pos[1] then cli.eprint("usersync init: unexpected argument " .. pos[1]); return EXIT_USAGE end
  local path = opts.config or "usersync.conf.lua"
  -- exists: readable, or not (an unreadable file, a dangling symbolic link:
  -- renaming it to itself succeeds, and the rename below would replace it)
  local f = io.open(path, "rb")
  if f then f:close() end
  if f or os.rename(path, path) then
    cli.eprint(("usersync init: %s exists; not overwritten (remove it, or write another with -c FILE)"):format(path))
    return EXIT_USAGE
  end
  local a, err = answers(opts, core.isatty(0))
  if not a then cli.eprint("usersync init: " .. err); return EXIT_USAGE end

  -- written to a temporary name first: a half-written config is never left
  local tmp = path .. ".init-tmp"
  local out, oerr = io.open(tmp, "wb")
  if not out then cli.eprint(("usersync init: cannot write %s: %s"):format(path, tostring(oerr))); return 1 end
  out:write(M.render(a))
  out:close()
  if io.open(path, "rb") or os.rename(path, path) then
    os.remove(tmp)
    cli.eprint(("usersync init: %s appeared meanwhile; not overwritten"):format(path))
    return EXIT_USAGE
  end
  local ok, rerr = os.rename(tmp, path)
  if not ok then os.remove(tmp); cli.eprint("usersync init: " .. tostring(rerr)); return 1 end

  local envs = {}
  if a.token_env then envs[#envs + 1] = a.token_env end
  for _, t in ipairs(M.TARGETS) do if a.targets[t.kind] then envs[#envs + 1] = t.env end end
  io.write(("wrote %s; its secrets come from %s. Checking it:\n"):format(path,
    a.token_file and ("the file " .. a.token_file .. " and " .. table.concat(envs, ", "))
      or table.concat(envs, ", ")))
  io.stdout:flush()
  local args = { "check", "-c", path }
  if opts["config-only"] then args[#args + 1] = "--config-only" end
  local code = cli.check(args)
  if code ~= 0 then
    cli.eprint(("usersync init: %s is written; fix what check reports (above), then run usersync check -c %s")
      :format(path, path))
  end
  return code
end

return M
