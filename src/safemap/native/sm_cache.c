/*
 * sm_cache.c -- CacheBase, the native core of safemap.Cache: a bounded map with
 * W-TinyLFU (or LRU) eviction, write-time ttl and an eviction callback.
 *
 * Layout.  One table (SMTable, the hash table of ConcurrentMap's shards,
 * sm_table.h) maps each key to a node (SMCNode) that holds the key, the value,
 * its weight and its deadline; those fields never change while the node is in
 * the table (an update publishes a new node in the key's entry with one
 * store), so readers may use a node they found without a lock.  One lock
 * (SMLock) serializes every write (it is the table's writer lock) and owns
 * the eviction policy: the queues linking the nodes, the frequency sketch,
 * the weights.  One lock rather than shards: every insert must go through
 * the policy anyway, because the bound is kept BEFORE a new entry becomes
 * visible (see "The bound"), which a per-shard lock cannot do.
 *
 * Reads (m[k], get, in, load) take no lock and no reference to the node:
 * the table's lock-free lookup (sm_tb_get_borrowed), a deadline check, the
 * value taken (cache_lookup: on free-threaded builds a try-incref and a
 * re-check of the node's `dead` mark), and the access noted in a small
 * ring (one per stripe of threads on free-threaded builds, one in all on GIL
 * builds) as the entry's index in the table and 32 bits of the key's hash
 * (SMCNote: 8 bytes), no reference.  A note that finds its slot still full
 * replaces it (the older note is lost: the policy needs a sample of the
 * accesses, not all of them -- Caffeine's read buffer).  The reader that
 * writes the last slot of a segment of its ring tries the lock without
 * waiting and, if it gets it, drains the rings into the policy (on
 * free-threaded builds, only if no other thread keeps doing so, and the
 * other rings only up to their last full segment: rings_try_drain); writers
 * drain every note.  So a hit never waits for a lock, and on free-threaded
 * builds writes no memory another thread's hit writes.
 *
 * The bound.  Every write runs, under the lock: remove what expired; link the
 * new node into the policy; evict until the total weight fits maxsize,
 * removing each victim from the table; and only then put the new node in the
 * table.  The table therefore never holds more than maxsize weight, at any
 * instant, so no reader (len, iteration, snapshot, lookups) can see more.
 * A node heavier than maxsize alone is never stored (it is evicted at once).
 *
 * Policy (W-TinyLFU, Einziger, Friedman & Manes; the layout of Caffeine):
 * a window LRU (1% of maxsize to start with, then sized by hill climbing on
 * the hit rate: policy_climb, and grown when a working set in use keeps
 * changing: policy_grow) takes new entries; what leaves the window is
 * a candidate for the main space, a segmented LRU (probation ~20%, protected
 * ~80%); when the cache is over its bound the candidate is admitted only if
 * the frequency sketch (count-min, 4 rows of 4-bit counters behind a
 * doorkeeper Bloom filter, all halved every 40 x maxsize additions so that
 * old popularity fades, and emptied at once when the hit rate falls sharply:
 * policy_tick) says it is used more often than the probation
 * queue's least recently used entry, which is evicted instead (on a tie at
 * 0, only while working sets are being replaced and that entry is stale:
 * cache_admit).  An access in probation promotes to protected; protected
 * overflow is demoted to probation.  policy="lru" keeps one LRU queue.
 *
 * Lifetimes.  A ring holds no reference: a note is applied, under the lock,
 * to the node its table entry holds only if the entry is in use by a key of
 * the note's hash (ring_apply), so a note of a removed node is dropped and
 * the drainer only ever touches nodes that are in the table.  A removed
 * node is marked dead, then (node_bury) emptied: its key and value are
 * released once the write has unlocked -- once a delete or eviction has
 * returned, the cache holds no reference to what it removed -- while on
 * free-threaded builds the node itself is released through QSBR (tagged in
 * the grave like the table's plain keys), so that a reader that found it
 * just before reads valid memory; that reader's try-incref of the value and
 * re-check of `dead` tell it the node left (see cache_lookup).  Nothing the
 * cache drops is released under the lock: what a write removes goes to a
 * "grave" released after the unlock, and on_evict(key, value, cause) is
 * called after the unlock too, once per evicted entry.
 *
 * Re-entry.  A compute-family callback runs holding the lock; a write to the
 * cache from it (or from a weigher) raises RecursiveUpdateError (the lock's
 * owner is the calling thread), reads are allowed (a read that would drain
 * finds the lock held and skips the drain).  Inside transaction(fn) every
 * method of the cache raises (use the view).
 */
#include "sm_cache.h"
#include "sm_glue.h"

#if SM_FREE_THREADED
#  define HELD_INC() (sm_tls_held++)
#  define HELD_DEC() (sm_tls_held--)
#  define SMC_SET_DEAD(n) _Py_atomic_store_int(&(n)->dead, 1)
#  define SMC_IS_DEAD(n) _Py_atomic_load_int(&(n)->dead)
#else
#  define HELD_INC() ((void)0)
#  define HELD_DEC() ((void)0)
#  define SMC_SET_DEAD(n) ((n)->dead = 1)
#  define SMC_IS_DEAD(n) ((n)->dead)
#endif

enum { SMC_LRU = 0, SMC_TINYLFU = 1 };

#if SM_TB_LOCKFREE
/* What every hit reads fits the object's first two lines (sm_cache.h). */
_Static_assert(offsetof(SMCacheObject, node) == 2 * SM_LINE, "hot fields overflow");
/* A node: what readers load in its first line, what a drain writes in its
 * second (sm_cache.h, SMCNode). */
_Static_assert(offsetof(SMCNode, hash) == SM_LINE && sizeof(SMCNode) == 2 * SM_LINE,
               "SMCNode's lines");
#endif

#define MSG_WRITE_REENTRY \
    "cannot write to a Cache from inside one of its own compute callbacks, its " \
    "weigher, or a key's __eq__/__hash__ during a write to it"
#define MSG_TXN_REENTRY \
    "cannot call a Cache's methods inside its own transaction(); use the view " \
    "passed to the function"

static PyObject *SMC_str_size = NULL;     /* "size" */
static PyObject *SMC_str_expired = NULL;  /* "expired" */
static PyObject *SMC_str_Cache = NULL;    /* contention kind */


/* ------------------------------------------------------------------ nodes */

/* Free list of nodes (GIL release builds only).  Every insert into a full
 * cache allocates one node and frees one (its victim's), so nodes are kept
 * for reuse rather than returned to the allocator: a reused node skips the
 * allocation, the GC's allocation accounting and the release of its memory.
 * A node on the list is untracked, has a reference count of 0 and holds no
 * reference; the list is bounded (SMC_FREE_MAX) and guarded by the GIL.  Not
 * on free-threaded builds: a lock-free reader there may still read a node it
 * found in the table after the node left it (its memory is released through
 * QSBR, node_bury), so a node's memory must not come back as another node
 * meanwhile; and not on debug builds
 * (Py_REF_DEBUG, Py_TRACE_REFS), whose reference bookkeeping a reused object
 * would upset.  The nodes on the list when the interpreter exits are not
 * freed (at most SMC_FREE_MAX, like CPython's own free lists). */
#if !SM_FREE_THREADED && !defined(Py_REF_DEBUG) && !defined(Py_TRACE_REFS)
#  define SMC_FREELIST 1
#  define SMC_FREE_MAX 64
static SMCNode *smc_free[SMC_FREE_MAX];
static int smc_nfree = 0;
/* Under AddressSanitizer a node on the list is poisoned: any use of a node
 * after its release is still reported, as it would be without the list. */
#  if defined(__has_feature)
#    if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#      define __SANITIZE_ADDRESS__ 1
#    endif
#  endif
#  if defined(__SANITIZE_ADDRESS__)
#    include <sanitizer/asan_interface.h>
#    define SMC_POISON(n) ASAN_POISON_MEMORY_REGION((n), sizeof(SMCNode))
#    define SMC_UNPOISON(n) ASAN_UNPOISON_MEMORY_REGION((n), sizeof(SMCNode))
#  else
#    define SMC_POISON(n) ((void)(n))
#    define SMC_UNPOISON(n) ((void)(n))
#  endif
#else
#  define SMC_FREELIST 0
#endif

static SMCNode *
node_new(void)
{
    SMCNode *n;
#if SMC_FREELIST
    if (smc_nfree > 0) {
        n = smc_free[--smc_nfree];
        SMC_UNPOISON(n);
        Py_SET_REFCNT(n, 1);
    }
    else
#endif
    {
        n = PyObject_GC_New(SMCNode, &SMCNode_Type);
        if (n == NULL) {
            return NULL;
        }
    }
    n->key = NULL;
    n->value = NULL;
    n->hash = 0;
    n->mix = 0;
    n->weight = 1;
    n->expires = INT64_MAX;
    n->dead = 0;
    n->queue = SMC_Q_NONE;
    n->pending = 0;
    n->evicted = 0;
    n->saturated = 0;
    n->prev = n->next = NULL;
    n->wprev = n->wnext = NULL;
    PyObject_GC_Track((PyObject *)n);
    return n;
}

static int
node_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMCNode *n = (SMCNode *)op;
    Py_VISIT(n->key);
    Py_VISIT(n->value);
    return 0;
}

static void
node_dealloc(PyObject *op)
{
    SMCNode *n = (SMCNode *)op;
    PyObject_GC_UnTrack(op);
    Py_CLEAR(n->key);
    Py_CLEAR(n->value);
#if SMC_FREELIST
    /* The key's or value's release above may have run Python code that
     * filled the list: check only now. */
    if (smc_nfree < SMC_FREE_MAX) {
        smc_free[smc_nfree++] = n;
        SMC_POISON(n);
        return;
    }
#endif
    PyObject_GC_Del(op);
}

SM_DEFINE_TYPE(SMCNode_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.CacheNode",
    .tp_basicsize = sizeof(SMCNode),
    .tp_dealloc = node_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One entry of a Cache (internal).",
    .tp_traverse = node_traverse,
};

/* ----------------------------------------------------- deferred releases */

/* What one write drops: nodes (released after the unlock) and evicted
 * entries (key, value, cause: on_evict is called after the unlock).  The
 * grave is `own` (its inline slots hold what a write usually drops, with no
 * allocation), or a transaction's storage's (sm_glue.h), kept until the
 * transaction ends.  Never copied: `grave` may point into it. */
typedef struct {
    SMGrave *grave;
    SMGrave own;
    SMBuf evicted;   /* triples */
} SMCPend;

static inline void
pend_init(SMCPend *p)
{
    SM_GRAVE_INIT(&p->own);
    p->grave = &p->own;
    p->evicted = (SMBuf){NULL, 0, 0};
}

/* Make room for `extra` more references in p's grave, so that pushing them
 * cannot fail: the check inline (a write usually fits the grave's inline
 * slots), sm_grave_reserve only to grow it.  0, or -1 with MemoryError. */
static inline int
pend_reserve(SMCPend *p, Py_ssize_t extra)
{
    if (SM_LIKELY(p->grave->n + extra <= p->grave->cap)) {
        return 0;
    }
    return sm_grave_reserve(p->grave, extra);
}

/* Keep a reference for release after the unlock (steals ref).  PyMem runs no
 * Python code; out of memory, the reference is dropped here -- which can only
 * run a __del__ under the lock in that case. */
static inline void
pend_bury(SMCPend *p, PyObject *ref)
{
    if (SM_LIKELY(p->grave->n < p->grave->cap)) {
        sm_grave_push(p->grave, ref);  /* the inline slots, usually */
        return;
    }
    if (pend_reserve(p, 1) < 0) {
        PyErr_Clear();
        Py_DECREF(ref);
        return;
    }
    sm_grave_push(p->grave, ref);
}

/* Keep a reference to n, a node that was in the table, for release after
 * the unlock (steals ref).  On free-threaded builds readers may still hold
 * n without a reference (sm_tb_get_borrowed): its key and value are taken
 * out of it and released at once (the cache keeps no reference to what it
 * removed), and the node itself, which then holds nothing, goes through
 * QSBR, so its memory stays valid until every such reader has moved on. */
static void
node_bury(SMCPend *p, SMCNode *n)
{
#if SM_FREE_THREADED
    PyObject *k = n->key, *v = n->value;
    n->key = NULL;
    _Py_atomic_store_ptr_release(&n->value, NULL);  /* readers: look again */
    if (k != NULL) {
        pend_bury(p, k);
    }
    if (v != NULL) {
        pend_bury(p, v);
    }
    if (pend_reserve(p, 1) < 0) {
        /* Out of memory: the node (which holds nothing) is leaked rather than
         * released at once, which readers could still be using. */
        PyErr_Clear();
        return;
    }
    sm_grave_push(p->grave, (PyObject *)((uintptr_t)n | SM_TB_PLAIN));
#else
    pend_bury(p, (PyObject *)n);
#endif
}

static void
pend_evicted_keep(SMCPend *p, SMCNode *n, PyObject *cause)
{
    if (sm_buf_reserve(&p->evicted, p->evicted.n + 3) < 0) {
        PyErr_Clear();  /* the callback is lost, never called twice */
        return;
    }
    p->evicted.items[p->evicted.n++] = Py_NewRef(n->key);
    p->evicted.items[p->evicted.n++] = Py_NewRef(n->value);
    p->evicted.items[p->evicted.n++] = Py_NewRef(cause);
}

/* Keep evicted entry n (key, value, cause) for on_evict after the unlock;
 * nothing to do, inline, without a callback. */
static inline void
pend_evicted(SMCacheObject *m, SMCPend *p, SMCNode *n, PyObject *cause)
{
    if (m->on_evict != NULL) {
        pend_evicted_keep(p, n, cause);
    }
}

/* Call on_evict for each evicted entry and release what the write dropped.
 * Holding no lock; keeps a pending exception. */
static void
pend_finish(SMCacheObject *m, SMCPend *p)
{
    if (p->evicted.n > 0) {
        SMSavedError pending;
        sm_error_save(&pending);
        PyObject *cb = Py_XNewRef(m->on_evict);
        for (Py_ssize_t i = 0; cb != NULL && i + 2 < p->evicted.n; i += 3) {
            PyObject *args[3] = {p->evicted.items[i], p->evicted.items[i + 1],
                                 p->evicted.items[i + 2]};
            PyObject *r = PyObject_Vectorcall(cb, args, 3, NULL);
            if (r == NULL) {
                PyErr_WriteUnraisable(cb);
            }
            Py_XDECREF(r);
        }
        Py_XDECREF(cb);
        sm_error_restore(&pending);
    }
    if (p->evicted.items != NULL) {
        sm_buf_clear(&p->evicted);
    }
    if (p->grave->n > 0 || p->grave->items != p->grave->inline_items) {
        sm_grave_release(p->grave);
    }
}

/* ------------------------------------------------------------------ clock */

/* The cache's clock in ns: the monotonic clock, or timer() (seconds).  Read
 * with no lock held.  0 or -1. */
static int
cache_now(SMCacheObject *m, int64_t *now)
{
    if (m->timer == NULL) {
        *now = sm_now_ns();
        return 0;
    }
    PyObject *r = PyObject_CallNoArgs(m->timer);
    if (r == NULL) {
        return -1;
    }
    double s = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (s == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *now = (int64_t)(s * 1e9);
    return 0;
}

/* Counters per row per entry the sketch is sized for: 8 (32 per entry in 4
 * rows, 16 bytes).  Twice Caffeine's: fewer collisions between the many
 * rarely used keys, whose estimates decide admission on a long-tailed
 * workload (+0.4 to +0.8 points on the Zipf 0.8 and scan traces of
 * benchmarks/bench_cache.py against 4 per row). */
#define SMC_CPR 8

static inline int
node_expired(SMCacheObject *m, SMCNode *n, int64_t now)
{
    return m->ttl_ns != 0 && now >= n->expires;
}

/* ------------------------------------------------------- frequency sketch */

static inline uint64_t
smc_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

/* The counters: a count-min sketch of 4 rows of 4-bit counters, laid out in
 * blocks of one cache line (8 words of 16 counters).  A key's counters are
 * in two blocks: rows 0 and 1 in block A (words 0-3 and 4-7), rows 2 and 3
 * in block B, each row's counter one of its 64 picked by 6 bits of the
 * key's mixed hash h (bits SMC_SEL and up).  So an increment or an estimate
 * touches two lines, not four, and computes each counter's place with shifts
 * and masks only.  Two blocks rather than one: keys sharing one block share
 * it for all four rows, and a frequent key meeting a rare one in all four
 * (1 in 32**4 within a block of 4 rows of 32) made rare keys look frequent
 * often enough to cost 0.4 to 0.5 points of hit ratio on the Zipf 1.0
 * traces of benchmarks/bench_cache.py; with two blocks, two keys meet in all
 * four rows only if they share both blocks, and then 1 in 64**4, as rarely as
 * in a sketch of independent rows (the hit ratios there are within 0.15
 * points of its).  A is picked by the low bits of h, B by the low bits of h >> 20;
 * a wider sketch keeps each key's old block indexes as their low bits
 * (sketch_ensure; 2**20 blocks is the largest sketch).  `width` counts the
 * counters of one row: 32 per block. */
#define SMC_SEL 40
#define SMC_BLOCK_WORDS 8

/* b[0], b[1]: the blocks A and B of mixed hash h. */
#define SMC_BLOCKS(m, h, b)                                                \
    uint64_t *b[2];                                                        \
    do {                                                                   \
        size_t nb_ = (m)->block_mask;                                      \
        b[0] = &(m)->sketch[((h) & nb_) * SMC_BLOCK_WORDS];                \
        b[1] = &(m)->sketch[(((h) >> 20) & nb_) * SMC_BLOCK_WORDS];        \
    } while (0)

/* Word and shift of row r's counter of mixed hash h (blocks b): of the row's
 * 6 bits of h, the low 2 pick the word, the high 4 the counter in it (its
 * shift, a multiple of 4, is those bits in place). */
#define SMC_COUNTER(b, h, r, word, shift)                                  \
    do {                                                                   \
        uint64_t c_ = (h) >> (SMC_SEL + 6 * (r));                          \
        (word) = &(b)[(r) >> 1][4 * ((r) & 1) + (c_ & 3)];                 \
        (shift) = (int)(c_ & 60);                                          \
    } while (0)

/* The doorkeeper: a Bloom filter (4 x `width` bits) in front of the sketch.
 * A key's first addition in an aging period only sets its bits; later ones
 * count in the sketch, and the estimate is the sketch's plus one for a key
 * the doorkeeper has seen.  Most keys of a long-tailed workload are seen
 * once per period: kept out of the counters, they no longer lift the
 * estimates of the keys they collide with, which is what decides admission
 * between two rarely used keys.  Both of a key's bits are in one word (a
 * blocked Bloom filter): one load and one mask test.  Cleared when the
 * counters are halved. */
#define SMC_DOOR_MULT UINT64_C(0xe7037ed1a0b428db)

/* The doorkeeper's word holding mixed hash h's bits. */
static inline uint64_t *
door_word(SMCacheObject *m, uint64_t h)
{
    return &m->door[((h * SMC_DOOR_MULT) >> 32) & m->door_mask];
}

/* 1 if the doorkeeper has seen mixed hash h; with `set`, it has now. */
static inline int
door_seen(SMCacheObject *m, uint64_t h, int set)
{
    uint64_t g = h * SMC_DOOR_MULT;
    uint64_t bits = (UINT64_C(1) << ((g >> 20) & 63)) | (UINT64_C(1) << ((g >> 26) & 63));
    uint64_t *d = door_word(m, h);
    int all = (*d & bits) == bits;
    if (set) {
        *d |= bits;
    }
    return all;
}

/* Ask the CPU to load, for writing, the two blocks of mixed hash h and its
 * doorkeeper's word: a reader about to note an access (cache_read) calls it,
 * so that the lines are in its cache when the note is applied, up to a
 * segment of the ring later (rings_try_drain), instead of misses in a row
 * there (the word: about 0.4 of a miss per hit at 100,000 keys, by
 * cachegrind).  Once the sketch outgrows the CPU's caches (a sketch of
 * 100,000 entries is 2 MB), those misses were about a fifth of a hit's cost
 * (benchmarks/bench_cache.py with 100,000 keys: a hit 2.3x to 2.6x a
 * ConcurrentMap get without, 1.8x to 2.1x with, in runs alternating the two
 * builds; no change at 1,000).  GIL builds only: there the reader is the
 * thread that applies its notes; on free-threaded builds another thread (the
 * drainer) usually does, fetching its lines here would move them away from
 * it, and the sketch's pointer may not be read without the lock. */
#if !SM_FREE_THREADED
SM_ALWAYS_INLINE void
sketch_prefetch(SMCacheObject *m, uint64_t h)
{
    SMC_BLOCKS(m, h, b);
    __builtin_prefetch(b[0], 1, 3);
    __builtin_prefetch(b[1], 1, 3);
    __builtin_prefetch(door_word(m, h), 1, 3);
}
#endif

/* The estimate for mixed hash h: the least of its 4 counters, plus one if
 * the doorkeeper has seen it. */
static int
sketch_frequency(SMCacheObject *m, uint64_t h)
{
    SMC_BLOCKS(m, h, b);
    /* Unrolled (compilers at -O2 keep the loop): a load, shifts and masks per
     * row, and a branch-free min. */
#define SMC_ROW_GET(r, c)                                                  \
    do {                                                                   \
        const uint64_t *w_;                                                \
        int s_;                                                            \
        SMC_COUNTER(b, h, r, w_, s_);                                      \
        (c) = (unsigned)(*w_ >> s_) & 0xFu;                                \
    } while (0)
    unsigned c0, c1, c2, c3;
    SMC_ROW_GET(0, c0);
    SMC_ROW_GET(1, c1);
    SMC_ROW_GET(2, c2);
    SMC_ROW_GET(3, c3);
#undef SMC_ROW_GET
    c0 = c0 < c1 ? c0 : c1;
    c2 = c2 < c3 ? c2 : c3;
    unsigned f = c0 < c2 ? c0 : c2;
    return (int)f + door_seen(m, h, 0);
}


/* Counters may have fallen (or the doorkeeper forgotten): every entry's
 * `saturated` mark is stale.  0 is skipped, being a new entry's mark. */
static inline void
sketch_new_epoch(SMCacheObject *m)
{
    if (++m->epoch == 0) {
        m->epoch = 1;
    }
}

/* Aging: divide every counter by 2**shift (shift 1 to 4; 4 empties the
 * sketch) and empty the doorkeeper, so that past popularity fades. */
static void
sketch_age(SMCacheObject *m, int shift)
{
    size_t words = (size_t)m->width / 16;
    uint64_t keep = UINT64_C(0x1111111111111111) * (uint64_t)(0xF >> shift);
    for (size_t j = 0; j < 4 * words; j++) {
        m->sketch[j] = (m->sketch[j] >> shift) & keep;
    }
    memset(m->door, 0, words * sizeof(uint64_t));
    m->sample >>= shift;
    sketch_new_epoch(m);  /* counters fell: no key is known to be saturated */
}

/* Count one use of the key whose mixed hash is h.  Returns 1 if that was a
 * no-op: the doorkeeper had seen the key and its four counters were at their
 * maximum.  Counters only grow between two changes of m->epoch (aging, a
 * resize), so until the next one every use of that key is a no-op too, and
 * policy_access skips it: the keys used most, whose uses are most of a
 * skewed workload's, then cost no sketch work (and no access to its lines)
 * for most of each aging period.  Inlined: it is most of the work of
 * applying a recorded access. */
SM_ALWAYS_INLINE int
sketch_increment(SMCacheObject *m, uint64_t h)
{
    unsigned added = 1;  /* first sight in this period: the doorkeeper counts it */
    if (door_seen(m, h, 1)) {
        /* Branch-free: each row adds one unless its counter is saturated. */
        SMC_BLOCKS(m, h, b);
        added = 0;
#define SMC_ROW_INC(r)                                                     \
    do {                                                                   \
        uint64_t *w_;                                                      \
        int s_;                                                            \
        SMC_COUNTER(b, h, r, w_, s_);                                      \
        uint64_t inc_ = ((*w_ >> s_) & 0xF) != 0xF;                        \
        *w_ += inc_ << s_;                                                 \
        added |= (unsigned)inc_;                                           \
    } while (0)
        SMC_ROW_INC(0);
        SMC_ROW_INC(1);
        SMC_ROW_INC(2);
        SMC_ROW_INC(3);
#undef SMC_ROW_INC
    }
    if (added && ++m->sample >= m->sample_max) {
        sketch_age(m, 1);
    }
    return !added;
}

/* Additions between two agings: SMC_AGING x the entries the sketch serves
 * (maxsize once it is full-sized).  Four times Caffeine's 10 x: with the
 * doorkeeper taking each key's first sight, a key near the admission
 * boundary of a long-tailed workload must be seen again within one period to
 * be told from the one-time keys, and on a Zipf workload its expected count
 * in a period is only about SMC_AGING / 12 (+0.4 to +0.9 points on the Zipf
 * traces of benchmarks/bench_cache.py against 20 x).  A long memory would
 * hold on to stale popularity when it moves on; policy_tick forgets it at
 * once instead when the hit rate falls sharply. */
#define SMC_AGING 40

static void
sketch_set_period(SMCacheObject *m);

/* The sketch's width (counters per row) and what depends on it. */
static void
sketch_set_width(SMCacheObject *m, Py_ssize_t width)
{
    m->width = width;
    m->block_mask = (size_t)width / 32 - 1;
    m->door_mask = (size_t)width / 16 - 1;
    sketch_set_period(m);
}

static void
sketch_set_period(SMCacheObject *m)
{
    Py_ssize_t e = m->width / SMC_CPR;
    if (m->maxsize < e) {
        e = m->maxsize;
    }
    m->sample_max = SMC_AGING * (e > 16 ? e : 16);
}

/* Grow the sketch (under the lock) when the entries outgrow it: SMC_CPR counters
 * per row per entry, up to width_max.  The counts carry over: a key's index
 * in the wider row keeps the low bits of its old index, so each new counter
 * starts from the old counter it splits from (an over-estimate, which a
 * count-min sketch allows).  Out of memory, the smaller sketch stays. */
/* Counters for rows of `width` (zeroed), aligned on a cache line so that a
 * block is one line: the aligned array, *mem the allocation to free; NULL if
 * out of memory. */
static uint64_t *
sketch_alloc(Py_ssize_t width, void **mem)
{
    size_t words = (size_t)width / 4;  /* 4 rows of width / 16 words */
    char *raw = PyMem_Calloc(words * sizeof(uint64_t) + SM_LINE, 1);
    *mem = raw;
    if (raw == NULL) {
        return NULL;
    }
    uintptr_t a = ((uintptr_t)raw + SM_LINE - 1) & ~(uintptr_t)(SM_LINE - 1);
    return (uint64_t *)a;
}

static void
sketch_ensure(SMCacheObject *m, Py_ssize_t entries)
{
    if (m->sketch == NULL || m->width >= m->width_max || SMC_CPR * entries <= m->width) {
        return;
    }
    Py_ssize_t width = m->width;
    while (width < SMC_CPR * entries && width < m->width_max) {
        width *= 2;
    }
    void *mem;
    uint64_t *t = sketch_alloc(width, &mem);
    if (t == NULL) {
        return;
    }
    /* New block j splits from old block j mod the old number of blocks. */
    size_t old_words = (size_t)m->width / 4, words = (size_t)width / 4;
    for (size_t j = 0; j < words; j++) {
        t[j] = m->sketch[j & (old_words - 1)];
    }
    /* The doorkeeper starts over (its bits cannot be split like counters). */
    uint64_t *d = PyMem_Calloc((size_t)width / 16, sizeof(uint64_t));
    if (d == NULL) {
        PyMem_Free(mem);
        return;
    }
    PyMem_Free(m->sketch_mem);
    PyMem_Free(m->door);
    m->sketch_mem = mem;
    m->sketch = t;
    m->door = d;
    sketch_new_epoch(m);  /* the doorkeeper starts over */
    sketch_set_width(m, width);
}

/* ---------------------------------------------------------------- queues */

static inline void
q_unlink(SMCacheObject *m, SMCNode *n)
{
    SMCQueue *q = &m->q[n->queue];
    if (n->prev) {
        n->prev->next = n->next;
    }
    else {
        q->head = n->next;
    }
    if (n->next) {
        n->next->prev = n->prev;
    }
    else {
        q->tail = n->prev;
    }
    q->weight -= n->weight;
    n->prev = n->next = NULL;
    n->queue = SMC_Q_NONE;
}

static inline void
q_push(SMCacheObject *m, int which, SMCNode *n)
{
    SMCQueue *q = &m->q[which];
    n->queue = which;
    n->prev = q->tail;
    n->next = NULL;
    if (q->tail) {
        q->tail->next = n;
    }
    else {
        q->head = n;
    }
    q->tail = n;
    q->weight += n->weight;
}

/* Move n to the most recent end of the queue that links it (its weight
 * stays counted there); nothing to do if it is already there. */
static inline void
q_touch(SMCacheObject *m, SMCNode *n)
{
    SMCQueue *q = &m->q[n->queue];
    SMCNode *next = n->next;
    if (next == NULL) {
        return;  /* already the tail */
    }
    SMCNode *prev = n->prev;
    next->prev = prev;
    if (prev) {
        prev->next = next;
    }
    else {
        q->head = next;
    }
    n->prev = q->tail;
    n->next = NULL;
    q->tail->next = n;
    q->tail = n;
}

static inline void
w_unlink(SMCacheObject *m, SMCNode *n)
{
    if (n->wprev) {
        n->wprev->wnext = n->wnext;
    }
    else if (m->whead == n) {
        m->whead = n->wnext;
    }
    if (n->wnext) {
        n->wnext->wprev = n->wprev;
    }
    else if (m->wtail == n) {
        m->wtail = n->wprev;
    }
    n->wprev = n->wnext = NULL;
}

static inline void
w_push(SMCacheObject *m, SMCNode *n)
{
    n->wprev = m->wtail;
    n->wnext = NULL;
    if (m->wtail) {
        m->wtail->wnext = n;
    }
    else {
        m->whead = n;
    }
    m->wtail = n;
}

static inline int
cache_bounded(SMCacheObject *m)
{
    return m->maxsize >= 0;
}

/* The window's size adapts to the workload (Caffeine's hill climbing): the
 * policy counts hits (accesses applied) and misses (new keys inserted), and
 * after every SMC_CLIMB_SAMPLE x maxsize of them (rounded up to whole ticks,
 * see policy_tick) moves the window by a step,
 * (20 x rather than Caffeine's 10 x: a longer sample is less noisy, so the
 * window does not wander away from its best size on a steady workload),
 * in the same direction as the last move if the hit rate did not fall, in
 * the other direction if it fell.  A bigger window favours recency (entries
 * get more time to be used again before admission), a smaller one frequency.
 * The step starts at SMC_CLIMB_STEP of maxsize and decays geometrically, so
 * the window settles; a change of the hit rate by SMC_CLIMB_RESTART or more
 * (the workload changed) restarts it at full size.  The first move shrinks. */
#define SMC_CLIMB_SAMPLE 20
#define SMC_CLIMB_STEP 0.0625
#define SMC_CLIMB_DECAY 0.98
#define SMC_CLIMB_RESTART 0.05

static void
policy_set_window(SMCacheObject *m, Py_ssize_t window)
{
    m->window_max = window;
    m->protected_max = (m->maxsize - window) * 8 / 10;
}

/* Popularity changes.  Hits and misses are counted in ticks of maxsize / 2
 * events, or max(maxsize, SMC_TICK) when that half is shorter than SMC_TICK
 * (the climber's sample is the first whole number of ticks of at least
 * SMC_CLIMB_SAMPLE x maxsize events).  A tick
 * whose hit rate falls below the reference -- the larger of the moving
 * average of the earlier ticks' rates and the rate two ticks back (a change
 * straddling a tick boundary spreads its drop over two ticks) -- by more than
 * the bar, max(SMC_DROP_FLOOR, SMC_DROP_DEVS x the moving average of the
 * tick-to-tick changes so far), is a suspected popularity change; if the next
 * tick is still more than half the bar below that reference (the next two,
 * with ticks of maxsize / 2), it is one.
 * Then what the policy learned is wrong: the sketch is emptied (old counts
 * would keep the old keys winning admission until aging had halved them
 * several times), and the protected segment moves to probation's eviction
 * end (its entries earned protection under the old popularity; one still in
 * use is promoted again by its next access).  A scan does not trigger it:
 * its dip lasts one tick (the next one is back to normal), and frequent
 * scans raise the bar through the tick-to-tick changes.  A tick of at least
 * SMC_TICK events keeps a small cache's rate from being noise.  Ticks are
 * half of maxsize where that is long enough (from 2 x SMC_TICK entries), so
 * that a change is acted on 1.5 x maxsize into it rather than 2 x: early
 * enough for a working set replaced every few x maxsize requests to win
 * admission.  Two confirming ticks then keep one scan (which fills much of a
 * half-size tick) from passing for a change; scans close together still do
 * now and then, the price of the earlier detection.  Smaller caches keep
 * ticks of max(maxsize, SMC_TICK) and one confirming tick: there, half-size
 * ticks either followed changes later or took scans for them.  The numbers
 * behind each choice are in docs/cache.md ("Never below LRU").  Measured on
 * benchmarks/bench_cache.py's traces: emptying beats halving the sketch once
 * or twice, and without the demotion the stale protected entries hold out
 * until promotions push them out. */
#define SMC_TICK 2048
#define SMC_DROP_FLOOR 0.12
#define SMC_DROP_DEVS 5.0
#define SMC_DROP_EWMA 0.125

/* Window growth on a recurring change (policy_grow).  A confirmed change
 * less than SMC_GROW_WITHIN x maxsize events after the previous one (or the
 * cache's start, which counts as one: see cache_configure) (sooner than a
 * climber's sample, SMC_CLIMB_SAMPLE x maxsize: the climber cannot
 * follow a workload that moves that fast), in whose confirming tick
 * admission turned away at least one returning candidate (estimate >= 2:
 * a key requested again, not a one-time key) per SMC_GROW_REFUSED events,
 * grows the window by SMC_GROW x maxsize at once, and the climber's next
 * step is a full step up.  That is a working set replaced faster than
 * frequencies can be relearned, refused by admission while in use: only
 * recency helps it, and the window is the recency part of the cache.  On
 * benchmarks/bench_cache.py's working set replaced every 5 x maxsize, at
 * 1,000 entries (ticks of 2,048 events), the changes were confirmed every
 * 10 to 15 x maxsize, with 25% to 91% of a confirming tick's events
 * refusals of returning keys; the window then took 400,000 requests to
 * climb past the working set (78.7% hits, LRU 90.0%); with the growth it
 * gets there at the first change (one growth by half of maxsize, the cache's
 * start counting as a change: 89.6%; with only confirmed changes counting,
 * at the second change: 89.4%; by a quarter, two growths: 89.2%; what
 * remains is the first change, at 10,000 to 15,000 requests).  Counting the
 * start changed no other cell of either table, and on 60 variants of that
 * trace (phases of 3 to 20 x maxsize over working sets of 0.3 to 0.8 x
 * maxsize, 500 to 10,000 entries) gained up to 2.2 points and lost nothing.
 * The two conditions keep the growth out of everything else: the 5
 * popularity changes are 20 x maxsize apart at 10% (200 x at 1%), and
 * growing on every change cost them up to 0.6 points; scans close together
 * are sometimes confirmed as changes a few x maxsize apart (4,000,000-request
 * scan trace at 5,000 entries: 2.5 x), and growing there without the
 * refusals' test cost that trace 0.9 to 3.7
 * points, but their confirming ticks refuse few returning keys (a scan's
 * keys are new).  Both tables are the same from 12 x to 25 x, and with a
 * refusal per 4 to 16 events; with 40 x the 4,000,000-request scan trace at
 * 1% lost 1.1 points (without the refusals' test, 25 x already lost 0.13
 * on the 1,000,000-request one).  At 5% and 10% that working set's new keys
 * mostly replace the phase before last (whose counts the last reset
 * emptied); the ~100 per phase refused there are first sights (estimate 1),
 * as a scan's keys are, so those windows are not grown (89.6%, LRU 90.0%;
 * SMC_STALE narrows that gap). */
#define SMC_GROW_WITHIN 16
#define SMC_GROW_REFUSED 8
#define SMC_GROW 0.5

/* Ties at 0 go to recency while the working set keeps being replaced.
 * Admission refuses a candidate whose estimate only equals the victim's: on a
 * steady workload the resident has earned its place as much, and admitting on
 * ties churns probation (admitting every tie cost Zipf 0.8 at 1% 0.8 points,
 * and the loop over 1.1 x maxsize keys, where all estimates are equal, 20 to
 * 39).  But a popularity change empties the sketch, and then a victim not used
 * since (a key of an old working set) ties at 0 with a candidate not used
 * since either (a key of the new working set that was in the window at the
 * change): neither count says anything, the victim's idleness does.  So while
 * changes recur (`churn`, policy_grow: a change confirmed within
 * SMC_GROW_WITHIN x maxsize events of the previous one, and, where ticks are
 * whole maxsizes and a scan's dip passes for a change more easily, with the
 * refusals policy_grow counts), a tie at 0 goes to the candidate when the
 * victim has had no access for SMC_STALE x maxsize events.  On the working set
 * replaced every 5 x maxsize, at 5% and 10%, the new keys tie with the phase
 * before last: 89.6% -> 89.9% (LRU 90.0%); no other cell of the
 * 1,000,000-request table changed, and the 4,000,000-request scan trace at 5%
 * gained 0.17.  Letting ties at 1 (a candidate seen once since the change) go
 * the same way gave 90.0% there, but on Zipf popularity replaced every 2 x
 * maxsize requests (50 phases, outside the benchmark's table) cost 7.4 points
 * at 10%, and (with ties at every count) without the refusals' test small
 * caches took scans for churn (the 4,000,000-request scan trace at 1%: -0.5). */
#define SMC_STALE 2

static void
policy_tick(SMCacheObject *m);

/* 1 if ticks are half of maxsize (and a change needs two confirming ticks). */
static inline int
policy_half_ticks(SMCacheObject *m)
{
    return m->maxsize / 2 >= SMC_TICK;
}

/* Events per tick. */
static inline Py_ssize_t
policy_tick_len(SMCacheObject *m)
{
    if (policy_half_ticks(m)) {
        return m->maxsize / 2;
    }
    return m->maxsize > SMC_TICK ? m->maxsize : SMC_TICK;
}

/* Count a hit (an access applied, hit = 1) or a miss (a new key, hit = 0). */
static inline void
policy_climb(SMCacheObject *m, int hit)
{
    m->tick_hits += hit;
    m->events++;
    if (--m->tick_left <= 0) {
        policy_tick(m);
    }
}

/* Move every protected entry to the eviction end of probation, in their
 * order (O(protected entries), once per popularity change). */
static void
policy_demote(SMCacheObject *m)
{
    SMCQueue *prot = &m->q[SMC_Q_PROTECTED], *prob = &m->q[SMC_Q_PROBATION];
    if (prot->head == NULL) {
        return;
    }
    for (SMCNode *n = prot->head; n != NULL; n = n->next) {
        n->queue = SMC_Q_PROBATION;
    }
    prot->tail->next = prob->head;
    if (prob->head != NULL) {
        prob->head->prev = prot->tail;
    }
    else {
        prob->tail = prot->tail;
    }
    prob->head = prot->head;
    prob->weight += prot->weight;
    prot->head = prot->tail = NULL;
    prot->weight = 0;
}

/* 1 if the tick that just ended (hit rate r) confirms a popularity change;
 * updates the detector's state. */
static int
policy_changed(SMCacheObject *m, double r)
{
    double bar = SMC_DROP_DEVS * m->drop_dev;
    bar = bar > SMC_DROP_FLOOR ? bar : SMC_DROP_FLOOR;
    if (m->drop_avg > 0) {
        double d = r - m->drop_prev;
        m->drop_dev += SMC_DROP_EWMA * ((d < 0 ? -d : d) - m->drop_dev);
    }
    double ref = m->drop_avg > m->drop_prev2 ? m->drop_avg : m->drop_prev2;
    m->drop_prev2 = m->drop_prev;
    m->drop_prev = r;
    if (m->drop_ref > 0) {
        /* The ticks after a suspected change: still low, it is one (two of
         * them when ticks are shorter than maxsize). */
        int changed = r < m->drop_ref;
        if (changed && policy_half_ticks(m) && m->drop_confirmed == 0) {
            m->drop_confirmed = 1;
            return 0;
        }
        m->drop_confirmed = 0;
        m->drop_ref = 0;
        if (changed) {
            /* Start over: the reset's own dip is not another change, and the
             * old regime's tick-to-tick changes (this drop included) say
             * nothing about the new one's noise. */
            m->drop_avg = m->drop_prev = m->drop_prev2 = m->drop_dev = 0;
        }
        return changed;
    }
    if (m->drop_avg > 0 && r < ref - bar) {
        m->drop_ref = ref - bar / 2;  /* suspected: the average waits for the next tick */
        return 0;
    }
    m->drop_avg = m->drop_avg == 0 ? r : m->drop_avg + SMC_DROP_EWMA * (r - m->drop_avg);
    return 0;
}

/* 1 if a change was confirmed less than SMC_GROW_WITHIN x maxsize events ago
 * (divided, not multiplied: no overflow). */
static inline int
policy_change_recent(SMCacheObject *m)
{
    return m->change_age > 0 && m->change_age / SMC_GROW_WITHIN < m->maxsize;
}

/* A popularity change was confirmed in a tick of `len` events in which
 * admission refused `refused` returning candidates: record whether working
 * sets are being replaced (`churn`, see SMC_STALE), and grow the window if the
 * change recurs soon and was refused in use (see SMC_GROW_WITHIN). */
static void
policy_grow(SMCacheObject *m, Py_ssize_t refused, Py_ssize_t len)
{
    int recurs = policy_change_recent(m);
    int refusing = SMC_GROW_REFUSED * refused >= len;
    m->churn = recurs && (refusing || policy_half_ticks(m));
    m->change_age = 1;  /* counting from this change */
    if (!recurs || !refusing) {
        return;
    }
    double w = (double)m->window_max + SMC_GROW * (double)m->maxsize;
    double hi = (double)(m->maxsize - 1);
    policy_set_window(m, (Py_ssize_t)((w > hi ? hi : w) + 0.5));
    m->climb_step = SMC_CLIMB_STEP * (double)m->maxsize;
}

/* The end of a tick: popularity change detection, then the climber. */
static void
policy_tick(SMCacheObject *m)
{
    Py_ssize_t len = policy_tick_len(m);
    Py_ssize_t refused = m->tick_refused;
    m->tick_refused = 0;
    if (m->tick_left < 0 || m->maxsize < 2) {
        /* The first event (tick_left starts at 0): the first tick starts. */
        m->tick_left = len;
        m->tick_hits = 0;
        return;
    }
    double r = (double)m->tick_hits / (double)len;
    m->climb_hits += m->tick_hits;
    m->climb_events += len;
    m->tick_hits = 0;
    m->tick_left = len;
    if (policy_change_recent(m)) {
        m->change_age += len;  /* stops once too old to count: no overflow */
    }
    if (policy_changed(m, r)) {
        if (m->sketch != NULL) {
            sketch_age(m, 4);
        }
        policy_demote(m);
        policy_grow(m, refused, len);
    }
    if (m->climb_events < SMC_CLIMB_SAMPLE * m->maxsize) {
        return;
    }
    double rate = (double)m->climb_hits / (double)m->climb_events;
    double change = rate - m->climb_rate;
    double amount = change >= 0 ? m->climb_step : -m->climb_step;
    double full = SMC_CLIMB_STEP * (double)m->maxsize;
    m->climb_step = (change >= SMC_CLIMB_RESTART || change <= -SMC_CLIMB_RESTART)
                        ? (amount >= 0 ? full : -full)
                        : SMC_CLIMB_DECAY * amount;
    m->climb_rate = rate;
    m->climb_hits = m->climb_events = 0;
    double w = (double)m->window_max + amount;
    double hi = (double)(m->maxsize - 1);
    w = w < 1 ? 1 : w > hi ? hi : w;
    /* Shrinking takes effect at the next insert, which moves the window's
     * overflow to probation as candidates; growing, as new entries come. */
    policy_set_window(m, (Py_ssize_t)(w + 0.5));
}

/* An access recorded by a reader (under the lock). */
static void
policy_access(SMCacheObject *m, SMCNode *n)
{
    if (n->queue == SMC_Q_NONE) {
        return;
    }
    if (m->policy == SMC_LRU) {
        q_touch(m, n);
        return;
    }
    if (n->saturated != m->epoch && sketch_increment(m, n->mix)) {
        n->saturated = m->epoch;
    }
    policy_climb(m, 1);
    n->used = m->events;
    if (n->queue == SMC_Q_WINDOW) {
        q_touch(m, n);
        return;
    }
    if (n->queue == SMC_Q_PROBATION) {
        q_unlink(m, n);
        q_push(m, SMC_Q_PROTECTED, n);
    }
    else {
        q_touch(m, n);
    }
    /* Protected overflow goes back to probation (most recent end).  The
     * head moved is not n, so it has a successor: no branch on the ends. */
    SMCQueue *prot = &m->q[SMC_Q_PROTECTED];
    while (prot->weight > m->protected_max && prot->head != n) {
        SMCNode *d = prot->head;
        prot->head = d->next;
        d->next->prev = NULL;
        prot->weight -= d->weight;
        q_push(m, SMC_Q_PROBATION, d);
    }
}

/* ------------------------------------------------------------ read rings */

static inline SMCReadBuf *
ring_of_thread(SMCacheObject *m)
{
#if SM_FREE_THREADED
    return &m->rbufs[sm_stripe() & (m->nbufs - 1)].b;
#else
    return &m->rbufs[0].b;
#endif
}

/* Bytes allocated before the rings: rings_ctl's line (free-threaded builds). */
#if SM_FREE_THREADED
#  define SMC_RINGS_EXTRA ((Py_ssize_t)sizeof(SMCRingCtl))
#else
#  define SMC_RINGS_EXTRA ((Py_ssize_t)0)
#endif

#if SM_FREE_THREADED
static inline SMCRingCtl *
rings_ctl(SMCacheObject *m)
{
    return (SMCRingCtl *)(void *)m->rbufs - 1;
}
#endif

/* The node a note names (the lock is held; ring_record encodes it): that of
 * the entry at its index in the current table, only if that entry is in use
 * by a key of the note's hash, which proves the node alive (a note holds no
 * reference; its entry may have been removed, its table replaced).  NULL
 * otherwise, also for an empty slot's 0. */
SM_ALWAYS_INLINE SMCNode *
note_node(SMCacheObject *m, SMCNote note)
{
    return (SMCNode *)sm_tb_entry_value_tagged(&m->tab, (Py_ssize_t)(note >> 32) - 1,
                                               (uint32_t)note);
}

/* Apply one note to the policy (the lock is held). */
SM_ALWAYS_INLINE void
ring_apply(SMCacheObject *m, SMCNote note)
{
    SMCNode *n = note_node(m, note);
    if (n != NULL) {
        policy_access(m, n);
    }
}

/* The note in ring rb's slot for position j (the lock is held; on
 * free-threaded builds its reader may be writing it: loaded whole). */
static inline SMCNote
ring_note(SMCReadBuf *rb, Py_ssize_t j)
{
    SMCNote *slot = &rb->slots[j & (SMC_RB_SIZE - 1)];
#if SM_FREE_THREADED
    return _Py_atomic_load_uint64_relaxed(slot);
#else
    return *slot;
#endif
}

/* Before the notes of positions [from, end) of ring rb are applied (the lock
 * is held): ask the CPU to load, for writing, the queue neighbours of each
 * node they name.  Applying a note moves its node to the end of its queue,
 * which writes both neighbours, nodes of other keys whose lines are seldom
 * in the CPU's caches: one miss after the other, a segment's worth, when
 * taken in turn, in flight together when asked for first.  The node's own
 * links were fetched when the hit was read (cache_read).  With 100,000 keys
 * (benchmarks/bench_cache.py's hit passes, GIL build, 16 runs alternating
 * the two builds; with the doorkeeper's word and the node's links also
 * fetched at the hit), the median hit went from 1.48x to 1.42x a
 * ConcurrentMap get with Zipf keys and from 1.70x to 1.61x with the keys in
 * order: a small gain, smaller than the spread of single runs (Zipf: 1.35x
 * to 1.60x before, 1.31x to 1.57x after), seen in both batches of runs.
 * GIL builds only: on a free-threaded build one thread's hits at 100,000 keys
 * showed no difference beyond the noise (1.42x-1.57x before, 1.48x-1.74x with
 * it), and two threads' runs were too noisy to tell.  And from
 * SMC_PREFETCH_FROM entries: with fewer the nodes stay in the CPU's caches and
 * the pass is only more work (with 10,000 keys the ratios were the same with
 * and without it; with 1,000, a hit of the keys in order went from 1.43x to
 * 1.48x). */
#define SMC_PREFETCH_FROM 32768

static inline void
ring_prefetch(SMCacheObject *m, SMCReadBuf *rb, Py_ssize_t from, Py_ssize_t end)
{
#if SM_FREE_THREADED
    (void)m, (void)rb, (void)from, (void)end;
#else
    if (m->count < SMC_PREFETCH_FROM) {
        return;
    }
    for (Py_ssize_t j = from; j < end; j++) {
        SMCNode *n = note_node(m, ring_note(rb, j));
        if (n != NULL) {
            __builtin_prefetch(n->prev, 1, 3);  /* NULL at a queue's end: no fault */
            __builtin_prefetch(n->next, 1, 3);
        }
    }
#endif
}

/* Drain the rings into the policy (the lock is held): the notes of the
 * positions taken since each ring's last drain, oldest first, at most a
 * ring's worth.  `own`: the ring of a reader draining on a read; the other
 * rings are then drained up to what their readers published (free-threaded
 * builds, see SMCReadBuf); NULL (a write, or GIL builds): every ring up to
 * its `tail`.  On free-threaded builds a reader may have taken a position
 * and not yet written its note: its slot still holds the note of a lap
 * before (applied again if its entry is still there, or dropped) and the new
 * note is lost -- a sample of the accesses, as when two readers share a
 * slot. */
static void
rings_drain_all(SMCacheObject *m, SMCReadBuf *own)
{
    for (Py_ssize_t b = 0; b < m->nbufs; b++) {
        SMCReadBuf *rb = &m->rbufs[b].b;
#if SM_FREE_THREADED
        Py_ssize_t end = own == NULL || rb == own
                             ? SM_LOAD_SSIZE_RELAXED(&rb->tail)
                             : _Py_atomic_load_ssize_acquire(&rb->published);
#else
        (void)own;
        Py_ssize_t end = rb->tail;
#endif
        Py_ssize_t count = end - rb->drained;
        if (count <= 0) {
            continue;  /* most rings, most of the time (< 0: drained by a write) */
        }
        count = count < SMC_RB_SIZE ? count : SMC_RB_SIZE;
        SM_STORE_SSIZE_RELAXED(&rb->drained, end);  /* its readers load it */
        ring_prefetch(m, rb, end - count, end);
        for (Py_ssize_t j = end - count; j < end; j++) {
            SMCNote note = ring_note(rb, j);
            if (note != 0) {
                ring_apply(m, note);
            }
        }
    }
}

/* Every ring, to its tail (writes; the lock is held).  Skipped on GIL builds
 * when the (single) ring has no note since the last drain: every write
 * drains once or twice, most often with nothing recorded in between. */
static inline void
rings_drain(SMCacheObject *m)
{
#if !SM_FREE_THREADED
    if (m->rbufs[0].b.tail == m->rbufs[0].b.drained) {
        return;
    }
#endif
    rings_drain_all(m, NULL);
}

static int cache_expire(SMCacheObject *m, int64_t now, SMCPend *p);

/* Release the lock taken for a write, then run what was deferred. */
static void
cache_unlock(SMCacheObject *m, SMCPend *p)
{
    HELD_DEC();
    int64_t sampled = sm_unlock_counted(&m->lock, &m->lockstats);
    if (SM_UNLIKELY(sampled)) {
        sm_report_wait(SMC_str_Cache, sampled);
    }
    pend_finish(m, p);
}

/* A reader whose note filled the last slot of a segment of its ring rb (the
 * position `end` published): drain, if the lock is free right now (never
 * wait).
 *
 * Free-threaded builds: one thread, the drainer, drains on reads; the others
 * leave their notes to it.  Applying a note writes the policy's memory (the
 * sketch, the queues' links, the hit-rate counters): drained by one thread,
 * that memory stays in its core's cache, where readers taking turns would
 * move it between cores on every drain.  A reader takes the drainer's place
 * when its own ring saw no drain at two segment ends in a row (the drainer
 * stopped reading, or shares this ring and overwrites its notes): one missed
 * segment is tolerated, since the drainer also applies every other ring's
 * notes and is the slower reader.  Deciding reads only the reader's own
 * lines and the drainer's identity, which changes only when the role moves.
 * A note overwritten before it was drained is lost, as when two readers
 * share a slot: the policy works from a sample (in one thread, every note
 * reaches it). */
static void
rings_try_drain(SMCacheObject *m, SMCReadBuf *rb, Py_ssize_t end)
{
    void *me = sm_me();
#if SM_FREE_THREADED
    _Py_atomic_store_ssize_release(&rb->published, end);
    SMCRingCtl *ctl = rings_ctl(m);
    void *drainer = _Py_atomic_load_ptr_relaxed(&ctl->drainer);
    if (drainer != me && drainer != NULL) {
        Py_ssize_t drained = SM_LOAD_SSIZE_RELAXED(&rb->drained);
        if (drained != SM_LOAD_SSIZE_RELAXED(&rb->seen_drained)) {
            SM_STORE_SSIZE_RELAXED(&rb->seen_drained, drained);
            SM_STORE_SSIZE_RELAXED(&rb->idle, 0);
            return;  /* the drainer is at work */
        }
        Py_ssize_t idle = SM_LOAD_SSIZE_RELAXED(&rb->idle) + 1;
        SM_STORE_SSIZE_RELAXED(&rb->idle, idle);
        if (idle < 2) {
            return;
        }
    }
#else
    (void)end;
#endif
    if (!sm_lock_try(&m->lock, me)) {
        return;
    }
#if SM_FREE_THREADED
    if (drainer != me) {  /* written only when it changes: every reader loads it */
        _Py_atomic_store_ptr_relaxed(&ctl->drainer, me);
    }
#endif
    SM_BUMP(&m->lockstats.acquisitions, 1);
    HELD_INC();
    SMCPend p;
    pend_init(&p);
    rings_drain_all(m, rb);
    if (m->ttl_ns != 0 && m->timer == NULL) {
        /* Expired entries leave on drains too (a Python timer is not called
         * here: it would run under the lock; writes sweep instead). */
        (void)cache_expire(m, sm_now_ns(), &p);
        PyErr_Clear();
    }
#if SM_FREE_THREADED
    SM_STORE_SSIZE_RELAXED(&rb->seen_drained, rb->drained);
    SM_STORE_SSIZE_RELAXED(&rb->idle, 0);
#endif
    cache_unlock(m, &p);
}

/* Note an access to the entry `slot` (just found by a lookup) of key hash
 * `hash`: no reference is taken. */
static inline void
ring_record(SMCacheObject *m, SMSlot *slot, Py_hash_t hash)
{
    SMCReadBuf *rb = ring_of_thread(m);
    /* With no table, index + 1 wraps to 0: an index every drain rejects. */
    SMCNote note = ((SMCNote)(uint32_t)(sm_tb_entry_index(&m->tab, slot) + 1) << 32) |
                   (uint32_t)(uint64_t)hash;
#if SM_FREE_THREADED
    Py_ssize_t pos = _Py_atomic_add_ssize(&rb->tail, 1);
    _Py_atomic_store_uint64_relaxed(&rb->slots[pos & (SMC_RB_SIZE - 1)], note);
#else
    Py_ssize_t pos = rb->tail++;
    rb->slots[pos & (SMC_RB_SIZE - 1)] = note;
#endif
    if ((pos & (SMC_RB_SEG - 1)) == SMC_RB_SEG - 1) {
        rings_try_drain(m, rb, pos + 1);
    }
}

/* -------------------------------------------------------- locking, checks */

static int
cache_txn_check(SMCacheObject *m)
{
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard))) {
        void *me = sm_me();
        if (SM_LOAD_PTR(&m->txn_owner) == me) {
            return sm_raise_recursive(MSG_TXN_REENTRY);
        }
        if (SM_LOAD_INT(&m->committing) && !sm_lock_held_by(&m->lock, me)) {
            /* A transaction is being applied under the lock: wait for it. */
            if (sm_lock_counted(&m->lock, &m->lockstats, me) < 0) {
                return -1;
            }
            int64_t sampled = sm_unlock_counted(&m->lock, &m->lockstats);
            if (SM_UNLIKELY(sampled)) {
                sm_report_wait(SMC_str_Cache, sampled);
            }
        }
    }
    return 0;
}

static int
cache_not_configured(void)
{
    PyErr_SetString(PyExc_RuntimeError, "Cache.__init__ was not called");
    return -1;
}

/* Take the lock for a write.  0, or -1 with an exception (nothing held). */
static inline int
cache_lock(SMCacheObject *m)
{
    sm_note_thread((PyObject *)m, &m->shared);
    if (SM_UNLIKELY(!m->configured)) {
        return cache_not_configured();
    }
    void *me = sm_me();
    if (SM_UNLIKELY(SM_LOAD_PTR(&m->txn_owner) == me)) {
        return sm_raise_recursive(MSG_TXN_REENTRY);
    }
    if (SM_UNLIKELY(sm_lock_held_by(&m->lock, me))) {
        return sm_raise_recursive(MSG_WRITE_REENTRY);
    }
    if (sm_lock_counted(&m->lock, &m->lockstats, me) < 0) {
        return -1;
    }
    HELD_INC();
    return 0;
}

/* ------------------------------------------------------------- removal */

/* Take live node n out of the table (the lock is held; n is its entry): the
 * table's references go to p's grave (room for one item reserved), n is marked
 * dead and emptied (node_bury): read what it holds before. */
static void
node_unpublish(SMCacheObject *m, SMCNode *n, SMCPend *p)
{
    SMPos pos;
    int found = sm_tb_find_value(&m->tab, n->hash, (PyObject *)n, &pos);
    assert(found);
    (void)found;
    PyObject *old;
    sm_tb_remove(&m->tab, &pos, &old, p->grave);  /* the key goes to the grave */
    SMC_SET_DEAD(n);
    node_bury(p, (SMCNode *)old);  /* old == n: the table's reference */
}

/* Remove live node n (in the table unless pending) from the cache, under the
 * lock.  cause: SMC_str_size / SMC_str_expired for evictions, NULL for an
 * explicit delete.  0, or -1 (MemoryError): then nothing changed. */
static int
node_remove(SMCacheObject *m, SMCNode *n, PyObject *cause, SMCPend *p)
{
    if (!n->pending && pend_reserve(p, 1) < 0) {
        return -1;
    }
    if (cause == SMC_str_size) {
        SM_BUMP(&m->evicted_size, 1);
    }
    else if (cause == SMC_str_expired) {
        SM_BUMP(&m->evicted_expired, 1);
    }
    if (cause != NULL) {
        pend_evicted(m, p, n, cause);
    }
    if (n->queue != SMC_Q_NONE) {
        q_unlink(m, n);
    }
    if (m->ttl_ns != 0) {  /* write order links nodes only with a ttl (w_push) */
        w_unlink(m, n);
    }
    m->weight -= n->weight;
    if (n->pending) {
        n->evicted = 1;
        SMC_SET_DEAD(n);
    }
    else {
        node_unpublish(m, n, p);
        SM_ADD_SSIZE(&m->count, -1);
        SM_WROTE(m->writes, deletes, 1, &m->stats);
    }
    return 0;
}

/* Remove every entry whose deadline has passed (write order is deadline
 * order: every entry gets the same ttl).  0 or -1. */
static int
cache_expire(SMCacheObject *m, int64_t now, SMCPend *p)
{
    if (m->ttl_ns == 0) {
        return 0;
    }
    while (m->whead != NULL && !m->whead->pending && now >= m->whead->expires) {
        if (node_remove(m, m->whead, SMC_str_expired, p) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Admission: 1 if the candidate replaces the victim, i.e. if the sketch says
 * it is used more often, or both estimate 0 while working sets are being
 * replaced and the victim has been idle SMC_STALE x maxsize events (see
 * SMC_STALE).  *fc: the candidate's estimate. */
static inline int
cache_admit(SMCacheObject *m, SMCNode *cand, SMCNode *victim, int *fc)
{
    int fv = sketch_frequency(m, victim->mix);
    *fc = sketch_frequency(m, cand->mix);
    if (*fc != fv || fv != 0) {
        return *fc > fv;
    }
    uint32_t idle = m->events - victim->used;
    return m->churn && policy_change_recent(m)
           && (Py_ssize_t)(idle / SMC_STALE) >= m->maxsize;
}

/* Evict until the total weight fits (the lock is held).  0 or -1. */
static int
cache_evict(SMCacheObject *m, SMCPend *p)
{
    if (!cache_bounded(m)) {
        return 0;
    }
    if (m->policy == SMC_LRU) {
        while (m->weight > m->maxsize && m->q[SMC_Q_WINDOW].head != NULL) {
            if (node_remove(m, m->q[SMC_Q_WINDOW].head, SMC_str_size, p) < 0) {
                return -1;
            }
        }
        return 0;
    }
    /* What overflows the window becomes a candidate for the main space. */
    SMCNode *cand = NULL;
    SMCQueue *win = &m->q[SMC_Q_WINDOW];
    while (win->weight > m->window_max && win->head != NULL) {
        SMCNode *n = win->head;
        q_unlink(m, n);
        q_push(m, SMC_Q_PROBATION, n);
        if (cand == NULL) {
            cand = n;
        }
    }
    while (m->weight > m->maxsize) {
        SMCNode *victim = m->q[SMC_Q_PROBATION].head;
        if (victim == NULL) {
            victim = m->q[SMC_Q_PROTECTED].head;
        }
        if (victim == NULL) {
            victim = win->head;
        }
        if (victim == NULL) {
            break;  /* unreachable: weight > 0 means some node is linked */
        }
        if (cand != NULL && cand->queue == SMC_Q_PROBATION && cand != victim) {
            int fc;
            if (cache_admit(m, cand, victim, &fc)) {
                if (node_remove(m, victim, SMC_str_size, p) < 0) {
                    return -1;
                }
            }
            else {
                /* Refused; returning (not one-time) keys count for policy_grow. */
                m->tick_refused += fc >= 2;
                SMCNode *next = cand->next;
                if (node_remove(m, cand, SMC_str_size, p) < 0) {
                    return -1;
                }
                cand = next;
            }
        }
        else {
            if (victim == cand) {
                cand = cand->next;
            }
            if (node_remove(m, victim, SMC_str_size, p) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------- writing */

/* Weigh value with the weigher.  0 or -1. */
static int
cache_weigh_call(SMCacheObject *m, PyObject *key, PyObject *value, Py_ssize_t *out)
{
    PyObject *r = PyObject_CallFunctionObjArgs(m->weigher, key, value, NULL);
    if (r == NULL) {
        return -1;
    }
    if (PyBool_Check(r) || !PyLong_Check(r)) {
        PyErr_Format(PyExc_TypeError, "the weigher must return an int, not %.100s",
                     Py_TYPE(r)->tp_name);
        Py_DECREF(r);
        return -1;
    }
    Py_ssize_t w = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (w == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (w < 0) {
        PyErr_Format(PyExc_ValueError, "the weigher returned a negative weight (%zd)", w);
        return -1;
    }
    *out = w;
    return 0;
}

/* Weigh value with the weigher (1 without one).  0 or -1. */
static inline int
cache_weigh(SMCacheObject *m, PyObject *key, PyObject *value, Py_ssize_t *out)
{
    if (m->weigher == NULL) {
        *out = 1;
        return 0;
    }
    return cache_weigh_call(m, key, value, out);
}

/* Install `value` for key (the lock is held).  old: the key's current node
 * (borrowed, live) or NULL; pos: where the lookup that found old (or found
 * the key absent) ended, under this hold of the lock.  n: a fresh node
 * (reference stolen).  Evicts first, publishes last.  0 or -1 (on -1
 * nothing was published; evictions made before a failure stand). */
static int
cache_install(SMCacheObject *m, PyObject *key, Py_hash_t hash, PyObject *value,
              Py_ssize_t weight, int64_t now, SMCNode *old, SMPos *pos, SMCNode *n,
              SMCPend *p)
{
    n->key = Py_NewRef(old != NULL ? old->key : key);  /* the table keeps the first key */
    n->value = Py_NewRef(value);
#if SM_TB_LOCKFREE
    /* Readers take it with a try-incref (cache_lookup): from now on its last
     * release goes through the path that makes a failed try-incref safe. */
    PyUnstable_EnableTryIncRef(value);
#endif
    n->hash = hash;
    n->weight = weight;
    n->expires = m->ttl_ns != 0 ? now + m->ttl_ns : INT64_MAX;
    n->pending = 1;
    if (cache_bounded(m) && weight > m->maxsize) {
        /* Can never fit: evicted at once (the old value, if any, goes too). */
        int rc = old != NULL ? node_remove(m, old, NULL, p) : 0;
        if (rc == 0) {
            SM_BUMP(&m->evicted_size, 1);
            pend_evicted(m, p, n, SMC_str_size);
            SMC_SET_DEAD(n);
        }
        pend_bury(p, (PyObject *)n);
        return rc;
    }
    if (cache_bounded(m)) {
        /* The accesses recorded so far count before a victim is chosen. */
        rings_drain(m);
    }
    if (old != NULL) {
        /* Out of the policy now; the table swaps it for n in one store below. */
        if (old->queue != SMC_Q_NONE) {
            q_unlink(m, old);
        }
        if (m->ttl_ns != 0) {
            w_unlink(m, old);
        }
        m->weight -= old->weight;
    }
    if (cache_bounded(m)) {
        if (m->policy == SMC_TINYLFU) {
            sketch_ensure(m, m->count + 1);
            n->mix = smc_mix((uint64_t)hash);  /* every node linked under "tinylfu" has it */
            (void)sketch_increment(m, n->mix);
            if (old == NULL) {
                policy_climb(m, 0);
            }
            n->used = m->events;
        }
        q_push(m, SMC_Q_WINDOW, n);
    }
    if (m->ttl_ns != 0) {
        w_push(m, n);
    }
    m->weight += weight;
    int rc = cache_evict(m, p);
    /* Evictions only removed entries (never `old`, unlinked above): pos is
     * still where the key's entry is, or where it goes. */
    if (rc == 0 && pend_reserve(p, 2) < 0) {
        rc = -1;
    }
    if (rc == 0 && n->evicted) {
        /* Not admitted: the key ends absent (its old value leaves too). */
        if (old != NULL) {
            node_unpublish(m, old, p);
            SM_ADD_SSIZE(&m->count, -1);
            SM_WROTE(m->writes, deletes, 1, &m->stats);
        }
        pend_bury(p, (PyObject *)n);
        return 0;
    }
    if (rc == 0 && old != NULL) {
        /* One store swaps the entry's node: no reader sees the key absent. */
        PyObject *prev = sm_tb_exchange_at(&m->tab, pos, (PyObject *)n);
        assert(prev == (PyObject *)old);
        n->pending = 0;
        SMC_SET_DEAD(old);
        node_bury(p, (SMCNode *)prev);
        SM_WROTE(m->writes, updates, 1, &m->stats);
        Py_DECREF(n);  /* the table holds it */
        return 0;
    }
    if (rc == 0) {
        rc = sm_tb_insert(&m->tab, pos, n->key, hash, (PyObject *)n, p->grave);
        if (rc == 0) {
            n->pending = 0;
            SM_ADD_SSIZE(&m->count, 1);
            SM_WROTE(m->writes, inserts, 1, &m->stats);
            Py_DECREF(n);  /* the table holds it */
            return 0;
        }
    }
    /* Failed: unlink n again; restore old in the policy (write order moves). */
    if (!n->evicted) {
        if (n->queue != SMC_Q_NONE) {
            q_unlink(m, n);
        }
        w_unlink(m, n);
        m->weight -= n->weight;
    }
    SMC_SET_DEAD(n);
    if (old != NULL && !SMC_IS_DEAD(old)) {
        if (cache_bounded(m)) {
            q_push(m, SMC_Q_WINDOW, old);
        }
        if (m->ttl_ns != 0) {
            w_push(m, old);
        }
        m->weight += old->weight;
    }
    pend_bury(p, (PyObject *)n);
    return -1;
}

/* The key's live node under the lock (borrowed; an expired one is removed
 * and reported absent).  1, 0 or -1; *pos says where the lookup ended (for
 * cache_install: an expired entry's removal leaves its index slot free for
 * the key). */
static inline int
cache_find_locked(SMCacheObject *m, PyObject *key, Py_hash_t hash, int64_t now,
                  SMCNode **out, SMPos *pos, SMCPend *p)
{
    *out = NULL;
    int r = sm_tb_find(&m->tab, key, hash, pos);
    if (r <= 0) {
        return r;
    }
    SMCNode *n = (SMCNode *)sm_tb_value_at(pos);
    if (node_expired(m, n, now)) {
        if (node_remove(m, n, SMC_str_expired, p) < 0) {
            return -1;
        }
        pos->entry = -1;
        return 0;
    }
    *out = n;
    return 1;
}

/* The read of cache_lookup under the lock, for a lock-free read that kept
 * restarting (free-threaded builds).  1 (*out strong), 0 or -1. */
static int
cache_lookup_locked(SMCacheObject *m, PyObject *key, Py_hash_t hash, int64_t now,
                    PyObject **out, SMCRecord *where)
{
    void *me = sm_me();
    int mine = sm_lock_held_by(&m->lock, me);  /* a compute callback's read */
    if (!mine) {
        if (sm_lock_counted(&m->lock, &m->lockstats, me) < 0) {
            return -1;
        }
        HELD_INC();
    }
    SMPos pos;
    int r = sm_tb_find(&m->tab, key, hash, &pos);
    if (r == 1) {
        SMCNode *n = (SMCNode *)sm_tb_value_at(&pos);
        if (node_expired(m, n, now)) {
            r = 0;
        }
        else {
            *out = Py_NewRef(n->value);
            where->node = n;
            where->slot = &pos.table->entries[pos.entry];
        }
    }
    if (!mine) {
        HELD_DEC();
        int64_t sampled = sm_unlock_counted(&m->lock, &m->lockstats);
        if (SM_UNLIKELY(sampled)) {
            sm_report_wait(SMC_str_Cache, sampled);
        }
    }
    return r;
}

/* The lock-free read of key (now: the cache's clock, read before when there
 * is a ttl).  1: live, *out a strong reference to its value, *where the node
 * it was read from and its place (for ring_record only: it may leave the
 * cache at any moment); 0: absent or expired; -1: error.
 *
 * The node is found without a reference (sm_tb_get_borrowed: on free-threaded
 * builds the table's removed nodes are released through QSBR, see
 * node_bury).  A node's fields are fixed while it is in the table, so its
 * value is the key's value at the instant the node was found.  Free-threaded
 * builds: the value is taken with a try-incref, then `dead` re-checked; the
 * cache marks a node dead before it releases the node's value, so a live
 * node after a successful try-incref means the reference is to that very
 * value (a freed and reused object would have been freed after the mark).
 * A node that died meanwhile is looked up again (an update replaces it
 * without an instant in which the key is absent). */
SM_ALWAYS_INLINE int
cache_lookup(SMCacheObject *m, PyObject *key, Py_hash_t hash, int64_t now, PyObject **out,
             SMCRecord *where)
{
    *out = NULL;
#if SM_FREE_THREADED && !SM_TB_LOCKFREE
    /* 3.13t has no try-incref: read under the lock. */
    return cache_lookup_locked(m, key, hash, now, out, where);
#endif
    for (int attempt = 0; attempt < 16; attempt++) {
        SMBorrowed b;
        int r = sm_tb_get_borrowed(&m->tab, key, hash, &b);
        if (r != 1) {
            if (r == SM_TB_CONTENDED) {
                break;
            }
            return r;
        }
        SMCNode *n = (SMCNode *)b.value;
        if (node_expired(m, n, now)) {
            if (b.strong) {
                Py_DECREF(n);
            }
            return 0;
        }
#if SM_TB_LOCKFREE
        PyObject *v = _Py_atomic_load_ptr_acquire(&n->value);
        int ok = v != NULL && PyUnstable_TryIncRef(v);
        if (ok && SMC_IS_DEAD(n)) {
            Py_DECREF(v);
            ok = 0;
        }
        if (b.strong) {
            Py_DECREF(n);
        }
        if (!ok) {
            continue;  /* removed or replaced since found: look again */
        }
#else
        PyObject *v = Py_NewRef(n->value);
        if (b.strong) {
            Py_DECREF(n);
        }
#endif
        *out = v;
        where->node = n;
        where->slot = b.slot;
        return 1;
    }
    return cache_lookup_locked(m, key, hash, now, out, where);
}

enum { SMC_PUT, SMC_IF_ABSENT, SMC_SWAP };

/* The writes whose value is known before the lock: store (SMC_PUT),
 * load_or_store (SMC_IF_ABSENT) and swap (SMC_SWAP).  The weigher and the
 * clock run first, with no lock held; under the lock: expire, look the key
 * up, install.  0 or -1; *prev: for SMC_IF_ABSENT and SMC_SWAP, a strong
 * reference to the live value found (NULL if the key was absent). */
SM_ALWAYS_INLINE int
cache_put(SMCacheObject *m, PyObject *key, PyObject *value, int mode, PyObject **prev)
{
    *prev = NULL;
    if (sm_check_value(value) < 0) {
        return -1;
    }
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return -1;
    }
    Py_ssize_t weight;
    int64_t now = 0;
    if (!m->configured) {
        return cache_not_configured();
    }
    if (m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return -1;
    }
    if (mode == SMC_IF_ABSENT) {
        /* A live entry is the answer at the instant of this lookup: no lock,
         * no weighing.  Still a write: refused from inside the cache's own
         * callbacks (the lock is ours), as the write it may be would be. */
        if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && cache_txn_check(m) < 0) {
            return -1;
        }
        if (SM_UNLIKELY(sm_lock_held_by(&m->lock, sm_me()))) {
            return sm_raise_recursive(MSG_WRITE_REENTRY);
        }
        SMCRecord found;
        int r = cache_lookup(m, key, hash, now, prev, &found);
        if (r != 0) {
            return r < 0 ? -1 : 0;
        }
    }
    if (cache_weigh(m, key, value, &weight) < 0) {
        return -1;
    }
#if !SM_FREE_THREADED
    if (m->sketch != NULL) {
        /* The lines the new key's count will write (cache_install), loading
         * while the node is made and the key looked up. */
        uint64_t h = smc_mix((uint64_t)hash);
        sketch_prefetch(m, h);
    }
#endif
    SMCNode *n = node_new();  /* allocated before the lock: may collect */
    if (n == NULL) {
        return -1;
    }
    if (cache_lock(m) < 0) {
        Py_DECREF(n);
        return -1;
    }
    SMCPend p;
    pend_init(&p);
    SMCNode *old;
    SMPos pos;
    int rc = cache_expire(m, now, &p);
    int r = rc < 0 ? -1 : cache_find_locked(m, key, hash, now, &old, &pos, &p);
    if (r == 1 && mode != SMC_PUT) {
        *prev = Py_NewRef(old->value);
    }
    if (r < 0) {
        rc = -1;
        pend_bury(&p, (PyObject *)n);
    }
    else if (r == 1 && (mode == SMC_IF_ABSENT || old->value == value)) {
        pend_bury(&p, (PyObject *)n);  /* present, or the very object: nothing changes */
        rc = 0;
    }
    else {
        rc = cache_install(m, key, hash, value, weight, now, r == 1 ? old : NULL, &pos, n, &p);
        if (rc < 0) {
            Py_CLEAR(*prev);
        }
    }
    cache_unlock(m, &p);
    return rc;
}

/* Inlined into store() and m[k] = v: a miss's insert makes no call to get
 * to cache_put's body. */
SM_ALWAYS_INLINE int
cache_store_impl(SMCacheObject *m, PyObject *key, PyObject *value)
{
    PyObject *prev;
    return cache_put(m, key, value, SMC_PUT, &prev);
}

/* Remove key.  1: removed (*out strong), 0: absent, -1: error. */
static int
cache_pop_impl(PyObject *op, PyObject *key, PyObject **out)
{
    SMCacheObject *m = (SMCacheObject *)op;
    *out = NULL;
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return -1;
    }
    int64_t now = 0;
    if (m->configured && m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return -1;
    }
    if (cache_lock(m) < 0) {
        return -1;
    }
    SMCPend p;
    pend_init(&p);
    SMCNode *n;
    SMPos pos;
    int r = cache_find_locked(m, key, hash, now, &n, &pos, &p);
    if (r == 1) {
        *out = Py_NewRef(n->value);
        if (node_remove(m, n, NULL, &p) < 0) {
            Py_CLEAR(*out);
            r = -1;
        }
    }
    cache_unlock(m, &p);
    return r;
}

/* ------------------------------------------------------------- reading */

/* The lock-free read every read method makes (not counted, not noted):
 * after a transaction's guard and the clock (*now: the cache's time, 0
 * without a ttl), cache_lookup.  1 (*out strong, *where), 0 or -1. */
SM_ALWAYS_INLINE int
cache_peek(SMCacheObject *m, PyObject *key, Py_hash_t hash, int64_t *now, PyObject **out,
           SMCRecord *where)
{
    *out = NULL;
    *now = 0;
    sm_note_thread((PyObject *)m, &m->shared);
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && cache_txn_check(m) < 0) {
        return -1;
    }
    /* The clock first: a Python timer runs no code between the lookup and
     * the use of the node it found. */
    if (m->ttl_ns != 0 && cache_now(m, now) < 0) {
        return -1;
    }
    return cache_lookup(m, key, hash, *now, out, where);
}

/* A point read, counted as a hit or a miss.  1 (*out strong), 0 or -1. */
SM_ALWAYS_INLINE int
cache_read(SMCacheObject *m, PyObject *key, PyObject **out)
{
    Py_hash_t hash = sm_hash(key);
    *out = NULL;
    if (hash == -1) {
        return -1;
    }
    int64_t now;
    SMCRecord where;
    int r = cache_peek(m, key, hash, &now, out, &where);
    if (r <= 0) {
        if (r == 0) {
            SM_CELL_ADD(m, &m->stats, misses, 1);
        }
        return r;
    }
    SM_CELL_ADD(m, &m->stats, hits, 1);
    if (cache_bounded(m)) {
#if !SM_FREE_THREADED
        if (m->sketch != NULL) {
            sketch_prefetch(m, where.node->mix);
        }
        /* Its queue links, which applying the note reads (ring_prefetch). */
        __builtin_prefetch(&where.node->prev, 1, 3);
#endif
        ring_record(m, where.slot, hash);
    }
    return 1;
}

static PyObject *
cache_subscript(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = cache_read((SMCacheObject *)op, key, &v);
    if (r == 0) {
        sm_key_error(key);
    }
    return v;
}

static int
cache_contains(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = cache_read((SMCacheObject *)op, key, &v);
    Py_XDECREF(v);
    return r;
}

static PyObject *
cache_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("get", nargs, 1, 2) < 0) {
        return NULL;
    }
    PyObject *v;
    int r = cache_read((SMCacheObject *)op, args[0], &v);
    if (r == 0) {
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    }
    return v;
}

static int
cache_read_op(PyObject *op, PyObject *key, PyObject **out)
{
    return cache_read((SMCacheObject *)op, key, out);
}

/* Each load counted (loads, load_failures: _count_load). */
static PyObject *
cache_get_or_compute(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return sm_get_or_compute_method(op, args, nargsf, kwnames, cache_read_op,
                                    (PyCFunction)(void (*)(void))cache_get, 1);
}

static PyObject *
cache_load(PyObject *op, PyObject *key)
{
    PyObject *v;
    int r = cache_read((SMCacheObject *)op, key, &v);
    if (r < 0) {
        return NULL;
    }
    return sm_pair(v, r);
}

static int
cache_ass_subscript(PyObject *op, PyObject *key, PyObject *value)
{
    SMCacheObject *m = (SMCacheObject *)op;
    if (value != NULL) {
        return cache_store_impl(m, key, value);
    }
    PyObject *old;
    int r = cache_pop_impl(op, key, &old);
    if (r == 0) {
        sm_key_error(key);
        return -1;
    }
    Py_XDECREF(old);
    return r < 0 ? -1 : 0;
}

static PyObject *
cache_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (sm_nargs("store", nargs, 2, 2) < 0) {
        return NULL;
    }
    if (cache_store_impl((SMCacheObject *)op, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* (found value, True) or (value, False) for load_or_store; (previous, True)
 * or (None, False) for swap. */
static PyObject *
cache_put_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs, int mode)
{
    if (sm_nargs(mode == SMC_SWAP ? "swap" : "load_or_store", nargs, 2, 2) < 0) {
        return NULL;
    }
    PyObject *prev;
    if (cache_put((SMCacheObject *)op, args[0], args[1], mode, &prev) < 0) {
        return NULL;
    }
    if (prev != NULL) {
        return sm_pair(prev, 1);
    }
    return sm_pair(mode == SMC_SWAP ? NULL : Py_NewRef(args[1]), 0);
}

static PyObject *
cache_load_or_store(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return cache_put_method(op, args, nargs, SMC_IF_ABSENT);
}

static PyObject *
cache_swap(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return cache_put_method(op, args, nargs, SMC_SWAP);
}

static PyObject *
cache_load_and_delete(PyObject *op, PyObject *key)
{
    return sm_load_and_delete_method(op, key, cache_pop_impl);
}

static PyObject *
cache_delete(PyObject *op, PyObject *key)
{
    return sm_delete_method(op, key, cache_pop_impl);
}

static PyObject *
cache_pop(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_pop_method(op, args, nargs, cache_pop_impl);
}

/* The compute family: compute, compute_if_absent, compute_if_present and
 * merge (mode SM_*).  The callback runs holding the lock.
 *
 * Whenever the call finds the key present and leaves its entry as it was
 * (compute_if_absent on a present key, a callback returning the very value
 * stored), that is a use of the entry: the policy is told, as for a hit, so
 * that a cache read through compute_if_absent keeps what it reads.  (The
 * statistics' hits and misses count point reads only, as for every map.)
 * compute_if_absent on a present key and compute_if_present on an absent one
 * are answered by a lock-free read first, as a point read would be: so they
 * are answered from inside a compute callback too, like every other read. */
static PyObject *
cache_compute_impl(PyObject *op, PyObject *key, Py_hash_t hash, PyObject *fn, PyObject *mval,
                   int mode)
{
    SMCacheObject *m = (SMCacheObject *)op;
    int64_t now = 0;
    if (mode == SM_IF_ABSENT || mode == SM_IF_PRESENT) {
        /* The lock-free answer, at the instant of the read. */
        PyObject *v;
        SMCRecord where;
        int found = cache_peek(m, key, hash, &now, &v, &where);
        if (found == 1 && mode == SM_IF_ABSENT && cache_bounded(m)) {
            ring_record(m, where.slot, hash);  /* answered here: a use */
        }
        int r = sm_compute_read_answers(mode, found, &v);
        if (r != 0) {
            return r > 0 ? v : NULL;
        }
    }
    else if (m->configured && m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return NULL;
    }
    SMCNode *n = node_new();
    if (n == NULL) {
        return NULL;
    }
    if (cache_lock(m) < 0) {
        Py_DECREF(n);
        return NULL;
    }
    SMCPend p;
    pend_init(&p);
    PyObject *result = NULL;
    SMCNode *old = NULL;
    SMPos pos;
    int r = cache_expire(m, now, &p);
    if (r == 0) {
        r = cache_find_locked(m, key, hash, now, &old, &pos, &p);
    }
    if (r < 0) {
        goto done;
    }
    /* Keep the old value alive through the callback (it is fn's argument). */
    PyObject *oldv = r == 1 ? Py_NewRef(old->value) : NULL;
    PyObject *nv;
    int c = sm_compute_call(mode, key, oldv, fn, mval, &nv);
    if (oldv != NULL) {
        pend_bury(&p, oldv);
    }
    if (c < 0) {
        goto done;
    }
    /* The callback may have read the cache; the lock kept every writer out,
     * so `old` is still the key's node and pos still where its entry is. */
    if (c == 0 || nv == SM_DELETE) {
        if (c == 0) {
            result = nv;  /* no call: the present value, or None */
        }
        else {
            Py_DECREF(nv);
            if (old != NULL && node_remove(m, old, NULL, &p) < 0) {
                goto done;
            }
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    else if (old == NULL || old->value != nv) {
        Py_ssize_t weight;
        if (cache_weigh(m, key, nv, &weight) < 0) {
            Py_DECREF(nv);
            goto done;
        }
        SMCNode *fresh = n;
        n = NULL;
        if (cache_install(m, key, hash, nv, weight, now, old, &pos, fresh, &p) < 0) {
            Py_DECREF(nv);
            goto done;
        }
        result = nv;
        goto done;
    }
    else {
        result = nv;  /* the value stored: the entry stays */
    }
    if (old != NULL && cache_bounded(m)) {
        /* A use of the entry left as it was (see above); the notes taken
         * before it first, so the policy sees the accesses in order. */
        rings_drain(m);
        policy_access(m, old);
    }
done:
    if (n != NULL) {
        pend_bury(&p, (PyObject *)n);
    }
    cache_unlock(m, &p);
    return result;
}

static PyObject *
cache_compute(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_COMPUTE, cache_compute_impl);
}

static PyObject *
cache_compute_if_absent(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_IF_ABSENT, cache_compute_impl);
}

static PyObject *
cache_compute_if_present(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_IF_PRESENT, cache_compute_impl);
}

static PyObject *
cache_merge(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_compute_method(op, args, nargs, SM_MERGE, cache_compute_impl);
}

/* ------------------------------------------------------- whole-map reads */

/* The entries live at `now`, counted under the lock without removing the
 * expired ones (a compute callback, a transaction: removal would change the
 * cache under them). */
static Py_ssize_t
cache_count_live(SMCacheObject *m, int64_t now)
{
    Py_ssize_t n = m->count;
    for (SMCNode *w = m->whead; w != NULL && now >= w->expires; w = w->wnext) {
        n -= !w->pending;
    }
    return n;
}

static Py_ssize_t
cache_length(PyObject *op)
{
    SMCacheObject *m = (SMCacheObject *)op;
    sm_note_thread(op, &m->shared);
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && cache_txn_check(m) < 0) {
        return -1;
    }
    if (m->ttl_ns == 0) {
        return SM_LOAD_SSIZE(&m->count);
    }
    /* Expired entries are not counted: sweep them first. */
    int64_t now;
    if (cache_now(m, &now) < 0) {
        return -1;
    }
    if (sm_lock_held_by(&m->lock, sm_me())) {
        return cache_count_live(m, now);  /* inside a compute callback */
    }
    if (cache_lock(m) < 0) {
        return -1;
    }
    SMCPend p;
    pend_init(&p);
    int rc = cache_expire(m, now, &p);
    Py_ssize_t n = m->count;
    cache_unlock(m, &p);
    return rc < 0 ? -1 : n;
}

/* Copy the live (key, value) pairs into buf: a copy of the table's (key,
 * node) pairs, then each node replaced by its value (expired ones dropped).
 * `exact`: the copy is of one instant (snapshot): on free-threaded builds it is
 * made holding the lock, since a lock-free copy there is only weakly
 * consistent (each pair present when copied, and none of the entries inserted
 * after it started: never more than maxsize, no key twice; see
 * sm_tb_collect).  On GIL builds the copy runs no Python code: exact. */
static int
cache_collect(SMCacheObject *m, SMBuf *buf, int exact)
{
    int64_t now = 0;
    if (m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return -1;
    }
    /* A transaction's commit is several table writes: one copy could fall
     * between two of them.  The copy is kept only if `version` was even before it
     * and unchanged after it; otherwise wait for the commit (its thread holds the
     * lock until the end) and copy again.  A thread holding the lock itself (a
     * compute callback, the transaction's own reads) excludes every writer. */
    void *me = sm_me();
    int exclusive = sm_lock_held_by(&m->lock, me);
    int locked = 0;
#if SM_FREE_THREADED
#  if !SM_TB_LOCKFREE
    exact = 1;  /* 3.13t has no try-incref: nodes are read under the lock */
#  endif
    if (exact && !exclusive) {
        if (sm_lock_counted(&m->lock, &m->lockstats, me) < 0) {
            return -1;
        }
        HELD_INC();
        locked = exclusive = 1;
    }
#else
    (void)exact;
#endif
    SMBuf raw = {NULL, 0, 0};
    Py_ssize_t start = buf->n;
    int rc = 0;
    for (;;) {
        Py_ssize_t v = exclusive ? 0 : SM_LOAD_SSIZE(&m->version);
        if (v & 1) {
            if (sm_lock_counted(&m->lock, &m->lockstats, me) < 0) {
                return -1;
            }
            int64_t sampled = sm_unlock_counted(&m->lock, &m->lockstats);
            if (SM_UNLIKELY(sampled)) {
                sm_report_wait(SMC_str_Cache, sampled);
            }
            continue;
        }
        if (sm_tb_collect(&m->tab, &raw) < 0 || sm_buf_reserve(buf, start + raw.n) < 0) {
            rc = -1;
            break;
        }
        /* Each node replaced by its value, inside the window the version
         * check covers. */
        for (Py_ssize_t i = 0; rc == 0 && i < raw.n; i += 2) {
            SMCNode *n = (SMCNode *)raw.items[i + 1];
            if (node_expired(m, n, now)) {
                continue;
            }
#if SM_TB_LOCKFREE
            /* raw holds the node, but its value is taken out of it when it
             * leaves the cache (node_bury): take the value as cache_lookup
             * does; if the node left since it was copied (an update replaces
             * it), read the key again. */
            PyObject *val = _Py_atomic_load_ptr_acquire(&n->value);
            if (val != NULL && !PyUnstable_TryIncRef(val)) {
                val = NULL;
            }
            if (val != NULL && SMC_IS_DEAD(n)) {
                Py_CLEAR(val);
            }
            if (val == NULL) {
                SMCRecord again;
                int r = cache_lookup(m, raw.items[i], n->hash, now, &val, &again);
                if (r <= 0) {
                    rc = r;  /* -1, or 0: gone since the copy */
                    continue;
                }
            }
#else
            PyObject *val = Py_NewRef(n->value);
#endif
            buf->items[buf->n++] = Py_NewRef(raw.items[i]);
            buf->items[buf->n++] = val;
        }
        sm_buf_clear(&raw);
        if (rc < 0 || exclusive || SM_LOAD_SSIZE(&m->version) == v) {
            break;
        }
        while (buf->n > start) {  /* a commit ran meanwhile: copy again */
            Py_DECREF(buf->items[--buf->n]);
        }
    }
    if (locked) {
        HELD_DEC();
        int64_t sampled = sm_unlock_counted(&m->lock, &m->lockstats);
        if (SM_UNLIKELY(sampled)) {
            sm_report_wait(SMC_str_Cache, sampled);
        }
    }
    sm_buf_clear(&raw);
    return rc;
}

static int
cache_fill(PyObject *owner, Py_ssize_t index, SMBuf *buf)
{
    SMCacheObject *m = (SMCacheObject *)owner;
    if (index > 0) {
        return 0;
    }
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && cache_txn_check(m) < 0) {
        return -1;
    }
    return cache_collect(m, buf, 0) < 0 ? -1 : 1;
}

static PyObject *
cache_iter_common(SMCacheObject *m, int kind)
{
    return sm_map_iter((PyObject *)m, &m->guard, &m->txn_owner, MSG_TXN_REENTRY, &m->stats,
                       cache_fill, kind);
}

static PyObject *
cache_iter(PyObject *op)
{
    return cache_iter_common((SMCacheObject *)op, SM_ITER_KEYS);
}

static PyObject *
cache_iter_items(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return cache_iter_common((SMCacheObject *)op, SM_ITER_ITEMS);
}

static PyObject *
cache_snapshot(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    if (SM_UNLIKELY(SM_LOAD_INT(&m->guard)) && cache_txn_check(m) < 0) {
        return NULL;
    }
    SMBuf buf = {NULL, 0, 0};
    if (cache_collect(m, &buf, 1) < 0) {
        sm_buf_clear(&buf);
        return NULL;
    }
    return sm_buf_snapshot(&buf);
}

/* clear(): one store empties the table (atomic for readers); the nodes are
 * released after the unlock.  Not an eviction: on_evict is not called. */
static PyObject *
cache_clear_impl(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    if (cache_lock(m) < 0) {
        return NULL;
    }
    SMCPend p;
    pend_init(&p);
    SMTable *t = m->tab.table;
    Py_ssize_t removed = t != NULL ? t->used : 0;
    /* Room for what the nodes hold too (node_bury), so nothing fails below. */
    if (sm_grave_reserve(p.grave, 4 * removed + 1) < 0) {
        cache_unlock(m, &p);
        return NULL;
    }
    /* The table empties in one store (sm_tb_clear_delayed: the nodes go
     * through QSBR like node_bury's); each node is marked dead first, and on
     * free-threaded builds its key and value are taken out of it, for release
     * at once after the unlock. */
    for (Py_ssize_t e = 0; t != NULL && e < t->nentries; e++) {
        if (t->entries[e].key == NULL) {
            continue;
        }
        SMCNode *n = (SMCNode *)t->entries[e].value;
        SMC_SET_DEAD(n);
#if SM_FREE_THREADED
        PyObject *v = n->value;
        sm_grave_push(p.grave, n->key);
        sm_grave_push(p.grave, v);
        n->key = NULL;
        _Py_atomic_store_ptr_release(&n->value, NULL);
#endif
    }
    int rc = sm_tb_clear_delayed(&m->tab, p.grave);  /* reserved above: cannot fail */
    assert(rc == 0);
    (void)rc;
    for (int q = 0; q < SMC_NQ; q++) {
        m->q[q].head = m->q[q].tail = NULL;
        m->q[q].weight = 0;
    }
    m->whead = m->wtail = NULL;
    m->weight = 0;
    SM_STORE_SSIZE_RELAXED(&m->count, 0);
    if (removed > 0) {
        SM_WROTE(m->writes, deletes, removed, &m->stats);
    }
    cache_unlock(m, &p);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------- transactions */

/* The transaction's storage (sm_glue.h) reads and writes the cache under its
 * lock, which the thread running the transaction holds.  Readers of single
 * keys wait while `committing`; whole-cache reads see `version` odd from the
 * commit's first write to cache_txn_end (cache_collect). */

/* The key's live value (an expired entry is absent). */
static int
cache_txn_get(PyObject *map, PyObject *key, Py_hash_t hash, PyObject **v)
{
    SMCacheObject *m = (SMCacheObject *)map;
    *v = NULL;
    int64_t now = 0;
    if (m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return -1;
    }
    SMPos pos;  /* the transaction's thread holds the lock */
    int r = sm_tb_find(&m->tab, key, hash, &pos);
    if (r <= 0) {
        return r;
    }
    SMCNode *n = (SMCNode *)sm_tb_value_at(&pos);
    if (node_expired(m, n, now)) {
        return 0;
    }
    *v = Py_NewRef(n->value);
    return 1;
}

/* One change of the commit.  Its evictions (the bound holds after each write)
 * are kept in m->txn_evicted for on_evict after the unlock; what it drops goes
 * to the storage's grave, released by cache_txn_end after the unlock. */
static int
cache_txn_set(SMTxnStorage *t, PyObject *key, Py_hash_t hash, PyObject *value)
{
    SMCacheObject *m = (SMCacheObject *)t->map;
    int64_t now = 0;
    if (m->ttl_ns != 0 && m->timer == NULL) {
        now = sm_now_ns();
    }
    else if (m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return -1;
    }
    Py_ssize_t weight = 1;
    if (value != NULL && (sm_check_value(value) < 0 || cache_weigh(m, key, value, &weight) < 0)) {
        return -1;
    }
    SMCNode *n = value != NULL ? node_new() : NULL;
    if (value != NULL && n == NULL) {
        return -1;
    }
    if (!m->committing) {
        SM_ADD_SSIZE(&m->version, 1);  /* odd: the commit's first write follows */
        SM_STORE_INT(&m->committing, 1);
    }
    SMCPend p;
    pend_init(&p);
    p.grave = &t->grave;
    p.evicted = m->txn_evicted;
    SMCNode *old;
    SMPos pos;
    int r = cache_find_locked(m, key, hash, now, &old, &pos, &p);
    int rc = r;  /* -1: error; 0: a delete of an absent key; else 1 */
    if (r >= 0 && value == NULL) {
        if (r == 1 && node_remove(m, old, NULL, &p) < 0) {
            rc = -1;
        }
    }
    else if (r >= 0) {
        rc = 1;
        if (r == 0 || old->value != value) {
            if (cache_install(m, key, hash, value, weight, now, r == 1 ? old : NULL, &pos, n,
                              &p) < 0) {
                rc = -1;
            }
            n = NULL;
        }
    }
    if (n != NULL) {
        pend_bury(&p, (PyObject *)n);
    }
    m->txn_evicted = p.evicted;
    return rc;
}

static Py_ssize_t
cache_txn_length(PyObject *map)
{
    SMCacheObject *m = (SMCacheObject *)map;
    if (m->ttl_ns == 0) {
        return m->count;
    }
    int64_t now;
    if (cache_now(m, &now) < 0) {
        return -1;
    }
    return cache_count_live(m, now);
}

static int
cache_txn_collect(PyObject *map, SMBuf *buf)
{
    return cache_collect((SMCacheObject *)map, buf, 1);
}

static const SMTxnOps cache_txn_ops = {cache_txn_get, cache_txn_set, cache_txn_length,
                                       cache_txn_collect};

static int
cache_txn_lock(PyObject *op)
{
    return cache_lock((SMCacheObject *)op);
}

static PyObject *
cache_txn_begin(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    return sm_txn_begin(&SMCacheStorage_Type, op, &m->txn_owner, &m->guard, &cache_txn_ops,
                        cache_txn_lock);
}

static PyObject *
cache_txn_end(PyObject *op, PyObject *arg)
{
    SMCacheObject *m = (SMCacheObject *)op;
    SMTxnStorage *t = sm_txn_close(&SMCacheStorage_Type, op, arg);
    if (t == NULL) {
        return NULL;
    }
    if (m->committing) {
        SM_ADD_SSIZE(&m->version, 1);  /* even: every commit write is done */
        SM_STORE_INT(&m->committing, 0);
    }
    SM_STORE_INT(&m->guard, 0);
    SMCPend p;
    pend_init(&p);
    p.evicted = m->txn_evicted;  /* on_evict runs in cache_unlock, after the unlock */
    m->txn_evicted = (SMBuf){NULL, 0, 0};
    cache_unlock(m, &p);
    sm_txn_release(t);
    Py_RETURN_NONE;
}

static PyObject *
cache_transact(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    return sm_txn_run(op, args, nargs, cache_txn_begin, cache_txn_end);
}

/* ------------------------------------------------------------ statistics */

static PyObject *
cache_stats_raw(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    SMWrites w = {0, 0, 0, 0};
    sm_writes_add(&w, &m->writes);
    Py_ssize_t calls = 0;
    for (Py_ssize_t b = 0; b < m->nbufs; b++) {
        calls += SM_LOAD_SSIZE_RELAXED(&m->rbufs[b].b.calls);
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        return NULL;
    }
    if (sm_set_n(d, "calls", calls) < 0 || sm_set_n(d, "size", SM_LOAD_SSIZE(&m->count)) < 0 ||
        sm_set_n(d, "evictions_size", SM_LOAD_SSIZE_RELAXED(&m->evicted_size)) < 0 ||
        sm_set_n(d, "evictions_expired", SM_LOAD_SSIZE_RELAXED(&m->evicted_expired)) < 0 ||
        sm_set_n(d, "loads", SM_LOAD_SSIZE_RELAXED(&m->loads)) < 0 ||
        sm_set_n(d, "load_failures", SM_LOAD_SSIZE_RELAXED(&m->load_failures)) < 0 ||
        sm_stats_into(d, &w, &m->stats) < 0 || sm_lock_stats_into(d, &m->lockstats) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* _count_load(ok): one load of get_or_compute finished (ok) or raised. */
void
sm_cache_count_load(PyObject *op, int ok)
{
    SMCacheObject *m = (SMCacheObject *)op;
#if SM_FREE_THREADED
    (void)_Py_atomic_add_ssize(ok ? &m->loads : &m->load_failures, 1);
#else
    if (ok) {
        m->loads++;
    }
    else {
        m->load_failures++;
    }
#endif
}

static PyObject *
cache_count_load(PyObject *op, PyObject *ok)
{
    int t = PyObject_IsTrue(ok);
    if (t < 0) {
        return NULL;
    }
    sm_cache_count_load(op, t);
    Py_RETURN_NONE;
}

/* _frequency(key): the sketch's estimate for key (tests, diagnostics). */
static PyObject *
cache_frequency(PyObject *op, PyObject *key)
{
    SMCacheObject *m = (SMCacheObject *)op;
    Py_hash_t hash = sm_hash(key);
    if (hash == -1) {
        return NULL;
    }
    if (cache_lock(m) < 0) {
        return NULL;
    }
    int f = m->sketch != NULL ? sketch_frequency(m, smc_mix((uint64_t)hash)) : 0;
    SMCPend p;
    pend_init(&p);
    cache_unlock(m, &p);
    return PyLong_FromLong(f);
}

/* _window(): the window's current bound (tests, diagnostics). */
static PyObject *
cache_window(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    if (cache_lock(m) < 0) {
        return NULL;
    }
    Py_ssize_t w = m->window_max;
    SMCPend p;
    pend_init(&p);
    cache_unlock(m, &p);
    return PyLong_FromSsize_t(w);
}

/* One call of a @cached function, for cache_info(): counted in the calling
 * thread's ring (striped like the rings themselves). */
static inline void
count_call(SMCacheObject *m)
{
#if SM_FREE_THREADED
    (void)_Py_atomic_add_ssize(&ring_of_thread(m)->calls, 1);
#else
    ring_of_thread(m)->calls++;
#endif
}

/* _count_call(): one call of a @cached function (striped like the rings). */
static PyObject *
cache_count_call(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    count_call((SMCacheObject *)op);
    Py_RETURN_NONE;
}

/* The rings' content, drained now (tests: make the policy see every recorded
 * access before checking it). */
static PyObject *
cache_maintain(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    int64_t now = 0;
    if (m->ttl_ns != 0 && cache_now(m, &now) < 0) {
        return NULL;
    }
    if (cache_lock(m) < 0) {
        return NULL;
    }
    SMCPend p;
    pend_init(&p);
    rings_drain(m);
    int rc = cache_expire(m, now, &p);
    cache_unlock(m, &p);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
cache_options(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    return Py_BuildValue("{sOsOsOsOsOsO}", "maxsize", m->maxsize_obj ? m->maxsize_obj : Py_None,
                         "ttl", m->ttl_obj ? m->ttl_obj : Py_None, "weigher",
                         m->weigher ? m->weigher : Py_None, "policy",
                         m->policy_obj ? m->policy_obj : Py_None, "on_evict",
                         m->on_evict ? m->on_evict : Py_None, "timer",
                         m->timer ? m->timer : Py_None);
}

static PyObject *
cache_sizeof(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    SMCacheObject *m = (SMCacheObject *)op;
    Py_ssize_t dsize = sm_tb_sizeof(&m->tab);
    Py_ssize_t n = Py_TYPE(op)->tp_basicsize + dsize +
                   m->nbufs * (Py_ssize_t)sizeof(SMCReadBufSlot) + SMC_RINGS_EXTRA +
                   5 * (m->width / 16) * (Py_ssize_t)sizeof(uint64_t) +  /* sketch, doorkeeper */
                   SM_LOAD_SSIZE(&m->count) * (Py_ssize_t)sizeof(SMCNode);
    return PyLong_FromSsize_t(n);
}

/* ------------------------------------------------------------ lifecycle */

static void
cache_after_fork(SMNode *node, void *me)
{
    SMCacheObject *m = (SMCacheObject *)((char *)node - offsetof(SMCacheObject, node));
    (void)sm_lock_after_fork(&m->lock, me);
    sm_tb_after_fork(&m->tab);
    if (m->txn_owner != me) {
        m->txn_owner = NULL;
        m->guard = 0;
        m->committing = 0;
        m->version += m->version & 1;  /* a commit cut short by fork: no one waits */
    }
}

static PyObject *
cache_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    SMCacheObject *m = (SMCacheObject *)type->tp_alloc(type, 0);
    if (m == NULL) {
        return NULL;
    }
    m->maxsize = -1;
    if (sm_stats_init(&m->stats) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#if SM_FREE_THREADED
    m->nbufs = sm_nstripes;
#else
    m->nbufs = 1;
#endif
    size_t ctl = (size_t)SMC_RINGS_EXTRA;
    m->rbufs_alloc = PyMem_Calloc(1, ctl + (size_t)m->nbufs * sizeof(SMCReadBufSlot) + SM_LINE);
    if (m->rbufs_alloc == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    uintptr_t a = ((uintptr_t)m->rbufs_alloc + SM_LINE - 1) & ~(uintptr_t)(SM_LINE - 1);
    m->rbufs = (SMCReadBufSlot *)(a + ctl);
    sm_register(&m->node, cache_after_fork);
    return (PyObject *)m;
}

/* Parse and set the options (once, from __init__). */
static int
cache_configure(SMCacheObject *m, PyObject *maxsize, PyObject *ttl, PyObject *weigher,
                PyObject *policy, PyObject *on_evict, PyObject *timer)
{
    Py_ssize_t max = -1;
    if (maxsize != NULL && maxsize != Py_None) {
        if (PyBool_Check(maxsize) || !PyLong_Check(maxsize)) {
            PyErr_Format(PyExc_TypeError, "maxsize must be an int or None, not %.100s",
                         Py_TYPE(maxsize)->tp_name);
            return -1;
        }
        max = PyLong_AsSsize_t(maxsize);
        if (max == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (max < 0) {
            PyErr_Format(PyExc_ValueError, "maxsize must be >= 0 or None, got %zd", max);
            return -1;
        }
    }
    int pol = SMC_TINYLFU;
    if (policy != NULL && policy != Py_None) {
        if (PyUnicode_Check(policy) && PyUnicode_CompareWithASCIIString(policy, "lru") == 0) {
            pol = SMC_LRU;
        }
        else if (!PyUnicode_Check(policy) ||
                 PyUnicode_CompareWithASCIIString(policy, "tinylfu") != 0) {
            PyErr_Format(PyExc_ValueError, "policy must be 'tinylfu' or 'lru', not %R", policy);
            return -1;
        }
    }
    int64_t ttl_ns = 0;
    if (ttl != NULL && ttl != Py_None) {
        double s = PyFloat_AsDouble(ttl);
        if (s == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        if (!(s > 0) || s > 1e9) {
            PyErr_Format(PyExc_ValueError, "ttl must be a number of seconds > 0, got %R", ttl);
            return -1;
        }
        ttl_ns = (int64_t)(s * 1e9);
        if (ttl_ns < 1) {
            ttl_ns = 1;
        }
    }
    for (int i = 0; i < 3; i++) {
        PyObject *f = i == 0 ? weigher : i == 1 ? on_evict : timer;
        if (f != NULL && f != Py_None && !PyCallable_Check(f)) {
            PyErr_Format(PyExc_TypeError, "%s must be callable or None",
                         i == 0 ? "weigher" : i == 1 ? "on_evict" : "timer");
            return -1;
        }
    }
    if (max >= 0 && pol == SMC_TINYLFU) {
        /* 4 rows of SMC_CPR x maxsize counters (rounded up to a power of
         * two), so that collisions rarely lift a one-time key's estimate. */
        Py_ssize_t cap = max < ((Py_ssize_t)1 << 22) ? max : ((Py_ssize_t)1 << 22);
        Py_ssize_t width = 64;
        while (width < SMC_CPR * cap) {
            width *= 2;
        }
        /* The sketch starts small and grows with the entries (sketch_ensure):
         * a large, mostly empty cache does not pay for it up front. */
        m->width_max = width;
        m->width = 64;
        m->epoch = 1;  /* a new node's `saturated` (0) is no epoch */
        m->sketch = sketch_alloc(m->width, &m->sketch_mem);
        if (m->sketch == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        m->door = PyMem_Calloc((size_t)(m->width / 16), sizeof(uint64_t));
        if (m->door == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        m->maxsize = max;
        sketch_set_width(m, m->width);
        policy_set_window(m, max / 100 > 1 ? max / 100 : 1);
        m->climb_step = -SMC_CLIMB_STEP * (double)max;
        /* The start counts as a change (nothing is learned yet): the first
         * change confirmed soon after it is a recurring one (SMC_GROW_WITHIN). */
        m->change_age = 1;
    }
    else {
        m->window_max = max;
        m->protected_max = 0;
    }
    m->maxsize = max;
    m->policy = pol;
    m->ttl_ns = ttl_ns;
#define SMC_OPT(field, v) m->field = (v) != NULL && (v) != Py_None ? Py_NewRef(v) : NULL
    SMC_OPT(maxsize_obj, maxsize);
    SMC_OPT(ttl_obj, ttl);
    SMC_OPT(weigher, weigher);
    SMC_OPT(on_evict, on_evict);
    SMC_OPT(timer, timer);
    m->policy_obj = PyUnicode_FromString(pol == SMC_LRU ? "lru" : "tinylfu");
#undef SMC_OPT
    if (m->policy_obj == NULL) {
        return -1;
    }
    m->configured = 1;
    return 0;
}

static const char *const cache_options_names[] = {"maxsize", "ttl", "weigher", "policy",
                                                  "on_evict", "timer"};

static int
cache_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    SMCacheObject *m = (SMCacheObject *)op;
    if (PyTuple_GET_SIZE(args) > 1) {
        PyErr_Format(PyExc_TypeError, "%.100s expected at most 1 positional argument, got %zd",
                     Py_TYPE(op)->tp_name, PyTuple_GET_SIZE(args));
        return -1;
    }
    PyObject *first = PyTuple_GET_SIZE(args) ? PyTuple_GET_ITEM(args, 0) : NULL;
    PyObject *opt[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    PyObject *items = NULL;  /* keyword items, minus the options */
    int given = 0, rc = -1;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        items = PyDict_Copy(kwds);
        if (items == NULL) {
            return -1;
        }
        for (int i = 0; i < 6; i++) {
            PyObject *v = PyDict_GetItemString(items, cache_options_names[i]); /* borrowed */
            if (v != NULL) {
                opt[i] = Py_NewRef(v);
                given = 1;
                if (PyDict_DelItemString(items, cache_options_names[i]) < 0) {
                    goto done;
                }
            }
        }
        if (PyDict_GET_SIZE(items) == 0) {
            Py_CLEAR(items);
        }
    }
    if (first != NULL && PyLong_Check(first) && !PyBool_Check(first)) {
        /* Cache(128): a positional int is maxsize (no mapping is an int). */
        if (opt[0] != NULL) {
            PyErr_SetString(PyExc_TypeError, "Cache() got maxsize twice");
            goto done;
        }
        opt[0] = Py_NewRef(first);
        first = NULL;
        given = 1;
    }
    if (!m->configured) {
        if (cache_configure(m, opt[0], opt[1], opt[2], opt[3], opt[4], opt[5]) < 0) {
            goto done;
        }
    }
    else if (given) {
        PyErr_SetString(PyExc_TypeError, "a Cache's options are set when it is made");
        goto done;
    }
    rc = 0;
    if (first != NULL || items != NULL) {
        /* The protocol's update (mappings, pairs, keys()). */
        PyObject *callargs = first ? PyTuple_Pack(2, op, first) : PyTuple_Pack(1, op);
        PyObject *r = callargs ? PyObject_Call(SM_abc_update, callargs, items) : NULL;
        Py_XDECREF(callargs);
        if (r == NULL) {
            rc = -1;
        }
        Py_XDECREF(r);
    }
done:
    for (int i = 0; i < 6; i++) {
        Py_XDECREF(opt[i]);
    }
    Py_XDECREF(items);
    return rc;
}

static int
cache_traverse(PyObject *op, visitproc visit, void *arg)
{
    SMCacheObject *m = (SMCacheObject *)op;
    if (sm_tb_traverse(&m->tab, visit, arg) < 0) {
        return -1;
    }
    Py_VISIT(m->weigher);
    Py_VISIT(m->on_evict);
    Py_VISIT(m->timer);
    Py_VISIT(m->ttl_obj);
    Py_VISIT(m->maxsize_obj);
    return 0;
}

static int
cache_tp_clear(PyObject *op)
{
    /* Break cycles: empty the cache (it stays usable, empty). */
    SMCacheObject *m = (SMCacheObject *)op;
    for (int q = 0; q < SMC_NQ; q++) {
        m->q[q].head = m->q[q].tail = NULL;
        m->q[q].weight = 0;
    }
    m->whead = m->wtail = NULL;
    m->weight = 0;
    SM_STORE_SSIZE_RELAXED(&m->count, 0);
    sm_tb_fini(&m->tab);  /* unreachable: no reader is left */
    Py_CLEAR(m->weigher);
    Py_CLEAR(m->on_evict);
    Py_CLEAR(m->timer);
    return 0;
}

static void
cache_dealloc(PyObject *op)
{
    SMCacheObject *m = (SMCacheObject *)op;
    PyObject_GC_UnTrack(op);
    Py_TRASHCAN_BEGIN(op, cache_dealloc)
    if (m->node.after_fork != NULL) {
        sm_unregister(&m->node);
    }
    if (m->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    sm_tb_fini(&m->tab);
    Py_CLEAR(m->weigher);
    Py_CLEAR(m->on_evict);
    Py_CLEAR(m->timer);
    Py_CLEAR(m->ttl_obj);
    Py_CLEAR(m->maxsize_obj);
    Py_CLEAR(m->policy_obj);
    sm_buf_clear(&m->txn_evicted);
    sm_lock_fini(&m->lock);
    PyMem_Free(m->rbufs_alloc);
    m->rbufs_alloc = NULL;
    m->rbufs = NULL;
    PyMem_Free(m->sketch_mem);
    m->sketch_mem = NULL;
    m->sketch = NULL;
    PyMem_Free(m->door);
    m->door = NULL;
    sm_stats_fini(&m->stats);
    Py_TYPE(op)->tp_free(op);
    Py_TRASHCAN_END
}

/* ------------------------------------------------------------ type */

static PyMappingMethods cache_as_mapping = {
    .mp_length = cache_length,
    .mp_subscript = cache_subscript,
    .mp_ass_subscript = cache_ass_subscript,
};

static PySequenceMethods cache_as_sequence = {
    .sq_contains = cache_contains,
};

static PyMethodDef cache_methods[] = {
    SM_FASTCALL("get", cache_get, SM_DOC_GET),
    {"get_or_compute", (PyCFunction)(void (*)(void))cache_get_or_compute,
     METH_FASTCALL | METH_KEYWORDS, SM_DOC_GET_OR_COMPUTE},
    {"load", cache_load, METH_O, SM_DOC_LOAD},
    SM_FASTCALL("store", cache_store, "store(key, value): set key to value (evicting first)."),
    SM_FASTCALL("pop", cache_pop, SM_DOC_POP),
    SM_FASTCALL("load_or_store", cache_load_or_store, SM_DOC_LOAD_OR_STORE),
    SM_FASTCALL("swap", cache_swap, SM_DOC_SWAP),
    {"load_and_delete", cache_load_and_delete, METH_O, SM_DOC_LOAD_AND_DELETE},
    {"delete", cache_delete, METH_O, SM_DOC_DELETE},
    SM_FASTCALL("compute", cache_compute,
                "compute(key, fn): atomically replace the entry with fn(key, old) (old is "
                "MISSING when absent; return DELETE to remove). fn runs holding the cache's "
                "lock: it may read the cache, writing to it raises RecursiveUpdateError."),
    SM_FASTCALL("compute_if_absent", cache_compute_if_absent,
                "compute_if_absent(key, factory): the value for key, first storing "
                "factory(key) if absent (factory runs holding the cache's lock; returning "
                "DELETE stores nothing and returns None). A present key is answered by a "
                "lock-free read, which counts as a use of the entry for eviction."),
    SM_FASTCALL("compute_if_present", cache_compute_if_present, SM_DOC_COMPUTE_IF_PRESENT),
    SM_FASTCALL("merge", cache_merge, SM_DOC_MERGE),
    {"clear", cache_clear_impl, METH_NOARGS, SM_DOC_CLEAR},
    {"snapshot", cache_snapshot, METH_NOARGS, SM_DOC_SNAPSHOT},
    {"_iter_items", cache_iter_items, METH_NOARGS, SM_DOC_ITER_ITEMS},
    {"_options", cache_options, METH_NOARGS, SM_DOC_OPTIONS},
    {"__sizeof__", cache_sizeof, METH_NOARGS, "Size in memory, in bytes."},
    {"_stats_raw", cache_stats_raw, METH_NOARGS, SM_DOC_STATS_RAW},
    {"_count_load", cache_count_load, METH_O, "Count one load (True) or load failure (False)."},
    {"_frequency", cache_frequency, METH_O, "The frequency sketch's estimate for a key."},
    {"_window", cache_window, METH_NOARGS, "The W-TinyLFU window's current bound (in weight)."},
    {"_count_call", cache_count_call, METH_NOARGS, "Count one call of a @cached function."},
    {"_maintain", cache_maintain, METH_NOARGS,
     "Apply the recorded accesses to the policy and remove expired entries now."},
    {"_transact", (PyCFunction)(void (*)(void))cache_transact, METH_FASTCALL, SM_DOC_TRANSACT},
    {NULL, NULL, 0, NULL},
};

SM_DEFINE_TYPE(SMCache_Type) = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.CacheBase",
    .tp_basicsize = sizeof(SMCacheObject),
    .tp_dealloc = cache_dealloc,
    .tp_as_sequence = &cache_as_sequence,
    .tp_as_mapping = &cache_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Native core of safemap.Cache: a bounded map with W-TinyLFU or LRU "
              "eviction. Use safemap.Cache.",
    .tp_traverse = cache_traverse,
    .tp_clear = cache_tp_clear,
    .tp_weaklistoffset = offsetof(SMCacheObject, weakreflist),
    .tp_iter = cache_iter,
    .tp_methods = cache_methods,
    .tp_init = cache_init,
    .tp_alloc = PyType_GenericAlloc,
    .tp_new = cache_new,
    .tp_free = PyObject_GC_Del,
};

int
sm_cache_exec(PyObject *module)
{
    if (SMC_str_size == NULL && (SMC_str_size = PyUnicode_InternFromString("size")) == NULL) {
        return -1;
    }
    if (SMC_str_expired == NULL &&
        (SMC_str_expired = PyUnicode_InternFromString("expired")) == NULL) {
        return -1;
    }
    if (SMC_str_Cache == NULL && (SMC_str_Cache = PyUnicode_InternFromString("Cache")) == NULL) {
        return -1;
    }
    /* The module readies the cache's types with every other (SM_TYPES). */
    return PyModule_AddObjectRef(module, "CacheBase", (PyObject *)&SMCache_Type);
}

/* entry points for sm_cached.c */

/* One call of a @cached function (CachedFunction) whose key is `key`: the
 * cache is read exactly as get() reads it (the hit or miss counted, the
 * access recorded for the policy), then the call is counted (the `calls`
 * of cache_info(), striped like the rings) -- after the read, so that a key
 * that cannot be hashed raises without counting a call, and before the miss
 * path counts the load, so that calls - loads never undercounts.  1: hit
 * (*out strong), 0: absent, -1: error. */
int
sm_cache_call_lookup(PyObject *op, PyObject *key, PyObject **out)
{
    SMCacheObject *m = (SMCacheObject *)op;
    int r = cache_read(m, key, out);
    if (r >= 0) {
        count_call(m);
    }
    return r;
}

int
sm_cache_read(PyObject *op, PyObject *key, PyObject **out)
{
    return cache_read((SMCacheObject *)op, key, out);
}

int
sm_cache_load_or_store(PyObject *op, PyObject *key, PyObject *value, PyObject **actual)
{
    PyObject *prev;
    if (cache_put((SMCacheObject *)op, key, value, SMC_IF_ABSENT, &prev) < 0) {
        *actual = NULL;
        return -1;
    }
    if (prev != NULL) {
        *actual = prev;
        return 1;
    }
    *actual = Py_NewRef(value);
    return 0;
}
