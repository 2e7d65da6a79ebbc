/*
 * sm_smap.h -- SyncMapBase: Go sync.Map's design (see sm_smap.c).
 */
#ifndef SAFEMAP_SM_SMAP_H
#define SAFEMAP_SM_SMAP_H

#include "sm_common.h"
#include "sm_table.h"

typedef struct {
    PyObject_HEAD
    SMNode node;
    SMTableRef read;       /* promoted keys: read lock-free; keys and table
                              change only under `mu` (and `wmu`), values also
                              in place under `wmu` alone */
    SMTableRef dirty;      /* keys stored since the last promotion, none of
                              them in read; only touched under `mu` */
#if SM_TB_LOCKFREE
    int wmu;               /* spin lock (sy_wlock); serializes every change to
                              read's values, keys or table: in-place writers
                              hold it alone, the holder of mu takes it around
                              its changes */
#elif SM_FREE_THREADED
    PyMutex wmu;           /* the same role (3.13t: readers hold the table's
                              mutex, which a holder of wmu may wait for) */
#endif
    SMLock mu;
    int amended;           /* dirty is non-empty: a read miss must look there */
    int frozen;            /* != 0: a mutex holder needs every value stable;
                              in-place writers take the mutex instead (set
                              under wmu, read under wmu by in-place writers) */
    int guard;             /* != 0 during a transaction or clear: reads take
                              the slow path */
    int committing;        /* != 0 while several entries change together */
    int shared;            /* a second thread has used the map (sm_note_thread) */
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
