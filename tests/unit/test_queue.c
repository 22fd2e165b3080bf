/*
** test_queue.c: the one waiting queue (include/usersync/queue.h): FIFO
** order, a push to the front taken next, removal from the middle and both
** ends, and pop_below holding everything while the slots are taken.
*/
#include "check.h"
#include "usersync/queue.h"

struct item {
  int id;
  struct us_qlink ql;
};

static int pop_id(struct us_queue *q, long active, long limit) {
  struct us_qlink *l = us_queue_pop_below(q, active, limit);
  return l ? US_QUEUE_ENTRY(l, struct item, ql)->id : -1;
}

int main(void) {
  struct item it[5];
  struct us_queue q = {0};
  for (int i = 0; i < 5; i++) {
    it[i].id = i;
    us_queue_push(&q, &it[i].ql);
  }
  us_queue_remove(&q, &it[2].ql); /* middle */
  us_queue_remove(&q, &it[4].ql); /* tail */
  us_queue_push_front(&q, &it[4].ql);
  CHECK_EQ_LONG(pop_id(&q, 3, 3), -1); /* every slot taken: nothing starts */
  CHECK_EQ_LONG(pop_id(&q, 0, 3), 4);
  CHECK_EQ_LONG(pop_id(&q, 1, 3), 0);
  us_queue_remove(&q, &it[3].ql); /* tail again */
  CHECK_EQ_LONG(pop_id(&q, 2, 3), 1);
  CHECK(q.head == NULL && q.tail == NULL);
  CHECK_EQ_LONG(pop_id(&q, 0, 3), -1); /* empty */
  us_queue_push(&q, &it[2].ql);
  CHECK(q.head == &it[2].ql && q.tail == &it[2].ql);
  printf("%d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
