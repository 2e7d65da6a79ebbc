/*
 * sm_cache.h -- CacheBase: the native core of safemap.Cache (see sm_cache.c).
 */
#ifndef SAFEMAP_SM_CACHE_H
#define SAFEMAP_SM_CACHE_H

#include "sm_common.h"
#include "sm_table.h"

/* One entry.  `key`, `value`, `hash`, `weight`, `expires` and `mix` are set
 * before the node is published in the cache's table and never change while it
 * is there (an update publishes a new node), so a lock-free reader may read
 * them.  Every other field belongs to the holder of the cache's lock.  On
 * free-threaded builds the fields readers load (the header, value, expires,
 * dead) are in the node's first 64 bytes and the policy's links in the next
 * 64 (a node is 128 bytes, allocated 128-aligned), so that a drain relinking
 * nodes writes no cache line a reader loads. */
typedef struct SMCNode {
    PyObject_HEAD
    PyObject *value;              /* NULL once removed (free-threaded builds) */
    int64_t expires;              /* deadline on the cache's clock (ns), or INT64_MAX */
    int dead;                     /* set (atomically) when the node leaves the cache */
    PyObject *key;
    Py_hash_t hash;
    uint64_t mix;                 /* `hash` mixed for the frequency sketch (set with it) */
    Py_ssize_t weight;
    unsigned char queue;          /* SMC_Q_*: which policy queue links it */
    unsigned char pending;        /* 1 while being inserted: not in the table yet */
    unsigned char evicted;        /* a pending node evicted during its own insert */
    struct SMCNode *prev, *next;  /* policy queue, least recently used first */
    struct SMCNode *wprev, *wnext;/* write order (= expiry order), oldest first */
} SMCNode;

enum { SMC_Q_NONE = 0, SMC_Q_WINDOW, SMC_Q_PROBATION, SMC_Q_PROTECTED, SMC_NQ };

typedef struct {
    SMCNode *head, *tail;
    Py_ssize_t weight;
} SMCQueue;

/* One recorded access: the node found and its table entry.  No reference:
 * the drainer uses `node` only if `slot` is an entry of the cache's current
 * table that still holds it (sm_tb_entry_holds), so a record of a removed
 * (even freed) node, or one torn between two records, is dropped. */
typedef struct {
    SMCNode *node;   /* NULL: never written */
    SMSlot *slot;
} SMCRecord;

/* A lossy ring of accessed nodes, filled by readers with no lock and drained
 * by the lock holder, which only reads the slots: it applies the positions
 * from `drained` to `tail` (at most the last SMC_RB_SIZE).  `drained`, the
 * one field a drain writes, has a cache line of its own, so that draining
 * another thread's ring takes none of the lines that thread writes. */
#define SMC_RB_SIZE 16
typedef struct {
    Py_ssize_t drained;  /* `tail` when last drained (written under the lock) */
    char drained_line_[SM_LINE - sizeof(Py_ssize_t)];
    Py_ssize_t tail;
    Py_ssize_t calls;  /* @cached calls made by this stripe's threads */
#if SM_FREE_THREADED
    Py_ssize_t seen_drains;  /* the cache's `drains` when this ring last filled,
                                or after the drain its last fill made */
#endif
    SMCRecord slots[SMC_RB_SIZE];
} SMCReadBuf;

typedef union {
    SMCReadBuf b;
    char pad[((sizeof(SMCReadBuf) + SM_LINE - 1) / SM_LINE) * SM_LINE];
} SMCReadBufSlot;

#define SMC_HOT_BYTES (2 * SM_LINE - (Py_ssize_t)sizeof(PyObject))

typedef struct {
    PyObject_HEAD
    /* Read by every hit, written only when the cache is made (or, `guard`, by
     * a transaction): the rest of the object's first two cache lines (objects
     * of this size start on a line on free-threaded builds), apart from the
     * fields writes and drains write, so that hits on several threads share
     * these lines clean. */
    union {
        struct {
            SMTableRef tab;            /* key -> SMCNode; written holding `lock` */
            Py_ssize_t maxsize;        /* bound on `weight`, or -1 (unbounded) */
            int64_t ttl_ns;            /* 0: no ttl */
            int guard;                 /* != 0 during a transaction: reads take the slow path */
            int shared;                /* see sm_note_thread */
            int configured;            /* options set (by __init__) */
            int policy;                /* SMC_LRU or SMC_TINYLFU */
            SMStats stats;             /* hits, misses, iterations (lock-free counters) */
            SMCReadBufSlot *rbufs;     /* nbufs rings, cache-line aligned */
            Py_ssize_t nbufs;          /* a power of two */
            PyObject *timer;           /* the ttl's clock, or NULL: the monotonic clock */
        };
        char hot_lines_[SMC_HOT_BYTES];
    };
    /* Written by writes and drains (under the lock) from here on. */
    SMNode node;               /* on the list of live maps (fork safety) */
    SMLock lock;               /* every write, the policy, the drains */
#if SM_FREE_THREADED
    void *drainer;             /* the thread that last drained on a read (rings_try_drain) */
    Py_ssize_t drains;         /* drains so far (written under the lock) */
#endif
    SMLockStats lockstats;
    SMWrites writes;           /* counted by the lock holder */
    Py_ssize_t count;          /* entries in the table */
    Py_ssize_t weight;         /* their total weight */
    int committing;            /* != 0 while a transaction commits: readers wait */
    Py_ssize_t version;        /* odd from a transaction's first commit write to its end:
                                  whole-cache reads (snapshot, iteration) that saw it
                                  even and unchanged around their copy saw no commit */
    void *txn_owner;           /* thread running transaction(fn), or NULL */
    SMCQueue q[SMC_NQ];        /* q[SMC_Q_WINDOW] is the whole LRU list for "lru" */
    SMCNode *whead, *wtail;    /* write order, for ttl */
    Py_ssize_t window_max, protected_max;
    /* The policy's hit-rate samples (policy_climb): events (hits and misses)
     * are counted in ticks; the climber's sample is a whole number of ticks. */
    Py_ssize_t tick_left;      /* events left in the current tick (0: not started) */
    Py_ssize_t tick_hits;      /* hits in the current tick */
    Py_ssize_t climb_hits, climb_events;  /* the climber's current sample */
    double climb_rate;         /* hit rate of its previous sample */
    double climb_step;         /* its next window adjustment (weight units, signed) */
    double drop_prev, drop_prev2;  /* the last two ticks' hit rates */
    double drop_ref;           /* > 0: a change is suspected; the next tick confirms
                                  it if its rate is below this */
    int drop_confirmed;        /* ticks shorter than maxsize: the first of the two
                                  confirming ticks has confirmed */
    double drop_avg;           /* moving average of the ticks' hit rates */
    double drop_dev;           /* moving average of their tick-to-tick changes */
    uint64_t *sketch;          /* 4 rows of `width` 4-bit counters, in blocks of one
                                  cache line (see sm_cache.c, "frequency sketch") */
    void *sketch_mem;          /* its allocation (`sketch` is aligned in it) */
    uint64_t *door;            /* doorkeeper: 4 x `width` bits */
    Py_ssize_t width;          /* counters per row, a power of two */
    size_t block_mask;         /* width / 32 - 1: the sketch's blocks (see sm_cache.c) */
    size_t door_mask;          /* width / 16 - 1: the doorkeeper's words */
    Py_ssize_t width_max;      /* what `width` grows to as the cache fills */
    Py_ssize_t sample, sample_max;
    PyObject *ttl_obj, *weigher, *on_evict, *policy_obj, *maxsize_obj;
    void *rbufs_alloc;
    Py_ssize_t evicted_size, evicted_expired;   /* under the lock */
    Py_ssize_t loads, load_failures;            /* atomic adds */
    SMBuf txn_evicted;         /* a transaction's evictions (triples), for on_evict
                                  after its end releases the lock */
    PyObject *weakreflist;
} SMCacheObject;

/* Add CacheBase to the module (called by the module's exec slot, which has
 * readied the cache's types with every other: SM_TYPES).  0 or -1. */
int sm_cache_exec(PyObject *module);

/* One call of a @cached function (sm_cached.c) whose key is `key`: the cache
 * read as get() reads it, then the call counted.  1: hit (*out strong),
 * 0: absent, -1: error. */
int sm_cache_call_lookup(PyObject *cache, PyObject *key, PyObject **out);

/* The other steps of a @cached miss's load (sm_cached.c), as the methods do
 * them: get() (a point read, counted; 1: *out strong, 0: absent, -1: error),
 * load_or_store() (1: loaded, 0: stored; *actual strong: the value now
 * stored; -1: error) and _count_load(ok). */
int sm_cache_read(PyObject *cache, PyObject *key, PyObject **out);
int sm_cache_load_or_store(PyObject *cache, PyObject *key, PyObject *value, PyObject **actual);
void sm_cache_count_load(PyObject *cache, int ok);

#endif /* SAFEMAP_SM_CACHE_H */
