/*
 * _fastiter.c -- safemap.race._fastiter: the iterator of an iteration span over a
 * race-watched dict (what safemap.race._shadow.iterate returns).
 *
 * Each next() does, in this order (the order matters: every step after the first
 * may run Python code, and a later step uses what an earlier one read):
 *
 *   0. read _shadow.on; when it is false, just pass the next item through (no shape
 *      check, no key read) -- it is re-read on every next(), so the detector can be
 *      turned off or on in the middle of an iteration;
 *   1. the shape observation: does ms.shape[0] hold a record of the current logical
 *      thread at its current clock with kind ITER?  Otherwise call _shape_slow(d, ms,
 *      st, op, ITER, ref).  Skipped when the logical thread, its clock and
 *      _shadow.generation are the ones of this iterator's previous check: the
 *      observation made sure of then is still the latest of this epoch (a record is
 *      only ever replaced by a newer record of the same thread, which would carry a
 *      newer clock, or dropped by _add when it happened-before the accessor, which
 *      needs a release of this thread, i.e. a new clock, or by the MAX_RECORDS cap,
 *      the documented way to lose a record); a new generation resets shadows;
 *   2. fetch the next item from the underlying dict iterator;
 *   3. the key read: does ms.keys[k][1] hold a read record of this thread at its
 *      clock?  Otherwise call _key_slow(d, ms, k, st, op, READ, ref);
 *   4. return the key, the pair or the value (item 0, 1, 2).
 *
 * The span is the steps: it ends at the last next() that ran, on that step's thread
 * and clock.  Dropping the iterator later (after an unlock, on another thread, in the
 * GC) is no access and checks nothing: a shape change made after the last step either
 * happened-after it or is found by the change's own check against the observation
 * that step recorded.  An exception out of a step leaves the span as it was, so the
 * next next() steps the underlying iterator again, which raises again if it is
 * sticky (a dict's "changed size during iteration" is): the span never turns an
 * error into an early StopIteration.  Only exhaustion ends it (done is set and every
 * reference dropped).  The slow paths stay in Python (_shadow.py); this file only
 * holds the fast paths, which read the shadow and never change it.
 *
 * Safety when Python code runs mid-step (a key's __hash__/__eq__ during the
 * ms.keys lookup, the slow paths, a __del__ triggered by a decref): every object a
 * step uses is held by a strong reference taken before that code can run (the
 * logical thread, its clock, ms.keys, the item, the key, the location, the record),
 * so a concurrent reset of the shadow, replacement of a slot or deletion of the key
 * frees nothing we still look at.  Records are tuples (immutable), so borrowed
 * items of a record we hold are stable.  Slots (lists and dicts of the shadow) are
 * read with the strong-reference dict/list getters on free-threaded builds.  A
 * shadow value of an unexpected type is never fatal: the fast path then counts as a
 * miss and the slow path (the reference implementation) handles it.
 *
 * One next() at a time: a re-entrant or concurrent next() (say from a key's __eq__,
 * or from two threads) raises ValueError like a generator does ("already
 * executing").  The flag is an atomic compare-and-swap on free-threaded builds, a
 * plain int under the GIL; every other field is only touched by the thread that
 * holds the flag, or by traverse/clear/dealloc, which run when no thread can be
 * inside next().  tp_clear sets done, so a next() on a cleared span (reachable from
 * a weakref callback or a finalizer of its cycle) raises StopIteration instead of
 * reading the fields it dropped.
 */
#include "../native/sm_compat.h"
#if PY_VERSION_HEX < 0x030C0000
#  include "structmember.h" /* PyMember_GetOne (in Python.h from 3.12) */
#endif

/* The hooks tuple, built once by _shadow.py: what the fast path reads and what it
 * calls when it misses. */
enum {
    HOOK_GLOBALS,    /* _shadow's module dict: "on" and "generation" */
    HOOK_LOCAL,      /* _runtime._local: .state is the current logical thread */
    HOOK_CURRENT,    /* _runtime.current(): the logical thread when .state is unset */
    HOOK_SHAPE_SLOW, /* _shadow._shape_slow */
    HOOK_KEY_SLOW,   /* _shadow._key_slow */
    HOOK_ITER,       /* _shadow.ITER */
    HOOK_READ,       /* _shadow.READ */
    /* The __slots__ members the fast path reads (member descriptors, see fi_attr). */
    HOOK_TID,        /* ThreadState.tid */
    HOOK_VC,         /* ThreadState.vc */
    HOOK_SHAPE,      /* MapShadow.shape */
    HOOK_KEYS,       /* MapShadow.keys */
    HOOK_COUNT
};

/* Attribute and global names, interned at module exec (one interpreter). */
static PyObject *s_on, *s_generation, *s_state, *s_tid, *s_vc, *s_shape, *s_keys, *s_dict;

typedef struct {
    PyObject_HEAD
    PyObject *hooks; /* tuple, see HOOK_* */
    PyObject *d;     /* the watched dict */
    PyObject *ms;    /* its MapShadow */
    PyObject *op;    /* the operation name ("iter", "items", ...) */
    PyObject *it;    /* the underlying iterator (keys for item 0, pairs otherwise) */
    PyObject *ref;   /* [-1, None]: the history event of this span, per thread */
    /* The epoch and generation of the last shape check that succeeded (NULL: none). */
    PyObject *seen_st, *seen_clock, *seen_gen;
    /* _local's attribute dict for the thread state ldict_owner (see fi_state). */
    PyObject *ldict;
    uint64_t ldict_owner;
    int item;    /* 0: keys, 1: pairs, 2: values */
    int done;    /* exhausted (or cleared): next() raises StopIteration */
    int running; /* a next() is executing (see the header) */
} FISpan;

static PyTypeObject FISpan_Type;

/* ------------------------------------------------------------------ helpers */

static int
fi_enter(FISpan *self)
{
#if SM_FREE_THREADED
    int expected = 0;
    return _Py_atomic_compare_exchange_int(&self->running, &expected, 1);
#else
    if (self->running) {
        return 0;
    }
    self->running = 1;
    return 1;
#endif
}

static void
fi_leave(FISpan *self)
{
    SM_STORE_INT(&self->running, 0);
}

/* d[key] for a dict known to be a dict: 1 found (*out strong), 0 absent, -1 error.
 * May run the key's __hash__/__eq__. */
static int
fi_dict_get(PyObject *d, PyObject *key, PyObject **out)
{
    Py_hash_t h = sm_hash(key);
    if (h == -1) {
        *out = NULL;
        return -1;
    }
    return sm_dict_get(d, key, h, out);
}

/* seq[i]: a strong reference or NULL with an exception.  Lists of the shadow are
 * written by other threads (under _shadow._lock): on free-threaded builds the item
 * is read with PyList_GetItemRef; under the GIL nothing runs between the read and
 * the incref. */
static PyObject *
fi_item(PyObject *seq, Py_ssize_t i)
{
    if (PyList_CheckExact(seq)) {
#if PY_VERSION_HEX >= 0x030D0000
        return PyList_GetItemRef(seq, i);
#else
        if (i < PyList_GET_SIZE(seq)) {
            return Py_NewRef(PyList_GET_ITEM(seq, i));
        }
#endif
    }
    return PySequence_GetItem(seq, i);
}

/* A global of _shadow (strong), or NULL with NameError like the Python code. */
static PyObject *
fi_global(FISpan *self, PyObject *name)
{
    PyObject *v;
    int r = fi_dict_get(PyTuple_GET_ITEM(self->hooks, HOOK_GLOBALS), name, &v);
    if (r == 0) {
        PyErr_Format(PyExc_NameError, "name '%U' is not defined", name);
    }
    return r > 0 ? v : NULL;
}

/* The truth of _shadow.on: 1, 0 or -1 (error). */
static int
fi_on(FISpan *self)
{
    PyObject *on = fi_global(self, s_on);
    if (on == NULL) {
        return -1;
    }
    int r = on == Py_True ? 1 : on == Py_False ? 0 : PyObject_IsTrue(on);
    Py_DECREF(on);
    return r;
}

/* a == b, with the identity shortcut (clocks and kinds are mostly the very same
 * objects): 1, 0 or -1. */
static inline int
fi_eq(PyObject *a, PyObject *b)
{
    return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

/* The record of thread tid in slot (one record, None or a dict tid -> record),
 * as the fast paths read it: 1 and a strong *rec if there is a candidate, 0 if
 * none (a miss), -1 on error.  For a single record, whether it belongs to the
 * thread is left to the caller (it compares the state); for a dict, the record
 * under tid is the thread's. */
static int
fi_record(PyObject *slot, PyObject *tid, PyObject **rec)
{
    if (PyTuple_CheckExact(slot)) {
        *rec = Py_NewRef(slot);
        return 1;
    }
    if (PyDict_Check(slot)) {
        /* tid is an int: the lookup runs no Python code.  Dict slots are
         * replaced, never mutated in place, and we hold this version. */
        return fi_dict_get(slot, tid, rec);
    }
    *rec = NULL;
    return 0; /* None (or anything else): the slow path decides */
}

/* Whether rec is a well-formed record whose clock is clock (and, when kind is not
 * NULL, whose kind is kind): 1, 0 or -1. */
static int
fi_record_is(PyObject *rec, PyObject *clock, PyObject *kind)
{
    if (!PyTuple_CheckExact(rec) || PyTuple_GET_SIZE(rec) < 5) {
        return 0;
    }
    int r = fi_eq(PyTuple_GET_ITEM(rec, 0), clock);
    if (r <= 0 || kind == NULL) {
        return r;
    }
    return fi_eq(PyTuple_GET_ITEM(rec, 4), kind);
}

/* obj.<member>, where hook is a member descriptor (a __slots__ entry) of obj's class:
 * strong, or NULL with AttributeError when unset.  For an instance of exactly that
 * class, getattr finds the descriptor first (a data descriptor wins over everything)
 * and ends in PyMember_GetOne, so calling that directly is the same read minus the
 * type lookup; PyMember_GetOne is also what reads the slot safely against a
 * concurrent store on free-threaded builds.  Any other object: plain getattr. */
static PyObject *
fi_attr(FISpan *self, PyObject *obj, int hook, PyObject *name)
{
    PyObject *descr = PyTuple_GET_ITEM(self->hooks, hook);
    if (Py_IS_TYPE(obj, PyDescr_TYPE(descr))) {
        return PyMember_GetOne((const char *)obj, ((PyMemberDescrObject *)descr)->d_member);
    }
    return PyObject_GetAttr(obj, name);
}

/* Call a slow path: _key_slow(d, ms, key, st, op, kind, ref) when key is not NULL,
 * _shape_slow(d, ms, st, op, kind, ref) otherwise; 0 or -1. */
static int
fi_slow(FISpan *self, PyObject *key, PyObject *st, PyObject *kind)
{
    PyObject *r;
    if (key != NULL) {
        PyObject *args[7] = {self->d, self->ms, key, st, self->op, kind, self->ref};
        r = PyObject_Vectorcall(PyTuple_GET_ITEM(self->hooks, HOOK_KEY_SLOW), args, 7, NULL);
    }
    else {
        PyObject *args[6] = {self->d, self->ms, st, self->op, kind, self->ref};
        r = PyObject_Vectorcall(PyTuple_GET_ITEM(self->hooks, HOOK_SHAPE_SLOW), args, 6, NULL);
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The current logical thread (strong): _local.state, or current() when unset.
 *
 * Reading _local.state through threading.local's getattr costs more than the rest of
 * a step, so the span keeps the calling thread's attribute dict of _local (what
 * _local.__dict__ returns) and reads "state" from it.  That dict is created once per
 * (thread state, local) and lives as long as the thread state: assignments to and
 * deletions of _local.state go into it, so a lookup in it is exactly the getattr
 * (threading.local's type defines no "state").  It is re-fetched whenever next() runs
 * on another thread state, recognised by its id (PyThreadState_GetID: unique for
 * the interpreter's lifetime, never reused, unlike the thread state's address). */
static PyObject *
fi_state(FISpan *self)
{
    uint64_t me = PyThreadState_GetID(PyThreadState_Get());
    if (self->ldict == NULL || self->ldict_owner != me) {
        PyObject *ld = PyObject_GetAttr(PyTuple_GET_ITEM(self->hooks, HOOK_LOCAL), s_dict);
        if (ld == NULL) {
            return NULL;
        }
        if (!PyDict_Check(ld)) {
            Py_DECREF(ld);
            PyErr_SetString(PyExc_TypeError, "_runtime._local.__dict__ is not a dict");
            return NULL;
        }
        Py_XSETREF(self->ldict, ld);
        self->ldict_owner = me;
    }
    PyObject *st;
    int r = fi_dict_get(self->ldict, s_state, &st);
    if (r != 0) {
        return st; /* found (strong), or NULL on error */
    }
    return PyObject_CallNoArgs(PyTuple_GET_ITEM(self->hooks, HOOK_CURRENT));
}

/* The next item of the underlying iterator: strong, or NULL at its end (no
 * exception) or on error (exception set).  Like next(it, _END). */
static PyObject *
fi_fetch(FISpan *self)
{
    PyObject *x = (*Py_TYPE(self->it)->tp_iternext)(self->it);
    if (x == NULL && PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear();
    }
    return x;
}

/* What next() returns for item x (steals x): x, or its value for item 2. */
static PyObject *
fi_result(FISpan *self, PyObject *x)
{
    if (self->item != 2) {
        return x;
    }
    PyObject *v = fi_item(x, 1);
    Py_DECREF(x);
    return v;
}

/* ------------------------------------------------------------------ the step */

/* The shape check of step 1 for thread cur (tid, clock); 0 or -1. */
static int
fi_check_shape(FISpan *self, PyObject *cur, PyObject *tid, PyObject *clock)
{
    PyObject *iter_kind = PyTuple_GET_ITEM(self->hooks, HOOK_ITER);
    PyObject *shape = fi_attr(self, self->ms, HOOK_SHAPE, s_shape);
    if (shape == NULL) {
        return -1;
    }
    PyObject *o = fi_item(shape, 0);
    Py_DECREF(shape);
    if (o == NULL) {
        return -1;
    }
    PyObject *rec;
    int hit = fi_record(o, tid, &rec);
    int single = PyTuple_CheckExact(o);
    Py_DECREF(o);
    if (hit > 0) {
        /* A single record must be this thread's (a dict entry under tid is). */
        hit = single && PyTuple_GET_SIZE(rec) >= 5 && PyTuple_GET_ITEM(rec, 1) != cur
                  ? 0
                  : fi_record_is(rec, clock, iter_kind);
        Py_DECREF(rec);
    }
    if (hit < 0) {
        return -1;
    }
    if (hit == 0) {
        return fi_slow(self, NULL, cur, iter_kind);
    }
    return 0;
}

/* The key read of step 3 for key k by thread cur (tid, clock); 0 or -1. */
static int
fi_check_key(FISpan *self, PyObject *k, PyObject *cur, PyObject *tid, PyObject *clock)
{
    PyObject *keys = fi_attr(self, self->ms, HOOK_KEYS, s_keys);
    if (keys == NULL) {
        return -1;
    }
    PyObject *loc = NULL;
    int hit = 0;
    if (PyDict_Check(keys)) {
        /* May run k's __hash__/__eq__: keys, k, cur and clock are all held. */
        hit = fi_dict_get(keys, k, &loc);
    }
    Py_DECREF(keys);
    if (hit > 0) {
        PyObject *r = fi_item(loc, 1);
        Py_DECREF(loc);
        if (r == NULL) {
            return -1;
        }
        PyObject *rec;
        hit = fi_record(r, tid, &rec);
        int single = PyTuple_CheckExact(r);
        Py_DECREF(r);
        if (hit > 0) {
            hit = single && PyTuple_GET_SIZE(rec) >= 5 && PyTuple_GET_ITEM(rec, 1) != cur
                      ? 0
                      : fi_record_is(rec, clock, NULL);
            Py_DECREF(rec);
        }
    }
    if (hit < 0) {
        return -1;
    }
    if (hit == 0) {
        return fi_slow(self, k, cur, PyTuple_GET_ITEM(self->hooks, HOOK_READ));
    }
    return 0;
}

/* One next() with the detector on (steps 1-4).  NULL: the end (no exception) or an
 * error. */
static PyObject *
fi_step_on(FISpan *self)
{
    PyObject *cur = NULL, *tid = NULL, *vc = NULL, *clock = NULL, *gen = NULL;
    PyObject *x = NULL, *k = NULL, *res = NULL;
    int same = 0;

    cur = fi_state(self);
    if (cur == NULL) {
        return NULL;
    }
    if ((tid = fi_attr(self, cur, HOOK_TID, s_tid)) == NULL ||
        (vc = fi_attr(self, cur, HOOK_VC, s_vc)) == NULL ||
        (clock = PyObject_GetItem(vc, tid)) == NULL ||
        (gen = fi_global(self, s_generation)) == NULL) {
        goto done;
    }

    /* Step 1, skipped for the epoch and generation already made sure of. */
    if (self->seen_st == cur) {
        same = fi_eq(self->seen_clock, clock);
        if (same > 0) {
            same = fi_eq(self->seen_gen, gen);
        }
        if (same < 0) {
            goto done;
        }
    }
    if (!same) {
        if (fi_check_shape(self, cur, tid, clock) < 0) {
            goto done;
        }
        Py_XSETREF(self->seen_st, Py_NewRef(cur));
        Py_XSETREF(self->seen_clock, Py_NewRef(clock));
        Py_XSETREF(self->seen_gen, Py_NewRef(gen));
    }

    /* Step 2. */
    x = fi_fetch(self);
    if (x == NULL) {
        goto done;
    }
    /* Step 3: the key (strong: x, which we hold, keeps it alive anyway). */
    if (self->item == 0) {
        k = Py_NewRef(x);
    }
    else if ((k = fi_item(x, 0)) == NULL) {
        goto done;
    }
    if (fi_check_key(self, k, cur, tid, clock) < 0) {
        goto done;
    }
    /* Step 4. */
    res = fi_result(self, x);
    x = NULL;
done:
    Py_XDECREF(k);
    Py_XDECREF(x);
    Py_XDECREF(gen);
    Py_XDECREF(clock);
    Py_XDECREF(vc);
    Py_XDECREF(tid);
    Py_DECREF(cur);
    return res;
}

/* ------------------------------------------------------------------ the end */

/* Drop what the span holds (it is over).  Decrefs may run __del__: the fields are
 * cleared first (Py_CLEAR), so re-entry finds them gone. */
static void
fi_release(FISpan *self)
{
    Py_CLEAR(self->it);
    Py_CLEAR(self->d);
    Py_CLEAR(self->ms);
    Py_CLEAR(self->op);
    Py_CLEAR(self->ref);
    Py_CLEAR(self->seen_st);
    Py_CLEAR(self->seen_clock);
    Py_CLEAR(self->seen_gen);
    Py_CLEAR(self->ldict);
    Py_CLEAR(self->hooks);
}

static PyObject *
fi_next(PyObject *op)
{
    FISpan *self = (FISpan *)op;
    if (!fi_enter(self)) {
        PyErr_SetString(PyExc_ValueError, "iteration span already executing");
        return NULL;
    }
    PyObject *res = NULL;
    if (!self->done) {
        int on = fi_on(self);
        if (on > 0) {
            res = fi_step_on(self);
        }
        else if (on == 0) {
            PyObject *x = fi_fetch(self);
            res = x == NULL ? NULL : fi_result(self, x);
        }
        if (res == NULL && !PyErr_Occurred()) {
            /* Exhausted.  An error leaves the span as it was (see the header). */
            self->done = 1;
            fi_release(self);
        }
    }
    fi_leave(self);
    return res;
}

/* ------------------------------------------------------------------ the type */

static int
fi_traverse(PyObject *op, visitproc visit, void *arg)
{
    FISpan *self = (FISpan *)op;
    Py_VISIT(self->hooks);
    Py_VISIT(self->d);
    Py_VISIT(self->ms);
    Py_VISIT(self->op);
    Py_VISIT(self->it);
    Py_VISIT(self->ref);
    Py_VISIT(self->seen_st);
    Py_VISIT(self->seen_clock);
    Py_VISIT(self->seen_gen);
    Py_VISIT(self->ldict);
    return 0;
}

static int
fi_clear(PyObject *op)
{
    FISpan *self = (FISpan *)op;
    self->done = 1; /* before the decrefs, which may run code that steps us */
    fi_release(self);
    return 0;
}

static void
fi_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, fi_dealloc)
    FISpan *self = (FISpan *)op;
    self->done = 1;
    fi_release(self);
    PyObject_GC_Del(op);
    Py_TRASHCAN_END
}

static PyTypeObject FISpan_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.race._fastiter.Span",
    .tp_doc = "The iterator of an iteration span over a race-watched dict "
              "(made by safemap.race._shadow.iterate).",
    .tp_basicsize = sizeof(FISpan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = fi_next,
    .tp_traverse = fi_traverse,
    .tp_clear = fi_clear,
    .tp_dealloc = fi_dealloc,
};

/* Every type of the module: readied and added by fi_exec, in this order. */
static PyTypeObject *const fi_types[] = {&FISpan_Type};

/* span(hooks, d, ms, op, it, item, /) */
static PyObject *
fi_span(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "span() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *hooks = args[0], *it = args[4];
    if (!PyTuple_CheckExact(hooks) || PyTuple_GET_SIZE(hooks) != HOOK_COUNT ||
        !PyDict_Check(PyTuple_GET_ITEM(hooks, HOOK_GLOBALS))) {
        PyErr_SetString(PyExc_TypeError, "span(): hooks must be _shadow's hooks tuple");
        return NULL;
    }
    for (int h = HOOK_TID; h <= HOOK_KEYS; h++) {
        if (!Py_IS_TYPE(PyTuple_GET_ITEM(hooks, h), &PyMemberDescr_Type)) {
            PyErr_SetString(PyExc_TypeError, "span(): hooks must end with member descriptors");
            return NULL;
        }
    }
    if (!PyIter_Check(it)) {
        PyErr_SetString(PyExc_TypeError, "span(): it must be an iterator");
        return NULL;
    }
    long item = PyLong_AsLong(args[5]);
    if (item == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (item < 0 || item > 2) {
        PyErr_SetString(PyExc_ValueError, "span(): item must be 0, 1 or 2");
        return NULL;
    }
    PyObject *ref = Py_BuildValue("[iO]", -1, Py_None);
    if (ref == NULL) {
        return NULL;
    }
    FISpan *self = PyObject_GC_New(FISpan, &FISpan_Type);
    if (self == NULL) {
        Py_DECREF(ref);
        return NULL;
    }
    self->hooks = Py_NewRef(hooks);
    self->d = Py_NewRef(args[1]);
    self->ms = Py_NewRef(args[2]);
    self->op = Py_NewRef(args[3]);
    self->it = Py_NewRef(it);
    self->ref = ref;
    self->seen_st = self->seen_clock = self->seen_gen = self->ldict = NULL;
    self->ldict_owner = 0;
    self->item = (int)item;
    self->done = 0;
    self->running = 0;
    PyObject_GC_Track((PyObject *)self);
    return (PyObject *)self;
}

/* ------------------------------------------------------------------ module */

static int
fi_exec(PyObject *module)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_on, "on"},   {&s_generation, "generation"}, {&s_state, "state"},
        {&s_tid, "tid"}, {&s_vc, "vc"},                 {&s_shape, "shape"},
        {&s_keys, "keys"}, {&s_dict, "__dict__"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL &&
            (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof(fi_types) / sizeof(fi_types[0]); i++) {
        PyTypeObject *type = fi_types[i];
        if (PyType_Ready(type) < 0) {
            return -1;
        }
        /* The attribute is the last component of tp_name ("...._fastiter.Span"). */
        const char *name = strrchr(type->tp_name, '.');
        name = name == NULL ? type->tp_name : name + 1;
        if (PyModule_AddObjectRef(module, name, (PyObject *)type) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyMethodDef fi_methods[] = {
    {"span", (PyCFunction)(void (*)(void))fi_span, METH_FASTCALL,
     "span(hooks, d, ms, op, it, item, /)\n--\n\n"
     "The iterator of an iteration span over d (see safemap.race._shadow.iterate)."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot fi_slots[] = {
    {Py_mod_exec, (void *)fi_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef fi_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.race._fastiter",
    .m_doc = "The iterator of the race detector's iteration spans (fast paths in C, "
             "slow paths in safemap.race._shadow).",
    .m_size = 0,
    .m_methods = fi_methods,
    .m_slots = fi_slots,
};

PyMODINIT_FUNC
PyInit__fastiter(void)
{
    return PyModuleDef_Init(&fi_module);
}
