/*
 * sm_cached.c -- CachedFunction, the function that @safemap.cached returns
 * for a plain (not async) function: the key of a call and the cache lookup in
 * C, the miss path in Python (safemap.protocol.singleflight.call_once).
 *
 * The key of a call.  Calls are equal keys exactly when their positional
 * arguments, keyword names and keyword values (in call order) are equal, and
 * with `typed` also the types of all arguments: the key is the tuple
 * (*args, MARK, (name, value), ..., type(arg), ...) -- MARK (private: no
 * argument is it) only with keyword arguments, the types only with `typed`.
 * One shortcut: a call with one positional argument of an exact int, str,
 * float, bool, bytes or None and no `typed` is keyed by the argument itself.
 * That keeps the same equalities: for those types x == y exactly when
 * (x,) == (y,), and none of them ever equals a tuple (their __eq__ and the
 * tuple's both return NotImplemented), so a bare key never meets a key of
 * another call shape.  Equal keys hash equally because the tuple hashes its
 * items.  An unhashable argument raises TypeError from the lookup, before the
 * call is counted.
 *
 * A call: build the key, then sm_cache_call_lookup (sm_cache.c) reads the
 * cache as get() does (hit or miss counted, access recorded for the policy)
 * and counts the call.  A hit returns the value; a miss calls
 * miss(*prefix, key, args, kwargs) -- the Python single-flight load, which
 * runs the function once per key however many threads ask.  With `owner`,
 * a miss first tries to own the load in C (cached_own): the steps of
 * call_once's owner path (safemap/protocol/singleflight.py), on the same
 * flight objects in the same flight table, so a load owned here and its
 * waiters there (or the reverse) follow one protocol; a miss that finds
 * another caller's flight goes to miss() to wait for it.
 *
 * Every field is set by tp_new and never changes afterwards (only tp_clear,
 * run by the collector, drops them), so a call reads them with no lock on
 * free-threaded builds.  The instance has a __dict__ for what
 * functools.update_wrapper and the decorator set (__wrapped__, __name__,
 * cache_info, ...).  Binding: __get__ binds like a function (a bound method),
 * and the type is a method descriptor, so obj.meth(...) calls it with obj
 * first without making the bound method.
 */
#include "sm_cached.h"
#include "sm_cache.h"

#define CACHED_MAX_PREFIX 5

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *cache;    /* a CacheBase */
    PyObject *miss;     /* miss(*prefix, key, args, kwargs); None: no miss path */
    PyObject *prefix;   /* a tuple of at most CACHED_MAX_PREFIX items */
    PyObject *owner;    /* (table, fn, Flight, land): the owner path in C; or NULL */
    PyObject *spare;    /* GIL builds: a landed flight nobody else saw, reset for the next
                           miss (cached_own), or NULL */
    Py_ssize_t off_thread, off_loop, off_outcome;  /* the Flight type's slots (with owner) */
    int typed;
    PyObject *dict;
    PyObject *weakreflist;
} SMCachedObject;

static PyObject *cached_mark = NULL;  /* separates positional from keyword arguments */

/* ------------------------------------------------------------------ keys */

static inline int
cached_bare_type(PyTypeObject *t)
{
    return t == &PyLong_Type || t == &PyUnicode_Type || t == &PyFloat_Type || t == &PyBool_Type ||
           t == &PyBytes_Type || t == Py_TYPE(Py_None);
}

/* The key of a call: args[0:nargs] positional, then the values of the
 * keyword names `kwnames` (NULL: none) at args[nargs:].  New reference. */
static PyObject *
cached_key(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int typed)
{
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw == 0 && nargs == 1 && !typed && cached_bare_type(Py_TYPE(args[0]))) {
        return Py_NewRef(args[0]);
    }
    Py_ssize_t n = nargs + (nkw ? 1 + nkw : 0) + (typed ? nargs + nkw : 0);
    PyObject *key = PyTuple_New(n);
    if (key == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(key, pos++, Py_NewRef(args[i]));
    }
    if (nkw) {
        PyTuple_SET_ITEM(key, pos++, Py_NewRef(cached_mark));
        for (Py_ssize_t j = 0; j < nkw; j++) {
            PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(kwnames, j), args[nargs + j]);
            if (pair == NULL) {
                Py_DECREF(key);  /* the unset items are NULL: the tuple's dealloc skips them */
                return NULL;
            }
            PyTuple_SET_ITEM(key, pos++, pair);
        }
    }
    if (typed) {
        for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
            PyTuple_SET_ITEM(key, pos++, Py_NewRef((PyObject *)Py_TYPE(args[i])));
        }
    }
    return key;
}

/* ------------------------------------------------------------------ calls */

/* The miss path: miss(*prefix, key, args, kwargs); kwargs is None without
 * keyword arguments. */
static PyObject *
cached_miss(SMCachedObject *self, PyObject *key, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    PyObject *stack[CACHED_MAX_PREFIX + 3];
    Py_ssize_t np = PyTuple_GET_SIZE(self->prefix);
    PyObject *argt = PyTuple_New(nargs);
    if (argt == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(argt, i, Py_NewRef(args[i]));
    }
    PyObject *kwargs = Py_None;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw) {
        kwargs = PyDict_New();
        if (kwargs == NULL) {
            Py_DECREF(argt);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < nkw; j++) {
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, j), args[nargs + j]) < 0) {
                Py_DECREF(argt);
                Py_DECREF(kwargs);
                return NULL;
            }
        }
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        stack[i] = PyTuple_GET_ITEM(self->prefix, i);
    }
    stack[np] = key;
    stack[np + 1] = argt;
    stack[np + 2] = kwargs;
    PyObject *r = PyObject_Vectorcall(self->miss, stack, (size_t)(np + 3), NULL);
    Py_DECREF(argt);
    if (nkw) {
        Py_DECREF(kwargs);
    }
    return r;
}

static PyObject *cached_str_thread, *cached_str_loop, *cached_str_outcome;

#if PY_VERSION_HEX < 0x030C0000
#  include "structmember.h"
#  define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* *off: the offset of `name`, a slot of type t holding an object.  0, or -1
 * with TypeError. */
static int
cached_slot_offset(PyObject *t, PyObject *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttr(t, name);
    if (d == NULL) {
        return -1;
    }
    int ok = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)d)->d_member->type == Py_T_OBJECT_EX;
    if (ok) {
        *off = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "the flight type's %R must be a slot", name);
        return -1;
    }
    return 0;
}

/* flight.<name> = v, where `name` is the Flight slot at offset off: a store
 * (what member_set does, minus the lookups) on GIL builds, or on any build
 * while no other thread can see the flight (`private`: not yet in the
 * table); else setattr (free-threaded slot stores are atomic). */
static inline int
cached_flight_set(PyObject *flight, Py_ssize_t off, PyObject *name, PyObject *v, int private)
{
#if SM_FREE_THREADED
    if (!private) {
        return PyObject_SetAttr(flight, name, v);
    }
#else
    (void)private;
#endif
    (void)name;
    Py_XSETREF(*(PyObject **)((char *)flight + off), Py_NewRef(v));
    return 0;
}

/* Make `mine`, a flight no other thread can see yet, this thread's (no event
 * loop).  A spare (GIL builds) that the same thread owned last keeps its
 * `thread`, which is this thread's identity already: no int is made. */
static int
cached_flight_owner(SMCachedObject *self, PyObject *mine)
{
    unsigned long ident = PyThread_get_thread_ident();
    PyObject *had = *(PyObject **)((char *)mine + self->off_thread);
    int same = had != NULL && PyLong_CheckExact(had) && PyLong_AsUnsignedLong(had) == ident;
    if (!same) {
        PyErr_Clear();  /* an int that does not convert is not this thread's either */
        PyObject *tid = PyLong_FromUnsignedLong(ident);
        if (tid == NULL) {
            return -1;
        }
        int r = cached_flight_set(mine, self->off_thread, cached_str_thread, tid, 1);
        Py_DECREF(tid);
        if (r < 0) {
            return -1;
        }
    }
    return cached_flight_set(mine, self->off_loop, cached_str_loop, Py_None, 1);
}

#if !SM_FREE_THREADED
/* Empty a landed flight for reuse.  Nobody else holds it, so it holds its
 * marker only: dropped by hand, which keeps the list's array for the next
 * miss's marker (PyList_SetSlice would free it, and that append allocate it
 * again).  0, or -1 with an exception. */
static int
cached_flight_empty(PyObject *flight)
{
    if (PyList_GET_SIZE(flight) != 1) {
        return PyList_SetSlice(flight, 0, PyList_GET_SIZE(flight), NULL);
    }
    PyObject *marker = PyList_GET_ITEM(flight, 0);
    Py_SET_SIZE(flight, 0);
    Py_DECREF(marker);
    return 0;
}
#endif

/* A flight's failure: _land(table, key, flight, exc, False) with the pending
 * exception, which is raised again (as call_once's `except: _land; raise`). */
static PyObject *
cached_land_failed(PyObject *land, PyObject *table, PyObject *key, PyObject *flight)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
#else
    PyObject *et, *exc, *tb;
    PyErr_Fetch(&et, &exc, &tb);
    PyErr_NormalizeException(&et, &exc, &tb);
    if (tb != NULL) {
        (void)PyException_SetTraceback(exc, tb);
    }
#endif
    PyObject *stack[5] = {table, key, flight, exc, Py_False};
    PyObject *r = PyObject_Vectorcall(land, stack, 5, NULL);
    if (r == NULL) {  /* landing raised: that exception replaces the load's */
#if PY_VERSION_HEX >= 0x030C0000
        Py_DECREF(exc);
#else
        Py_XDECREF(et);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
#endif
        return NULL;
    }
    Py_DECREF(r);
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(et, exc, tb);
#endif
    return NULL;
}

/* The owner path of call_once (singleflight.py), step for step: a flight
 * (owned by this thread, no event loop) put in the table unless one is
 * there; the cache read again (a load that just landed has stored its
 * value); the function run and counted; its value stored with load_or_store
 * (a value stored meanwhile wins); the flight out of the table, its outcome
 * published and its waiters woken.  A flight already in the table belongs
 * to another caller: miss() waits for it.  Out of the table, a waiter's
 * reference keeps a flight alive; the owner's is dropped at the end. */
static PyObject *
cached_own(SMCachedObject *self, PyObject *key, PyObject *const *args, Py_ssize_t nargs,
           PyObject *kwnames)
{
    PyObject *table = PyTuple_GET_ITEM(self->owner, 0);
    PyObject *fn = PyTuple_GET_ITEM(self->owner, 1);
    PyObject *mine;
#if !SM_FREE_THREADED
    if (self->spare != NULL) {
        mine = self->spare;
        self->spare = NULL;
    }
    else
#endif
    {
        mine = PyObject_CallNoArgs(PyTuple_GET_ITEM(self->owner, 2));
        if (mine == NULL) {
            return NULL;
        }
    }
    if (cached_flight_owner(self, mine) < 0) {
        Py_DECREF(mine);
        return NULL;
    }
    PyObject *flight;
    int present = sm_dict_setdefault(table, key, mine, &flight);
    if (present != 0) {
        Py_DECREF(mine);
        Py_XDECREF(flight);
        if (present < 0) {
            return NULL;
        }
        return cached_miss(self, key, args, nargs, kwnames);  /* another's load */
    }
    Py_DECREF(flight);  /* mine: the table holds it too */
    PyObject *value;
    int r = sm_cache_read(self->cache, key, &value);
    if (r == 0) {
        value = PyObject_Vectorcall(fn, args, (size_t)nargs, kwnames);
        sm_cache_count_load(self->cache, value != NULL);
        if (value != NULL) {
            PyObject *actual;
            r = sm_cache_load_or_store(self->cache, key, value, &actual);
            Py_SETREF(value, actual);
        }
    }
    if (value == NULL) {
        cached_land_failed(PyTuple_GET_ITEM(self->owner, 3), table, key, mine);
        Py_DECREF(mine);
        return NULL;
    }
    /* Landed: _land(table, key, mine, value, True), as call_once does (one C
     * call that finishes every step even if a key's __eq__ or a wake-up
     * raises: no waiter is stranded). */
    PyObject *stack[5] = {table, key, mine, value, Py_True};
    PyObject *landed = PyObject_Vectorcall(PyTuple_GET_ITEM(self->owner, 3), stack, 5, NULL);
    if (landed == NULL) {
        Py_DECREF(value);
        Py_DECREF(mine);
        return NULL;
    }
    Py_DECREF(landed);
#if !SM_FREE_THREADED
    /* Nobody else holds the flight (no waiter found it before it left the
     * table, and none can now): reset, it serves the next miss, which saves
     * an allocation of a collected object per miss.  The outcome is dropped
     * (a kept value would outlive its eviction); `thread` is set on reuse. */
    if (Py_REFCNT(mine) == 1 && self->spare == NULL && cached_flight_empty(mine) == 0 &&
        cached_flight_set(mine, self->off_outcome, cached_str_outcome, Py_None, 1) == 0) {
        self->spare = mine;
        return value;
    }
    PyErr_Clear();
#endif
    Py_DECREF(mine);
    return value;
}

static PyObject *
cached_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SMCachedObject *self = (SMCachedObject *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (SM_UNLIKELY(self->cache == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "this cached function was cleared");
        return NULL;
    }
    PyObject *key = cached_key(args, nargs, kwnames, self->typed);
    if (key == NULL) {
        return NULL;
    }
    PyObject *value;
    int r = sm_cache_call_lookup(self->cache, key, &value);
    if (r != 0) {  /* a hit (value), or an error (NULL) */
        Py_DECREF(key);
        return value;
    }
    if (self->miss == Py_None) {
        Py_DECREF(key);
        PyErr_SetString(PyExc_TypeError, "this cached function has no miss path");
        return NULL;
    }
    if (self->owner != NULL) {
        value = cached_own(self, key, args, nargs, kwnames);
    }
    else {
        value = cached_miss(self, key, args, nargs, kwnames);
    }
    Py_DECREF(key);
    return value;
}

/* _make_key(args, kwargs, typed): the key of a call (the async wrapper's). */
static PyObject *
cached_make_key(PyObject *Py_UNUSED(cls), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "_make_key expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *argt = args[0], *kwargs = args[1];
    if (!PyTuple_Check(argt) || (kwargs != Py_None && !PyDict_Check(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "_make_key(args: tuple, kwargs: dict | None, typed)");
        return NULL;
    }
    int typed = PyObject_IsTrue(args[2]);
    if (typed < 0) {
        return NULL;
    }
    Py_ssize_t nargs_call = PyTuple_GET_SIZE(argt);
    if (kwargs == Py_None || PyDict_GET_SIZE(kwargs) == 0) {
        return cached_key(&PyTuple_GET_ITEM(argt, 0), nargs_call, NULL, typed);
    }
    /* Lay the call out as a vectorcall: positional values, then keyword values,
     * read from a private copy of kwargs (another thread may change the
     * caller's dict while this runs, on free-threaded builds). */
    PyObject *kw = PyDict_Copy(kwargs);
    if (kw == NULL) {
        return NULL;
    }
    Py_ssize_t nkw = PyDict_GET_SIZE(kw);
    PyObject *kwnames = PyTuple_New(nkw);
    PyObject **stack = PyMem_New(PyObject *, nargs_call + nkw + 1);
    PyObject *key = NULL;
    if (kwnames == NULL || stack == NULL) {
        if (stack == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    for (Py_ssize_t i = 0; i < nargs_call; i++) {
        stack[i] = PyTuple_GET_ITEM(argt, i);
    }
    Py_ssize_t pos = 0, j = 0;
    PyObject *name, *value;
    while (j < nkw && PyDict_Next(kw, &pos, &name, &value)) {
        PyTuple_SET_ITEM(kwnames, j, Py_NewRef(name));
        stack[nargs_call + j] = value;  /* borrowed from kw, which lives until done */
        j++;
    }
    key = cached_key(stack, nargs_call, kwnames, typed);
done:
    Py_DECREF(kw);
    Py_XDECREF(kwnames);
    PyMem_Free(stack);
    return key;
}

/* ------------------------------------------------------------ the type */

static PyObject *
cached_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"cache", "miss", "prefix", "typed", "owner", NULL};
    PyObject *cache, *miss, *prefix, *owner = Py_None;
    int typed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!|pO:CachedFunction", kwlist, &cache, &miss,
                                     &PyTuple_Type, &prefix, &typed, &owner)) {
        return NULL;
    }
    if (owner != Py_None) {
        /* (table: dict, fn, Flight: a list type, land) */
        if (!PyTuple_Check(owner) || PyTuple_GET_SIZE(owner) != 4 ||
            !PyDict_CheckExact(PyTuple_GET_ITEM(owner, 0)) ||
            !PyType_Check(PyTuple_GET_ITEM(owner, 2)) ||
            !PyType_IsSubtype((PyTypeObject *)PyTuple_GET_ITEM(owner, 2), &PyList_Type) ||
            !PyCallable_Check(PyTuple_GET_ITEM(owner, 1)) ||
            !PyCallable_Check(PyTuple_GET_ITEM(owner, 3))) {
            PyErr_SetString(PyExc_TypeError,
                            "owner must be None or (table: dict, fn, Flight: a list type, land)");
            return NULL;
        }
        if (miss == Py_None) {
            PyErr_SetString(PyExc_TypeError, "owner needs a miss path (to wait for others' loads)");
            return NULL;
        }
    }
    Py_ssize_t offs[3] = {0, 0, 0};
    if (owner != Py_None) {
        PyObject *ft = PyTuple_GET_ITEM(owner, 2);
        if (cached_slot_offset(ft, cached_str_thread, &offs[0]) < 0 ||
            cached_slot_offset(ft, cached_str_loop, &offs[1]) < 0 ||
            cached_slot_offset(ft, cached_str_outcome, &offs[2]) < 0) {
            return NULL;
        }
    }
    if (!PyObject_TypeCheck(cache, &SMCache_Type)) {
        PyErr_Format(PyExc_TypeError, "cache must be a Cache, not %.200s", Py_TYPE(cache)->tp_name);
        return NULL;
    }
    if (miss != Py_None && !PyCallable_Check(miss)) {
        PyErr_SetString(PyExc_TypeError, "miss must be callable or None");
        return NULL;
    }
    if (PyTuple_GET_SIZE(prefix) > CACHED_MAX_PREFIX) {
        PyErr_Format(PyExc_ValueError, "prefix takes at most %d items", CACHED_MAX_PREFIX);
        return NULL;
    }
    SMCachedObject *self = (SMCachedObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = cached_vectorcall;
    self->cache = Py_NewRef(cache);
    self->miss = Py_NewRef(miss);
    self->prefix = Py_NewRef(prefix);
    self->owner = owner == Py_None ? NULL : Py_NewRef(owner);
    self->off_thread = offs[0];
    self->off_loop = offs[1];
    self->off_outcome = offs[2];
    self->typed = typed;
#if SM_FREE_THREADED && PY_VERSION_HEX >= 0x030E0000
    /* Called from every thread, like a function: the interpreter's references to
     * it (a global's load, the call) are deferred, as a function's are, instead
     * of atomic writes to one shared reference count.  It is then freed by the
     * cyclic collector, like a function on these builds. */
    (void)PyUnstable_Object_EnableDeferredRefcount((PyObject *)self);
#endif
    return (PyObject *)self;
}

static int
cached_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMCachedObject *self = (SMCachedObject *)op;
    Py_VISIT(self->cache);
    Py_VISIT(self->miss);
    Py_VISIT(self->prefix);
    Py_VISIT(self->owner);
    Py_VISIT(self->spare);
    Py_VISIT(self->dict);
    return 0;
}

static int
cached_clear(PyObject *op)
{
    SMCachedObject *self = (SMCachedObject *)op;
    Py_CLEAR(self->cache);
    Py_CLEAR(self->miss);
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->spare);
    Py_CLEAR(self->dict);
    return 0;
}

static void
cached_dealloc(PyObject *op)
{
    SMCachedObject *self = (SMCachedObject *)op;
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, cached_dealloc)
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    (void)cached_clear(op);
    Py_TYPE(op)->tp_free(op);
    Py_TRASHCAN_END
}

/* Bind like a function: obj.f is a bound method, C.f (or f looked up on no
 * instance) is f itself. */
static PyObject *
cached_descr_get(PyObject *op, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(op);
    }
    return PyMethod_New(op, obj);
}

/* Pickled by reference (its module and qualified name), as functions and
 * functools.lru_cache's wrappers are. */
static PyObject *
cached_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return PyObject_GetAttrString(op, "__qualname__");
}

static PyObject *
cached_copy(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(op);
}

static PyObject *
cached_deepcopy(PyObject *op, PyObject *Py_UNUSED(memo))
{
    return Py_NewRef(op);
}

static PyMethodDef cached_methods[] = {
    {"_make_key", (PyCFunction)(void (*)(void))cached_make_key, METH_FASTCALL | METH_STATIC,
     "_make_key(args, kwargs, typed): the cache key of a call with these arguments."},
    {"__reduce__", cached_reduce, METH_NOARGS, "Pickled by reference (module and qualified name)."},
    {"__copy__", cached_copy, METH_NOARGS, "A cached function is its own copy."},
    {"__deepcopy__", cached_deepcopy, METH_O, "A cached function is its own copy."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cached_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

SM_DEFINE_TYPE(SMCached_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.CachedFunction",
    .tp_basicsize = sizeof(SMCachedObject),
    .tp_dealloc = cached_dealloc,
    .tp_vectorcall_offset = offsetof(SMCachedObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "CachedFunction(cache, miss, prefix, typed=False, owner=None): a function "
              "memoized in a Cache (what @safemap.cached returns; use that).",
    .tp_traverse = cached_traverse,
    .tp_clear = cached_clear,
    .tp_weaklistoffset = offsetof(SMCachedObject, weakreflist),
    .tp_dictoffset = offsetof(SMCachedObject, dict),
    .tp_methods = cached_methods,
    .tp_getset = cached_getset,
    .tp_descr_get = cached_descr_get,
    .tp_new = cached_new,
    .tp_free = PyObject_GC_Del,
};

int
sm_cached_exec(PyObject *module)
{
    if (cached_mark == NULL) {
        cached_mark = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
        if (cached_mark == NULL) {
            return -1;
        }
    }
    if (cached_str_outcome == NULL) {
        cached_str_thread = PyUnicode_InternFromString("thread");
        cached_str_loop = PyUnicode_InternFromString("loop");
        cached_str_outcome = PyUnicode_InternFromString("outcome");
        if (cached_str_thread == NULL || cached_str_loop == NULL || cached_str_outcome == NULL) {
            return -1;
        }
    }
    /* The module readies the type with every other (SM_TYPES). */
    return PyModule_AddObjectRef(module, "CachedFunction", (PyObject *)&SMCached_Type);
}
