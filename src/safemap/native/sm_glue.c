/*
 * sm_glue.c -- the Python-facing glue the native maps share (see sm_glue.h).
 */
#include "sm_glue.h"

/* ------------------------------------------------------------ arguments */

int
sm_nargs_error(const char *name, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (lo == hi) {
        PyErr_Format(PyExc_TypeError, "%s expected %zd argument%s, got %zd", name, lo,
                     lo == 1 ? "" : "s", nargs);
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s expected %zd to %zd arguments, got %zd", name, lo,
                     hi, nargs);
    }
    return -1;
}

void
sm_key_error(PyObject *key)
{
    PyObject *t = PyTuple_Pack(1, key);
    if (t != NULL) {
        PyErr_SetObject(PyExc_KeyError, t);
        Py_DECREF(t);
    }
}

PyObject *
sm_pair(PyObject *a, int flag)
{
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_XDECREF(a);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a ? a : Py_NewRef(Py_None));
    PyTuple_SET_ITEM(t, 1, Py_NewRef(flag ? Py_True : Py_False));
    return t;
}

/* ------------------------------------------------------ get_or_compute */

/* safemap.protocol.singleflight's get_or_compute (which = 0: the miss path)
 * and read_through (1: get_or_compute through the map's own `get`), imported
 * on first use (that module is not loaded by `import safemap`) and kept for
 * the life of the process.  Borrowed, or NULL with an exception. */
static PyObject *
sm_singleflight(int which)
{
    static PyObject *fns[2];
    PyObject *f = SM_LOAD_PTR(&fns[which]);
    if (f != NULL) {
        return f;
    }
    PyObject *mod = PyImport_ImportModule("safemap.protocol.singleflight");
    if (mod == NULL) {
        return NULL;
    }
    f = PyObject_GetAttrString(mod, which ? "read_through" : "get_or_compute");
    Py_DECREF(mod);
    if (f == NULL) {
        return NULL;
    }
#if SM_FREE_THREADED
    PyObject *expected = NULL;
    if (!SM_CAS_PTR(&fns[which], &expected, f)) {
        Py_DECREF(f);  /* another thread's is there: the same function */
        return expected;
    }
#else
    fns[which] = f;
#endif
    return f;
}

/* 1 if the `get` of map's class is `own_get`, the native map's own: then a
 * read in C is what get() would do.  0 for a class that overrides it (a
 * subclass, a feature's mixin such as expiry or tracking, the race
 * detector's wrapper): those must see every read. */
static int
sm_reads_own_get(PyObject *map, PyCFunction own_get)
{
#if SM_FREE_THREADED && PY_VERSION_HEX < 0x030E0000
    (void)map, (void)own_get;
    return 0;  /* 3.13t has no lookup that returns a strong reference */
#else
    /* Free-threaded builds: a strong reference, since another thread may
     * replace the class's `get` (and free the old one) meanwhile. */
#  if SM_FREE_THREADED
    PyObject *d = _PyType_LookupRef(Py_TYPE(map), SM_str_get);
#  else
    PyObject *d = _PyType_Lookup(Py_TYPE(map), SM_str_get);
#  endif
    int own = d != NULL && Py_IS_TYPE(d, &PyMethodDescr_Type) &&
              ((PyMethodDescrObject *)d)->d_method->ml_meth == own_get;
#  if SM_FREE_THREADED
    Py_XDECREF(d);
#  endif
    return own;
#endif
}

/* get_or_compute's arguments, as its Python signature (key, loader, *,
 * timeout=None) binds them.  0, or -1 with TypeError. */
static int
sm_get_or_compute_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                       PyObject **bound)
{
    static const char *const names[3] = {"key", "loader", "timeout"};
    bound[0] = bound[1] = NULL;
    bound[2] = Py_None;
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "get_or_compute() takes 2 positional arguments (key, loader) but %zd "
                     "were given", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        bound[i] = args[i];
    }
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        int k = 0;
        while (k < 3 && PyUnicode_CompareWithASCIIString(name, names[k]) != 0) {
            k++;
        }
        if (k == 3) {
            PyErr_Format(PyExc_TypeError,
                         "get_or_compute() got an unexpected keyword argument '%U'", name);
            return -1;
        }
        if (k < 2 && bound[k] != NULL) {
            PyErr_Format(PyExc_TypeError, "get_or_compute() got multiple values for argument '%s'",
                         names[k]);
            return -1;
        }
        bound[k] = args[nargs + j];
    }
    for (int k = 0; k < 2; k++) {
        if (bound[k] == NULL) {
            PyErr_Format(PyExc_TypeError, "get_or_compute() missing required argument '%s'",
                         names[k]);
            return -1;
        }
    }
    return 0;
}

PyObject *
sm_get_or_compute_method(PyObject *map, PyObject *const *args, size_t nargsf,
                         PyObject *kwnames, sm_read_fn read, PyCFunction own_get, int counted)
{
    PyObject *a[3];  /* key, loader, timeout */
    if (sm_get_or_compute_args(args, PyVectorcall_NARGS(nargsf), kwnames, a) < 0) {
        return NULL;
    }
    int own = sm_reads_own_get(map, own_get);
    if (own) {
        PyObject *v;
        int r = read(map, a[0], &v);
        if (r != 0) {
            return r > 0 ? v : NULL;  /* present: the hit costs one read */
        }
    }
    PyObject *fn = sm_singleflight(own ? 0 : 1);
    if (fn == NULL) {
        return NULL;
    }
    PyObject *count = counted ? PyObject_GetAttrString(map, "_count_load") : Py_NewRef(Py_None);
    if (count == NULL) {
        return NULL;
    }
    PyObject *call[5] = {map, a[0], a[1], a[2], count};
    PyObject *r = PyObject_Vectorcall(fn, call, 5, NULL);
    Py_DECREF(count);
    return r;
}

/* ------------------------------------------------------ snapshot, iterator */

PyObject *
sm_buf_to_dict(SMBuf *buf)
{
#if SM_PRIVATE_DICT_API
    PyObject *d = _PyDict_NewPresized(buf->n / 2);
#else
    PyObject *d = PyDict_New();
#endif
    for (Py_ssize_t i = 0; d != NULL && i < buf->n; i += 2) {
        if (PyDict_SetItem(d, buf->items[i], buf->items[i + 1]) < 0) {
            Py_CLEAR(d);
        }
    }
    sm_buf_clear(buf);
    return d;
}

PyObject *
sm_buf_snapshot(SMBuf *buf)
{
    PyObject *d = sm_buf_to_dict(buf);
    if (d == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(SM_FrozenMap_adopt, d);
    Py_DECREF(d);
    return res;
}

PyObject *
sm_map_iter(PyObject *m, int *guard, void **txn_owner, const char *txn_msg, SMStats *stats,
            sm_fill_fn fill, int kind)
{
    if (SM_UNLIKELY(SM_LOAD_INT(guard)) && SM_LOAD_PTR(txn_owner) == sm_me()) {
        sm_raise_recursive(txn_msg);
        return NULL;
    }
    return sm_iter_new(m, stats, fill, kind);
}

/* ------------------------------------------------------------ transaction */

static int
txn_check(SMTxnStorage *t)
{
    if (!t->open || t->map == NULL || SM_LOAD_PTR(t->owner) != sm_me()) {
        PyErr_SetString(PyExc_RuntimeError, "transaction storage used outside its transaction");
        return -1;
    }
    return 0;
}

/* The storage checked, then key's hash.  0 or -1. */
static int
txn_hash(SMTxnStorage *t, PyObject *key, Py_hash_t *hash)
{
    if (txn_check(t) < 0) {
        return -1;
    }
    *hash = sm_hash(key);
    return *hash == -1 ? -1 : 0;
}

SMTxnStorage *
sm_txn_new(PyTypeObject *type, PyObject *map, void **owner, const SMTxnOps *ops)
{
    SMTxnStorage *t = PyObject_GC_New(SMTxnStorage, type);
    if (t == NULL) {
        return NULL;
    }
    t->map = Py_NewRef(map);
    t->owner = owner;
    t->ops = ops;
    t->open = 0;
    SM_GRAVE_INIT(&t->grave);
    PyObject_GC_Track(t);
    return t;
}

void
sm_txn_open(SMTxnStorage *t)
{
    t->open = 1;
    SM_STORE_PTR(t->owner, sm_me());
}

PyObject *
sm_txn_begin(PyTypeObject *type, PyObject *map, void **owner, int *guard, const SMTxnOps *ops,
             int (*lock)(PyObject *map))
{
    SMTxnStorage *t = sm_txn_new(type, map, owner, ops);
    if (t == NULL) {
        return NULL;
    }
    if (lock(map) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    sm_txn_open(t);
    SM_STORE_INT(guard, 1);
    return (PyObject *)t;
}

SMTxnStorage *
sm_txn_close(PyTypeObject *type, PyObject *map, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, type)) {
        PyErr_SetString(PyExc_TypeError, "expected a transaction storage");
        return NULL;
    }
    SMTxnStorage *t = (SMTxnStorage *)arg;
    if (txn_check(t) < 0) {
        return NULL;
    }
    if (t->map != map) {
        PyErr_SetString(PyExc_RuntimeError, "transaction storage of another map");
        return NULL;
    }
    t->open = 0;
    SM_STORE_PTR(t->owner, NULL);
    return t;
}

void
sm_txn_release(SMTxnStorage *t)
{
    sm_grave_release(&t->grave);
}

PyObject *
sm_txn_run(PyObject *map, PyObject *const *args, Py_ssize_t nargs,
           PyObject *(*begin)(PyObject *map, PyObject *unused),
           PyObject *(*end)(PyObject *map, PyObject *storage))
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_transact() takes 2 arguments (runner, fn)");
        return NULL;
    }
    PyObject *storage = begin(map, NULL);
    if (storage == NULL) {
        return NULL;
    }
    PyObject *stack[2] = {storage, args[1]};
    PyObject *result = PyObject_Vectorcall(args[0], stack, 2, NULL);
    SMSavedError pending;
    sm_error_save(&pending);
    PyObject *done = end(map, storage);
    Py_DECREF(storage);
    Py_XDECREF(done);
    sm_error_restore(&pending);
    if (done == NULL || result == NULL) {
        Py_XDECREF(result);
        return NULL;
    }
    return result;
}

static PyObject *
txn_subscript(PyObject *op, PyObject *key)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    Py_hash_t hash;
    if (txn_hash(t, key, &hash) < 0) {
        return NULL;
    }
    PyObject *v;
    int r = t->ops->get(t->map, key, hash, &v);
    if (r == 0) {
        sm_key_error(key);
    }
    return r > 0 ? v : NULL;
}

static int
txn_contains(PyObject *op, PyObject *key)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    Py_hash_t hash;
    if (txn_hash(t, key, &hash) < 0) {
        return -1;
    }
    PyObject *v;
    int r = t->ops->get(t->map, key, hash, &v);
    Py_XDECREF(v);
    return r;
}

static Py_ssize_t
txn_length(PyObject *op)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    if (txn_check(t) < 0) {
        return -1;
    }
    return t->ops->length(t->map);
}

/* iter(storage): a list of the keys, copied under the transaction's locks. */
static PyObject *
txn_iter(PyObject *op)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    if (txn_check(t) < 0) {
        return NULL;
    }
    SMBuf buf = {NULL, 0, 0};
    PyObject *keys = NULL;
    if (t->ops->collect(t->map, &buf) == 0) {
        keys = PyList_New(buf.n / 2);
        for (Py_ssize_t i = 0; keys != NULL && i < buf.n; i += 2) {
            PyList_SET_ITEM(keys, i / 2, buf.items[i]);
            buf.items[i] = NULL;
        }
    }
    sm_buf_clear(&buf);
    if (keys == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static int
txn_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    Py_hash_t hash;
    if (txn_hash(t, key, &hash) < 0) {
        return -1;
    }
    int r = t->ops->set(t, key, hash, value);
    if (r == 0) {
        sm_key_error(key);
        return -1;
    }
    return r < 0 ? -1 : 0;
}

static PyObject *
txn_update(PyObject *op, PyObject *other)
{
    if (!PyDict_Check(other)) {
        PyErr_SetString(PyExc_TypeError, "transaction storage update() takes a dict");
        return NULL;
    }
    PyObject *items = PyDict_Items(other);
    if (items == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        if (txn_ass_subscript(op, PyTuple_GET_ITEM(kv, 0), PyTuple_GET_ITEM(kv, 1)) < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
}

static int
txn_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    Py_VISIT(t->map);
    return sm_grave_traverse(&t->grave, visit, arg);
}

static int
txn_clear(PyObject *op)
{
    SMTxnStorage *t = (SMTxnStorage *)op;
    Py_CLEAR(t->map);
    sm_grave_release(&t->grave);
    return 0;
}

static void
txn_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    txn_clear(op);
    PyObject_GC_Del(op);
}

static PyMappingMethods txn_as_mapping = {
    .mp_length = txn_length,
    .mp_subscript = txn_subscript,
    .mp_ass_subscript = txn_ass_subscript,
};

static PySequenceMethods txn_as_sequence = {
    .sq_contains = txn_contains,
};

static PyMethodDef txn_methods[] = {
    {"update", txn_update, METH_O, "Store every item of a dict (commit only)."},
    {NULL, NULL, 0, NULL},
};

/* The storage types differ in name and docstring only (each map's storage
 * keeps the name it has always had: a static type's name is fixed, so one
 * type cannot carry each map's); the slots are these. */
#define SM_TXN_STORAGE_TYPE(t, name, doc) \
    SM_DEFINE_TYPE(t) = { \
        PyVarObject_HEAD_INIT(NULL, 0) \
        .tp_name = "safemap.native._core." name, \
        .tp_doc = doc, \
        .tp_basicsize = sizeof(SMTxnStorage), \
        .tp_dealloc = txn_dealloc, \
        .tp_as_sequence = &txn_as_sequence, \
        .tp_as_mapping = &txn_as_mapping, \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, \
        .tp_traverse = txn_traverse, \
        .tp_clear = txn_clear, \
        .tp_iter = txn_iter, \
        .tp_methods = txn_methods, \
    }

SM_TXN_STORAGE_TYPE(SMTxnStorage_Type, "TransactionStorage",
                    "The shards of a ConcurrentMap, as seen by the thread that holds every "
                    "shard lock during transaction(); unusable anywhere else.");

SM_TXN_STORAGE_TYPE(SMSyncStorage_Type, "SyncMapTransactionStorage",
                    "A SyncMap's contents as seen by the thread running transaction(); "
                    "unusable anywhere else.");

SM_TXN_STORAGE_TYPE(SMCacheStorage_Type, "CacheTransactionStorage",
                    "A Cache's live contents as seen by the thread holding its lock during "
                    "transaction(); unusable anywhere else.");
