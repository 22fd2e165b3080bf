#!/bin/sh
# usersync(1): `cmake --install` of the build that made $USERSYNC puts the
# binary, the man page, the examples and the systemd units under a prefix;
# the page renders with man and with groff (all warnings on) without a
# warning; every command of the installed binary's help has its section,
# and every paragraph of `usersync --help` and `usersync help COMMAND` is
# in the page word for word. Then cmake/manpage.lua renders a made-up help
# with roff's special characters, a command missing from the usage list
# and one missing from HELP, and each must come out literally.
set -u
cd "$SOURCE_DIR" || exit 1
BUILD=$(dirname "$USERSYNC")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAILED: $1"; fi; }

# Renders a page to plain text on one very long line per paragraph, so the
# words can be compared with the help texts whatever the wrapping.
render() { groff -man -Tutf8 -rLL=5000n -P-cbou "$1" 2>"$TMP/render.err"; }

check "the build tree has install rules" '[ -f "$BUILD/cmake_install.cmake" ]'
cmake --install "$BUILD" --prefix "$TMP/prefix" >"$TMP/install.out" 2>&1; rc=$?
check "cmake --install exits 0" '[ $rc -eq 0 ] || { cat "$TMP/install.out"; false; }'
P="$TMP/prefix"
PAGE="$P/share/man/man1/usersync.1"
check "bin/usersync is installed and runs" '"$P/bin/usersync" --version | grep -q "^usersync [0-9]"'
check "share/man/man1/usersync.1 is installed" '[ -s "$PAGE" ]'
check "the example config is installed" '[ -f "$P/share/usersync/examples/usersync.conf.lua" ]'
check "the systemd units are installed" '[ -f "$P/share/usersync/systemd/usersync-sync.service" ] && [ -f "$P/share/usersync/systemd/usersync-sync.timer" ]'
check "the default policy is installed" '[ -f "$P/share/usersync/default-policy.lua" ]'

# groff with every warning category on: not a single line on stderr.
groff -man -Tutf8 -ww -z "$PAGE" >"$TMP/groff.err" 2>&1; rc=$?
check "groff -man -ww renders the page without warnings" '[ $rc -eq 0 ] && [ ! -s "$TMP/groff.err" ] || { cat "$TMP/groff.err"; false; }'
if command -v man >/dev/null 2>&1; then
  MANWIDTH=80 man --warnings -l -P cat "$PAGE" >"$TMP/man.txt" 2>"$TMP/man.err"; rc=$?
  check "man -l renders the page without warnings" '[ $rc -eq 0 ] && [ ! -s "$TMP/man.err" ] || { cat "$TMP/man.err"; false; }'
  check "man -l shows the NAME line" 'grep -q "usersync - keep Jira, Confluence and Bitbucket" "$TMP/man.txt"'
else
  check "man (man-db) is installed (tests/install-deps.sh)" 'false'
fi
render "$PAGE" >"$TMP/page.txt"
for s in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS "EXIT STATUS" ENVIRONMENT FILES "SEE ALSO"; do
  check "section $s" 'grep -q "^$s\$" "$TMP/page.txt"'
done
for v in NO_COLOR USERSYNC_LOG_LEVEL USERSYNC_LOG_FORMAT https_proxy no_proxy; do
  check "ENVIRONMENT names $v" 'sed -n "/^ENVIRONMENT\$/,/^FILES\$/p" "$TMP/page.txt" | grep -q "$v"'
done
check "FILES names the installed examples" 'grep -q "/share/usersync/examples/" "$TMP/page.txt"'
check "options keep ASCII hyphens" 'grep -q "\-\-config-only" "$TMP/page.txt"'

# The help of the installed binary against the page, in Lua (run by the
# binary itself): every HELP entry has a section whose usage line and
# paragraphs are those of `usersync help CMD`; USAGE likewise.
cat >"$TMP/compare.lua" <<'EOF'
local page_file, bin = arg[1], arg[2]
local f = assert(io.open(page_file)); local page = f:read("a"); f:close()
local function norm(s) return (s:gsub("`([^`]*)`", "%1"):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end
local function sh(cmd) local p = assert(io.popen(cmd)); local s = p:read("a"); p:close(); return s end
-- The COMMANDS section, split at its subsection headings ("   name").
local commands = page:match("\nCOMMANDS\n(.-)\nOPTIONS\n")
assert(commands, "no COMMANDS ... OPTIONS in the page")
local sections, current = {}, nil
for line in (commands .. "\n"):gmatch("(.-)\n") do
  local name = line:match("^   (%S+)$")
  if name then current = name; sections[name] = ""
  elseif current then sections[current] = sections[current] .. line .. "\n" end
end
local fails, names = 0, {}
for k in pairs(require("usersync.cli").HELP) do names[#names + 1] = k end
table.sort(names)
local function expect(ok, what) if not ok then fails = fails + 1; print("FAILED: " .. what) end end
local function paragraphs(text)
  local out = {}
  for block in (text .. "\n\n"):gmatch("(.-)\n%s*\n") do
    if block:match("%S") then out[#out + 1] = norm(block) end
  end
  return out
end
for _, name in ipairs(names) do
  local body = sections[name]
  expect(body, "COMMANDS has a section for " .. name)
  local help = sh(("%q help %s"):format(bin, name))
  expect(help:match("%S"), "usersync help " .. name .. " prints something")
  for i, para in ipairs(paragraphs(help)) do
    if i == 1 then para = para:gsub("^[Uu]sage: ", "") end
    expect(body and norm(body):find(para, 1, true), ("section %s holds paragraph %d of its help: %s"):format(name, i, para:sub(1, 60)))
  end
end
print(("%d commands"):format(#names))
-- USAGE: its usage line in SYNOPSIS, each listed command in DESCRIPTION,
-- its other paragraphs in DESCRIPTION.
local usage = sh(("%q --help"):format(bin))
local desc = norm(page:match("\nDESCRIPTION\n(.-)\nCOMMANDS\n") or "")
local synopsis = norm(page:match("\nSYNOPSIS\n(.-)\nDESCRIPTION\n") or "")
for i, para in ipairs(paragraphs(usage)) do
  if i == 1 then
    expect(synopsis:find(para:gsub("^[Uu]sage: ", ""), 1, true), "SYNOPSIS holds the usage line")
  elseif para:match("^[Cc]ommands:") then
    for line in usage:gmatch("\n  +(%S[^\n]*)") do
      local name, rest = line:match("^(%S+)(.*)$")
      local words = norm(name .. " " .. rest:gsub("%s%s+", " "))
      expect(desc:find(words, 1, true), "DESCRIPTION lists " .. words)
    end
  else
    expect(desc:find(para, 1, true), "DESCRIPTION holds: " .. para:sub(1, 60))
  end
end
return fails == 0 and 0 or 1
EOF
"$P/bin/usersync" run "$TMP/compare.lua" "$TMP/page.txt" "$P/bin/usersync" >"$TMP/compare.out" 2>&1; rc=$?
check "the page holds every command's help, word for word" '[ $rc -eq 0 ] || { cat "$TMP/compare.out"; false; }'
check "at least the seven first commands were compared" 'n=$(sed -n "s/^\([0-9]*\) commands$/\1/p" "$TMP/compare.out"); [ "${n:-0}" -ge 7 ]'

# The generator on a made-up help: roff escaping, ordering, nothing dropped.
cat >"$TMP/odd.lua" <<'EOF'
local M = dofile(arg[1])
local usage = [[
usage: usersync [--help] COMMAND

commands:
  beta NAME        the second, listed
  alpha            the first, listed
  ghost            listed, with no HELP entry

A '.' at the start of a line is a request to roff.
]]
local help = {
  alpha = "usage: usersync alpha [--dry-run|--force]\n\nplain words\n",
  beta = [[
usage: usersync beta [-c FILE] [--with-hyphen VALUE] NAME

.starts with a dot
'starts with a quote
back\slash, \fB not bold, \n not a register, "double" and `code --x 'q'` and e-mail
caf]] .. "\u{E9} \u{2013} non-ASCII" .. [[


  indented: .kept literally
  'also literal \e
]],
  zulu = "usage: usersync zulu\n\nappended after the listed ones\n",
  charlie = "usage: usersync charlie\n\nnot listed either\n",
}
local order = table.concat(M.commands(usage, help), ",")
if order ~= "beta,alpha,ghost,charlie,zulu" then print("order: " .. order); return 1 end
local f = assert(io.open(arg[2], "w"))
f:write(M.render{ usage = usage, help = help, version = "9.9", date = "2000-01-01" })
f:close()
return 0
EOF
"$USERSYNC" run "$TMP/odd.lua" "$SOURCE_DIR/cmake/manpage.lua" "$TMP/odd.1" >"$TMP/odd.out" 2>&1; rc=$?
check "commands in USAGE order, then the others sorted" '[ $rc -eq 0 ] || { cat "$TMP/odd.out"; false; }'
groff -man -Tutf8 -ww -z "$TMP/odd.1" >"$TMP/odd.err" 2>&1
check "the odd page renders without warnings" '[ ! -s "$TMP/odd.err" ] || { cat "$TMP/odd.err"; false; }'
render "$TMP/odd.1" >"$TMP/odd.txt"
has() { grep -qF -- "$1" "$TMP/odd.txt"; }
check "a leading dot is text" 'has ".starts with a dot"'
check "a leading quote is text" "has \"'starts with a quote\""
check "backslashes are literal" 'has "back\\slash, \\fB not bold, \\n not a register"'
check "code spans and quotes are literal" "has \"\\\"double\\\" and code --x 'q' and e-mail\""
check "non-ASCII characters survive" 'has "café – non-ASCII"'
check "an indented block keeps its lines" 'has "  indented: .kept literally" && has "  '"'"'also literal \\e"'
check "a USAGE paragraph with a leading-dot line" "has \"A '.' at the start of a line is a request to roff.\""
for c in alpha beta ghost charlie zulu; do
  check "section for $c" 'grep -q "^   $c\$" "$TMP/odd.txt"'
done
check "ghost gets its USAGE line as text" 'sed -n "/^   ghost\$/,/^   charlie\$/p" "$TMP/odd.txt" | grep -q "listed, with no HELP entry"'
check "an option without a description is listed with its command" 'sed -n "/^OPTIONS\$/,/^EXIT STATUS\$/p" "$TMP/odd.txt" | grep -A1 -- "--with-hyphen VALUE" | grep -q "Taken by: beta"'
check "alternatives are both options" 'sed -n "/^OPTIONS\$/,/^EXIT STATUS\$/p" "$TMP/odd.txt" | grep -q -- "^       --force"'
check "option hyphens are \\- in the source" 'grep -q "\\\\-\\\\-with\\\\-hyphen" "$TMP/odd.1"'
check "prose hyphens are plain" 'grep -q "e-mail" "$TMP/odd.1"'

[ $failed -eq 0 ] || { echo "--- page:"; head -80 "$TMP/page.txt"; }
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
