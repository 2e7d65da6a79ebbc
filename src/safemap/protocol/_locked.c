/*
 * _locked.c -- locked(lock, fn, *args): fn(*args) with `lock` held, in one C
 * call, for the Python-level critical sections of safemap.
 *
 * Why not `with lock:`.  On CPython 3.14 a `with` statement calls __enter__
 * with an ordinary CALL, which runs pending signal handlers when it returns,
 * before the block's exception handler is in place (python/cpython#148874).
 * A handler that raises there (Ctrl-C's KeyboardInterrupt) leaves the lock
 * held for good, and every later user of it hangs.  Here nothing runs
 * between the steps but C:
 *
 *   - lock.acquire() either takes the lock or raises (a signal handler that
 *     raised while it waited): then nothing is held and nothing else runs;
 *   - once it is taken, fn(*args) runs, and lock.release() is called whatever
 *     fn did -- returned, raised, or was interrupted at its first
 *     instruction;
 *   - a signal handler can next run only when this call has returned, with
 *     the lock released.
 *
 * fn's exception propagates; if release() raises too, its exception does,
 * with fn's as its __context__ (as a `finally` would).  The lock is any
 * object with acquire() and release() (a threading.Lock or RLock); re-entry
 * on the same thread behaves as that lock does under a `with`.
 */
#include "../native/sm_compat.h"

static PyObject *lk_str_acquire = NULL; /* interned, for the life of the process */
static PyObject *lk_str_release = NULL;

static PyObject *
lk_locked(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "locked() takes at least 2 arguments (lock, fn), got %zd",
                     nargs);
        return NULL;
    }
    PyObject *lock = args[0], *fn = args[1];
    PyObject *taken = PyObject_CallMethodNoArgs(lock, lk_str_acquire);
    if (taken == NULL) {
        return NULL; /* interrupted while waiting: not held */
    }
    int ok = PyObject_IsTrue(taken);
    Py_DECREF(taken);
    if (ok <= 0) {
        /* A blocking acquire() without a timeout returns True; anything else
         * is not a lock this call can use (or its __bool__ raised). */
        if (ok == 0) {
            PyErr_SetString(PyExc_RuntimeError, "locked(): lock.acquire() did not take the lock");
        }
        return NULL;
    }
    PyObject *result = PyObject_Vectorcall(fn, args + 2, (size_t)(nargs - 2), NULL);
    SMSavedError saved = {0};
    if (result == NULL) {
        sm_error_save(&saved);
    }
    PyObject *released = PyObject_CallMethodNoArgs(lock, lk_str_release);
    if (released == NULL) {
        Py_CLEAR(result);
    }
    Py_XDECREF(released);
    sm_error_restore(&saved); /* fn's exception, or the context of release()'s */
    return result;
}

static PyMethodDef lk_methods[] = {
    {"locked", (PyCFunction)(void (*)(void))lk_locked, METH_FASTCALL,
     "locked(lock, fn, /, *args)\n--\n\n"
     "fn(*args) with lock held: acquired, called, released, in one C call, so that no "
     "signal handler's exception can leave the lock held."},
    {NULL, NULL, 0, NULL},
};

static int
lk_exec(PyObject *module)
{
    /* FREE_THREADED: this is a free-threaded build (whether or not the GIL was
     * turned back on at run time); known here without importing sysconfig,
     * which `import safemap` must not load (it brings in threading). */
#ifdef Py_GIL_DISABLED
    PyObject *free_threaded = Py_True;
#else
    PyObject *free_threaded = Py_False;
#endif
    if (PyModule_AddObjectRef(module, "FREE_THREADED", free_threaded) < 0) {
        return -1;
    }
    if (lk_str_acquire == NULL) {
        lk_str_acquire = PyUnicode_InternFromString("acquire");
        if (lk_str_acquire == NULL) {
            return -1;
        }
    }
    if (lk_str_release == NULL) {
        lk_str_release = PyUnicode_InternFromString("release");
        if (lk_str_release == NULL) {
            return -1;
        }
    }
    return 0;
}

static PyModuleDef_Slot lk_slots[] = {
    {Py_mod_exec, lk_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef lk_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.protocol._locked",
    .m_doc = "locked(lock, fn, *args): a critical section no signal handler can leave locked.",
    .m_size = 0,
    .m_methods = lk_methods,
    .m_slots = lk_slots,
};

PyMODINIT_FUNC
PyInit__locked(void)
{
    return PyModuleDef_Init(&lk_module);
}
