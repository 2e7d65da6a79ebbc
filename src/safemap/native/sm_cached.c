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
 * runs the function once per key however many threads ask.
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
    value = cached_miss(self, key, args, nargs, kwnames);
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
    static char *kwlist[] = {"cache", "miss", "prefix", "typed", NULL};
    PyObject *cache, *miss, *prefix;
    int typed = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!|p:CachedFunction", kwlist, &cache, &miss,
                                     &PyTuple_Type, &prefix, &typed)) {
        return NULL;
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
    .tp_doc = "CachedFunction(cache, miss, prefix, typed=False): a function memoized in a "
              "Cache (what @safemap.cached returns; use that).",
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
    /* The module readies the type with every other (SM_TYPES). */
    return PyModule_AddObjectRef(module, "CachedFunction", (PyObject *)&SMCached_Type);
}
