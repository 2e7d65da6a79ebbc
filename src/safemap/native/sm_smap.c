/*
 * sm_smap.c -- SyncMapBase, the native core of safemap.SyncMap.
 *
 * Go's sync.Map (sync/map.go), adapted to CPython.  Keys and values live in
 * two hash tables of the kind ConcurrentMap's shards own (sm_table.h: dict's
 * layout; entries hold hash, key and value; no object per key):
 *
 *   read   keys that have been promoted.  Looked up with no lock.  Its key
 *          set and its table pointer change only under `mu` (promotion adds
 *          keys, a delete removes one, growth replaces the table); its
 *          values also change in place (below).
 *   dirty  keys stored since the last promotion, none of them in read; only
 *          touched under `mu`.  `amended` says it is non-empty.
 *
 * The value slot of a key's entry in read plays the role of Go's entry
 * pointer.  For a key already in read, store / swap / compare-and-swap
 * replace that slot in place without `mu`: the writer finds the entry with a
 * lock-free lookup (sm_tb_locate, which keeps the table alive), then, holding
 * only `wmu` (free-threaded builds; on GIL builds no Python code runs in
 * between), checks that `frozen` is clear, that the table is still read's
 * and that the entry still holds the key found, and swaps the value.  Every
 * change of read's keys or table is made holding `wmu` too, so a failed
 * check means the key was deleted or moved (a removed entry's key is NULL
 * and entries are never reused: Go's `expunged` state needs no marker), and
 * the writer takes `mu`.  `wmu` is held for a few instructions (or a
 * promotion's copy), never while Python code runs or another lock is
 * awaited (3.13t: except the table's read mutex, which readers hold for a
 * few instructions), and readers never take it.
 *
 * A read that misses read while dirty has keys takes `mu`, looks in dirty,
 * and counts a miss; once misses reach len(dirty), dirty's entries are
 * appended to read (promotion), so a key written once and then read often
 * stops costing the mutex -- Go's amortization.  Unlike Go, a delete removes
 * the key from read at once (a removed key must not stay referenced after
 * the call), so every entry of read or dirty holds a live value and Go's
 * deleted-entry sweep has nothing to do here.
 *
 * Deviation from Go: Go's dirty map is a full copy of read plus new keys, and
 * promotion swaps the two maps.  Here dirty holds only new keys and
 * promotion moves them into read's table (sm_tb_move_all: O(new keys), one
 * rebuild at most); readers keep probing read lock-free throughout, and a
 * key is findable through one table or the other at every instant.
 *
 * Atomicity, also when Python code runs:
 *  - a value in read changes only by a swap of its slot under `wmu` (or, on
 *    GIL builds, with no Python code between the check and the swap); a
 *    value in dirty only under `mu`.  Each op's linearization point is that
 *    swap, or its read of the slot;
 *  - compare_and_swap compares (identity, then ==, which may run Python code)
 *    with no lock, then swaps only if the slot still holds the very object
 *    compared -- retrying otherwise, like Go's CompareAndSwap loop;
 *  - operations that need a value to stay put across Python code (the compute
 *    family, snapshot, transaction, clear, and the locked slow paths) hold
 *    `mu` and set `frozen` under `wmu`: an in-place writer checks `frozen`
 *    under `wmu` before its swap, so once the freezer has set it no in-place
 *    swap happens until it is cleared; writers take `mu` instead and wait;
 *  - re-entry: a thread holding `mu` (in a callback, a key's __eq__ during a
 *    locked write) that asks for any write gets RecursiveUpdateError; its reads
 *    take `mu` re-entrantly.  Inside transaction(fn) every method raises;
 *  - nothing is released under a lock: replaced values, removed keys and
 *    replaced tables go to an SMGrave released after `mu` is.
 *
 * Reads.  GIL builds: a lookup in read, plain loads.  Free-threaded 3.14+:
 * sm_tb_get writes no shared memory but the returned value's reference count
 * (plain keys compared in C without a reference, the value taken with a
 * re-checked PyUnstable_TryIncRef; in-place writers mark every value they
 * store with PyUnstable_EnableTryIncRef and publish it with a release store;
 * removed plain keys and replaced tables are released through QSBR).
 * Free-threaded 3.13: the table's short read mutex.  A read that keeps
 * losing races with writers (SM_TB_CONTENDED) reads under `mu`.
 */
#include "sm_smap.h"
#include "sm_glue.h"

#if SM_FREE_THREADED
#  define SY_HELD_INC(m) (sm_tls_held++)
#  define SY_HELD_DEC(m) (sm_tls_held--)
#  define SY_REENTRY_POSSIBLE(m) (sm_tls_held != 0)
#  if SM_TB_LOCKFREE
#    define SY_WLOCK(m) sy_wlock(m)
#    define SY_WUNLOCK(m) _Py_atomic_store_int_release(&(m)->wmu, 0)
#  else
#    define SY_WLOCK(m) PyMutex_Lock(&(m)->wmu)
#    define SY_WUNLOCK(m) PyMutex_Unlock(&(m)->wmu)
#  endif
#else
#  define SY_HELD_INC(m) ((m)->held++)
#  define SY_HELD_DEC(m) ((m)->held--)
#  define SY_REENTRY_POSSIBLE(m) ((m)->held != 0)
#  define SY_WLOCK(m) ((void)(m))
#  define SY_WUNLOCK(m) ((void)(m))
#endif

#if SM_TB_LOCKFREE
#  ifdef _WIN32
#    include <windows.h>
#  else
#    include <sched.h>
#  endif
/* wmu (3.14t): a spin lock that never detaches the thread state while it
 * waits, so a writer passes no quiescent state between its lock-free lookup
 * and its swap (the table it found stays alive: see SMLoc).  Its holder
 * never detaches either (a few instructions, or a promotion's allocation and
 * copy; never Python code or a wait for another lock), so spinning ends and
 * a stop-the-world pause is never held up for long.  3.13t, where a reader
 * holds the table's mutex that a holder of wmu may wait for, uses a PyMutex
 * (SMLoc then holds a reference to its table). */
static inline void
sy_wlock(SMSMapObject *m)
{
    for (;;) {
        int expected = 0;
        if (_Py_atomic_compare_exchange_int(&m->wmu, &expected, 1)) {
            return;
        }
        while (_Py_atomic_load_int_relaxed(&m->wmu) != 0) {
#  ifdef _WIN32
            SwitchToThread();
#  else
            sched_yield();
#  endif
        }
    }
}
#endif

#define MSG_WRITE_REENTRY \
    "cannot write to a SyncMap from inside one of its own compute callbacks " \
    "(or from a key's __eq__/__hash__ during a write to it)"
#define MSG_TXN_REENTRY \
    "cannot call a SyncMap's methods inside its own transaction(); use the view " \
    "passed to the function"

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

static int
sy_write_reentry_slow(SMSMapObject *m)
{
    void *me = sm_me();
    if (SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    if (sm_lock_held_by(&m->mu, me)) {
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

/* Promote dirty into read (under mu).  Its drops go to g. */
static void
sy_promote_locked(SMSMapObject *m, SMGrave *g)
{
    if (m->dirty.table != NULL && sm_tb_used(&m->dirty) > 0) {
        SY_WLOCK(m);  /* a rebuild of read copies its values */
        int rc = sm_tb_move_all(&m->read, &m->dirty, g);
        SY_WUNLOCK(m);
        if (rc < 0) {
            /* Out of memory: nothing moved; the read that triggered us still
             * succeeded, so do not fail it. */
            PyErr_Clear();
            return;
        }
        SM_BUMP(&m->promotions, 1);
    }
    SM_STORE_INT(&m->amended, 0);
    m->misses = 0;
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
sy_miss_locked(SMSMapObject *m, int nested, SMGrave *g)
{
    SM_BUMP(&m->locked_reads, 1);
    if (++m->misses >= sm_tb_used(&m->dirty) && !nested) {
        sy_promote_locked(m, g);
    }
}

/* Value for key under mu (no miss counted).  1/0/-1, *v strong; *in_read:
 * found in read (0 also when absent). */
static int
sy_get_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **v, int *in_read)
{
    SMPos p;
    *v = NULL;
    *in_read = 0;
    int r = sm_tb_find(&m->read, key, hash, &p);
    if (r > 0) {
        *in_read = 1;
        SY_WLOCK(m);  /* in-place writers may be swapping it */
        *v = Py_NewRef(sm_tb_value_at(&p));
        SY_WUNLOCK(m);
        return 1;
    }
    if (r < 0 || !m->amended) {
        return r;
    }
    r = sm_tb_find(&m->dirty, key, hash, &p);
    if (r > 0) {
        *v = Py_NewRef(sm_tb_value_at(&p));
    }
    return r;
}

/* Set key to value under mu; *old gets the previous value (strong) or NULL.
 * Drops go to g (room for 2). */
static int
sy_set_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject *value,
              PyObject **old, SMGrave *g)
{
    SMPos p;
    *old = NULL;
    int r = sm_tb_find(&m->read, key, hash, &p);
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        SY_WLOCK(m);
        *old = Py_NewRef(sm_tb_value_at(&p));
        sm_tb_replace(&m->read, &p, value, g);
        SY_WUNLOCK(m);
    }
    else {
        r = sm_tb_find(&m->dirty, key, hash, &p);
        if (r < 0) {
            return -1;
        }
        if (r > 0) {
            *old = Py_NewRef(sm_tb_value_at(&p));
            sm_tb_replace(&m->dirty, &p, value, g);
        }
        else {
            if (sm_tb_insert(&m->dirty, &p, key, hash, value, g) < 0) {
                return -1;
            }
            /* After the insert: the store is the insert's instant for
             * readers without mu (see "Misses without mu"). */
            SM_STORE_INT(&m->amended, 1);
            SM_ADD_SSIZE(&m->count, 1);
            SY_WROTE(m, inserts, 1);
            return 0;
        }
    }
    if (*old != value) {
        SY_WROTE(m, updates, 1);
    }
    return 0;
}

/* Delete key under mu.  1: removed (*old strong), 0: absent, -1: error.
 * count_miss: a plain delete, which counts a miss when the key was not in
 * read (Go's LoadAndDelete).  Drops go to g (room for 3). */
static int
sy_del_locked(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **old, SMGrave *g,
              int count_miss)
{
    SMPos p;
    *old = NULL;
    int r = sm_tb_find(&m->read, key, hash, &p);
    int in_read = r > 0;
    if (r < 0) {
        return -1;
    }
    if (r > 0) {
        /* A key of read leaves it now (Go would leave it there); an in-place
         * writer that found the entry before sees its key gone under wmu
         * and takes mu. */
        SY_WLOCK(m);
        sm_tb_remove(&m->read, &p, old, g);
        SY_WUNLOCK(m);
    }
    else if (m->amended) {
        r = sm_tb_find(&m->dirty, key, hash, &p);
        if (r < 0) {
            return -1;
        }
        if (r > 0) {
            sm_tb_remove(&m->dirty, &p, old, g);
        }
    }
    if (r > 0) {
        SM_ADD_SSIZE(&m->count, -1);
        SY_WROTE(m, deletes, 1);
    }
    if (count_miss && !in_read) {
        /* not found in read: a miss, counted once dirty is done with */
        sy_miss_locked(m, 0, g);  /* a delete: never nested (writes are refused) */
    }
    return r;
}

/* Begin a section that needs every value stable: take mu, freeze in-place
 * writers.  Returns the previous frozen state for sy_thaw_unlock. */
static int
sy_freeze_lock(SMSMapObject *m, int *prev)
{
    if (sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    *prev = m->frozen;
    SY_WLOCK(m);  /* an in-place writer past its check has swapped by now */
    SM_STORE_INT(&m->frozen, 1);
    SY_WUNLOCK(m);
    return 0;
}

static void
sy_thaw_unlock(SMSMapObject *m, int prev)
{
    SM_STORE_INT(&m->frozen, prev);
    sy_unlock(m);
}

/* ------------------------------------------------------------- operations */

/* Misses without mu.  A read that misses `read` answers "absent" without mu
 * only if `amended` was 0 when it loaded it, BEFORE searching read: at that
 * instant dirty was empty, so every key present was in read, and a key stays
 * in read until it is deleted (promotion only adds keys; a grown table keeps
 * them) -- so the search finds every key present from that instant to its
 * end: a miss means the key was absent at some instant of the read.  An
 * insert into dirty stores `amended` = 1 after the insert, under mu; that
 * store is the insert's instant for such readers.  Checking `amended` only
 * after the search is wrong: a promotion can move the key into read behind
 * the search and store 0, and the read would miss a key present throughout
 * it (its own thread's store, say).  The reads check it after the search as
 * well: a 1 there sends them to mu, so that a key stored into dirty during
 * the search (a nested write from a key's __eq__, say) is found. */

/* Load.  1 found (*v strong), 0 absent, -1 error. */
static int
sy_load_hashed(SMSMapObject *m, PyObject *key, Py_hash_t hash, PyObject **v)
{
    *v = NULL;
    if (sy_read_check(m) < 0) {
        return -1;
    }
    /* See "Misses without mu" above: `amended` loaded before the search
     * makes a miss an answer; loaded after too, so that a key stored into
     * dirty during the search is looked for under mu. */
    int amended = SM_LOAD_INT(&m->amended);
    int r = sm_tb_get(&m->read, key, hash, v);
    if (SM_LIKELY(r != 0 && r != SM_TB_CONTENDED)) {
        return r;
    }
    if (r == 0 && !amended && !SM_LOAD_INT(&m->amended)) {
        return 0;
    }
    int took, in_read;
    if (sy_lock_for_read(m, &took) < 0) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    r = sy_get_locked(m, key, hash, v, &in_read);
    if (r >= 0 && !in_read) {
        sy_miss_locked(m, !took, &g);
    }
    if (took) {
        sy_unlock(m);
    }
    sm_grave_release(&g);
    return r;
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

/* Count an in-place update (no lock: a lock-free counter). */
static inline void
sy_count_inplace(SMSMapObject *m)
{
    SM_CELL_ADD(m, &m->stats, updates, 1);
    if (SM_ITERATING(&m->stats)) {
        SM_CELL_ADD(m, &m->stats, during_iteration, 1);
    }
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
    SMLoc loc;
    int r = sm_tb_locate(&m->read, key, hash, &loc);
    if (r < 0 && r != SM_TB_CONTENDED) {
        return -1;
    }
    if (r > 0) {
        /* In place, no mutex -- unless frozen, deleted or moved. */
        PyObject *prev = NULL;
        SY_WLOCK(m);
        if (!SM_LOAD_INT(&m->frozen) && sm_tb_loc_valid(&m->read, &loc)) {
            prev = sm_tb_loc_exchange(&m->read, &loc, value);
        }
        SY_WUNLOCK(m);
        sm_tb_loc_release(&loc);
        if (prev != NULL) {
            if (prev != value) {
                sy_count_inplace(m);
            }
            *old = prev;
            return 0;
        }
    }
    if (sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    r = sy_set_locked(m, key, hash, value, old, &g);
    sy_unlock(m);
    sm_grave_release(&g);
    return r;
}

/* Delete.  1 removed (*old strong), 0 absent, -1 error.  Takes the mutex:
 * the key must leave read within the call (see sy_del_locked).  A key that is
 * in neither table is answered without it. */
static int
sy_pop_impl(PyObject *op, PyObject *key, PyObject **old)
{
    SMSMapObject *m = (SMSMapObject *)op;
    *old = NULL;
    Py_hash_t hash = sm_hash(key);
    if (hash == -1 || sy_write_check(m) < 0) {
        return -1;
    }
    if (!SM_LOAD_INT(&m->amended)) {
        PyObject *v;
        int r = sm_tb_get(&m->read, key, hash, &v);
        if (r == -1) {
            return -1;
        }
        if (r == 0 && !SM_LOAD_INT(&m->amended)) {
            return 0;  /* absent (see "Misses without mu") */
        }
        Py_XDECREF(v);
    }
    if (sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    int r = sy_del_locked(m, key, hash, old, &g, 1);
    sy_unlock(m);
    sm_grave_release(&g);  /* the stored key, released with no lock held */
    return r;
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
    PyObject *cur;
    int r = sm_tb_get(&m->read, key, hash, &cur);
    if (r == -1) {
        return -1;
    }
    if (r == 1) {
        *actual = cur;
        return 1;
    }
    if (sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    int in_read;
    r = sy_get_locked(m, key, hash, &cur, &in_read);
    if (r > 0) {
        *actual = cur;
    }
    else if (r == 0) {
        PyObject *old;
        if (sy_set_locked(m, key, hash, value, &old, &g) < 0) {
            r = -1;
        }
        else {
            Py_XDECREF(old);  /* NULL: the key was absent */
            *actual = Py_NewRef(value);
        }
    }
    sy_unlock(m);
    sm_grave_release(&g);
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
    SMLoc loc;
    int amended = SM_LOAD_INT(&m->amended);  /* before the search: see sy_load_hashed */
    int r = sm_tb_locate(&m->read, key, hash, &loc);
    if (r == -1) {
        return -1;
    }
    if (r == 1 && new == NULL) {
        /* compare_and_delete removes the key from read: locked path. */
        sm_tb_loc_release(&loc);
    }
    else if (r == 1) {
        /* Go's loop: compare outside any lock, then swap only if the slot
         * still holds the object compared. */
        sm_tb_loc_hold(&loc);  /* == runs Python code */
        for (;;) {
            PyObject *cur = NULL;
            SY_WLOCK(m);
            if (sm_tb_loc_valid(&m->read, &loc)) {
                cur = Py_NewRef(sm_tb_loc_value(&loc));
            }
            SY_WUNLOCK(m);
            if (cur == NULL) {
                break;  /* deleted or moved: go through mu */
            }
            int eq = PyObject_RichCompareBool(cur, expected, Py_EQ);
            if (eq <= 0) {
                Py_DECREF(cur);
                sm_tb_loc_release(&loc);
                return eq;
            }
            int res = -1;  /* -1: frozen, deleted or moved: take mu */
            PyObject *prev = NULL;
            SY_WLOCK(m);
            if (!SM_LOAD_INT(&m->frozen) && sm_tb_loc_valid(&m->read, &loc)) {
                if (sm_tb_loc_value(&loc) != cur) {
                    res = 0;  /* changed meanwhile: compare again */
                }
                else {
                    prev = sm_tb_loc_exchange(&m->read, &loc, new);
                    res = 1;
                }
            }
            SY_WUNLOCK(m);
            if (res == 1) {
                if (cur != new) {
                    sy_count_inplace(m);
                }
                Py_DECREF(prev);  /* the table's reference (prev == cur) */
                Py_DECREF(cur);   /* ours */
                sm_tb_loc_release(&loc);
                return 1;
            }
            Py_DECREF(cur);
            if (res == -1) {
                break;
            }
        }
        sm_tb_loc_release(&loc);
    }
    else if (r == 0 && !amended && !SM_LOAD_INT(&m->amended)) {
        return 0;
    }
    /* Locked path: values frozen while == runs. */
    int prev;
    if (sy_freeze_lock(m, &prev) < 0) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    PyObject *cur, *old = NULL;
    int in_read;
    r = sy_get_locked(m, key, hash, &cur, &in_read);
    if (r > 0) {
        r = PyObject_RichCompareBool(cur, expected, Py_EQ);
        if (r > 0) {
            if (new != NULL) {
                r = sy_set_locked(m, key, hash, new, &old, &g) < 0 ? -1 : 1;
            }
            else {
                r = sy_del_locked(m, key, hash, &old, &g, 0) < 0 ? -1 : 1;
            }
        }
    }
    sy_thaw_unlock(m, prev);
    Py_XDECREF(cur);
    Py_XDECREF(old);
    sm_grave_release(&g);
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
    SMGrave g;
    SM_GRAVE_INIT(&g);
    PyObject *res = NULL, *result = NULL, *replaced = NULL;
    int in_read;
    int r = sy_get_locked(m, key, hash, &old, &in_read);
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
        if (old != NULL && sy_del_locked(m, key, hash, &replaced, &g, 0) < 0) {
            goto unlock;
        }
        result = Py_NewRef(Py_None);
    }
    else {
        if (old != res && sy_set_locked(m, key, hash, res, &replaced, &g) < 0) {
            goto unlock;
        }
        result = Py_NewRef(res);
    }
unlock:
    sy_thaw_unlock(m, prev);
    Py_XDECREF(old);
    Py_XDECREF(res);
    Py_XDECREF(replaced);
    sm_grave_release(&g);
    return result;
}

/* Copy (key, value) of every entry into out, with values frozen (under mu,
 * re-entrant for a callback's own thread).  Consistent: one instant. */
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
    SY_WLOCK(m);
    SM_STORE_INT(&m->frozen, 1);
    SY_WUNLOCK(m);
    int rc = 0;
    if (sm_tb_collect(&m->read, out) < 0 || sm_tb_collect(&m->dirty, out) < 0) {
        rc = -1;
    }
    SM_STORE_INT(&m->frozen, prev);
    if (took) {
        sy_unlock(m);
    }
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

static int
sy_read_op(PyObject *op, PyObject *key, PyObject **out)
{
    return sy_load((SMSMapObject *)op, key, out);
}

static PyObject *
sy_get_or_compute(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return sm_get_or_compute_method(op, args, nargsf, kwnames, sy_read_op,
                                    (PyCFunction)(void (*)(void))sy_get, 0);
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

/* clear(): under mu, frozen, readers held off; both tables emptied (read's
 * under wmu: an in-place writer that found an entry before sees the table
 * gone and takes mu); everything released after the unlock. */
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
    SMGrave g;
    SM_GRAVE_INIT(&g);
    if (sm_grave_reserve(&g, 2 * (sm_tb_used(&m->read) + sm_tb_used(&m->dirty)) + 2) < 0) {
        sy_thaw_unlock(m, prev);
        return NULL;
    }
    SM_STORE_INT(&m->committing, 1);
    SM_STORE_INT(&m->guard, 1);
    SY_WLOCK(m);
    (void)sm_tb_clear(&m->read, &g);  /* space reserved: cannot fail */
    SY_WUNLOCK(m);
    (void)sm_tb_clear(&m->dirty, &g);
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
    sm_grave_release(&g);
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

/* Iteration, as Go's Range: promote dirty first (so read has every key),
 * then copy read's pairs lock-free (sm_tb_collect). */
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
    SMGrave g;
    SM_GRAVE_INIT(&g);
    int took = 0, nested = 0;
    int rc = 0;
    if (SM_LOAD_INT(&m->amended)) {
        if (sy_lock_for_read(m, &took) < 0) {
            return -1;
        }
        nested = !took;  /* our own callback: this thread holds mu */
        if (took) {
            sy_promote_locked(m, &g);
        }
    }
    if (nested && m->amended) {
        rc = sm_tb_collect(&m->dirty, buf);
    }
    if (rc == 0) {
        rc = sm_tb_collect(&m->read, buf);
    }
    if (took) {
        if (rc == 0 && m->amended) {
            rc = sm_tb_collect(&m->dirty, buf);  /* promotion failed */
        }
        sy_unlock(m);
    }
    sm_grave_release(&g);
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
    size += sm_tb_sizeof(&m->read) + sm_tb_sizeof(&m->dirty);
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
        "read_size", sm_tb_used(&m->read),
        "dirty_size", sm_tb_used(&m->dirty),
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
    int in_read;
    return sy_get_locked((SMSMapObject *)map, key, hash, v, &in_read);
}

static int
sy_txn_set(SMTxnStorage *t, PyObject *key, Py_hash_t hash, PyObject *value)
{
    SMSMapObject *m = (SMSMapObject *)t->map;
    /* Room for what this write can drop (old value, key or value, a table),
     * so that nothing fails once the map has changed. */
    if (sm_grave_reserve(&t->grave, 4) < 0) {
        return -1;
    }
    SM_STORE_INT(&m->committing, 1);
    PyObject *old = NULL;
    int r;
    if (value == NULL) {
        r = sy_del_locked(m, key, hash, &old, &t->grave, 0);
    }
    else {
        r = sy_set_locked(m, key, hash, value, &old, &t->grave);
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

/* A transaction holds mu with `frozen` set, so in-place writers wait too. */
static int
sy_txn_lock(PyObject *op)
{
    SMSMapObject *m = (SMSMapObject *)op;
    if (sy_write_check(m) < 0 || sy_lock(m, sm_me()) < 0) {
        return -1;
    }
    SY_WLOCK(m);
    SM_STORE_INT(&m->frozen, 1);
    SY_WUNLOCK(m);
    return 0;
}

static PyObject *
sy_txn_begin(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMSMapObject *m = (SMSMapObject *)op;
    return sm_txn_begin(&SMSyncStorage_Type, op, &m->txn_owner, &m->guard, &sy_txn_ops,
                        sy_txn_lock);
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

static PyObject *
sy_transact(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_txn_run(op, args, nargs, sy_txn_begin, sy_txn_end);
}

/* ------------------------------------------------------------ lifecycle */

static void
sy_after_fork(SMNode *node, void *me)
{
    SMSMapObject *m = (SMSMapObject *)((char *)node - offsetof(SMSMapObject, node));
    int mine = sm_lock_after_fork(&m->mu, me);
    /* wmu is never held across a fork's preparation by this thread (it is
     * held for a few instructions), and no other thread survives. */
#if SM_FREE_THREADED
    memset(&m->wmu, 0, sizeof(m->wmu));
#endif
    sm_tb_after_fork(&m->read);
    sm_tb_after_fork(&m->dirty);
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
    if (sm_stats_init(&m->stats) < 0) {
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
    int rc = sm_tb_traverse(&m->read, visit, arg);
    return rc ? rc : sm_tb_traverse(&m->dirty, visit, arg);
}

static int
sy_tp_clear(PyObject *op)
{
    SMSMapObject *m = (SMSMapObject *)op;
    m->count = 0;
    m->amended = 0;
    m->misses = 0;
    sm_tb_fini(&m->read);
    sm_tb_fini(&m->dirty);
    return 0;
}

static void
sy_dealloc(PyObject *op)
{
    SMSMapObject *m = (SMSMapObject *)op;
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, sy_dealloc)
    sm_unregister(&m->node);
    if (m->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    m->count = 0;
    sm_tb_fini(&m->read);
    sm_tb_fini(&m->dirty);
    sm_lock_fini(&m->mu);
    sm_stats_fini(&m->stats);
    Py_TYPE(op)->tp_free(op);
    Py_TRASHCAN_END
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
    {"get_or_compute", (PyCFunction)(void (*)(void))sy_get_or_compute,
     METH_FASTCALL | METH_KEYWORDS, SM_DOC_GET_OR_COMPUTE},
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
    {"_transact", (PyCFunction)(void (*)(void))sy_transact, METH_FASTCALL, SM_DOC_TRANSACT},
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
