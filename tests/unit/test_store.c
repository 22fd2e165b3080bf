/*
** test_store.c: unit tests of the store's C core (include/usersync/store.h):
** open and pragmas, migrations and user_version, refusal of a newer schema,
** bound value types, busy handling between two connections, nested
** transactions and rollback, the statement cache, run locks and stale-lock
** takeover. Databases live in a fresh directory under $TMPDIR.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "usersync/store.h"

static int failures;
#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
      failures++;                                                                        \
    }                                                                                    \
  } while (0)
#define CHECK_OK(db, expr)                                                               \
  do {                                                                                   \
    us_store_code c_ = (expr);                                                           \
    if (c_ != US_STORE_OK) {                                                             \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,                \
              us_store_code_name(c_), us_store_errmsg(db));                              \
      failures++;                                                                        \
    }                                                                                    \
  } while (0)

static char dir[256];

static void db_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", dir, name);
}

/* Runs a one-row, one-column query returning an integer (or -1). */
static long long scalar(us_store *db, const char *sql) {
  us_store_stmt st = US_STORE_STMT_INIT;
  long long out = -1;
  int row = 0;
  if (us_store_prepare(db, &st, sql, strlen(sql), NULL) == US_STORE_OK &&
      us_store_step(&st, &row) == US_STORE_OK && row) {
    us_store_value v;
    us_store_column(&st, 0, &v);
    if (v.type == US_STORE_INTEGER)
      out = v.i;
  }
  us_store_finish(&st);
  return out;
}

/* Reads one text column into buf. */
static int text(us_store *db, const char *sql, char *buf, size_t cap) {
  us_store_stmt st = US_STORE_STMT_INIT;
  int row = 0, ok = 0;
  buf[0] = '\0';
  if (us_store_prepare(db, &st, sql, strlen(sql), NULL) == US_STORE_OK &&
      us_store_step(&st, &row) == US_STORE_OK && row) {
    us_store_value v;
    us_store_column(&st, 0, &v);
    if (v.type == US_STORE_TEXT) {
      snprintf(buf, cap, "%.*s", (int)v.len, v.s);
      ok = 1;
    }
  }
  us_store_finish(&st);
  return ok;
}

static void test_open_and_schema(void) {
  char path[512], buf[64];
  db_path(path, sizeof path, "open.db");
  us_store_error err;
  us_store *db = us_store_open(path, NULL, &err);
  CHECK(db != NULL);
  if (!db)
    return;
  int v = -1;
  CHECK_OK(db, us_store_version(db, &v));
  CHECK(v == US_STORE_SCHEMA_VERSION);
  CHECK(text(db, "PRAGMA journal_mode", buf, sizeof buf) && strcmp(buf, "wal") == 0);
  CHECK(scalar(db, "PRAGMA synchronous") == 1); /* NORMAL */
  CHECK(scalar(db, "PRAGMA foreign_keys") == 1);
  const char *tables[] = {"links", "owned_groups", "owned_memberships", "runs", "operations",
                          "cursors", "kv", "locks"};
  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
    us_store_value t = US_STORE_TEXT_VALUE(tables[i]);
    us_store_stmt st = US_STORE_STMT_INIT;
    int row = 0;
    const char *q = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?";
    CHECK_OK(db, us_store_prepare(db, &st, q, strlen(q), NULL));
    CHECK_OK(db, us_store_bind_all(&st, &t, 1));
    CHECK_OK(db, us_store_step(&st, &row));
    if (!row)
      fprintf(stderr, "missing table %s\n", tables[i]);
    CHECK(row == 1);
    us_store_finish(&st);
  }
  us_store_close(db);

  /* Reopening applies nothing twice. */
  db = us_store_open(path, NULL, &err);
  CHECK(db != NULL);
  if (db) {
    CHECK_OK(db, us_store_version(db, &v));
    CHECK(v == US_STORE_SCHEMA_VERSION);
    /* A newer schema is refused with a clear error. */
    CHECK_OK(db, us_store_exec(db, "PRAGMA user_version = 99", NULL, 0, NULL));
    us_store_close(db);
  }
  db = us_store_open(path, NULL, &err);
  CHECK(db == NULL);
  CHECK(err.code == US_STORE_ESCHEMA);
  CHECK(strstr(err.msg, "schema version 99") != NULL);
  CHECK(strstr(err.msg, "newer") != NULL);

  /* A directory that does not exist cannot be opened. */
  db = us_store_open("/nonexistent-dir/x/y.db", NULL, &err);
  CHECK(db == NULL);
  CHECK(err.code == US_STORE_EOPEN);
  CHECK(strstr(err.msg, "/nonexistent-dir/x/y.db") != NULL);
}

static void test_migrations(void) {
  char path[512];
  db_path(path, sizeof path, "migrate.db");
  us_store_error err;
  us_store *db = us_store_open(path, NULL, &err);
  CHECK(db != NULL);
  if (!db)
    return;
  /* Builds on the built-in schema (n versions): n+1 and n+2; n+2 fails halfway. */
  size_t n;
  const us_store_migration *builtin = us_store_migrations(&n);
  CHECK(builtin[n - 1].version == US_STORE_SCHEMA_VERSION); /* versions may leave gaps */
  us_store_migration list[US_STORE_SCHEMA_VERSION + 2];
  for (size_t i = 0; i < n; i++)
    list[i] = builtin[i];
  int top = US_STORE_SCHEMA_VERSION;
  list[n] = (us_store_migration){top + 1, "add t2", "CREATE TABLE t2 (a INTEGER)"};
  list[n + 1] = (us_store_migration){top + 2, "broken",
                                     "CREATE TABLE t3 (a INTEGER); INSERT INTO nope VALUES (1)"};
  us_store_code code = us_store_migrate(db, list, n + 2);
  CHECK(code == US_STORE_ESCHEMA);
  char want[64];
  snprintf(want, sizeof want, "migration %d (broken) failed", top + 2);
  CHECK(strstr(us_store_errmsg(db), want) != NULL);
  CHECK(strstr(us_store_errmsg(db), "no such table: nope") != NULL);
  int v = 0;
  CHECK_OK(db, us_store_version(db, &v));
  CHECK(v == top + 1); /* top+1 committed, top+2 rolled back */
  CHECK(scalar(db, "SELECT count(*) FROM sqlite_schema WHERE name = 't2'") == 1);
  CHECK(scalar(db, "SELECT count(*) FROM sqlite_schema WHERE name = 't3'") == 0);
  CHECK(us_store_depth(db) == 0);
  us_store_close(db);
}

static void test_values(void) {
  us_store_error err;
  us_store *db = us_store_open(":memory:", NULL, &err);
  CHECK(db != NULL);
  if (!db)
    return;
  CHECK_OK(db, us_store_exec(db, "CREATE TABLE v (a, b, c, d, e)", NULL, 0, NULL));
  const char secret_like[] = "it's \"quoted\"; DROP TABLE v; --";
  us_store_value in[5] = {US_STORE_INT_VALUE(9007199254740993LL), US_STORE_FLOAT_VALUE(2.5),
                          US_STORE_TEXT_VALUE(secret_like), US_STORE_NULL_VALUE,
                          {US_STORE_BLOB, 0, 0, "a\0b", 3}};
  long long changes = 0;
  CHECK_OK(db, us_store_exec(db, "INSERT INTO v VALUES (?, ?, ?, ?, ?)", in, 5, &changes));
  CHECK(changes == 1);
  CHECK(us_store_last_rowid(db) == 1);

  us_store_stmt st = US_STORE_STMT_INIT;
  const char *q = "SELECT a, b, c, d, e FROM v";
  int row = 0;
  CHECK_OK(db, us_store_prepare(db, &st, q, strlen(q), NULL));
  CHECK(us_store_column_count(&st) == 5);
  CHECK(strcmp(us_store_column_name(&st, 2), "c") == 0);
  CHECK_OK(db, us_store_step(&st, &row));
  CHECK(row == 1);
  us_store_value v;
  us_store_column(&st, 0, &v);
  CHECK(v.type == US_STORE_INTEGER && v.i == 9007199254740993LL);
  us_store_column(&st, 1, &v);
  CHECK(v.type == US_STORE_FLOAT && v.f == 2.5);
  us_store_column(&st, 2, &v);
  CHECK(v.type == US_STORE_TEXT && v.len == strlen(secret_like) && memcmp(v.s, secret_like, v.len) == 0);
  us_store_column(&st, 3, &v);
  CHECK(v.type == US_STORE_NULL);
  us_store_column(&st, 4, &v);
  CHECK(v.type == US_STORE_BLOB && v.len == 3 && memcmp(v.s, "a\0b", 3) == 0);
  CHECK_OK(db, us_store_step(&st, &row));
  CHECK(row == 0);
  us_store_finish(&st);
  us_store_finish(&st); /* idempotent */
  CHECK(scalar(db, "SELECT count(*) FROM v") == 1);

  /* Wrong number of values, several statements with values, bad SQL. */
  CHECK(us_store_exec(db, "INSERT INTO v (a) VALUES (?)", in, 2, NULL) == US_STORE_EMISUSE);
  CHECK(strstr(us_store_errmsg(db), "takes 1 parameter, 2 values given") != NULL);
  CHECK(us_store_exec(db, "SELECT ?; SELECT 2", in, 1, NULL) == US_STORE_ESQL);
  CHECK(us_store_exec(db, "SELEC 1", NULL, 0, NULL) == US_STORE_ESQL);
  CHECK(strcmp(us_store_errmsg(db), "store: near \"SELEC\": syntax error") == 0);
  CHECK(us_store_exec(db, "INSERT INTO v (a) VALUES (?)", NULL, 0, NULL) == US_STORE_EMISUSE);

  /* Named parameters. */
  const char *named = "SELECT :alpha, @beta, $gamma, ?";
  CHECK_OK(db, us_store_prepare(db, &st, named, strlen(named), NULL));
  CHECK(us_store_param_count(&st) == 4);
  CHECK(strcmp(us_store_param_name(&st, 1), "alpha") == 0);
  CHECK(strcmp(us_store_param_name(&st, 2), "beta") == 0);
  CHECK(strcmp(us_store_param_name(&st, 3), "gamma") == 0);
  CHECK(us_store_param_name(&st, 4) == NULL);
  us_store_finish(&st);

  /* A script of several statements without values. */
  CHECK_OK(db, us_store_exec(db, "CREATE TABLE w (x); INSERT INTO w VALUES (1), (2); -- end\n",
                             NULL, 0, &changes));
  CHECK(changes == 2);
  /* Constraint violation keeps its own code. */
  CHECK_OK(db, us_store_exec(db, "CREATE TABLE u (x UNIQUE)", NULL, 0, &changes));
  CHECK(changes == 0);
  CHECK_OK(db, us_store_exec(db, "INSERT INTO u VALUES (1)", NULL, 0, NULL));
  CHECK(us_store_exec(db, "INSERT INTO u VALUES (1)", NULL, 0, NULL) == US_STORE_ECONSTRAINT);
  CHECK(strstr(us_store_errmsg(db), "UNIQUE constraint failed: u.x") != NULL);
  us_store_close(db);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void test_busy(void) {
  char path[512];
  db_path(path, sizeof path, "busy.db");
  us_store_error err;
  us_store_options opt = {150};
  us_store *a = us_store_open(path, NULL, &err);
  us_store *b = us_store_open(path, &opt, &err);
  CHECK(a && b);
  if (!a || !b)
    return;
  CHECK_OK(a, us_store_begin(a));
  CHECK_OK(a, us_store_exec(a, "INSERT INTO cursors (name, value) VALUES ('a', '1')", NULL, 0, NULL));
  double t0 = now_ms();
  us_store_code code =
      us_store_exec(b, "INSERT INTO cursors (name, value) VALUES ('b', '1')", NULL, 0, NULL);
  double waited = now_ms() - t0;
  CHECK(code == US_STORE_EBUSY);
  CHECK(strstr(us_store_errmsg(b), "gave up after 150 ms") != NULL);
  CHECK(waited >= 140);
  CHECK(us_store_begin(b) == US_STORE_EBUSY);
  CHECK(us_store_depth(b) == 0);
  /* WAL: readers are not blocked by the writer and see the last commit. */
  CHECK(scalar(b, "SELECT count(*) FROM cursors") == 0);
  CHECK_OK(a, us_store_commit(a));
  CHECK(scalar(b, "SELECT count(*) FROM cursors") == 1);
  CHECK_OK(b, us_store_exec(b, "INSERT INTO cursors (name, value) VALUES ('b', '1')", NULL, 0, NULL));
  us_store_close(a);
  us_store_close(b);
}

static void test_transactions(void) {
  us_store_error err;
  us_store *db = us_store_open(":memory:", NULL, &err);
  CHECK(db != NULL);
  if (!db)
    return;
  CHECK(us_store_commit(db) == US_STORE_EMISUSE);
  CHECK_OK(db, us_store_begin(db));
  CHECK_OK(db, us_store_exec(db, "INSERT INTO cursors (name, value) VALUES ('outer', '1')", NULL, 0, NULL));
  CHECK_OK(db, us_store_begin(db));
  CHECK(us_store_depth(db) == 2);
  CHECK_OK(db, us_store_exec(db, "INSERT INTO cursors (name, value) VALUES ('inner', '1')", NULL, 0, NULL));
  CHECK_OK(db, us_store_rollback(db)); /* drops 'inner' only */
  CHECK_OK(db, us_store_begin(db));
  CHECK_OK(db, us_store_exec(db, "INSERT INTO cursors (name, value) VALUES ('kept', '1')", NULL, 0, NULL));
  CHECK_OK(db, us_store_commit(db));
  CHECK_OK(db, us_store_commit(db));
  CHECK(us_store_depth(db) == 0);
  CHECK(scalar(db, "SELECT count(*) FROM cursors WHERE name IN ('outer', 'kept')") == 2);
  CHECK(scalar(db, "SELECT count(*) FROM cursors WHERE name = 'inner'") == 0);

  CHECK_OK(db, us_store_begin(db));
  CHECK_OK(db, us_store_exec(db, "DELETE FROM cursors", NULL, 0, NULL));
  CHECK_OK(db, us_store_rollback(db));
  CHECK(scalar(db, "SELECT count(*) FROM cursors") == 2);

  /* Foreign keys are enforced: a membership needs its link. */
  CHECK(us_store_exec(db,
                      "INSERT INTO owned_memberships (sync, target, group_name, okta_id)"
                      " VALUES ('main', 'jira', 'devs', '00u1')",
                      NULL, 0, NULL) == US_STORE_ECONSTRAINT);
  /* Links are unique per sync, target and case-insensitive account name;
  ** another sync entry (a second source) may link the same account. */
  CHECK_OK(db, us_store_exec(db,
                             "INSERT INTO links (sync, target, okta_id, account_name)"
                             " VALUES ('main', 'jira', '00u1', 'Alice')",
                             NULL, 0, NULL));
  CHECK(us_store_exec(db,
                      "INSERT INTO links (sync, target, okta_id, account_name)"
                      " VALUES ('main', 'jira', '00u2', 'alice')",
                      NULL, 0, NULL) == US_STORE_ECONSTRAINT);
  CHECK_OK(db, us_store_exec(db,
                             "INSERT INTO links (sync, target, okta_id, account_name)"
                             " VALUES ('second', 'jira', '00u9', 'ALICE')",
                             NULL, 0, NULL));
  CHECK_OK(db, us_store_exec(db, "DELETE FROM links WHERE sync = 'second'", NULL, 0, NULL));
  CHECK_OK(db, us_store_exec(db,
                             "INSERT INTO owned_memberships (sync, target, group_name, okta_id)"
                             " VALUES ('main', 'jira', 'devs', '00u1')",
                             NULL, 0, NULL));
  CHECK_OK(db, us_store_exec(db, "DELETE FROM links WHERE okta_id = '00u1'", NULL, 0, NULL));
  CHECK(scalar(db, "SELECT count(*) FROM owned_memberships") == 0); /* cascaded */
  CHECK(us_store_exec(db, "INSERT INTO runs (sync, trigger) VALUES ('main', 'cron')", NULL, 0,
                      NULL) == US_STORE_ECONSTRAINT);
  us_store_close(db);
}

/* A statement left unfinished by its caller is finalized by close, and the
** caller's later finish is a harmless no-op. */
static void test_detach_on_close(void) {
  us_store_error err;
  us_store *db = us_store_open(":memory:", NULL, &err);
  CHECK(db != NULL);
  if (!db)
    return;
  us_store_stmt st = US_STORE_STMT_INIT;
  const char *q = "SELECT 1 UNION ALL SELECT 2";
  int row = 0;
  CHECK_OK(db, us_store_prepare(db, &st, q, strlen(q), NULL));
  CHECK_OK(db, us_store_step(&st, &row));
  us_store_close(db);
  CHECK(st.stmt == NULL && st.store == NULL);
  CHECK(us_store_step(&st, &row) == US_STORE_EMISUSE);
  us_store_finish(&st);
}

/* Statement cache: the same text reuses the prepared statement; two users
** of one text at once each get their own. */
static void test_cache(void) {
  us_store_error err;
  us_store *db = us_store_open(":memory:", NULL, &err);
  CHECK(db != NULL);
  if (!db)
    return;
  const char *q = "SELECT 1";
  us_store_stmt a = US_STORE_STMT_INIT, b = US_STORE_STMT_INIT;
  CHECK_OK(db, us_store_prepare(db, &a, q, strlen(q), NULL));
  struct sqlite3_stmt *first = a.stmt;
  CHECK_OK(db, us_store_prepare(db, &b, q, strlen(q), NULL));
  CHECK(b.stmt != first);
  us_store_finish(&a);
  us_store_finish(&b);
  CHECK_OK(db, us_store_prepare(db, &a, q, strlen(q), NULL));
  CHECK(a.stmt == first || a.stmt == b.stmt);
  us_store_finish(&a);
  /* More distinct texts than the cache holds: evictions leak nothing. */
  for (int i = 0; i < 100; i++) {
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT %d", i);
    CHECK(scalar(db, sql) == i);
  }
  us_store_close(db);
}

static void test_locks(void) {
  char path[512];
  db_path(path, sizeof path, "locks.db");
  us_store_error err;
  us_store *a = us_store_open(path, NULL, &err);
  us_store *b = us_store_open(path, NULL, &err);
  CHECK(a && b);
  if (!a || !b)
    return;
  us_store_lock_holder h;
  CHECK_OK(a, us_store_lock(a, "sync:main", 60000, NULL));
  CHECK_OK(a, us_store_lock(a, "sync:main", 60000, NULL)); /* renew */
  CHECK(us_store_lock(b, "sync:main", 60000, &h) == US_STORE_ELOCKED);
  CHECK(h.pid == (long long)getpid());
  char want[128];
  snprintf(want, sizeof want, "held by pid %ld on host ", (long)getpid());
  CHECK(strstr(us_store_errmsg(b), want) != NULL);
  CHECK(strstr(us_store_errmsg(b), " since 20") != NULL);

  int released = -1;
  CHECK_OK(b, us_store_unlock(b, "sync:main", &released));
  CHECK(released == 0); /* not b's */
  CHECK_OK(a, us_store_unlock(a, "sync:main", &released));
  CHECK(released == 1);
  CHECK_OK(b, us_store_lock(b, "sync:main", 60000, NULL));

  /* Stale: the holder's process is gone (same host). */
  pid_t child = fork();
  if (child == 0) { /* exec, so no copy of our heap exits (valgrind) */
    execl("/bin/true", "true", (char *)NULL);
    _exit(0);
  }
  waitpid(child, NULL, 0);
  us_store_value v[1] = {US_STORE_INT_VALUE((long long)child)};
  CHECK_OK(a, us_store_exec(a, "UPDATE locks SET owner_pid = ? WHERE name = 'sync:main'", v, 1, NULL));
  CHECK_OK(a, us_store_lock(a, "sync:main", 60000, NULL));
  CHECK(scalar(a, "SELECT owner_pid FROM locks WHERE name = 'sync:main'") == (long long)getpid());

  /* Live holder on another host: locked until the lease expires. */
  CHECK_OK(a, us_store_exec(a, "UPDATE locks SET owner_host = 'elsewhere', owner_pid = 1,"
                               " owner_token = 'x' WHERE name = 'sync:main'",
                            NULL, 0, NULL));
  CHECK(us_store_lock(b, "sync:main", 60000, &h) == US_STORE_ELOCKED);
  CHECK(strcmp(h.host, "elsewhere") == 0 && h.pid == 1);
  CHECK_OK(a, us_store_exec(a, "UPDATE locks SET expires = '2000-01-01T00:00:00.000Z'"
                               " WHERE name = 'sync:main'",
                            NULL, 0, NULL));
  CHECK_OK(b, us_store_lock(b, "sync:main", 60000, NULL));
  CHECK(us_store_lock(a, "sync:main", 60000, NULL) == US_STORE_ELOCKED);
  /* A short lease lapses on its own. It must outlast the next call by far
  ** (a loaded machine, valgrind): 1 s, then a sleep past it. */
  CHECK_OK(b, us_store_lock(b, "short", 1000, NULL));
  CHECK(us_store_lock(a, "short", 1000, NULL) == US_STORE_ELOCKED);
  usleep(1100 * 1000);
  CHECK_OK(a, us_store_lock(a, "short", 1000, NULL));

  /* Closing releases what the handle holds. */
  us_store_close(b);
  CHECK_OK(a, us_store_lock(a, "sync:main", 60000, NULL));
  us_store_close(a);
}

/* The example of store.h's header, as written there (only the path is ours). */
static void test_header_example(void) {
  char path[512];
  db_path(path, sizeof path, "usersync.db");
  int printed = 0;
  us_store_error err;
  us_store *db = us_store_open(path, NULL, &err);
  if (!db) { fprintf(stderr, "%s (%s)\n", err.msg, us_store_code_name(err.code)); printed++; }
  CHECK(db != NULL);
  if (!db)
    return;
  us_store_value v[2] = {US_STORE_TEXT_VALUE("jira"), US_STORE_TEXT_VALUE("00u1")};
  if (us_store_exec(db, "DELETE FROM links WHERE target = ? AND okta_id = ?", v, 2, NULL))
    { fprintf(stderr, "%s\n", us_store_errmsg(db)); printed++; }
  us_store_close(db);
  CHECK(printed == 0);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/test_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_header_example();
  test_open_and_schema();
  test_migrations();
  test_values();
  test_busy();
  test_transactions();
  test_detach_on_close();
  test_cache();
  test_locks();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("test_store: all checks passed\n");
  return 0;
}
