/*
 * sm_cmap.c -- ConcurrentMapBase, the native core of safemap.ConcurrentMap.
 *
 * Layout.  A fixed array of shards chosen at construction; each shard is a hash
 * table of its own (sm_table.c: dict's layout and probe order, lock-free
 * readers) plus a lock (SMLock), an entry count and counters.  A key's shard
 * is picked from its hash (multiplied by a 64-bit odd constant so the shard
 * bits are independent of the low bits the table uses for its own slots), so
 * a key lives in exactly one shard for the map's whole life.
 *
 * How each kind of operation stays atomic (linearizable), also when a key's
 * __hash__/__eq__ or a callback runs Python code, releases the GIL or blocks:
 *
 *  - __hash__ always runs first, before any lock is taken and before anything
 *    is read: whatever it does, the operation has not started yet.
 *
 *  - Reads (m[k], get, in, load, the compute_if_* fast paths) take no lock
 *    (sm_tb_get).  On GIL builds a lookup that calls a key's __eq__ holds the
 *    stored key and the table and restarts if either changed meanwhile, as
 *    dict does.  On free-threaded 3.14+ a read writes no shared memory but the
 *    returned value's reference count (see sm_table.h); after repeated lost
 *    races with writers of its entry it reads under the shard lock if the
 *    thread holds no lock (else it backs off and retries).  Every writer
 *    changes the table in ONE step at the very end of its operation (one
 *    pointer store seen by readers), so a reader sees the state before or
 *    after each write, never a half-done compute.  The one exception is a
 *    change spanning shards (clear, a transaction's commit): it sets
 *    `guard`/`committing` first, and readers that see them wait on the shard
 *    lock until the change is complete.
 *
 *  - Writes (store, delete, swap, compare-and-*, the compute family) take the
 *    shard lock for the whole read-modify-write, so they serialize with each
 *    other and with compute callbacks on that shard.  A key's __eq__ running
 *    during the write therefore cannot let another writer in, and a blocked
 *    callback blocks only its own shard.  Waiting for a shard lock never holds
 *    the GIL (sm_lock.h).
 *
 *  - Re-entry.  A thread that holds a shard lock of this map (inside a compute
 *    callback, a key's __eq__ during a write, or transaction(fn)) and asks for
 *    another write -- to any shard -- gets RecursiveUpdateError: the same shard
 *    would self-deadlock, another shard could deadlock against a thread doing
 *    the reverse.  The check is one load on the hot path: on GIL builds the
 *    map's count of held shard locks (`held`, non-zero only while some thread
 *    runs Python code under a lock), on free-threaded builds a thread-local
 *    count; only when non-zero are the shard owners scanned for this thread.
 *    Reads from callbacks are allowed (they take no lock); inside
 *    transaction(fn) every method of the map raises (use the view).
 *
 *  - Nothing the map drops is released under a lock: replaced values,
 *    removed keys and values and replaced tables go to an SMGrave that the
 *    writer releases after unlocking, so every __del__ runs with no lock of
 *    the map held (and may write to it).
 *
 *  - Exceptions leave no trace: every path changes the table only in its last
 *    step, after every Python callback and comparison has succeeded; a table
 *    change that fails (MemoryError while growing) changes nothing.
 *
 *  - Iteration copies one shard at a time (sm_tb_collect: lock-free; no
 *    Python code on GIL builds; on free-threaded builds each pair is taken
 *    with a re-checked try-incref) and yields from the copy with no lock held.
 *
 *  - len() sums the shards' counts (each written by its lock holder only, on
 *    the shard's own cache line, so writers share no counter); on
 *    free-threaded builds the shard versions around the sum show that it was
 *    taken at one instant.
 *
 *  - snapshot() reads every shard's version, copies every shard, and re-reads
 *    the versions: unchanged and even means no mutation happened anywhere in
 *    between, so the copy is the map at one instant.  After a few failed tries
 *    a thread that holds no lock of this map locks every shard in index order
 *    instead; a thread inside a compute callback keeps retrying (it must never
 *    block on another shard while holding its own: that is the deadlock the
 *    re-entry rule exists to prevent).
 */
#include "sm_cmap.h"
#include "sm_glue.h"

/* ---------------------------------------------------------- bookkeeping */

#if SM_FREE_THREADED
#  define HELD_INC(m) ((void)(m), sm_tls_held++)
#  define HELD_DEC(m) ((void)(m), sm_tls_held--)
#  define REENTRY_POSSIBLE(m) (sm_tls_held != 0)
#else
#  define HELD_INC(m) ((m)->held++)
#  define HELD_DEC(m) ((m)->held--)
#  define REENTRY_POSSIBLE(m) ((m)->held != 0)
#endif

/* Bracket one table change: the version is odd while it is in progress. */
#define BEGIN_MUT(s) SM_ADD_SSIZE(&(s)->version, 1)
#define END_MUT(s) SM_ADD_SSIZE(&(s)->version, 1)

#define MSG_WRITE_REENTRY \
    "cannot write to a ConcurrentMap from inside one of its own compute " \
    "callbacks (or from a key's __eq__/__hash__ during a write to it)"
#define MSG_TXN_REENTRY \
    "cannot call a ConcurrentMap's methods inside its own transaction(); " \
    "use the view passed to the function"

static inline SMShard *
cm_shard(SMCMapObject *m, Py_hash_t hash)
{
    uint64_t x = (uint64_t)hash * UINT64_C(0x9E3779B97F4A7C15);
    uint64_t idx = ((x >> 32) * (uint64_t)m->nshards) >> 32;
    return &m->shards[idx].s;
}

static inline SMShard *
cm_shard_at(SMCMapObject *m, Py_ssize_t i)
{
    return &m->shards[i].s;
}

/* Does the calling thread hold any shard lock of m? */
static int
cm_held_by_me(SMCMapObject *m, void *me)
{
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        if (sm_lock_held_by(&cm_shard_at(m, i)->lock, me)) {
            return 1;
        }
    }
    return 0;
}

static inline void cm_unlock(SMCMapObject *m, SMShard *s);

/* Count one changing write made under s's lock: size_delta +1 inserted a key,
 * -1 removed one, 0 replaced a value with another object. */
static inline void
cm_wrote(SMCMapObject *m, SMShard *s, Py_ssize_t size_delta)
{
    if (size_delta > 0) {
        SM_WROTE(s->writes, inserts, 1, &m->stats);
    }
    else if (size_delta < 0) {
        SM_WROTE(s->writes, deletes, 1, &m->stats);
    }
    else {
        SM_WROTE(s->writes, updates, 1, &m->stats);
    }
}

static int
cm_write_reentry_slow(SMCMapObject *m)
{
    void *me = sm_me();
    if (SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    if (cm_held_by_me(m, me)) {
        return sm_raise_recursive(MSG_WRITE_REENTRY);
    }
    return 0;
}

/* 0 if the calling thread may start a write on m, else -1 with
 * RecursiveUpdateError set. */
static inline int
cm_write_check(SMCMapObject *m)
{
    sm_note_thread((PyObject *)m, &m->shared);
    if (SM_LIKELY(!REENTRY_POSSIBLE(m))) {
        return 0;
    }
    return cm_write_reentry_slow(m);
}

static int
cm_read_slow(SMCMapObject *m, SMShard *s)
{
    void *me = sm_me();
    if (SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    if (SM_LOAD_INT(&m->committing)) {
        /* Shards are being changed together, under every shard lock.  This
         * thread holds none of them (the committer holds them all), so
         * waiting for this shard's lock is deadlock-free; once we get it the
         * change is complete. */
        if (sm_lock_counted(&s->lock, &s->lockstats, me) < 0) {
            return -1;
        }
        int64_t sampled = sm_unlock_counted(&s->lock, &s->lockstats);
        if (SM_UNLIKELY(sampled)) {
            sm_report_wait(SM_str_ConcurrentMap, sampled);
        }
    }
    return 0;
}

/* 0 if a read of shard s may proceed (lock-free), else -1. */
static inline int
cm_read_check(SMCMapObject *m, SMShard *s)
{
    sm_note_thread((PyObject *)m, &m->shared);
    if (SM_LIKELY(SM_LOAD_INT(&m->guard) == 0)) {
        return 0;
    }
    return cm_read_slow(m, s);
}

static inline int
cm_lock(SMCMapObject *m, SMShard *s, void *me)
{
    if (sm_lock_counted(&s->lock, &s->lockstats, me) < 0) {
        return -1;
    }
    HELD_INC(m);
    return 0;
}

/* Release s; returns its sampled wait for sm_report_wait, or 0. */
static inline int64_t
cm_release(SMCMapObject *m, SMShard *s)
{
    HELD_DEC(m);
    return sm_unlock_counted(&s->lock, &s->lockstats);
}

/* Release s, the only lock of m this thread holds, and report a sampled wait
 * for it (Python code: only once nothing of m is held). */
static inline void
cm_unlock(SMCMapObject *m, SMShard *s)
{
    int64_t sampled = cm_release(m, s);
    if (SM_UNLIKELY(sampled)) {
        sm_report_wait(SM_str_ConcurrentMap, sampled);
    }
}

/* Hash key, check re-entry, lock its shard.  NULL with an exception set on
 * failure (nothing held). */
static inline SMShard *
cm_begin_write(SMCMapObject *m, PyObject *key, Py_hash_t hash)
{
    if (cm_write_check(m) < 0) {
        return NULL;
    }
    SMShard *s = cm_shard(m, hash);
    if (cm_lock(m, s, sm_me()) < 0) {
        return NULL;
    }
    (void)key;
    return s;
}

/* Release shards [0, n), held by this thread, in reverse order; then report
 * their sampled waits (none is reported while any of them is held). */
static void
cm_unlock_first(SMCMapObject *m, Py_ssize_t n)
{
    int64_t one = 0;       /* the usual case: at most one sampled wait */
    int64_t *many = NULL;  /* more: copied out before the shards are released */
    Py_ssize_t nsampled = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        nsampled += cm_shard_at(m, i)->lockstats.sampled != 0;
    }
    if (SM_UNLIKELY(nsampled > 1)) {
        /* PyMem runs no Python code; out of memory, the samples are dropped. */
        many = PyMem_Malloc((size_t)nsampled * sizeof(int64_t));
    }
    nsampled = 0;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        int64_t sampled = cm_release(m, cm_shard_at(m, i));
        if (SM_UNLIKELY(sampled)) {
            if (many != NULL) {
                many[nsampled++] = sampled;
            }
            else {
                one = sampled;
            }
        }
    }
    if (SM_UNLIKELY(one)) {
        sm_report_wait(SM_str_ConcurrentMap, one);
    }
    if (SM_UNLIKELY(many != NULL)) {
        for (Py_ssize_t i = 0; i < nsampled; i++) {
            sm_report_wait(SM_str_ConcurrentMap, many[i]);
        }
        PyMem_Free(many);
    }
}

/* Lock every shard in index order (the one global lock order; only threads
 * holding no lock of m do this).  0 or -1 (nothing held). */
static int
cm_lock_all(SMCMapObject *m)
{
    if (cm_write_check(m) < 0) {
        return -1;
    }
    void *me = sm_me();
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        if (cm_lock(m, cm_shard_at(m, i), me) < 0) {
            cm_unlock_first(m, i);
            return -1;
        }
    }
    return 0;
}

static void
cm_unlock_all(SMCMapObject *m)
{
    cm_unlock_first(m, m->nshards);
}

/* Mark every shard as mid-mutation (odd versions) and make readers wait:
 * called holding every shard lock, before changing several shards. */
static void
cm_begin_multi(SMCMapObject *m)
{
    SM_STORE_INT(&m->committing, 1);
    SM_STORE_INT(&m->guard, 1);
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        BEGIN_MUT(cm_shard_at(m, i));
    }
}

static void
cm_end_multi(SMCMapObject *m)
{
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        END_MUT(cm_shard_at(m, i));
    }
    SM_STORE_INT(&m->committing, 0);
}

/* ------------------------------------------------------------ table changes */
/* Each is one change of s's table, made holding s's lock, bracketed by the
 * shard's version and counted; what it drops goes to g (room for 1), to be
 * released after the lock. */

/* Insert an absent key.  0, or -1 with MemoryError set (nothing changed). */
static int
cm_insert(SMCMapObject *m, SMShard *s, SMPos *p, PyObject *key, Py_hash_t hash,
          PyObject *value, SMGrave *g)
{
    BEGIN_MUT(s);
    int r = sm_tb_insert(&s->tab, p, key, hash, value, g);
    if (r == 0) {
        SM_BUMP(&s->count, 1);
    }
    END_MUT(s);
    if (r == 0) {
        cm_wrote(m, s, 1);
    }
    return r;
}

/* Give the entry found at p another value (a different object). */
static void
cm_replace(SMCMapObject *m, SMShard *s, SMPos *p, PyObject *value, SMGrave *g)
{
    BEGIN_MUT(s);
    sm_tb_replace(&s->tab, p, value, g);
    END_MUT(s);
    cm_wrote(m, s, 0);
}

/* Remove the entry found at p; *old receives the map's reference to the value. */
static void
cm_remove(SMCMapObject *m, SMShard *s, SMPos *p, PyObject **old, SMGrave *g)
{
    BEGIN_MUT(s);
    sm_tb_remove(&s->tab, p, old, g);
    SM_BUMP(&s->count, -1);
    END_MUT(s);
    cm_wrote(m, s, -1);
}

/* The number of entries: the sum of the shards' counts, read at one instant
 * (free-threaded builds: the shard versions, unchanged and even around the
 * sum, show that no write happened in between; after a few tries a thread
 * holding no lock of m takes every lock).  -1 with an exception set on
 * failure. */
static Py_ssize_t
cm_count(SMCMapObject *m)
{
#if SM_FREE_THREADED
    for (int attempt = 0;; attempt++) {
        Py_ssize_t v1 = 0, v2 = 0, n = 0;
        int ok = 1;
        for (Py_ssize_t i = 0; i < m->nshards; i++) {
            Py_ssize_t v = SM_LOAD_SSIZE(&cm_shard_at(m, i)->version);
            ok &= (v & 1) == 0;
            v1 += v;
        }
        for (Py_ssize_t i = 0; i < m->nshards; i++) {
            n += SM_LOAD_SSIZE(&cm_shard_at(m, i)->count);
        }
        for (Py_ssize_t i = 0; i < m->nshards; i++) {
            v2 += SM_LOAD_SSIZE(&cm_shard_at(m, i)->version);
        }
        if (ok && v1 == v2) {  /* versions only grow: equal sums, equal versions */
            return n;
        }
        if (attempt >= 8 && !cm_held_by_me(m, sm_me())) {
            if (cm_lock_all(m) < 0) {
                return -1;
            }
            n = 0;
            for (Py_ssize_t i = 0; i < m->nshards; i++) {
                n += cm_shard_at(m, i)->count;
            }
            cm_unlock_all(m);
            return n;
        }
        sm_backoff(attempt);
    }
#else
    /* No Python code runs during the loop: the GIL makes it one instant. */
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        n += cm_shard_at(m, i)->count;
    }
    return n;
#endif
}

/* ------------------------------------------------------------ primitives */

/* The lock-free read kept losing races with writers of its slot (free-
 * threaded builds only): read under the shard lock if this thread holds no
 * lock (then waiting cannot deadlock), else back off and retry lock-free. */
static int
cm_read_contended(SMCMapObject *m, SMShard *s, PyObject *key, Py_hash_t hash,
                  PyObject **out)
{
    for (int attempt = 0;; attempt++) {
        if (!REENTRY_POSSIBLE(m)) {
            if (cm_lock(m, s, sm_me()) < 0) {
                *out = NULL;
                return -1;
            }
            SMPos pos;
            int r = sm_tb_find(&s->tab, key, hash, &pos);
            *out = r == 1 ? Py_NewRef(sm_tb_value_at(&pos)) : NULL;
            cm_unlock(m, s);
            return r;
        }
        sm_backoff(attempt);
        int r = sm_tb_get(&s->tab, key, hash, out);
        if (r != SM_TB_CONTENDED) {
            return r;
        }
    }
}

/* Lock-free read.  1: found (*out strong), 0: absent, -1: error. */
static inline int
cm_read_hashed(SMCMapObject *m, PyObject *key, Py_hash_t hash, PyObject **out)
{
    SMShard *s = cm_shard(m, hash);
    if (cm_read_check(m, s) < 0) {
        *out = NULL;
        return -1;
    }
    int r = sm_tb_get(&s->tab, key, hash, out);
    if (SM_UNLIKELY(r == SM_TB_CONTENDED)) {
        return cm_read_contended(m, s, key, hash, out);
    }
    return r;
}

/* A point read (m[k], get, in, load): counted as a hit or a miss.  Inlined
 * into each of them: the call a shared copy costs shows on the read path. */
SM_ALWAYS_INLINE int
cm_read(SMCMapObject *m, PyObject *key, PyObject **out)
{
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        *out = NULL;
        return -1;
    }
    int r = cm_read_hashed(m, key, hash, out);
    if (r > 0) {
        SM_CELL_ADD(m, &m->stats, hits, 1);
    }
    else if (r == 0) {
        SM_CELL_ADD(m, &m->stats, misses, 1);
    }
    return r;
}

/* m[key] = value.  0 or -1. */
static int
cm_store_impl(SMCMapObject *m, PyObject *key, PyObject *value)
{
    if (sm_check_value(value) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return -1;
    }
    SMShard *s = cm_begin_write(m, key, hash);
    if (s == NULL) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    if (r == 1) {
        if (sm_tb_value_at(&pos) != value) {
            cm_replace(m, s, &pos, value, &g);
        }
        r = 0;
    }
    else if (r == 0) {
        r = cm_insert(m, s, &pos, key, hash, value, &g);
    }
    cm_unlock(m, s);
    sm_grave_release(&g);  /* the old value's __del__ runs with no lock held */
    return r;
}

/* Remove key.  1: removed (*old strong, release it after this returns),
 * 0: absent, -1: error. */
static int
cm_pop_impl(PyObject *op, PyObject *key, PyObject **old)
{
    SMCMapObject *m = (SMCMapObject *)op;
    *old = NULL;
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return -1;
    }
    SMShard *s = cm_begin_write(m, key, hash);
    if (s == NULL) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    if (r == 1) {
        cm_remove(m, s, &pos, old, &g);
    }
    cm_unlock(m, s);
    sm_grave_release(&g);  /* the stored key, released with no lock held */
    return r;
}

/* The compute family.  The callback runs holding the shard lock, so it is
 * atomic with every other write to the shard (which also keeps the key's
 * slot where the lookup found it); reads stay lock-free and see the old
 * value until the single table change that installs the result. */
static PyObject *
cm_compute_impl(PyObject *op, PyObject *key, Py_hash_t hash, PyObject *fn, PyObject *mval,
                int mode)
{
    SMCMapObject *m = (SMCMapObject *)op;
    PyObject *old = NULL;
    if (mode == SM_IF_ABSENT || mode == SM_IF_PRESENT) {
        /* Lock-free fast path: the answer at the instant of the read. */
        int r = sm_compute_read_answers(mode, cm_read_hashed(m, key, hash, &old), &old);
        if (r != 0) {
            return r > 0 ? old : NULL;
        }
    }
    SMShard *s = cm_begin_write(m, key, hash);
    if (s == NULL) {
        return NULL;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    PyObject *res = NULL;     /* callback's answer */
    PyObject *result = NULL;  /* what we return */
    PyObject *gone = NULL;    /* a removed value */
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    if (r < 0) {
        goto unlock;
    }
    if (r == 1) {
        old = Py_NewRef(sm_tb_value_at(&pos));
    }
    int c = sm_compute_call(mode, key, old, fn, mval, &res);
    if (c <= 0) {
        result = res;  /* no change: the answer, or NULL on error */
        res = NULL;
        goto unlock;
    }
    if (res == SM_DELETE) {
        if (old != NULL) {
            cm_remove(m, s, &pos, &gone, &g);
        }
        result = Py_NewRef(Py_None);
    }
    else {
        if (old == NULL) {
            if (cm_insert(m, s, &pos, key, hash, res, &g) < 0) {
                goto unlock;
            }
        }
        else if (old != res) {
            cm_replace(m, s, &pos, res, &g);
        }
        result = Py_NewRef(res);
    }
unlock:
    cm_unlock(m, s);
    Py_XDECREF(old);
    Py_XDECREF(res);
    Py_XDECREF(gone);
    sm_grave_release(&g);
    return result;
}

/* ------------------------------------------------------------ slots */

static Py_ssize_t
cm_length(PyObject *op)
{
    SMCMapObject *m = (SMCMapObject *)op;
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && cm_read_slow(m, cm_shard_at(m, 0)) < 0) {
        return -1;
    }
    return cm_count(m);
}

static PyObject *
cm_subscript(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = cm_read((SMCMapObject *)op, key, &v);
    if (r > 0) {
        return v;
    }
    if (r == 0) {
        sm_key_error(key);
    }
    return NULL;
}

static int
cm_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    SMCMapObject *m = (SMCMapObject *)op;
    if (value != NULL) {
        return cm_store_impl(m, key, value);
    }
    PyObject *old;
    int r = cm_pop_impl(op, key, &old);
    if (r == 0) {
        sm_key_error(key);
        return -1;
    }
    Py_XDECREF(old);
    return r < 0 ? -1 : 0;
}

static int
cm_contains(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = cm_read((SMCMapObject *)op, key, &v);
    Py_XDECREF(v);
    return r;
}

/* ------------------------------------------------------------ methods */

static PyObject *
cm_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("get", nargs, 1, 2) < 0) {
        return NULL;
    }
    PyObject *v;
    int r = cm_read((SMCMapObject *)op, args[0], &v);
    if (r > 0) {
        return v;
    }
    if (r < 0) {
        return NULL;
    }
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static int
cm_read_op(PyObject *op, PyObject *key, PyObject **out)
{
    return cm_read((SMCMapObject *)op, key, out);
}

static PyObject *
cm_get_or_compute(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return sm_get_or_compute_method(op, args, nargsf, kwnames, cm_read_op,
                                    (PyCFunction)(void (*)(void))cm_get, 0);
}

static PyObject *
cm_load(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = cm_read((SMCMapObject *)op, key, &v);
    if (r < 0) {
        return NULL;
    }
    return sm_pair(v, r);
}

static PyObject *
cm_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("store", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (cm_store_impl((SMCMapObject *)op, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
cm_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_pop_method(op, args, nargs, cm_pop_impl);
}

static PyObject *
cm_load_and_delete(PyObject *op, PyObject *key)
{
    return sm_load_and_delete_method(op, key, cm_pop_impl);
}

static PyObject *
cm_delete(PyObject *op, PyObject *key)
{
    return sm_delete_method(op, key, cm_pop_impl);
}

/* load_or_store / setdefault / swap share one locked setdefault.  1: key was
 * present (*cur strong: its value before the call), 0: inserted (*cur strong:
 * value), -1: error. */
static int
cm_setdefault_impl(SMCMapObject *m, PyObject *key, PyObject *value, int replace,
                   PyObject **cur)
{
    *cur = NULL;
    if (sm_check_value(value) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return -1;
    }
    SMShard *s = cm_begin_write(m, key, hash);
    if (s == NULL) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    if (r == 1) {
        *cur = Py_NewRef(sm_tb_value_at(&pos));
        if (replace && *cur != value) {
            cm_replace(m, s, &pos, value, &g);
        }
    }
    else if (r == 0) {
        if (cm_insert(m, s, &pos, key, hash, value, &g) < 0) {
            r = -1;
        }
        else {
            *cur = Py_NewRef(value);
        }
    }
    cm_unlock(m, s);
    sm_grave_release(&g);
    return r;
}

static int
cm_load_or_store_impl(PyObject *op, PyObject *key, PyObject *value, PyObject **actual)
{
    return cm_setdefault_impl((SMCMapObject *)op, key, value, 0, actual);
}

static PyObject *
cm_load_or_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_load_or_store_method(op, args, nargs, cm_load_or_store_impl);
}

static PyObject *
cm_setdefault(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_setdefault_method(op, args, nargs, cm_load_or_store_impl);
}

static PyObject *
cm_swap(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("swap", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *cur;
    int r = cm_setdefault_impl((SMCMapObject *)op, args[0], args[1], 1, &cur);
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        Py_DECREF(cur);  /* that is the value we just stored */
        return sm_pair(NULL, 0);
    }
    return sm_pair(cur, 1);
}

/* compare_and_swap (new != NULL) and compare_and_delete (new == NULL).  The
 * value comparison (identity first, then ==) runs under the shard lock, so the
 * compare and the swap are one atomic step. */
static int
cm_compare_and_impl(PyObject *op, PyObject *key, PyObject *expected, PyObject *new)
{
    SMCMapObject *m = (SMCMapObject *)op;
    if (new != NULL && sm_check_value(new) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return -1;
    }
    if (sm_is_sentinel(expected)) {
        return 0;  /* never stored, so never equal to a stored value */
    }
    SMShard *s = cm_begin_write(m, key, hash);
    if (s == NULL) {
        return -1;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    PyObject *cur = NULL, *gone = NULL;
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    if (r == 1) {
        cur = Py_NewRef(sm_tb_value_at(&pos));
        r = PyObject_RichCompareBool(cur, expected, Py_EQ);
        if (r == 1) {
            if (new == NULL) {
                cm_remove(m, s, &pos, &gone, &g);
            }
            else if (new != cur) {
                cm_replace(m, s, &pos, new, &g);
            }
        }
    }
    cm_unlock(m, s);
    Py_XDECREF(cur);
    Py_XDECREF(gone);
    sm_grave_release(&g);
    return r;
}

static PyObject *
cm_compare_and_swap(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compare_and_swap_method(op, args, nargs, cm_compare_and_impl);
}

static PyObject *
cm_compare_and_delete(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compare_and_delete_method(op, args, nargs, cm_compare_and_impl);
}

static PyObject *
cm_compute(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_COMPUTE, cm_compute_impl);
}

static PyObject *
cm_compute_if_absent(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_IF_ABSENT, cm_compute_impl);
}

static PyObject *
cm_compute_if_present(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_IF_PRESENT, cm_compute_impl);
}

static PyObject *
cm_merge(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_MERGE, cm_compute_impl);
}

/* clear(): atomic for every observer.  Under every shard lock, with readers
 * held off (guard/committing) and snapshots invalidated (odd versions), each
 * shard's table is detached; the tables and their contents are released
 * after the locks, so no __del__ runs under them. */
static PyObject *
cm_clear(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCMapObject *m = (SMCMapObject *)op;
    if (cm_lock_all(m) < 0) {
        return NULL;
    }
    SMGrave g;
    SM_GRAVE_INIT(&g);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        total += 2 * cm_shard_at(m, i)->count + 1;
    }
    if (sm_grave_reserve(&g, total) < 0) {
        cm_unlock_all(m);
        return NULL;
    }
    cm_begin_multi(m);
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        SMShard *s = cm_shard_at(m, i);
        Py_ssize_t n = s->count;
        (void)sm_tb_clear(&s->tab, &g);  /* cannot fail: the space is reserved */
        SM_STORE_SSIZE_RELAXED(&s->count, 0);
        if (n > 0) {
            SM_WROTE(s->writes, deletes, n, &m->stats);
        }
    }
    cm_end_multi(m);
    SM_STORE_INT(&m->guard, 0);
    cm_unlock_all(m);
    sm_grave_release(&g);
    Py_RETURN_NONE;
}

/* Copy the whole map at one instant into buf (see the header comment). */
static int
cm_collect_all(SMCMapObject *m, SMBuf *buf)
{
    void *me = sm_me();
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && SM_LOAD_PTR(&m->txn_owner) == me) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    Py_ssize_t n = m->nshards;
    Py_ssize_t *seen = PyMem_Malloc((size_t)n * sizeof(Py_ssize_t));
    if (seen == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        int ok = 1;
        for (Py_ssize_t i = 0; i < n && ok; i++) {
            SMShard *s = cm_shard_at(m, i);
            seen[i] = SM_LOAD_SSIZE(&s->version);
            /* A shard whose lock this thread holds cannot change while we are
             * here (a table change runs no Python code, so its odd version is
             * never seen by its own thread; the exception is a transaction's
             * commit, whose owner is refused above). */
            ok = (seen[i] & 1) == 0 || sm_lock_held_by(&s->lock, me);
        }
        for (Py_ssize_t i = 0; i < n && ok; i++) {
            if (sm_tb_collect(&cm_shard_at(m, i)->tab, buf) < 0) {
                rc = -1;
                goto done;
            }
        }
        for (Py_ssize_t i = 0; i < n && ok; i++) {
            ok = SM_LOAD_SSIZE(&cm_shard_at(m, i)->version) == seen[i];
        }
        if (ok) {
            break;
        }
        sm_buf_clear(buf);
        if (attempt >= 8 && !cm_held_by_me(m, me)) {
            /* Writers keep getting in: take every lock (in index order; this
             * thread holds none, so this cannot deadlock). */
            if (cm_lock_all(m) < 0) {
                rc = -1;
                goto done;
            }
            for (Py_ssize_t i = 0; i < n; i++) {
                if (sm_tb_collect(&cm_shard_at(m, i)->tab, buf) < 0) {
                    rc = -1;
                    break;
                }
            }
            cm_unlock_all(m);
            goto done;
        }
        sm_backoff(attempt);
    }
done:
    PyMem_Free(seen);
    return rc;
}

static PyObject *
cm_snapshot(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMBuf buf = {NULL, 0, 0};
    if (cm_collect_all((SMCMapObject *)op, &buf) < 0) {
        sm_buf_clear(&buf);
        return NULL;
    }
    return sm_buf_snapshot(&buf);
}

static int
cm_fill(PyObject *owner, Py_ssize_t index, SMBuf *buf)
{
    SMCMapObject *m = (SMCMapObject *)owner;
    if (index >= m->nshards) {
        return 0;
    }
    SMShard *s = cm_shard_at(m, index);
    if (cm_read_check(m, s) < 0) {
        return -1;
    }
    return sm_tb_collect(&s->tab, buf) < 0 ? -1 : 1;
}

static PyObject *
cm_iter_common(SMCMapObject *m, int kind)
{
    return sm_map_iter((PyObject *)m, &m->guard, &m->txn_owner, MSG_TXN_REENTRY, &m->stats,
                       cm_fill, kind);
}

static PyObject *
cm_iter(PyObject *op)
{
    return cm_iter_common((SMCMapObject *)op, SM_ITER_KEYS);
}

static PyObject *
cm_iter_items(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return cm_iter_common((SMCMapObject *)op, SM_ITER_ITEMS);
}

static PyObject *
cm_options(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{s:n}", "shards", ((SMCMapObject *)op)->nshards);
}

static PyObject *
cm_sizeof(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCMapObject *m = (SMCMapObject *)op;
    Py_ssize_t size = Py_TYPE(op)->tp_basicsize + SM_SHARD_STRIDE
                      + m->nshards * (Py_ssize_t)sizeof(SMShardSlot);
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        size += sm_tb_sizeof(&cm_shard_at(m, i)->tab);
    }
    return PyLong_FromSsize_t(size);
}

/* _stats_raw(): the counters, read without locks (each exact once the
 * operations it races with are done), as a dict whose keys are MapStats
 * field names; "shards" is a list of (entries, lock_acquisitions,
 * lock_contentions, lock_wait_seconds).  safemap.native builds the MapStats. */
static PyObject *
cm_stats_raw(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCMapObject *m = (SMCMapObject *)op;
    Py_ssize_t n = m->nshards;
    SMWrites w = {0, 0, 0, 0};
    SMLockStats total = {0, 0, 0, 0};
    Py_ssize_t entries = 0;
    PyObject *d = PyDict_New();
    PyObject *shards = PyList_New(n);
    if (d == NULL || shards == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        SMShard *s = cm_shard_at(m, i);
        Py_ssize_t acq = SM_LOAD_SSIZE_RELAXED(&s->lockstats.acquisitions);
        Py_ssize_t cont = SM_LOAD_SSIZE_RELAXED(&s->lockstats.contentions);
        int64_t wait = SM_LOAD_I64_RELAXED(&s->lockstats.wait_ns);
        total.acquisitions += acq;
        total.contentions += cont;
        total.wait_ns += wait;
        sm_writes_add(&w, &s->writes);
        Py_ssize_t count = SM_LOAD_SSIZE_RELAXED(&s->count);
        entries += count;
        PyObject *row = Py_BuildValue("(nnnd)", count, acq, cont,
                                      (double)wait / 1e9);
        if (row == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(shards, i, row);
    }
    PyObject *size = PyLong_FromSsize_t(entries);
    if (size == NULL) {
        goto fail;
    }
    int rc = PyDict_SetItemString(d, "size", size);
    Py_DECREF(size);
    if (rc < 0 || sm_stats_into(d, &w, &m->stats) < 0 || sm_lock_stats_into(d, &total) < 0 ||
        PyDict_SetItemString(d, "shards", shards) < 0) {
        goto fail;
    }
    Py_DECREF(shards);
    return d;
fail:
    Py_XDECREF(d);
    Py_XDECREF(shards);
    return NULL;
}

/* ------------------------------------------------------------ transaction */

/* The transaction's storage (sm_glue.h) reads and writes the shards
 * themselves: the thread that runs the transaction holds every shard lock. */

static int
cm_txn_get(PyObject *map, PyObject *key, Py_hash_t hash, PyObject **v)
{
    SMShard *s = cm_shard((SMCMapObject *)map, hash);
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    *v = r > 0 ? Py_NewRef(sm_tb_value_at(&pos)) : NULL;
    return r;
}

static int
cm_txn_set(SMTxnStorage *t, PyObject *key, Py_hash_t hash, PyObject *value)
{
    SMCMapObject *m = (SMCMapObject *)t->map;
    SMShard *s = cm_shard(m, hash);
    SMPos pos;
    int r = sm_tb_find(&s->tab, key, hash, &pos);
    if (r < 0 || (value == NULL && r == 0)) {
        return r;
    }
    /* Room for what this change can drop (key, value, table), so that
     * nothing fails once the shard has changed. */
    if (sm_grave_reserve(&t->grave, 3) < 0) {
        return -1;
    }
    /* First write of the commit: hold readers off and invalidate snapshots. */
    if (!SM_LOAD_INT(&m->committing)) {
        cm_begin_multi(m);
    }
    if (value == NULL) {
        PyObject *old;
        cm_remove(m, s, &pos, &old, &t->grave);
        sm_grave_push(&t->grave, old);
    }
    else if (r == 1) {
        if (sm_tb_value_at(&pos) != value) {
            cm_replace(m, s, &pos, value, &t->grave);
        }
    }
    else if (cm_insert(m, s, &pos, key, hash, value, &t->grave) < 0) {
        return -1;
    }
    return 1;
}

static Py_ssize_t
cm_txn_length(PyObject *map)
{
    /* This thread holds every shard lock: the counts cannot move. */
    SMCMapObject *m = (SMCMapObject *)map;
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        n += cm_shard_at(m, i)->count;
    }
    return n;
}

static int
cm_txn_collect(PyObject *map, SMBuf *buf)
{
    SMCMapObject *m = (SMCMapObject *)map;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        if (sm_tb_collect(&cm_shard_at(m, i)->tab, buf) < 0) {
            return -1;
        }
    }
    return 0;
}

static const SMTxnOps cm_txn_ops = {cm_txn_get, cm_txn_set, cm_txn_length, cm_txn_collect};

static int
cm_txn_lock(PyObject *op)
{
    return cm_lock_all((SMCMapObject *)op);
}

static PyObject *
cm_txn_begin(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCMapObject *m = (SMCMapObject *)op;
    return sm_txn_begin(&SMTxnStorage_Type, op, &m->txn_owner, &m->guard, &cm_txn_ops,
                        cm_txn_lock);
}

static PyObject *
cm_txn_end(PyObject *op, PyObject *arg)
{
    SMCMapObject *m = (SMCMapObject *)op;
    SMTxnStorage *t = sm_txn_close(&SMTxnStorage_Type, op, arg);
    if (t == NULL) {
        return NULL;
    }
    if (SM_LOAD_INT(&m->committing)) {
        cm_end_multi(m);
    }
    SM_STORE_INT(&m->guard, 0);
    cm_unlock_all(m);
    /* Release what the commit replaced, with no lock held. */
    sm_txn_release(t);
    Py_RETURN_NONE;
}

static PyObject *
cm_transact(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_txn_run(op, args, nargs, cm_txn_begin, cm_txn_end);
}

/* ------------------------------------------------------------ lifecycle */

static int
cm_parse_shards(PyObject *obj, Py_ssize_t *out)
{
    if (obj == NULL || obj == Py_None) {
        *out = SM_default_shards;
        return 0;
    }
    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "shards must be a positive int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || n < 1 || n > 65536) {
        PyErr_Format(PyExc_ValueError, "shards must be between 1 and 65536, got %R", obj);
        return -1;
    }
    *out = (Py_ssize_t)n;
    return 0;
}

/* Fork child: release what threads that are gone held; keep the forking
 * thread's own holds (it may fork from inside a callback). */
static void
cm_after_fork(SMNode *node, void *me)
{
    SMCMapObject *m = (SMCMapObject *)((char *)node - offsetof(SMCMapObject, node));
    Py_ssize_t held = 0;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        SMShard *s = cm_shard_at(m, i);
        sm_tb_after_fork(&s->tab);
        if (sm_lock_after_fork(&s->lock, me)) {
            held++;
        }
        else {
            if (s->version & 1) {
                s->version++;
            }
        }
    }
#if !SM_FREE_THREADED
    m->held = held;
#else
    (void)held;
#endif
    if (m->txn_owner != me) {
        m->txn_owner = NULL;
        m->guard = 0;
        m->committing = 0;
    }
}

static PyObject *
cm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    PyObject *shards_obj = NULL;
    if (kwds != NULL) {
        shards_obj = PyDict_GetItemString(kwds, "shards"); /* borrowed; kwds is ours */
    }
    Py_ssize_t n;
    if (cm_parse_shards(shards_obj, &n) < 0) {
        return NULL;
    }
    SMCMapObject *m = (SMCMapObject *)type->tp_alloc(type, 0);
    if (m == NULL) {
        return NULL;
    }
    m->nshards = 0;
    size_t bytes = (size_t)n * sizeof(SMShardSlot) + SM_SHARD_STRIDE;
    m->shards_alloc = PyMem_Calloc(1, bytes);
    if (m->shards_alloc == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    uintptr_t p = (uintptr_t)m->shards_alloc;
    p = (p + SM_SHARD_STRIDE - 1) & ~(uintptr_t)(SM_SHARD_STRIDE - 1);
    m->shards = (SMShardSlot *)p;
    m->nshards = n;  /* shards start zeroed: empty tables (NULL) */
    m->guard = 0;
    m->committing = 0;
    m->shared = 0;
    m->txn_owner = NULL;
#if !SM_FREE_THREADED
    m->held = 0;
#endif
    m->weakreflist = NULL;
    if (sm_stats_init(&m->stats) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    sm_register(&m->node, cm_after_fork);
    return (PyObject *)m;
}

static int
cm_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    SMCMapObject *m = (SMCMapObject *)op;
    if (PyTuple_GET_SIZE(args) > 1) {
        PyErr_Format(PyExc_TypeError, "%.100s expected at most 1 positional argument, got %zd",
                     Py_TYPE(op)->tp_name, PyTuple_GET_SIZE(args));
        return -1;
    }
    PyObject *other = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    PyObject *items = NULL;  /* keyword items, minus the `shards` option */
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        items = PyDict_Copy(kwds);
        if (items == NULL) {
            return -1;
        }
        if (PyDict_DelItemString(items, "shards") < 0) {
            PyErr_Clear();
        }
        if (PyDict_GET_SIZE(items) == 0) {
            Py_CLEAR(items);
        }
    }
    int rc = 0;
    if (other != NULL && PyDict_CheckExact(other) && items == NULL) {
        /* Fast path: an atomic copy of the dict's items, then one store each. */
        PyObject *pairs = PyDict_Items(other);
        if (pairs == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs) && rc == 0; i++) {
            PyObject *kv = PyList_GET_ITEM(pairs, i);
            rc = cm_store_impl(m, PyTuple_GET_ITEM(kv, 0), PyTuple_GET_ITEM(kv, 1));
        }
        Py_DECREF(pairs);
        return rc;
    }
    if (other == NULL && items == NULL) {
        return 0;
    }
    /* General case: the protocol's update (mappings, pairs, keys()). */
    PyObject *callargs = other ? PyTuple_Pack(2, op, other) : PyTuple_Pack(1, op);
    if (callargs == NULL) {
        Py_XDECREF(items);
        return -1;
    }
    PyObject *r = PyObject_Call(SM_abc_update, callargs, items);
    Py_DECREF(callargs);
    Py_XDECREF(items);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
cm_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMCMapObject *m = (SMCMapObject *)op;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        int rc = sm_tb_traverse(&cm_shard_at(m, i)->tab, visit, arg);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int
cm_tp_clear(PyObject *op)
{
    /* Break cycles by emptying the shards; the map remains usable (empty) if
     * something still reaches it.  Each table is detached before anything it
     * held is released. */
    SMCMapObject *m = (SMCMapObject *)op;
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        SMShard *s = cm_shard_at(m, i);
        SM_STORE_SSIZE_RELAXED(&s->count, 0);
        sm_tb_fini(&s->tab);
    }
    return 0;
}

static void
cm_dealloc(PyObject *op)
{
    SMCMapObject *m = (SMCMapObject *)op;
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, cm_dealloc)
    sm_unregister(&m->node);
    if (m->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    for (Py_ssize_t i = 0; i < m->nshards; i++) {
        SMShard *s = cm_shard_at(m, i);
        s->count = 0;
        sm_tb_fini(&s->tab);
        sm_lock_fini(&s->lock);
    }
    m->nshards = 0;
    PyMem_Free(m->shards_alloc);
    m->shards_alloc = NULL;
    sm_stats_fini(&m->stats);
    /* A Python subclass's dealloc (subtype_dealloc) drops its type's
     * reference after calling us; a static base type must not. */
    Py_TYPE(op)->tp_free(op);
    Py_TRASHCAN_END
}

/* ------------------------------------------------------------ type */

static PyMappingMethods cm_as_mapping = {
    .mp_length = cm_length,
    .mp_subscript = cm_subscript,
    .mp_ass_subscript = cm_ass_subscript,
};

static PySequenceMethods cm_as_sequence = {
    .sq_contains = cm_contains,
};

static PyMethodDef cm_methods[] = {
    SM_FASTCALL("get", cm_get, SM_DOC_GET),
    {"get_or_compute", (PyCFunction)(void (*)(void))cm_get_or_compute,
     METH_FASTCALL | METH_KEYWORDS, SM_DOC_GET_OR_COMPUTE},
    {"load", cm_load, METH_O, SM_DOC_LOAD},
    SM_FASTCALL("store", cm_store, SM_DOC_STORE),
    SM_FASTCALL("pop", cm_pop, SM_DOC_POP),
    SM_FASTCALL("setdefault", cm_setdefault, SM_DOC_SETDEFAULT),
    SM_FASTCALL("load_or_store", cm_load_or_store, SM_DOC_LOAD_OR_STORE),
    {"load_and_delete", cm_load_and_delete, METH_O, SM_DOC_LOAD_AND_DELETE},
    {"delete", cm_delete, METH_O, SM_DOC_DELETE},
    SM_FASTCALL("swap", cm_swap, SM_DOC_SWAP),
    SM_FASTCALL("compare_and_swap", cm_compare_and_swap, SM_DOC_COMPARE_AND_SWAP),
    SM_FASTCALL("compare_and_delete", cm_compare_and_delete, SM_DOC_COMPARE_AND_DELETE),
    SM_FASTCALL("compute", cm_compute,
                "compute(key, fn): atomically replace the entry with fn(key, old) (old is "
                "MISSING when absent; return DELETE to remove). fn runs holding the key's "
                "shard lock: it may read the map, writing to it raises RecursiveUpdateError."),
    SM_FASTCALL("compute_if_absent", cm_compute_if_absent, SM_DOC_COMPUTE_IF_ABSENT),
    SM_FASTCALL("compute_if_present", cm_compute_if_present, SM_DOC_COMPUTE_IF_PRESENT),
    SM_FASTCALL("merge", cm_merge, SM_DOC_MERGE),
    {"clear", cm_clear, METH_NOARGS, SM_DOC_CLEAR},
    {"snapshot", cm_snapshot, METH_NOARGS, SM_DOC_SNAPSHOT},
    {"_iter_items", cm_iter_items, METH_NOARGS, SM_DOC_ITER_ITEMS},
    {"_options", cm_options, METH_NOARGS, SM_DOC_OPTIONS},
    {"__sizeof__", cm_sizeof, METH_NOARGS, "Size in memory, in bytes, shards included."},
    {"_stats_raw", cm_stats_raw, METH_NOARGS, SM_DOC_STATS_RAW},
    {"_transact", (PyCFunction)(void (*)(void))cm_transact, METH_FASTCALL, SM_DOC_TRANSACT},
    {NULL, NULL, 0, NULL},
};

SM_DEFINE_TYPE(SMCMap_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.ConcurrentMapBase",
    .tp_basicsize = sizeof(SMCMapObject),
    .tp_dealloc = cm_dealloc,
    .tp_as_sequence = &cm_as_sequence,
    .tp_as_mapping = &cm_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Native core of safemap.ConcurrentMap: a fixed array of shards, each a hash "
              "table with its own lock. Use safemap.ConcurrentMap.",
    .tp_traverse = cm_traverse,
    .tp_clear = cm_tp_clear,
    .tp_weaklistoffset = offsetof(SMCMapObject, weakreflist),
    .tp_iter = cm_iter,
    .tp_methods = cm_methods,
    .tp_init = cm_init,
    .tp_alloc = PyType_GenericAlloc,
    .tp_new = cm_new,
    .tp_free = PyObject_GC_Del,
};
