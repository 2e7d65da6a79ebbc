/*
 * sm_compat.h -- the one place that knows which CPython we are compiled against.
 *
 * Two build flavours matter:
 *
 *   GIL builds (3.11, 3.12, and 3.13+ without Py_GIL_DISABLED): every line of C
 *   below runs holding the GIL, so a field read or written between two calls that
 *   cannot run Python code is atomic with respect to every other thread.  Plain
 *   loads and stores are enough, and cheaper than atomics.
 *
 *   Free-threaded builds (3.13t+, Py_GIL_DISABLED): threads really run in
 *   parallel.  Every field that one thread writes while another may read it goes
 *   through the SM_ATOMIC_* wrappers below (CPython's own _Py_atomic_* helpers,
 *   which are sequentially consistent unless named _relaxed), dict reads use
 *   PyDict_GetItemRef (a strong reference obtained safely against a concurrent
 *   overwrite), and no borrowed reference is kept across a point where another
 *   thread could drop the last reference.
 *
 * The dict helpers return strong references in both flavours so that callers are
 * written once.  On GIL builds older than 3.13 they use the exported
 * "known hash" entry points (the hash is computed once per operation and reused
 * for shard selection and for the dict), on 3.13+ the public API.
 */
#ifndef SAFEMAP_SM_COMPAT_H
#define SAFEMAP_SM_COMPAT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#  define SM_LIKELY(x) __builtin_expect(!!(x), 1)
#  define SM_UNLIKELY(x) __builtin_expect(!!(x), 0)
#  define SM_UNUSED __attribute__((unused))
#  define SM_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#  define SM_LIKELY(x) (x)
#  define SM_UNLIKELY(x) (x)
#  define SM_UNUSED
#  define SM_ALWAYS_INLINE static inline
#endif

#if PY_VERSION_HEX < 0x030B0000
#  error "safemap's native core needs CPython 3.11 or newer"
#endif

#ifdef Py_GIL_DISABLED
#  define SM_FREE_THREADED 1
#else
#  define SM_FREE_THREADED 0
#endif

/* Private-but-exported dict entry points exist (and are what dict itself uses)
 * up to 3.12; 3.13 made the public *Ref API the way to go. */
#if PY_VERSION_HEX < 0x030D0000 && !SM_FREE_THREADED
#  define SM_PRIVATE_DICT_API 1
#else
#  define SM_PRIVATE_DICT_API 0
#endif

/* Critical sections exist (as no-ops on GIL builds) from 3.13. */
#if PY_VERSION_HEX < 0x030D0000
#  define Py_BEGIN_CRITICAL_SECTION(op) {
#  define Py_END_CRITICAL_SECTION() }
#endif

/* ------------------------------------------------------------------ atomics */

#if SM_FREE_THREADED
#  define SM_LOAD_PTR(p) _Py_atomic_load_ptr((void *)(p))
#  define SM_STORE_PTR(p, v) _Py_atomic_store_ptr((void *)(p), (void *)(v))
#  define SM_LOAD_PTR_RELAXED(p) _Py_atomic_load_ptr_relaxed((void *)(p))
#  define SM_STORE_PTR_RELAXED(p, v) _Py_atomic_store_ptr_relaxed((void *)(p), (void *)(v))
#  define SM_CAS_PTR(p, expected_ptr, v) \
       _Py_atomic_compare_exchange_ptr((void *)(p), (void *)(expected_ptr), (void *)(v))
#  define SM_LOAD_INT(p) _Py_atomic_load_int(p)
#  define SM_STORE_INT(p, v) _Py_atomic_store_int((p), (v))
#  define SM_LOAD_SSIZE(p) _Py_atomic_load_ssize(p)
#  define SM_LOAD_SSIZE_RELAXED(p) _Py_atomic_load_ssize_relaxed(p)
#  define SM_STORE_SSIZE_RELAXED(p, v) _Py_atomic_store_ssize_relaxed((p), (v))
#  define SM_ADD_SSIZE(p, v) ((void)_Py_atomic_add_ssize((p), (v)))
#  define SM_LOAD_INT_RELAXED(p) _Py_atomic_load_int_relaxed(p)
#  define SM_LOAD_I64_RELAXED(p) _Py_atomic_load_int64_relaxed(p)
/* A counter written by one thread at a time (a lock's holder) and read by
 * anyone: relaxed load and store, no read-modify-write instruction. */
#  define SM_BUMP(p, v) _Py_atomic_store_ssize_relaxed((p), _Py_atomic_load_ssize_relaxed(p) + (v))
#  define SM_BUMP_I64(p, v) _Py_atomic_store_int64_relaxed((p), _Py_atomic_load_int64_relaxed(p) + (v))
#else
#  define SM_LOAD_PTR(p) (*(p))
#  define SM_STORE_PTR(p, v) (*(p) = (v))
#  define SM_LOAD_PTR_RELAXED(p) (*(p))
#  define SM_STORE_PTR_RELAXED(p, v) (*(p) = (v))
#  define SM_LOAD_INT(p) (*(p))
#  define SM_STORE_INT(p, v) (*(p) = (v))
#  define SM_LOAD_SSIZE(p) (*(p))
#  define SM_LOAD_SSIZE_RELAXED(p) (*(p))
#  define SM_STORE_SSIZE_RELAXED(p, v) (*(p) = (v))
#  define SM_ADD_SSIZE(p, v) ((void)(*(p) += (v)))
#  define SM_LOAD_INT_RELAXED(p) (*(p))
#  define SM_LOAD_I64_RELAXED(p) (*(p))
#  define SM_BUMP(p, v) ((void)(*(p) += (v)))
#  define SM_BUMP_I64(p, v) ((void)(*(p) += (v)))
#endif

/* The monotonic clock, in nanoseconds.  Needs no GIL / attached thread state
 * on 3.13+; on 3.11-3.12 it is called holding the GIL. */
static inline int64_t
sm_now_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t = 0;
    (void)PyTime_MonotonicRaw(&t);
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetMonotonicClock();
#endif
}

/* Thread-local storage: used on free-threaded builds only, where a per-thread
 * "locks held" counter avoids writing a shared cache line on every operation. */
#if defined(_MSC_VER)
#  define SM_THREAD_LOCAL __declspec(thread)
#else
#  define SM_THREAD_LOCAL _Thread_local
#endif

/* A thread-local read on every call: initial-exec TLS where the toolchain has it
 * (one load, no __tls_get_addr call). */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__ELF__)
#  define SM_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#  define SM_TLS_FAST
#endif

/* The identity of the running thread: its thread state.  A thread state is
 * unique among live threads, and a thread never dies holding one of our locks
 * (every path releases what it took), so reuse after death is harmless. */
static inline void *
sm_me(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return (void *)PyThreadState_GetUnchecked();
#else
    return (void *)_PyThreadState_UncheckedGet();
#endif
}

/* ------------------------------------------------------------------- hashing */

/* The hash of key, computed once per operation.  str caches its own hash; we
 * read the cache directly on GIL builds (what dict does) to skip a call. */
static inline Py_hash_t
sm_hash(PyObject *key)
{
#if !SM_FREE_THREADED && PY_VERSION_HEX < 0x030E0000
    if (PyUnicode_CheckExact(key)) {
        Py_hash_t h = ((PyASCIIObject *)key)->hash;
        if (h != -1) {
            return h;
        }
    }
#endif
    /* A small int hashes to itself (-1 is reserved for errors: it hashes to
     * -2), exactly as long_hash computes it; skip the call. */
#if PY_VERSION_HEX < 0x030C0000
    if (PyLong_CheckExact(key)) {
        Py_ssize_t size = Py_SIZE(key);
        if (size >= -1 && size <= 1) {
            Py_hash_t h = size * (Py_hash_t)((PyLongObject *)key)->ob_digit[0];
            return h == -1 ? -2 : h;
        }
    }
#else
    if (PyLong_CheckExact(key) && PyUnstable_Long_IsCompact((PyLongObject *)key)) {
        Py_hash_t h = (Py_hash_t)PyUnstable_Long_CompactValue((PyLongObject *)key);
        return h == -1 ? -2 : h;
    }
#endif
    return PyObject_Hash(key);
}

/* ---------------------------------------------------------------- dict access */

/* Look up key.  1: found, *out is a strong reference; 0: absent; -1: error
 * (an exception from __eq__ or __hash__).  May run Python code (key __eq__). */
static inline int
sm_dict_get(PyObject *d, PyObject *key, Py_hash_t hash, PyObject **out)
{
#if SM_PRIVATE_DICT_API
    PyObject *v = _PyDict_GetItem_KnownHash(d, key, hash);
    if (v != NULL) {
        *out = Py_NewRef(v);
        return 1;
    }
    *out = NULL;
    return PyErr_Occurred() ? -1 : 0;
#else
    (void)hash;
    return PyDict_GetItemRef(d, key, out);
#endif
}

/* Insert or overwrite; 0 or -1.  The dict drops its reference to a replaced
 * value inside this call: callers that must not run a value's __del__ here
 * hold their own reference to the old value first. */
static inline int
sm_dict_set(PyObject *d, PyObject *key, PyObject *value, Py_hash_t hash)
{
#if SM_PRIVATE_DICT_API
    return _PyDict_SetItem_KnownHash(d, key, value, hash);
#else
    (void)hash;
    return PyDict_SetItem(d, key, value);
#endif
}

/* Remove a key known to be present; 0 or -1. */
static inline int
sm_dict_del(PyObject *d, PyObject *key, Py_hash_t hash)
{
#if SM_PRIVATE_DICT_API
    return _PyDict_DelItem_KnownHash(d, key, hash);
#else
    (void)hash;
    return PyDict_DelItem(d, key);
#endif
}

/* Insert key -> value unless key is present.  *cur: a strong reference to the
 * value now stored (value itself when inserted).  1: was present; 0: inserted;
 * -1: error (*cur NULL).  Used by the pure maps' lock (locks/_rwlock.c). */
static inline int
sm_dict_setdefault(PyObject *d, PyObject *key, PyObject *value, PyObject **cur)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_SetDefaultRef(d, key, value, cur);
#else
    Py_ssize_t before = PyDict_GET_SIZE(d);
    PyObject *r = PyDict_SetDefault(d, key, value); /* borrowed */
    if (r == NULL) {
        *cur = NULL;
        return -1;
    }
    *cur = Py_NewRef(r);
    return PyDict_GET_SIZE(d) == before ? 1 : 0;
#endif
}

/* The pending exception, set aside while cleanup code runs that must not see
 * it (the C API forbids most calls with an exception set), then put back.  If
 * the cleanup itself raised, its exception is the one that propagates, with
 * the one set aside as its __context__ (what a Python `finally:` does). */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} SMSavedError;

static inline void
sm_error_save(SMSavedError *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    s->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&s->type, &s->value, &s->tb);
#endif
}

static inline void
sm_error_restore(SMSavedError *s)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (s->exc == NULL) {
        return;
    }
    if (PyErr_Occurred()) {
        PyObject *cleanup = PyErr_GetRaisedException();
        PyException_SetContext(cleanup, s->exc); /* steals */
        PyErr_SetRaisedException(cleanup);
        return;
    }
    PyErr_SetRaisedException(s->exc);
#else
    if (s->type == NULL) {
        return;
    }
    if (PyErr_Occurred()) {
        PyObject *t, *v, *tb;
        PyErr_Fetch(&t, &v, &tb);
        PyErr_NormalizeException(&t, &v, &tb);
        PyErr_NormalizeException(&s->type, &s->value, &s->tb);
        if (s->tb != NULL) {
            (void)PyException_SetTraceback(s->value, s->tb);
        }
        PyException_SetContext(v, s->value); /* steals */
        Py_DECREF(s->type);
        Py_XDECREF(s->tb);
        PyErr_Restore(t, v, tb);
        return;
    }
    PyErr_Restore(s->type, s->value, s->tb);
#endif
}

/* A private object no user can hold (created by the module's exec slot). */
extern PyObject *SM_sentinel;

#endif /* SAFEMAP_SM_COMPAT_H */
