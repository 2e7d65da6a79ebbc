/*
 * sm_smap.h -- SyncMapBase: Go sync.Map's design (see sm_smap.c).
 */
#ifndef SAFEMAP_SM_SMAP_H
#define SAFEMAP_SM_SMAP_H

#include "sm_common.h"

/* One key's slot: the value pointer that in-place writers swap.  Live (a
 * value) while its key is in `read` or `dirty`; value == SM_EXPUNGED once a
 * delete or clear has cut it out of the map: it is never revived, and an
 * in-place writer that finds it takes the mutex instead. */
typedef struct {
    PyObject_HEAD
    PyObject *value;
} SMEntry;

typedef struct {
    PyObject_HEAD
    SMNode node;
    PyObject *read;        /* dict key -> SMEntry.  The object never changes; its
                              key set changes only under `mu`.  Read lock-free. */
    PyObject *dirty;       /* dict key -> SMEntry for keys not (yet) in read;
                              only touched under `mu` */
    SMLock mu;
    int amended;           /* dirty is non-empty: a read miss must look there */
    int frozen;            /* != 0: a mutex holder needs every value stable;
                              in-place writers take the mutex instead */
    int guard;             /* != 0 during a transaction or clear: reads take
                              the slow path */
    int committing;        /* != 0 while several entries change together */
    int shared;            /* a second thread has used the map (sm_note_thread) */
    void *final;           /* SYFinal of the plain pop in its last dict call, or
                              NULL; only the holder of mu reads or writes it */
    void *txn_owner;
    Py_ssize_t misses;     /* reads that had to take the mutex since the last
                              promotion (under mu) */
    Py_ssize_t count;      /* live entries */
#if !SM_FREE_THREADED
    Py_ssize_t held;       /* 1 while some thread holds mu (GIL builds) */
#endif
    /* counters written under mu, by its holder */
    Py_ssize_t locked_reads;  /* point reads that took mu (they looked in dirty) */
    Py_ssize_t promotions;
    SMLockStats mustats;   /* mu's acquisitions, contentions, wait */
    SMWrites writes;       /* writes made under mu */
    SMStats stats;         /* point reads, iterations, in-place updates */
    PyObject *weakreflist;
} SMSMapObject;

#endif /* SAFEMAP_SM_SMAP_H */
