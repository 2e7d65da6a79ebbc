/*
 * sm_module.c -- safemap.native._core: module init.
 *
 * Multi-phase init with the Py_mod_gil slot (Py_MOD_GIL_NOT_USED): importing
 * the module on a free-threaded build does not re-enable the GIL, because
 * every type here is written for free threading (see sm_compat.h).  The types
 * are static and the protocol objects are process globals, so the module
 * declares that it supports a single interpreter.
 */
#include "sm_common.h"
#include "sm_cmap.h"
#include "sm_smap.h"
#include "sm_cache.h"
#include "sm_cached.h"

static int
sm_import_protocol(void)
{
    int rc = -1;
    PyObject *proto = PyImport_ImportModule("safemap.protocol");
    PyObject *frozen = NULL, *abc = NULL;
    if (proto == NULL) {
        return -1;
    }
    SM_RecursiveUpdateError = PyObject_GetAttrString(proto, "RecursiveUpdateError");
    SM_MISSING = PyObject_GetAttrString(proto, "MISSING");
    SM_DELETE = PyObject_GetAttrString(proto, "DELETE");
    frozen = PyObject_GetAttrString(proto, "FrozenMap");
    abc = PyObject_GetAttrString(proto, "ConcurrentMapping");
    if (!SM_RecursiveUpdateError || !SM_MISSING || !SM_DELETE || !frozen || !abc) {
        goto done;
    }
    SM_FrozenMap_adopt = PyObject_GetAttrString(frozen, "_adopt");
    SM_abc_update = PyObject_GetAttrString(abc, "update");
    if (!SM_FrozenMap_adopt || !SM_abc_update) {
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(proto);
    Py_XDECREF(frozen);
    Py_XDECREF(abc);
    return rc;
}

/* Default shard count: enough shards that writers on every CPU rarely meet,
 * a power of two between 8 and 128 (4 per CPU). */
static int
sm_init_default_shards(void)
{
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL) {
        return -1;
    }
    PyObject *fn = PyObject_HasAttrString(os, "process_cpu_count")
                       ? PyObject_GetAttrString(os, "process_cpu_count")
                       : PyObject_GetAttrString(os, "cpu_count");
    Py_DECREF(os);
    if (fn == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallNoArgs(fn);
    Py_DECREF(fn);
    if (r == NULL) {
        return -1;
    }
    Py_ssize_t ncpu = r == Py_None ? 1 : PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (ncpu == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        ncpu = 1;
    }
    Py_ssize_t n = 8;
    while (n < 4 * ncpu && n < 128) {
        n *= 2;
    }
    SM_default_shards = n;
#if SM_FREE_THREADED
    /* Statistics stripes: 2 per CPU, so that threads rarely share one. */
    Py_ssize_t stripes = 2;
    while (stripes < 2 * ncpu && stripes < 64) {
        stripes *= 2;
    }
    sm_nstripes = stripes;
#endif
    return 0;
}

/* The contention sampler lives in safemap.locks._rwlock (one per process, for
 * every native lock; see sm_contention.h): take its capsule, and expose its
 * setter here as _set_contention_sampling. */
static int
sm_import_contention(PyObject *module)
{
    if (sm_contention == NULL) {
        sm_contention = (SMContention *)PyCapsule_Import(SM_CONTENTION_CAPSULE, 0);
        if (sm_contention == NULL) {
            return -1;
        }
    }
    PyObject *rw = PyImport_ImportModule("safemap.locks._rwlock");
    if (rw == NULL) {
        return -1;
    }
    PyObject *setter = PyObject_GetAttrString(rw, "_set_contention_sampling");
    Py_DECREF(rw);
    if (setter == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "_set_contention_sampling", setter);
    Py_DECREF(setter);
    if (rc < 0) {
        return -1;
    }
    if (SM_str_ConcurrentMap == NULL &&
        (SM_str_ConcurrentMap = PyUnicode_InternFromString("ConcurrentMap")) == NULL) {
        return -1;
    }
    if (SM_str_SyncMap == NULL &&
        (SM_str_SyncMap = PyUnicode_InternFromString("SyncMap")) == NULL) {
        return -1;
    }
    if (SM_str_get == NULL && (SM_str_get = PyUnicode_InternFromString("get")) == NULL) {
        return -1;
    }
    return 0;
}

static int
sm_exec(PyObject *module)
{
    if (sm_import_protocol() < 0 || sm_init_default_shards() < 0 ||
        sm_import_contention(module) < 0) {
        return -1;
    }
    if (SM_sentinel == NULL && (SM_sentinel = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)) == NULL) {
        return -1;
    }
#define SM_TYPE_ADDR_(t) &t,
    PyTypeObject *types[] = {SM_TYPES(SM_TYPE_ADDR_)};
#undef SM_TYPE_ADDR_
    PyObject *all = PyTuple_New(SM_NTYPES);
    if (all == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < SM_NTYPES; i++) {
        if (PyType_Ready(types[i]) < 0) {
            Py_DECREF(all);
            return -1;
        }
        PyTuple_SET_ITEM(all, i, Py_NewRef((PyObject *)types[i]));
    }
    int added = PyModule_AddObjectRef(module, "_types", all);
    Py_DECREF(all);
    if (added < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "ConcurrentMapBase", (PyObject *)&SMCMap_Type) < 0 ||
        PyModule_AddObjectRef(module, "SyncMapBase", (PyObject *)&SMSMap_Type) < 0 ||
        PyModule_AddIntConstant(module, "DEFAULT_SHARDS", (long)SM_default_shards) < 0 ||
        PyModule_AddIntConstant(module, "FREE_THREADED", SM_FREE_THREADED) < 0 ||
        sm_cache_exec(module) < 0 || sm_cached_exec(module) < 0) {
        return -1;
    }
    return 0;
}

static PyMethodDef sm_module_methods[] = {
    {"_after_fork_child", sm_after_fork_child, METH_NOARGS,
     "Release, in a fork child, the map locks held by threads that do not exist there."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot sm_slots[] = {
    {Py_mod_exec, (void *)sm_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef sm_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.native._core",
    .m_doc = "Native core of safemap: ConcurrentMapBase (sharded) and SyncMapBase "
             "(Go sync.Map design). Use the classes of safemap.native.",
    .m_size = 0,
    .m_methods = sm_module_methods,
    .m_slots = sm_slots,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&sm_module);
}
