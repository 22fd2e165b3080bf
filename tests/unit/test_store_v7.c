/*
** test_store_v7.c: schema migration 7 (the journal's CHECK constraints
** without IN lists) on stores the previous release wrote. A version 6
** store is made with the built-in migrations 1 to 6 (their text never
** changes) and filled with runs, operations of every status, links, owned
** groups and memberships, findings and the other tables; then:
**   - opening it upgrades it to 7 with every row as it was, an intact
**     file (integrity_check, foreign_key_check), the same schema as a
**     fresh store's (sqlite_schema, whitespace normalised), and the
**     constraints rejecting what they rejected (a bad status or why:
**     ECONSTRAINT, "CHECK constraint failed"; a NULL status; an operation
**     of no run) and cascading as before;
**   - an INSERT or UPDATE of the journal builds no temporary table per row
**     any more (EXPLAIN shows no OpenEphemeral; v6's IN lists did);
**   - a migration that fails halfway (an object in the way of its second
**     table) leaves the version 6 store as it was, which upgrades once
**     the obstacle is gone;
**   - a process killed (SIGKILL) in the middle of the migration's
**     transaction, with pages of it already in the WAL, leaves the version
**     6 store, which the next open upgrades.
** Databases live in a fresh directory under $TMPDIR.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "usersync/store.h"

static int failures;
#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
      failures++;                                                                        \
    }                                                                                    \
  } while (0)

static char dir[256];

static void db_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

/* A growing text buffer. */
struct buf {
  char *p;
  size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (b->len + n + 1 > cap)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
      abort();
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static sqlite3 *raw_open(const char *path) {
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
    fprintf(stderr, "cannot open %s: %s\n", path, sqlite3_errmsg(db));
    abort();
  }
  sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
  return db;
}

static void raw_exec(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    fprintf(stderr, "exec failed: %s\n  in: %.200s\n", msg ? msg : "?", sql);
    failures++;
  }
  sqlite3_free(msg);
}

static long long raw_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  long long v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Every query row as text: each column's type and value, '|' between
** columns, a newline after each row. */
static void rows(sqlite3 *db, const char *sql, struct buf *out) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    fprintf(stderr, "prepare failed: %s: %s\n", sql, sqlite3_errmsg(db));
    failures++;
    return;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    for (int i = 0; i < sqlite3_column_count(st); i++) {
      char t[4];
      snprintf(t, sizeof t, "%d:", sqlite3_column_type(st, i));
      puts_(out, t);
      const unsigned char *s = sqlite3_column_text(st, i);
      if (s)
        put(out, (const char *)s, (size_t)sqlite3_column_bytes(st, i));
      puts_(out, "|");
    }
    puts_(out, "\n");
  }
  sqlite3_finalize(st);
}

/* Every row of every table (ordered by all its columns), table by table
** in name order. */
static char *dump(sqlite3 *db) {
  struct buf names = {0}, out = {0};
  rows(db, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name", &names);
  for (char *line = names.p, *nl; line && (nl = strchr(line, '\n')); line = nl + 1) {
    *nl = '\0';
    const char *name = strchr(line, ':') + 1;
    char cut[128];
    snprintf(cut, sizeof cut, "%.*s", (int)(strlen(name) - 1), name); /* drop the '|' */
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s')", cut);
    long long ncol = raw_int(db, sql);
    int n = snprintf(sql, sizeof sql, "SELECT * FROM \"%s\" ORDER BY 1", cut);
    for (long long c = 2; c <= ncol; c++)
      n += snprintf(sql + n, sizeof sql - (size_t)n, ", %lld", c);
    puts_(&out, "== ");
    puts_(&out, cut);
    puts_(&out, "\n");
    rows(db, sql, &out);
  }
  free(names.p);
  return out.p;
}

/* sqlite_schema without rootpages, whitespace runs as one space. */
static char *schema(sqlite3 *db) {
  struct buf b = {0};
  rows(db, "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name", &b);
  char *w = b.p;
  int space = 0;
  for (const char *r = b.p; *r; r++) {
    int ws = *r == ' ' || *r == '\t' || (*r == '\n' && r[1] != '\0' && r[-1] != '|');
    if (ws) {
      if (!space)
        *w++ = ' ';
      space = 1;
    } else {
      *w++ = *r;
      space = 0;
    }
  }
  *w = '\0';
  return b.p;
}

/* The SQL of built-in migration `version`. */
static const char *migration(int version) {
  size_t n;
  const us_store_migration *list = us_store_migrations(&n);
  for (size_t i = 0; i < n; i++)
    if (list[i].version == version)
      return list[i].sql;
  return NULL;
}

/* A store as the previous release (schema version 6) left it, with
** `nops` operations in run 1 beside the hand-written rows. */
static void make_v6(const char *path, int nops) {
  sqlite3 *db = raw_open(path);
  raw_exec(db, "PRAGMA journal_mode = WAL");
  for (int v = 1; v <= 6; v++) {
    const char *sql = migration(v);
    CHECK(sql != NULL);
    if (sql)
      raw_exec(db, sql);
  }
  raw_exec(db, "PRAGMA user_version = 6");
  raw_exec(db,
           "BEGIN;"
           "INSERT INTO runs (id, sync, trigger, command, scope, pid, host, started, ended, outcome,"
           "  counts, error, targets) VALUES"
           " (1, 'main', 'manual', 'sync', NULL, 41, 'h1', '2026-12-01T10:00:00.000Z',"
           "  '2026-12-01T10:05:00.000Z', 'partial', '{\"create_user\":2}', NULL, 'jira'),"
           " (2, 'main', 'schedule', 'sync', 'ann@example.com', 42, 'h1',"
           "  '2026-12-02T10:00:00.000Z', NULL, 'running', NULL, NULL, NULL),"
           " (3, 'other', 'event', 'apply', NULL, 43, 'h2', '2026-12-03T10:00:00.000Z',"
           "  '2026-12-03T10:01:00.000Z', 'failed', NULL, 'okta: 500', NULL);"
           "INSERT INTO links (id, sync, target, okta_id, account_name, account_key, created_by_us,"
           "  onboarded, first_seen, last_seen, account_id) VALUES"
           " (1, 'main', 'jira', '00u1', 'ann', 'JIRAUSER1', 1, 0, '2026-12-01T10:00:00.000Z',"
           "  '2026-12-02T10:00:00.000Z', NULL),"
           " (2, 'main', 'jira', '00u2', 'Bob', NULL, 0, 1, '2026-12-01T10:00:00.000Z',"
           "  '2026-12-01T10:00:00.000Z', NULL),"
           " (3, 'other', 'scim', '00u1', 'ann@example.com', NULL, 1, 1,"
           "  '2026-12-03T10:00:00.000Z', '2026-12-03T10:00:00.000Z', 'a1b2');"
           "INSERT INTO owned_groups (id, sync, target, group_name, created) VALUES"
           " (4, 'main', 'jira', 'developers', '2026-12-01T10:00:00.000Z');"
           "INSERT INTO owned_memberships (id, sync, target, group_name, okta_id, added, why) VALUES"
           " (5, 'main', 'jira', 'developers', '00u1', '2026-12-01T10:00:01.000Z', 'mapping'),"
           " (9, 'main', 'jira', 'jira-software-users', '00u1', '2026-12-01T10:00:02.000Z',"
           "  'new_user'),"
           " (12, 'main', 'jira', 'Everyone', '00u2', '2026-12-01T10:00:03.000Z', 'default'),"
           " (13, 'main', 'jira', 'legacy', '00u2', '2026-11-01T10:00:00.000Z', NULL),"
           " (20, 'other', 'scim', 'staff', '00u1', '2026-12-03T10:00:00.000Z', 'mapping');"
           "INSERT INTO operations (run_id, seq, target, kind, subject, okta_id, detail, status,"
           "  error, code, started, ended, unsure) VALUES"
           " (2, 1, 'jira', 'create_user', 'ann', '00u1', '{\"email\":\"ann@example.com\"}',"
           "  'running', NULL, NULL, '2026-12-02T10:00:01.000Z', NULL, 0),"
           " (2, 2, 'jira', 'add_member', 'ann', '00u1', NULL, 'pending', NULL, NULL, NULL, NULL, 0),"
           " (3, 1, 'scim', 'add_member', 'ann@example.com', '00u1', '{\"group\":\"staff\"}',"
           "  'failed', 'timed out', 'ETIMEOUT', '2026-12-03T10:00:30.000Z',"
           "  '2026-12-03T10:01:00.000Z', 1);"
           "INSERT INTO findings (run_id, seq, target, kind, subject, okta_id, op, message) VALUES"
           " (1, 1, 'jira', 'conflict', 'cara', '00u3', NULL, 'taken by another account'),"
           " (1, 2, 'jira', 'withheld', 'legacy', NULL, 'delete_group', 'safety stop');"
           "INSERT INTO returning_groups VALUES ('main', 'jira', '00u2', 'licence');"
           "INSERT INTO cursors VALUES ('okta:main', 'https://x/logs?after=1', "
           "  '2026-12-01T10:00:00.000Z');"
           "INSERT INTO kv VALUES ('policy', 'k', '{\"a\":1}', '2026-12-01T10:00:00.000Z');"
           "INSERT INTO scim_users VALUES ('idp', 'u1', 'Ann', 'ann', NULL, 1, '{}',"
           "  '2026-12-01T10:00:00.000Z', '2026-12-01T10:00:00.000Z', 2);"
           "INSERT INTO scim_changes VALUES (1, 'idp', 'u1');"
           "COMMIT;");
  /* run 1's plan: every status, unsure or not, a detail or none */
  char sql[1024];
  snprintf(sql, sizeof sql,
           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
           " INSERT INTO operations (run_id, seq, target, kind, subject, okta_id, detail, status,"
           "   error, code, started, ended, unsure)"
           " SELECT 1, i, 'jira', CASE i %% 3 WHEN 0 THEN 'create_user' ELSE 'add_member' END,"
           "   'user' || i, printf('00u%%06d', i),"
           "   CASE WHEN i %% 4 = 0 THEN NULL ELSE json_object('group', 'g' || (i %% 50)) END,"
           "   CASE i %% 5 WHEN 0 THEN 'pending' WHEN 1 THEN 'running' WHEN 2 THEN 'done'"
           "     WHEN 3 THEN 'failed' ELSE 'skipped' END,"
           "   CASE WHEN i %% 5 = 3 THEN 'HTTP 409: exists' END,"
           "   CASE WHEN i %% 5 = 3 THEN 'HTTP_409' END,"
           "   '2026-12-01T10:00:00.000Z', CASE WHEN i %% 5 > 1 THEN '2026-12-01T10:00:01.000Z' END,"
           "   CASE WHEN i %% 7 = 0 THEN 1 ELSE 0 END"
           " FROM n",
           nops);
  raw_exec(db, sql);
  CHECK(sqlite3_close(db) == SQLITE_OK);
}

/* Whether EXPLAIN of sql shows an OpenEphemeral (a temporary table). */
static int ephemeral(sqlite3 *db, const char *sql) {
  char q[1024];
  snprintf(q, sizeof q, "EXPLAIN %s", sql);
  sqlite3_stmt *st = NULL;
  int found = 0;
  CHECK(sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK);
  while (st && sqlite3_step(st) == SQLITE_ROW)
    if (strcmp((const char *)sqlite3_column_text(st, 1), "OpenEphemeral") == 0)
      found = 1;
  sqlite3_finalize(st);
  return found;
}

static const char *const journal_writes[] = {
    "INSERT INTO operations (run_id, seq, target, kind, subject, status)"
    " VALUES (1, 100000, 'jira', 'add_member', 'x', 'done')",
    "UPDATE operations SET status = 'done' WHERE run_id = 1 AND seq = 1",
    "INSERT INTO owned_memberships (sync, target, group_name, okta_id, why)"
    " VALUES ('main', 'jira', 'g', '00u1', 'mapping')",
};

static us_store *store_open(const char *path) {
  us_store_error err;
  us_store *s = us_store_open(path, NULL, &err);
  if (!s)
    fprintf(stderr, "us_store_open %s: %s\n", path, err.msg);
  return s;
}

/* What the constraints of v7 reject and accept, through the store. */
static void check_constraints(us_store *s) {
  struct {
    const char *sql;
    us_store_code want;
    const char *msg;
  } cases[] = {
      {"INSERT INTO operations (run_id, seq, target, kind, subject, status)"
       " VALUES (1, 90001, 'jira', 'add_member', 'x', 'bogus')",
       US_STORE_ECONSTRAINT, "CHECK constraint failed"},
      {"UPDATE operations SET status = 'Done' WHERE run_id = 1 AND seq = 1", US_STORE_ECONSTRAINT,
       "CHECK constraint failed"},
      {"INSERT INTO operations (run_id, seq, target, kind, subject, status)"
       " VALUES (1, 90002, 'jira', 'add_member', 'x', NULL)",
       US_STORE_ECONSTRAINT, "NOT NULL constraint failed: operations.status"},
      {"INSERT INTO operations (run_id, seq, target, kind, subject, detail)"
       " VALUES (1, 90003, 'jira', 'add_member', 'x', '{not json')",
       US_STORE_ECONSTRAINT, "CHECK constraint failed"},
      {"INSERT INTO operations (run_id, seq, target, kind, subject, unsure)"
       " VALUES (1, 90004, 'jira', 'add_member', 'x', 2)",
       US_STORE_ECONSTRAINT, "CHECK constraint failed"},
      {"INSERT INTO operations (run_id, seq, target, kind, subject)"
       " VALUES (999, 1, 'jira', 'add_member', 'x')",
       US_STORE_ECONSTRAINT, "FOREIGN KEY constraint failed"},
      {"INSERT INTO operations (run_id, seq, target, kind, subject)"
       " VALUES (1, 1, 'jira', 'add_member', 'x')",
       US_STORE_ECONSTRAINT, "UNIQUE constraint failed: operations.run_id, operations.seq"},
      {"INSERT INTO owned_memberships (sync, target, group_name, okta_id, why)"
       " VALUES ('main', 'jira', 'g1', '00u1', 'bogus')",
       US_STORE_ECONSTRAINT, "CHECK constraint failed"},
      {"INSERT INTO owned_memberships (sync, target, group_name, okta_id, why)"
       " VALUES ('main', 'jira', 'DEVELOPERS', '00u1', 'mapping')",
       US_STORE_ECONSTRAINT, "UNIQUE constraint failed"},
      {"INSERT INTO owned_memberships (sync, target, group_name, okta_id, why)"
       " VALUES ('main', 'jira', 'g2', '00u9', 'mapping')",
       US_STORE_ECONSTRAINT, "FOREIGN KEY constraint failed"},
      {"INSERT INTO operations (run_id, seq, target, kind, subject)"
       " VALUES (1, 90005, 'jira', 'add_member', 'x')",
       US_STORE_OK, NULL},
      {"INSERT INTO operations (run_id, seq, target, kind, subject, status, unsure)"
       " VALUES (1, 90006, 'jira', 'add_member', 'x', 'skipped', 1)",
       US_STORE_OK, NULL},
      {"INSERT INTO owned_memberships (sync, target, group_name, okta_id, why)"
       " VALUES ('main', 'jira', 'g3', '00u1', NULL), ('main', 'jira', 'g4', '00u1', 'default'),"
       " ('main', 'jira', 'g5', '00u1', 'new_user')",
       US_STORE_OK, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    us_store_code code = us_store_exec(s, cases[i].sql, NULL, 0, NULL);
    if (code != cases[i].want || (cases[i].msg && !strstr(us_store_errmsg(s), cases[i].msg))) {
      fprintf(stderr, "case %zu: %s -> %s: %s\n", i, cases[i].sql, us_store_code_name(code),
              us_store_errmsg(s));
      failures++;
    }
  }
}

static void test_upgrade(void) {
  char path[512], fresh[512];
  db_path(path, sizeof path, "v6.db");
  db_path(fresh, sizeof fresh, "fresh.db");
  make_v6(path, 500);

  sqlite3 *db = raw_open(path);
  CHECK(raw_int(db, "PRAGMA user_version") == 6);
  /* v6's IN lists: a temporary table on every write of the journal */
  CHECK(ephemeral(db, journal_writes[0]) && ephemeral(db, journal_writes[1]) &&
        ephemeral(db, journal_writes[2]));
  char *before = dump(db);
  CHECK(strstr(before, "== operations\n") && strstr(before, "3:new_user|"));
  CHECK(raw_int(db, "SELECT count(*) FROM operations") == 503);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  us_store *s = store_open(path);
  CHECK(s != NULL);
  int v = 0;
  if (s) {
    CHECK(us_store_version(s, &v) == US_STORE_OK && v == 7);
    us_store_close(s);
  }

  db = raw_open(path);
  CHECK(raw_int(db, "PRAGMA user_version") == 7);
  char *after = dump(db);
  CHECK(strcmp(before, after) == 0);
  if (strcmp(before, after) != 0)
    fprintf(stderr, "rows differ after the upgrade\n");
  struct buf ic = {0};
  rows(db, "PRAGMA integrity_check", &ic);
  CHECK(ic.p && strcmp(ic.p, "3:ok|\n") == 0);
  CHECK(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check") == 0);
  for (size_t i = 0; i < sizeof journal_writes / sizeof journal_writes[0]; i++)
    CHECK(!ephemeral(db, journal_writes[i]));
  CHECK(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%\\_v7' ESCAPE '\\'") == 0);
  char *upgraded = schema(db);
  struct buf idx_up = {0};
  rows(db, "SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'index' ORDER BY name",
       &idx_up);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  s = store_open(fresh);
  CHECK(s != NULL);
  if (s)
    us_store_close(s);
  db = raw_open(fresh);
  char *made = schema(db);
  struct buf idx_fresh = {0};
  rows(db, "SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'index' ORDER BY name",
       &idx_fresh);
  CHECK(sqlite3_close(db) == SQLITE_OK);
  CHECK(idx_up.p && idx_fresh.p && strcmp(idx_up.p, idx_fresh.p) == 0);
  CHECK(strstr(idx_up.p, "operations_open") && strstr(idx_up.p, "operations_unsettled") &&
        strstr(idx_up.p, "owned_memberships_key") && strstr(idx_up.p, "owned_memberships_user"));
  CHECK(strcmp(upgraded, made) == 0);
  if (strcmp(upgraded, made) != 0)
    fprintf(stderr, "schema of the upgraded store:\n%s\nof a fresh one:\n%s\n", upgraded, made);

  /* The constraints, and the cascades of the foreign keys. */
  s = store_open(path);
  CHECK(s != NULL);
  if (s) {
    check_constraints(s);
    us_store_close(s);
  }
  db = raw_open(path);
  raw_exec(db, "DELETE FROM links WHERE okta_id = '00u2'");
  CHECK(raw_int(db, "SELECT count(*) FROM owned_memberships WHERE okta_id = '00u2'") == 0);
  raw_exec(db, "UPDATE links SET okta_id = '00u7' WHERE sync = 'other' AND okta_id = '00u1'");
  CHECK(raw_int(db, "SELECT count(*) FROM owned_memberships WHERE okta_id = '00u7'") == 1);
  raw_exec(db, "DELETE FROM runs WHERE id = 1");
  CHECK(raw_int(db, "SELECT count(*) FROM operations WHERE run_id = 1") == 0);
  CHECK(raw_int(db, "SELECT count(*) FROM operations") == 3);
  CHECK(raw_int(db, "SELECT count(*) FROM operations INDEXED BY operations_open"
                     " WHERE status IN ('pending', 'running')") == 2);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  free(before);
  free(after);
  free(ic.p);
  free(upgraded);
  free(made);
  free(idx_up.p);
  free(idx_fresh.p);
}

static void test_failed_step(void) {
  char path[512];
  db_path(path, sizeof path, "fails.db");
  make_v6(path, 100);
  /* An object named like the second table the migration creates: the
  ** migration fails after it rebuilt operations. */
  sqlite3 *db = raw_open(path);
  raw_exec(db, "CREATE VIEW owned_memberships_v7 AS SELECT 1 AS x");
  char *rows0 = dump(db), *schema0 = schema(db);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  us_store_error err;
  us_store *s = us_store_open(path, NULL, &err);
  CHECK(s == NULL);
  if (s)
    us_store_close(s);
  else {
    CHECK(err.code == US_STORE_ESCHEMA);
    CHECK(strstr(err.msg, "migration 7 (") != NULL);
    CHECK(strstr(err.msg, "owned_memberships_v7") != NULL);
  }

  db = raw_open(path);
  CHECK(raw_int(db, "PRAGMA user_version") == 6);
  char *rows1 = dump(db), *schema1 = schema(db);
  CHECK(strcmp(rows0, rows1) == 0);
  CHECK(strcmp(schema0, schema1) == 0);
  raw_exec(db, "DROP VIEW owned_memberships_v7");
  char *rows2 = dump(db);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  s = store_open(path);
  CHECK(s != NULL);
  int v = 0;
  if (s) {
    CHECK(us_store_version(s, &v) == US_STORE_OK && v == 7);
    us_store_close(s);
  }
  db = raw_open(path);
  char *rows3 = dump(db);
  CHECK(strcmp(rows2, rows3) == 0);
  CHECK(sqlite3_close(db) == SQLITE_OK);
  free(rows0);
  free(rows1);
  free(rows2);
  free(rows3);
  free(schema0);
  free(schema1);
}

static void test_killed(void) {
  char path[512], wal[600];
  db_path(path, sizeof path, "killed.db");
  snprintf(wal, sizeof wal, "%s-wal", path);
  make_v6(path, 5000);
  sqlite3 *db = raw_open(path);
  char *rows0 = dump(db), *schema0 = schema(db);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  /* The migration's transaction as us_store_migrate runs it, in a process
  ** killed before its commit; a cache of a few pages makes SQLite write
  ** the transaction's pages to the WAL as it goes. */
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    sqlite3 *c = raw_open(path);
    sqlite3_exec(c, "PRAGMA cache_size = 4; BEGIN IMMEDIATE", NULL, NULL, NULL);
    int rc = sqlite3_exec(c, migration(7), NULL, NULL, NULL);
    sqlite3_exec(c, "PRAGMA user_version = 7", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
      _exit(2);
    raise(SIGKILL);
    _exit(3);
  }
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  struct stat sb;
  CHECK(stat(wal, &sb) == 0 && sb.st_size > 0); /* the killed transaction's pages */

  db = raw_open(path);
  CHECK(raw_int(db, "PRAGMA user_version") == 6);
  char *rows1 = dump(db), *schema1 = schema(db);
  CHECK(strcmp(rows0, rows1) == 0);
  CHECK(strcmp(schema0, schema1) == 0);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  us_store *s = store_open(path);
  CHECK(s != NULL);
  int v = 0;
  if (s) {
    CHECK(us_store_version(s, &v) == US_STORE_OK && v == 7);
    us_store_close(s);
  }
  db = raw_open(path);
  char *rows2 = dump(db);
  CHECK(strcmp(rows0, rows2) == 0);
  struct buf ic = {0};
  rows(db, "PRAGMA integrity_check", &ic);
  CHECK(ic.p && strcmp(ic.p, "3:ok|\n") == 0);
  CHECK(sqlite3_close(db) == SQLITE_OK);
  free(rows0);
  free(rows1);
  free(rows2);
  free(schema0);
  free(schema1);
  free(ic.p);
}

/* A v6 store with rows whose parent is gone (a link and a run deleted with
** the sqlite3 shell, which enforces no foreign keys by default): the
** upgrade copies them as they are instead of failing for good on them, and
** the connection enforces foreign keys again afterwards. */
static void test_orphans(void) {
  char path[512];
  db_path(path, sizeof path, "orphans.db");
  make_v6(path, 20);
  sqlite3 *db = raw_open(path);
  raw_exec(db, "PRAGMA foreign_keys = OFF");
  raw_exec(db, "DELETE FROM links WHERE okta_id = '00u2'");
  raw_exec(db, "DELETE FROM runs WHERE id = 2");
  CHECK(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check") == 4);
  char *before = dump(db);
  CHECK(sqlite3_close(db) == SQLITE_OK);

  us_store *s = store_open(path);
  CHECK(s != NULL);
  if (s) {
    int v = 0;
    CHECK(us_store_version(s, &v) == US_STORE_OK && v == 7);
    /* foreign keys are on again: a membership of no link is refused */
    us_store_code code = us_store_exec(s,
        "INSERT INTO owned_memberships (sync, target, group_name, okta_id) "
        "VALUES ('main', 'jira', 'g', '00u404')", NULL, 0, NULL);
    CHECK(code == US_STORE_ECONSTRAINT);
    if (code != US_STORE_ECONSTRAINT)
      fprintf(stderr, "orphan insert after the upgrade: %s\n", us_store_errmsg(s));
    us_store_close(s);
  }
  db = raw_open(path);
  char *after = dump(db);
  CHECK(before && after && strcmp(before, after) == 0);
  CHECK(raw_int(db, "SELECT count(*) FROM pragma_foreign_key_check") == 4);
  struct buf ic = {0};
  rows(db, "PRAGMA integrity_check", &ic);
  CHECK(ic.p && strcmp(ic.p, "3:ok|\n") == 0);
  CHECK(sqlite3_close(db) == SQLITE_OK);
  free(before);
  free(after);
  free(ic.p);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/us_store_v7_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_upgrade();
  test_failed_step();
  test_killed();
  test_orphans();
  if (failures == 0) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
      fprintf(stderr, "could not remove %s\n", dir);
  }
  printf("test_store_v7: %s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
