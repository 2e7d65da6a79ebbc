/*
 * sm_glue.h -- the Python-facing glue the native maps (ConcurrentMap, SyncMap,
 * Cache) share: argument checks and result shapes of the protocol methods,
 * their docstrings, the snapshot and iterator entry points, and the storage a
 * transaction's view reads and commits into.  What a map does under its own
 * locks stays in its file; this file only holds what had the same meaning in
 * each of them.
 */
#ifndef SAFEMAP_SM_GLUE_H
#define SAFEMAP_SM_GLUE_H

#include "sm_common.h"
#include "sm_table.h"

/* ------------------------------------------------------------ arguments */

/* TypeError "NAME expected ..."; always -1. */
int sm_nargs_error(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi);

/* 0 if lo <= nargs <= hi, else -1 with TypeError set.  Inline: get() is a hot
 * path, and the check is two compares. */
static inline int
sm_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (SM_LIKELY(nargs >= lo && nargs <= hi)) {
        return 0;
    }
    return sm_nargs_error(name, nargs, lo, hi);
}

/* KeyError(key), the key wrapped in a tuple so that a tuple key is shown as
 * itself (as dict does). */
void sm_key_error(PyObject *key);

/* (a, flag) for load, load_and_delete, load_or_store and swap.  Steals a;
 * NULL stands for None. */
PyObject *sm_pair(PyObject *a, int flag);

/* ------------------------------------------------------ protocol methods */

/* A point read as get() reads and counts it.  1: present (*out strong), 0:
 * absent, -1: error. */
typedef int (*sm_read_fn)(PyObject *map, PyObject *key, PyObject **out);

/* get_or_compute(key, loader, *, timeout=None), the protocol's method (see
 * sm_glue.c): a present key is one `read`; a miss, and every call on a map
 * whose class overrides `get` (the method the map defines is `own_get`), go
 * to the single flight in Python (safemap.protocol.singleflight).  `counted`:
 * each load is counted (the map's `_count_load`). */
PyObject *sm_get_or_compute_method(PyObject *map, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames, sm_read_fn read, PyCFunction own_get,
                                   int counted);

/* The methods whose argument handling and result shape are the same in every
 * map, written once over the map's own operation.  Inline: in the map's
 * method the operation is a constant, so the call to it is direct (merge is
 * a counter's hot path). */

/* Remove key.  1: removed (*old strong), 0: absent (*old NULL), -1: error. */
typedef int (*sm_pop_fn)(PyObject *map, PyObject *key, PyObject **old);

/* Store value unless key is present.  1: present (*actual strong: its value),
 * 0: stored (*actual strong: value), -1: error. */
typedef int (*sm_load_or_store_fn)(PyObject *map, PyObject *key, PyObject *value,
                                   PyObject **actual);

/* compare_and_swap (new != NULL) and compare_and_delete (new == NULL).
 * 1: done, 0: not (absent, or a value not equal to expected), -1: error. */
typedef int (*sm_compare_fn)(PyObject *map, PyObject *key, PyObject *expected, PyObject *new);

/* The compute family: compute(key, fn), compute_if_absent(key, factory),
 * compute_if_present(key, fn) and merge(key, value, fn). */
enum { SM_COMPUTE, SM_IF_ABSENT, SM_IF_PRESENT, SM_MERGE };
/* The map's compute: key with its hash, fn and, for merge, mval (NULL
 * otherwise; checked not to be a sentinel); returns the method's result (new
 * reference) or NULL. */
typedef PyObject *(*sm_compute_fn)(PyObject *map, PyObject *key, Py_hash_t hash, PyObject *fn,
                                   PyObject *mval, int mode);

/* Inside a map's compute, holding its write lock, with old the key's value
 * (NULL: absent): runs the callback the mode asks for.
 *   1: *res (strong) is the new value, or SM_DELETE for "remove"
 *      (never SM_MISSING: that raises);
 *   0: nothing changes; *res (strong) is the method's result;
 *  -1: error (*res NULL). */
static inline int sm_compute_call(int mode, PyObject *key, PyObject *old, PyObject *fn,
                                  PyObject *mval, PyObject **res);

/* pop(key[, default]), load_and_delete(key), delete(key) over pop;
 * compare_and_swap(key, old, new), compare_and_delete(key, old) over cmp;
 * the compute family's method of mode over compute. */
static inline PyObject *
sm_pop_method(PyObject *map, PyObject *const *args, Py_ssize_t nargs, sm_pop_fn pop)
{
    if (sm_nargs("pop", nargs, 1, 2) < 0) {
        return NULL;
    }
    PyObject *old;
    int r = pop(map, args[0], &old);
    if (r > 0) {
        return old;
    }
    if (r < 0) {
        return NULL;
    }
    if (nargs == 2) {
        return Py_NewRef(args[1]);
    }
    sm_key_error(args[0]);
    return NULL;
}

static inline PyObject *
sm_load_and_delete_method(PyObject *map, PyObject *key, sm_pop_fn pop)
{
    PyObject *old;
    int r = pop(map, key, &old);
    return r < 0 ? NULL : sm_pair(old, r);
}

static inline PyObject *
sm_delete_method(PyObject *map, PyObject *key, sm_pop_fn pop)
{
    PyObject *old;
    int r = pop(map, key, &old);
    Py_XDECREF(old);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* load_or_store(key, value) */
static inline PyObject *
sm_load_or_store_method(PyObject *map, PyObject *const *args, Py_ssize_t nargs,
                        sm_load_or_store_fn los)
{
    if (sm_nargs("load_or_store", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *actual;
    int r = los(map, args[0], args[1], &actual);
    return r < 0 ? NULL : sm_pair(actual, r);
}

/* setdefault(key, default=None, /) */
static inline PyObject *
sm_setdefault_method(PyObject *map, PyObject *const *args, Py_ssize_t nargs,
                     sm_load_or_store_fn los)
{
    if (sm_nargs("setdefault", nargs, 1, 2) < 0) {
        return NULL;
    }
    PyObject *actual;
    int r = los(map, args[0], nargs == 2 ? args[1] : Py_None, &actual);
    return r < 0 ? NULL : actual;
}

static inline PyObject *
sm_compare_and_swap_method(PyObject *map, PyObject *const *args, Py_ssize_t nargs,
                           sm_compare_fn cmp)
{
    if (sm_nargs("compare_and_swap", nargs, 3, 3) < 0) {
        return NULL;
    }
    int r = cmp(map, args[0], args[1], args[2]);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static inline PyObject *
sm_compare_and_delete_method(PyObject *map, PyObject *const *args, Py_ssize_t nargs,
                             sm_compare_fn cmp)
{
    if (sm_nargs("compare_and_delete", nargs, 2, 2) < 0) {
        return NULL;
    }
    int r = cmp(map, args[0], args[1], NULL);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static inline PyObject *
sm_compute_method(PyObject *map, PyObject *const *args, Py_ssize_t nargs, int mode,
                  sm_compute_fn compute)
{
    static const char *const names[] = {"compute", "compute_if_absent", "compute_if_present",
                                        "merge"};
    Py_ssize_t want = mode == SM_MERGE ? 3 : 2;
    if (sm_nargs(names[mode], nargs, want, want) < 0) {
        return NULL;
    }
    /* merge(key, value, fn); the others (key, fn) */
    PyObject *fn = mode == SM_MERGE ? args[2] : args[1];
    PyObject *mval = mode == SM_MERGE ? args[1] : NULL;
    if (mval != NULL && sm_check_value(mval) < 0) {
        return NULL;
    }
    Py_hash_t hash = sm_hash(args[0]);
    if (hash == -1) {
        return NULL;
    }
    return compute(map, args[0], hash, fn, mval, mode);
}

/* compute_if_absent and compute_if_present answer from a lock-free read when
 * it decides: a present key for the first, an absent one for the second.  r
 * is the read's result (1: found, *v strong; 0: absent; -1: error).
 * 1: *v is the answer (strong); 0: go on under the lock (*v cleared);
 * -1: error. */
static inline int
sm_compute_read_answers(int mode, int r, PyObject **v)
{
    if (r < 0) {
        return -1;
    }
    if (r == 1 && mode == SM_IF_ABSENT) {
        return 1;
    }
    if (r == 0 && mode == SM_IF_PRESENT) {
        *v = Py_NewRef(Py_None);
        return 1;
    }
    Py_CLEAR(*v);
    return 0;
}

static inline int
sm_compute_call(int mode, PyObject *key, PyObject *old, PyObject *fn, PyObject *mval,
                PyObject **res)
{
    PyObject *args[2];
    switch (mode) {
    case SM_COMPUTE:
        args[0] = key;
        args[1] = old ? old : SM_MISSING;
        *res = PyObject_Vectorcall(fn, args, 2, NULL);
        break;
    case SM_IF_ABSENT:
        if (old != NULL) {
            *res = Py_NewRef(old);  /* another thread won the race */
            return 0;
        }
        args[0] = key;
        *res = PyObject_Vectorcall(fn, args, 1, NULL);
        break;
    case SM_IF_PRESENT:
        if (old == NULL) {
            *res = Py_NewRef(Py_None);
            return 0;
        }
        args[0] = key;
        args[1] = old;
        *res = PyObject_Vectorcall(fn, args, 2, NULL);
        break;
    default: /* SM_MERGE */
        if (old == NULL) {
            *res = Py_NewRef(mval);
        }
        else {
            args[0] = old;
            args[1] = mval;
            *res = PyObject_Vectorcall(fn, args, 2, NULL);
        }
        break;
    }
    if (*res == NULL) {
        return -1;
    }
    if (SM_UNLIKELY(*res == SM_MISSING)) {  /* DELETE means "remove" */
        sm_raise_sentinel(*res);
        Py_CLEAR(*res);
        return -1;
    }
    return 1;
}

/* A METH_FASTCALL entry of a method table. */
#define SM_FASTCALL(name, fn, doc) \
    {name, (PyCFunction)(void (*)(void))fn, METH_FASTCALL, doc}

/* ------------------------------------------------------------ docstrings */

/* The protocol methods' docstrings, where every native map means the same.
 * A map whose guarantee differs (where compute's fn runs, what clear does to
 * a Cache) writes its own next to its method table. */
#define SM_DOC_GET "get(key, default=None, /): the value for key, else default."
#define SM_DOC_LOAD "load(key): (value, True) if present, else (None, False)."
#define SM_DOC_GET_OR_COMPUTE \
    "get_or_compute(key, loader, *, timeout=None): the value of key; if absent, " \
    "loader(key), run once however many threads ask, stored and returned " \
    "(ConcurrentMapping.get_or_compute). A present key costs one get()."
#define SM_DOC_STORE "store(key, value): set key to value."
#define SM_DOC_POP "pop(key[, default]): remove key and return its value."
#define SM_DOC_SETDEFAULT \
    "setdefault(key, default=None, /): the value for key, storing default first " \
    "if absent (atomic)."
#define SM_DOC_LOAD_OR_STORE \
    "load_or_store(key, value): (existing, True), or store value and return " \
    "(value, False)."
#define SM_DOC_LOAD_AND_DELETE \
    "load_and_delete(key): remove key; (value, True), or (None, False) if absent."
#define SM_DOC_DELETE "delete(key): remove key if present."
#define SM_DOC_SWAP \
    "swap(key, value): store value; (previous, True), or (None, False) if absent."
#define SM_DOC_COMPARE_AND_SWAP \
    "compare_and_swap(key, old, new): store new only if key holds a value equal " \
    "to old (identity, then ==); returns whether it did."
#define SM_DOC_COMPARE_AND_DELETE \
    "compare_and_delete(key, old): remove key only if it holds a value equal to " \
    "old; returns whether it did."
#define SM_DOC_COMPUTE_IF_ABSENT \
    "compute_if_absent(key, factory): the value for key, storing factory(key) " \
    "first if absent; factory runs at most once per absent key."
#define SM_DOC_COMPUTE_IF_PRESENT \
    "compute_if_present(key, fn): if present, replace the value with fn(key, old)."
#define SM_DOC_MERGE \
    "merge(key, value, fn): store value if absent, else fn(old, value) " \
    "(DELETE removes); returns the new value or None."
#define SM_DOC_CLEAR "clear(): remove every entry, atomically."
#define SM_DOC_SNAPSHOT "snapshot(): a FrozenMap equal to the map's contents at one instant."
#define SM_DOC_ITER_ITEMS \
    "Weakly consistent (key, value) iterator; holds no lock while the consumer runs."
#define SM_DOC_OPTIONS "The options that rebuild a map like this one."
#define SM_DOC_STATS_RAW \
    "The statistics counters as a dict of MapStats field names (see stats())."
#define SM_DOC_TRANSACT \
    "_transact(runner, fn): runner(storage, fn) holding the map's locks for transaction()."

/* ------------------------------------------------------ snapshot, iterator */

/* A dict of the (key, value) pairs in buf.  Empties buf whatever happens. */
PyObject *sm_buf_to_dict(SMBuf *buf);
/* snapshot(): a FrozenMap of the (key, value) pairs in buf (a consistent copy
 * the caller made).  Empties buf whatever happens. */
PyObject *sm_buf_snapshot(SMBuf *buf);

/* iter(m) and m._iter_items(): raises RecursiveUpdateError(txn_msg) if the
 * calling thread is running m's transaction (its view is the way in), else a
 * chunked iterator (sm_iter_new) over m. */
PyObject *sm_map_iter(PyObject *m, int *guard, void **txn_owner, const char *txn_msg,
                      SMStats *stats, sm_fill_fn fill, int kind);

/* ------------------------------------------------------------ transaction */

/* The storage a transaction's view reads and commits into: the map itself,
 * reachable only by the thread that runs the transaction, while it holds the
 * map's write locks.  One type for every map; what a map does under the
 * transaction is its SMTxnOps.  Each operation is called after the storage is
 * checked (open, the calling thread owns the transaction) with the key's
 * hash computed. */
typedef struct SMTxnStorage SMTxnStorage;

typedef struct {
    /* 1: found (*v strong), 0: absent, -1: error. */
    int (*get)(PyObject *map, PyObject *key, Py_hash_t hash, PyObject **v);
    /* Store (value != NULL) or delete (value == NULL).  1: done, 0: a delete
     * of an absent key (the storage raises KeyError), -1: error.  What the
     * write drops goes to t->grave (sm_txn_grave), released after the locks:
     * the map calls sm_txn_release in its _txn_end. */
    int (*set)(SMTxnStorage *t, PyObject *key, Py_hash_t hash, PyObject *value);
    Py_ssize_t (*length)(PyObject *map);
    /* Append every (key, value) to buf.  0 or -1. */
    int (*collect)(PyObject *map, SMBuf *buf);
} SMTxnOps;

struct SMTxnStorage {
    PyObject_HEAD
    PyObject *map;
    void **owner;           /* &map->txn_owner */
    const SMTxnOps *ops;
    int open;
    SMGrave grave;          /* what the commit dropped: released after the locks */
};

/* A closed storage of type `type` (one of the storage types below) for map
 * (whose transaction owner field is *owner), or NULL with an exception set.
 * The map takes its locks, then sm_txn_open. */
SMTxnStorage *sm_txn_new(PyTypeObject *type, PyObject *map, void **owner,
                         const SMTxnOps *ops);
/* The calling thread now runs the transaction on t->map. */
void sm_txn_open(SMTxnStorage *t);
/* _txn_begin(): sm_txn_new, then lock(map) (the map's write locks: 0, or -1
 * with an exception set and nothing held), then sm_txn_open, and *guard set
 * (the map's methods check it).  The storage is allocated before the locks
 * are taken: an allocation can run the garbage collector, and so finalizers.
 * The new storage, or NULL with an exception set (nothing held). */
PyObject *sm_txn_begin(PyTypeObject *type, PyObject *map, void **owner, int *guard,
                       const SMTxnOps *ops, int (*lock)(PyObject *map));
/* _txn_end(storage): arg checked to be map's open storage (of type `type`),
 * owned by the calling thread; closes it and clears the owner.  NULL with an
 * exception set if not.  The map then releases its locks and calls
 * sm_txn_release. */
SMTxnStorage *sm_txn_close(PyTypeObject *type, PyObject *map, PyObject *arg);
/* Release what the commit dropped (call holding no lock of the map). */
void sm_txn_release(SMTxnStorage *t);
/* _transact(runner, fn), a map's transaction in one C call: begin(map) takes
 * the locks and returns the storage, runner(storage, fn) runs the transaction,
 * and end(map, storage) releases the locks whatever runner did; runner's
 * result, or its exception.  One call because Python code that called begin
 * and end itself could not make sure end runs: the interpreter runs signal
 * handlers after each call, so an exception a handler raises (Ctrl-C) as
 * begin returns would leave every lock held for good. */
PyObject *sm_txn_run(PyObject *map, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *(*begin)(PyObject *map, PyObject *unused),
                     PyObject *(*end)(PyObject *map, PyObject *storage));

#endif /* SAFEMAP_SM_GLUE_H */
