/*
** store.c: the usersync store on SQLite (contract in include/usersync/store.h).
**
** Provides us_store_*: open with WAL/NORMAL/foreign keys and a busy timeout,
** the product schema as numbered migrations, statements with bound values
** only and a small cache of prepared ones, nested transactions, named run
** locks with stale-lock takeover.
**
** Uses: sqlite3, POSIX (kill, getpid, gethostname). No Lua.
**
** Ownership: a us_store owns its sqlite3 handle, the cached statements and
** the path copy. Statements in use live in caller memory (us_store_stmt) and
** are linked into the store's live list so that close can finalize them.
*/
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "usersync/store.h"

/* How many idle prepared statements the cache keeps. */
#define CACHE_SIZE 32

struct cache_entry {
  char *sql; /* owned key */
  size_t len;
  sqlite3_stmt *stmt;
  unsigned long long used; /* tick of the last use, for LRU eviction */
};

struct us_store {
  sqlite3 *db;
  char *path;
  int busy_ms;
  int depth;          /* levels opened by us_store_begin */
  int outer_is_begin; /* level 1 was BEGIN IMMEDIATE (not a savepoint) */
  us_store_code code; /* last failure */
  char msg[512];
  char host[256];
  char token[64]; /* lock owner token of this handle */
  us_store_stmt *live;
  struct cache_entry cache[CACHE_SIZE];
  int ncache;
  unsigned long long tick;
};

/* ------------------------------------------------------------------ */
/* The product schema. Each entry takes the schema one version up; add new
** entries at the end (never edit a released one). Timestamps are ISO-8601
** UTC text with milliseconds ('2026-11-29T01:23:45.678Z'), which sorts and
** compares as text. JSON columns are checked with json_valid. */

#define NOW "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

static const char schema_v1[] =
    /* links: a target account linked to an Okta user (identity is the Okta id,
    ** Ownership). usersync deprovisions only accounts that have a link. */
    "CREATE TABLE links (\n"
    "  id            INTEGER PRIMARY KEY,\n"
    "  sync          TEXT NOT NULL,     -- sync entry that made the link\n"
    "  target        TEXT NOT NULL,     -- target name from the config, e.g. 'jira'\n"
    "  okta_id       TEXT NOT NULL,     -- Okta user id (00u...), never the login\n"
    "  account_name  TEXT NOT NULL,     -- target username as last set or seen\n"
    "  account_key   TEXT,              -- the target's stable key/id for the account, if any\n"
    "  created_by_us INTEGER NOT NULL DEFAULT 0 CHECK (created_by_us IN (0, 1)),\n"
    "                                   -- 1: usersync created it; 0: adopted an existing one\n"
    "  onboarded     INTEGER NOT NULL DEFAULT 1 CHECK (onboarded IN (0, 1)),\n"
    "                                   -- 0: created by usersync, new-user groups not all given yet\n"
    "  first_seen    TEXT NOT NULL DEFAULT " NOW ",\n"
    "  last_seen     TEXT NOT NULL DEFAULT " NOW ",\n"
    "  UNIQUE (sync, target, okta_id)\n"
    ");\n"
    /* Per sync entry, one link per account name per target,
    ** case-insensitively (ASCII folding: SQLite's lower() without ICU).
    ** Two sync entries (two sources) may link the same account: the account
    ** is deprovisioned only when no link's user is in scope any more
    ** (multiple sources). */
    "CREATE UNIQUE INDEX links_account ON links (sync, target, lower(account_name));\n"
    "CREATE INDEX links_target_account ON links (target, lower(account_name));\n"

    /* owned_groups: groups usersync created on a target. Only these may be
    ** deleted or emptied by usersync. */
    "CREATE TABLE owned_groups (\n"
    "  id         INTEGER PRIMARY KEY,\n"
    "  sync       TEXT NOT NULL,\n"
    "  target     TEXT NOT NULL,\n"
    "  group_name TEXT NOT NULL,\n"
    "  created    TEXT NOT NULL DEFAULT " NOW "\n"
    ");\n"
    "CREATE UNIQUE INDEX owned_groups_name ON owned_groups (target, lower(group_name));\n"

    /* owned_memberships: memberships usersync added (keep_existing = true
    ** removes only these). Keyed by the link, so an account rename keeps
    ** them; deleting the link drops them. */
    "CREATE TABLE owned_memberships (\n"
    "  id         INTEGER PRIMARY KEY,\n"
    "  sync       TEXT NOT NULL,\n"
    "  target     TEXT NOT NULL,\n"
    "  group_name TEXT NOT NULL,\n"
    "  okta_id    TEXT NOT NULL,\n"
    "  added      TEXT NOT NULL DEFAULT " NOW ",\n"
    "  FOREIGN KEY (sync, target, okta_id) REFERENCES links (sync, target, okta_id)\n"
    "    ON DELETE CASCADE ON UPDATE CASCADE\n"
    ");\n"
    "CREATE UNIQUE INDEX owned_memberships_key\n"
    "  ON owned_memberships (sync, target, lower(group_name), okta_id);\n"
    "CREATE INDEX owned_memberships_user ON owned_memberships (sync, target, okta_id);\n"

    /* runs: one row per plan/apply/sync (usersync history). outcome:
    ** running; ok (all applied); partial (some operations failed, exit 1);
    ** failed (the run stopped on an error); stopped (safety limit, exit 3);
    ** interrupted (the process died; set by a later run). */
    "CREATE TABLE runs (\n"
    "  id       INTEGER PRIMARY KEY,\n"
    "  sync     TEXT NOT NULL,           -- sync entry name\n"
    "  trigger  TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule', 'event', 'incremental')),\n"
    "  command  TEXT,                    -- 'sync', 'apply', ...\n"
    "  scope    TEXT,                    -- NULL: everyone; else e.g. the --user login\n"
    "  pid      INTEGER,                 -- process that ran it\n"
    "  host     TEXT,\n"
    "  started  TEXT NOT NULL DEFAULT " NOW ",\n"
    "  ended    TEXT,\n"
    "  outcome  TEXT NOT NULL DEFAULT 'running' CHECK (outcome IN\n"
    "           ('running', 'ok', 'partial', 'failed', 'stopped', 'interrupted')),\n"
    "  counts   TEXT CHECK (counts IS NULL OR json_valid(counts)), -- {\"create_user\":3,...}\n"
    "  error    TEXT\n"
    ");\n"
    "CREATE INDEX runs_sync ON runs (sync, started);\n"
    "CREATE INDEX runs_started ON runs (started); -- retention pruning\n"

    /* operations: every planned operation of a run, written before it is
    ** sent and updated with its outcome, so an interrupted apply can be
    ** resumed: 'running' rows are ones whose outcome is unknown. */
    "CREATE TABLE operations (\n"
    "  run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq      INTEGER NOT NULL,        -- position in the plan\n"
    "  target   TEXT NOT NULL,\n"
    "  kind     TEXT NOT NULL,           -- create_user, rename_user, add_member, ...\n"
    "  subject  TEXT NOT NULL,           -- account or group name the operation is about\n"
    "  okta_id  TEXT,                    -- the Okta user concerned, if any\n"
    "  detail   TEXT CHECK (detail IS NULL OR json_valid(detail)), -- parameters, reason\n"
    "  status   TEXT NOT NULL DEFAULT 'pending' CHECK (status IN\n"
    "           ('pending', 'running', 'done', 'failed', 'skipped')),\n"
    "  error    TEXT,\n"
    "  code     TEXT,                    -- stable error code, e.g. HTTP_409\n"
    "  started  TEXT,\n"
    "  ended    TEXT,\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX operations_open ON operations (status) WHERE status IN ('pending', 'running');\n"

    /* cursors: resume points (System Log next URL, lastUpdated watermark). */
    "CREATE TABLE cursors (\n"
    "  name    TEXT PRIMARY KEY,\n"
    "  value   TEXT NOT NULL,\n"
    "  updated TEXT NOT NULL DEFAULT " NOW "\n"
    ") WITHOUT ROWID;\n"

    /* kv: the key-value area of scripts, per namespace; values are text
    ** (scripts JSON-encode tables). */
    "CREATE TABLE kv (\n"
    "  namespace TEXT NOT NULL,\n"
    "  key       TEXT NOT NULL,\n"
    "  value     TEXT NOT NULL,\n"
    "  updated   TEXT NOT NULL DEFAULT " NOW ",\n"
    "  PRIMARY KEY (namespace, key)\n"
    ") WITHOUT ROWID;\n"

    /* locks: named leases (e.g. 'sync:NAME' so two runs never overlap).
    ** owner_token identifies the store handle; a lock whose lease expired,
    ** or whose pid is gone on the same host, may be taken over. */
    "CREATE TABLE locks (\n"
    "  name        TEXT PRIMARY KEY,\n"
    "  owner_pid   INTEGER NOT NULL,\n"
    "  owner_host  TEXT NOT NULL,\n"
    "  owner_token TEXT NOT NULL,\n"
    "  acquired    TEXT NOT NULL,\n"
    "  expires     TEXT NOT NULL\n"
    ") WITHOUT ROWID;\n";

/* v2: the journal's unknown outcomes and why a membership was added.
** operations.unsure = 1: the request may have reached the target but its
** answer was lost (a 5xx, a timeout, a dropped connection); like a row
** still 'running' of a finished run, its outcome is settled by the next
** plan's read of the target (state.reconcile) and unsure goes back to 0.
** owned_memberships.why: 'mapping' (a group rule), 'default' (an
** all-users default) or 'new_user' (a new-user default, which stays once
** given); NULL for rows written before v2. */
static const char schema_v2[] =
    "ALTER TABLE operations ADD COLUMN unsure INTEGER NOT NULL DEFAULT 0 CHECK (unsure IN (0, 1));\n"
    "CREATE INDEX operations_unsettled ON operations (target) WHERE status = 'running' OR unsure = 1;\n"
    "ALTER TABLE owned_memberships ADD COLUMN why TEXT\n"
    "  CHECK (why IS NULL OR why IN ('mapping', 'default', 'new_user'));\n"
    /* returning_groups: groups no rule manages (a licence group) that a
    ** deprovisioning by group removal took from a linked account; given
    ** back with the new-user groups when the account returns, until it is
    ** onboarded again. */
    "CREATE TABLE returning_groups (\n"
    "  sync       TEXT NOT NULL,\n"
    "  target     TEXT NOT NULL,\n"
    "  okta_id    TEXT NOT NULL,\n"
    "  group_name TEXT NOT NULL,\n"
    "  PRIMARY KEY (sync, target, okta_id, group_name)\n"
    ") WITHOUT ROWID;\n";

/* v3: what a run could not do, kept with it (usersync show): a policy
** error (with the hook's message), a username conflict, a target that
** could not be read, a destructive change withheld by a safety stop (with
** the stop's reason). One row each, in the order the plan reported them. */
static const char schema_v3[] =
    "CREATE TABLE findings (\n"
    "  run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq      INTEGER NOT NULL,\n"
    "  target   TEXT NOT NULL,\n"
    "  kind     TEXT NOT NULL CHECK (kind IN ('policy_error', 'conflict', 'unread', 'withheld')),\n"
    "  subject  TEXT,                    -- account, group or login concerned, if any\n"
    "  okta_id  TEXT,\n"
    "  op       TEXT,                    -- withheld: the operation's kind\n"
    "  message  TEXT NOT NULL,           -- the error, conflict or stop reason\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ") WITHOUT ROWID;\n";

/* v4: the targets a run was limited to (`--target`), comma-separated in
** config order; NULL: every target of its sync entry. Such a run is not a
** full run (the last-success metric, the schedule). */
static const char schema_v4[] = "ALTER TABLE runs ADD COLUMN targets TEXT;\n";
/* v5: the id a service assigned to a linked account (SCIM: accounts are
** identified by it, not by their userName), learnt from the target's reads;
** NULL where the product has none (Jira, Confluence, Bitbucket: by name). */
static const char schema_v5[] = "ALTER TABLE links ADD COLUMN account_id TEXT;\n";
/* v6: what identity providers pushed to `usersync serve`'s SCIM endpoints
** (one set per `scim` source): users and groups as SCIM resources (JSON,
** members kept apart in scim_members so a PATCH of one member rewrites one
** row), with their meta (created, lastModified, version for the ETag), and
** scim_changes, the users a push touched, waiting for the run that syncs
** them (written in the push's own transaction, so an acknowledged push is
** never forgotten). */
static const char schema_v6[] =
    "CREATE TABLE scim_users (\n"
    "  source      TEXT NOT NULL,\n"
    "  id          TEXT NOT NULL,\n"
    "  user_name   TEXT NOT NULL,\n"
    "  user_name_lc TEXT NOT NULL,           -- userName is unique, case-insensitively\n"
    "  external_id TEXT,\n"
    "  active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),\n"
    "  resource    TEXT NOT NULL,            -- the User resource (JSON) without meta\n"
    "  created     TEXT NOT NULL,\n"
    "  modified    TEXT NOT NULL,\n"
    "  version     INTEGER NOT NULL DEFAULT 1,\n"
    "  PRIMARY KEY (source, id)\n"
    ");\n"
    "CREATE UNIQUE INDEX scim_users_name ON scim_users (source, user_name_lc);\n"
    "CREATE INDEX scim_users_external ON scim_users (source, external_id);\n"
    "CREATE TABLE scim_groups (\n"
    "  source       TEXT NOT NULL,\n"
    "  id           TEXT NOT NULL,\n"
    "  display_name TEXT NOT NULL,\n"
    "  display_name_lc TEXT NOT NULL,\n"
    "  external_id  TEXT,\n"
    "  resource     TEXT NOT NULL,           -- the Group resource (JSON) without members and meta\n"
    "  created      TEXT NOT NULL,\n"
    "  modified     TEXT NOT NULL,\n"
    "  version      INTEGER NOT NULL DEFAULT 1,\n"
    "  PRIMARY KEY (source, id)\n"
    ");\n"
    "CREATE INDEX scim_groups_name ON scim_groups (source, display_name_lc);\n"
    "CREATE INDEX scim_groups_external ON scim_groups (source, external_id);\n"
    "CREATE TABLE scim_members (\n"
    "  source   TEXT NOT NULL,\n"
    "  group_id TEXT NOT NULL,\n"
    "  user_id  TEXT NOT NULL,\n"
    "  PRIMARY KEY (source, group_id, user_id)\n"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX scim_members_user ON scim_members (source, user_id);\n"
    "CREATE TABLE scim_changes (\n"
    "  seq     INTEGER PRIMARY KEY,\n"
    "  source  TEXT NOT NULL,\n"
    "  user_id TEXT NOT NULL\n"
    ");\n";

/* v7: the journal's tables without IN lists in their CHECK constraints.
** SQLite (3.40) codes a CHECK's `x IN ('a', 'b', 'c')` of three values or
** more as a temporary table filled on every row written (no once-only
** guard in a constraint), which cost the journal a share of its CPU per
** operation: operations.status on every intent and outcome,
** owned_memberships.why on every membership added. The same constraints
** as comparisons (`x = 'a' OR x = 'b' ...`: equal for every value, NULL
** included, which passes both) take no temporary table. Rebuilt as
** SQLite's table-rebuild procedure does it: the new table, the rows
** copied, the old one dropped (with its indexes), the new one renamed, the
** indexes created again, all in the migration's transaction. Both are
** child tables only (nothing refers to them), so dropping them deletes
** nothing elsewhere; the rows are copied as they are, with foreign keys
** off while migrations run (us_store_migrate), a row whose run or link an
** admin deleted by hand included. Columns keep
** their order (unsure, why last, as v2 added them). runs and findings keep
** their IN lists: written once per run or finding, not per operation, and
** runs is a parent table whose drop would cascade to its operations. */
static const char schema_v7[] =
    "CREATE TABLE operations_v7 (\n"
    "  run_id   INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,\n"
    "  seq      INTEGER NOT NULL,        -- position in the plan\n"
    "  target   TEXT NOT NULL,\n"
    "  kind     TEXT NOT NULL,           -- create_user, rename_user, add_member, ...\n"
    "  subject  TEXT NOT NULL,           -- account or group name the operation is about\n"
    "  okta_id  TEXT,                    -- the Okta user concerned, if any\n"
    "  detail   TEXT CHECK (detail IS NULL OR json_valid(detail)), -- parameters, reason\n"
    "  status   TEXT NOT NULL DEFAULT 'pending' CHECK (status = 'pending' OR status = 'running'\n"
    "           OR status = 'done' OR status = 'failed' OR status = 'skipped'),\n"
    "  error    TEXT,\n"
    "  code     TEXT,                    -- stable error code, e.g. HTTP_409\n"
    "  started  TEXT,\n"
    "  ended    TEXT,\n"
    "  unsure   INTEGER NOT NULL DEFAULT 0 CHECK (unsure IN (0, 1)),\n"
    "  PRIMARY KEY (run_id, seq)\n"
    ") WITHOUT ROWID;\n"
    "INSERT INTO operations_v7 (run_id, seq, target, kind, subject, okta_id, detail, status, error,\n"
    "                           code, started, ended, unsure)\n"
    "  SELECT run_id, seq, target, kind, subject, okta_id, detail, status, error, code, started,\n"
    "         ended, unsure FROM operations;\n"
    "DROP TABLE operations;\n"
    "ALTER TABLE operations_v7 RENAME TO operations;\n"
    "CREATE INDEX operations_open ON operations (status) WHERE status IN ('pending', 'running');\n"
    "CREATE INDEX operations_unsettled ON operations (target) WHERE status = 'running' OR unsure = 1;\n"
    "CREATE TABLE owned_memberships_v7 (\n"
    "  id         INTEGER PRIMARY KEY,\n"
    "  sync       TEXT NOT NULL,\n"
    "  target     TEXT NOT NULL,\n"
    "  group_name TEXT NOT NULL,\n"
    "  okta_id    TEXT NOT NULL,\n"
    "  added      TEXT NOT NULL DEFAULT " NOW ",\n"
    "  why        TEXT CHECK (why IS NULL OR why = 'mapping' OR why = 'default' OR why = 'new_user'),\n"
    "  FOREIGN KEY (sync, target, okta_id) REFERENCES links (sync, target, okta_id)\n"
    "    ON DELETE CASCADE ON UPDATE CASCADE\n"
    ");\n"
    "INSERT INTO owned_memberships_v7 (id, sync, target, group_name, okta_id, added, why)\n"
    "  SELECT id, sync, target, group_name, okta_id, added, why FROM owned_memberships;\n"
    "DROP TABLE owned_memberships;\n"
    "ALTER TABLE owned_memberships_v7 RENAME TO owned_memberships;\n"
    "CREATE UNIQUE INDEX owned_memberships_key\n"
    "  ON owned_memberships (sync, target, lower(group_name), okta_id);\n"
    "CREATE INDEX owned_memberships_user ON owned_memberships (sync, target, okta_id);\n";

static const us_store_migration builtin_migrations[] = {
    {1, "initial schema: links, owned groups and memberships, runs, operations, cursors, kv, "
        "locks",
     schema_v1},
    {2, "journal outcomes to settle (operations.unsure), why a membership was added, groups to "
        "give back to a returning account",
     schema_v2},
    {3, "what a run could not do: policy errors, conflicts, unread targets, withheld changes",
     schema_v3},
    {4, "the targets a run was limited to (--target)", schema_v4},
    {5, "links keep the service's id of their account (SCIM targets)", schema_v5},
    {6, "SCIM sources: users, groups and memberships identity providers pushed, and the users "
        "a push touched",
     schema_v6},
    {7, "the journal's CHECK constraints without IN lists (operations.status, "
        "owned_memberships.why)",
     schema_v7},
};

const us_store_migration *us_store_migrations(size_t *n) {
  *n = sizeof builtin_migrations / sizeof builtin_migrations[0];
  return builtin_migrations;
}

/* ------------------------------------------------------------------ */
/* Errors */

const char *us_store_code_name(us_store_code code) {
  switch (code) {
  case US_STORE_OK: return "OK";
  case US_STORE_ESQL: return "ESQL";
  case US_STORE_ECONSTRAINT: return "ECONSTRAINT";
  case US_STORE_EBUSY: return "EBUSY";
  case US_STORE_ELOCKED: return "ELOCKED";
  case US_STORE_ESCHEMA: return "ESCHEMA";
  case US_STORE_EOPEN: return "EOPEN";
  case US_STORE_EIO: return "EIO";
  case US_STORE_ENOMEM: return "ENOMEM";
  case US_STORE_EMISUSE: return "EMISUSE";
  }
  return "EUNKNOWN";
}

/* Maps a SQLite result code (extended or primary) to ours. */
static us_store_code map_rc(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_ROW:
  case SQLITE_DONE: return US_STORE_OK;
  case SQLITE_BUSY:
  case SQLITE_LOCKED: return US_STORE_EBUSY;
  case SQLITE_CONSTRAINT: return US_STORE_ECONSTRAINT;
  case SQLITE_NOMEM: return US_STORE_ENOMEM;
  case SQLITE_CANTOPEN: return US_STORE_EOPEN;
  case SQLITE_MISUSE:
  case SQLITE_RANGE: return US_STORE_EMISUSE;
  case SQLITE_IOERR:
  case SQLITE_FULL:
  case SQLITE_READONLY:
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
  case SQLITE_PERM: return US_STORE_EIO;
  default: return US_STORE_ESQL;
  }
}

/* Records a failure on s; returns code. */
static us_store_code fail(us_store *s, us_store_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = snprintf(s->msg, sizeof s->msg, "store: ");
  vsnprintf(s->msg + n, sizeof s->msg - (size_t)n, fmt, ap);
  va_end(ap);
  s->code = code;
  return code;
}

/* Records SQLite's failure rc on s; returns our code. A busy failure says
** how long it waited. */
static us_store_code fail_rc(us_store *s, int rc) {
  us_store_code code = map_rc(rc);
  if (code == US_STORE_OK)
    return US_STORE_OK;
  if (code == US_STORE_EBUSY && (rc & 0xff) == SQLITE_BUSY)
    return fail(s, code, "database is locked by another connection (gave up after %d ms)",
                s->busy_ms);
  return fail(s, code, "%s", sqlite3_errmsg(s->db));
}

const char *us_store_errmsg(const us_store *s) { return s->msg; }
us_store_code us_store_errcode(const us_store *s) { return s->code; }
size_t us_store_release_cache(us_store *s) {
  int cur = 0, hi = 0;
  if (sqlite3_db_status(s->db, SQLITE_DBSTATUS_CACHE_USED, &cur, &hi, 0) != SQLITE_OK)
    cur = 0;
  sqlite3_db_release_memory(s->db);
  return cur > 0 ? (size_t)cur : 0;
}

const char *us_store_path(const us_store *s) { return s->path; }
const char *us_store_lock_token(const us_store *s) { return s->token; }
long long us_store_last_rowid(const us_store *s) {
  return (long long)sqlite3_last_insert_rowid(s->db);
}

/* ------------------------------------------------------------------ */
/* Statement cache: idle prepared statements keyed by their whole SQL text. */

static sqlite3_stmt *cache_take(us_store *s, const char *sql, size_t len) {
  for (int i = 0; i < s->ncache; i++) {
    struct cache_entry *e = &s->cache[i];
    if (e->len == len && memcmp(e->sql, sql, len) == 0) {
      sqlite3_stmt *stmt = e->stmt;
      free(e->sql);
      s->cache[i] = s->cache[--s->ncache];
      return stmt;
    }
  }
  return NULL;
}

/* Takes ownership of sql (malloc'd) and stmt (reset). Evicts the least
** recently used entry when full. */
static void cache_put(us_store *s, char *sql, size_t len, sqlite3_stmt *stmt) {
  if (s->ncache == CACHE_SIZE) {
    int lru = 0;
    for (int i = 1; i < s->ncache; i++)
      if (s->cache[i].used < s->cache[lru].used)
        lru = i;
    free(s->cache[lru].sql);
    sqlite3_finalize(s->cache[lru].stmt);
    s->cache[lru] = s->cache[--s->ncache];
  }
  s->cache[s->ncache++] = (struct cache_entry){sql, len, stmt, ++s->tick};
}

static void cache_clear(us_store *s) {
  for (int i = 0; i < s->ncache; i++) {
    free(s->cache[i].sql);
    sqlite3_finalize(s->cache[i].stmt);
  }
  s->ncache = 0;
}

/* ------------------------------------------------------------------ */
/* Statements */

static void live_link(us_store *s, us_store_stmt *st) {
  st->store = s;
  st->prev = NULL;
  st->next = s->live;
  if (s->live)
    s->live->prev = st;
  s->live = st;
}

static void live_unlink(us_store_stmt *st) {
  us_store *s = st->store;
  if (st->prev)
    st->prev->next = st->next;
  else if (s)
    s->live = st->next;
  if (st->next)
    st->next->prev = st->prev;
  st->prev = st->next = NULL;
  st->store = NULL;
}

static int blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r' && p[i] != ';')
      return 0;
  return 1;
}

/* Does sql[0..len) hold a statement (not only blanks and comments)? */
static int holds_statement(us_store *s, const char *sql, size_t len) {
  if (blank(sql, len))
    return 0;
  sqlite3_stmt *stmt = NULL;
  int rc = sqlite3_prepare_v2(s->db, sql, (int)len, &stmt, NULL);
  sqlite3_finalize(stmt);
  return rc != SQLITE_OK || stmt != NULL;
}

/* Makes st->cache_key an owned copy of sql[0..len) (no cache on ENOMEM). */
static void set_cache_key(us_store_stmt *st, const char *sql, size_t len) {
  st->cache_key = malloc(len + 1);
  if (st->cache_key) {
    memcpy(st->cache_key, sql, len);
    st->cache_key[len] = '\0';
    st->cache_len = len;
  }
}

us_store_code us_store_prepare(us_store *s, us_store_stmt *st, const char *sql, size_t len,
                               size_t *tail) {
  *st = (us_store_stmt)US_STORE_STMT_INIT;
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  if (len > 0x7fffffff)
    return fail(s, US_STORE_ESQL, "SQL text too long");
  sqlite3_stmt *stmt = tail ? NULL : cache_take(s, sql, len);
  if (stmt == NULL) {
    const char *end = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, (int)len, tail ? 0 : SQLITE_PREPARE_PERSISTENT,
                                &stmt, &end);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      us_store_code code = map_rc(rc);
      if (code != US_STORE_EBUSY && code != US_STORE_ENOMEM)
        return fail(s, US_STORE_ESQL, "%s", sqlite3_errmsg(s->db));
      return fail_rc(s, rc);
    }
    size_t used = (size_t)(end - sql);
    if (tail) {
      *tail = used;
    } else if (stmt == NULL) {
      return fail(s, US_STORE_ESQL, "empty SQL statement");
    } else if (holds_statement(s, sql + used, len - used)) {
      sqlite3_finalize(stmt);
      return fail(s, US_STORE_ESQL, "SQL text holds more than one statement (exec runs "
                                    "several only without parameters)");
    }
  }
  if (stmt && !tail)
    set_cache_key(st, sql, len);
  st->stmt = stmt;
  if (stmt)
    live_link(s, st);
  return US_STORE_OK;
}

void us_store_finish(us_store_stmt *st) {
  us_store *s = st->store;
  if (st->stmt && s) {
    sqlite3_reset(st->stmt);
    sqlite3_clear_bindings(st->stmt);
    if (st->cache_key)
      cache_put(s, st->cache_key, st->cache_len, st->stmt);
    else
      sqlite3_finalize(st->stmt);
    st->cache_key = NULL;
  }
  live_unlink(st);
  free(st->cache_key);
  st->cache_key = NULL;
  st->stmt = NULL;
}

int us_store_param_count(const us_store_stmt *st) {
  return st->stmt ? sqlite3_bind_parameter_count(st->stmt) : 0;
}

const char *us_store_param_name(const us_store_stmt *st, int i) {
  const char *name = st->stmt ? sqlite3_bind_parameter_name(st->stmt, i) : NULL;
  return (name && name[0] != '?') ? name + 1 : NULL;
}

static us_store_code detached(us_store_stmt *st) {
  (void)st;
  return US_STORE_EMISUSE;
}

us_store_code us_store_bind(us_store_stmt *st, int i, const us_store_value *v) {
  if (st->stmt == NULL || st->store == NULL)
    return detached(st);
  int rc;
  switch (v->type) {
  case US_STORE_NULL: rc = sqlite3_bind_null(st->stmt, i); break;
  case US_STORE_INTEGER: rc = sqlite3_bind_int64(st->stmt, i, v->i); break;
  case US_STORE_FLOAT: rc = sqlite3_bind_double(st->stmt, i, v->f); break;
  case US_STORE_TEXT:
    rc = sqlite3_bind_text64(st->stmt, i, v->s ? v->s : "", v->len, SQLITE_TRANSIENT, SQLITE_UTF8);
    break;
  case US_STORE_BLOB:
    rc = sqlite3_bind_blob64(st->stmt, i, v->s ? v->s : "", v->len, SQLITE_TRANSIENT);
    break;
  default: return fail(st->store, US_STORE_EMISUSE, "unknown value type %d", (int)v->type);
  }
  return fail_rc(st->store, rc);
}

us_store_code us_store_bind_all(us_store_stmt *st, const us_store_value *v, int n) {
  if (st->stmt == NULL || st->store == NULL)
    return detached(st);
  int want = sqlite3_bind_parameter_count(st->stmt);
  if (n != want)
    return fail(st->store, US_STORE_EMISUSE, "statement takes %d parameter%s, %d value%s given",
                want, want == 1 ? "" : "s", n, n == 1 ? "" : "s");
  for (int i = 0; i < n; i++) {
    us_store_code code = us_store_bind(st, i + 1, &v[i]);
    if (code)
      return code;
  }
  return US_STORE_OK;
}

us_store_code us_store_step(us_store_stmt *st, int *row) {
  *row = 0;
  if (st->stmt == NULL || st->store == NULL)
    return detached(st);
  us_store *s = st->store;
  if (!st->stepped) {
    st->stepped = 1;
    st->total_before = sqlite3_total_changes64(s->db);
  }
  int rc = sqlite3_step(st->stmt);
  if (rc == SQLITE_ROW) {
    *row = 1;
    return US_STORE_OK;
  }
  if (rc == SQLITE_DONE) {
    st->changes = sqlite3_total_changes64(s->db) != st->total_before ? sqlite3_changes64(s->db) : 0;
    return US_STORE_OK;
  }
  us_store_code code = fail_rc(s, rc);
  sqlite3_reset(st->stmt); /* leave it reusable; the error is recorded */
  return code;
}

int us_store_column_count(const us_store_stmt *st) {
  return st->stmt ? sqlite3_column_count(st->stmt) : 0;
}

const char *us_store_column_name(const us_store_stmt *st, int i) {
  const char *name = st->stmt ? sqlite3_column_name(st->stmt, i) : NULL;
  return name ? name : "?";
}

void us_store_column(us_store_stmt *st, int i, us_store_value *out) {
  *out = US_STORE_NULL_VALUE;
  if (st->stmt == NULL)
    return;
  switch (sqlite3_column_type(st->stmt, i)) {
  case SQLITE_INTEGER:
    out->type = US_STORE_INTEGER;
    out->i = sqlite3_column_int64(st->stmt, i);
    break;
  case SQLITE_FLOAT:
    out->type = US_STORE_FLOAT;
    out->f = sqlite3_column_double(st->stmt, i);
    break;
  case SQLITE_TEXT:
    out->type = US_STORE_TEXT;
    out->s = (const char *)sqlite3_column_text(st->stmt, i);
    out->len = (size_t)sqlite3_column_bytes(st->stmt, i);
    break;
  case SQLITE_BLOB:
    out->type = US_STORE_BLOB;
    out->s = sqlite3_column_blob(st->stmt, i);
    out->len = (size_t)sqlite3_column_bytes(st->stmt, i);
    if (out->s == NULL)
      out->s = "";
    break;
  default: break;
  }
}

/* Steps st to completion, discarding rows. */
static us_store_code run_to_end(us_store_stmt *st) {
  int row = 1;
  while (row) {
    us_store_code code = us_store_step(st, &row);
    if (code)
      return code;
  }
  return US_STORE_OK;
}

us_store_code us_store_exec(us_store *s, const char *sql, const us_store_value *params, int n,
                            long long *changes) {
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  size_t len = strlen(sql), off = 0;
  us_store_code code = US_STORE_OK;
  if (changes)
    *changes = 0;
  if (n > 0) {
    us_store_stmt st = US_STORE_STMT_INIT;
    code = us_store_prepare(s, &st, sql, len, NULL);
    if (!code)
      code = us_store_bind_all(&st, params, n);
    if (!code)
      code = run_to_end(&st);
    if (!code && changes)
      *changes = st.changes;
    us_store_finish(&st);
    return code;
  }
  while (off < len) {
    us_store_stmt st = US_STORE_STMT_INIT;
    size_t used = 0;
    code = us_store_prepare(s, &st, sql + off, len - off, &used);
    if (code)
      return code;
    off += used;
    if (st.stmt == NULL)
      break;
    if (sqlite3_bind_parameter_count(st.stmt) > 0)
      code = fail(s, US_STORE_EMISUSE, "statement takes parameters, no values given");
    if (!code)
      code = run_to_end(&st);
    if (!code && changes)
      *changes = st.changes;
    us_store_finish(&st);
    if (code)
      return code;
  }
  return code;
}

/* Runs one statement expected to yield a single integer (PRAGMA user_version). */
static us_store_code query_int(us_store *s, const char *sql, long long *out) {
  us_store_stmt st = US_STORE_STMT_INIT;
  int row = 0;
  us_store_code code = us_store_prepare(s, &st, sql, strlen(sql), NULL);
  if (!code)
    code = us_store_step(&st, &row);
  if (!code && row) {
    us_store_value v;
    us_store_column(&st, 0, &v);
    *out = v.type == US_STORE_INTEGER ? v.i : 0;
  }
  us_store_finish(&st);
  return code;
}

us_store_code us_store_version(us_store *s, int *version) {
  long long v = 0;
  us_store_code code = query_int(s, "PRAGMA user_version", &v);
  *version = (int)v;
  return code;
}

/* ------------------------------------------------------------------ */
/* Transactions */

int us_store_depth(const us_store *s) { return s->depth; }

us_store_code us_store_begin(us_store *s) {
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  char sql[64];
  int outer = s->depth == 0 && sqlite3_get_autocommit(s->db);
  if (outer)
    snprintf(sql, sizeof sql, "BEGIN IMMEDIATE");
  else
    snprintf(sql, sizeof sql, "SAVEPOINT us_level_%d", s->depth + 1);
  us_store_code code = us_store_exec(s, sql, NULL, 0, NULL);
  if (code)
    return code;
  if (s->depth == 0)
    s->outer_is_begin = outer;
  s->depth++;
  return US_STORE_OK;
}

us_store_code us_store_commit(us_store *s) {
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  if (s->depth == 0)
    return fail(s, US_STORE_EMISUSE, "commit without a transaction");
  char sql[64];
  int outer = s->depth == 1 && s->outer_is_begin;
  if (outer)
    snprintf(sql, sizeof sql, "COMMIT");
  else
    snprintf(sql, sizeof sql, "RELEASE us_level_%d", s->depth);
  us_store_code code = us_store_exec(s, sql, NULL, 0, NULL);
  if (code && outer) {
    /* Keep the failure's message; the transaction must not stay open. */
    char msg[sizeof s->msg];
    memcpy(msg, s->msg, sizeof msg);
    if (!sqlite3_get_autocommit(s->db))
      sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    memcpy(s->msg, msg, sizeof msg);
    s->code = code;
  }
  if (!code || outer)
    s->depth--;
  return code;
}

us_store_code us_store_rollback(us_store *s) {
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  if (s->depth == 0)
    return fail(s, US_STORE_EMISUSE, "rollback without a transaction");
  char sql[96];
  if (s->depth == 1 && s->outer_is_begin)
    snprintf(sql, sizeof sql, "ROLLBACK");
  else
    snprintf(sql, sizeof sql, "ROLLBACK TO us_level_%d; RELEASE us_level_%d", s->depth, s->depth);
  s->depth--;
  /* A failed statement may already have ended the transaction. */
  if (s->depth == 0 && s->outer_is_begin && sqlite3_get_autocommit(s->db))
    return US_STORE_OK;
  return us_store_exec(s, sql, NULL, 0, NULL);
}

/* ------------------------------------------------------------------ */
/* Migrations */

static us_store_code migrate_each(us_store *s, const us_store_migration *list, size_t n,
                                  int version);

us_store_code us_store_migrate(us_store *s, const us_store_migration *list, size_t n) {
  int version = 0;
  us_store_code code = us_store_version(s, &version);
  if (code)
    return code;
  int latest = n ? list[n - 1].version : 0;
  if (version > latest)
    return fail(s, US_STORE_ESCHEMA,
                "database %s has schema version %d, newer than this usersync knows (%d); "
                "use a newer usersync",
                s->path, version, latest);
  /* Migrations run with foreign keys off, as SQLite's procedure for
  ** rebuilding a table asks (a rebuild copies rows into a new table and
  ** drops the old one): rows an earlier tool left without their parent
  ** (a run or link deleted with the sqlite3 shell, which enforces no
  ** foreign keys by default) are copied as they are, not refused, so the
  ** upgrade neither fails for good nor drops them. The connection's
  ** setting is restored afterwards. (The pragma has no effect inside a
  ** transaction, hence around the loop.) */
  long long fk = 0;
  int pending = n && latest > version;
  if (pending && (code = query_int(s, "PRAGMA foreign_keys", &fk)))
    return code;
  if (pending && fk && (code = us_store_exec(s, "PRAGMA foreign_keys = OFF", NULL, 0, NULL)))
    return code;
  code = migrate_each(s, list, n, version);
  if (pending && fk) {
    char keep[sizeof s->msg];
    snprintf(keep, sizeof keep, "%s", s->msg);
    us_store_code back = us_store_exec(s, "PRAGMA foreign_keys = ON", NULL, 0, NULL);
    if (code)
      snprintf(s->msg, sizeof s->msg, "%s", keep);
    else
      code = back;
  }
  return code;
}

static us_store_code migrate_each(us_store *s, const us_store_migration *list, size_t n,
                                  int version) {
  us_store_code code = US_STORE_OK;
  for (size_t i = 0; i < n; i++) {
    if (list[i].version <= version)
      continue;
    if ((code = us_store_begin(s)))
      return code;
    /* Another process may have migrated while we waited for the lock. */
    int now = 0;
    code = us_store_version(s, &now);
    if (!code && now < list[i].version) {
      char pragma[64];
      snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", list[i].version);
      code = us_store_exec(s, list[i].sql, NULL, 0, NULL);
      if (!code)
        code = us_store_exec(s, pragma, NULL, 0, NULL);
    }
    if (code) {
      char msg[sizeof s->msg];
      snprintf(msg, sizeof msg, "%s", s->msg + strlen("store: "));
      us_store_rollback(s);
      return fail(s, US_STORE_ESCHEMA, "migration %d (%s) failed: %s", list[i].version,
                  list[i].description, msg);
    }
    if ((code = us_store_commit(s)))
      return code;
    version = list[i].version;
  }
  return US_STORE_OK;
}

/* ------------------------------------------------------------------ */
/* Open / close */

static void make_token(us_store *s) {
  unsigned char r[8];
  sqlite3_randomness(sizeof r, r);
  int n = snprintf(s->token, sizeof s->token, "%ld-", (long)getpid());
  for (size_t i = 0; i < sizeof r && n + 2 < (int)sizeof s->token; i++)
    n += snprintf(s->token + n, sizeof s->token - (size_t)n, "%02x", r[i]);
}

/* Sets up a freshly opened connection: timeouts, pragmas, schema. */
static us_store_code configure(us_store *s, int memory) {
  sqlite3_extended_result_codes(s->db, 1);
  sqlite3_busy_timeout(s->db, s->busy_ms);
  static const char wal[] = "PRAGMA journal_mode = WAL";
  us_store_stmt st = US_STORE_STMT_INIT;
  int row = 0;
  us_store_code code = us_store_prepare(s, &st, wal, strlen(wal), NULL);
  if (!code)
    code = us_store_step(&st, &row);
  if (!code && row) {
    us_store_value v;
    us_store_column(&st, 0, &v);
    int ok = v.type == US_STORE_TEXT &&
             (strcmp(v.s, "wal") == 0 || (memory && strcmp(v.s, "memory") == 0));
    if (!ok)
      code = fail(s, US_STORE_EIO, "cannot switch %s to WAL mode (journal mode is %s)", s->path,
                  v.type == US_STORE_TEXT ? v.s : "unknown");
  }
  us_store_finish(&st);
  if (!code)
    code = us_store_exec(s, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON", NULL, 0, NULL);
  /* A run's journal rewrites the same pages chunk after chunk (an intent,
  ** then its outcome): a checkpoint every 1,000 WAL pages (the default)
  ** copied them into the database file after every other chunk, with a
  ** read of the WAL and an fdatasync each time. Every 8,192 pages (32 MB
  ** of WAL at most, cut back to that size after a checkpoint) a page is
  ** copied once for many chunks; 8 MB of page cache keeps most of the
  ** journal's and the links' pages in memory between chunks. The statement
  ** journal of a statement that updates many rows (a chunk's intents or
  ** outcomes at once) stays in memory instead of a temporary file. */
  if (!code)
    code = us_store_exec(s, "PRAGMA wal_autocheckpoint = 8192; PRAGMA journal_size_limit = 33554432; "
                            "PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY", NULL, 0, NULL);
  if (!code) {
    size_t n;
    const us_store_migration *list = us_store_migrations(&n);
    code = us_store_migrate(s, list, n);
  }
  return code;
}

us_store *us_store_open(const char *path, const us_store_options *opt, us_store_error *err) {
  if (path == NULL) {
    if (err) {
      err->code = US_STORE_EMISUSE;
      snprintf(err->msg, sizeof err->msg, "store: no path given");
    }
    return NULL;
  }
  us_store *s = calloc(1, sizeof *s);
  char *copy = path ? strdup(path) : NULL;
  if (s == NULL || copy == NULL) {
    free(s);
    free(copy);
    if (err) {
      err->code = US_STORE_ENOMEM;
      snprintf(err->msg, sizeof err->msg, "store: out of memory");
    }
    return NULL;
  }
  s->path = copy;
  s->busy_ms = (opt && opt->busy_timeout_ms >= 0) ? opt->busy_timeout_ms : US_STORE_DEFAULT_BUSY_MS;
  if (gethostname(s->host, sizeof s->host) != 0)
    snprintf(s->host, sizeof s->host, "unknown");
  s->host[sizeof s->host - 1] = '\0';
  make_token(s);
  int memory = strcmp(path, ":memory:") == 0;
  int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  us_store_code code;
  if (rc != SQLITE_OK) {
    code = fail(s, map_rc(rc) == US_STORE_ENOMEM ? US_STORE_ENOMEM : US_STORE_EOPEN,
                "cannot open %s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
  } else {
    code = configure(s, memory);
  }
  if (code) {
    if (err) {
      err->code = code;
      snprintf(err->msg, sizeof err->msg, "%s", s->msg);
    }
    us_store_close(s);
    return NULL;
  }
  return s;
}

void us_store_close(us_store *s) {
  if (s == NULL)
    return;
  if (s->db) {
    while (s->live) { /* detach statements callers still hold */
      us_store_stmt *st = s->live;
      sqlite3_finalize(st->stmt);
      st->stmt = NULL;
      free(st->cache_key);
      st->cache_key = NULL;
      live_unlink(st);
    }
    if (!sqlite3_get_autocommit(s->db))
      sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->depth = 0;
    cache_clear(s);
    /* Release our named locks; best effort (a busy database keeps them
    ** until their lease ends or the pid check frees them). */
    sqlite3_stmt *del = NULL;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM locks WHERE owner_token = ?", -1, &del, NULL) ==
        SQLITE_OK) {
      sqlite3_bind_text(del, 1, s->token, -1, SQLITE_STATIC);
      sqlite3_step(del);
    }
    sqlite3_finalize(del);
    sqlite3_close_v2(s->db);
    s->db = NULL;
  }
  free(s->path);
  free(s);
}

/* ------------------------------------------------------------------ */
/* Named locks */

/* A process that exists and has not exited. A killed process whose parent
** has not reaped it yet (a zombie, state Z or X in /proc/PID/stat) holds
** nothing any more: its lock may be taken over. */
static int pid_alive(long long pid) {
  if (pid <= 0 || pid > 0x7fffffff)
    return 0;
  if (!(kill((pid_t)pid, 0) == 0 || errno == EPERM))
    return 0;
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%lld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 1; /* no procfs: trust kill() */
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *close = strrchr(buf, ')'); /* the command name may hold spaces and ')' */
  if (close && close[1] == ' ' && (close[2] == 'Z' || close[2] == 'X'))
    return 0;
  return 1;
}

static void copy_text(char *dst, size_t cap, const us_store_value *v) {
  size_t n = v->type == US_STORE_TEXT ? v->len : 0;
  if (n >= cap)
    n = cap - 1;
  if (n)
    memcpy(dst, v->s, n);
  dst[n] = '\0';
}

/* Reads the current holder of `name`; *found = 0 when the lock is free. */
static us_store_code lock_read(us_store *s, const char *name, int *found, int *expired,
                               char *token, size_t token_cap, us_store_lock_holder *h) {
  static const char sql[] =
      "SELECT owner_pid, owner_host, owner_token, acquired, expires,"
      " expires <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM locks WHERE name = ?";
  us_store_stmt st = US_STORE_STMT_INIT;
  us_store_value key = US_STORE_TEXT_VALUE(name), v;
  *found = 0;
  us_store_code code = us_store_prepare(s, &st, sql, sizeof sql - 1, NULL);
  if (!code)
    code = us_store_bind_all(&st, &key, 1);
  if (!code)
    code = us_store_step(&st, found);
  if (!code && *found) {
    us_store_column(&st, 0, &v);
    h->pid = v.type == US_STORE_INTEGER ? v.i : 0;
    us_store_column(&st, 1, &v);
    copy_text(h->host, sizeof h->host, &v);
    us_store_column(&st, 2, &v);
    copy_text(token, token_cap, &v);
    us_store_column(&st, 3, &v);
    copy_text(h->acquired, sizeof h->acquired, &v);
    us_store_column(&st, 4, &v);
    copy_text(h->expires, sizeof h->expires, &v);
    us_store_column(&st, 5, &v);
    *expired = v.type == US_STORE_INTEGER && v.i != 0;
  }
  us_store_finish(&st);
  return code;
}

/* Writes (insert or replace) our ownership of `name`; renew keeps `acquired`. */
static us_store_code lock_write(us_store *s, const char *name, long long ttl_ms, int renew) {
  static const char take[] =
      "INSERT OR REPLACE INTO locks (name, owner_pid, owner_host, owner_token, acquired, expires)"
      " VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),"
      " strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?5))";
  static const char extend[] =
      "UPDATE locks SET expires = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?5)"
      " WHERE name = ?1 AND owner_pid = ?2 AND owner_host = ?3 AND owner_token = ?4";
  char lease[48];
  snprintf(lease, sizeof lease, "+%lld.%03lld seconds", ttl_ms / 1000, ttl_ms % 1000);
  us_store_value v[5] = {US_STORE_TEXT_VALUE(name), US_STORE_INT_VALUE((long long)getpid()),
                         US_STORE_TEXT_VALUE(s->host), US_STORE_TEXT_VALUE(s->token),
                         US_STORE_TEXT_VALUE(lease)};
  return us_store_exec(s, renew ? extend : take, v, 5, NULL);
}

us_store_code us_store_lock(us_store *s, const char *name, long long ttl_ms,
                            us_store_lock_holder *holder) {
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  if (ttl_ms <= 0)
    ttl_ms = US_STORE_DEFAULT_LOCK_TTL_MS;
  us_store_lock_holder h;
  memset(&h, 0, sizeof h);
  char token[sizeof s->token];
  int found = 0, expired = 0;
  us_store_code code = us_store_begin(s);
  if (code)
    return code;
  code = lock_read(s, name, &found, &expired, token, sizeof token, &h);
  if (!code) {
    int ours = found && strcmp(token, s->token) == 0;
    int stale = found && !ours &&
                (expired || (strcmp(h.host, s->host) == 0 && !pid_alive(h.pid)));
    if (!found || ours || stale)
      code = lock_write(s, name, ttl_ms, ours);
    else
      code = fail(s, US_STORE_ELOCKED, "lock '%s' held by pid %lld on host %s since %s (lease until %s)",
                  name, h.pid, h.host, h.acquired, h.expires);
  }
  if (holder && code == US_STORE_ELOCKED)
    *holder = h;
  if (code) {
    us_store_code keep = code;
    char msg[sizeof s->msg];
    memcpy(msg, s->msg, sizeof msg);
    us_store_rollback(s);
    memcpy(s->msg, msg, sizeof msg);
    s->code = keep;
    return keep;
  }
  return us_store_commit(s);
}

us_store_code us_store_unlock(us_store *s, const char *name, int *released) {
  static const char sql[] = "DELETE FROM locks WHERE name = ? AND owner_token = ?";
  if (released)
    *released = 0;
  if (s == NULL || s->db == NULL)
    return US_STORE_EMISUSE;
  us_store_value v[2] = {US_STORE_TEXT_VALUE(name), US_STORE_TEXT_VALUE(s->token)};
  long long changes = 0;
  us_store_code code = us_store_exec(s, sql, v, 2, &changes);
  if (!code && released)
    *released = changes > 0;
  return code;
}
