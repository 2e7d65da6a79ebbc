/*
 * sm_common.c -- shared helpers: protocol objects, item buffer, chunked iterator.
 */
#include "sm_common.h"
#include <string.h>

#ifdef _WIN32
#  include <windows.h>
#else
#  include <sched.h>
#  include <time.h>
#endif

PyObject *SM_RecursiveUpdateError = NULL;
PyObject *SM_MISSING = NULL;
PyObject *SM_DELETE = NULL;
PyObject *SM_FrozenMap_adopt = NULL;
PyObject *SM_abc_update = NULL;
PyObject *SM_sentinel = NULL;
Py_ssize_t SM_default_shards = 8;

#if SM_FREE_THREADED
SM_THREAD_LOCAL Py_ssize_t sm_tls_held = 0;
#endif

/* ------------------------------------------------------------ statistics */

SMContention *sm_contention = NULL;
PyObject *SM_str_ConcurrentMap = NULL;
PyObject *SM_str_SyncMap = NULL;
PyObject *SM_str_get = NULL;

#if SM_FREE_THREADED
Py_ssize_t sm_nstripes = 2;
SM_THREAD_LOCAL SM_TLS_FAST Py_ssize_t sm_tls_stripe = 0;
static Py_ssize_t sm_next_stripe = 0;

Py_ssize_t
sm_stripe_assign(void)
{
    /* In order: the first sm_nstripes threads never share a stripe. */
    Py_ssize_t s = _Py_atomic_add_ssize(&sm_next_stripe, 1) + 1;
    sm_tls_stripe = s;
    return s;
}
#endif

int
sm_stats_init(SMStats *st)
{
#if SM_FREE_THREADED
    size_t bytes = (size_t)(sm_nstripes + 1) * sizeof(SMStripe) + SM_LINE;
    st->stripes_alloc = PyMem_Calloc(1, bytes);
    if (st->stripes_alloc == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uintptr_t p = (uintptr_t)st->stripes_alloc;
    p = (p + SM_LINE - 1) & ~(uintptr_t)(SM_LINE - 1);
    st->stripes = (SMStripe *)p;
    st->own = &st->stripes[sm_nstripes].c;
#else
    (void)st;
#endif
    return 0;
}

void
sm_stats_fini(SMStats *st)
{
#if SM_FREE_THREADED
    PyMem_Free(st->stripes_alloc);
    st->stripes_alloc = NULL;
    st->stripes = NULL;
    st->own = NULL;
#else
    (void)st;
#endif
}

void
sm_stats_sum(SMStats *st, SMCells *out)
{
#if SM_FREE_THREADED
    memset(out, 0, sizeof(*out));
    if (st->stripes == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i <= sm_nstripes; i++) {
        SMCells *c = &st->stripes[i].c;
        out->hits += _Py_atomic_load_ssize_relaxed(&c->hits);
        out->misses += _Py_atomic_load_ssize_relaxed(&c->misses);
        out->iterations += _Py_atomic_load_ssize_relaxed(&c->iterations);
        out->updates += _Py_atomic_load_ssize_relaxed(&c->updates);
        out->during_iteration += _Py_atomic_load_ssize_relaxed(&c->during_iteration);
    }
#else
    *out = st->cells;
#endif
}

int
sm_lock_wait(SMLock *lock, SMLockStats *ls, void *me)
{
    SM_ADD_SSIZE(&ls->contentions, 1);
    int64_t t0 = sm_now_ns();
    int rc = sm_lock_acquire_slow(lock, me);
    int64_t waited = sm_now_ns() - t0;
    if (waited < 0) {
        waited = 0;
    }
    /* Holding the lock now -- or, on GIL builds only, having given up on a
     * signal (a free-threaded wait is not interruptible): the GIL then
     * protects the counters. */
    SM_BUMP_I64(&ls->wait_ns, waited);
    if (rc < 0) {
        return -1;
    }
    SM_BUMP(&ls->acquisitions, 1);
    if (SM_UNLIKELY(sm_contention_sampled(sm_contention))) {
        ls->sampled = waited + 1;
    }
    return 0;
}

int
sm_set_n(PyObject *d, const char *key, Py_ssize_t v)
{
    PyObject *o = PyLong_FromSsize_t(v);
    if (o == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

static int
sm_set_seconds(PyObject *d, const char *key, int64_t ns)
{
    PyObject *o = PyFloat_FromDouble((double)ns / 1e9);
    if (o == NULL) {
        return -1;
    }
    int rc = PyDict_SetItemString(d, key, o);
    Py_DECREF(o);
    return rc;
}

int
sm_lock_stats_into(PyObject *d, SMLockStats *ls)
{
    if (sm_set_n(d, "lock_acquisitions", SM_LOAD_SSIZE_RELAXED(&ls->acquisitions)) < 0 ||
        sm_set_n(d, "lock_contentions", SM_LOAD_SSIZE_RELAXED(&ls->contentions)) < 0 ||
        sm_set_seconds(d, "lock_wait_seconds", SM_LOAD_I64_RELAXED(&ls->wait_ns)) < 0) {
        return -1;
    }
    return 0;
}

void
sm_writes_add(SMWrites *sum, SMWrites *w)
{
    sum->inserts += SM_LOAD_SSIZE_RELAXED(&w->inserts);
    sum->updates += SM_LOAD_SSIZE_RELAXED(&w->updates);
    sum->deletes += SM_LOAD_SSIZE_RELAXED(&w->deletes);
    sum->during_iteration += SM_LOAD_SSIZE_RELAXED(&w->during_iteration);
}

int
sm_stats_into(PyObject *d, const SMWrites *w, SMStats *st)
{
    SMCells c;
    sm_stats_sum(st, &c);
    if (sm_set_n(d, "hits", c.hits) < 0 || sm_set_n(d, "misses", c.misses) < 0 ||
        sm_set_n(d, "iterations", c.iterations) < 0 ||
        sm_set_n(d, "inserts", w->inserts) < 0 ||
        sm_set_n(d, "updates", w->updates + c.updates) < 0 ||
        sm_set_n(d, "deletes", w->deletes) < 0 ||
        sm_set_n(d, "writes_during_iteration", w->during_iteration + c.during_iteration) < 0) {
        return -1;
    }
    return 0;
}

int
sm_raise_recursive(const char *what)
{
    PyErr_SetString(SM_RecursiveUpdateError, what);
    return -1;
}

int
sm_raise_sentinel(PyObject *v)
{
    PyErr_Format(PyExc_TypeError, "safemap.%s is a sentinel and cannot be stored as a value",
                 v == SM_MISSING ? "MISSING" : "DELETE");
    return -1;
}

/* The list of live maps.  GIL builds: protected by the GIL.  Free-threaded
 * builds: by sm_maps_mutex (never held while running Python code). */
static SMNode sm_maps = {&sm_maps, &sm_maps, NULL};
#if SM_FREE_THREADED
static PyMutex sm_maps_mutex;
#  define MAPS_LOCK() PyMutex_Lock(&sm_maps_mutex)
#  define MAPS_UNLOCK() PyMutex_Unlock(&sm_maps_mutex)
#else
#  define MAPS_LOCK() ((void)0)
#  define MAPS_UNLOCK() ((void)0)
#endif

void
sm_register(SMNode *node, void (*after_fork)(SMNode *, void *))
{
    node->after_fork = after_fork;
    MAPS_LOCK();
    node->next = sm_maps.next;
    node->prev = &sm_maps;
    sm_maps.next->prev = node;
    sm_maps.next = node;
    MAPS_UNLOCK();
}

void
sm_unregister(SMNode *node)
{
    if (node->next == NULL) {
        return;
    }
    MAPS_LOCK();
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->next = node->prev = NULL;
    MAPS_UNLOCK();
}

/* Registered with os.register_at_fork(after_in_child=...).  Only the forking
 * thread exists in the child: every hold by another thread is void. */
PyObject *
sm_after_fork_child(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
#if SM_FREE_THREADED
    memset(&sm_maps_mutex, 0, sizeof(sm_maps_mutex));
#endif
    void *me = sm_me();
    for (SMNode *n = sm_maps.next; n != &sm_maps; n = n->next) {
        n->after_fork(n, me);
    }
    Py_RETURN_NONE;
}

void
sm_backoff(int attempt)
{
    Py_BEGIN_ALLOW_THREADS
#ifdef _WIN32
    Sleep(attempt < 4 ? 0 : 1);
#else
    if (attempt < 4) {
        sched_yield();
    }
    else {
        /* 10us doubling up to ~1ms: long enough for a writer that holds the
         * GIL-released lock to run its __eq__ and finish. */
        long ns = 10000L << (attempt < 11 ? attempt - 4 : 7);
        struct timespec ts = {0, ns};
        nanosleep(&ts, NULL);
    }
#endif
    Py_END_ALLOW_THREADS
}

/* ------------------------------------------------------------ item buffer */

int
sm_buf_reserve(SMBuf *buf, Py_ssize_t slots)
{
    if (slots <= buf->cap) {
        return 0;
    }
    Py_ssize_t cap = buf->cap ? buf->cap : 16;
    while (cap < slots) {
        cap *= 2;
    }
    PyObject **items = PyMem_Realloc(buf->items, (size_t)cap * sizeof(PyObject *));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->items = items;
    buf->cap = cap;
    return 0;
}

void
sm_buf_clear(SMBuf *buf)
{
    /* Detach first: a __del__ run by a DECREF below must not see the slots. */
    PyObject **items = buf->items;
    Py_ssize_t n = buf->n;
    buf->items = NULL;
    buf->n = 0;
    buf->cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(items[i]);
    }
    PyMem_Free(items);
}

void
sm_buf_free(SMBuf *buf)
{
    sm_buf_clear(buf);
}

int
sm_buf_collect_dict(SMBuf *buf, PyObject *d)
{
    int rc = 0;
    Py_BEGIN_CRITICAL_SECTION(d);
    if (sm_buf_reserve(buf, buf->n + 2 * PyDict_GET_SIZE(d)) < 0) {
        rc = -1;
    }
    else {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(d, &pos, &k, &v)) {
            buf->items[buf->n++] = Py_NewRef(k);
            buf->items[buf->n++] = Py_NewRef(v);
        }
    }
    Py_END_CRITICAL_SECTION();
    return rc;
}

/* ------------------------------------------------------- chunked iterator */

typedef struct {
    PyObject_HEAD
    PyObject *owner;       /* the map; NULL once exhausted */
    SMStats *stats;        /* the map's; counts this iterator while owner is set */
    sm_fill_fn fill;
    Py_ssize_t next_chunk;
    int kind;
    SMBuf buf;             /* copy of the current chunk */
    Py_ssize_t pos;        /* next slot of buf to yield */
} SMIterObject;

/* The iterator stops counting as "in progress": when exhausted or freed. */
static void
smiter_done(SMIterObject *it)
{
#ifndef SM_NO_STATS
    SM_ADD_SSIZE(&it->stats->iterating, -1);
#else
    (void)it;
#endif
}

PyObject *
sm_iter_new(PyObject *owner, SMStats *stats, sm_fill_fn fill, int kind)
{
    SMIterObject *it = PyObject_GC_New(SMIterObject, &SMIter_Type);
    if (it == NULL) {
        return NULL;
    }
    SM_CELL_ADD(owner, stats, iterations, 1);
#ifndef SM_NO_STATS
    SM_ADD_SSIZE(&stats->iterating, 1);
#endif
    it->stats = stats;
    it->owner = Py_NewRef(owner);
    it->fill = fill;
    it->next_chunk = 0;
    it->kind = kind;
    it->buf.items = NULL;
    it->buf.n = 0;
    it->buf.cap = 0;
    it->pos = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *
smiter_next(PyObject *op)
{
    SMIterObject *it = (SMIterObject *)op;
    PyObject *result = NULL;
    PyObject *drop = NULL;            /* released after the critical section */
    SMBuf dead = {NULL, 0, 0};        /* likewise: the exhausted chunk copy */
    /* Sharing one iterator between threads is not supported by Python's own
     * iterators either, but it must never crash: each step runs under the
     * iterator's critical section (free-threaded builds), and no reference is
     * dropped inside it, because a __del__ could re-enter this iterator. */
    Py_BEGIN_CRITICAL_SECTION(op);
    if (it->pos >= it->buf.n) {
        dead = it->buf;
        it->buf.items = NULL;
        it->buf.n = 0;
        it->buf.cap = 0;
        it->pos = 0;
    }
    while (it->pos >= it->buf.n) {
        /* Here buf holds no reference (empty chunk or fresh). */
        it->buf.n = 0;
        it->pos = 0;
        if (it->owner == NULL) {
            goto done;
        }
        int r = it->fill(it->owner, it->next_chunk, &it->buf);
        if (r < 0) {
            goto done;
        }
        if (r == 0) {
            smiter_done(it);
            drop = it->owner;
            it->owner = NULL;
            goto done;
        }
        it->next_chunk++;
    }
    PyObject *k = it->buf.items[it->pos];
    PyObject *v = it->buf.items[it->pos + 1];
    it->buf.items[it->pos] = NULL;
    it->buf.items[it->pos + 1] = NULL;
    it->pos += 2;
    if (it->kind == SM_ITER_KEYS) {
        drop = v;
        result = k;
    }
    else {
        result = PyTuple_New(2);
        if (result == NULL) {
            Py_DECREF(k);  /* the map still holds k and v, or we hold the */
            drop = v;      /* last reference: k's __del__ is safe here.   */
        }
        else {
            PyTuple_SET_ITEM(result, 0, k);
            PyTuple_SET_ITEM(result, 1, v);
        }
    }
done:
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(drop);
    sm_buf_clear(&dead);
    return result;
}

static int
smiter_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMIterObject *it = (SMIterObject *)op;
    Py_VISIT(it->owner);
    for (Py_ssize_t i = it->pos; i < it->buf.n; i++) {
        Py_VISIT(it->buf.items[i]);
    }
    return 0;
}

static int
smiter_clear(PyObject *op)
{
    SMIterObject *it = (SMIterObject *)op;
    if (it->owner != NULL) {
        smiter_done(it);  /* before the map can go */
    }
    Py_CLEAR(it->owner);
    sm_buf_clear(&it->buf);
    it->pos = 0;
    return 0;
}

static void
smiter_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    smiter_clear(op);
    PyObject_GC_Del(op);
}

static PyObject *
smiter_length_hint(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMIterObject *it = (SMIterObject *)op;
    return PyLong_FromSsize_t((it->buf.n - it->pos) / 2);
}

static PyMethodDef smiter_methods[] = {
    {"__length_hint__", smiter_length_hint, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

SM_DEFINE_TYPE(SMIter_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.iterator",
    .tp_basicsize = sizeof(SMIterObject),
    .tp_dealloc = smiter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Weakly consistent iterator over a safemap native map.",
    .tp_traverse = smiter_traverse,
    .tp_clear = smiter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = smiter_next,
    .tp_methods = smiter_methods,
};

#if SM_FREE_THREADED && PY_VERSION_HEX >= 0x030E0000
void
sm_share_slow(PyObject *op, int *shared)
{
    /* Needs a GC-tracked object: maps are, from allocation to dealloc. */
    (void)PyUnstable_Object_EnableDeferredRefcount(op);
    _Py_atomic_store_int_relaxed(shared, 1);
}
#endif
