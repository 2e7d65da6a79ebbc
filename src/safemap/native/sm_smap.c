/*
 * sm_smap.c -- SyncMapBase, the native core of safemap.SyncMap.
 *
 * Go's sync.Map, adapted to CPython.  Two dicts map keys to entries:
 *
 *   read   keys that have been promoted.  Looked up with no lock.  The dict
 *          object is fixed for the map's life (a reader never needs a
 *          reference to "the current read map", which on free-threaded builds
 *          could be freed under it); its key set changes only under `mu`,
 *          by promotion (keys added) and deletes (keys removed).
 *   dirty  keys stored since the last promotion; only touched under `mu`.
 *
 * An entry (SMEntry) holds the value pointer.  For a key already in `read`,
 * store / delete / swap / compare-and-swap change the entry in place without
 * the mutex: this is what makes the design read- and update-friendly.  A read
 * that misses `read` while `dirty` has keys takes the mutex, looks in `dirty`,
 * and counts a miss; once misses reach len(dirty), dirty's entries are moved
 * into `read` (promotion), so a key written once and then read often stops
 * costing the mutex -- Go's amortization.  Unlike Go, a delete removes the key
 * from `read` at once (a removed key must not stay referenced after the call),
 * then marks the entry SM_EXPUNGED so that an in-place writer that found it
 * earlier takes the mutex instead of writing to a detached entry.  So every
 * entry in `read` or `dirty` holds a live value whenever `mu` is free, and
 * Go's deleted-entry sweep has nothing to do here.
 *
 * Deviation from Go: Go's dirty map is a full copy of read plus new keys, and
 * promotion swaps the two maps.  Swapping dicts would force readers to hold a
 * reference to the current read dict (a contended reference count on
 * free-threaded builds); instead dirty holds only new keys and promotion adds
 * them to the one read dict, which is cheaper too (O(new keys)).
 *
 * Atomicity, also when Python code runs:
 *  - an entry's value changes only by a pointer swap inside the entry's
 *    critical section (free-threaded builds; on GIL builds the swap runs no
 *    Python code, so the GIL makes it atomic).  Each op's linearization point
 *    is that swap, or its read of the pointer;
 *  - compare_and_swap compares (identity, then ==, which may run Python code)
 *    with no lock, then swaps only if the entry still holds the very object
 *    compared -- retrying otherwise, like Go's CompareAndSwap loop;
 *  - operations that need a value to stay put across Python code (the compute
 *    family, snapshot, transaction, clear, and the locked slow paths) hold
 *    `mu` and set `frozen`: in-place writers check `frozen` inside the same
 *    critical section as their swap and take `mu` instead, so they wait;
 *  - re-entry: a thread holding `mu` (in a callback, a key's __eq__ during a
 *    locked write) that asks for any write gets RecursiveUpdateError; its reads
 *    take `mu` re-entrantly.  Inside transaction(fn) every method raises;
 *  - replaced values are released after `mu` is released.
 *
 * Free-threaded builds: on 3.14+ a read takes its reference to an entry's
 * value with no lock (a try-incref re-checked against the entry; see
 * "Lock-free value reads" below); on 3.13t it takes the entry's critical
 * section for a few instructions.
 */
#include "sm_smap.h"
#include "sm_glue.h"

/* Never dereferenced: its address marks an expunged entry. */
static char sm_expunged_marker;
#define SM_EXPUNGED ((PyObject *)&sm_expunged_marker)
#define LIVE(v) ((v) != NULL && (v) != SM_EXPUNGED)

#if SM_FREE_THREADED
#  define SY_HELD_INC(m) (sm_tls_held++)
#  define SY_HELD_DEC(m) (sm_tls_held--)
#  define SY_REENTRY_POSSIBLE(m) (sm_tls_held != 0)
#else
#  define SY_HELD_INC(m) ((m)->held++)
#  define SY_HELD_DEC(m) ((m)->held--)
#  define SY_REENTRY_POSSIBLE(m) ((m)->held != 0)
#endif

#define MSG_WRITE_REENTRY \
    "cannot write to a SyncMap from inside one of its own compute callbacks " \
    "(or from a key's __eq__/__hash__ during a write to it)"
#define MSG_TXN_REENTRY \
    "cannot call a SyncMap's methods inside its own transaction(); use the view " \
    "passed to the function"

/* ------------------------------------------------------------------ entries */

/* Lock-free value reads (free-threaded CPython 3.14+).  A reader loads the
 * value pointer, takes a reference with PyUnstable_TryIncRef and re-loads the
 * pointer: if the entry still holds the same object, the reference is good;
 * otherwise (a writer replaced it meanwhile) it drops the reference and takes
 * the entry's critical section instead.  This is the protocol of CPython's own
 * dict reads, and it rests on the same two facts: (1) an object freed by
 * another thread stays readable memory (its refcount fields included) until
 * the reading thread reports a quiescent state, which it cannot do between
 * the load and the increment -- nothing there runs Python code, blocks or
 * detaches; a recycled block is caught by the re-load; (2) writers mark each
 * stored object with PyUnstable_EnableTryIncRef (holding a strong reference),
 * without which TryIncRef may fail spuriously -- a failure just takes the
 * locked path.  Writers still serialize in the entry's critical section and
 * publish with a release store.  3.13t has no TryIncRef: it keeps the locked
 * read; GIL builds need neither. */
#if SM_FREE_THREADED && PY_VERSION_HEX >= 0x030E0000
#  define SY_LOCKFREE_READ 1
#else
#  define SY_LOCKFREE_READ 0
#endif

/* Store v (a strong reference the entry takes over, or SM_EXPUNGED) as e's
 * value: in e's critical section, or before e is shared. */
static inline void
entry_publish(SMEntry *e, PyObject *v)
{
#if SY_LOCKFREE_READ
    if (LIVE(v)) {
        PyUnstable_EnableTryIncRef(v);
    }
    _Py_atomic_store_ptr_release(&e->value, v);
#else
    e->value = v;
#endif
}

static SMEntry *
entry_new(PyObject *value)
{
    SMEntry *e = PyObject_GC_New(SMEntry, &SMEntry_Type);
    if (e == NULL) {
        return NULL;
    }
    e->value = NULL;
    entry_publish(e, Py_NewRef(value));
    PyObject_GC_Track(e);
    return e;
}

/* The entry's value (strong) or NULL if deleted/expunged. */
static PyObject *
entry_load(SMEntry *e)
{
    PyObject *v;
#if SY_LOCKFREE_READ
    v = _Py_atomic_load_ptr_acquire(&e->value);
    if (!LIVE(v)) {
        return NULL;
    }
    if (PyUnstable_TryIncRef(v)) {
        if (_Py_atomic_load_ptr_acquire(&e->value) == v) {
            return v;
        }
        Py_DECREF(v);  /* replaced meanwhile: read it under the lock */
    }
#endif
    Py_BEGIN_CRITICAL_SECTION(e);
    v = e->value;
    if (LIVE(v)) {
        Py_INCREF(v);
    }
    else {
        v = NULL;
    }
    Py_END_CRITICAL_SECTION();
    return v;
}

/* Replace the value; returns the previous one (strong; NULL if it was
 * expunged).  v == NULL expunges.  Caller holds mu or has checked frozen. */
static PyObject *
entry_exchange(SMEntry *e, PyObject *v)
{
    PyObject *old;
    Py_BEGIN_CRITICAL_SECTION(e);
    old = e->value;
    entry_publish(e, v ? Py_NewRef(v) : SM_EXPUNGED);
    Py_END_CRITICAL_SECTION();
    return LIVE(old) ? old : NULL;
}

static int
entry_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMEntry *e = (SMEntry *)op;
    if (LIVE(e->value)) {
        Py_VISIT(e->value);
    }
    return 0;
}

static int
entry_clear(PyObject *op)
{
    SMEntry *e = (SMEntry *)op;
    PyObject *v = e->value;
    e->value = NULL;
    if (LIVE(v)) {
        Py_DECREF(v);
    }
    return 0;
}

static void
entry_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    entry_clear(op);
    PyObject_GC_Del(op);
}

SM_DEFINE_TYPE(SMEntry_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.SyncMapEntry",
    .tp_basicsize = sizeof(SMEntry),
    .tp_dealloc = entry_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = entry_traverse,
    .tp_clear = entry_clear,
};

/* ------------------------------------------------------------- bookkeeping */

static inline int
sy_lock(SMSMapObject *m, void *me)
{
    if (sm_lock_counted(&m->mu, &m->mustats, me) < 0) {
        return -1;
    }
    SY_HELD_INC(m);
    return 0;
}

/* Release mu, then report a sampled wait for it (Python code: mu is not
 * re-entrant, so this thread holds nothing of m any more). */
static inline void
sy_unlock(SMSMapObject *m)
{
    SY_HELD_DEC(m);
    int64_t sampled = sm_unlock_counted(&m->mu, &m->mustats);
    if (SM_UNLIKELY(sampled)) {
        sm_report_wait(SM_str_SyncMap, sampled);
    }
}

/* Count writes made under mu (see SMWrites). */
#define SY_WROTE(m, kind, n) SM_WROTE((m)->writes, kind, (n), &(m)->stats)

/* For reads that must consult dirty: take mu unless this thread already holds
 * it (a read from a callback).  *took says whether to sy_unlock afterwards. */
static inline int
sy_lock_for_read(SMSMapObject *m, int *took)
{
    void *me = sm_me();
    if (sm_lock_held_by(&m->mu, me)) {
        *took = 0;
        return 0;
    }
    *took = 1;
    return sy_lock(m, me);
}

/* A plain pop's last dict call (see sy_pop_locked). */
typedef struct {
    PyObject *dict;   /* read or dirty: where the key is deleted */
    Py_ssize_t size;  /* its size before the call */
    SMEntry *e;       /* the key's entry (strong; NULL once completed) */
    int in_read;
    int done;         /* completed: bookkeeping done, mu released */
    PyObject *old;    /* the value removed (strong), or NULL */
} SYFinal;

static void sy_final_complete(SMSMapObject *m, SYFinal *f);

static int
sy_write_reentry_slow(SMSMapObject *m)
{
    void *me = sm_me();
    if (SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    if (sm_lock_held_by(&m->mu, me)) {
        SYFinal *f = (SYFinal *)m->final;
        if (f != NULL && PyDict_GET_SIZE(f->dict) != f->size) {
            /* This thread is in a plain pop whose dict call has removed the
             * key and is now dropping the stored key (whose __del__ asks for
             * this write): finish that pop here, then let the write go on. */
            sy_final_complete(m, f);
            return 0;
        }
        return sm_raise_recursive(MSG_WRITE_REENTRY);
    }
    return 0;
}

static inline int
sy_write_check(SMSMapObject *m)
{
    sm_note_thread((PyObject *)m, &m->shared);
    if (SM_LIKELY(!SY_REENTRY_POSSIBLE(m))) {
        return 0;
    }
    return sy_write_reentry_slow(m);
}

static int
sy_read_slow(SMSMapObject *m)
{
    void *me = sm_me();
    if (SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    if (SM_LOAD_INT(&m->committing) && !sm_lock_held_by(&m->mu, me)) {
        /* Several entries are changing together under mu: wait for it. */
        if (sm_lock_counted(&m->mu, &m->mustats, me) < 0) {
            return -1;
        }
        int64_t sampled = sm_unlock_counted(&m->mu, &m->mustats);
        if (SM_UNLIKELY(sampled)) {
            sm_report_wait(SM_str_SyncMap, sampled);
        }
    }
    return 0;
}

static inline int
sy_read_check(SMSMapObject *m)
{
    sm_note_thread((PyObject *)m, &m->shared);
    if (SM_LIKELY(SM_LOAD_INT(&m->guard) == 0)) {
        return 0;
    }
    return sy_read_slow(m);
}

/* Look key up in d; *e is a strong reference to its entry or NULL. */
static inline int
sy_find(PyObject *d, PyObject *key, Py_hash_t hash, SMEntry **e)
{
    return sm_dict_get(d, key, hash, (PyObject **)e);
}

/* Promote dirty into read (under mu). */
static void
sy_promote_locked(SMSMapObject *m)
{
    if (PyDict_GET_SIZE(m->dirty) == 0) {
        SM_STORE_INT(&m->amended, 0);
        m->misses = 0;
        return;
    }
    /* dirty's keys are not in read, so the update only adds; the entries are
     * shared, so a key is findable through one dict or the other throughout. */
    if (PyDict_Update(m->read, m->dirty) < 0) {
        /* Out of memory or a key's __eq__ raised: keep dirty as it is; the
         * keys that made it into read are in both, with the same entries,
         * which every path tolerates.  The read that triggered us still
         * succeeded, so do not fail it. */
        PyErr_Clear();
        return;
    }
    PyDict_Clear(m->dirty);  /* read holds every entry: nothing is freed */
    SM_STORE_INT(&m->amended, 0);
    m->misses = 0;
    SM_BUMP(&m->promotions, 1);
}

/* Count a read that had to consult dirty; promote once misses reach
 * len(dirty).  `nested`: the read runs inside this thread's own mu section
 * (a key's __eq__ or a callback reading the map).  Such a read never
 * promotes: the section it interrupts may be half-way through a lookup
 * (read searched, dirty being searched), and moving dirty's keys into read
 * under it would make that lookup miss a present key.  Within a mu section
 * the key sets of read and dirty therefore change only by the holder's own
 * steps, whatever a key's __eq__ or a callback does (its writes are refused).
 * The miss still counts: the next top-level miss promotes. */
static void
sy_miss_locked(SMSMapObject *m, int nested)
{
    SM_BUMP(&m->locked_reads, 1);
    if (++m->misses >= PyDict_GET_SIZE(m->dirty) && !nested) {
        sy_promote_locked(m);
    }
}

/* Locate key under mu.  *e: strong ref or NULL; *in_read: where it was
 * (0 also when absent: the lookup went on to dirty, a "miss" in Go's terms).
 * Callers that count misses do so after finishing with dirty, because a miss
 * may promote dirty into read. */
static int
sy_find_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, SMEntry **e, int *in_read,
               int count_miss)
{
    int r = sy_find(m->read, key, hash, e);
    if (r != 0) {
        *in_read = 1;
        return r;
    }
    *in_read = 0;
    if (!m->amended) {
        return 0;
    }
    (void)count_miss;  /* the caller counts the miss once it is done */
    return sy_find(m->dirty, key, hash, e);
}

/* Set key to value under mu; *old gets the previous value (strong) or NULL.
 * fresh: NULL, or an entry made by entry_new(value) before taking mu, which a
 * new key consumes (*fresh set to NULL); the caller drops a leftover after
 * unlocking.  Plain writes pass one: allocating a GC object can run a
 * collection on the spot (3.11), whose finalizers may write to this map, and
 * such a write must land -- it could not while this thread holds mu. */
static int
sy_set_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject *value,
              PyObject **old, SMEntry **fresh)
{
    SMEntry *e;
    int in_read;
    *old = NULL;
    int r = sy_find_locked(m, key, hash, &e, &in_read, 0);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        /* Under mu, an entry found in read or dirty is live (see the top). */
        *old = entry_exchange(e, value);
        Py_DECREF(e);
        if (*old != value) {
            SY_WROTE(m, updates, 1);
        }
        return 0;
    }
    if (fresh != NULL && *fresh != NULL) {
        e = *fresh;
        *fresh = NULL;
    }
    else {
        e = entry_new(value);
        if (e == NULL) {
            return -1;
        }
    }
    r = sm_dict_set(m->dirty, key, (PyObject *)e, hash);
    Py_DECREF(e);
    if (r < 0) {
        return -1;
    }
    SM_STORE_INT(&m->amended, 1);
    SM_ADD_SSIZE(&m->count, 1);
    SY_WROTE(m, inserts, 1);
    return 0;
}

/* Delete key under mu.  1: removed (*old strong), 0: absent, -1: error. */
static int
sy_del_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **old,
              int count_miss)
{
    SMEntry *e;
    int in_read;
    *old = NULL;
    int r = sy_find_locked(m, key, hash, &e, &in_read, count_miss);
    if (r >= 0 && !in_read && count_miss) {
        if (r > 0 && sm_dict_del(m->dirty, key, hash) < 0) {
            Py_DECREF(e);
            return -1;
        }
        sy_miss_locked(m, 0);  /* a delete: never nested (writes are refused) */
    }
    if (r <= 0) {
        return r;
    }
    if (!in_read && !count_miss) {
        if (sm_dict_del(m->dirty, key, hash) < 0) {
            Py_DECREF(e);
            return -1;
        }
    }
    if (!in_read) {
        *old = entry_exchange(e, NULL);
        Py_DECREF(e);
        if (*old == NULL) {
            return 0;
        }
        SM_ADD_SSIZE(&m->count, -1);
        SY_WROTE(m, deletes, 1);
        return 1;
    }
    /* A key of read: it leaves read now (a removed key must be released by
     * the time the call returns; Go would leave it there).  Remove first: if
     * a colliding key's __eq__ raises, nothing has changed and the exception
     * propagates.  Then expunge: an in-place writer that found the entry
     * before the removal takes the mutex (and finds the key absent) instead of
     * writing to a detached entry; one that wrote before the expunge is
     * ordered before this delete, whose result is the value it expunges. */
    if (sm_dict_del(m->read, key, hash) < 0) {
        Py_DECREF(e);
        return -1;
    }
    PyObject *prev;
    Py_BEGIN_CRITICAL_SECTION(e);
    prev = e->value;
    entry_publish(e, SM_EXPUNGED);
    Py_END_CRITICAL_SECTION();
    Py_DECREF(e);
    if (!LIVE(prev)) {
        return 0;
    }
    *old = prev;
    SM_ADD_SSIZE(&m->count, -1);
    SY_WROTE(m, deletes, 1);
    return 1;
}

/* Finish a plain pop after its dict call removed the key: expunge the entry,
 * count, release mu.  Exactly once per f: by sy_pop_locked, or earlier by a
 * write from a __del__ that the dict call runs (sy_write_reentry_slow). */
static void
sy_final_complete(SMSMapObject *m, SYFinal *f)
{
    PyObject *prev;
    f->done = 1;
    m->final = NULL;
    if (f->in_read) {
        /* Expunge: see sy_del_locked. */
        Py_BEGIN_CRITICAL_SECTION(f->e);
        prev = f->e->value;
        entry_publish(f->e, SM_EXPUNGED);
        Py_END_CRITICAL_SECTION();
        if (!LIVE(prev)) {
            prev = NULL;
        }
    }
    else {
        prev = entry_exchange(f->e, NULL);
        sy_miss_locked(m, 0);  /* a dirty hit counts as a miss, after the delete */
    }
    if (prev != NULL) {
        SM_ADD_SSIZE(&m->count, -1);
        SY_WROTE(m, deletes, 1);
    }
    f->old = prev;
    Py_CLEAR(f->e);  /* detached and expunged: freeing it runs no Python code */
    sy_unlock(m);
}

/* The locked part of a plain pop: called holding mu, returns with mu
 * released.  1: removed (*old strong), 0: absent, -1: error.
 *
 * The dict call that removes the key is the write's last step, and it drops
 * the dict's reference to the stored key, whose __del__ may write to this
 * map.  Such a write must land (it is not inside a compute callback), but mu
 * is still held.  So the call is marked (m->final): a write from this thread
 * that finds the dict's size changed (the removal is done; what runs is the
 * release) completes the pop on the spot and proceeds, the same observable
 * order as releasing the key after unlocking.  Before the removal (a key's
 * __eq__ in the lookup) the size is unchanged and re-entry is refused as
 * usual.  Holding mu, nothing else changes read's or dirty's size (nested
 * reads never promote). */
static int
sy_pop_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **old)
{
    SMEntry *e;
    int in_read;
    *old = NULL;
    int r = sy_find_locked(m, key, hash, &e, &in_read, 1);
    if (r <= 0) {
        if (r == 0) {
            sy_miss_locked(m, 0);  /* absent from read and dirty: a miss */
        }
        sy_unlock(m);
        return r;
    }
    SYFinal f = {in_read ? m->read : m->dirty, 0, e, in_read, 0, NULL};
    f.size = PyDict_GET_SIZE(f.dict);
    m->final = &f;
    int rc = sm_dict_del(f.dict, key, hash);
    if (!f.done) {
        if (rc < 0) {  /* an __eq__ raised in the lookup: nothing changed */
            m->final = NULL;
            Py_DECREF(e);
            sy_unlock(m);
            return -1;
        }
        sy_final_complete(m, &f);
    }
    *old = f.old;
    return f.old != NULL;
}

/* Value for key under mu (no miss counted).  1/0/-1, *v strong. */
static int
sy_get_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **v)
{
    SMEntry *e;
    int in_read;
    *v = NULL;
    int r = sy_find_locked(m, key, hash, &e, &in_read, 0);
    if (r <= 0) {
        return r;
    }
    *v = entry_load(e);
    Py_DECREF(e);
    return *v != NULL;
}

/* Begin a section that needs every value stable: take mu, freeze in-place
 * writers.  Returns the previous frozen state for sy_thaw. */
static int
sy_freeze_lock(SMSMapObject *m, int *prev)
{
    if (sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    *prev = m->frozen;
    SM_STORE_INT(&m->frozen, 1);
    return 0;
}

static void
sy_thaw_unlock(SMSMapObject *m, int prev)
{
    SM_STORE_INT(&m->frozen, prev);
    sy_unlock(m);
}

/* ------------------------------------------------------------- operations */

/* Load.  1 found (*v strong), 0 absent, -1 error. */
static int
sy_load_hashed(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **v)
{
    *v = NULL;
    if (sy_read_check(m) < 0) {
        return -1;
    }
    SMEntry *e;
    int r = sy_find(m->read, key, hash, &e);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        *v = entry_load(e);
        Py_DECREF(e);
        return *v != NULL;
    }
    if (!SM_LOAD_INT(&m->amended)) {
        return 0;
    }
    int took, in_read;
    if (sy_lock_for_read(m, &took) < 0) {
        return -1;
    }
    r = sy_find_locked(m, key, hash, &e, &in_read, 1);
    if (r >= 0 && !in_read) {
        sy_miss_locked(m, !took);
    }
    if (took) {
        sy_unlock(m);
    }
    if (r <= 0) {
        return r;
    }
    *v = entry_load(e);
    Py_DECREF(e);
    return *v != NULL;
}

/* A point read (m[k], get, in, load): counted as a hit or a miss.  Inlined
 * into each of them: the call a shared copy costs shows on the read path. */
SM_ALWAYS_INLINE int
sy_load(SMSMapObject *m, PyObject *key, PyObject **v)
{
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        *v = NULL;
        return -1;
    }
    int r = sy_load_hashed(m, key, hash, v);
    if (r > 0) {
        SM_CELL_ADD(m, &m->stats, hits, 1);
    }
    else if (r == 0) {
        SM_CELL_ADD(m, &m->stats, misses, 1);
    }
    return r;
}

/* Swap in value (store/swap).  *old: previous value (strong) or NULL. */
static int
sy_swap_impl(SMSMapObject *m, PyObject *key, PyObject *value, PyObject **old)
{
    *old = NULL;
    if (sm_check_value(value) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1 || sy_write_check(m) < 0) {
        return -1;
    }
    SMEntry *e;
    int r = sy_find(m->read, key, hash, &e);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        /* In place, no mutex -- unless frozen or expunged. */
        int done = 0;
        PyObject *prev = NULL;
        Py_BEGIN_CRITICAL_SECTION(e);
        if (!SM_LOAD_INT(&m->frozen) && e->value != SM_EXPUNGED) {
            prev = e->value;
            entry_publish(e, Py_NewRef(value));
            done = 1;
        }
        Py_END_CRITICAL_SECTION();
        Py_DECREF(e);
        if (done) {
            if (prev != value) {
                /* In place, with no lock: a lock-free counter. */
                SM_CELL_ADD(m, &m->stats, updates, 1);
                if (SM_ITERATING(&m->stats)) {
                    SM_CELL_ADD(m, &m->stats, during_iteration, 1);
                }
            }
            *old = prev;  /* live: an entry is live until expunged */
            return 0;
        }
    }
    SMEntry *fresh = entry_new(value);  /* before mu: see sy_set_locked */
    if (fresh == NULL || sy_lock(m, sm_me()) < 0) {
        Py_XDECREF(fresh);
        return -1;
    }
    r = sy_set_locked(m, key, hash, value, old, &fresh);
    sy_unlock(m);
    Py_XDECREF(fresh);
    return r;
}

/* Delete.  1 removed (*old strong), 0 absent, -1 error.  Takes the mutex:
 * the key must leave read within the call (see sy_del_locked).  A key that is
 * in neither map is answered without it. */
static int
sy_pop_impl(PyObject *op, PyObject *key, PyObject **old)
{
    SMSMapObject *m = (SMSMapObject *)op;
    *old = NULL;
    Py_hash_t hash = sm_hash(key);
    if (hash == -1 || sy_write_check(m) < 0) {
        return -1;
    }
    SMEntry *e;
    int r = sy_find(m->read, key, hash, &e);
    if (r < 0) {
        return -1;
    }
    if (r == 0 && !SM_LOAD_INT(&m->amended)) {
        return 0;  /* linearizes at the lookup: absent */
    }
    Py_XDECREF(e);
    if (sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    return sy_pop_locked(m, key, hash, old);
}

/* load_or_store.  1: loaded (*actual existing), 0: stored (*actual value). */
static int
sy_load_or_store_impl(PyObject *op, PyObject *key, PyObject *value, PyObject **actual)
{
    SMSMapObject *m = (SMSMapObject *)op;
    *actual = NULL;
    if (sm_check_value(value) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1 || sy_write_check(m) < 0) {
        return -1;
    }
    SMEntry *e;
    int r = sy_find(m->read, key, hash, &e);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        PyObject *cur = entry_load(e);  /* NULL: expunged, take mu */
        Py_DECREF(e);
        if (cur != NULL) {
            *actual = cur;
            return 1;
        }
    }
    SMEntry *fresh = entry_new(value);  /* before mu: see sy_set_locked */
    if (fresh == NULL || sy_lock(m, sm_me()) < 0) {
        Py_XDECREF(fresh);
        return -1;
    }
    PyObject *cur;
    r = sy_get_locked(m, key, hash, &cur);
    if (r > 0) {
        *actual = cur;
    }
    else if (r == 0) {
        PyObject *old;
        if (sy_set_locked(m, key, hash, value, &old, &fresh) < 0) {
            r = -1;
        }
        else {
            Py_XDECREF(old);  /* NULL: the key was absent */
            *actual = Py_NewRef(value);
        }
    }
    sy_unlock(m);
    Py_XDECREF(fresh);
    return r;
}

/* compare_and_swap (new != NULL) / compare_and_delete (new == NULL). */
static int
sy_compare_and_impl(PyObject *op, PyObject *key, PyObject *expected, PyObject *new)
{
    SMSMapObject *m = (SMSMapObject *)op;
    if (new != NULL && sm_check_value(new) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1 || sy_write_check(m) < 0) {
        return -1;
    }
    if (sm_is_sentinel(expected)) {
        return 0;  /* never stored, so never equal to a stored value */
    }
    SMEntry *e;
    int r = sy_find(m->read, key, hash, &e);
    if (r < 0) {
        return -1;
    }
    if (r > 0 && new == NULL) {
        /* compare_and_delete removes the key from read: locked path. */
        Py_CLEAR(e);
        r = 0;
    }
    else if (r > 0) {
        /* Go's loop: compare outside any lock, then swap only if the entry
         * still holds the object compared. */
        for (;;) {
            PyObject *cur = entry_load(e);
            if (cur == NULL) {
                break;  /* expunged by a delete: go through mu */
            }
            int eq = PyObject_RichCompareBool(cur, expected, Py_EQ);
            if (eq <= 0) {
                Py_DECREF(cur);
                Py_DECREF(e);
                return eq;
            }
            int res = -1;  /* -1: frozen or expunged, take mu */
            Py_BEGIN_CRITICAL_SECTION(e);
            if (!SM_LOAD_INT(&m->frozen) && e->value != SM_EXPUNGED) {
                if (e->value != cur) {
                    res = 0;  /* changed meanwhile: compare again */
                }
                else {
                    entry_publish(e, Py_NewRef(new));  /* new != NULL: see above */
                    res = 1;
                }
            }
            Py_END_CRITICAL_SECTION();
            if (res == 1) {
                if (cur != new) {
                    SM_CELL_ADD(m, &m->stats, updates, 1);
                    if (SM_ITERATING(&m->stats)) {
                        SM_CELL_ADD(m, &m->stats, during_iteration, 1);
                    }
                }
                Py_DECREF(cur);  /* the entry's reference */
                Py_DECREF(cur);  /* ours */
                Py_DECREF(e);
                return 1;
            }
            Py_DECREF(cur);
            if (res == -1) {
                break;
            }
        }
        Py_DECREF(e);
    }
    else if (!SM_LOAD_INT(&m->amended)) {
        return 0;
    }
    /* Locked path: values frozen while == runs. */
    int prev;
    if (sy_freeze_lock(m, &prev) < 0) {
        return -1;
    }
    PyObject *cur, *old = NULL;
    r = sy_get_locked(m, key, hash, &cur);
    if (r > 0) {
        r = PyObject_RichCompareBool(cur, expected, Py_EQ);
        if (r > 0) {
            if (new != NULL) {
                r = sy_set_locked(m, key, hash, new, &old, NULL) < 0 ? -1 : 1;
            }
            else {
                r = sy_del_locked(m, key, hash, &old, 0) < 0 ? -1 : 1;
            }
        }
    }
    sy_thaw_unlock(m, prev);
    Py_XDECREF(cur);
    Py_XDECREF(old);
    return r;
}

/* The compute family: under mu with in-place writers frozen, so the callback
 * sees a value no one else can change until it returns. */
static PyObject *
sy_compute_impl(PyObject *op, PyObject *key, Py_hash_t hash, PyObject *fn, PyObject *mval,
                int mode)
{
    SMSMapObject *m = (SMSMapObject *)op;
    PyObject *old = NULL;
    if (mode == SM_IF_ABSENT || mode == SM_IF_PRESENT) {
        int r = sm_compute_read_answers(mode, sy_load_hashed(m, key, hash, &old), &old);
        if (r != 0) {
            return r > 0 ? old : NULL;
        }
    }
    if (sy_write_check(m) < 0) {
        return NULL;
    }
    int prev;
    if (sy_freeze_lock(m, &prev) < 0) {
        return NULL;
    }
    PyObject *res = NULL, *result = NULL, *replaced = NULL;
    int r = sy_get_locked(m, key, hash, &old);
    if (r < 0) {
        goto unlock;
    }
    int c = sm_compute_call(mode, key, old, fn, mval, &res);
    if (c <= 0) {
        result = res;  /* no change: the answer, or NULL on error */
        res = NULL;
        goto unlock;
    }
    if (res == SM_DELETE) {
        if (old != NULL && sy_del_locked(m, key, hash, &replaced, 0) < 0) {
            goto unlock;
        }
        result = Py_NewRef(Py_None);
    }
    else {
        if (old != res && sy_set_locked(m, key, hash, res, &replaced, NULL) < 0) {
            goto unlock;
        }
        result = Py_NewRef(res);
    }
unlock:
    sy_thaw_unlock(m, prev);
    Py_XDECREF(old);
    Py_XDECREF(res);
    Py_XDECREF(replaced);
    return result;
}

/* Copy (key, value) of every live entry into out, with values frozen (under
 * mu, re-entrant for a callback's own thread).  Consistent: one instant. */
static int
sy_collect_consistent(SMSMapObject *m, SMBuf *out, int from_storage)
{
    void *me = sm_me();
    if (!from_storage && SM_UNLIKELY(SM_LOAD_INT(&m->guard))
        && SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    int took = !sm_lock_held_by(&m->mu, me);
    if (took && sy_lock(m, me) < 0) {
        return -1;
    }
    int prev = m->frozen;
    SM_STORE_INT(&m->frozen, 1);
    SMBuf raw = {NULL, 0, 0};
    int rc = 0;
    if (sm_buf_collect_dict(&raw, m->read) < 0 || sm_buf_collect_dict(&raw, m->dirty) < 0 ||
        sm_buf_reserve(out, raw.n) < 0) {
        rc = -1;
    }
    else {
        for (Py_ssize_t i = 0; i < raw.n; i += 2) {
            PyObject *v = entry_load((SMEntry *)raw.items[i + 1]);
            if (v != NULL) {
                out->items[out->n++] = Py_NewRef(raw.items[i]);
                out->items[out->n++] = v;
            }
        }
    }
    SM_STORE_INT(&m->frozen, prev);
    if (took) {
        sy_unlock(m);
    }
    sm_buf_clear(&raw);
    return rc;
}

/* ------------------------------------------------------------- slots */

static Py_ssize_t
sy_length(PyObject *op)
{
    SMSMapObject *m = (SMSMapObject *)op;
    if (sy_read_check(m) < 0) {
        return -1;
    }
    return SM_LOAD_SSIZE(&m->count);
}

static PyObject *
sy_subscript(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = sy_load((SMSMapObject *)op, key, &v);
    if (r == 0) {
        sm_key_error(key);
    }
    return r > 0 ? v : NULL;
}

static int
sy_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    SMSMapObject *m = (SMSMapObject *)op;
    PyObject *old;
    int r;
    if (value != NULL) {
        r = sy_swap_impl(m, key, value, &old);
    }
    else {
        r = sy_pop_impl(op, key, &old);
        if (r == 0) {
            sm_key_error(key);
            r = -1;
        }
    }
    Py_XDECREF(old);
    return r < 0 ? -1 : 0;
}

static int
sy_contains(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = sy_load((SMSMapObject *)op, key, &v);
    Py_XDECREF(v);
    return r;
}

static PyObject *
sy_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("get", nargs, 1, 2) < 0) {
        return NULL;
    }
    PyObject *v;
    int r = sy_load((SMSMapObject *)op, args[0], &v);
    if (r != 0) {
        return v;
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *
sy_load_m(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = sy_load((SMSMapObject *)op, key, &v);
    return r < 0 ? NULL : sm_pair(v, r);
}

static PyObject *
sy_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("store", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *old;
    int r = sy_swap_impl((SMSMapObject *)op, args[0], args[1], &old);
    Py_XDECREF(old);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
sy_swap(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("swap", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *old;
    if (sy_swap_impl((SMSMapObject *)op, args[0], args[1], &old) < 0) {
        return NULL;
    }
    return sm_pair(old, old != NULL);
}

static PyObject *
sy_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_pop_method(op, args, nargs, sy_pop_impl);
}

static PyObject *
sy_load_and_delete(PyObject *op, PyObject *key)
{
    return sm_load_and_delete_method(op, key, sy_pop_impl);
}

static PyObject *
sy_delete(PyObject *op, PyObject *key)
{
    return sm_delete_method(op, key, sy_pop_impl);
}

static PyObject *
sy_load_or_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_load_or_store_method(op, args, nargs, sy_load_or_store_impl);
}

static PyObject *
sy_setdefault(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_setdefault_method(op, args, nargs, sy_load_or_store_impl);
}

static PyObject *
sy_compare_and_swap(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compare_and_swap_method(op, args, nargs, sy_compare_and_impl);
}

static PyObject *
sy_compare_and_delete(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compare_and_delete_method(op, args, nargs, sy_compare_and_impl);
}

static PyObject *
sy_compute(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_COMPUTE, sy_compute_impl);
}

static PyObject *
sy_compute_if_absent(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_IF_ABSENT, sy_compute_impl);
}

static PyObject *
sy_compute_if_present(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_IF_PRESENT, sy_compute_impl);
}

static PyObject *
sy_merge(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_MERGE, sy_compute_impl);
}

/* clear(): under mu, frozen, readers held off; every entry of read is
 * expunged (a stale in-place writer cannot revive it), both dicts emptied;
 * everything released after the unlock. */
static PyObject *
sy_clear(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMSMapObject *m = (SMSMapObject *)op;
    if (sy_write_check(m) < 0) {
        return NULL;
    }
    int prev;
    if (sy_freeze_lock(m, &prev) < 0) {
        return NULL;
    }
    SMBuf grave = {NULL, 0, 0};
    Py_ssize_t nread = PyDict_GET_SIZE(m->read);
    if (sm_buf_reserve(&grave, 3 * (nread + PyDict_GET_SIZE(m->dirty))) < 0) {
        sy_thaw_unlock(m, prev);
        return NULL;
    }
    SM_STORE_INT(&m->committing, 1);
    SM_STORE_INT(&m->guard, 1);
    (void)sm_buf_collect_dict(&grave, m->read);   /* space reserved: cannot fail */
    Py_ssize_t end_read = grave.n;
    (void)sm_buf_collect_dict(&grave, m->dirty);
    for (Py_ssize_t i = 0; i < end_read; i += 2) {
        SMEntry *e = (SMEntry *)grave.items[i + 1];
        PyObject *v;
        Py_BEGIN_CRITICAL_SECTION(e);
        v = e->value;
        entry_publish(e, SM_EXPUNGED);
        Py_END_CRITICAL_SECTION();
        if (LIVE(v)) {
            grave.items[grave.n++] = v;  /* the entry's reference, moved */
        }
    }
    PyDict_Clear(m->read);
    PyDict_Clear(m->dirty);
    Py_ssize_t removed = SM_LOAD_SSIZE(&m->count);
    if (removed > 0) {
        SY_WROTE(m, deletes, removed);
    }
    SM_STORE_SSIZE_RELAXED(&m->count, 0);
    m->misses = 0;
    SM_STORE_INT(&m->amended, 0);
    SM_STORE_INT(&m->committing, 0);
    SM_STORE_INT(&m->guard, 0);
    sy_thaw_unlock(m, prev);
    sm_buf_clear(&grave);
    Py_RETURN_NONE;
}

static PyObject *
sy_snapshot(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMBuf buf = {NULL, 0, 0};
    if (sy_collect_consistent((SMSMapObject *)op, &buf, 0) < 0) {
        sm_buf_clear(&buf);
        return NULL;
    }
    return sm_buf_snapshot(&buf);
}

/* Iteration, as Go's Range: promote dirty first (so read has every key), copy
 * read's (key, entry) pairs, then load each value with no lock held. */
static int
sy_fill(PyObject *owner, Py_ssize_t index, SMBuf *buf)
{
    SMSMapObject *m = (SMSMapObject *)owner;
    if (index > 0) {
        return 0;
    }
    if (sy_read_check(m) < 0) {
        return -1;
    }
    SMBuf raw = {NULL, 0, 0};
    int took = 0;
    if (SM_LOAD_INT(&m->amended)) {
        if (sy_lock_for_read(m, &took) < 0) {
            return -1;
        }
        if (took) {
            sy_promote_locked(m);
        }
        else if (sm_buf_collect_dict(&raw, m->dirty) < 0) {  /* our own callback */
            return -1;
        }
    }
    int rc = sm_buf_collect_dict(&raw, m->read);
    if (took) {
        if (rc == 0 && PyDict_GET_SIZE(m->dirty) > 0) {
            rc = sm_buf_collect_dict(&raw, m->dirty);  /* promotion failed */
        }
        sy_unlock(m);
    }
    if (rc == 0 && sm_buf_reserve(buf, buf->n + raw.n) < 0) {
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < raw.n; i += 2) {
        PyObject *v = entry_load((SMEntry *)raw.items[i + 1]);
        if (v != NULL) {
            buf->items[buf->n++] = Py_NewRef(raw.items[i]);
            buf->items[buf->n++] = v;
        }
    }
    sm_buf_clear(&raw);
    return rc < 0 ? -1 : 1;
}

static PyObject *
sy_iter_common(SMSMapObject *m, int kind)
{
    return sm_map_iter((PyObject *)m, &m->guard, &m->txn_owner, MSG_TXN_REENTRY, &m->stats,
                       sy_fill, kind);
}

static PyObject *
sy_iter(PyObject *op)
{
    return sy_iter_common((SMSMapObject *)op, SM_ITER_KEYS);
}

static PyObject *
sy_iter_items(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return sy_iter_common((SMSMapObject *)op, SM_ITER_ITEMS);
}

static PyObject *
sy_sizeof(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMSMapObject *m = (SMSMapObject *)op;
    Py_ssize_t size = Py_TYPE(op)->tp_basicsize;
    PyObject *dicts[2] = {m->read, m->dirty};
    for (int i = 0; i < 2; i++) {
        PyObject *r = PyObject_CallMethod(dicts[i], "__sizeof__", NULL);
        if (r == NULL) {
            return NULL;
        }
        size += PyLong_AsSsize_t(r);
        Py_DECREF(r);
        /* entries, with their GC header */
        size += (PyDict_Size(dicts[i])) * (Py_ssize_t)(sizeof(SMEntry) + 2 * sizeof(void *));
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyLong_FromSsize_t(size);
}

/* _stats_raw(): the counters, read without the mutex (each exact once the
 * operations it races with are done), as a dict whose keys are MapStats
 * field names, plus SyncMap's own: read_size, dirty_size (with the map quiet,
 * read_size + dirty_size == size: no dead entries are kept), locked_reads
 * (point reads that took the mutex), promotions. */
static PyObject *
sy_stats_raw(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMSMapObject *m = (SMSMapObject *)op;
    SMWrites w = {0, 0, 0, 0};
    sm_writes_add(&w, &m->writes);
    PyObject *d = Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n}",
        "size", SM_LOAD_SSIZE(&m->count),
        "read_size", PyDict_Size(m->read),
        "dirty_size", PyDict_Size(m->dirty),
        "locked_reads", SM_LOAD_SSIZE_RELAXED(&m->locked_reads),
        "promotions", SM_LOAD_SSIZE_RELAXED(&m->promotions));
    if (d == NULL) {
        return NULL;
    }
    if (sm_stats_into(d, &w, &m->stats) < 0 || sm_lock_stats_into(d, &m->mustats) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------------ transaction */

/* The transaction's storage (sm_glue.h) reads and writes the map under mu,
 * which the thread running the transaction holds, with every value frozen. */

static int
sy_txn_get(PyObject *map, PyObject *key, Py_hash_t hash, PyObject **v)
{
    return sy_get_locked((SMSMapObject *)map, key, hash, v);
}

static int
sy_txn_set(SMTxnStorage *t, PyObject *key, Py_hash_t hash, PyObject *value)
{
    SMSMapObject *m = (SMSMapObject *)t->map;
    /* Room for the value this write can drop, so that nothing fails once the
     * map has changed. */
    if (sm_grave_reserve(&t->grave, 1) < 0) {
        return -1;
    }
    SM_STORE_INT(&m->committing, 1);
    PyObject *old = NULL;
    int r;
    if (value == NULL) {
        r = sy_del_locked(m, key, hash, &old, 0);
    }
    else {
        r = sy_set_locked(m, key, hash, value, &old, NULL);
        r = r < 0 ? -1 : 1;
    }
    if (old != NULL) {
        sm_grave_push(&t->grave, old);
    }
    return r;
}

static Py_ssize_t
sy_txn_length(PyObject *map)
{
    return SM_LOAD_SSIZE(&((SMSMapObject *)map)->count);
}

static int
sy_txn_collect(PyObject *map, SMBuf *buf)
{
    return sy_collect_consistent((SMSMapObject *)map, buf, 1);
}

static const SMTxnOps sy_txn_ops = {sy_txn_get, sy_txn_set, sy_txn_length, sy_txn_collect};

static PyObject *
sy_txn_begin(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMSMapObject *m = (SMSMapObject *)op;
    if (sy_write_check(m) < 0) {
        return NULL;
    }
    SMTxnStorage *t = sm_txn_new(&SMSyncStorage_Type, op, &m->txn_owner, &sy_txn_ops);
    if (t == NULL) {
        return NULL;
    }
    if (sy_lock(m, sm_me()) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    SM_STORE_INT(&m->frozen, 1);
    sm_txn_open(t);
    SM_STORE_INT(&m->guard, 1);
    return (PyObject *)t;
}

static PyObject *
sy_txn_end(PyObject *op, PyObject *arg)
{
    SMSMapObject *m = (SMSMapObject *)op;
    SMTxnStorage *t = sm_txn_close(&SMSyncStorage_Type, op, arg);
    if (t == NULL) {
        return NULL;
    }
    SM_STORE_INT(&m->committing, 0);
    SM_STORE_INT(&m->guard, 0);
    SM_STORE_INT(&m->frozen, 0);
    sy_unlock(m);
    sm_txn_release(t);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ lifecycle */

static void
sy_after_fork(SMNode *node, void *me)
{
    SMSMapObject *m = (SMSMapObject *)((char *)node - offsetof(SMSMapObject, node));
    int mine = sm_lock_after_fork(&m->mu, me);
#if !SM_FREE_THREADED
    m->held = mine;
#endif
    if (!mine) {
        m->frozen = 0;
        m->txn_owner = NULL;
        m->guard = 0;
        m->committing = 0;
    }
}

static PyObject *
sy_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    SMSMapObject *m = (SMSMapObject *)type->tp_alloc(type, 0);
    if (m == NULL) {
        return NULL;
    }
    m->read = PyDict_New();
    m->dirty = PyDict_New();
    if (m->read == NULL || m->dirty == NULL || sm_stats_init(&m->stats) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    sm_register(&m->node, sy_after_fork);
    return (PyObject *)m;
}

static int
sy_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) > 1) {
        PyErr_Format(PyExc_TypeError, "%.100s expected at most 1 positional argument, got %zd",
                     Py_TYPE(op)->tp_name, PyTuple_GET_SIZE(args));
        return -1;
    }
    PyObject *other = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    int has_kw = kwds != NULL && PyDict_GET_SIZE(kwds) > 0;
    if (other == NULL && !has_kw) {
        return 0;
    }
    if (other != NULL && PyDict_CheckExact(other) && !has_kw) {
        PyObject *pairs = PyDict_Items(other);
        if (pairs == NULL) {
            return -1;
        }
        int rc = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs) && rc == 0; i++) {
            PyObject *kv = PyList_GET_ITEM(pairs, i), *old;
            rc = sy_swap_impl((SMSMapObject *)op, PyTuple_GET_ITEM(kv, 0),
                              PyTuple_GET_ITEM(kv, 1), &old);
            Py_XDECREF(old);
        }
        Py_DECREF(pairs);
        return rc;
    }
    PyObject *callargs = other ? PyTuple_Pack(2, op, other) : PyTuple_Pack(1, op);
    if (callargs == NULL) {
        return -1;
    }
    PyObject *r = PyObject_Call(SM_abc_update, callargs, kwds);
    Py_DECREF(callargs);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
sy_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMSMapObject *m = (SMSMapObject *)op;
    Py_VISIT(m->read);
    Py_VISIT(m->dirty);
    return 0;
}

static int
sy_tp_clear(PyObject *op)
{
    SMSMapObject *m = (SMSMapObject *)op;
    if (m->read != NULL) {
        PyDict_Clear(m->read);
    }
    if (m->dirty != NULL) {
        PyDict_Clear(m->dirty);
    }
    m->count = 0;
    m->amended = 0;
    return 0;
}

static void
sy_dealloc(PyObject *op)
{
    SMSMapObject *m = (SMSMapObject *)op;
    PyObject_GC_UnTrack(op);
    sm_unregister(&m->node);
    if (m->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    Py_CLEAR(m->read);
    Py_CLEAR(m->dirty);
    sm_lock_fini(&m->mu);
    sm_stats_fini(&m->stats);
    Py_TYPE(op)->tp_free(op);
}

static PyMappingMethods sy_as_mapping = {
    .mp_length = sy_length,
    .mp_subscript = sy_subscript,
    .mp_ass_subscript = sy_ass_subscript,
};

static PySequenceMethods sy_as_sequence = {
    .sq_contains = sy_contains,
};

static PyMethodDef sy_methods[] = {
    SM_FASTCALL("get", sy_get, SM_DOC_GET),
    {"load", sy_load_m, METH_O, SM_DOC_LOAD},
    SM_FASTCALL("store", sy_store, SM_DOC_STORE),
    SM_FASTCALL("pop", sy_pop, SM_DOC_POP),
    SM_FASTCALL("setdefault", sy_setdefault, SM_DOC_SETDEFAULT),
    SM_FASTCALL("load_or_store", sy_load_or_store, SM_DOC_LOAD_OR_STORE),
    {"load_and_delete", sy_load_and_delete, METH_O, SM_DOC_LOAD_AND_DELETE},
    {"delete", sy_delete, METH_O, SM_DOC_DELETE},
    SM_FASTCALL("swap", sy_swap, SM_DOC_SWAP),
    SM_FASTCALL("compare_and_swap", sy_compare_and_swap, SM_DOC_COMPARE_AND_SWAP),
    SM_FASTCALL("compare_and_delete", sy_compare_and_delete, SM_DOC_COMPARE_AND_DELETE),
    SM_FASTCALL("compute", sy_compute,
                "compute(key, fn): atomically replace the entry with fn(key, old); runs under "
                "the map's mutex."),
    SM_FASTCALL("compute_if_absent", sy_compute_if_absent, SM_DOC_COMPUTE_IF_ABSENT),
    SM_FASTCALL("compute_if_present", sy_compute_if_present, SM_DOC_COMPUTE_IF_PRESENT),
    SM_FASTCALL("merge", sy_merge, SM_DOC_MERGE),
    {"clear", sy_clear, METH_NOARGS, SM_DOC_CLEAR},
    {"snapshot", sy_snapshot, METH_NOARGS, SM_DOC_SNAPSHOT},
    {"_iter_items", sy_iter_items, METH_NOARGS, SM_DOC_ITER_ITEMS},
    {"__sizeof__", sy_sizeof, METH_NOARGS, "Size in memory, in bytes, entries included."},
    {"_stats_raw", sy_stats_raw, METH_NOARGS,
     "The statistics counters as a dict of MapStats field names, plus read_size, "
     "dirty_size, locked_reads and promotions (see stats())."},
    {"_txn_begin", sy_txn_begin, METH_NOARGS, "Exclude every writer for transaction()."},
    {"_txn_end", sy_txn_end, METH_O, SM_DOC_TXN_END},
    {NULL, NULL, 0, NULL},
};

SM_DEFINE_TYPE(SMSMap_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.SyncMapBase",
    .tp_basicsize = sizeof(SMSMapObject),
    .tp_dealloc = sy_dealloc,
    .tp_as_sequence = &sy_as_sequence,
    .tp_as_mapping = &sy_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Native core of safemap.SyncMap (Go sync.Map design). Use safemap.SyncMap.",
    .tp_traverse = sy_traverse,
    .tp_clear = sy_tp_clear,
    .tp_weaklistoffset = offsetof(SMSMapObject, weakreflist),
    .tp_iter = sy_iter,
    .tp_methods = sy_methods,
    .tp_init = sy_init,
    .tp_alloc = PyType_GenericAlloc,
    .tp_new = sy_new,
    .tp_free = PyObject_GC_Del,
};
