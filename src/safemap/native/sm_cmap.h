/*
 * sm_cmap.h -- ConcurrentMapBase: the sharded map (see sm_cmap.c).
 */
#ifndef SAFEMAP_SM_CMAP_H
#define SAFEMAP_SM_CMAP_H

#include "sm_table.h"

/* One shard: its own hash table (sm_table.h), the lock that serializes
 * its writers, its entry count and its counters.  Padded to whole cache
 * lines so that threads working on different shards never write the same
 * line (matters on free-threaded builds). */
typedef struct {
    SMLock lock;
    SMTableRef tab;         /* lock-free readers use it at any time */
    Py_ssize_t count;       /* entries; written by the lock holder only */
    Py_ssize_t version;     /* even; odd while a mutation is in progress */
    SMLockStats lockstats;  /* the lock's acquisitions, contentions, wait */
    SMWrites writes;        /* this shard's writes, counted by the holder */
} SMShard;

#define SM_SHARD_STRIDE SM_LINE
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
    int guard;               /* != 0 while a transaction or a multi-shard
                                change (clear) holds every shard lock: reads
                                take the slow path */
    int committing;          /* != 0 while shards are being changed together:
                                reads wait for it to finish */
    int shared;              /* a second thread has used the map: deferred
                                reference counting is on (sm_note_thread) */
    void *txn_owner;         /* thread running transaction(fn), or NULL */
    SMStats stats;           /* reads, iterations (lock-free counters) */
#if !SM_FREE_THREADED
    Py_ssize_t held;         /* shard locks held right now by any thread */
#endif
    PyObject *weakreflist;
} SMCMapObject;

#endif /* SAFEMAP_SM_CMAP_H */
