/*
 * sm_lock.h -- the lock that guards one shard (ConcurrentMap) or the dirty map
 * (SyncMap).
 *
 * What it must do:
 *   - be nearly free when uncontended: every write takes one;
 *   - let its holder run arbitrary Python code (compute callbacks, key __eq__)
 *     while other threads wait for it, and never make a waiter hold the GIL
 *     while it waits (that would deadlock with the holder, who needs the GIL
 *     to finish its callback);
 *   - let a waiter be interrupted by a signal (KeyboardInterrupt) safely;
 *   - record its holder, so that re-entry from the holder's own callbacks is
 *     detected (and refused) instead of self-deadlocking.
 *
 * GIL builds: the lock is an owner field protected by the GIL itself.  Taking a
 * free lock is "owner = me" -- no atomic instruction -- because nothing else runs
 * between the test and the store.  Only a thread that finds the lock taken goes
 * to the slow path (sm_lock.c): it counts itself as a waiter, releases the GIL
 * and sleeps on a semaphore ("wake") that the releasing thread posts.  A posted
 * wake-up is never lost (a semaphore remembers it) and a woken waiter re-checks
 * the owner under the GIL, so barging and spurious wake-ups are harmless.
 * Invariant: wake_pending == 1 exactly when `wake` holds an unconsumed post.
 *
 * Free-threaded builds: a PyMutex (3.13+), which detaches the thread state while
 * it blocks -- so it cannot deadlock with a stop-the-world pause -- plus the owner
 * field, written with relaxed atomics by the holder only.  A thread comparing the
 * owner with itself can only ever see its own identity if it stored it.
 */
#ifndef SAFEMAP_SM_LOCK_H
#define SAFEMAP_SM_LOCK_H

#include "sm_compat.h"
#include "pythread.h"

typedef struct {
    void *owner; /* holder's identity (sm_me()), NULL when free */
#if SM_FREE_THREADED
    PyMutex mutex;
#else
    int waiters;              /* threads sleeping in the slow path */
    int wake_pending;         /* see the invariant above */
    PyThread_type_lock wake;  /* allocated on first contention */
#endif
} SMLock;

/* Slow paths, in sm_lock.c. */
int sm_lock_acquire_slow(SMLock *lock, void *me);
void sm_lock_wake_one(SMLock *lock);
void sm_lock_fini(SMLock *lock);
/* In a fork child: forget a hold by any thread but `me` (those threads do not
 * exist in the child).  Returns 1 if `me` holds the lock. */
int sm_lock_after_fork(SMLock *lock, void *me);

/* Take the lock if it is free, without waiting: 1 if taken, 0 if it is held
 * (by anyone, the caller included).  This is the fast path of every acquire;
 * "contended" means exactly that it failed. */
static inline int
sm_lock_try(SMLock *lock, void *me)
{
#if SM_FREE_THREADED
    /* PyMutex_Lock's own inline fast path (cpython/lock.h), as a try. */
    uint8_t expected = _Py_UNLOCKED;
    if (!_Py_atomic_compare_exchange_uint8(&lock->mutex._bits, &expected, _Py_LOCKED)) {
        return 0;
    }
    SM_STORE_PTR_RELAXED(&lock->owner, me);
    return 1;
#else
    if (SM_LIKELY(lock->owner == NULL)) {
        lock->owner = me;
        return 1;
    }
    return 0;
#endif
}

/* Take the lock.  0: taken; -1: an exception was raised while waiting (a signal
 * handler raised, e.g. KeyboardInterrupt; the lock is NOT taken).  *contended is
 * set to 1 if the lock was found held. */
static inline int
sm_lock_acquire(SMLock *lock, void *me, int *contended)
{
    if (SM_LIKELY(sm_lock_try(lock, me))) {
        *contended = 0;
        return 0;
    }
    *contended = 1;
    return sm_lock_acquire_slow(lock, me);
}

/* Release a lock held by the calling thread. */
static inline void
sm_lock_release(SMLock *lock)
{
#if SM_FREE_THREADED
    SM_STORE_PTR_RELAXED(&lock->owner, NULL);
    PyMutex_Unlock(&lock->mutex);
#else
    lock->owner = NULL;
    if (SM_UNLIKELY(lock->waiters != 0) && !lock->wake_pending) {
        sm_lock_wake_one(lock);
    }
#endif
}

/* True when the calling thread (identity me) holds the lock. */
static inline int
sm_lock_held_by(SMLock *lock, void *me)
{
    return SM_LOAD_PTR_RELAXED(&lock->owner) == me;
}

#endif /* SAFEMAP_SM_LOCK_H */
