/*
 * sm_common.h -- what both map types share: the protocol objects imported from
 * safemap.protocol, the re-entry bookkeeping, the item buffer used to copy a
 * dict out from under its lock, and the chunked iterator built on it.
 */
#ifndef SAFEMAP_SM_COMMON_H
#define SAFEMAP_SM_COMMON_H

#include "sm_compat.h"
#include "sm_contention.h"
#include "sm_lock.h"

/* Objects from safemap.protocol, set once by the module's exec slot and kept
 * alive by it (the module supports one interpreter; see sm_module.c). */
extern PyObject *SM_RecursiveUpdateError;
extern PyObject *SM_MISSING;
extern PyObject *SM_DELETE;
extern PyObject *SM_FrozenMap_adopt;   /* FrozenMap._adopt (bound classmethod) */
extern PyObject *SM_abc_update;        /* ConcurrentMapping.update (function) */
extern Py_ssize_t SM_default_shards;

/* Free-threaded builds: how many safemap locks the running thread holds, over
 * all maps.  Zero (the common case) proves the thread is not inside one of our
 * critical sections, so re-entry checks cost one thread-local load. */
#if SM_FREE_THREADED
extern SM_THREAD_LOCAL Py_ssize_t sm_tls_held;
#endif

int sm_raise_recursive(const char *what);

/* MISSING and DELETE are never stored as values (a read returning one could not
 * be told from "absent"/"remove").  Two pointer compares on the store path. */
static inline int
sm_is_sentinel(PyObject *v)
{
    return v == SM_MISSING || v == SM_DELETE;
}

/* TypeError for a sentinel v; always -1. */
int sm_raise_sentinel(PyObject *v);

/* 0 if v may be stored, else -1 with TypeError set. */
static inline int
sm_check_value(PyObject *v)
{
    return SM_UNLIKELY(sm_is_sentinel(v)) ? sm_raise_sentinel(v) : 0;
}

/* Every live map is on one list, so that a fork child can release the locks
 * that threads which do not exist in the child held at the fork. */
typedef struct SMNode {
    struct SMNode *prev, *next;
    void (*after_fork)(struct SMNode *node, void *me);
} SMNode;

void sm_register(SMNode *node, void (*after_fork)(SMNode *, void *));
void sm_unregister(SMNode *node);
PyObject *sm_after_fork_child(PyObject *module, PyObject *unused);

/* Give other threads a chance to finish what they are doing (an in-progress
 * mutation seen by an optimistic reader).  Releases the GIL. */
void sm_backoff(int attempt);

/* ------------------------------------------------- shared maps (3.14t) */

/* The map object's own reference count off the hot path.  On free-threaded
 * CPython 3.14+, the first call made on a map by a thread other than the one
 * that created it enables deferred reference counting on the map object
 * (PyUnstable_Object_EnableDeferredRefcount, thread-safe, idempotent): the
 * interpreter then stops counting the references its frames take to the map,
 * which every thread calling `m[k]` would otherwise write to one shared cache
 * line.  The price: such a map is freed by the cyclic garbage collector (at
 * its next collection after the last reference goes), not the moment its
 * reference count drops.  A map used by one thread only is freed at once, as
 * before.  `*shared` is the map's own flag: it keeps the call out of later
 * operations (a relaxed load of a field no one writes again). */
#if SM_FREE_THREADED && PY_VERSION_HEX >= 0x030E0000
void sm_share_slow(PyObject *op, int *shared);
static inline void
sm_note_thread(PyObject *op, int *shared)
{
    if (SM_UNLIKELY(!_Py_IsOwnedByCurrentThread(op))
        && SM_UNLIKELY(!_Py_atomic_load_int_relaxed(shared))) {
        sm_share_slow(op, shared);
    }
}
#else
#  define sm_note_thread(op, shared) ((void)(op), (void)(shared))
#endif

/* ------------------------------------------------------------ statistics */

/* Counters bumped on paths that take no lock: point reads (hits, misses),
 * iterations started, and SyncMap's in-place updates (with the writes among
 * them made while an iteration was in progress).
 *
 * GIL builds: one set, plain increments (the GIL makes them exact).
 * Free-threaded builds: readers must not write a shared cache line, so each
 * map has `sm_nstripes` sets ("stripes"), each on its own cache line; a
 * thread bumps the stripe of its own index (handed out in order, once per
 * thread) with an atomic add, and a snapshot sums the stripes -- Java's
 * LongAdder.  Threads outnumbering the stripes share one, which costs
 * speed, never exactness. */
typedef struct {
    Py_ssize_t hits;
    Py_ssize_t misses;
    Py_ssize_t iterations;
    Py_ssize_t updates;
    Py_ssize_t during_iteration;
} SMCells;

#define SM_LINE 64

#if SM_FREE_THREADED
typedef union {
    SMCells c;
    char pad[((sizeof(SMCells) + SM_LINE - 1) / SM_LINE) * SM_LINE];
} SMStripe;

extern Py_ssize_t sm_nstripes;  /* a power of two: 2 per CPU, in [2, 64] */
/* The calling thread's stripe index + 1 (0: not handed out yet). */
extern SM_THREAD_LOCAL SM_TLS_FAST Py_ssize_t sm_tls_stripe;
Py_ssize_t sm_stripe_assign(void);

static inline Py_ssize_t
sm_stripe(void)
{
    Py_ssize_t s = sm_tls_stripe;
    if (SM_UNLIKELY(s == 0)) {
        s = sm_stripe_assign();
    }
    return (s - 1) & (sm_nstripes - 1);
}
#endif

/* A map's statistics that are not tied to one lock. */
typedef struct {
#if SM_FREE_THREADED
    SMStripe *stripes;    /* sm_nstripes + 1 (the last: the owner's), cache-line
                             aligned */
    SMCells *own;         /* &stripes[sm_nstripes].c */
    void *stripes_alloc;  /* what to free */
#else
    SMCells cells;
#endif
    Py_ssize_t iterating; /* live iterators not yet exhausted (atomic adds) */
} SMStats;

/* 0, or -1 with MemoryError set.  The struct starts zeroed (tp_alloc). */
int sm_stats_init(SMStats *st);
void sm_stats_fini(SMStats *st);
/* The sum of the cells (relaxed reads: exact once the bumps it races with are
 * done). */
void sm_stats_sum(SMStats *st, SMCells *out);

/* SM_NO_STATS (-DSM_NO_STATS) compiles every count, timing and sample away.
 * It exists for benchmarks/bench_stats.py only, which loads such a build
 * beside the normal one to measure what the statistics cost; it is never
 * shipped. */

/* Bump a cell of map m: SM_CELL_ADD(m, &m->stats, hits, 1).  Free-threaded
 * builds: the thread that owns the map object (its creator, in CPython's
 * biased reference counting: ob_tid) bumps a stripe of its own with a relaxed
 * load and store -- only that thread ever writes it, so this is exact and
 * costs what a GIL build pays; every other thread adds atomically to its
 * stripe. */
#if defined(SM_NO_STATS)
#  define SM_CELL_ADD(m, st, field, n) ((void)(m), (void)(st), (void)(n))
#elif SM_FREE_THREADED
#  define SM_CELL_ADD(m, st, field, n) \
       do { \
           if (SM_LIKELY(_Py_IsOwnedByCurrentThread((PyObject *)(m)))) { \
               SM_BUMP(&(st)->own->field, (n)); \
           } \
           else { \
               (void)_Py_atomic_add_ssize(&(st)->stripes[sm_stripe()].c.field, (n)); \
           } \
       } while (0)
#else
#  define SM_CELL_ADD(m, st, field, n) ((void)(m), (void)((st)->cells.field += (n)))
#endif

/* Is an iteration of the map in progress? */
#ifdef SM_NO_STATS
#  define SM_ITERATING(st) ((void)(st), 0)
#else
#  define SM_ITERATING(st) SM_UNLIKELY(SM_LOAD_SSIZE_RELAXED(&(st)->iterating) != 0)
#endif

/* Writes made under a lock, counted by its holder: one set per lock (shard or
 * mutex), so they are exact with relaxed load + store.  A write is counted
 * when it changes the map: an insert (a new key), an update (a present key
 * gets another object) or a delete. */
typedef struct {
    Py_ssize_t inserts;
    Py_ssize_t updates;
    Py_ssize_t deletes;
    Py_ssize_t during_iteration;
} SMWrites;

/* Count n writes of one kind, e.g. sm_wrote(&s->writes, &s->writes.inserts, 1,
 * &m->stats).  Called holding the lock that `w` belongs to. */
static inline void
sm_wrote(SMWrites *w, Py_ssize_t *kind, Py_ssize_t n, SMStats *st)
{
#ifdef SM_NO_STATS
    (void)w, (void)kind, (void)n, (void)st;
    return;
#endif
    SM_BUMP(kind, n);
    if (SM_ITERATING(st)) {
        SM_BUMP(&w->during_iteration, n);
    }
}

#define SM_WROTE(w, kind, n, st) sm_wrote(&(w), &(w).kind, (n), (st))

/* One lock's acquisitions.  `acquisitions`, `wait_ns` and `sampled` are
 * written by the holder only (after acquiring); `contentions` by each thread
 * that finds the lock held, before it waits (atomic add on free-threaded
 * builds), so a blocked waiter shows at once. */
typedef struct {
    Py_ssize_t acquisitions;
    Py_ssize_t contentions;
    int64_t wait_ns;
    int64_t sampled;  /* the holder's wait (ns) + 1 to report at release, or 0 */
} SMLockStats;

/* The process-wide contention sampler (see sm_contention.h). */
extern SMContention *sm_contention;

/* The slow path of sm_lock_counted (sm_common.c). */
int sm_lock_wait(SMLock *lock, SMLockStats *ls, void *me);

/* Take the lock, counting the acquisition; the wait, if the lock is found
 * held, is timed (monotonic clock: the slow path only).  0 or -1 as
 * sm_lock_acquire. */
static inline int
sm_lock_counted(SMLock *lock, SMLockStats *ls, void *me)
{
#ifdef SM_NO_STATS
    int contended;
    (void)ls;
    return sm_lock_acquire(lock, me, &contended);
#endif
    if (SM_LIKELY(sm_lock_try(lock, me))) {
        SM_BUMP(&ls->acquisitions, 1);
        return 0;
    }
    return sm_lock_wait(lock, ls, me);
}

/* Release a lock taken with sm_lock_counted.  Returns the holder's sampled
 * wait (ns + 1) to hand to sm_report_wait once the operation holds no lock
 * of the map any more, or 0 (the common case). */
static inline int64_t
sm_unlock_counted(SMLock *lock, SMLockStats *ls)
{
#ifdef SM_NO_STATS
    (void)ls;
    sm_lock_release(lock);
    return 0;
#endif
    int64_t sampled = ls->sampled;
    if (SM_UNLIKELY(sampled != 0)) {
        ls->sampled = 0;
    }
    sm_lock_release(lock);
    return sampled;
}

/* Report a sampled wait (a non-zero value of sm_unlock_counted).  Runs
 * Python code: call it holding no lock of the map. */
static inline void
sm_report_wait(PyObject *kind, int64_t sampled)
{
    sm_contention->report(kind, sampled - 1);
}

/* The contention kinds reported by this module (interned at init). */
extern PyObject *SM_str_ConcurrentMap;
extern PyObject *SM_str_SyncMap;

/* "get", interned at init: get_or_compute looks up the class's get (sm_glue.c). */
extern PyObject *SM_str_get;

/* d[key] = v (an int).  0 or -1. */
int sm_set_n(PyObject *d, const char *key, Py_ssize_t v);
/* A dict of a lock's counters for _stats_raw: adds lock_acquisitions,
 * lock_contentions and lock_wait_seconds to d.  0 or -1. */
int sm_lock_stats_into(PyObject *d, SMLockStats *ls);
/* sum += w, each counter of w read relaxed (its lock's holder may be writing
 * it): a map's write counters, or a sum over its locks. */
void sm_writes_add(SMWrites *sum, SMWrites *w);
/* Adds the write counters (a sum over locks) and the cells to d.  0 or -1. */
int sm_stats_into(PyObject *d, const SMWrites *w, SMStats *st);

/* ------------------------------------------------------------ item buffer */

/* A growable array of strong references, in (key, value) pairs.  Memory comes
 * from PyMem, which never triggers a garbage collection, so filling a buffer
 * runs no Python code: on GIL builds a fill is atomic. */
typedef struct {
    PyObject **items;
    Py_ssize_t n;    /* slots used (2 per pair) */
    Py_ssize_t cap;  /* slots allocated */
} SMBuf;

int sm_buf_reserve(SMBuf *buf, Py_ssize_t slots);
/* Drop every reference held (may run __del__: call with no lock held). */
void sm_buf_clear(SMBuf *buf);
void sm_buf_free(SMBuf *buf);
/* Append every (key, value) of dict d.  The dict is read under its own
 * critical section on free-threaded builds, so the copy is one consistent
 * state of d; on GIL builds no Python code runs during the copy. */
int sm_buf_collect_dict(SMBuf *buf, PyObject *d);

/* ------------------------------------------------------- chunked iterator */

/* fill(owner, index, buf): copy chunk `index` of owner into buf and return 1,
 * or return 0 when there is no chunk `index`, or -1 with an exception set. */
typedef int (*sm_fill_fn)(PyObject *owner, Py_ssize_t index, SMBuf *buf);

enum { SM_ITER_KEYS = 0, SM_ITER_ITEMS = 1 };

/* A weakly consistent iterator over a map made of chunks (shards): it copies
 * one chunk at a time and yields from the copy with no lock held.  Since a key
 * lives in exactly one chunk for ever, a key present throughout the iteration
 * is in exactly one copy, so it is yielded exactly once; no mutation can make
 * the iterator raise.  It counts an iteration started in `stats` (which must
 * live as long as owner) and is one of `stats->iterating` until it is
 * exhausted or freed. */
PyObject *sm_iter_new(PyObject *owner, SMStats *stats, sm_fill_fn fill, int kind);

/* ------------------------------------------------------------ the types */

/* Every C type of the module, in one list.  The module readies each of them
 * (and exposes them as `_types`) from this list, and a type can only be
 * defined with SM_DEFINE_TYPE, which does not compile for a type missing from
 * the list: a type that is used before it is readied crashes the first
 * gc.get_objects() walk that meets an instance, so forgetting one must be
 * impossible. */
#define SM_TYPES(X) \
    X(SMIter_Type) \
    X(SMTxnStorage_Type) \
    X(SMCMap_Type) \
    X(SMSMap_Type) \
    X(SMSyncStorage_Type) \
    X(SMCacheStorage_Type) \
    X(SMTable_Type) \
    X(SMCNode_Type) \
    X(SMCache_Type) \
    X(SMCached_Type)

#define SM_TYPE_DECLARE_(t) extern PyTypeObject t;
SM_TYPES(SM_TYPE_DECLARE_)
#undef SM_TYPE_DECLARE_

#define SM_TYPE_INDEX_(t) SM_TYPE_INDEX_##t,
enum { SM_TYPES(SM_TYPE_INDEX_) SM_NTYPES };
#undef SM_TYPE_INDEX_

/* SM_DEFINE_TYPE(SMFoo_Type) = {...};  (compile error unless SMFoo_Type is
 * on SM_TYPES) */
#define SM_DEFINE_TYPE(t) \
    enum { SM_LISTED_##t = SM_TYPE_INDEX_##t }; \
    PyTypeObject t

#endif /* SAFEMAP_SM_COMMON_H */
