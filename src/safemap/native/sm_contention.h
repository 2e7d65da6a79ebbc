/*
 * sm_contention.h -- the process-wide contention sampler of every native lock
 * (ConcurrentMap's shard locks, SyncMap's mutex, RWLock).
 *
 * One instance per process, owned by safemap.locks._rwlock (the lowest C
 * module: it is loaded before any map) and handed to safemap.native._core by
 * a capsule, so "every Nth contended acquisition" counts the acquisitions of
 * every native lock together.  Sampling is off (every == 0) until
 * _set_contention_sampling(every, callback) turns it on; while it is off a
 * contended acquisition pays one relaxed load of `every`, and an uncontended
 * one pays nothing.
 *
 * The callback is Python code, so it never runs where the acquisition
 * happened (the thread then holds the lock): the acquiring code keeps the
 * sampled wait with the lock (a field only the holder touches) and reports it
 * once its operation has released the lock, on the same thread, before the
 * map method returns -- so the caller's Python frame is the one that called
 * the map method.
 */
#ifndef SAFEMAP_SM_CONTENTION_H
#define SAFEMAP_SM_CONTENTION_H

#include "sm_compat.h"

#define SM_CONTENTION_CAPSULE "safemap.locks._rwlock._contention"

typedef struct {
    int every;         /* report every Nth contended acquisition; 0: off */
    Py_ssize_t seen;   /* contended acquisitions counted while on */
    /* Call the callback with (kind, wait_ns / 1e9): on the thread that
     * waited, holding no lock of the operation that waited.  Keeps the
     * caller's exception state; an exception from the callback is reported
     * as unraisable; a report made from inside the callback is dropped. */
    void (*report)(PyObject *kind, int64_t wait_ns);
} SMContention;

/* Called by a thread that has just waited for a lock: should this wait be
 * reported?  (Counts it when sampling is on.) */
static inline int
sm_contention_sampled(SMContention *c)
{
    int every = SM_LOAD_INT_RELAXED(&c->every);
    if (SM_LIKELY(every <= 0)) {
        return 0;
    }
#if SM_FREE_THREADED
    Py_ssize_t n = _Py_atomic_add_ssize(&c->seen, 1) + 1;
#else
    Py_ssize_t n = ++c->seen; /* under the GIL */
#endif
    return n % every == 0;
}

#endif /* SAFEMAP_SM_CONTENTION_H */
