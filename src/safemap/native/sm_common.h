/*
 * sm_common.h -- what both map types share: the protocol objects imported from
 * safemap.protocol, the re-entry bookkeeping, the item buffer used to copy a
 * dict out from under its lock, and the chunked iterator built on it.
 */
#ifndef SAFEMAP_SM_COMMON_H
#define SAFEMAP_SM_COMMON_H

#include "sm_compat.h"
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
 * the iterator raise. */
PyObject *sm_iter_new(PyObject *owner, sm_fill_fn fill, int kind);

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
    X(SMEntry_Type) \
    X(SMSMap_Type) \
    X(SMSyncStorage_Type)

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
