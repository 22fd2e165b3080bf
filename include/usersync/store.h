/*
** store.h: the usersync store, SQLite underneath.
**
** Provides: open (create if missing) in WAL mode with synchronous=NORMAL and
** foreign_keys=ON, a busy timeout after which writers fail with
** US_STORE_EBUSY, numbered schema migrations applied at open (tracked in
** PRAGMA user_version, each in its own transaction; a database from a newer
** usersync is refused with US_STORE_ESCHEMA), statements with bound
** parameters only, a small cache of prepared statements, nested transactions
** (BEGIN IMMEDIATE outside, savepoints inside), and named run locks with
** stale-lock takeover.
**
** Uses: SQLite 3.35+ (RETURNING, JSON functions). Never sees a lua_State.
**
**   us_store_error err;
**   us_store *db = us_store_open("usersync.db", NULL, &err);
**   if (!db) { fprintf(stderr, "%s (%s)\n", err.msg, us_store_code_name(err.code)); ... }
**   us_store_value v[2] = {US_STORE_TEXT_VALUE("jira"), US_STORE_TEXT_VALUE("00u1")};
**   if (us_store_exec(db, "DELETE FROM links WHERE target = ? AND okta_id = ?", v, 2, NULL))
**     fprintf(stderr, "%s\n", us_store_errmsg(db));
**   us_store_close(db);
**
** Errors: every fallible function returns a us_store_code (0 = US_STORE_OK).
** The message of the last failure is us_store_errmsg(); it starts with
** "store: ", is SQLite's own text where SQLite failed (e.g. `store: near
** "SELEC": syntax error`), and never contains a bound parameter value.
** us_store_code_name() gives the stable string code scripts see.
**
** Threads: a us_store and its statements belong to one thread at a time.
*/
#ifndef USERSYNC_STORE_H
#define USERSYNC_STORE_H
#include <stddef.h>
#include <string.h> /* strlen, for US_STORE_TEXT_VALUE */

struct sqlite3_stmt;

/* Latest schema version this build knows (the last built-in migration's;
** versions may have gaps). */
#define US_STORE_SCHEMA_VERSION 7
/* Busy timeout when none is given (milliseconds). */
#define US_STORE_DEFAULT_BUSY_MS 5000
/* Lease of a run lock when none is given (milliseconds). */
#define US_STORE_DEFAULT_LOCK_TTL_MS (300 * 1000)

typedef enum us_store_code {
  US_STORE_OK = 0,
  US_STORE_ESQL,        /* "ESQL": bad SQL (syntax, unknown table/column), SQL runtime error */
  US_STORE_ECONSTRAINT, /* "ECONSTRAINT": UNIQUE, NOT NULL, CHECK, FOREIGN KEY violated */
  US_STORE_EBUSY,       /* "EBUSY": another connection kept the database locked past the timeout */
  US_STORE_ELOCKED,     /* "ELOCKED": a named lock is held by a live owner */
  US_STORE_ESCHEMA,     /* "ESCHEMA": database written by a newer usersync; or a migration failed */
  US_STORE_EOPEN,       /* "EOPEN": the file cannot be opened or created */
  US_STORE_EIO,         /* "EIO": I/O error, disk full, read-only file, corrupt or not a database */
  US_STORE_ENOMEM,      /* "ENOMEM" */
  US_STORE_EMISUSE,     /* "EMISUSE": caller error: closed store, wrong number of values, ... */
} us_store_code;

/* The stable string of a code: "ESQL", "ECONSTRAINT", ... ("OK" for 0). */
const char *us_store_code_name(us_store_code code);

typedef struct us_store us_store;

typedef struct us_store_error {
  us_store_code code;
  char msg[512];
} us_store_error;

typedef struct us_store_options {
  int busy_timeout_ms; /* how long a writer waits for another connection's lock; <0: default */
} us_store_options;

/* Opens (creating if missing) the database at `path` (":memory:" for a
** private in-memory one), configures it and applies the built-in
** migrations. `opt` may be NULL. Returns the store, owned by the caller
** (release with us_store_close), or NULL with `err` filled (err may be NULL). */
us_store *us_store_open(const char *path, const us_store_options *opt, us_store_error *err);

/* Closes the store: rolls back an open transaction, releases the named locks
** this handle holds, finalizes every statement (statements still held by
** callers become detached: their functions fail with US_STORE_EMISUSE and
** us_store_finish on them is a no-op) and frees `s`. NULL is ignored. */
void us_store_close(us_store *s);

/* Message and code of the last failure on `s`. Valid until the next call. */
const char *us_store_errmsg(const us_store *s);
us_store_code us_store_errcode(const us_store *s);

/* The path given to us_store_open (owned by s). */
const char *us_store_path(const us_store *s);
/* Empties the connection's page cache (its pages not in use): a read of
** a whole target's links fills it, and nothing after the read needs them
** before the next statement reads them again. Returns the bytes the cache
** held before. */
size_t us_store_release_cache(us_store *s);

/* ---- migrations ---- */

/* One numbered migration: `sql` (one or more statements) takes the schema
** from version-1 to version. */
typedef struct us_store_migration {
  int version;
  const char *description;
  const char *sql;
} us_store_migration;

/* The built-in migrations, in order; *n receives their count. */
const us_store_migration *us_store_migrations(size_t *n);

/* Applies, in order, every migration of `list` (versions 1..n, ascending)
** above the database's user_version, each in its own IMMEDIATE transaction
** that also sets user_version. Refuses (US_STORE_ESCHEMA) a database whose
** version is above the last of `list`. A failed migration is rolled back
** and reported as US_STORE_ESCHEMA naming the migration; earlier ones stay.
** us_store_open runs this with the built-in list. */
us_store_code us_store_migrate(us_store *s, const us_store_migration *list, size_t n);

/* Reads PRAGMA user_version into *version. */
us_store_code us_store_version(us_store *s, int *version);

/* ---- values and statements ---- */

typedef enum us_store_type {
  US_STORE_NULL,
  US_STORE_INTEGER,
  US_STORE_FLOAT,
  US_STORE_TEXT,
  US_STORE_BLOB,
} us_store_type;

/* A value to bind or a column read. For TEXT/BLOB, `s`/`len` point to bytes
** owned by someone else: the caller when binding (SQLite copies them), the
** statement when reading (valid until the next step or finish). */
typedef struct us_store_value {
  us_store_type type;
  long long i;
  double f;
  const char *s;
  size_t len;
} us_store_value;

#define US_STORE_NULL_VALUE ((us_store_value){US_STORE_NULL, 0, 0, NULL, 0})
#define US_STORE_INT_VALUE(v) ((us_store_value){US_STORE_INTEGER, (v), 0, NULL, 0})
#define US_STORE_FLOAT_VALUE(v) ((us_store_value){US_STORE_FLOAT, 0, (v), NULL, 0})
#define US_STORE_TEXT_VALUE(str) ((us_store_value){US_STORE_TEXT, 0, 0, (str), strlen(str)})

/* A statement in use. The memory is the caller's (a local, or a Lua
** userdata); initialise it with US_STORE_STMT_INIT and release it with
** us_store_finish, which is idempotent. While prepared it is on the store's
** list of live statements, so us_store_close can finalize it. */
typedef struct us_store_stmt {
  struct sqlite3_stmt *stmt;         /* NULL: not prepared, finished or detached */
  us_store *store;                   /* NULL: finished, or the store was closed */
  struct us_store_stmt *prev, *next; /* the store's live list */
  char *cache_key;                   /* owned copy of the SQL when cacheable */
  size_t cache_len;
  long long total_before;            /* sqlite3_total_changes at the first step */
  long long changes;                 /* rows changed, once stepped to the end */
  int stepped;
} us_store_stmt;

#define US_STORE_STMT_INIT {NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0}

/* Prepares the first SQL statement of sql[0..len).
** tail == NULL: the text must hold exactly one statement (else US_STORE_ESQL);
**   the prepared statement may come from and go back to the cache.
** tail != NULL: *tail receives the offset just past the statement; when the
**   text holds only whitespace or comments, returns OK with st->stmt NULL.
** On failure st stays unprepared (nothing to release). */
us_store_code us_store_prepare(us_store *s, us_store_stmt *st, const char *sql, size_t len,
                               size_t *tail);

/* Number of parameters, and the name of parameter i (1-based) without its
** ':', '@' or '$' sigil, or NULL for a positional '?'. */
int us_store_param_count(const us_store_stmt *st);
const char *us_store_param_name(const us_store_stmt *st, int i);

/* Binds v to parameter i (1-based). TEXT and BLOB bytes are copied. */
us_store_code us_store_bind(us_store_stmt *st, int i, const us_store_value *v);

/* Binds n values to parameters 1..n; n must equal the parameter count
** (else US_STORE_EMISUSE). */
us_store_code us_store_bind_all(us_store_stmt *st, const us_store_value *v, int n);

/* Runs the statement to its next row. *row = 1: a row is ready (read it with
** us_store_column); *row = 0: done (st->changes holds the rows changed). */
us_store_code us_store_step(us_store_stmt *st, int *row);

int us_store_column_count(const us_store_stmt *st);
/* Name of result column i (0-based); owned by the statement. */
const char *us_store_column_name(const us_store_stmt *st, int i);
/* Reads column i (0-based) of the current row into *out (see us_store_value). */
void us_store_column(us_store_stmt *st, int i, us_store_value *out);

/* Releases the statement: resets it and returns it to the cache, or
** finalizes it. Idempotent; a no-op on a detached or unprepared statement. */
void us_store_finish(us_store_stmt *st);

/* Runs every statement of `sql` (NUL-terminated) to completion, discarding
** result rows. With n > 0 the text must be one statement taking exactly n
** parameters. *changes (may be NULL) receives the rows changed by the last
** statement (0 for statements that change no rows, e.g. CREATE). */
us_store_code us_store_exec(us_store *s, const char *sql, const us_store_value *params, int n,
                            long long *changes);

/* Rowid of the last successful INSERT on this connection. */
long long us_store_last_rowid(const us_store *s);

/* ---- transactions ---- */

/* Begins a transaction: BEGIN IMMEDIATE (waits up to the busy timeout for
** the write lock, then US_STORE_EBUSY) when none is open, a SAVEPOINT when
** one is (by us_store_begin or by SQL the caller ran). */
us_store_code us_store_begin(us_store *s);
/* Commits the innermost level (COMMIT or RELEASE). When COMMIT fails the
** transaction is rolled back and the failure returned. */
us_store_code us_store_commit(us_store *s);
/* Rolls back the innermost level (ROLLBACK, or ROLLBACK TO + RELEASE). */
us_store_code us_store_rollback(us_store *s);
/* Levels opened by us_store_begin and not yet committed or rolled back. */
int us_store_depth(const us_store *s);

/* ---- named locks (table `locks`) ---- */

/* Who holds a lock, as recorded in the table. */
typedef struct us_store_lock_holder {
  long long pid;
  char host[256];
  char acquired[40]; /* ISO-8601 UTC, e.g. 2026-11-29T01:23:45.678Z */
  char expires[40];
} us_store_lock_holder;

/* Takes lock `name` for ttl_ms milliseconds (<=0: the default lease), or
** renews it when this handle already holds it. A lock held by another owner
** is taken over when its lease expired, or when it was taken on this host
** by a process that no longer exists. Otherwise returns US_STORE_ELOCKED
** with the holder in *holder (may be NULL) and a message "store: lock
** 'NAME' held by pid N on host H since T (lease until E)". */
us_store_code us_store_lock(us_store *s, const char *name, long long ttl_ms,
                            us_store_lock_holder *holder);

/* Releases lock `name` if this handle holds it; *released (may be NULL)
** tells whether it did. */
us_store_code us_store_unlock(us_store *s, const char *name, int *released);

/* The owner token this handle writes into `locks` (unique per open). */
const char *us_store_lock_token(const us_store *s);

#endif
