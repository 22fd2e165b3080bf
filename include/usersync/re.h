/*
** re.h: regular expressions (PCRE2, 8-bit, UTF-8 + Unicode properties).
**
** The C core behind `require "usersync.re"`. No Lua here: the binding
** (runtime/bind_re.c) owns a us_re through a userdata.
**
**   char err[US_RE_ERRLEN];
**   us_re *re = us_re_compile("(?<user>\\w+)@(\\w+)", SIZE_MAX, US_RE_CASELESS, err, sizeof err);
**   if (re == NULL) { fprintf(stderr, "%s\n", err); ... }  // error text + offset
**   if (us_re_exec(re, s, len, 0, 0, err, sizeof err) == US_RE_MATCH) {
**     const size_t *ov = us_re_ovector(re);   // ov[2*i], ov[2*i+1]: group i
**     int g = us_re_group_index(re, "user");  // 1
**   }
**   us_re_free(re);
**
** Every pattern is compiled with PCRE2_UTF | PCRE2_UCP and JIT-compiled where
** the platform supports it (not under valgrind, which cannot follow JIT code).
** Every match runs with match, depth and heap limits (US_RE_*_LIMIT below), so
** catastrophic backtracking ends with US_RE_ELIMIT instead of hanging. A us_re holds its own match data:
** one us_re must not be used by two threads at once, and the ovector is only
** valid until the next us_re_exec on the same us_re.
*/
#ifndef USERSYNC_RE_H
#define USERSYNC_RE_H
#include <stddef.h>
#include <stdint.h>

/* Compile flags (bit set); us_re_parse_flags maps "imsxu" onto them. */
#define US_RE_CASELESS 0x01u  /* i */
#define US_RE_MULTILINE 0x02u /* m: ^ and $ match at line breaks */
#define US_RE_DOTALL 0x04u    /* s: . matches \n */
#define US_RE_EXTENDED 0x08u  /* x: whitespace and # comments ignored */

/* Exec options. */
#define US_RE_NO_UTF_CHECK 0x01u      /* subject already checked (iteration) */
#define US_RE_NOTEMPTY_ATSTART 0x02u  /* no empty match at the start offset */

/* Results of us_re_exec and us_re_gsub (negative: error, message in err). */
#define US_RE_MATCH 1
#define US_RE_NOMATCH 0
#define US_RE_EUTF8 (-1)   /* subject is not valid UTF-8 (or offset mid-character) */
#define US_RE_ELIMIT (-2)  /* match/depth/heap/JIT-stack limit reached */
#define US_RE_EOTHER (-3)  /* any other matching error */
#define US_RE_ETEMPLATE (-4) /* bad replacement template (us_re_gsub) */
#define US_RE_EEMIT (-5)   /* the emit callback reported failure */

/* Limits of one match. The match limit bounds backtracking work (a runaway
** pattern stops after well under a second); depth and heap limits bound the
** interpreter's backtracking memory; a JIT-compiled pattern that outgrows the
** default 32 KiB JIT stack gets its own, up to US_RE_JIT_STACK_MAX. */
#define US_RE_MATCH_LIMIT 10000000u
#define US_RE_DEPTH_LIMIT 1000000u
#define US_RE_HEAP_LIMIT_KIB (64u * 1024u)
#define US_RE_JIT_STACK_MAX (8u * 1024u * 1024u)
#define US_RE_ERRLEN 256

typedef struct us_re us_re;

/* Parses a flag string ("i", "ms", "u" ...) into *flags. Returns 0, or the
** first unknown character (the caller reports misuse). */
int us_re_parse_flags(const char *s, unsigned *flags);

/* Compiles pattern[0..len) (len SIZE_MAX: NUL-terminated). Returns a new
** us_re owned by the caller (free with us_re_free), or NULL with a message in
** err such as `missing closing parenthesis at offset 4 in "(abc"`. */
us_re *us_re_compile(const char *pattern, size_t len, unsigned flags, char *err, size_t errlen);

/* Frees re and everything it holds; NULL is fine. */
void us_re_free(us_re *re);

/* Number of capture groups (not counting group 0). */
int us_re_ncaptures(const us_re *re);

/* Number of named groups; us_re_name_at gives the i-th name (0-based) and
** stores its group number in *group. The strings live as long as re. */
int us_re_name_count(const us_re *re);
const char *us_re_name_at(const us_re *re, int i, int *group);

/* Group number of a named group, or -1. */
int us_re_group_index(const us_re *re, const char *name);

/* Matches re against subject[0..len) from byte offset start. Returns
** US_RE_MATCH (offsets in us_re_ovector), US_RE_NOMATCH, or a negative
** US_RE_E* code with a message in err. opts: US_RE_NO_UTF_CHECK,
** US_RE_NOTEMPTY_ATSTART. */
int us_re_exec(us_re *re, const char *subject, size_t len, size_t start, unsigned opts, char *err,
               size_t errlen);

/* After US_RE_MATCH: ov[2*i], ov[2*i+1] are the byte offsets of group i
** (0 <= i <= ncaptures); an unset group has both equal to US_RE_UNSET. */
#define US_RE_UNSET (~(size_t)0)
const size_t *us_re_ovector(const us_re *re);

/* Offset of the next search after a match [s, e): e, with
** *opts = US_RE_NOTEMPTY_ATSTART when the match was empty. Shared by every
** loop over matches (gsub, split, find_all) so they agree on empty matches. */
size_t us_re_next(size_t s, size_t e, unsigned *opts);

/* Output callback of us_re_gsub: appends p[0..n); returns 0 to go on. */
typedef int (*us_re_emit)(void *ud, const char *p, size_t n);

/* Checks a replacement template: $N, ${N}, ${name}, $$. Returns 0, or
** US_RE_ETEMPLATE with a message in err. */
int us_re_check_template(const us_re *re, const char *tmpl, size_t tlen, char *err, size_t errlen);

/* Emits tmpl expanded against the current match (after US_RE_MATCH on
** subject). The template must have passed us_re_check_template. */
int us_re_expand(const us_re *re, const char *subject, const char *tmpl, size_t tlen, us_re_emit emit,
                 void *ud);

/* Replaces up to max matches (max < 0: all) in subject[0..len) by tmpl,
** emitting the result piecewise. Returns the number of replacements (>= 0)
** or a negative US_RE_E* code with a message in err; on error the emitted
** output is incomplete and must be discarded. */
long us_re_gsub(us_re *re, const char *subject, size_t len, const char *tmpl, size_t tlen, long max,
                us_re_emit emit, void *ud, char *err, size_t errlen);

#endif
