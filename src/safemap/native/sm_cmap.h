/*
 * sm_cmap.h -- ConcurrentMapBase: the sharded map (see sm_cmap.c).
 */
#ifndef SAFEMAP_SM_CMAP_H
#define SAFEMAP_SM_CMAP_H

#include "sm_common.h"

/* One shard: a plain dict, the lock that serializes its writers, and
 * counters.  Padded to a cache line so that threads working on different
 * shards never write the same line (matters on free-threaded builds). */
typedef struct {
    SMLock lock;
    PyObject *dict;         /* never replaced while the map lives: lock-free
                               readers may use it at any time */
    Py_ssize_t version;     /* even; odd while a mutation is in progress */
    Py_ssize_t reads;       /* lock-free reads (GIL builds only: counting
                               them on free-threaded builds would make
                               readers write a shared line) */
    Py_ssize_t locks;       /* lock acquisitions, counted under the lock */
    Py_ssize_t contended;   /* acquisitions that found the lock held */
#if SM_FINAL_CALL
    int final_state;        /* 1: the holder is in its write's last dict call */
    Py_ssize_t final_size;  /* dict size before that call */
    uint64_t final_tag;     /* dict version tag before that call */
    uint64_t final_epoch;   /* numbers those calls */
    uint64_t final_early;   /* epoch of the last call whose write was completed
                               early (its lock released) by a nested write */
#endif
} SMShard;

#define SM_SHARD_STRIDE 64
typedef union {
    SMShard s;
    char pad[((sizeof(SMShard) + SM_SHARD_STRIDE - 1) / SM_SHARD_STRIDE) * SM_SHARD_STRIDE];
} SMShardSlot;

typedef struct {
    PyObject_HEAD
    SMNode node;             /* on the list of live maps (fork safety) */
    SMShardSlot *shards;     /* nshards slots, cache-line aligned */
    void *shards_alloc;      /* what to free */
    Py_ssize_t nshards;
    Py_ssize_t count;        /* number of entries; changed under a shard lock */
    int guard;               /* != 0 while a transaction or a multi-shard
                                change (clear) holds every shard lock: reads
                                take the slow path */
    int committing;          /* != 0 while shards are being changed together:
                                reads wait for it to finish */
    void *txn_owner;         /* thread running transaction(fn), or NULL */
#if !SM_FREE_THREADED
    Py_ssize_t held;         /* shard locks held right now by any thread */
#endif
    PyObject *weakreflist;
} SMCMapObject;

extern PyTypeObject SMCMap_Type;
extern PyTypeObject SMTxnStorage_Type;

#endif /* SAFEMAP_SM_CMAP_H */
