/*
 * sm_table.h -- the hash table each ConcurrentMap shard owns, and SyncMap's
 * `read` and `dirty` (see sm_table.c, sm_smap.c).
 *
 * The layout of CPython's dict: an index array (int32 slots, power-of-two
 * count, probed in dict's order: i = 5*i + perturb + 1, perturb shifted 5
 * bits each step) pointing into an append-only array of (hash, key, value)
 * entries sized 2/3 of the index.  So memory matches a dict's, keys with
 * equal hashes cost exactly the comparisons they cost in a dict (a rebuild
 * keeps insertion order, hence every collision chain's order), and
 * iteration walks the entries in insertion order.  Writers hold the shard
 * lock; readers take no lock:
 *
 *   - GIL builds: plain loads.  A reader that calls a key's __eq__ holds a
 *     reference to the stored key and to the table, and restarts if the entry
 *     or the table changed meanwhile (what dict does).
 *   - Free-threaded 3.14+: a read writes no shared memory but the returned
 *     value's reference count.  Keys that are exact str, int, bytes, or tuples
 *     of those ("plain", tagged in the entry) are compared in C without a
 *     reference; their release by the map is delayed through QSBR
 *     (_PyObject_XDecRefDelayed), so a reader that loaded one keeps reading a
 *     live, immutable object until it next passes a quiescent state.  Other
 *     keys are compared holding a reference taken with PyUnstable_TryIncRef
 *     and a re-check of the entry (CPython's own dict protocol).  Values are
 *     read with TryIncRef and a re-check of the entry and of the table
 *     pointer.  Writers mark every stored key and value with
 *     PyUnstable_EnableTryIncRef and fill an entry before storing the index
 *     slot that points to it.  A replaced table is released through
 *     QSBR too: readers still probing it keep valid memory.
 *   - Free-threaded 3.13 (no TryIncRef): readers take the table's short
 *     mutex `rmu` (never held while Python code runs), writers take it around
 *     each change.
 */
#ifndef SAFEMAP_SM_TABLE_H
#define SAFEMAP_SM_TABLE_H

#include "sm_common.h"

/* -DSM_TB_LOCKED_READ builds the 3.13t read path on 3.14t too: a check of
 * that path on the interpreter at hand (never shipped). */
#if SM_FREE_THREADED && PY_VERSION_HEX >= 0x030E0000 && !defined(SM_TB_LOCKED_READ)
#  define SM_TB_LOCKFREE 1
#else
#  define SM_TB_LOCKFREE 0
#endif
#if SM_FREE_THREADED && !SM_TB_LOCKFREE
#  define SM_TB_RMUTEX 1
#else
#  define SM_TB_RMUTEX 0
#endif

typedef struct {
    Py_hash_t hash;
    PyObject *key;    /* NULL: not used yet, or removed; else the key, tagged
                         with SM_TB_PLAIN if plain */
    PyObject *value;  /* strong; NULL when key is */
} SMSlot;

/* A table is a (non-GC) Python object only so that its release can be
 * delayed through QSBR and a reader can hold it across a key's __eq__; it
 * never owns its entries' references: the shard's code moves them.  An
 * entry is never reused within a table: a removed key's entry stays empty
 * until a rebuild compacts the table into a new one. */
typedef struct {
    PyObject_VAR_HEAD      /* ob_size: bytes of indices + entries */
    Py_ssize_t mask;       /* index slots - 1 */
    Py_ssize_t usable;     /* entries allocated (2/3 of the index slots) */
    Py_ssize_t nentries;   /* entries appended, live or removed */
    Py_ssize_t used;       /* live entries */
    SMSlot *entries;       /* in the same block, after the indices */
    int32_t indices[1];    /* -1 empty, -2 removed, else an entry */
} SMTable;

/* The table of one shard.  `table` is NULL while the shard is empty and
 * has never been written to (or after clear). */
typedef struct {
    SMTable *table;
#if SM_TB_RMUTEX
    PyMutex rmu;
#endif
} SMTableRef;

#define SM_TB_PLAIN ((uintptr_t)1)

static inline PyObject *
sm_tb_untag(PyObject *tk)
{
    return (PyObject *)((uintptr_t)tk & ~SM_TB_PLAIN);
}

/* References dropped by a write, released with sm_grave_release once the
 * write holds no lock (so no __del__ runs under a lock, and on free-threaded
 * builds plain keys and replaced tables go through QSBR). */
typedef struct {
    PyObject **items;  /* tagged: SM_TB_PLAIN means "release delayed" */
    Py_ssize_t n, cap;
    PyObject *inline_items[4];
} SMGrave;

#define SM_GRAVE_INIT(g) \
    do { (g)->items = (g)->inline_items; (g)->n = 0; (g)->cap = 4; } while (0)

static inline void
sm_grave_push(SMGrave *g, PyObject *tagged)
{
    assert(g->n < g->cap);
    g->items[g->n++] = tagged;
}

/* Make room for `extra` more items (so that pushing them cannot fail).
 * 0, or -1 with MemoryError set. */
int sm_grave_reserve(SMGrave *g, Py_ssize_t extra);
/* Release everything (may run __del__) and free the storage; g is empty
 * and reusable afterwards. */
void sm_grave_release(SMGrave *g);
int sm_grave_traverse(SMGrave *g, visitproc visit, void *arg);

/* ------------------------------------------------------------ reads */

enum { SM_TB_CONTENDED = -2 };

/* Lock-free read.  1: found, *out strong; 0: absent; -1: error (from a key's
 * __eq__); SM_TB_CONTENDED (free-threaded builds only): the value kept
 * changing under the reader, read it under the shard lock instead.  May run
 * Python code (a non-plain key's __eq__). */
int sm_tb_get(SMTableRef *r, PyObject *key, Py_hash_t hash, PyObject **out);

/* ------------------------------------------------------------ locations */

/* Where a lock-free lookup found a key, for a writer that changes the value
 * in place without the table's writer lock (SyncMap's `read` table).  While
 * `table` cannot be freed, `table` and `tkey` identify the entry without ABA
 * (entries are never reused in a table).  It cannot be freed while `strong`
 * (a reference is held), or, on free-threaded 3.14+ where replaced tables are
 * released through QSBR, until the thread's next quiescent state: a caller
 * that may pass one (Python code, a wait that detaches) first calls
 * sm_tb_loc_hold.  So the common in-place write touches no reference count. */
typedef struct {
    SMTable *table;
    Py_ssize_t entry;
    PyObject *tkey;   /* the entry's tagged key when found */
    int strong;
} SMLoc;

/* Lock-free lookup.  1: found (loc filled; release with sm_tb_loc_release);
 * 0: absent; -1: error; SM_TB_CONTENDED: kept restarting (free-threaded).
 * May run Python code. */
int sm_tb_locate(SMTableRef *r, PyObject *key, Py_hash_t hash, SMLoc *loc);

/* Make loc's table reference strong (before anything that may pass a
 * quiescent state). */
static inline void
sm_tb_loc_hold(SMLoc *loc)
{
    if (!loc->strong) {
        Py_INCREF(loc->table);
        loc->strong = 1;
    }
}

static inline void
sm_tb_loc_release(SMLoc *loc)
{
    if (loc->strong) {
        Py_DECREF(loc->table);
    }
    loc->table = NULL;
    loc->strong = 0;
}

/* The two below are called by a writer that excludes every other writer of
 * the entry's value and of r's table (SyncMap: its `wmu`, or the GIL with
 * no Python code in between), but not lock-free readers. */

/* The entry is still r's, still holding the key found. */
int sm_tb_loc_valid(SMTableRef *r, SMLoc *loc);

/* The entry's value (borrowed), for a valid loc. */
static inline PyObject *
sm_tb_loc_value(SMLoc *loc)
{
    return loc->table->entries[loc->entry].value;
}

/* Store value (a new reference is taken) in a valid loc; returns the old
 * value, the table's reference, now the caller's. */
PyObject *sm_tb_loc_exchange(SMTableRef *r, SMLoc *loc, PyObject *value);

/* ------------------------------------------------------------ writes */
/* Every function below is called holding the shard lock. */

/* Where a lookup ended: the entry found and its index slot, or (absent) the
 * first free index slot of the key's probe sequence, in `table`. */
typedef struct {
    SMTable *table;
    Py_ssize_t entry;  /* -1 if absent */
    Py_ssize_t slot;   /* -1 if there is no table */
} SMPos;

/* Find key: 1 found, 0 absent, -1 error; *p says where.  May run __eq__. */
int sm_tb_find(SMTableRef *r, PyObject *key, Py_hash_t hash, SMPos *p);

/* The value found at p (borrowed; stable while the lock is held). */
static inline PyObject *
sm_tb_value_at(SMPos *p)
{
    return p->table->entries[p->entry].value;
}

/* Insert key, found absent at p by sm_tb_find under the same hold.  May build
 * a bigger table first (the old one goes to g).  0, or -1 with MemoryError
 * set (nothing changed).  g must have room for 1 item. */
int sm_tb_insert(SMTableRef *r, SMPos *p, PyObject *key, Py_hash_t hash, PyObject *value,
                 SMGrave *g);

/* Replace the value found at p; the old value goes to g (room for 1). */
void sm_tb_replace(SMTableRef *r, SMPos *p, PyObject *value, SMGrave *g);

/* Remove the entry found at p: the key goes to g (room for 1), the value
 * reference is handed to the caller (*old, strong). */
void sm_tb_remove(SMTableRef *r, SMPos *p, PyObject **old, SMGrave *g);

/* Move every entry of src to the end of dst, in src's order, without
 * comparing keys (none of src's keys may be in dst); src is left empty.  At
 * most one rebuild of dst, before the first move.  Dropped tables go to g
 * (reserved here).  0, or -1 with MemoryError set (nothing changed). */
int sm_tb_move_all(SMTableRef *dst, SMTableRef *src, SMGrave *g);

/* Live entries (a relaxed read: exact while no writer runs). */
Py_ssize_t sm_tb_used(SMTableRef *r);

/* Empty the shard: every key, value and the table go to g (reserved here:
 * -1 with MemoryError set, nothing changed). */
int sm_tb_clear(SMTableRef *r, SMGrave *g);

/* Append every (key, value) to buf, in insertion order, as strong
 * references; lock-free.  On GIL builds no Python code runs; on free-threaded
 * builds each pair was in the table at the instant it was copied.  0 or -1. */
int sm_tb_collect(SMTableRef *r, SMBuf *buf);

Py_ssize_t sm_tb_sizeof(SMTableRef *r);
int sm_tb_traverse(SMTableRef *r, visitproc visit, void *arg);
/* Detach and release everything (dealloc, tp_clear): no reader may use the
 * table any more.  Runs __del__ of what it releases. */
void sm_tb_fini(SMTableRef *r);
void sm_tb_after_fork(SMTableRef *r);

/* ------------------------------------------------------------ borrowed reads
 * For a table whose owner releases removed values through QSBR on
 * free-threaded 3.14+ (tagged SM_TB_PLAIN in its grave: the Cache's nodes),
 * so that a reader may use a value it found without a reference. */

/* What sm_tb_get_borrowed found. */
typedef struct {
    PyObject *value;  /* borrowed, or strong if `strong` */
    SMSlot *slot;     /* where (sm_tb_entry_index) */
    int strong;
} SMBorrowed;

/* Lock-free read that takes no reference to the value.  1: found (b filled);
 * 0: absent; -1: error (a key's __eq__); SM_TB_CONTENDED.  If b->strong,
 * b->value is a strong reference (the read had to call a key's __eq__, or
 * 3.13t), for the caller to release; otherwise it is borrowed: on
 * free-threaded 3.14+ its memory stays valid until the calling thread's next
 * quiescent state (it may have left the table meanwhile: the caller checks),
 * on GIL builds until Python code runs.  May run Python code (a non-plain
 * key's __eq__) before it returns, never after finding the value. */
int sm_tb_get_borrowed(SMTableRef *r, PyObject *key, Py_hash_t hash, SMBorrowed *b);

/* Holding the writer lock: find the entry whose value IS `value` among the
 * entries of hash `hash`, comparing pointers only (no key comparison, no
 * Python code).  1 (p says where, for sm_tb_remove / sm_tb_exchange_at) or 0. */
int sm_tb_find_value(SMTableRef *r, Py_hash_t hash, PyObject *value, SMPos *p);

/* Holding the writer lock: publish value (a new reference is taken) at the
 * entry found at p and return the value it replaces (the table's reference,
 * now the caller's), so that the caller chooses how to release it. */
PyObject *sm_tb_exchange_at(SMTableRef *r, SMPos *p, PyObject *value);

/* sm_tb_clear, except that the values' releases are delayed like plain keys'
 * (QSBR on free-threaded 3.14+): for a table read with sm_tb_get_borrowed. */
int sm_tb_clear_delayed(SMTableRef *r, SMGrave *g);

/* Lock-free, right after sm_tb_get_borrowed found `slot` (no quiescent state
 * in between): the index of that entry in r's current table, as 32 bits.  If
 * the table was replaced since the slot was found, the number is arbitrary
 * (the caller must be able to tell: sm_tb_entry_value_tagged); UINT32_MAX if
 * r has no table now.  Reads only the table's header, which the lookup read. */
static inline uint32_t
sm_tb_entry_index(SMTableRef *r, SMSlot *slot)
{
#if SM_FREE_THREADED
    SMTable *t = _Py_atomic_load_ptr_acquire(&r->table);
#else
    SMTable *t = r->table;
#endif
    if (t == NULL) {
        return UINT32_MAX;
    }
    /* As integers: slot may be an entry of another table. */
    return (uint32_t)(((uintptr_t)slot - (uintptr_t)t->entries) / sizeof(SMSlot));
}

/* Holding the writer lock: the value (borrowed) of entry `i` of r's current
 * table if that entry is in use and the low 32 bits of its hash are `tag`,
 * else NULL.  `i` may be any number (it is checked against the table). */
static inline PyObject *
sm_tb_entry_value_tagged(SMTableRef *r, Py_ssize_t i, uint32_t tag)
{
    SMTable *t = r->table;
    if (t == NULL || (size_t)i >= (size_t)t->nentries) {
        return NULL;
    }
    SMSlot *e = &t->entries[i];
    return e->key != NULL && (uint32_t)e->hash == tag ? e->value : NULL;
}

#endif /* SAFEMAP_SM_TABLE_H */
