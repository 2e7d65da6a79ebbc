/*
 * sm_table.c -- the hash table of a ConcurrentMap shard or of SyncMap's read
 * and dirty (design: sm_table.h).
 *
 * Invariants:
 *   - Only the shard lock's holder writes a table or the shard's `table`
 *     pointer.  An insert fills the next unused entry and then stores the
 *     index slot that points to it; a removal stores DKIX-style "removed"
 *     in the index slot, then clears the entry's key and value.  Entries
 *     are never reused within a table, so a reader that still sees an
 *     entry's key sees that key's current value or restarts.  Keys never
 *     move within a table: a key present throughout a scan of one table is
 *     met exactly once.  (SyncMap's read: a value is also swapped in place,
 *     sm_tb_loc_exchange, by a writer holding the map's `wmu` instead of its
 *     mutex; the mutex holder takes `wmu` around its own changes, so the
 *     two never write the table at once.)
 *   - A table that has been replaced (grown, rebuilt, cleared) is never
 *     written again; its entries still point at objects that the current
 *     table (or nobody) owns, so readers re-check the shard's table pointer
 *     after taking a reference.
 *   - Nothing is released under the shard lock: dropped keys, values and
 *     tables go to an SMGrave, released by the writer after unlocking.
 *   - Free-threaded 3.14+: plain keys (tag SM_TB_PLAIN) and tables are
 *     released through _PyObject_XDecRefDelayed (QSBR: the decrement happens
 *     once every thread has passed a quiescent state, and a reader passes
 *     none between loading a pointer and finishing its comparison).  This is
 *     the basis of comparing plain keys without a reference and of probing a
 *     table that a writer has just replaced.  Values and other keys are taken
 *     with PyUnstable_TryIncRef and a re-check of the slot and the table
 *     pointer, CPython's dict protocol, which relies on freed object memory
 *     staying readable until the reader's next quiescent state.
 */
#include "sm_table.h"
#include <string.h>

#if SM_TB_LOCKFREE
/* Exported by libpython (PyAPI_FUNC) but declared only in an internal header:
 * decrefs obj once every thread has passed a quiescent state (QSBR). */
PyAPI_FUNC(void) _PyObject_XDecRefDelayed(PyObject *obj);
#  define TB_LOAD(p) _Py_atomic_load_ptr_acquire((void *)(p))
#  define TB_STORE(p, v) _Py_atomic_store_ptr_release((void *)(p), (void *)(v))
#  define TB_LOAD_HASH(p) _Py_atomic_load_ssize_relaxed(p)
#  define TB_STORE_HASH(p, v) _Py_atomic_store_ssize_relaxed((p), (v))
#else
#  define TB_LOAD(p) (*(p))
#  define TB_STORE(p, v) (*(p) = (v))
#  define TB_LOAD_HASH(p) (*(p))
#  define TB_STORE_HASH(p, v) (*(p) = (v))
#endif

#if SM_TB_RMUTEX
#  define TB_RLOCK(r) PyMutex_Lock(&(r)->rmu)
#  define TB_RUNLOCK(r) PyMutex_Unlock(&(r)->rmu)
#else
#  define TB_RLOCK(r) ((void)(r))
#  define TB_RUNLOCK(r) ((void)(r))
#endif
/* Writers hold the shard lock; on 3.13t they also take rmu around a change. */
#define TB_WLOCK(r) TB_RLOCK(r)
#define TB_WUNLOCK(r) TB_RUNLOCK(r)

#if SM_TB_LOCKFREE
#  define IX_LOAD(p) _Py_atomic_load_int32(p)
#  define IX_STORE(p, v) _Py_atomic_store_int32((p), (v))
#else
#  define IX_LOAD(p) (*(p))
#  define IX_STORE(p, v) (*(p) = (v))
#endif
#define IX_EMPTY (-1)
#define IX_REMOVED (-2)

#define TB_PERTURB_SHIFT 5
#define TB_MINSIZE 8
/* Restarts of a lock-free read before it asks for the locked read. */
#define TB_MAX_RESTARTS 16

/* ------------------------------------------------------------ the object */

static void
tb_dealloc(PyObject *op)
{
    /* The slots' references belong to whoever moved them out: nothing to
     * release but the memory. */
    Py_TYPE(op)->tp_free(op);
}

SM_DEFINE_TYPE(SMTable_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.Table",
    .tp_basicsize = offsetof(SMTable, indices),
    .tp_itemsize = 1,
    .tp_dealloc = tb_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Storage of a ConcurrentMap shard or a SyncMap table (internal).",
};

/* A table of cap index slots (a power of two) and 2/3 as many entries, all
 * empty; NULL with MemoryError set. */
static SMTable *
tb_new(Py_ssize_t cap)
{
    Py_ssize_t usable = (cap << 1) / 3;
    if (cap > ((Py_ssize_t)1 << 31)) {  /* entry numbers must fit an int32 */
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t ibytes = cap * (Py_ssize_t)sizeof(int32_t);
    Py_ssize_t ebytes = usable * (Py_ssize_t)sizeof(SMSlot);
    SMTable *t = PyObject_NewVar(SMTable, &SMTable_Type, ibytes + ebytes);
    if (t == NULL) {
        return NULL;
    }
    t->mask = cap - 1;
    t->usable = usable;
    t->nentries = 0;
    t->used = 0;
    t->entries = (SMSlot *)((char *)t->indices + ibytes);  /* 8-aligned: cap >= 8 */
    memset(t->indices, 0xff, (size_t)ibytes);  /* IX_EMPTY */
    memset(t->entries, 0, (size_t)ebytes);
    return t;
}

static inline Py_ssize_t
tb_bytes(SMTable *t)
{
    return (Py_ssize_t)offsetof(SMTable, indices) + Py_SIZE(t);
}

/* ------------------------------------------------------------ the grave */

int
sm_grave_reserve(SMGrave *g, Py_ssize_t extra)
{
    if (g->n + extra <= g->cap) {
        return 0;
    }
    Py_ssize_t cap = g->cap * 2;
    while (cap < g->n + extra) {
        cap *= 2;
    }
    PyObject **items = PyMem_Malloc((size_t)cap * sizeof(PyObject *));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(items, g->items, (size_t)g->n * sizeof(PyObject *));
    if (g->items != g->inline_items) {
        PyMem_Free(g->items);
    }
    g->items = items;
    g->cap = cap;
    return 0;
}

static inline void
tb_release(PyObject *tagged)
{
    PyObject *o = sm_tb_untag(tagged);
#if SM_TB_LOCKFREE
    if ((uintptr_t)tagged & SM_TB_PLAIN) {
        _PyObject_XDecRefDelayed(o);
        return;
    }
#endif
    Py_DECREF(o);
}

void
sm_grave_release(SMGrave *g)
{
    /* Detach first: a __del__ run below sees an empty grave. */
    PyObject **items = g->items;
    Py_ssize_t n = g->n;
    SM_GRAVE_INIT(g);
    for (Py_ssize_t i = 0; i < n; i++) {
        tb_release(items[i]);
    }
    if (items != g->inline_items) {
        PyMem_Free(items);
    }
}

int
sm_grave_traverse(SMGrave *g, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < g->n; i++) {
        Py_VISIT(sm_tb_untag(g->items[i]));
    }
    return 0;
}

/* ------------------------------------------------------------ plain keys */

/* Exact str, int, bytes, or a tuple of plain objects: immutable, compared
 * here in C with the semantics of their ==. */
static int
tb_plain(PyObject *o, int depth)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == &PyUnicode_Type || tp == &PyLong_Type || tp == &PyBytes_Type) {
        return 1;
    }
    if (tp == &PyTuple_Type && depth < 8) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o); i++) {
            if (!tb_plain(PyTuple_GET_ITEM(o, i), depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

/* a == b for plain a and b: 1, 0, or -1 with an exception set.  Reads a
 * without touching its reference count. */
static int
tb_plain_eq(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    PyTypeObject *tp = Py_TYPE(a);
    if (tp != Py_TYPE(b)) {
        return 0;  /* str, int, bytes and tuple never compare equal across types */
    }
    if (tp == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(a);
        int kind = PyUnicode_KIND(a);
        return n == PyUnicode_GET_LENGTH(b) && kind == (int)PyUnicode_KIND(b)
               && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * (size_t)kind) == 0;
    }
    if (tp == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(a);
        return n == PyBytes_GET_SIZE(b)
               && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)n) == 0;
    }
    if (tp == &PyLong_Type) {
#if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)a)
            && PyUnstable_Long_IsCompact((PyLongObject *)b)) {
            return PyUnstable_Long_CompactValue((PyLongObject *)a)
                   == PyUnstable_Long_CompactValue((PyLongObject *)b);
        }
#else
        /* 3.11: sign and length in ob_size, then the digits. */
        Py_ssize_t size = Py_SIZE(a);
        if (size != Py_SIZE(b)) {
            return 0;
        }
        size_t nd = (size_t)(size < 0 ? -size : size);
        return memcmp(((PyLongObject *)a)->ob_digit, ((PyLongObject *)b)->ob_digit,
                      nd * sizeof(digit)) == 0;
#endif
        /* int's own comparison: C code that returns a bool. */
        PyObject *res = PyLong_Type.tp_richcompare(a, b, Py_EQ);
        if (res == NULL) {
            return -1;
        }
        int eq = res == Py_True;
        Py_DECREF(res);
        return eq;
    }
    /* tuple */
    Py_ssize_t n = PyTuple_GET_SIZE(a);
    if (n != PyTuple_GET_SIZE(b)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int eq = tb_plain_eq(PyTuple_GET_ITEM(a, i), PyTuple_GET_ITEM(b, i));
        if (eq <= 0) {
            return eq;
        }
    }
    return 1;
}

/* ------------------------------------------------------------ reads */

enum { TB_NE = 0, TB_EQ = 1, TB_ERR = -1, TB_RESTART = 2 };

/* References a lock-free reader took for a key's __eq__ (free-threaded
 * 3.14+).  They are dropped only where the reader next re-checks its table
 * (before the next __eq__, at a restart) or has finished: dropping the last
 * one can run a __del__, which passes a quiescent state, after which nothing
 * loaded before may be used unchecked. */
typedef struct {
    PyObject *key;
    SMTable *table;
} TBHeld;

static inline void
tb_held_drop(TBHeld *h)
{
    PyObject *k = h->key;
    SMTable *t = h->table;
    h->key = NULL;
    h->table = NULL;
    Py_XDECREF(k);
    Py_XDECREF(t);
}

/* Compare the key of entry ep (tagged tk, hash equal, not the same object)
 * with key by calling __eq__ holding references to it and to t; lock-free
 * reader.  TB_EQ / TB_NE: the entry and table did not change (3.13t: rmu
 * held again); TB_ERR, TB_RESTART: rmu not held. */
static int
tb_compare_slow(SMTableRef *r, SMTable *t, SMSlot *ep, PyObject *tk, PyObject *key,
                TBHeld *held)
{
    PyObject *k = sm_tb_untag(tk);
#if SM_TB_LOCKFREE
    if (!PyUnstable_TryIncRef(k)) {
        return TB_RESTART;  /* dying: the entry has changed */
    }
    if (TB_LOAD(&ep->key) != tk) {
        Py_DECREF(k);
        return TB_RESTART;
    }
    /* No quiescent state since t was loaded or last re-checked: the table is
     * alive (its release is delayed), so a plain increment is safe. */
    Py_INCREF(t);
    tb_held_drop(held);  /* the previous comparison's: t is held now */
    held->key = k;
    held->table = t;
    int cmp = PyObject_RichCompareBool(k, key, Py_EQ);
    if (TB_LOAD(&r->table) == t && TB_LOAD(&ep->key) == tk) {
        return cmp < 0 ? TB_ERR : cmp ? TB_EQ : TB_NE;
    }
    return cmp < 0 ? TB_ERR : TB_RESTART;
#else
    (void)held;
    Py_INCREF(k);
    Py_INCREF(t);
    TB_RUNLOCK(r);
    int cmp = PyObject_RichCompareBool(k, key, Py_EQ);
    TB_RLOCK(r);
    int same = TB_LOAD(&r->table) == t && TB_LOAD(&ep->key) == tk;
    if (same && cmp >= 0) {
        /* The table still holds k and the shard t, and no writer can run
         * before we drop them (the GIL; 3.13t: rmu): neither reference is the
         * last, so dropping them runs nothing. */
        Py_DECREF(k);
        Py_DECREF(t);
        return cmp ? TB_EQ : TB_NE;
    }
    TB_RUNLOCK(r);
    Py_DECREF(k);
    Py_DECREF(t);
    return cmp < 0 ? TB_ERR : TB_RESTART;
#endif
}

/* One probe of r's current table for key.  TB_EQ: found, tp, epp and tkp say
 * where (3.13t: rmu still held); TB_NE: absent; TB_ERR: a key's __eq__
 * raised; TB_RESTART: the table or an entry changed under a comparison
 * (rmu not held in these three cases). */
SM_ALWAYS_INLINE int
tb_probe(SMTableRef *r, PyObject *key, Py_hash_t hash, int *key_plain, TBHeld *held,
         SMTable **tp, SMSlot **epp, PyObject **tkp)
{
    TB_RLOCK(r);
    SMTable *t = TB_LOAD(&r->table);
    if (t == NULL) {
        TB_RUNLOCK(r);
        return TB_NE;
    }
    size_t mask = (size_t)t->mask;
    size_t perturb = (size_t)hash;
    size_t i = (size_t)hash & mask;
    for (;;) {
        int32_t ix = IX_LOAD(&t->indices[i]);
        if (ix == IX_EMPTY) {
            TB_RUNLOCK(r);
            return TB_NE;
        }
        if (ix >= 0) {
            SMSlot *ep = &t->entries[ix];
            PyObject *tk = TB_LOAD(&ep->key);
            int eq = sm_tb_untag(tk) == key;
            /* tk == NULL: removed since the index was read; the key, if
             * it is back, was absent at that instant */
            if (!eq && tk != NULL && TB_LOAD_HASH(&ep->hash) == hash) {
                if ((uintptr_t)tk & SM_TB_PLAIN) {
                    if (*key_plain < 0) {
                        *key_plain = tb_plain(key, 0);
                    }
                }
                if (((uintptr_t)tk & SM_TB_PLAIN) && *key_plain) {
                    eq = tb_plain_eq(sm_tb_untag(tk), key);
                    if (eq < 0) {
                        TB_RUNLOCK(r);
                        return TB_ERR;
                    }
                }
                else {
                    int rc = tb_compare_slow(r, t, ep, tk, key, held);
                    if (rc != TB_EQ && rc != TB_NE) {
                        return rc;
                    }
                    eq = rc == TB_EQ;
                }
            }
            if (eq) {
                *tp = t;
                *epp = ep;
                *tkp = tk;
                return TB_EQ;
            }
        }
        perturb >>= TB_PERTURB_SHIFT;
        i = (i * 5 + perturb + 1) & mask;
    }
}

static int
tb_get(SMTableRef *r, PyObject *key, Py_hash_t hash, PyObject **out, TBHeld *held)
{
    int key_plain = -1;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) {
            tb_held_drop(held);  /* a restart re-reads everything */
        }
#if SM_TB_LOCKFREE
        if (SM_UNLIKELY(attempt >= TB_MAX_RESTARTS)) {
            *out = NULL;
            return SM_TB_CONTENDED;
        }
#endif
        SMTable *t;
        SMSlot *ep;
        PyObject *tk;
        int rc = tb_probe(r, key, hash, &key_plain, held, &t, &ep, &tk);
        if (rc == TB_RESTART) {
            continue;
        }
        if (rc != TB_EQ) {
            *out = NULL;
            return rc;  /* TB_NE (0) or TB_ERR (-1) */
        }
        PyObject *v = TB_LOAD(&ep->value);
#if SM_TB_LOCKFREE
        if (v != NULL && PyUnstable_TryIncRef(v)) {
            if (TB_LOAD(&ep->value) == v && TB_LOAD(&ep->key) == tk
                && TB_LOAD(&r->table) == t) {
                *out = v;
                return 1;
            }
            Py_DECREF(v);  /* replaced meanwhile */
        }
#else
        (void)tk;
        (void)t;
        Py_INCREF(v);
        TB_RUNLOCK(r);
        *out = v;
        return 1;
#endif
    }
}

int
sm_tb_get(SMTableRef *r, PyObject *key, Py_hash_t hash, PyObject **out)
{
    TBHeld held = {NULL, NULL};
    int rc = tb_get(r, key, hash, out, &held);
    tb_held_drop(&held);  /* the read is complete: nothing of it is used again */
    return rc;
}

/* ------------------------------------------------------------ locations */

int
sm_tb_locate(SMTableRef *r, PyObject *key, Py_hash_t hash, SMLoc *loc)
{
    TBHeld held = {NULL, NULL};
    int key_plain = -1;
    int rc = SM_TB_CONTENDED;
    loc->table = NULL;
    for (int attempt = 0; attempt < TB_MAX_RESTARTS; attempt++) {
        tb_held_drop(&held);
        SMTable *t;
        SMSlot *ep;
        PyObject *tk;
        rc = tb_probe(r, key, hash, &key_plain, &held, &t, &ep, &tk);
        if (rc == TB_RESTART) {
            rc = SM_TB_CONTENDED;
            continue;
        }
        if (rc == TB_EQ) {
            loc->table = t;
            loc->entry = ep - t->entries;
            loc->tkey = tk;
            if (held.table != NULL) {
                /* the last comparison's reference to t (held.table == t) */
                loc->strong = 1;
                held.table = NULL;
            }
            else {
#if SM_TB_LOCKFREE
                /* t stays alive until this thread's next quiescent state
                 * (its release is delayed): see sm_tb_loc_hold. */
                loc->strong = 0;
#else
                Py_INCREF(t);  /* 3.13t: released at once; GIL: cheap */
                loc->strong = 1;
#endif
            }
            TB_RUNLOCK(r);
        }
        break;
    }
    tb_held_drop(&held);
    return rc;
}

int
sm_tb_loc_valid(SMTableRef *r, SMLoc *loc)
{
    SMTable *t = loc->table;
    return r->table == t && t->entries[loc->entry].key == loc->tkey;
}

/* Publish value (a new reference to it) as ep's value; return the value it
 * replaces, for the caller to release once it holds no lock.  The one way a
 * stored value changes in place: marked for readers' try-incref first. */
static inline PyObject *
tb_exchange_value(SMTableRef *r, SMSlot *ep, PyObject *value)
{
    PyObject *old = ep->value;
    Py_INCREF(value);
#if SM_TB_LOCKFREE
    PyUnstable_EnableTryIncRef(value);
#endif
    TB_WLOCK(r);
    TB_STORE(&ep->value, value);
    TB_WUNLOCK(r);
    return old;
}

PyObject *
sm_tb_loc_exchange(SMTableRef *r, SMLoc *loc, PyObject *value)
{
    return tb_exchange_value(r, &loc->table->entries[loc->entry], value);
}

/* ------------------------------------------------------------ writes */

int
sm_tb_find(SMTableRef *r, PyObject *key, Py_hash_t hash, SMPos *p)
{
    /* Under the shard lock: nobody else changes the table, and a write from a
     * key's __eq__ is refused, so no restart is ever needed. */
    SMTable *t = r->table;
    p->table = t;
    p->entry = -1;
    p->slot = -1;
    if (t == NULL) {
        return 0;
    }
    int key_plain = -1;
    size_t mask = (size_t)t->mask;
    size_t perturb = (size_t)hash;
    size_t i = (size_t)hash & mask;
    for (;;) {
        int32_t e = t->indices[i];
        if (e < 0) {
            if (p->slot < 0) {
                p->slot = (Py_ssize_t)i;  /* where an insert goes (as dict) */
            }
            if (e == IX_EMPTY) {
                return 0;
            }
        }
        else {
            SMSlot *ep = &t->entries[e];
            PyObject *tk = ep->key;
            PyObject *k = sm_tb_untag(tk);
            int eq = k == key;
            if (!eq && ep->hash == hash) {
                if (((uintptr_t)tk & SM_TB_PLAIN)
                    && (key_plain >= 0 ? key_plain : (key_plain = tb_plain(key, 0)))) {
                    eq = tb_plain_eq(k, key);
                }
                else {
                    Py_INCREF(k);  /* never the last: the table holds k */
                    eq = PyObject_RichCompareBool(k, key, Py_EQ);
                    Py_DECREF(k);
                }
            }
            if (eq != 0) {
                if (eq > 0) {
                    p->entry = e;
                    p->slot = (Py_ssize_t)i;
                }
                return eq;
            }
        }
        perturb >>= TB_PERTURB_SHIFT;
        i = (i * 5 + perturb + 1) & mask;
    }
}

/* The first index slot of hash's probe sequence that is empty or removed. */
static inline int32_t *
tb_free_index(SMTable *t, Py_hash_t hash)
{
    size_t mask = (size_t)t->mask;
    size_t perturb = (size_t)hash;
    size_t i = (size_t)hash & mask;
    for (;;) {
        if (t->indices[i] < 0) {
            return &t->indices[i];
        }
        perturb >>= TB_PERTURB_SHIFT;
        i = (i * 5 + perturb + 1) & mask;
    }
}

/* Replace r's table by a fresh one sized as dict sizes itself when it grows
 * (index slots: the smallest power of two >= 3 x the live entries, at least
 * 8, and with room for `extra` more entries), holding the live entries in their order and nothing removed; the old
 * table goes to g (delayed release).  0 or -1 (MemoryError, nothing
 * changed). */
static int
tb_rebuild(SMTableRef *r, SMGrave *g, Py_ssize_t extra)
{
    SMTable *old = r->table;
    Py_ssize_t used = old != NULL ? old->used : 0;
    Py_ssize_t cap = TB_MINSIZE;
    while (cap < 3 * used || ((cap << 1) / 3) < used + extra) {
        cap *= 2;
    }
    SMTable *nt = tb_new(cap);
    if (nt == NULL) {
        return -1;
    }
    if (old != NULL) {
        /* Copy: nt is not published yet, plain stores suffice. */
        Py_ssize_t n = 0;
        for (Py_ssize_t e = 0; e < old->nentries; e++) {
            SMSlot *ep = &old->entries[e];
            if (ep->key != NULL) {
                nt->entries[n] = *ep;
                *tb_free_index(nt, ep->hash) = (int32_t)n;
                n++;
            }
        }
        nt->nentries = n;
        nt->used = n;
        sm_grave_push(g, (PyObject *)((uintptr_t)old | SM_TB_PLAIN));
    }
    TB_WLOCK(r);
    TB_STORE(&r->table, nt);  /* release: readers see the copied entries */
    TB_WUNLOCK(r);
    return 0;
}

int
sm_tb_insert(SMTableRef *r, SMPos *p, PyObject *key, Py_hash_t hash, PyObject *value,
             SMGrave *g)
{
    SMTable *t = r->table;
    int32_t *slot;
    /* Out of entries: rebuild (which also drops removed entries, so they
     * never accumulate beyond 2/3 of the index). */
    if (t == NULL || t->nentries >= t->usable) {
        if (tb_rebuild(r, g, 0) < 0) {
            return -1;
        }
        t = r->table;
        slot = tb_free_index(t, hash);
    }
    else {
        assert(p->table == t && p->slot >= 0);
        slot = &t->indices[p->slot];
    }
    Py_ssize_t e = t->nentries;
    SMSlot *ep = &t->entries[e];
    /* The count first: sm_tb_collect copies only the entries counted when
     * it starts, so a key present before it started is counted (see there). */
    TB_STORE_HASH(&t->nentries, e + 1);
    PyObject *tk = Py_NewRef(key);
    if (tb_plain(key, 0)) {
        tk = (PyObject *)((uintptr_t)key | SM_TB_PLAIN);
    }
    Py_INCREF(value);
#if SM_TB_LOCKFREE
    PyUnstable_EnableTryIncRef(key);
    PyUnstable_EnableTryIncRef(value);
#endif
    TB_WLOCK(r);
    TB_STORE_HASH(&ep->hash, hash);
    TB_STORE(&ep->value, value);
    TB_STORE(&ep->key, tk);
    IX_STORE(slot, (int32_t)e);  /* last: a reader that finds e sees it filled */
    TB_WUNLOCK(r);
    TB_STORE_HASH(&t->used, t->used + 1);
    return 0;
}

void
sm_tb_replace(SMTableRef *r, SMPos *p, PyObject *value, SMGrave *g)
{
    sm_grave_push(g, tb_exchange_value(r, &p->table->entries[p->entry], value));
}

void
sm_tb_remove(SMTableRef *r, SMPos *p, PyObject **old, SMGrave *g)
{
    SMTable *t = p->table;
    SMSlot *ep = &t->entries[p->entry];
    PyObject *tk = ep->key;
    int32_t *slot = &t->indices[p->slot];
    *old = ep->value;
    TB_WLOCK(r);
    IX_STORE(slot, IX_REMOVED);
    TB_STORE(&ep->key, NULL);  /* a reader still at the entry restarts or moves on */
    TB_STORE(&ep->value, NULL);
    TB_WUNLOCK(r);
    TB_STORE_HASH(&t->used, t->used - 1);
    sm_grave_push(g, tk);
}

int
sm_tb_move_all(SMTableRef *dst, SMTableRef *src, SMGrave *g)
{
    SMTable *st = src->table;
    if (st == NULL || st->used == 0) {
        return 0;
    }
    if (sm_grave_reserve(g, 2) < 0) {
        return -1;
    }
    SMTable *t = dst->table;
    if (t == NULL || t->usable - t->nentries < st->used) {
        if (tb_rebuild(dst, g, st->used) < 0) {
            return -1;
        }
        t = dst->table;
    }
    /* Append in src's order; each entry is filled before the index slot
     * that publishes it (as sm_tb_insert does). */
    Py_ssize_t e = t->nentries;
    TB_STORE_HASH(&t->nentries, e + st->used);  /* first, as in sm_tb_insert */
    for (Py_ssize_t i = 0; i < st->nentries; i++) {
        SMSlot *sp = &st->entries[i];
        if (sp->key == NULL) {
            continue;
        }
        SMSlot *ep = &t->entries[e];
        int32_t *slot = tb_free_index(t, sp->hash);
        TB_WLOCK(dst);
        TB_STORE_HASH(&ep->hash, sp->hash);
        TB_STORE(&ep->value, sp->value);
        TB_STORE(&ep->key, sp->key);
        IX_STORE(slot, (int32_t)e);
        TB_WUNLOCK(dst);
        e++;
    }
    assert(e == t->nentries);
    TB_STORE_HASH(&t->used, t->used + st->used);
    /* src's references now belong to dst: only its table goes. */
    TB_WLOCK(src);
    TB_STORE(&src->table, NULL);
    TB_WUNLOCK(src);
    sm_grave_push(g, (PyObject *)((uintptr_t)st | SM_TB_PLAIN));
    return 0;
}

Py_ssize_t
sm_tb_used(SMTableRef *r)
{
    SMTable *t = TB_LOAD(&r->table);
    return t == NULL ? 0 : TB_LOAD_HASH(&t->used);
}

/* Empty r in one store; its keys, values (tagged with value_tag: SM_TB_PLAIN
 * delays their release like plain keys') and the table go to g. */
static int
tb_clear(SMTableRef *r, SMGrave *g, uintptr_t value_tag)
{
    SMTable *t = r->table;
    if (t == NULL) {
        return 0;
    }
    if (sm_grave_reserve(g, 2 * t->used + 1) < 0) {
        return -1;
    }
    TB_WLOCK(r);
    TB_STORE(&r->table, NULL);
    TB_WUNLOCK(r);
    for (Py_ssize_t e = 0; e < t->nentries; e++) {
        SMSlot *ep = &t->entries[e];
        if (ep->key != NULL) {
            sm_grave_push(g, ep->key);
            sm_grave_push(g, (PyObject *)((uintptr_t)ep->value | value_tag));
        }
    }
    sm_grave_push(g, (PyObject *)((uintptr_t)t | SM_TB_PLAIN));
    return 0;
}

int
sm_tb_clear(SMTableRef *r, SMGrave *g)
{
    return tb_clear(r, g, 0);
}

/* ------------------------------------------------------------ whole table */

int
sm_tb_collect(SMTableRef *r, SMBuf *buf)
{
#if SM_TB_LOCKFREE
    Py_ssize_t start = buf->n;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0) {
            /* The table was replaced (or an entry kept changing) under us:
             * drop this shard's partial copy and start over. */
            while (buf->n > start) {
                Py_DECREF(buf->items[--buf->n]);
            }
            if (attempt > 2) {
                sm_backoff(attempt);
            }
        }
        SMTable *t = TB_LOAD(&r->table);
        if (t == NULL) {
            return 0;
        }
        int ok = 1;
        /* Only the entries counted now.  An entry is never reused, so a key
         * removed after we copied it and inserted again lands past this
         * count: copying on to the end would yield it twice.  A key present
         * when we start is counted (writers count an entry before filling
         * it, see sm_tb_insert); keys inserted meanwhile may be missed, as
         * weakly consistent iteration allows. */
        Py_ssize_t n = TB_LOAD_HASH(&t->nentries);
        for (Py_ssize_t e = 0; e < n && ok; e++) {
            SMSlot *ep = &t->entries[e];
            for (int tries = 0;; tries++) {
                if (tries >= TB_MAX_RESTARTS || TB_LOAD(&r->table) != t) {
                    ok = 0;
                    break;
                }
                PyObject *tk = TB_LOAD(&ep->key);
                if (tk == NULL) {
                    break;
                }
                PyObject *v = TB_LOAD(&ep->value);
                PyObject *k = sm_tb_untag(tk);
                if (v == NULL || !PyUnstable_TryIncRef(k)) {
                    continue;  /* being removed: read the entry again */
                }
                if (!PyUnstable_TryIncRef(v)) {
                    Py_DECREF(k);
                    continue;
                }
                if (TB_LOAD(&ep->key) != tk || TB_LOAD(&ep->value) != v
                    || TB_LOAD(&r->table) != t) {
                    Py_DECREF(k);
                    Py_DECREF(v);
                    continue;
                }
                if (sm_buf_reserve(buf, buf->n + 2) < 0) {
                    Py_DECREF(k);
                    Py_DECREF(v);
                    return -1;
                }
                buf->items[buf->n++] = k;
                buf->items[buf->n++] = v;
                break;
            }
        }
        if (ok) {
            return 0;
        }
    }
#else
    int rc = 0;
    TB_RLOCK(r);
    SMTable *t = r->table;
    if (t != NULL && sm_buf_reserve(buf, buf->n + 2 * t->used) < 0) {
        rc = -1;
    }
    else if (t != NULL) {
        for (Py_ssize_t e = 0; e < t->nentries; e++) {
            SMSlot *ep = &t->entries[e];
            if (ep->key != NULL) {
                buf->items[buf->n++] = Py_NewRef(sm_tb_untag(ep->key));
                buf->items[buf->n++] = Py_NewRef(ep->value);
            }
        }
    }
    TB_RUNLOCK(r);
    return rc;
#endif
}

Py_ssize_t
sm_tb_sizeof(SMTableRef *r)
{
    SMTable *t = SM_LOAD_PTR(&r->table);
    return t == NULL ? 0 : tb_bytes(t);
}

int
sm_tb_traverse(SMTableRef *r, visitproc visit, void *arg)
{
    SMTable *t = r->table;
    if (t == NULL) {
        return 0;
    }
    for (Py_ssize_t e = 0; e < t->nentries; e++) {
        SMSlot *ep = &t->entries[e];
        if (ep->key != NULL) {
            Py_VISIT(sm_tb_untag(ep->key));
            Py_VISIT(ep->value);
        }
    }
    return 0;
}

void
sm_tb_fini(SMTableRef *r)
{
    SMTable *t = r->table;
    if (t == NULL) {
        return;
    }
    r->table = NULL;  /* detach first: a __del__ below sees an empty shard */
    for (Py_ssize_t e = 0; e < t->nentries; e++) {
        SMSlot *ep = &t->entries[e];
        if (ep->key != NULL) {
            /* No reader is left (the map is being freed or cleared by the
             * collector): nothing needs delaying. */
            Py_DECREF(sm_tb_untag(ep->key));
            Py_DECREF(ep->value);
        }
    }
    Py_DECREF(t);
}

void
sm_tb_after_fork(SMTableRef *r)
{
#if SM_TB_RMUTEX
    memset(&r->rmu, 0, sizeof(r->rmu));
#else
    (void)r;
#endif
}

/* ------------------------------------------------------------ borrowed reads */

int
sm_tb_get_borrowed(SMTableRef *r, PyObject *key, Py_hash_t hash, SMBorrowed *b)
{
    TBHeld held = {NULL, NULL};
    int key_plain = -1;
    b->strong = 0;
    for (int attempt = 1;; attempt++) {
        SMTable *t;
        SMSlot *ep;
        PyObject *tk;
        int rc = tb_probe(r, key, hash, &key_plain, &held, &t, &ep, &tk);
        if (SM_LIKELY(rc == TB_EQ)) {
            (void)tk;
            (void)t;
            PyObject *v = TB_LOAD(&ep->value);
#if SM_TB_LOCKFREE
            if (SM_UNLIKELY(held.key != NULL || held.table != NULL) && v != NULL) {
                /* Dropping what the comparison held may run a __del__ (a
                 * quiescent state): take the value first.  Its release is
                 * delayed, so no quiescent state having passed since it was
                 * loaded, it is alive. */
                Py_INCREF(v);
                b->strong = 1;
            }
            tb_held_drop(&held);
            if (v != NULL) {  /* else removed since the probe: restart */
#elif SM_TB_RMUTEX
            Py_INCREF(v);  /* 3.13t: writers release values at once */
            b->strong = 1;
            TB_RUNLOCK(r);
            {
#else
            {
#endif
                b->value = v;
                b->slot = ep;
                return 1;
            }
        }
        else if (rc != TB_RESTART) {
            tb_held_drop(&held);
            return rc;  /* TB_NE (0) or TB_ERR (-1) */
        }
        tb_held_drop(&held);  /* a restart re-reads everything */
        if (attempt >= TB_MAX_RESTARTS) {
            return SM_TB_CONTENDED;
        }
    }
}

int
sm_tb_find_value(SMTableRef *r, Py_hash_t hash, PyObject *value, SMPos *p)
{
    SMTable *t = r->table;
    p->table = t;
    p->entry = -1;
    p->slot = -1;
    if (t == NULL) {
        return 0;
    }
    size_t mask = (size_t)t->mask;
    size_t perturb = (size_t)hash;
    size_t i = (size_t)hash & mask;
    for (;;) {
        int32_t e = t->indices[i];
        if (e == IX_EMPTY) {
            return 0;
        }
        if (e >= 0 && t->entries[e].value == value && t->entries[e].key != NULL) {
            p->entry = e;
            p->slot = (Py_ssize_t)i;
            return 1;
        }
        perturb >>= TB_PERTURB_SHIFT;
        i = (i * 5 + perturb + 1) & mask;
    }
}

PyObject *
sm_tb_exchange_at(SMTableRef *r, SMPos *p, PyObject *value)
{
    return tb_exchange_value(r, &p->table->entries[p->entry], value);
}

int
sm_tb_clear_delayed(SMTableRef *r, SMGrave *g)
{
    return tb_clear(r, g, SM_TB_PLAIN);
}
