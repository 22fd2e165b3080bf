/*
** queue.h: the one waiting queue of the C code: an intrusive FIFO (the
** link lives in the queued struct, no allocation) with the "start while a
** slot is free" step of a queue with a limit. The HTTP engine's per-host
** queue, sleep list and done queue, the target clients' calls waiting for
** a concurrency slot, the Okta client's listings waiting to request
** their next page and the SCIM endpoints' requests waiting for the worker
** (with the list of those not yet completed) use it.
**
**   struct call { struct us_qlink ql; ... };
**   struct us_queue waiting = {0};
**   us_queue_push(&waiting, &c->ql);
**   struct us_qlink *l;
**   while ((l = us_queue_pop_below(&waiting, inflight, limit)))
**     start(US_QUEUE_ENTRY(l, struct call, ql));  // start() counts inflight
*/
#ifndef USERSYNC_QUEUE_H
#define USERSYNC_QUEUE_H
#include <stddef.h>

struct us_qlink {
  struct us_qlink *prev, *next;
};

struct us_queue {
  struct us_qlink *head, *tail;
};

/* The struct of `type` whose `member` is the link l. */
#define US_QUEUE_ENTRY(l, type, member) ((type *)(void *)((char *)(l) - offsetof(type, member)))

/* Appends l (not in any queue) at the tail. */
static inline void us_queue_push(struct us_queue *q, struct us_qlink *l) {
  l->next = NULL;
  l->prev = q->tail;
  if (q->tail)
    q->tail->next = l;
  else
    q->head = l;
  q->tail = l;
}

/* Puts l (not in any queue) at the head: it is taken next. */
static inline void us_queue_push_front(struct us_queue *q, struct us_qlink *l) {
  l->prev = NULL;
  l->next = q->head;
  if (q->head)
    q->head->prev = l;
  else
    q->tail = l;
  q->head = l;
}

/* Unlinks l, which is in q. */
static inline void us_queue_remove(struct us_queue *q, struct us_qlink *l) {
  if (l->prev)
    l->prev->next = l->next;
  else
    q->head = l->next;
  if (l->next)
    l->next->prev = l->prev;
  else
    q->tail = l->prev;
  l->prev = l->next = NULL;
}

/* The head, unlinked, when `active` is below `limit`; NULL when the queue
** is empty or every slot is taken. The caller counts the slot it takes. */
static inline struct us_qlink *us_queue_pop_below(struct us_queue *q, long active, long limit) {
  struct us_qlink *l = q->head;
  if (!l || active >= limit)
    return NULL;
  us_queue_remove(q, l);
  return l;
}

#endif
