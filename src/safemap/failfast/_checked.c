/*
 * _checked.c -- safemap.failfast._core: CheckedDict, Go's fail-fast map check.
 *
 * CheckedDict is a C subtype of dict.  Every operation that reads or writes
 * the dict goes through a small guard around the very function dict itself
 * uses (PyDict_Type's slots and methods), so the behaviour is dict's, plus:
 *
 *   - a write by thread B while thread A is inside a read, a write or an
 *     iteration of the same map raises in B (Go's "concurrent map writes",
 *     "concurrent map read and map write", "concurrent map iteration and map
 *     write");
 *   - a read (or an iteration step) by B while A is inside a write raises in B.
 *
 * Per-map state (the fields after the dict in CDObject):
 *
 *   writer    ident of the thread inside a write, or 0.  Only one thread can
 *             hold it: a second thread that finds it taken raises instead of
 *             proceeding, so there is never more than one writer.  A nested
 *             write by the holder (a key's __eq__ writing to the dict) leaves
 *             it alone and the outermost write clears it.
 *   reader /  the "owner" reader: the ident of a thread inside a read, and
 *   rdepth    its nesting depth.  Only the owner changes rdepth and clears
 *             reader, so both stay consistent without a lock.
 *   readers   other threads inside a read at the same time as the owner (a
 *             read can only be overlapped while a key's __hash__/__eq__ runs
 *             Python code on a GIL build, or truly in parallel on a
 *             free-threaded one): a list of nodes on those threads' C stacks,
 *             linked for the duration of their read.  Rare, so slow is fine.
 *   iters     the started, unfinished iterations (iterator objects), each
 *             with the ident of the thread that began it.  An iteration is in
 *             progress from its first next() until it is exhausted or its
 *             iterator is dropped.
 *   confined_to  with confined=True: the first thread that operated on the
 *             map after its creation; every other thread is refused.
 *   restoring 1 while pickle restores the map (from _restore() to the one
 *             __setstate__ it accepts); a live map refuses __setstate__.
 *   live      the map's link in the module's list of live maps, walked in a
 *             fork child to forget the threads that do not exist there.
 *
 * Why no false alarm: an error is raised only when a field names ANOTHER
 * thread, and every field names a thread only between the start and the end
 * of an operation (or an iteration span) of that thread.  Re-entry by the
 * same thread (a key's __eq__ reading or writing the dict, nested loops,
 * writing to the dict one is iterating) always sees its own ident.
 *
 * Why detection is deterministic: on GIL builds the guards run no Python code
 * between their loads and stores, so they are atomic with respect to other
 * threads; a thread that is inside an operation and has let another thread
 * run (a key's __eq__ blocked on an Event, say) still has its field set.  On
 * free-threaded builds every field shared between threads is accessed with
 * sequentially consistent atomics, and each side first publishes itself and
 * then looks at the other side (a Dekker pattern): of two overlapping
 * operations, at least one sees the other.  The two lists are guarded by a
 * PyMutex there (the GIL on GIL builds: list code runs no Python code).
 *
 * Why each operation is safe when a key's __eq__/__hash__ runs Python code:
 * the guard is set before dict's function runs and cleared after it returns;
 * whatever that Python code does, it is either the same thread (re-entry,
 * allowed, dict's own behaviour applies) or another thread, which then finds
 * the field set and raises without touching the dict.  No borrowed reference
 * is held across such a call by this file (copy() holds strong references).
 *
 * Copies: every copy this type makes of a CheckedDict (copy(), |, and a
 * CheckedDict as the source of update(), |=, __init__, checked()) is ONE read
 * of it (cd_merge_into).  dict(d), {**d} and f(**d) are made by dict itself,
 * key by key through keys() and d[k] (dict's generic path for a subclass that
 * overrides iteration); no hook here sees where such a copy ends, so it is
 * not one read (docs/checked.md says so).
 *
 * The error path calls a Python helper (safemap.failfast.errors._make_error)
 * that builds the message: the other thread's name and its current stack
 * (sys._current_frames()), which is still inside the overlapping operation
 * because its field is still set.  No stack is ever captured on the fast path.
 */
#include "../native/sm_compat.h"
#include "pythread.h"

/* ------------------------------------------------------------ build flavour */

#if SM_FREE_THREADED
#  define CD_LOAD(p) _Py_atomic_load_uintptr(p)
#  define CD_STORE(p, v) _Py_atomic_store_uintptr((p), (v))
static inline int
cd_cas(uintptr_t *p, uintptr_t *expected, uintptr_t v)
{
    return _Py_atomic_compare_exchange_uintptr(p, expected, v);
}
#  define CD_LOCK(d) PyMutex_Lock(&(d)->lock)
#  define CD_UNLOCK(d) PyMutex_Unlock(&(d)->lock)
#else
#  define CD_LOAD(p) (*(p))
#  define CD_STORE(p, v) (*(p) = (v))
static inline int
cd_cas(uintptr_t *p, uintptr_t *expected, uintptr_t v)
{
    if (*p == *expected) {
        *p = v;
        return 1;
    }
    *expected = *p;
    return 0;
}
/* The GIL is the lock: list code below runs no Python code. */
#  define CD_LOCK(d) ((void)(d))
#  define CD_UNLOCK(d) ((void)(d))
#endif

#if SM_FREE_THREADED
#  define CD_CAS_INT(p, expected, v) _Py_atomic_compare_exchange_int((p), (expected), (v))
#else
static inline int
CD_CAS_INT(int *p, int *expected, int v)
{
    if (*p == *expected) {
        *p = v;
        return 1;
    }
    *expected = *p;
    return 0;
}
#endif

/* The calling thread, as threading.get_ident() reports it (the error helper
 * maps it to a thread name and a stack).  Never 0 for a live thread. */
static inline uintptr_t
cd_ident(void)
{
    return (uintptr_t)PyThread_get_thread_ident();
}

/* ------------------------------------------------------------------ objects */

enum {
    CD_ERR_WRITE_WRITE = 1, /* ConcurrentWriteError: I write, other writes */
    CD_ERR_WRITE_READ = 2,  /* ConcurrentReadWriteError: I write, other reads */
    CD_ERR_READ_WRITE = 3,  /* ConcurrentReadWriteError: I read, other writes */
    CD_ERR_WRITE_ITER = 4,  /* ConcurrentIterationError: I write, other iterates */
    CD_ERR_ITER_WRITE = 5,  /* ConcurrentIterationError: I iterate, other writes */
    CD_ERR_CONFINED = 6,    /* ThreadConfinementError */
};

enum { CD_KEYS = 0, CD_VALUES = 1, CD_ITEMS = 2, CD_REVERSED = 4 };
enum { CD_IT_NEW = 0, CD_IT_STARTING = 1, CD_IT_RUNNING = 2, CD_IT_DONE = 3 };

typedef struct cd_reader {
    uintptr_t ident;
    struct cd_reader *prev;
    struct cd_reader *next;
} cd_reader;

typedef struct CDIterObject CDIterObject;

/* A link in the list of live maps (see "Live maps and fork" below). */
typedef struct cd_link {
    struct cd_link *prev;
    struct cd_link *next; /* NULL: not on the list */
} cd_link;

typedef struct {
    PyDictObject dict;
    uintptr_t writer;
    uintptr_t reader;
    Py_ssize_t rdepth;
    cd_reader *readers;
    CDIterObject *iters;
    uintptr_t confined_to;
    PyObject *name; /* str or NULL; set at creation, cleared only by the GC */
    int confined;   /* set at creation (or by __setstate__ while restoring) */
    int restoring;  /* 1 from _restore() until __setstate__ (unpickling) */
    cd_link live;   /* on the list of live maps */
#if SM_FREE_THREADED
    PyMutex lock; /* guards the readers and iters lists */
#endif
} CDObject;

struct CDIterObject {
    PyObject_HEAD
    CDObject *map;
    PyObject *inner; /* dict's own iterator over map, made at the first next() */
    uintptr_t ident; /* the thread that began the iteration */
    int kind;        /* CD_KEYS/VALUES/ITEMS, | CD_REVERSED */
    int state;       /* CD_IT_*: NEW -> STARTING -> RUNNING -> DONE */
    int linked;      /* in map->iters (guarded by the map's lock) */
    CDIterObject *prev;
    CDIterObject *next;
};

static PyTypeObject CD_Type;
static PyTypeObject CDIter_Type;

#define CD_Check(op) PyObject_TypeCheck((op), &CD_Type)

/* Hooks installed by safemap.checked at import (_set_hooks). */
static PyObject *cd_error_factory;  /* (kind, map, other_ident) -> exception */
static PyObject *cd_view_types[3];  /* keys, values, items view classes */
static PyObject *cd_restore_func;   /* _core._restore, for __reduce__ */
static PyObject *cd_dict_views[3];  /* dict.keys, dict.values, dict.items */
static PyObject *cd_str_reversed;   /* "__reversed__" */

/* ------------------------------------------------------------- error path */

static const char *const cd_err_text[] = {
    "",
    "concurrent map writes",
    "concurrent map read and map write",
    "concurrent map read and map write",
    "concurrent map iteration and map write",
    "concurrent map iteration and map write",
    "map confined to thread",
};

/* Raise the error of `kind` against thread `other`; always returns -1. */
static int
cd_raise(int kind, CDObject *d, uintptr_t other)
{
    if (cd_error_factory == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s (thread %lu)", cd_err_text[kind],
                     (unsigned long)other);
        return -1;
    }
    PyObject *exc = PyObject_CallFunction(cd_error_factory, "iOk", kind, (PyObject *)d,
                                          (unsigned long)other);
    if (exc == NULL) {
        return -1;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return -1;
}

/* ------------------------------------------------------------ confinement */

static int
cd_confine_slow(CDObject *d, uintptr_t me)
{
    uintptr_t owner = CD_LOAD(&d->confined_to);
    if (owner == me) {
        return 0;
    }
    if (owner == 0) {
        if (cd_cas(&d->confined_to, &owner, me) || owner == me) {
            return 0;
        }
    }
    return cd_raise(CD_ERR_CONFINED, d, owner);
}

static inline int
cd_confine(CDObject *d, uintptr_t me)
{
    if (SM_LIKELY(!d->confined)) {
        return 0;
    }
    return cd_confine_slow(d, me);
}

/* ----------------------------------------------------------------- readers */

typedef struct {
    uintptr_t me;
    int owner; /* 1: counted in reader/rdepth; 0: linked as `node` */
    cd_reader node;
} cd_rguard;

static void
cd_reader_link(CDObject *d, cd_reader *n)
{
    CD_LOCK(d);
    n->prev = NULL;
    n->next = d->readers;
    if (n->next != NULL) {
        n->next->prev = n;
    }
    SM_STORE_PTR(&d->readers, n);
    CD_UNLOCK(d);
}

static void
cd_reader_unlink(CDObject *d, cd_reader *n)
{
    CD_LOCK(d);
    if (n->prev != NULL) {
        n->prev->next = n->next;
    }
    else {
        SM_STORE_PTR(&d->readers, n->next);
    }
    if (n->next != NULL) {
        n->next->prev = n->prev;
    }
    CD_UNLOCK(d);
}

static inline void
cd_read_exit(CDObject *d, cd_rguard *g)
{
    if (SM_LIKELY(g->owner)) {
        if (--d->rdepth == 0) {
            CD_STORE(&d->reader, 0);
        }
    }
    else {
        cd_reader_unlink(d, &g->node);
    }
}

/* Enter a read: publish this thread as a reader, then check for a writer.
 * 0, or -1 with an exception set (and nothing published). */
static inline int
cd_read_enter(CDObject *d, cd_rguard *g)
{
    uintptr_t me = cd_ident();
    g->me = me;
    if (cd_confine(d, me) < 0) {
        return -1;
    }
    uintptr_t r = CD_LOAD(&d->reader);
    if (r == me) {
        d->rdepth++; /* only the owner touches rdepth */
        g->owner = 1;
    }
    else if (r == 0 && cd_cas(&d->reader, &r, me)) {
        d->rdepth = 1;
        g->owner = 1;
    }
    else {
        g->owner = 0;
        g->node.ident = me;
        cd_reader_link(d, &g->node);
    }
    uintptr_t w = CD_LOAD(&d->writer);
    if (SM_UNLIKELY(w != 0 && w != me)) {
        cd_read_exit(d, g);
        return cd_raise(CD_ERR_READ_WRITE, d, w);
    }
    return 0;
}

/* ----------------------------------------------------------------- writers */

typedef struct {
    int owner; /* 1: this write set `writer` and clears it */
} cd_wguard;

static uintptr_t
cd_other_reader_slow(CDObject *d, uintptr_t me)
{
    uintptr_t found = 0;
    CD_LOCK(d);
    for (cd_reader *n = d->readers; n != NULL; n = n->next) {
        if (n->ident != me) {
            found = n->ident;
            break;
        }
    }
    CD_UNLOCK(d);
    return found;
}

static uintptr_t
cd_other_iter_slow(CDObject *d, uintptr_t me)
{
    uintptr_t found = 0;
    CD_LOCK(d);
    for (CDIterObject *it = d->iters; it != NULL; it = it->next) {
        if (it->ident != me) {
            found = it->ident;
            break;
        }
    }
    CD_UNLOCK(d);
    return found;
}

/* Enter a write: take `writer` (or find it is ours already), then look for
 * readers and iterations of other threads.  0, or -1 with an exception set
 * (and `writer` as it was). */
static inline int
cd_write_enter(CDObject *d, cd_wguard *g)
{
    uintptr_t me = cd_ident();
    g->owner = 0;
    if (cd_confine(d, me) < 0) {
        return -1;
    }
    uintptr_t w = CD_LOAD(&d->writer);
    if (w == me) {
        g->owner = 0; /* nested write by the same thread */
    }
    else if (w == 0 && cd_cas(&d->writer, &w, me)) {
        g->owner = 1;
    }
    else {
        return cd_raise(CD_ERR_WRITE_WRITE, d, w);
    }
    int kind = 0;
    uintptr_t other = CD_LOAD(&d->reader);
    if (SM_UNLIKELY(other != 0 && other != me)) {
        kind = CD_ERR_WRITE_READ;
    }
    else if (SM_UNLIKELY(SM_LOAD_PTR(&d->readers) != NULL) &&
             (other = cd_other_reader_slow(d, me)) != 0) {
        kind = CD_ERR_WRITE_READ;
    }
    else if (SM_UNLIKELY(SM_LOAD_PTR(&d->iters) != NULL) &&
             (other = cd_other_iter_slow(d, me)) != 0) {
        kind = CD_ERR_WRITE_ITER;
    }
    if (SM_UNLIKELY(kind != 0)) {
        if (g->owner) {
            CD_STORE(&d->writer, 0);
        }
        return cd_raise(kind, d, other);
    }
    return 0;
}

static inline void
cd_write_exit(CDObject *d, cd_wguard *g)
{
    if (g->owner) {
        CD_STORE(&d->writer, 0);
    }
}

/* A read that runs no Python code and is one atomic load of the dict (len):
 * it only has to see a write in progress; it cannot be overlapped itself. */
static inline int
cd_peek(CDObject *d)
{
    uintptr_t w = CD_LOAD(&d->writer);
    if (SM_UNLIKELY(d->confined) || SM_UNLIKELY(w != 0)) {
        uintptr_t me = cd_ident();
        if (cd_confine(d, me) < 0) {
            return -1;
        }
        if (w != 0 && w != me) {
            return cd_raise(CD_ERR_READ_WRITE, d, w);
        }
    }
    return 0;
}

/* ------------------------------------------------- calling dict's methods */

enum { M_GET, M_SETDEFAULT, M_POP, M_POPITEM, M_UPDATE, M_CLEAR, M_COUNT };
static const char *const cd_method_names[M_COUNT] = {
    "get", "setdefault", "pop", "popitem", "update", "clear",
};
static PyMethodDef *cd_orig[M_COUNT]; /* dict's own method definitions */
static PyObject *cd_descr[M_COUNT];   /* dict's method descriptors */

/* Call dict's implementation of method m on self: directly through its C
 * function when the calling convention allows, else through dict's method
 * descriptor (which then reports argument errors exactly as dict does). */
static inline PyObject *
cd_call_dict(int m, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
             PyObject *kwnames)
{
    PyMethodDef *def = cd_orig[m];
    int flags = def->ml_flags & ~(METH_COEXIST | METH_CLASS | METH_STATIC);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nkw == 0) {
        if (flags == METH_FASTCALL) {
            return ((_PyCFunctionFast)(void (*)(void))def->ml_meth)(self, args, nargs);
        }
        if (flags == METH_NOARGS && nargs == 0) {
            return def->ml_meth(self, NULL);
        }
        if (flags == METH_O && nargs == 1) {
            return def->ml_meth(self, args[0]);
        }
    }
    if (flags == (METH_FASTCALL | METH_KEYWORDS)) {
        return ((_PyCFunctionFastWithKeywords)(void (*)(void))def->ml_meth)(self, args, nargs,
                                                                           kwnames);
    }
    PyObject *bound = Py_TYPE(cd_descr[m])->tp_descr_get(cd_descr[m], self,
                                                         (PyObject *)Py_TYPE(self));
    if (bound == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_Vectorcall(bound, args, (size_t)nargs, kwnames);
    Py_DECREF(bound);
    return r;
}

#define CD_READ_METHOD(fname, M)                                                      \
    static PyObject *fname(PyObject *self, PyObject *const *args, Py_ssize_t nargs,   \
                           PyObject *kwnames)                                         \
    {                                                                                 \
        cd_rguard g;                                                                  \
        if (cd_read_enter((CDObject *)self, &g) < 0) {                                \
            return NULL;                                                              \
        }                                                                             \
        PyObject *r = cd_call_dict(M, self, args, nargs, kwnames);                    \
        cd_read_exit((CDObject *)self, &g);                                           \
        return r;                                                                     \
    }

#define CD_WRITE_METHOD(fname, M)                                                     \
    static PyObject *fname(PyObject *self, PyObject *const *args, Py_ssize_t nargs,   \
                           PyObject *kwnames)                                         \
    {                                                                                 \
        cd_wguard g;                                                                  \
        if (cd_write_enter((CDObject *)self, &g) < 0) {                               \
            return NULL;                                                              \
        }                                                                             \
        PyObject *r = cd_call_dict(M, self, args, nargs, kwnames);                    \
        cd_write_exit((CDObject *)self, &g);                                          \
        return r;                                                                     \
    }

CD_READ_METHOD(cd_get, M_GET)
CD_WRITE_METHOD(cd_setdefault, M_SETDEFAULT)
CD_WRITE_METHOD(cd_pop, M_POP)
CD_WRITE_METHOD(cd_popitem, M_POPITEM)
CD_WRITE_METHOD(cd_clear, M_CLEAR)

/* ------------------------------------------------------ live maps and fork */

/* Every live CheckedDict is on one list (linked at creation by cd_new,
 * unlinked by cd_dealloc), so that a fork child can forget what threads that
 * do not exist there were doing (cd_after_fork).  GIL builds: guarded by the
 * GIL (the list code runs no Python code).  Free-threaded builds: by
 * cd_live_mutex, never held while running Python code. */
static cd_link cd_live = {&cd_live, &cd_live};
#if SM_FREE_THREADED
static PyMutex cd_live_mutex;
#  define LIVE_LOCK() PyMutex_Lock(&cd_live_mutex)
#  define LIVE_UNLOCK() PyMutex_Unlock(&cd_live_mutex)
#else
#  define LIVE_LOCK() ((void)0)
#  define LIVE_UNLOCK() ((void)0)
#endif

static void
cd_live_add(CDObject *d)
{
    LIVE_LOCK();
    d->live.prev = &cd_live;
    d->live.next = cd_live.next;
    cd_live.next->prev = &d->live;
    cd_live.next = &d->live;
    LIVE_UNLOCK();
}

static void
cd_live_remove(CDObject *d)
{
    if (d->live.next == NULL) {
        return; /* never linked (its creation failed half-way) */
    }
    LIVE_LOCK();
    d->live.prev->next = d->live.next;
    d->live.next->prev = d->live.prev;
    d->live.prev = d->live.next = NULL;
    LIVE_UNLOCK();
}

/* In a fork child only the forking thread (`me`) exists: every field naming
 * another thread describes an operation, a read, an iteration or a pin that
 * will never end, and would make every later use fail against a thread that
 * is not there.  Forget those; keep what the forking thread itself is inside
 * (it may fork from a key's __eq__ in the middle of an operation).  An
 * iterator of a gone thread is unlinked: if the child ever resumes it, it is
 * no longer an iteration in progress (a missed report, never a false one). */
static void
cd_after_fork(CDObject *d, uintptr_t me)
{
#if SM_FREE_THREADED
    memset(&d->lock, 0, sizeof(d->lock)); /* its holder may be gone */
#endif
    if (d->writer != me) {
        d->writer = 0;
    }
    if (d->reader != me) {
        d->reader = 0;
        d->rdepth = 0;
    }
    cd_reader **rp = &d->readers;
    while (*rp != NULL) {
        cd_reader *n = *rp;
        if (n->ident == me) {
            rp = &n->next;
            continue;
        }
        *rp = n->next;
        if (n->next != NULL) {
            n->next->prev = n->prev;
        }
    }
    CDIterObject **ip = &d->iters;
    while (*ip != NULL) {
        CDIterObject *it = *ip;
        if (it->ident == me) {
            ip = &it->next;
            continue;
        }
        *ip = it->next;
        if (it->next != NULL) {
            it->next->prev = it->prev;
        }
        it->prev = it->next = NULL;
        it->linked = 0;
    }
    if (d->confined_to != me) {
        d->confined_to = 0; /* the next thread that uses it pins it */
    }
}

/* Registered in the package with os.register_at_fork(after_in_child=...). */
static PyObject *
mod_after_fork_child(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
#if SM_FREE_THREADED
    memset(&cd_live_mutex, 0, sizeof(cd_live_mutex));
#endif
    uintptr_t me = cd_ident();
    for (cd_link *n = cd_live.next; n != &cd_live; n = n->next) {
        cd_after_fork((CDObject *)((char *)n - offsetof(CDObject, live)), me);
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- creation */

/* tp_new: dict's (which fills nothing and pins nothing), then the map joins
 * the list of live maps.  Every CheckedDict, of any creation path and of any
 * subclass, is made here (dict.__new__(CheckedDict) is refused by Python
 * because this slot differs from dict's). */
static PyObject *
cd_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *self = PyDict_Type.tp_new(type, args, kwds);
    if (self != NULL) {
        cd_live_add((CDObject *)self);
    }
    return self;
}

/* A new, empty CheckedDict (no __init__, so no thread is pinned), with its
 * name and confinement. */
static CDObject *
cd_alloc(PyObject *name, int confined)
{
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) {
        return NULL;
    }
    CDObject *d = (CDObject *)cd_new(&CD_Type, empty, NULL);
    Py_DECREF(empty);
    if (d == NULL) {
        return NULL;
    }
    if (name != NULL && name != Py_None) {
        d->name = PyObject_Str(name);
        if (d->name == NULL) {
            Py_DECREF(d);
            return NULL;
        }
    }
    d->confined = confined;
    return d;
}

/* Whether `o` is read by cd_merge_into when it is the source of a copy or an
 * update: a CheckedDict itself.  An instance of a Python subclass may
 * override keys() or __getitem__, so it is left to dict, which reads such a
 * subclass through them (key by key). */
#define CD_MERGEABLE(o) Py_IS_TYPE((o), &CD_Type)

/* Insert src's items into target (dict's own insertion, no guard on target:
 * the caller owns it or holds its write guard), as ONE read of src: a write
 * by another thread at any point of the copy is detected (in the writer, or
 * in this thread before it starts), so the copy is never torn.  dict itself
 * copies a dict subclass that overrides iteration key by key (keys(), then
 * src[k] for each), which is not one read.  0, or -1 with an exception. */
static int
cd_merge_into(PyObject *target, CDObject *src)
{
    cd_rguard g;
    if (cd_read_enter(src, &g) < 0) {
        return -1;
    }
    int rc = 0;
    Py_BEGIN_CRITICAL_SECTION(src);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next((PyObject *)src, &pos, &k, &v)) {
        /* Strong references: inserting may run a key's __hash__/__eq__. */
        Py_INCREF(k);
        Py_INCREF(v);
        rc = PyDict_SetItem(target, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) {
            break;
        }
    }
    Py_END_CRITICAL_SECTION();
    cd_read_exit(src, &g);
    return rc;
}

/* Copy self's items into a new CheckedDict (same name and confinement, not
 * pinned).  One read of self. */
static PyObject *
cd_copy_impl(CDObject *self)
{
    CDObject *new = cd_alloc(self->name, self->confined);
    if (new == NULL) {
        return NULL;
    }
    if (cd_merge_into((PyObject *)new, self) < 0) {
        Py_DECREF(new);
        return NULL;
    }
    return (PyObject *)new;
}

/* dict.update(self, src) for a source cd_merge_into reads (one read of it;
 * updating a map with itself changes nothing). */
static int
cd_update_from(PyObject *self, PyObject *src)
{
    return src == self ? 0 : cd_merge_into(self, (CDObject *)src);
}

/* update(): a write of self; a CheckedDict argument is read as one read. */
static PyObject *
cd_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    cd_wguard g;
    if (cd_write_enter((CDObject *)self, &g) < 0) {
        return NULL;
    }
    PyObject *r;
    if (nargs == 1 && CD_MERGEABLE(args[0])) {
        r = NULL;
        if (cd_update_from(self, args[0]) == 0) {
            /* then the keyword arguments, by dict (their values follow). */
            r = cd_call_dict(M_UPDATE, self, args + 1, 0, kwnames);
        }
    }
    else {
        r = cd_call_dict(M_UPDATE, self, args, nargs, kwnames);
    }
    cd_write_exit((CDObject *)self, &g);
    return r;
}

/* ---------------------------------------------------------------- iterator */

/* dict's own iterator of the given kind over d (C only: no Python code). */
static PyObject *
cditer_make_inner(CDObject *d, int kind)
{
    PyObject *inner;
    if (kind == CD_KEYS) {
        inner = PyDict_Type.tp_iter((PyObject *)d);
    }
    else {
        PyObject *view = PyObject_CallOneArg(cd_dict_views[kind & 3], (PyObject *)d);
        if (view == NULL) {
            return NULL;
        }
        if (kind & CD_REVERSED) {
            inner = PyObject_CallMethodNoArgs(view, cd_str_reversed);
        }
        else {
            inner = PyObject_GetIter(view);
        }
        Py_DECREF(view);
    }
    if (inner != NULL && Py_TYPE(inner)->tp_iternext == NULL) {
        PyErr_SetString(PyExc_TypeError, "dict returned a non-iterator");
        Py_CLEAR(inner);
    }
    return inner;
}

/* A checked iterator over d.  dict's own iterator is only made at the first
 * next(), once the iteration is published: dict's iterator remembers the
 * size at its creation, and a write by another thread between iter(d) and
 * the first next() (allowed: the iteration is not in progress yet) must not
 * turn into dict's "changed size during iteration". */
static PyObject *
cditer_new(CDObject *d, int kind)
{
    CDIterObject *it = PyObject_GC_New(CDIterObject, &CDIter_Type);
    if (it == NULL) {
        return NULL;
    }
    it->map = (CDObject *)Py_NewRef(d);
    it->inner = NULL;
    it->ident = 0;
    it->kind = kind;
    it->state = CD_IT_NEW;
    it->linked = 0;
    it->prev = it->next = NULL;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static void
cditer_link(CDIterObject *it, uintptr_t me)
{
    CDObject *d = it->map;
    CD_LOCK(d);
    it->ident = me;
    it->prev = NULL;
    it->next = d->iters;
    if (it->next != NULL) {
        it->next->prev = it;
    }
    it->linked = 1;
    SM_STORE_PTR(&d->iters, it);
    CD_UNLOCK(d);
}

static void
cditer_unlink(CDIterObject *it)
{
    CDObject *d = it->map;
    CD_LOCK(d);
    if (it->linked) {
        if (it->prev != NULL) {
            it->prev->next = it->next;
        }
        else {
            SM_STORE_PTR(&d->iters, it->next);
        }
        if (it->next != NULL) {
            it->next->prev = it->prev;
        }
        it->prev = it->next = NULL;
        it->linked = 0;
    }
    CD_UNLOCK(d);
}

/* The first next(): publish the iteration (link it), then look for a writer
 * of another thread (Dekker, see the top), then make dict's iterator.
 * 0: running; -1: error (the iterator is back to NEW: nothing began). */
static int
cditer_begin(CDIterObject *it)
{
    CDObject *d = it->map;
    uintptr_t me = cd_ident();
    if (cd_confine(d, me) < 0) {
        return -1;
    }
    int expected = CD_IT_NEW;
    if (!CD_CAS_INT(&it->state, &expected, CD_IT_STARTING)) {
        if (expected == CD_IT_STARTING) {
            PyErr_SetString(PyExc_RuntimeError,
                            "CheckedDict iterator started by two threads at once");
            return -1;
        }
        return 0; /* another thread began it: RUNNING or DONE */
    }
    cditer_link(it, me);
    uintptr_t w = CD_LOAD(&d->writer);
    if (w != 0 && w != me) {
        cditer_unlink(it);
        SM_STORE_INT(&it->state, CD_IT_NEW);
        return cd_raise(CD_ERR_ITER_WRITE, d, w);
    }
    PyObject *inner = cditer_make_inner(d, it->kind);
    if (inner == NULL) {
        cditer_unlink(it);
        SM_STORE_INT(&it->state, CD_IT_NEW);
        return -1;
    }
    SM_STORE_PTR(&it->inner, inner);
    SM_STORE_INT(&it->state, CD_IT_RUNNING);
    return 0;
}

static PyObject *
cditer_next(PyObject *op)
{
    CDIterObject *it = (CDIterObject *)op;
    CDObject *d = it->map;
    int state = SM_LOAD_INT(&it->state);
    if (SM_UNLIKELY(state != CD_IT_RUNNING)) {
        if (state != CD_IT_DONE && cditer_begin(it) < 0) {
            return NULL;
        }
        state = SM_LOAD_INT(&it->state);
        if (state == CD_IT_DONE) {
            /* dict's iterator decides (exhausted stays exhausted; its size
             * change error is sticky). */
            return Py_TYPE(it->inner)->tp_iternext(it->inner);
        }
    }
    /* Each step: a write in progress in another thread is an error. */
    uintptr_t w = CD_LOAD(&d->writer);
    if (SM_UNLIKELY(d->confined) || SM_UNLIKELY(w != 0)) {
        uintptr_t me = cd_ident();
        if (cd_confine(d, me) < 0) {
            return NULL;
        }
        if (w != 0 && w != me) {
            cd_raise(CD_ERR_ITER_WRITE, d, w);
            return NULL;
        }
    }
    PyObject *r = Py_TYPE(it->inner)->tp_iternext(it->inner);
    if (SM_UNLIKELY(r == NULL)) {
        /* Exhausted or failed: the iteration is over. */
        cditer_unlink(it);
        SM_STORE_INT(&it->state, CD_IT_DONE);
    }
    return r;
}

/* Untrack first, then the trashcan (releasing the map can free a chain of
 * maps and iterators).  No tp_clear: every cycle through an iterator goes
 * through its map (or dict's iterator over it), and the map's tp_clear breaks
 * it; unlinking needs `map`, so it is never cleared before the dealloc. */
static void
cditer_dealloc(PyObject *op)
{
    CDIterObject *it = (CDIterObject *)op;
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, cditer_dealloc)
    if (it->linked) {
        cditer_unlink(it); /* dropped: the iteration is over */
    }
    Py_XDECREF(it->inner);
    Py_XDECREF(it->map);
    PyObject_GC_Del(op);
    Py_TRASHCAN_END
}

static int
cditer_traverse(PyObject *op, visitproc visit, void *arg)
{
    CDIterObject *it = (CDIterObject *)op;
    Py_VISIT(it->map);
    Py_VISIT(it->inner);
    return 0;
}

static PyObject *
cditer_length_hint(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    CDIterObject *it = (CDIterObject *)op;
    PyObject *inner = SM_LOAD_PTR(&it->inner);
    if (inner == NULL) {
        return PyLong_FromSsize_t(SM_LOAD_INT(&it->state) == CD_IT_NEW
                                      ? PyDict_Size((PyObject *)it->map)
                                      : 0);
    }
    Py_ssize_t n = PyObject_LengthHint(inner, 0);
    if (n < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

static PyMethodDef cditer_methods[] = {
    {"__length_hint__", cditer_length_hint, METH_NOARGS, "Private method returning an estimate of len(list(it))."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CDIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.failfast._core.CheckedDictIterator",
    .tp_basicsize = sizeof(CDIterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Iterator over a CheckedDict: the iteration is in progress (and a write "
              "from another thread is an error) from the first next() until it is "
              "exhausted or dropped.",
    .tp_dealloc = cditer_dealloc,
    .tp_traverse = cditer_traverse,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = cditer_next,
    .tp_methods = cditer_methods,
};

/* ------------------------------------------------------------------- slots */

static Py_ssize_t
cd_length(PyObject *self)
{
    if (cd_peek((CDObject *)self) < 0) {
        return -1;
    }
    return PyDict_Type.tp_as_mapping->mp_length(self);
}

static PyObject *
cd_subscript(PyObject *self, PyObject *key)
{
    cd_rguard g;
    if (cd_read_enter((CDObject *)self, &g) < 0) {
        return NULL;
    }
    PyObject *r = PyDict_Type.tp_as_mapping->mp_subscript(self, key);
    cd_read_exit((CDObject *)self, &g);
    return r;
}

static int
cd_ass_subscript(PyObject *self, PyObject *key, PyObject *value)
{
    cd_wguard g;
    if (cd_write_enter((CDObject *)self, &g) < 0) {
        return -1;
    }
    int r = PyDict_Type.tp_as_mapping->mp_ass_subscript(self, key, value);
    cd_write_exit((CDObject *)self, &g);
    return r;
}

static int
cd_contains(PyObject *self, PyObject *key)
{
    cd_rguard g;
    if (cd_read_enter((CDObject *)self, &g) < 0) {
        return -1;
    }
    int r = PyDict_Type.tp_as_sequence->sq_contains(self, key);
    cd_read_exit((CDObject *)self, &g);
    return r;
}

static PyObject *
cd_iter(PyObject *self)
{
    return cditer_new((CDObject *)self, CD_KEYS);
}

static PyObject *
cd_repr(PyObject *self)
{
    cd_rguard g;
    if (cd_read_enter((CDObject *)self, &g) < 0) {
        return NULL;
    }
    PyObject *r = PyDict_Type.tp_repr(self);
    cd_read_exit((CDObject *)self, &g);
    return r;
}

/* ==, != (and the orderings dict refuses): a read of each CheckedDict side. */
static PyObject *
cd_richcompare(PyObject *a, PyObject *b, int op)
{
    cd_rguard ga, gb;
    int ca = CD_Check(a), cb = CD_Check(b);
    if (ca && cd_read_enter((CDObject *)a, &ga) < 0) {
        return NULL;
    }
    if (cb && cd_read_enter((CDObject *)b, &gb) < 0) {
        if (ca) {
            cd_read_exit((CDObject *)a, &ga);
        }
        return NULL;
    }
    PyObject *r = PyDict_Type.tp_richcompare(a, b, op);
    if (cb) {
        cd_read_exit((CDObject *)b, &gb);
    }
    if (ca) {
        cd_read_exit((CDObject *)a, &ga);
    }
    return r;
}

/* __init__: a write of self; a CheckedDict argument is read as one read. */
static int
cd_init(PyObject *self, PyObject *args, PyObject *kwds)
{
    cd_wguard g;
    if (cd_write_enter((CDObject *)self, &g) < 0) {
        return -1;
    }
    int r;
    if (PyTuple_GET_SIZE(args) == 1 && CD_MERGEABLE(PyTuple_GET_ITEM(args, 0))) {
        r = cd_update_from(self, PyTuple_GET_ITEM(args, 0));
        if (r == 0 && kwds != NULL) {
            PyObject *empty = PyTuple_New(0);
            r = empty == NULL ? -1 : PyDict_Type.tp_init(self, empty, kwds);
            Py_XDECREF(empty);
        }
    }
    else {
        r = PyDict_Type.tp_init(self, args, kwds);
    }
    cd_write_exit((CDObject *)self, &g);
    return r;
}

/* a | b: a new CheckedDict when a is one (like copy()); dict's result when
 * only b is.  A CheckedDict operand is read as one read (dict would read it
 * key by key). */
static PyObject *
cd_or(PyObject *a, PyObject *b)
{
    if (!CD_Check(a)) {
        if (!PyDict_CheckExact(a) || !CD_MERGEABLE(b)) {
            return PyDict_Type.tp_as_number->nb_or(a, b);
        }
        PyObject *new = PyDict_Copy(a); /* what dict's a | b starts with */
        if (new != NULL && cd_merge_into(new, (CDObject *)b) < 0) {
            Py_CLEAR(new);
        }
        return new;
    }
    if (!PyDict_Check(b)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *new = cd_copy_impl((CDObject *)a);
    if (new == NULL) {
        return NULL;
    }
    /* new is not shared yet: no guard of its own. */
    if (CD_MERGEABLE(b)) {
        if (cd_merge_into(new, (CDObject *)b) < 0) {
            Py_DECREF(new);
            return NULL;
        }
        return new;
    }
    PyObject *r = cd_call_dict(M_UPDATE, new, &b, 1, NULL);
    if (r == NULL) {
        Py_DECREF(new);
        return NULL;
    }
    Py_DECREF(r);
    return new;
}

static PyObject *
cd_inplace_or(PyObject *self, PyObject *other)
{
    cd_wguard g;
    if (cd_write_enter((CDObject *)self, &g) < 0) {
        return NULL;
    }
    PyObject *r;
    if (CD_MERGEABLE(other)) {
        r = cd_update_from(self, other) < 0 ? NULL : Py_NewRef(self);
    }
    else {
        r = PyDict_Type.tp_as_number->nb_inplace_or(self, other);
    }
    cd_write_exit((CDObject *)self, &g);
    return r;
}

/* CPython's rules, in this order: untrack first (nothing below may let the GC
 * see a dying map: releasing `name` can run Python code, a str subclass's
 * __del__, which may collect); then the trashcan, which turns a deep chain of
 * nested maps into a loop instead of a C recursion.  dict's own dealloc only
 * engages the trashcan for dict itself (its condition is the type's
 * tp_dealloc), not for a subtype.  On 3.14+ the interpreter does it for every
 * type and the macros are empty.  No iterator can be linked (each holds a
 * reference to the map), no thread can be inside an operation (it would hold
 * a reference too). */
static void
cd_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, cd_dealloc)
    cd_live_remove((CDObject *)self);
    Py_CLEAR(((CDObject *)self)->name);
    PyDict_Type.tp_dealloc(self); /* untracked already: it untracks again */
    Py_TRASHCAN_END
}

/* The GC must see `name`: a str subclass instance may refer back to the map. */
static int
cd_tp_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((CDObject *)self)->name);
    return PyDict_Type.tp_traverse(self, visit, arg);
}

/* Only called on an unreachable map: nothing else can read `name` any more. */
static int
cd_tp_clear(PyObject *self)
{
    Py_CLEAR(((CDObject *)self)->name);
    return PyDict_Type.tp_clear(self);
}

/* ----------------------------------------------------------------- methods */

static PyObject *
cd_view(PyObject *self, int kind)
{
    if (cd_view_types[kind] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "safemap.failfast is not initialised");
        return NULL;
    }
    return PyObject_CallOneArg(cd_view_types[kind], self);
}

static PyObject *
cd_keys(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return cd_view(self, CD_KEYS);
}

static PyObject *
cd_values(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return cd_view(self, CD_VALUES);
}

static PyObject *
cd_items(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return cd_view(self, CD_ITEMS);
}

static PyObject *
cd_reversed(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return cditer_new((CDObject *)self, CD_KEYS | CD_REVERSED);
}

static PyObject *
cd_copy(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return cd_copy_impl((CDObject *)self);
}

/* Pickle: (_restore, (name,), confined, None, items iterator).  The new map
 * is created (and memoized) before its items, so a map that contains itself
 * round-trips; pickle sets the items first and the state (confinement) last,
 * so filling the copy does not pin it to the unpickling thread. */
static PyObject *
cd_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    CDObject *d = (CDObject *)self;
    PyObject *items = cditer_new(d, CD_ITEMS);
    if (items == NULL) {
        return NULL;
    }
    return Py_BuildValue("O(O)OON", cd_restore_func, d->name ? d->name : Py_None,
                         d->confined ? Py_True : Py_False, Py_None, items);
}

/* The state of a pickled map: whether it is confined.  Applies once, to a
 * map made by _restore() that is being unpickled (not shared yet, never
 * pinned); a live map refuses it, so it can neither lose its pin nor gain a
 * confinement that the code using it does not expect. */
static PyObject *
cd_setstate(PyObject *self, PyObject *state)
{
    CDObject *d = (CDObject *)self;
    int confined = PyObject_IsTrue(state);
    if (confined < 0) {
        return NULL;
    }
    int expected = 1;
    if (!CD_CAS_INT(&d->restoring, &expected, 0)) {
        PyErr_SetString(PyExc_TypeError,
                        "CheckedDict.__setstate__ only restores a map being unpickled");
        return NULL;
    }
    d->confined = confined;
    Py_RETURN_NONE;
}

static PyObject *cd_copy_deepcopy; /* copy.deepcopy, imported by cd_exec */

/* copy.deepcopy: a new CheckedDict (same name and confinement, not pinned),
 * memoized before its items are copied (a map containing itself works).  The
 * items are read under a read guard into a list (dict's own PyDict_Items on
 * the internals), then deep-copied outside it. */
static PyObject *
cd_deepcopy(PyObject *self, PyObject *memo)
{
    CDObject *d = (CDObject *)self;
    CDObject *new = cd_alloc(d->name, d->confined);
    if (new == NULL) {
        return NULL;
    }
    PyObject *items = NULL, *id = PyLong_FromVoidPtr(self);
    if (id == NULL || PyObject_SetItem(memo, id, (PyObject *)new) < 0) {
        goto fail;
    }
    cd_rguard g;
    if (cd_read_enter(d, &g) < 0) {
        goto fail;
    }
    items = PyDict_Items(self);
    cd_read_exit(d, &g);
    if (items == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        PyObject *k = PyObject_CallFunctionObjArgs(cd_copy_deepcopy, PyTuple_GET_ITEM(kv, 0),
                                                   memo, NULL);
        if (k == NULL) {
            goto fail;
        }
        PyObject *v = PyObject_CallFunctionObjArgs(cd_copy_deepcopy, PyTuple_GET_ITEM(kv, 1),
                                                   memo, NULL);
        if (v == NULL) {
            Py_DECREF(k);
            goto fail;
        }
        int rc = PyDict_SetItem((PyObject *)new, k, v); /* not shared yet: unguarded */
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) {
            goto fail;
        }
    }
    Py_DECREF(items);
    Py_DECREF(id);
    return (PyObject *)new;
fail:
    Py_XDECREF(items);
    Py_XDECREF(id);
    Py_DECREF(new);
    return NULL;
}

static PyObject *
cd_get_name(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *name = ((CDObject *)self)->name;
    return Py_NewRef(name ? name : Py_None);
}

static PyObject *
cd_get_confined(PyObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(((CDObject *)self)->confined);
}

static PyGetSetDef cd_getset[] = {
    {"name", cd_get_name, NULL, "The map's name in error messages (None: its id is used).", NULL},
    {"confined", cd_get_confined, NULL, "Whether the map is confined to one thread.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ml_doc of the wrappers with NULL is copied from dict's method at init. */
static PyMethodDef cd_methods[] = {
    {"get", (PyCFunction)(void (*)(void))cd_get, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"setdefault", (PyCFunction)(void (*)(void))cd_setdefault, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"pop", (PyCFunction)(void (*)(void))cd_pop, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"popitem", (PyCFunction)(void (*)(void))cd_popitem, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"update", (PyCFunction)(void (*)(void))cd_update, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"clear", (PyCFunction)(void (*)(void))cd_clear, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"keys", cd_keys, METH_NOARGS, "A set-like view of the keys; iterating it is checked."},
    {"values", cd_values, METH_NOARGS, "A view of the values; iterating it is checked."},
    {"items", cd_items, METH_NOARGS, "A set-like view of the items; iterating it is checked."},
    {"__reversed__", cd_reversed, METH_NOARGS, "A checked iterator over the keys in reverse order."},
    {"copy", cd_copy, METH_NOARGS,
     "A shallow copy: a new CheckedDict with the same name and confinement (not yet pinned)."},
    {"__copy__", cd_copy, METH_NOARGS, "Same as copy()."},
    {"__reduce__", cd_reduce, METH_NOARGS, "Pickle support: restores a CheckedDict."},
    {"__setstate__", cd_setstate, METH_O, "Pickle support: the confinement of the map."},
    {"__deepcopy__", cd_deepcopy, METH_O,
     "A deep copy: a new CheckedDict with the same name and confinement (not yet pinned)."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods cd_as_mapping = {
    .mp_length = cd_length,
    .mp_subscript = cd_subscript,
    .mp_ass_subscript = cd_ass_subscript,
};

static PySequenceMethods cd_as_sequence = {
    .sq_contains = cd_contains,
};

static PyNumberMethods cd_as_number = {
    .nb_or = cd_or,
    .nb_inplace_or = cd_inplace_or,
};

static PyTypeObject CD_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.failfast._core.CheckedDict",
    .tp_basicsize = sizeof(CDObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A dict that raises on overlapping use from several threads "
              "(see safemap.checked).",
    .tp_dealloc = cd_dealloc,
    .tp_repr = cd_repr,
    .tp_as_number = &cd_as_number,
    .tp_as_sequence = &cd_as_sequence,
    .tp_as_mapping = &cd_as_mapping,
    .tp_richcompare = cd_richcompare,
    .tp_traverse = cd_tp_traverse,
    .tp_clear = cd_tp_clear,
    .tp_iter = cd_iter,
    .tp_methods = cd_methods,
    .tp_getset = cd_getset,
    .tp_init = cd_init,
    .tp_new = cd_new,
};

/* The module's types, all of them: cd_exec readies and exports each. */
static PyTypeObject *const cd_types[] = {&CD_Type, &CDIter_Type};

/* ---------------------------------------------------------------- module */

static PyObject *
mod_new(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_new(mapping, name, confined)");
        return NULL;
    }
    int confined = PyObject_IsTrue(args[2]);
    if (confined < 0) {
        return NULL;
    }
    CDObject *d = cd_alloc(args[1], confined);
    if (d == NULL) {
        return NULL;
    }
    if (CD_MERGEABLE(args[0])) {
        /* Not shared yet: no guard of its own (so nothing is pinned). */
        if (cd_merge_into((PyObject *)d, (CDObject *)args[0]) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    else if (args[0] != Py_None) {
        /* Not shared yet: dict's update, unguarded (so nothing is pinned). */
        PyObject *r = cd_call_dict(M_UPDATE, (PyObject *)d, args, 1, NULL);
        if (r == NULL) {
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(r);
    }
    return (PyObject *)d;
}

static PyObject *
mod_restore(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "_restore(name)");
        return NULL;
    }
    CDObject *d = cd_alloc(args[0], 0);
    if (d != NULL) {
        d->restoring = 1; /* until __setstate__, which pickle calls last */
    }
    return (PyObject *)d;
}

static PyObject *
mod_iter(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !CD_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "_iter(checked_dict, kind)");
        return NULL;
    }
    long kind = PyLong_AsLong(args[1]);
    if (kind < 0 || (kind & ~(long)(3 | CD_REVERSED)) != 0 || (kind & 3) == 3) {
        PyErr_SetString(PyExc_ValueError, "bad iterator kind");
        return NULL;
    }
    return cditer_new((CDObject *)args[0], (int)kind);
}

static PyObject *
mod_set_hooks(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "_set_hooks(error_factory, keys, values, items)");
        return NULL;
    }
    Py_XSETREF(cd_error_factory, Py_NewRef(args[0]));
    for (int i = 0; i < 3; i++) {
        Py_XSETREF(cd_view_types[i], Py_NewRef(args[i + 1]));
    }
    Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
    {"_new", (PyCFunction)(void (*)(void))mod_new, METH_FASTCALL,
     "_new(mapping, name, confined): a new CheckedDict (the body of safemap.checked())."},
    {"_restore", (PyCFunction)(void (*)(void))mod_restore, METH_FASTCALL,
     "_restore(name): an empty CheckedDict (unpickling; __setstate__ confines it)."},
    {"_iter", (PyCFunction)(void (*)(void))mod_iter, METH_FASTCALL,
     "_iter(map, kind): a checked iterator; kind 0 keys, 1 values, 2 items, +4 reversed."},
    {"_set_hooks", (PyCFunction)(void (*)(void))mod_set_hooks, METH_FASTCALL,
     "_set_hooks(error_factory, keys_view, values_view, items_view)."},
    {"_after_fork_child", mod_after_fork_child, METH_NOARGS,
     "In a fork child, forget what the threads that do not exist there were doing "
     "with every CheckedDict (registered with os.register_at_fork)."},
    {NULL, NULL, 0, NULL},
};

static int
cd_find_dict_methods(void)
{
    for (int m = 0; m < M_COUNT; m++) {
        cd_orig[m] = NULL;
        for (PyMethodDef *def = PyDict_Type.tp_methods; def->ml_name != NULL; def++) {
            if (strcmp(def->ml_name, cd_method_names[m]) == 0) {
                cd_orig[m] = def;
                break;
            }
        }
        if (cd_orig[m] == NULL) {
            PyErr_Format(PyExc_ImportError, "dict has no method %s", cd_method_names[m]);
            return -1;
        }
        if (cd_descr[m] == NULL &&
            (cd_descr[m] = PyObject_GetAttrString((PyObject *)&PyDict_Type,
                                                  cd_method_names[m])) == NULL) {
            return -1;
        }
        for (PyMethodDef *def = cd_methods; def->ml_name != NULL; def++) {
            if (def->ml_doc == NULL && strcmp(def->ml_name, cd_method_names[m]) == 0) {
                def->ml_doc = cd_orig[m]->ml_doc;
            }
        }
    }
    static const char *const views[3] = {"keys", "values", "items"};
    for (int i = 0; i < 3; i++) {
        if (cd_dict_views[i] == NULL &&
            (cd_dict_views[i] = PyObject_GetAttrString((PyObject *)&PyDict_Type, views[i])) ==
                NULL) {
            return -1;
        }
    }
    if (cd_str_reversed == NULL &&
        (cd_str_reversed = PyUnicode_InternFromString("__reversed__")) == NULL) {
        return -1;
    }
    return 0;
}

static int
cd_exec(PyObject *module)
{
    if (cd_find_dict_methods() < 0) {
        return -1;
    }
    CD_Type.tp_base = &PyDict_Type;
    /* Every type of the module, readied and exported under its own name by
     * one loop: a type cannot be used unready because it was forgotten. */
    for (size_t i = 0; i < sizeof(cd_types) / sizeof(cd_types[0]); i++) {
        if (PyModule_AddType(module, cd_types[i]) < 0) {
            return -1;
        }
    }
    if (PyModule_AddIntConstant(module, "FREE_THREADED", SM_FREE_THREADED) < 0) {
        return -1;
    }
    if (cd_restore_func == NULL &&
        (cd_restore_func = PyObject_GetAttrString(module, "_restore")) == NULL) {
        return -1;
    }
    /* Imported here, under the import lock, not on first use: a lazy global
     * set by whichever thread deep-copies first would race on free-threaded
     * builds. */
    if (cd_copy_deepcopy == NULL) {
        PyObject *copy = PyImport_ImportModule("copy");
        if (copy == NULL) {
            return -1;
        }
        cd_copy_deepcopy = PyObject_GetAttrString(copy, "deepcopy");
        Py_DECREF(copy);
        if (cd_copy_deepcopy == NULL) {
            return -1;
        }
    }
    return 0;
}

static PyModuleDef_Slot cd_slots[] = {
    {Py_mod_exec, (void *)cd_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef cd_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.failfast._core",
    .m_doc = "CheckedDict: a dict that fails fast on concurrent misuse (see safemap.checked).",
    .m_size = 0,
    .m_methods = mod_methods,
    .m_slots = cd_slots,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&cd_module);
}
