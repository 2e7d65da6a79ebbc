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
 * dead) are in the node's first 64 bytes, with fields written only while the
 * node is being inserted (pending, evicted), and what a drain writes as it
 * applies accesses (the policy's links, `queue`, `saturated`, `used`) in the
 * next 64 (a node is 128 bytes, allocated 128-aligned), so that a drain writes
 * no cache line a reader loads.  The second line is full: hence 16 bits of
 * `saturated`. */
typedef struct SMCNode {
    PyObject_HEAD
    PyObject *value;              /* NULL once removed (free-threaded builds) */
    int64_t expires;              /* deadline on the cache's clock (ns), or INT64_MAX */
    int dead;                     /* set (atomically) when the node leaves the cache */
    unsigned char pending;        /* 1 while being inserted: not in the table yet */
    unsigned char evicted;        /* a pending node evicted during its own insert */
    PyObject *key;
    Py_hash_t hash;
    uint64_t mix;                 /* `hash` mixed for the frequency sketch (set with it) */
    Py_ssize_t weight;
    unsigned char queue;          /* SMC_Q_*: which policy queue links it */
    uint16_t saturated;           /* the sketch's `epoch` in which all of `mix`'s counters
                                     were found at their maximum (policy_access) */
    uint32_t used;                /* the cache's `events` at its insertion or last applied
                                     access ("tinylfu"; wraps: compare differences) */
    struct SMCNode *prev, *next;  /* policy queue, least recently used first */
    struct SMCNode *wprev, *wnext;/* write order (= expiry order), oldest first */
} SMCNode;

enum { SMC_Q_NONE = 0, SMC_Q_WINDOW, SMC_Q_PROBATION, SMC_Q_PROTECTED, SMC_NQ };

typedef struct {
    SMCNode *head, *tail;
    Py_ssize_t weight;
} SMCQueue;

/* Where a lookup found a key: its node and its table entry (cache_lookup;
 * borrowed: the node may leave the cache at any moment). */
typedef struct {
    SMCNode *node;
    SMSlot *slot;
} SMCRecord;

/* One note of an access, in one 64-bit word (stored and loaded whole, so it is
 * never torn): the upper 32 bits are the index + 1 of the entry found in the
 * cache's table, the lower 32 bits the low bits of the key's hash; 0: never
 * written.  No reference: the drainer applies a note to the node in that entry
 * of the table current under the lock, only if the entry is in use and its
 * hash matches (sm_tb_entry_value_tagged).  Entries are never reused within a
 * table, so in the table the note was taken in, that is the key accessed
 * (its current node: an update keeps the key's entry); a note taken in a
 * table since replaced names an arbitrary index of the new one, where the
 * hash check drops it, unless the entry holds a key whose hash has the same
 * low 32 bits (the same key, moved there by the rebuild, or, about once in
 * 4 billion such notes, another key: a sample of the accesses mis-attributed,
 * never memory not proven alive). 8 bytes rather than a node and an entry
 * pointer (16): half the cache lines to move from a reader to the drainer. */
typedef uint64_t SMCNote;

/* A lossy ring of notes, filled by readers with no lock and drained by the
 * lock holder, which only reads the notes.  Free-threaded builds: the ring's
 * readers (the threads of one stripe) write their own line (`tail`) on every
 * note, and publish the ring's notes in segments of SMC_RB_SEG: the reader
 * that writes the last note of a segment stores `published` (the hand-off
 * line, where the drainer stores `drained`).  A drain by a reader applies
 * the other rings' notes up to `published` only, so the drainer reads a
 * record line once its readers have finished it and never reads `tail`: per
 * segment, the lines that move between the two cores are the segment's
 * notes (2 lines) and the hand-off line.  Writers drain every ring to `tail`
 * (every access recorded so far counts before a victim is chosen). */
#if SM_FREE_THREADED
#  define SMC_RB_SIZE 32
#else
#  define SMC_RB_SIZE 16
#endif
#define SMC_RB_SEG 16
typedef struct {
    Py_ssize_t tail;   /* positions taken (atomic adds) */
    Py_ssize_t calls;  /* @cached calls made by this stripe's threads */
#if SM_FREE_THREADED
    Py_ssize_t seen_drained;  /* `drained` at the ring's last segment end */
    Py_ssize_t idle;          /* segment ends since then that found no drain */
    char tail_line_[SM_LINE - 4 * sizeof(Py_ssize_t)];
    Py_ssize_t published;     /* the end of the last segment written */
#endif
    Py_ssize_t drained;       /* the position drained to (written under the lock) */
#if SM_FREE_THREADED
    char handoff_line_[SM_LINE - 2 * sizeof(Py_ssize_t)];
#endif
    SMCNote slots[SMC_RB_SIZE];
} SMCReadBuf;

typedef union {
    SMCReadBuf b;
    char pad[((sizeof(SMCReadBuf) + SM_LINE - 1) / SM_LINE) * SM_LINE];
} SMCReadBufSlot;

/* Free-threaded builds: the line before the rings (rings_ctl), read by every
 * reader at its segment ends and written only when the drainer changes. */
typedef union {
    void *drainer;  /* the thread that drains on reads (rings_try_drain), or NULL */
    char pad[SM_LINE];
} SMCRingCtl;

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
            SMCReadBufSlot *rbufs;     /* nbufs rings, cache-line aligned (after an SMCRingCtl) */
            Py_ssize_t nbufs;          /* a power of two */
            PyObject *timer;           /* the ttl's clock, or NULL: the monotonic clock */
        };
        char hot_lines_[SMC_HOT_BYTES];
    };
    /* Written by writes and drains (under the lock) from here on. */
    SMNode node;               /* on the list of live maps (fork safety) */
    SMLock lock;               /* every write, the policy, the drains */
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
    Py_ssize_t change_age;     /* events since the last confirmed change (0: none yet;
                                  stops counting at SMC_GROW_WITHIN x maxsize) */
    Py_ssize_t tick_refused;   /* candidates with estimate >= 2 refused in this tick */
    int churn;                 /* the last change recurred (policy_grow): stale
                                  victims lose ties (cache_admit) */
    uint32_t events;           /* hits and misses counted (wraps): SMCNode.used */
    uint64_t *sketch;          /* 4 rows of `width` 4-bit counters, in blocks of one
                                  cache line (see sm_cache.c, "frequency sketch") */
    void *sketch_mem;          /* its allocation (`sketch` is aligned in it) */
    uint64_t *door;            /* doorkeeper: 4 x `width` bits */
    Py_ssize_t width;          /* counters per row, a power of two */
    size_t block_mask;         /* width / 32 - 1: the sketch's blocks (see sm_cache.c) */
    size_t door_mask;          /* width / 16 - 1: the doorkeeper's words */
    Py_ssize_t width_max;      /* what `width` grows to as the cache fills */
    Py_ssize_t sample, sample_max;
    uint16_t epoch;            /* changes whenever counters may decrease (sketch_age,
                                  sketch_ensure, a popularity change); starts at 1, skips
                                  0 when it wraps (every 65,535 changes: a node marked
                                  that long ago and not since would skip its key's uses
                                  for one epoch) */
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
