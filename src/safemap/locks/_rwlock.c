/*
 * _rwlock.c -- the state machine of safemap.RWLock (see rwlock.py for the
 * public class and docs/locks.md for the guarantees).
 *
 * Why C: the lock must stay consistent whatever runs on the calling thread at
 * any instant -- a signal handler raising KeyboardInterrupt, or the cyclic GC
 * running a finalizer (__del__, weakref callback) that uses the same lock.  In
 * Python both can strike between any two bytecodes, including while an
 * internal mutex is held.  Here:
 *
 *   - every state transition is a short run of plain C that neither runs
 *     Python code nor allocates Python objects (so the GC cannot start in the
 *     middle of one) and never blocks while the state is locked;
 *   - a thread blocks only on its own waiter semaphore, with the state
 *     unlocked and the GIL released / the thread detached;
 *   - signal handlers run only after a wait was interrupted (PY_LOCK_INTR),
 *     and only once that waiter has left the lock entirely: if a handler
 *     raises, the exception propagates with nothing held and nothing
 *     registered; if it returns, the acquire starts over.
 *
 * State protection: on GIL builds the GIL itself (no code below releases it
 * between reading and writing the state); on free-threaded builds a PyMutex
 * per lock, held only around those plain-C transitions.
 *
 * Holds are keyed by a per-thread serial number (64-bit, handed out once per
 * thread and never reused), not by the thread ident, which the OS recycles: a
 * hold leaked by a thread that ended can never pass to a later thread.
 *
 * Statistics: acquisitions, contended acquisitions (the first admission try
 * failed and the caller waited) and the time spent waiting (monotonic clock,
 * slow path only), all changed with the state locked, so exact.
 *
 * Tallies: the counting releases (_release_read_hit() etc.) also add one to a
 * tally of the map that sits behind the lock (safemap.maps: hits, misses,
 * other reads, inserts, updates), with the state locked: exact under any
 * number of threads, for the price of one increment in a transition the
 * thread makes anyway.  The tallies sit beside the state lock, in memory
 * every holder already writes (the mutex, `acquisitions`), so counting adds
 * no shared cache line on free-threaded builds: readers of an RWLock already
 * write the lock's state to take and drop their holds.
 *
 * Exclusive mode (MutexCore, LockedMap's mutex): the same state machine with
 * every hold exclusive and re-entrant, as threading.RLock: `writer` is the
 * owner and `depth` its holds, whichever side (read or write) took them; the
 * reader array stays empty.
 *
 * This module also owns the process-wide contention sampler of every native
 * lock (sm_contention.h): safemap.native._core takes it through a capsule.
 */
#include "../native/sm_compat.h"
#include "../native/sm_contention.h"
#include "pythread.h"

#if SM_FREE_THREADED
#  define RW_LOCK_STATE(self) PyMutex_Lock(&(self)->mutex)
#  define RW_UNLOCK_STATE(self) PyMutex_Unlock(&(self)->mutex)
#else
#  define RW_LOCK_STATE(self) ((void)0)
#  define RW_UNLOCK_STATE(self) ((void)0)
#endif

/* ------------------------------------------------------- thread identity */

static SM_THREAD_LOCAL uint64_t rw_thread_serial; /* 0: not assigned yet */
static uint64_t rw_next_serial;

static uint64_t
rw_me(void)
{
    uint64_t me = rw_thread_serial;
    if (SM_UNLIKELY(me == 0)) {
#if SM_FREE_THREADED
        me = _Py_atomic_add_uint64(&rw_next_serial, 1) + 1;
#else
        me = ++rw_next_serial; /* under the GIL */
#endif
        rw_thread_serial = me;
    }
    return me;
}

/* ------------------------------------------------------------------ types */

/* A blocked thread: lives on that thread's C stack, linked into the lock's
 * waiter list while it waits.  `sem` is a binary semaphore kept acquired;
 * a waker releases it (once: `signaled`), both under the state lock. */
typedef struct rw_waiter {
    struct rw_waiter *prev, *next;
    PyThread_type_lock sem;
    int signaled;
    int write;
} rw_waiter;

/* One reading thread's read holds. */
typedef struct {
    uint64_t thread;
    Py_ssize_t count;
} rw_hold;

/* The tallies a counting release adds to (see "Tallies" above). */
enum {
    RW_HITS,    /* point reads that found their key */
    RW_MISSES,  /* point reads that did not */
    RW_READS,   /* other read holds (len, iteration, snapshot) */
    RW_INSERTS,
    RW_UPDATES,
    RW_DELETES,
    RW_WDI,     /* writes made while an iteration of the map was in progress */
    RW_NTALLIES
};

typedef struct rw_lock {
    PyObject_HEAD
#if SM_FREE_THREADED
    PyMutex mutex;
#endif
    Py_ssize_t acquisitions;    /* holds taken (read or write); state locked */
    Py_ssize_t tallies[RW_NTALLIES]; /* counting releases; state locked */
    int exclusive;              /* MutexCore: every hold exclusive, re-entrant */
    int sampled;                /* report sampled contended waits (0: the owner does) */
    Py_ssize_t depth;           /* exclusive: holds of `writer` */
    Py_ssize_t contentions;     /* of those attempts, the ones that had to wait */
    int64_t wait_ns;            /* time spent waiting in them */
    uint64_t writer;            /* serial of the writing thread, or 0 */
    Py_ssize_t writers_waiting; /* waiters with write == 1 */
    rw_hold *readers;           /* raw-malloc'ed array */
    Py_ssize_t nreaders, readers_cap;
    rw_waiter waiters;          /* sentinel of a circular list */
    struct rw_lock *reg_prev, *reg_next; /* every live lock, for fork */
} rw_lock;

/* Invariant: writer != 0 implies every reader entry is the writer's (it may
 * take nested read holds; nobody else reads while a writer holds the lock). */

/* Every live lock, so that a fork child can drop the holds and waiters of the
 * threads that do not exist there. */
static rw_lock rw_registry_head; /* sentinel; only reg_prev/reg_next used */
#if SM_FREE_THREADED
static PyMutex rw_registry_mutex;
#  define RW_LOCK_REGISTRY() PyMutex_Lock(&rw_registry_mutex)
#  define RW_UNLOCK_REGISTRY() PyMutex_Unlock(&rw_registry_mutex)
#else
#  define RW_LOCK_REGISTRY() ((void)0)
#  define RW_UNLOCK_REGISTRY() ((void)0)
#endif

static PyTypeObject RWLock_Type;
static PyTypeObject RWHold_Type;
static PyTypeObject Mutex_Type;

/* ----------------------------------------- state helpers (state locked) */

static Py_ssize_t
rw_find(rw_lock *self, uint64_t me)
{
    for (Py_ssize_t i = 0; i < self->nreaders; i++) {
        if (self->readers[i].thread == me) {
            return i;
        }
    }
    return -1;
}

/* Add one read hold of `me`; -1 (nothing changed, no exception set) when out
 * of memory.  PyMem_Raw* runs no Python code and never triggers the GC. */
static int
rw_add_read(rw_lock *self, uint64_t me)
{
    Py_ssize_t i = rw_find(self, me);
    if (i >= 0) {
        self->readers[i].count++;
        return 0;
    }
    if (self->nreaders == self->readers_cap) {
        Py_ssize_t cap = self->readers_cap ? self->readers_cap * 2 : 4;
        rw_hold *grown = PyMem_RawRealloc(self->readers, (size_t)cap * sizeof(rw_hold));
        if (grown == NULL) {
            return -1;
        }
        self->readers = grown;
        self->readers_cap = cap;
    }
    self->readers[self->nreaders].thread = me;
    self->readers[self->nreaders].count = 1;
    self->nreaders++;
    return 0;
}

static void
rw_wake_all(rw_lock *self)
{
    for (rw_waiter *w = self->waiters.next; w != &self->waiters; w = w->next) {
        if (!w->signaled) {
            w->signaled = 1;
            PyThread_release_lock(w->sem);
        }
    }
}

static void
rw_register(rw_lock *self, rw_waiter *w)
{
    w->next = &self->waiters;
    w->prev = self->waiters.prev;
    self->waiters.prev->next = w;
    self->waiters.prev = w;
    if (w->write) {
        self->writers_waiting++;
    }
}

/* `w` stops waiting.  A writer that leaves without the lock may have been the
 * last one holding readers back: wake them. */
static void
rw_unregister(rw_lock *self, rw_waiter *w, int acquired)
{
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->prev = w->next = NULL;
    if (w->write && --self->writers_waiting == 0 && !acquired) {
        rw_wake_all(self);
    }
}

/* RW_AFTER_TRY: wait forever, as RW_FOREVER, for a caller whose own try
 * (_try_read / _try_write) just failed: the acquisition counts as contended
 * and is timed from the call, even if the lock is free by then. */
enum { RW_FOREVER, RW_TRY, RW_DEADLINE, RW_AFTER_TRY };

/* timeout: None or -1 waits forever, 0 only tries, > 0 seconds.  May run
 * Python code (__float__), so it is called before the state is touched. */
static int
rw_parse_timeout(PyObject *timeout, int *mode, int64_t *deadline)
{
    *mode = RW_FOREVER;
    *deadline = 0;
    if (timeout == NULL || timeout == Py_None) {
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    if (t == -1.0) {
        return 0;
    }
    if (!(t >= 0.0)) { /* negative or NaN */
        PyErr_SetString(PyExc_ValueError, "timeout must be a non-negative number, -1 or None");
        return -1;
    }
    if (t == 0.0) {
        *mode = RW_TRY;
        return 0;
    }
    int64_t now = sm_now_ns();
    double ns = t * 1e9;
    if (ns >= (double)(INT64_MAX - now)) {
        return 0; /* beyond any clock: forever */
    }
    *mode = RW_DEADLINE;
    *deadline = now + (int64_t)ns;
    return 0;
}

/* ------------------------------------------------- contention sampling */

/* The process-wide sampler (sm_contention.h).  The callback is changed under
 * rw_sample_mutex (free-threaded builds; the GIL otherwise) and read under it
 * by a report, which takes its own reference before calling. */
static void rw_report(PyObject *kind, int64_t wait_ns);
static SMContention rw_contention = {0, 0, rw_report};
static PyObject *rw_sample_callback; /* None-free: NULL when off */
#if SM_FREE_THREADED
static PyMutex rw_sample_mutex;
#  define RW_LOCK_SAMPLER() PyMutex_Lock(&rw_sample_mutex)
#  define RW_UNLOCK_SAMPLER() PyMutex_Unlock(&rw_sample_mutex)
#else
#  define RW_LOCK_SAMPLER() ((void)0)
#  define RW_UNLOCK_SAMPLER() ((void)0)
#endif
static SM_THREAD_LOCAL int rw_in_report; /* this thread runs the callback */
static PyObject *rw_str_RWLock;

static void
rw_report(PyObject *kind, int64_t wait_ns)
{
    if (rw_in_report) {
        return; /* a contended acquisition inside the callback itself */
    }
    RW_LOCK_SAMPLER();
    PyObject *cb = Py_XNewRef(rw_sample_callback);
    RW_UNLOCK_SAMPLER();
    if (cb == NULL) {
        return; /* turned off meanwhile */
    }
    rw_in_report = 1;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
#endif
    PyObject *wait = PyFloat_FromDouble((double)wait_ns / 1e9);
    PyObject *res = wait == NULL ? NULL : PyObject_CallFunctionObjArgs(cb, kind, wait, NULL);
    if (res == NULL) {
        PyErr_WriteUnraisable(cb);
    }
    Py_XDECREF(res);
    Py_XDECREF(wait);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(et, ev, tb);
#endif
    rw_in_report = 0;
    Py_DECREF(cb);
}

static PyObject *
rw_set_contention_sampling(PyObject *Py_UNUSED(module), PyObject *const *args,
                           Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "_set_contention_sampling expected 2 arguments (every, callback), got %zd",
                     nargs);
        return NULL;
    }
    if (PyBool_Check(args[0]) || !PyLong_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "every must be an int");
        return NULL;
    }
    long every = PyLong_AsLong(args[0]);
    if (every == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (every < 0 || every > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "every must be >= 0 (0 turns sampling off)");
        return NULL;
    }
    PyObject *cb = args[1];
    if (every > 0 && !PyCallable_Check(cb)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable when every > 0");
        return NULL;
    }
    PyObject *new_cb = every > 0 ? Py_NewRef(cb) : NULL;
    RW_LOCK_SAMPLER();
    PyObject *old = rw_sample_callback;
    rw_sample_callback = new_cb;
#if SM_FREE_THREADED
    _Py_atomic_store_ssize_relaxed(&rw_contention.seen, 0);
    _Py_atomic_store_int_relaxed(&rw_contention.every, (int)every);
#else
    rw_contention.seen = 0;
    rw_contention.every = (int)every;
#endif
    RW_UNLOCK_SAMPLER();
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* Sampled waits of holds this thread still has, reported when it releases
 * them (never while it holds the lock).  A few are enough: one per lock the
 * thread holds at once; more are dropped. */
typedef struct {
    const void *lock;
    int64_t wait_ns;
} rw_pending_wait;

#define RW_MAX_PENDING 4
static SM_THREAD_LOCAL rw_pending_wait rw_pending[RW_MAX_PENDING];
static SM_THREAD_LOCAL int rw_npending;

static void
rw_keep_sample(rw_lock *self, int64_t wait_ns)
{
    if (rw_npending < RW_MAX_PENDING) {
        rw_pending[rw_npending].lock = self;
        rw_pending[rw_npending].wait_ns = wait_ns;
        rw_npending++;
    }
}

/* The calling thread holds self no more: report its kept samples for self. */
static void
rw_report_kept(rw_lock *self)
{
    int i = 0;
    while (i < rw_npending) {
        if (rw_pending[i].lock == self) {
            int64_t wait_ns = rw_pending[i].wait_ns;
            rw_pending[i] = rw_pending[--rw_npending];
            rw_report(rw_str_RWLock, wait_ns);
        }
        else {
            i++;
        }
    }
}

/* ------------------------------------------------------------- acquiring */

enum { RW_ACQUIRED, RW_TIMED_OUT, RW_WRITE_HELD, RW_UPGRADE, RW_NOMEM, RW_INTERRUPTED };

/* Admit the caller now if it may go; state locked.  Returns RW_ACQUIRED,
 * RW_WRITE_HELD/RW_UPGRADE (misuse), RW_NOMEM, or -1 (must wait). */
static int
rw_try_admit(rw_lock *self, uint64_t me, int write)
{
    if (self->exclusive) {
        /* Either side: the owner again, or anyone when nobody holds it. */
        if (self->writer == me) {
            self->depth++;
            return RW_ACQUIRED;
        }
        if (self->writer == 0) {
            self->writer = me;
            self->depth = 1;
            return RW_ACQUIRED;
        }
        return -1;
    }
    if (write) {
        if (self->writer == me) {
            return RW_WRITE_HELD;
        }
        if (rw_find(self, me) >= 0) {
            return RW_UPGRADE;
        }
        if (self->writer == 0 && self->nreaders == 0) {
            self->writer = me;
            return RW_ACQUIRED;
        }
        return -1;
    }
    /* A thread already holding the lock (read or write) is always admitted:
     * refusing it would deadlock it against the writer waiting for that very
     * hold.  Others wait while a writer holds or waits (writer preference). */
    if (self->writer == me || rw_find(self, me) >= 0 ||
        (self->writer == 0 && self->writers_waiting == 0)) {
        return rw_add_read(self, me) < 0 ? RW_NOMEM : RW_ACQUIRED;
    }
    return -1;
}

/* The wait that began at t0 ends (state locked): add it; return it. */
static int64_t
rw_waited(rw_lock *self, int64_t t0)
{
    int64_t waited = sm_now_ns() - t0;
    if (waited < 0) {
        waited = 0;
    }
    self->wait_ns += waited;
    return waited;
}

/* Acquire; *waited_ns (if not NULL) receives the time this call waited. */
static int
rw_acquire_impl(rw_lock *self, int write, int mode, int64_t deadline, int64_t *waited_ns)
{
    uint64_t me = rw_me();
    rw_waiter w = {NULL, NULL, NULL, 0, write};
    int registered = 0, status;
    int64_t t0 = -1, waited = 0; /* t0 >= 0: the acquisition is contended, we wait */
    int uncounted = 0;             /* contended, not yet in `contentions` */
    if (mode == RW_AFTER_TRY) {
        t0 = sm_now_ns();
        uncounted = 1;
    }
    for (;;) {
        RW_LOCK_STATE(self);
        if (uncounted) {
            self->contentions++;
            uncounted = 0;
        }
        status = rw_try_admit(self, me, write);
        if (status != -1) {
            if (status == RW_ACQUIRED) {
                self->acquisitions++;
                if (t0 >= 0) {
                    waited = rw_waited(self, t0);
                }
            }
            if (registered) {
                rw_unregister(self, &w, status == RW_ACQUIRED);
            }
            RW_UNLOCK_STATE(self);
            break;
        }
        if (t0 < 0 && mode != RW_TRY) {
            self->contentions++;
            t0 = sm_now_ns();
        }
        int64_t remaining = 0;
        if (mode == RW_DEADLINE) {
            remaining = deadline - sm_now_ns();
        }
        if (mode == RW_TRY || (mode == RW_DEADLINE && remaining <= 0)) {
            if (registered) {
                rw_unregister(self, &w, 0);
            }
            if (t0 >= 0) {
                waited = rw_waited(self, t0);
            }
            RW_UNLOCK_STATE(self);
            status = RW_TIMED_OUT;
            break;
        }
        if (w.sem == NULL) {
            /* First wait: make the semaphore outside the state lock, then
             * look again (the lock may have been released meanwhile). */
            RW_UNLOCK_STATE(self);
            w.sem = PyThread_allocate_lock();
            if (w.sem == NULL) {
                status = RW_NOMEM;
                break;
            }
            (void)PyThread_acquire_lock(w.sem, NOWAIT_LOCK);
            continue;
        }
        if (!registered) {
            rw_register(self, &w);
            registered = 1;
        }
        RW_UNLOCK_STATE(self);

        PY_TIMEOUT_T us = -1;
        if (mode == RW_DEADLINE) {
            int64_t r = remaining / 1000 + 1;
            us = r > (int64_t)PY_TIMEOUT_MAX ? (PY_TIMEOUT_T)PY_TIMEOUT_MAX : (PY_TIMEOUT_T)r;
        }
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(w.sem, us, 1);
        Py_END_ALLOW_THREADS

        RW_LOCK_STATE(self);
        if (w.signaled) {
            /* The waker released `sem` under the state lock: if our wait did
             * not consume that release, take it now so `sem` is held again. */
            if (r != PY_LOCK_ACQUIRED) {
                (void)PyThread_acquire_lock(w.sem, NOWAIT_LOCK);
            }
            w.signaled = 0;
        }
        if (r == PY_LOCK_INTR) {
            /* A signal arrived.  Leave the lock entirely before its handler
             * runs: the handler is arbitrary Python code (it may even use this
             * lock); if it raises, nothing of ours is left behind. */
            rw_unregister(self, &w, 0);
            registered = 0;
            RW_UNLOCK_STATE(self);
            if (Py_MakePendingCalls() < 0) {
                RW_LOCK_STATE(self);
                (void)rw_waited(self, t0);
                RW_UNLOCK_STATE(self);
                status = RW_INTERRUPTED;
                break;
            }
            continue;
        }
        RW_UNLOCK_STATE(self);
    }
    if (w.sem != NULL) {
        PyThread_free_lock(w.sem);
    }
    if (waited_ns != NULL) {
        *waited_ns = waited;
    }
    if (t0 >= 0 && (status == RW_ACQUIRED || status == RW_TIMED_OUT) && self->sampled &&
        SM_UNLIKELY(sm_contention_sampled(&rw_contention))) {
        if (status == RW_ACQUIRED) {
            rw_keep_sample(self, waited); /* reported when this thread releases */
        }
        else {
            rw_report(rw_str_RWLock, waited); /* holds nothing of self */
        }
    }
    return status;
}

/* An acquisition's status as the Python-facing result: True, False (timed
 * out), or an exception. */
static PyObject *
rw_acquire_result(int status)
{
    switch (status) {
    case RW_ACQUIRED:
        Py_RETURN_TRUE;
    case RW_TIMED_OUT:
        Py_RETURN_FALSE;
    case RW_WRITE_HELD:
        PyErr_SetString(PyExc_RuntimeError, "RWLock: this thread already holds the write lock");
        return NULL;
    case RW_UPGRADE:
        PyErr_SetString(PyExc_RuntimeError,
                        "RWLock: this thread holds the read lock and asked for the write lock; "
                        "upgrading would deadlock (release the read lock first)");
        return NULL;
    case RW_NOMEM:
        return PyErr_NoMemory();
    default: /* RW_INTERRUPTED: the signal handler's exception is set */
        return NULL;
    }
}

/* The Python-facing acquire. */
static PyObject *
rw_acquire(rw_lock *self, int write, PyObject *timeout)
{
    int mode;
    int64_t deadline;
    if (rw_parse_timeout(timeout, &mode, &deadline) < 0) {
        return NULL;
    }
    return rw_acquire_result(rw_acquire_impl(self, write, mode, deadline, NULL));
}

static int
rw_timeout_arg(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *fname,
               PyObject **timeout)
{
    /* acquire_*(timeout=None): one optional argument, by position or name. */
    *timeout = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", fname,
                     nargs + nkw);
        return -1;
    }
    if (nargs == 1) {
        *timeout = args[0];
    }
    else if (nkw == 1) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "timeout") != 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'",
                         fname, name);
            return -1;
        }
        *timeout = args[0];
    }
    return 0;
}

static PyObject *
rw_acquire_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    if (rw_timeout_arg(args, nargs, kwnames, "acquire_read", &timeout) < 0) {
        return NULL;
    }
    return rw_acquire((rw_lock *)self, 0, timeout);
}

static PyObject *
rw_acquire_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *timeout;
    if (rw_timeout_arg(args, nargs, kwnames, "acquire_write", &timeout) < 0) {
        return NULL;
    }
    return rw_acquire((rw_lock *)self, 1, timeout);
}

/* ------------------------------------------------------------- releasing */

/* Add one to each tally given (-1: none); state locked. */
static inline void
rw_count(rw_lock *self, int tally, int tally2)
{
    if (tally >= 0) {
        self->tallies[tally]++;
    }
    if (tally2 >= 0) {
        self->tallies[tally2]++;
    }
}

/* Exclusive mode: drop one hold of the owner (either side).  1: the lock is
 * free now, 0: the owner still holds it, -1: not held by the caller. */
static int
rw_release_exclusive(rw_lock *self, uint64_t me, int tally, int tally2)
{
    if (self->writer != me) {
        return -1;
    }
    rw_count(self, tally, tally2);
    if (--self->depth > 0) {
        return 0;
    }
    self->writer = 0;
    rw_wake_all(self);
    return 1;
}

/* Release one read hold of the caller; with tally >= 0, count it there (the
 * state is locked either way, so the count is exact). */
static int
rw_release_read_counting(rw_lock *self, int tally)
{
    uint64_t me = rw_me();
    int released = 0;
    RW_LOCK_STATE(self);
    if (self->exclusive) {
        released = rw_release_exclusive(self, me, tally, -1);
    }
    else {
        Py_ssize_t i = rw_find(self, me);
        if (i < 0) {
            released = -1;
        }
        else {
            rw_count(self, tally, -1);
            if (--self->readers[i].count == 0) {
                self->readers[i] = self->readers[--self->nreaders];
                if (self->nreaders == 0) {
                    rw_wake_all(self);
                }
                released = self->writer != me;
            }
        }
    }
    RW_UNLOCK_STATE(self);
    if (released < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "RWLock: release_read() by a thread that holds no read lock");
        return -1;
    }
    if (SM_UNLIKELY(rw_npending) && released) {
        rw_report_kept(self);
    }
    return 0;
}

static PyObject *
rw_release_read_impl(rw_lock *self, int tally)
{
    if (rw_release_read_counting(self, tally) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Release the caller's write hold; with tally >= 0, count it there. */
static int
rw_release_write_counting(rw_lock *self, int tally, int tally2)
{
    uint64_t me = rw_me();
    int released;
    RW_LOCK_STATE(self);
    if (self->exclusive) {
        released = rw_release_exclusive(self, me, tally, tally2);
    }
    else if (self->writer != me) {
        released = -1;
    }
    else {
        rw_count(self, tally, tally2);
        self->writer = 0;
        rw_wake_all(self);
        released = rw_find(self, me) < 0;
    }
    RW_UNLOCK_STATE(self);
    if (released < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "RWLock: release_write() by a thread that does not hold it");
        return -1;
    }
    if (SM_UNLIKELY(rw_npending) && released) {
        rw_report_kept(self);
    }
    return 0;
}

static PyObject *
rw_release_write_impl(rw_lock *self, int tally)
{
    if (rw_release_write_counting(self, tally, -1) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
rw_release_read(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return rw_release_read_impl((rw_lock *)op, -1);
}

static PyObject *
rw_release_write(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return rw_release_write_impl((rw_lock *)op, -1);
}


/* ----------------------------------------------- the maps' fast paths
 *
 * DictBackedMap (safemap.maps) makes its point reads and stores through
 * these: each does the dict operation with the caller's hold, counts it and
 * releases the hold in one call, so the statistics cost no Python bytecode
 * and no extra call.  Preconditions: the caller holds the hold the call
 * releases (it took it just before, and checked the map's own flags), and
 * `data` is a dict.  The hold is released whatever happens (an exception from
 * a key's __hash__/__eq__ included); only an operation that completed is
 * counted.  A value that a store replaces is released after the lock is
 * (its __del__ may use the map).
 */

static int
rw_args(const char *fname, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s expected %zd arguments, got %zd", fname, want, nargs);
        return -1;
    }
    return 0;
}

/* Look key up in data, count a hit or a miss, release the read hold.
 * 1: found (*out strong), 0: absent, -1: error (the hold released). */
static int
rw_lookup_release(rw_lock *self, PyObject *data, PyObject *key, PyObject **out)
{
    int found = -1;
    *out = NULL;
    if (!PyDict_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be a dict");
    }
    else {
        Py_hash_t hash = sm_hash(key);
        if (hash != -1) {
            found = sm_dict_get(data, key, hash, out);
        }
    }
    if (rw_release_read_counting(self, found < 0 ? -1 : found ? RW_HITS : RW_MISSES) < 0) {
        Py_CLEAR(*out);
        return -1;
    }
    return found;
}

/* _get_release(data, key, default): data.get(key, default), counted. */
static PyObject *
rw_get_release(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_get_release", nargs, 3) < 0) {
        return NULL;
    }
    PyObject *value;
    int found = rw_lookup_release((rw_lock *)op, args[0], args[1], &value);
    if (found < 0) {
        return NULL;
    }
    return found ? value : Py_NewRef(args[2]);
}

/* _getitem_release(data, key): data[key] (KeyError), counted. */
static PyObject *
rw_getitem_release(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_getitem_release", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *value;
    int found = rw_lookup_release((rw_lock *)op, args[0], args[1], &value);
    if (found == 0) {
        PyObject *exc = PyObject_CallOneArg(PyExc_KeyError, args[1]);
        if (exc != NULL) {
            PyErr_SetObject(PyExc_KeyError, exc);
            Py_DECREF(exc);
        }
    }
    return found > 0 ? value : NULL;
}

/* _contains_release(data, key): key in data, counted. */
static PyObject *
rw_contains_release(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_contains_release", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *value;
    int found = rw_lookup_release((rw_lock *)op, args[0], args[1], &value);
    if (found < 0) {
        return NULL;
    }
    Py_XDECREF(value);
    return PyBool_FromLong(found);
}

/* _load_release(data, key): (value, True) or (None, False), counted. */
static PyObject *
rw_load_release(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_load_release", nargs, 2) < 0) {
        return NULL;
    }
    PyObject *value;
    int found = rw_lookup_release((rw_lock *)op, args[0], args[1], &value);
    if (found < 0) {
        return NULL;
    }
    if (!found) {
        return PyTuple_Pack(2, Py_None, Py_False);
    }
    PyObject *res = PyTuple_Pack(2, value, Py_True);
    Py_DECREF(value);
    return res;
}

/* Set data[key] = value as DictBackedMap does (one lookup for a new key; the
 * very object already held is no change), count the insert or update (and a
 * write during iteration when `active` is true), and with `release` drop the
 * caller's write hold; the replaced value is released last. */
static PyObject *
rw_store(rw_lock *self, PyObject *const *args, int release)
{
    PyObject *data = args[0], *key = args[1], *value = args[2];
    PyObject *old = NULL;
    int tally = -1, wdi = -1, ok = -1;
    int active = PyObject_IsTrue(args[3]);
    if (active < 0) {
        /* nothing changed */
    }
    else if (!PyDict_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be a dict");
    }
    else {
        int present = sm_dict_setdefault(data, key, value, &old);
        if (present == 0) {
            tally = RW_INSERTS;
            ok = 0;
        }
        else if (present == 1 && old != value) {
            ok = PyDict_SetItem(data, key, value);
            tally = ok < 0 ? -1 : RW_UPDATES;
        }
        else if (present == 1) {
            ok = 0; /* the object it held: no change, nothing counted */
        }
        if (tally >= 0 && active) {
            wdi = RW_WDI;
        }
    }
    if (release) {
        if (rw_release_write_counting(self, tally, wdi) < 0) {
            ok = -1;
        }
    }
    else {
        RW_LOCK_STATE(self);
        rw_count(self, tally, wdi);
        RW_UNLOCK_STATE(self);
    }
    Py_XDECREF(old); /* with the lock released: its __del__ may use the map */
    if (ok < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* _release_read_other(): release_read(), counting a read that is not a point
 * read (METH_FASTCALL: see _try_read). */
static PyObject *
rw_release_read_other(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    if (rw_args("_release_read_other", nargs, 0) < 0) {
        return NULL;
    }
    return rw_release_read_impl((rw_lock *)op, RW_READS);
}

/* _store_release(data, key, value, active): the store, counted, then the
 * write hold released. */
static PyObject *
rw_store_release(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_store_release", nargs, 4) < 0) {
        return NULL;
    }
    return rw_store((rw_lock *)op, args, 1);
}

/* _store_held(data, key, value, active): the store, counted, under a hold
 * that the caller keeps (a nested write: see DictBackedMap). */
static PyObject *
rw_store_held(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_store_held", nargs, 4) < 0) {
        return NULL;
    }
    return rw_store((rw_lock *)op, args, 0);
}

/* _tally(inserts, updates, deletes, writes_during_iteration): add a write's
 * counts (a compute, a commit, a removal), made under an exclusive hold. */
static PyObject *
rw_tally(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (rw_args("_tally", nargs, 4) < 0) {
        return NULL;
    }
    Py_ssize_t n[4];
    for (int i = 0; i < 4; i++) {
        n[i] = PyLong_AsSsize_t(args[i]);
        if (n[i] == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (n[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "_tally: counts must be >= 0");
            return NULL;
        }
    }
    rw_lock *self = (rw_lock *)op;
    RW_LOCK_STATE(self);
    self->tallies[RW_INSERTS] += n[0];
    self->tallies[RW_UPDATES] += n[1];
    self->tallies[RW_DELETES] += n[2];
    self->tallies[RW_WDI] += n[3];
    RW_UNLOCK_STATE(self);
    Py_RETURN_NONE;
}

/* _try_read() / _try_write(): acquire_*(0) without an argument to parse.
 * METH_FASTCALL (taking no argument), not METH_NOARGS: the interpreter has a
 * specialized call for the former only, which matters on the maps' hottest
 * path. */
static PyObject *
rw_try_read(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    if (rw_args("_try_read", nargs, 0) < 0) {
        return NULL;
    }
    return rw_acquire_result(rw_acquire_impl((rw_lock *)op, 0, RW_TRY, 0, NULL));
}

static PyObject *
rw_try_write(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    if (rw_args("_try_write", nargs, 0) < 0) {
        return NULL;
    }
    return rw_acquire_result(rw_acquire_impl((rw_lock *)op, 1, RW_TRY, 0, NULL));
}

/* _wait_read() / _wait_write(): the maps' slow path, called only after their
 * _try_read() / _try_write() failed.  Waits as acquire_*() (interruptible,
 * nothing held if a signal handler raises), counts one contended acquisition
 * in _stats() and returns the seconds waited.  The map keeps its contention
 * counts here, in C, rather than in Python under a lock of its own: on
 * CPython 3.14 a signal handler can raise right after a `with lock:` took
 * the lock and before the block protects it (python/cpython#148874), which
 * would leave that lock held forever. */
static PyObject *
rw_wait(PyObject *op, Py_ssize_t nargs, int write)
{
    if (rw_args(write ? "_wait_write" : "_wait_read", nargs, 0) < 0) {
        return NULL;
    }
    int64_t waited = 0;
    int status = rw_acquire_impl((rw_lock *)op, write, RW_AFTER_TRY, 0, &waited);
    if (status != RW_ACQUIRED) {
        return rw_acquire_result(status); /* an exception (RW_AFTER_TRY never times out) */
    }
    return PyFloat_FromDouble((double)waited / 1e9);
}

static PyObject *
rw_wait_read(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    return rw_wait(op, nargs, 0);
}

static PyObject *
rw_wait_write(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t nargs)
{
    return rw_wait(op, nargs, 1);
}

/* _tallies(): (hits, misses, reads, inserts, updates, deletes,
 * writes_during_iteration), read with the state locked. */
static PyObject *
rw_tallies(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    rw_lock *self = (rw_lock *)op;
    Py_ssize_t t[RW_NTALLIES];
    RW_LOCK_STATE(self);
    memcpy(t, self->tallies, sizeof(t));
    RW_UNLOCK_STATE(self);
    return Py_BuildValue("(nnnnnnn)", t[RW_HITS], t[RW_MISSES], t[RW_READS], t[RW_INSERTS],
                         t[RW_UPDATES], t[RW_DELETES], t[RW_WDI]);
}

/* _unsampled(): this lock's owner (a map) reports its contended waits under
 * its own name; the lock reports none to the contention sampler, so no wait
 * is sampled twice. */
static PyObject *
rw_unsampled(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    ((rw_lock *)op)->sampled = 0;
    Py_RETURN_NONE;
}

/* _stats(): (acquisitions, contentions, wait_seconds), read with the state
 * locked. */
static PyObject *
rw_stats(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    rw_lock *self = (rw_lock *)op;
    RW_LOCK_STATE(self);
    Py_ssize_t acquisitions = self->acquisitions;
    Py_ssize_t contentions = self->contentions;
    int64_t wait_ns = self->wait_ns;
    RW_UNLOCK_STATE(self);
    return Py_BuildValue("(nnd)", acquisitions, contentions, (double)wait_ns / 1e9);
}

/* --------------------------------------------------------- introspection */

static PyObject *
rw_held_by_current_thread(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    rw_lock *self = (rw_lock *)op;
    uint64_t me = rw_me();
    RW_LOCK_STATE(self);
    int held = self->writer == me || rw_find(self, me) >= 0;
    RW_UNLOCK_STATE(self);
    return PyBool_FromLong(held);
}

static PyObject *
rw_write_held_by_current_thread(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    rw_lock *self = (rw_lock *)op;
    uint64_t me = rw_me();
    RW_LOCK_STATE(self);
    int held = self->writer == me;
    RW_UNLOCK_STATE(self);
    return PyBool_FromLong(held);
}

static PyObject *
rw_read_holds_of_current_thread(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    rw_lock *self = (rw_lock *)op;
    uint64_t me = rw_me();
    RW_LOCK_STATE(self);
    Py_ssize_t n;
    if (self->exclusive) {
        n = self->writer == me ? self->depth : 0;
    }
    else {
        Py_ssize_t i = rw_find(self, me);
        n = i >= 0 ? self->readers[i].count : 0;
    }
    RW_UNLOCK_STATE(self);
    return PyLong_FromSsize_t(n);
}

static PyObject *
rw_repr(PyObject *op)
{
    rw_lock *self = (rw_lock *)op;
    RW_LOCK_STATE(self);
    int writing = self->writer != 0, exclusive = self->exclusive;
    Py_ssize_t holds = 0;
    for (Py_ssize_t i = 0; i < self->nreaders; i++) {
        holds += self->readers[i].count;
    }
    Py_ssize_t waiting = self->writers_waiting;
    RW_UNLOCK_STATE(self);
    /* Python objects only from here on, with the state unlocked. */
    PyObject *name = PyType_GetName(Py_TYPE(op));
    if (name == NULL) {
        return NULL;
    }
    PyObject *res;
    if (exclusive) {
        res = PyUnicode_FromFormat("<%U %s>", name, writing ? "locked" : "unlocked");
    }
    else if (writing) {
        res = PyUnicode_FromFormat("<%U write-locked, %zd writers waiting>", name, waiting);
    }
    else if (holds) {
        res = PyUnicode_FromFormat("<%U %zd read holds, %zd writers waiting>", name, holds,
                                   waiting);
    }
    else {
        res = PyUnicode_FromFormat("<%U unlocked, %zd writers waiting>", name, waiting);
    }
    Py_DECREF(name);
    return res;
}

/* -------------------------------------------------------- context managers */

typedef struct {
    PyObject_HEAD
    PyObject *lock;
    PyObject *timeout;
    int write;
} rw_hold_cm;

static PyObject *rw_str_acquire_read, *rw_str_acquire_write, *rw_str_release_read,
    *rw_str_release_write;

static PyObject *
rw_make_hold(PyObject *lock, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
             int write)
{
    PyObject *timeout;
    if (rw_timeout_arg(args, nargs, kwnames, write ? "write" : "read", &timeout) < 0) {
        return NULL;
    }
    rw_hold_cm *hold = PyObject_GC_New(rw_hold_cm, &RWHold_Type);
    if (hold == NULL) {
        return NULL;
    }
    hold->lock = Py_NewRef(lock);
    hold->timeout = Py_NewRef(timeout);
    hold->write = write;
    PyObject_GC_Track(hold);
    return (PyObject *)hold;
}

static PyObject *
rw_read_cm(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return rw_make_hold(self, args, nargs, kwnames, 0);
}

static PyObject *
rw_write_cm(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return rw_make_hold(self, args, nargs, kwnames, 1);
}

/* __enter__/__exit__ go through the lock's own methods, so that a subclass or
 * an instrumentation (safemap.race wraps them) sees every acquire/release. */
static PyObject *
hold_enter(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    rw_hold_cm *hold = (rw_hold_cm *)op;
    PyObject *args[2] = {hold->lock, hold->timeout};
    PyObject *got = PyObject_VectorcallMethod(
        hold->write ? rw_str_acquire_write : rw_str_acquire_read, args, 2, NULL);
    if (got == NULL) {
        return NULL;
    }
    int ok = PyObject_IsTrue(got);
    Py_DECREF(got);
    if (ok < 0) {
        return NULL;
    }
    if (!ok) {
        PyErr_Format(PyExc_TimeoutError, "RWLock: %s lock not acquired within %Ss",
                     hold->write ? "write" : "read", hold->timeout);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
hold_exit(PyObject *op, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    rw_hold_cm *hold = (rw_hold_cm *)op;
    PyObject *args[1] = {hold->lock};
    PyObject *res = PyObject_VectorcallMethod(
        hold->write ? rw_str_release_write : rw_str_release_read, args, 1, NULL);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_NONE; /* never suppresses the block's exception */
}

static int
hold_traverse(PyObject *op, visitproc visit, void *arg)
{
    rw_hold_cm *hold = (rw_hold_cm *)op;
    Py_VISIT(hold->lock);
    Py_VISIT(hold->timeout);
    return 0;
}

static int
hold_clear(PyObject *op)
{
    rw_hold_cm *hold = (rw_hold_cm *)op;
    Py_CLEAR(hold->lock);
    Py_CLEAR(hold->timeout);
    return 0;
}

static void
hold_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    (void)hold_clear(op);
    PyObject_GC_Del(op);
}

static PyMethodDef hold_methods[] = {
    {"__enter__", hold_enter, METH_NOARGS, "Acquire; TimeoutError if the timeout expires."},
    {"__exit__", (PyCFunction)(void (*)(void))hold_exit, METH_FASTCALL, "Release."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RWHold_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.locks._rwlock.Hold",
    .tp_basicsize = sizeof(rw_hold_cm),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Context manager for one read or write hold of an RWLock.",
    .tp_dealloc = hold_dealloc,
    .tp_traverse = hold_traverse,
    .tp_clear = hold_clear,
    .tp_methods = hold_methods,
};

/* ------------------------------------------------------------- lifecycle */

static PyObject *
rw_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    /* Arguments are checked by __init__ (the Python class's). */
    rw_lock *self = (rw_lock *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->writer = 0;
    self->acquisitions = self->contentions = 0;
    memset(self->tallies, 0, sizeof(self->tallies));
    self->exclusive = 0;
    self->sampled = 1;
    self->depth = 0;
    self->wait_ns = 0;
    self->writers_waiting = 0;
    self->readers = NULL;
    self->nreaders = self->readers_cap = 0;
    self->waiters.prev = self->waiters.next = &self->waiters;
    RW_LOCK_REGISTRY();
    self->reg_next = &rw_registry_head;
    self->reg_prev = rw_registry_head.reg_prev;
    rw_registry_head.reg_prev->reg_next = self;
    rw_registry_head.reg_prev = self;
    RW_UNLOCK_REGISTRY();
    return (PyObject *)self;
}

static void
rw_dealloc(PyObject *op)
{
    /* Holds no Python object: nothing to untrack or clear here (a subclass's
     * own dealloc untracks and clears its slots before calling this). */
    rw_lock *self = (rw_lock *)op;
    RW_LOCK_REGISTRY();
    self->reg_prev->reg_next = self->reg_next;
    self->reg_next->reg_prev = self->reg_prev;
    RW_UNLOCK_REGISTRY();
    PyMem_RawFree(self->readers);
    PyTypeObject *type = Py_TYPE(op);
    type->tp_free(op);
}

/* After os.fork(), in the child, where only the forking thread exists: every
 * lock forgets the holds and waiters of the other threads (they can never
 * release or stop waiting), and keeps the forking thread's own holds.  The
 * state mutexes are reset: no other thread can own them any more. */
static PyObject *
rw_after_fork_in_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    uint64_t me = rw_me();
#if SM_FREE_THREADED
    rw_registry_mutex = (PyMutex){0};
#endif
    for (rw_lock *lk = rw_registry_head.reg_next; lk != &rw_registry_head; lk = lk->reg_next) {
#if SM_FREE_THREADED
        lk->mutex = (PyMutex){0};
#endif
        /* The waiters' semaphores belonged to threads that are gone: they are
         * abandoned, not freed (their owners' stacks are gone too). */
        lk->waiters.prev = lk->waiters.next = &lk->waiters;
        lk->writers_waiting = 0;
        if (lk->writer != me) {
            lk->writer = 0;
            lk->depth = 0;
        }
        Py_ssize_t kept = 0;
        for (Py_ssize_t i = 0; i < lk->nreaders; i++) {
            if (lk->readers[i].thread == me) {
                lk->readers[kept++] = lk->readers[i];
            }
        }
        lk->nreaders = kept;
    }
    Py_RETURN_NONE;
}

static PyMethodDef rw_methods[] = {
    {"acquire_read", (PyCFunction)(void (*)(void))rw_acquire_read,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire_read(timeout=None)\n--\n\n"
     "Take a read hold; return False if timeout expired first."},
    {"acquire_write", (PyCFunction)(void (*)(void))rw_acquire_write,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire_write(timeout=None)\n--\n\n"
     "Take the write hold; return False if timeout expired first.\n\n"
     "Raises RuntimeError at once if this thread holds the read or the write lock."},
    {"release_read", rw_release_read, METH_NOARGS,
     "release_read()\n--\n\n"
     "Release one read hold of this thread; RuntimeError if it holds none."},
    {"release_write", rw_release_write, METH_NOARGS,
     "release_write()\n--\n\n"
     "Release this thread's write hold; RuntimeError if it does not hold it."},
    {"held_by_current_thread", rw_held_by_current_thread, METH_NOARGS,
     "held_by_current_thread()\n--\n\n"
     "Whether the calling thread holds the lock, for reading or for writing."},
    {"write_held_by_current_thread", rw_write_held_by_current_thread, METH_NOARGS,
     "write_held_by_current_thread()\n--\n\n"
     "Whether the calling thread holds the write lock."},
    {"_stats", rw_stats, METH_NOARGS,
     "_stats()\n--\n\n"
     "(acquisitions, contentions, wait_seconds): holds taken, acquisitions that found "
     "the lock unavailable and waited, and the total time spent waiting (exact)."},
    {"_try_read", (PyCFunction)(void (*)(void))rw_try_read, METH_FASTCALL,
     "_try_read()\n--\n\n"
     "acquire_read(0): take a read hold if that needs no wait; say whether it did."},
    {"_try_write", (PyCFunction)(void (*)(void))rw_try_write, METH_FASTCALL,
     "_try_write()\n--\n\n"
     "acquire_write(0): take the write hold if that needs no wait; say whether it did."},
    {"_wait_read", (PyCFunction)(void (*)(void))rw_wait_read, METH_FASTCALL,
     "_wait_read()\n--\n\n"
     "After a failed _try_read(): wait for a read hold, counted as contended; return "
     "the seconds waited."},
    {"_wait_write", (PyCFunction)(void (*)(void))rw_wait_write, METH_FASTCALL,
     "_wait_write()\n--\n\n"
     "After a failed _try_write(): wait for the write hold, counted as contended; return "
     "the seconds waited."},
    {"_release_read_other", (PyCFunction)(void (*)(void))rw_release_read_other, METH_FASTCALL,
     "release_read(), counting a read that is not a point read (len, iteration, "
     "snapshot) in _tallies()."},
    {"_get_release", (PyCFunction)(void (*)(void))rw_get_release, METH_FASTCALL,
     "_get_release(data, key, default)\n--\n\n"
     "data.get(key, default) under the caller's read hold, counted; releases the hold."},
    {"_getitem_release", (PyCFunction)(void (*)(void))rw_getitem_release, METH_FASTCALL,
     "_getitem_release(data, key)\n--\n\n"
     "data[key] under the caller's read hold, counted; releases the hold."},
    {"_contains_release", (PyCFunction)(void (*)(void))rw_contains_release, METH_FASTCALL,
     "_contains_release(data, key)\n--\n\n"
     "key in data under the caller's read hold, counted; releases the hold."},
    {"_load_release", (PyCFunction)(void (*)(void))rw_load_release, METH_FASTCALL,
     "_load_release(data, key)\n--\n\n"
     "(value, True) or (None, False) under the caller's read hold, counted; releases it."},
    {"_store_release", (PyCFunction)(void (*)(void))rw_store_release, METH_FASTCALL,
     "_store_release(data, key, value, active)\n--\n\n"
     "data[key] = value under the caller's write hold, counted; releases the hold."},
    {"_store_held", (PyCFunction)(void (*)(void))rw_store_held, METH_FASTCALL,
     "_store_held(data, key, value, active)\n--\n\n"
     "data[key] = value under a hold the caller keeps, counted."},
    {"_tally", (PyCFunction)(void (*)(void))rw_tally, METH_FASTCALL,
     "_tally(inserts, updates, deletes, writes_during_iteration)\n--\n\n"
     "Add a write's counts (made under an exclusive hold) to _tallies()."},
    {"_tallies", rw_tallies, METH_NOARGS,
     "_tallies()\n--\n\n"
     "(hits, misses, reads, inserts, updates, deletes, writes_during_iteration): the "
     "counts of the map behind this lock (exact)."},
    {"_unsampled", rw_unsampled, METH_NOARGS,
     "_unsampled()\n--\n\n"
     "Report no contended wait of this lock to the contention sampler (its owner does)."},
    {"_read_holds_by_current_thread", rw_read_holds_of_current_thread, METH_NOARGS,
     "_read_holds_by_current_thread()\n--\n\n"
     "How many read holds the calling thread has (0 if none)."},
    {"read", (PyCFunction)(void (*)(void))rw_read_cm, METH_FASTCALL | METH_KEYWORDS,
     "read(timeout=None)\n--\n\n"
     "with lock.read(): holds the read lock for the block.\n\n"
     "Raises TimeoutError if timeout expires before the lock is acquired."},
    {"write", (PyCFunction)(void (*)(void))rw_write_cm, METH_FASTCALL | METH_KEYWORDS,
     "write(timeout=None)\n--\n\n"
     "with lock.write(): holds the write lock for the block.\n\n"
     "Raises TimeoutError if timeout expires before the lock is acquired."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RWLock_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.locks._rwlock.RWLockCore",
    .tp_basicsize = sizeof(rw_lock),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The state machine of safemap.RWLock (use safemap.RWLock).",
    .tp_new = rw_new,
    .tp_dealloc = rw_dealloc,
    .tp_repr = rw_repr,
    .tp_methods = rw_methods,
};

/* MutexCore: the re-entrant mutex of LockedMap, the same state machine in
 * exclusive mode (every hold, read or write, excludes every other thread; the
 * owner may take more).  Its owner reports its contended waits itself. */
static PyObject *
mutex_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((args != NULL && PyTuple_GET_SIZE(args) != 0) ||
        (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "MutexCore() takes no arguments");
        return NULL;
    }
    rw_lock *self = (rw_lock *)rw_new(type, args, kwds);
    if (self != NULL) {
        self->exclusive = 1;
        self->sampled = 0;
    }
    return (PyObject *)self;
}

static PyTypeObject Mutex_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.locks._rwlock.MutexCore",
    .tp_basicsize = sizeof(rw_lock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A re-entrant mutex (LockedMap's): RWLockCore's state machine with every hold "
              "exclusive; acquire_read and acquire_write take the same hold.",
    .tp_base = &RWLock_Type,
    .tp_new = mutex_new,
};

/* ---------------------------------------------------------------- module */

static PyMethodDef mod_methods[] = {
    {"_after_fork_in_child", rw_after_fork_in_child, METH_NOARGS,
     "Forget the holds and waiters of threads that do not exist in a fork child."},
    {"_set_contention_sampling", (PyCFunction)(void (*)(void))rw_set_contention_sampling,
     METH_FASTCALL,
     "_set_contention_sampling(every, callback)\n--\n\n"
     "Every `every`-th contended acquisition of any native lock of safemap (RWLock, "
     "the native maps' locks) calls callback(kind, wait_seconds) on the thread that "
     "waited, once it has released the lock; every=0 turns sampling off."},
    {NULL, NULL, 0, NULL},
};

static int
rw_exec(PyObject *module)
{
    if (rw_registry_head.reg_next == NULL) {
        rw_registry_head.reg_prev = rw_registry_head.reg_next = &rw_registry_head;
    }
    static struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&rw_str_acquire_read, "acquire_read"},
        {&rw_str_acquire_write, "acquire_write"},
        {&rw_str_release_read, "release_read"},
        {&rw_str_release_write, "release_write"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL &&
            (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return -1;
        }
    }
    if (rw_str_RWLock == NULL && (rw_str_RWLock = PyUnicode_InternFromString("RWLock")) == NULL) {
        return -1;
    }
    PyObject *capsule = PyCapsule_New(&rw_contention, SM_CONTENTION_CAPSULE, NULL);
    if (capsule == NULL) {
        return -1;
    }
    int added = PyModule_AddObjectRef(module, "_contention", capsule);
    Py_DECREF(capsule);
    if (added < 0) {
        return -1;
    }
    PyTypeObject *types[] = {&RWLock_Type, &RWHold_Type, &Mutex_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return -1;
        }
    }
    if (PyModule_AddObjectRef(module, "RWLockCore", (PyObject *)&RWLock_Type) < 0 ||
        PyModule_AddObjectRef(module, "Hold", (PyObject *)&RWHold_Type) < 0 ||
        PyModule_AddObjectRef(module, "MutexCore", (PyObject *)&Mutex_Type) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot rw_slots[] = {
    {Py_mod_exec, (void *)rw_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef rw_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.locks._rwlock",
    .m_doc = "The state machine of safemap.RWLock, in C (see safemap/locks/rwlock.py).",
    .m_size = 0,
    .m_methods = mod_methods,
    .m_slots = rw_slots,
};

PyMODINIT_FUNC
PyInit__rwlock(void)
{
    return PyModuleDef_Init(&rw_module);
}
