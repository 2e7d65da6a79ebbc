/*
 * _flight.c -- the end of a single-flight load (safemap/protocol/singleflight.py), in C.
 *
 * Landing a flight is several steps: the flight leaves its table, its outcome
 * is published (the `outcome` attribute, then the marker appended), and every
 * waiter that registered before the marker is woken.  Done by Python code, an
 * exception raised by a signal handler (Ctrl-C) could stop it between two
 * steps: a flight left in the table, or a marker without the wake-ups, leaves
 * its waiters waiting for ever.  Here the steps are one C call: Python code
 * runs only in a key's __hash__/__eq__ (the table lookup) and in the wake-ups
 * themselves.  An exception from one of those does not stop the landing: the
 * first is kept and raised once every step is done, later ones are reported
 * to sys.unraisablehook.
 */
#include "../native/sm_compat.h"

/* The outcome markers (singleflight.py's _DONE and _FAILED), set once by
 * set_markers() when singleflight is imported; strong references kept for
 * the life of the process. */
static PyObject *fl_done = NULL;
static PyObject *fl_failed = NULL;
static PyObject *fl_str_outcome = NULL;  /* "outcome", interned once (fl_exec) */

/* Attempts at the table step when a key's __hash__/__eq__ raises (an interrupt
 * in one is transient); a key that always raises leaves the landed flight in
 * the table, where later callers find it landed and take its outcome. */
#define FL_TABLE_ATTEMPTS 3

/* Keep the first exception in *first; report any later one as unraisable. */
static void
fl_keep(SMSavedError *first, int *have)
{
    if (!*have) {
        sm_error_save(first);
        *have = 1;
    }
    else {
        PyErr_WriteUnraisable(NULL);
    }
}

/* The flight's entry i (strong), or NULL past its end, without raising: every
 * landing reads one past the last entry, and an IndexError made and cleared
 * there (with the attribute name made from a C string) cost a @cached miss
 * about a fifth of its instructions. */
static PyObject *
fl_item(PyObject *list, Py_ssize_t i)
{
    if (i >= PyList_GET_SIZE(list)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *item = PyList_GetItemRef(list, i);
#else
    PyObject *item = Py_XNewRef(PyList_GetItem(list, i));
#endif
    if (item == NULL) {
        PyErr_Clear();  /* shrunk since its size was read: past the end too */
    }
    return item;
}

/* Call every entry of the flight before its first marker. */
static void
fl_wake(PyObject *flight, SMSavedError *first, int *have)
{
    for (Py_ssize_t i = 0;; i++) {
        PyObject *wake = fl_item(flight, i);
        if (wake == NULL || wake == fl_done || wake == fl_failed) {
            Py_XDECREF(wake);
            return;
        }
        PyObject *r = PyObject_CallNoArgs(wake);
        Py_DECREF(wake);
        if (r == NULL) {
            fl_keep(first, have);
        }
        Py_XDECREF(r);
    }
}

static int
fl_check_markers(void)
{
    if (fl_done == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "safemap.protocol._flight: set_markers() not called");
        return -1;
    }
    return 0;
}

/* land(table, key, flight, outcome, ok): end `flight`, the load of `key` (its
 * owner only).  If the flight is key's entry of `table`, it leaves the table;
 * then, if it has no marker yet, `outcome` is stored on it, the marker (done
 * if ok, else failed) appended and the waiters registered before it woken.
 * Landing a flight twice publishes nothing more, and landing one that never
 * entered the table touches only that flight, which nobody waits for: so an
 * owner interrupted anywhere can always call it. */
static PyObject *
fl_land(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "land() takes 5 arguments");
        return NULL;
    }
    if (fl_check_markers() < 0) {
        return NULL;
    }
    PyObject *table = args[0], *key = args[1], *flight = args[2], *outcome = args[3];
    if (!PyDict_Check(table) || !PyList_Check(flight)) {
        PyErr_SetString(PyExc_TypeError, "land() needs a dict and a flight (a list)");
        return NULL;
    }
    int ok = PyObject_IsTrue(args[4]);
    if (ok < 0) {
        return NULL;
    }
    SMSavedError first;
    int have = 0;
    for (int attempt = 0; attempt < FL_TABLE_ATTEMPTS; attempt++) {
        PyObject *cur = NULL;
#if PY_VERSION_HEX >= 0x030D0000
        int r = PyDict_GetItemRef(table, key, &cur);
#else
        cur = Py_XNewRef(PyDict_GetItemWithError(table, key));
        int r = cur != NULL ? 1 : (PyErr_Occurred() ? -1 : 0);
#endif
        if (r < 0) {
            fl_keep(&first, &have);
            continue;
        }
        Py_XDECREF(cur);
        if (cur != flight) {
            break;  /* gone (landed before) or never registered */
        }
        if (PyDict_DelItem(table, key) < 0) {
            fl_keep(&first, &have);
            continue;
        }
        break;
    }
    /* Published once: a flight with a marker has landed already. */
    int landed = 0;
    for (Py_ssize_t i = 0;; i++) {
        PyObject *entry = fl_item(flight, i);
        if (entry == NULL) {
            break;
        }
        Py_DECREF(entry);
        if (entry == fl_done || entry == fl_failed) {
            landed = 1;
            break;
        }
    }
    if (!landed) {
        if (PyObject_SetAttr(flight, fl_str_outcome, outcome) < 0 ||
            PyList_Append(flight, ok ? fl_done : fl_failed) < 0) {
            fl_keep(&first, &have);
        }
        else {
            fl_wake(flight, &first, &have);
        }
    }
    if (have) {
        sm_error_restore(&first);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* set_markers(done, failed): the outcome markers, once. */
static PyObject *
fl_set_markers(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_markers() takes 2 arguments");
        return NULL;
    }
    if (fl_done != NULL) {
        if (fl_done == args[0] && fl_failed == args[1]) {
            Py_RETURN_NONE;
        }
        PyErr_SetString(PyExc_RuntimeError, "set_markers(): the markers are set already");
        return NULL;
    }
    fl_failed = Py_NewRef(args[1]);
    fl_done = Py_NewRef(args[0]);
    Py_RETURN_NONE;
}

static PyMethodDef fl_methods[] = {
    {"land", (PyCFunction)(void (*)(void))fl_land, METH_FASTCALL,
     "land(table, key, flight, outcome, ok): end a load: out of the table, outcome "
     "published, waiters woken; all steps done even if one raises."},
    {"set_markers", (PyCFunction)(void (*)(void))fl_set_markers, METH_FASTCALL,
     "set_markers(done, failed): the outcome markers (once)."},
    {NULL, NULL, 0, NULL},
};

static int
fl_exec(PyObject *module)
{
    (void)module;
    if (fl_str_outcome == NULL) {
        fl_str_outcome = PyUnicode_InternFromString("outcome");
    }
    return fl_str_outcome != NULL ? 0 : -1;
}

static PyModuleDef_Slot fl_slots[] = {
    {Py_mod_exec, fl_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fl_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.protocol._flight",
    .m_doc = "The end of a single-flight load, in one C call (see singleflight.py).",
    .m_size = 0,
    .m_methods = fl_methods,
    .m_slots = fl_slots,
};

PyMODINIT_FUNC
PyInit__flight(void)
{
    return PyModuleDef_Init(&fl_module);
}
