-- luacheck configuration (Debian lua-check), run by the lint/luacheck test on
-- runtime/lua, scripts, tests/lua and cmake. The code is Lua 5.4; the
-- sandboxes give scripts a few globals of their own.
std = "lua54"
max_line_length = false   -- long lines are messages and tables kept on one line
unused_args = false       -- hooks and callbacks take arguments they may not use

-- scripts/examples/*.lua run with `usersync run`: the global `usersync`
-- (the configured clients, store and config). Configs get `env "NAME"`;
-- policy files `default`, the default policy's table.
files["scripts"] = { read_globals = { "usersync", "env", "default" } }
-- policy tests (`usersync test`): the assertions of usersync.policytest.
files["scripts/examples/tests"] = { read_globals = { "usersync", "test", "expect" } }

-- cli.lua's `run` sets up the script's globals: arg, usersync, and print/io
-- masked while the script runs.
files["runtime/lua/usersync/cli.lua"] = { globals = { "arg", "usersync", "print", "io" } }

-- config.lua's schema builders take a `path` argument, one of the builders
-- is named path too; planfile.lua reuses a loop counter's name.
files["runtime/lua/usersync/config.lua"] = { ignore = { "431/path" } }
files["runtime/lua/usersync/planfile.lua"] = { ignore = { "423/i" } }

-- Tests: a value kept only to show a call returns (local ok, err = ...),
-- `_` as a throwaway, and a few sandbox globals the tests set on purpose.
files["tests/lua"] = {
  globals = { "_", "acct" },
  ignore = { "211", "231", "241", "311", "421", "431" },
}
