/*
 * _frozen.c -- FrozenMap's C base: its storage and its read path.
 *
 * safemap.protocol.frozen.FrozenMap derives from FrozenBase, which holds the
 * three fields the Python class used to keep in slots and answers the reads
 * (m[k], get, in, len, iteration) in C, from either backing:
 *
 *   data  NULL: not built yet (fresh from __new__);
 *         Py_None: trie-backed, no dict made yet;
 *         a dict: the contents (dict-backed, or made once from the trie).
 *   trie  NULL, or a trie version (safemap.persistent._hamt.Trie).
 *   hash  NULL until the first hash(), then the int.
 *
 * Invariants: each field is published once and never replaced afterwards
 * (data: NULL -> None -> dict at most; trie and hash: NULL -> object), with
 * a compare-and-swap on free-threaded builds, so a reader that loaded a field
 * may use it for as long as it holds the FrozenMap (the caller's reference
 * keeps the FrozenMap, and so the field, alive).  The dict and the trie never
 * change once they back a FrozenMap (the dict is private; a trie version is
 * immutable once shared), so reading them needs no lock.
 *
 * There is no Python-visible member for any field: the Python class reads and
 * writes them through this module's private functions and seals the names
 * (_data, _hash, _trie) with read-only properties.
 *
 * The trie reads come from the trie's own extension, which registers them
 * when it is imported (_frozen_api.h): the protocol layer imports no map.
 */
#include "../native/sm_compat.h"
#include "_frozen_api.h"

typedef struct {
    PyObject_HEAD
    PyObject *data;
    PyObject *trie;
    PyObject *hash;
    PyObject *weakreflist;
} FrozenBase;

static PyTypeObject FrozenBase_Type;

/* Registered by safemap.persistent._hamt; set once, never cleared. */
static const FrozenTrieAPI *trie_api;

#if SM_FREE_THREADED
#  define FB_LOAD(p) ((PyObject *)_Py_atomic_load_ptr_acquire((void *)(p)))
#else
#  define FB_LOAD(p) (*(p))
#endif

/* ------------------------------------------------------------- field access */

static int
fb_check(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &FrozenBase_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a FrozenMap, got %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

/* Publish *field = value (a new reference, stolen) if *field is NULL or, when
 * also_none, Py_None; return the field's value afterwards (a new reference):
 * value, or the one another thread published first. */
static PyObject *
fb_publish(PyObject **field, PyObject *value, int also_none)
{
#if SM_FREE_THREADED
    for (;;) {
        PyObject *cur = FB_LOAD(field);
        if (cur != NULL && !(also_none && cur == Py_None)) {
            Py_DECREF(value);
            return Py_NewRef(cur);
        }
        PyObject *expected = cur;
        if (_Py_atomic_compare_exchange_ptr((void *)field, (void *)&expected, (void *)value)) {
            Py_XDECREF(cur); /* NULL or the immortal None */
            return Py_NewRef(value);
        }
    }
#else
    PyObject *cur = *field;
    if (cur != NULL && !(also_none && cur == Py_None)) {
        Py_DECREF(value);
        return Py_NewRef(cur);
    }
    *field = value;
    Py_XDECREF(cur);
    return Py_NewRef(value);
#endif
}

static PyObject *
fb_unset(PyObject *self, const char *name)
{
    PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%s'",
                 Py_TYPE(self)->tp_name, name);
    return NULL;
}

/* The private accessors frozen.py uses: _get(fm, i) raises AttributeError
 * while field i is unset; _set(fm, i, v) publishes v unless the field is set
 * (data: set and not None) and returns the field's value. */
enum { F_DATA, F_TRIE, F_HASH };
static const char *const field_names[] = {"_data", "_trie", "_hash"};

static PyObject **
fb_field(PyObject *self, PyObject *index)
{
    if (fb_check(self) < 0) {
        return NULL;
    }
    long i = PyLong_AsLong(index);
    if (i < F_DATA || i > F_HASH) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "no such field");
        }
        return NULL;
    }
    FrozenBase *fb = (FrozenBase *)self;
    return i == F_DATA ? &fb->data : i == F_TRIE ? &fb->trie : &fb->hash;
}

static PyObject *
fb_get_field(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_get(fm, field)");
        return NULL;
    }
    PyObject **field = fb_field(args[0], args[1]);
    if (field == NULL) {
        return NULL;
    }
    PyObject *v = FB_LOAD(field);
    if (v == NULL) {
        long i = PyLong_AsLong(args[1]);
        return fb_unset(args[0], field_names[i]);
    }
    return Py_NewRef(v);
}

static PyObject *
fb_set_field(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_set(fm, field, value)");
        return NULL;
    }
    PyObject **field = fb_field(args[0], args[1]);
    if (field == NULL) {
        return NULL;
    }
    FrozenBase *fb = (FrozenBase *)args[0];
    PyObject *v = args[2];
    if (field == &fb->data && v != Py_None && !PyDict_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "a FrozenMap's data is a dict or None");
        return NULL;
    }
    if (field == &fb->trie) {
        const FrozenTrieAPI *api = SM_LOAD_PTR(&trie_api);
        if (api == NULL || !Py_IS_TYPE(v, api->trie_type)) {
            PyErr_SetString(PyExc_TypeError, "a FrozenMap's trie is a Trie version");
            return NULL;
        }
    }
    return fb_publish(field, Py_NewRef(v), field == &fb->data);
}

static PyObject *
fb_register_trie_api(PyObject *Py_UNUSED(module), PyObject *capsule)
{
    const FrozenTrieAPI *api = PyCapsule_GetPointer(capsule, FROZEN_TRIE_API_CAPSULE);
    if (api == NULL) {
        return NULL;
    }
    SM_STORE_PTR(&trie_api, api); /* the same static struct on every import */
    Py_RETURN_NONE;
}

/* -------------------------------------------------------------------- reads */

/* The backing to read: *dict (borrowed) or *trie (borrowed).  -1 if unbuilt. */
static inline int
fb_backing(FrozenBase *self, PyObject **dict, PyObject **trie)
{
    PyObject *d = FB_LOAD(&self->data);
    if (SM_LIKELY(d != NULL && d != Py_None)) {
        *dict = d;
        *trie = NULL;
        return 0;
    }
    *dict = NULL;
    *trie = d == NULL ? NULL : FB_LOAD(&self->trie); /* published before data = None */
    if (*trie == NULL) {
        fb_unset((PyObject *)self, "_data");
        return -1;
    }
    return 0;
}

/* A dict subclass given to _adopt: the reads call its own methods (its
 * __missing__, __contains__, get), as dict's would; NULL for an exact dict or a
 * trie. */
static inline PyObject *
fb_dict_subclass(FrozenBase *self)
{
    PyObject *d = FB_LOAD(&self->data);
    return d != NULL && d != Py_None && SM_UNLIKELY(!PyDict_CheckExact(d)) ? d : NULL;
}

/* 1: found (*out a new reference), 0: absent, -1: error.  Exact dict or trie. */
static inline int
fb_find(FrozenBase *self, PyObject *key, PyObject **out)
{
    PyObject *d, *t;
    if (fb_backing(self, &d, &t) < 0) {
        return -1;
    }
    if (d != NULL) {
#if PY_VERSION_HEX >= 0x030D0000
        return PyDict_GetItemRef(d, key, out);
#else
        PyObject *v = PyDict_GetItemWithError(d, key);
        if (v == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        *out = Py_NewRef(v);
        return 1;
#endif
    }
    const FrozenTrieAPI *api = SM_LOAD_PTR_RELAXED(&trie_api); /* set before any trie */
    PyObject *v = NULL;
    int r = api->find(t, key, &v);
    if (r > 0) {
        *out = Py_NewRef(v);
    }
    return r;
}

static PyObject *
fb_subscript(FrozenBase *self, PyObject *key)
{
    PyObject *sub = fb_dict_subclass(self);
    if (sub != NULL) {
        return PyObject_GetItem(sub, key);
    }
    PyObject *v = NULL;
    int r = fb_find(self, key, &v);
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return r > 0 ? v : NULL;
}

static int
fb_contains(FrozenBase *self, PyObject *key)
{
    PyObject *sub = fb_dict_subclass(self);
    if (sub != NULL) {
        return PySequence_Contains(sub, key);
    }
    PyObject *v = NULL;
    int r = fb_find(self, key, &v);
    Py_XDECREF(v);
    return r;
}

static PyObject *
fb_get(FrozenBase *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *sub = fb_dict_subclass(self);
    if (sub != NULL) {
        return PyObject_CallMethod(sub, "get", "OO", args[0], nargs == 2 ? args[1] : Py_None);
    }
    PyObject *v = NULL;
    int r = fb_find(self, args[0], &v);
    if (r < 0) {
        return NULL;
    }
    return r ? v : Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static Py_ssize_t
fb_length(FrozenBase *self)
{
    PyObject *d, *t;
    if (fb_backing(self, &d, &t) < 0) {
        return -1;
    }
    if (d != NULL) {
        return PyObject_Size(d);
    }
    const FrozenTrieAPI *api = SM_LOAD_PTR_RELAXED(&trie_api); /* set before any trie */
    return api->length(t);
}

static PyObject *
fb_iter(FrozenBase *self)
{
    PyObject *d, *t;
    if (fb_backing(self, &d, &t) < 0) {
        return NULL;
    }
    return PyObject_GetIter(d != NULL ? d : t);
}

/* --------------------------------------------------------------- lifecycle */

static int
fb_traverse(FrozenBase *self, visitproc visit, void *arg)
{
    /* (a heap subclass's subtype_traverse visits the type) */
    Py_VISIT(self->data);
    Py_VISIT(self->trie);
    return 0;
}

static int
fb_clear(FrozenBase *self)
{
    Py_CLEAR(self->data);
    Py_CLEAR(self->trie);
    return 0;
}

static void
fb_dealloc(FrozenBase *self)
{
    /* A heap subclass's dealloc (subtype_dealloc) clears its __dict__ and
     * releases the type; this static base releases its own fields.  Values
     * nest (a FrozenMap of FrozenMaps): the trashcan bounds the recursion. */
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, fb_dealloc)
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    Py_CLEAR(self->data);
    Py_CLEAR(self->trie);
    Py_CLEAR(self->hash);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

static PyMethodDef fb_methods[] = {
    {"get", (PyCFunction)(void (*)(void))fb_get, METH_FASTCALL,
     "get(key, default=None): the value for key, else default."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods fb_as_mapping = {
    .mp_length = (lenfunc)fb_length,
    .mp_subscript = (binaryfunc)fb_subscript,
};

static PySequenceMethods fb_as_sequence = {
    .sq_contains = (objobjproc)fb_contains,
};

static PyTypeObject FrozenBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.protocol._frozen.FrozenBase",
    .tp_basicsize = sizeof(FrozenBase),
    .tp_dealloc = (destructor)fb_dealloc,
    .tp_as_sequence = &fb_as_sequence,
    .tp_as_mapping = &fb_as_mapping,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "FrozenMap's storage and read path (see safemap.FrozenMap).",
    .tp_traverse = (traverseproc)fb_traverse,
    .tp_clear = (inquiry)fb_clear,
    .tp_weaklistoffset = offsetof(FrozenBase, weakreflist),
    .tp_iter = (getiterfunc)fb_iter,
    .tp_methods = fb_methods,
    .tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------ module */

static PyMethodDef module_methods[] = {
    {"_get", (PyCFunction)(void (*)(void))fb_get_field, METH_FASTCALL,
     "_get(fm, field): a FrozenMap's field (0 data, 1 trie, 2 hash); AttributeError if unset."},
    {"_set", (PyCFunction)(void (*)(void))fb_set_field, METH_FASTCALL,
     "_set(fm, field, value): publish a field once; return its value."},
    {"_register_trie_api", (PyCFunction)fb_register_trie_api, METH_O,
     "Called by the trie's extension when it is imported."},
    {NULL, NULL, 0, NULL},
};

static int
frozen_exec(PyObject *module)
{
    if (PyType_Ready(&FrozenBase_Type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "FrozenBase", (PyObject *)&FrozenBase_Type);
}

static PyModuleDef_Slot frozen_slots[] = {
    {Py_mod_exec, (void *)frozen_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef frozen_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.protocol._frozen",
    .m_doc = "FrozenMap's C base: its fields and its read path.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = frozen_slots,
};

PyMODINIT_FUNC
PyInit__frozen(void)
{
    return PyModuleDef_Init(&frozen_module);
}
