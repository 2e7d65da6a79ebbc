/*
 * sm_lock.c -- slow paths of SMLock (see sm_lock.h for the design).
 */
#include "sm_lock.h"
#include <string.h>

#if !SM_FREE_THREADED

/* Called holding the GIL by a thread that found the lock held.  Sleeps without
 * the GIL until the lock is free, then takes it.
 *
 * Why this cannot deadlock with the GIL: the waiter never blocks while holding
 * the GIL (it releases it around the semaphore wait), so the holder can always
 * get the GIL to finish its work and release the lock, which posts `wake`.
 *
 * Why no wake-up is lost: a release that sees waiters > 0 posts `wake` unless a
 * post is already pending; a pending post stays in the semaphore until some
 * waiter consumes it, and every waiter re-checks `owner` under the GIL after
 * waking.  So whenever the lock is free and someone waits, either a post is
 * pending or a waiter is already running towards the re-check. */
int
sm_lock_acquire_slow(SMLock *lock, void *me)
{
    if (lock->wake == NULL) {
        PyThread_type_lock wake = PyThread_allocate_lock();
        if (wake == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        /* "acquired" means: no post pending. */
        PyThread_acquire_lock(wake, NOWAIT_LOCK);
        lock->wake = wake;
        lock->wake_pending = 0;
    }
    lock->waiters++;
    while (lock->owner != NULL) {
        PyLockStatus st;
        PyThread_type_lock wake = lock->wake;
        Py_BEGIN_ALLOW_THREADS
        st = PyThread_acquire_lock_timed(wake, -1, 1);
        Py_END_ALLOW_THREADS
        if (st == PY_LOCK_ACQUIRED) {
            lock->wake_pending = 0;
            continue;
        }
        /* PY_LOCK_INTR: a signal arrived.  Run the Python-level handlers now, as
         * threading.Lock.acquire does; if one raises (KeyboardInterrupt), give
         * up without the lock.  We consumed no post, so a pending one still
         * wakes another waiter. */
        if (Py_MakePendingCalls() < 0) {
            lock->waiters--;
            return -1;
        }
    }
    lock->waiters--;
    lock->owner = me;
    return 0;
}

void
sm_lock_wake_one(SMLock *lock)
{
    /* Called under the GIL with waiters > 0 and no post pending, so `wake` is
     * in the acquired state and releasing it is a single post. */
    lock->wake_pending = 1;
    PyThread_release_lock(lock->wake);
}

void
sm_lock_fini(SMLock *lock)
{
    if (lock->wake != NULL) {
        if (!lock->wake_pending) {
            /* Free it released, as _thread.lock does with its own. */
            PyThread_release_lock(lock->wake);
        }
        PyThread_free_lock(lock->wake);
        lock->wake = NULL;
    }
}

int
sm_lock_after_fork(SMLock *lock, void *me)
{
    /* The semaphore may have been mid-use by a thread that is gone: drop it
     * (leaked rather than freed: its state is unknown) and start afresh. */
    lock->wake = NULL;
    lock->waiters = 0;
    lock->wake_pending = 0;
    if (lock->owner == me) {
        return 1;
    }
    lock->owner = NULL;
    return 0;
}

#else /* SM_FREE_THREADED */

int
sm_lock_after_fork(SMLock *lock, void *me)
{
    if (lock->owner == me) {
        return 1;
    }
    lock->owner = NULL;
    memset(&lock->mutex, 0, sizeof(lock->mutex));
    return 0;
}

int
sm_lock_acquire_slow(SMLock *lock, void *me)
{
    PyMutex_Lock(&lock->mutex);
    SM_STORE_PTR_RELAXED(&lock->owner, me);
    return 0;
}

void
sm_lock_wake_one(SMLock *lock)
{
    (void)lock;
}

void
sm_lock_fini(SMLock *lock)
{
    (void)lock;
}

#endif
