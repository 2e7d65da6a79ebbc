/*
 * _hamt.c -- safemap.persistent._hamt: a persistent hash array mapped trie.
 *
 * Types:
 *
 *   Node   one trie node, immutable once published.  A *bitmap* node (the
 *          CHAMP layout) uses 5 bits of the key's hash per level: one 32-bit
 *          bitmap says which positions hold an entry (two slots, key and
 *          value, from the first slot up), another which hold a sub-trie (one
 *          slot, from the last slot down).  A *collision* node holds the
 *          (key, value) pairs of distinct keys whose hashes are equal in all
 *          64 bits.  A *delta* node stands for a bitmap node with a few values
 *          replaced (see "delta" at the Node struct).  Levels use shifts 0, 5,
 *          ..., 60, so two different hashes always part by shift 60 and no
 *          bitmap node ever sits below it.  `mutid` names the batch that made
 *          it (0: none; see node_owned).
 *   Trie   one version of a map: a root node (a bitmap node, or a delta over
 *          one) and the entry count.  Immutable: set() and delete() return a
 *          new Trie that shares every node off the changed path (O(log32 n)
 *          new nodes; a changed value in a large node: a delta over it).
 *   TrieMutation
 *          a private batch of changes (Trie.mutate()) that edits the nodes it
 *          made in place (mutation ids, as in immutables).
 *   PersistentMapBase
 *          the mutable map's core: a pointer to the current Trie.  Readers
 *          walk the current Trie with no lock; a writer builds the next Trie
 *          and publishes it by swapping the pointer (writers are serialized by
 *          the map's writer lock, an SMLock).
 *
 * Why readers are safe on free-threaded builds: see "Reading without a lock"
 * at PersistentMapBase (borrowed point reads, replaced versions released at
 * once or through QSBR, TryIncRef on values, a sequence lock between in-place
 * overwrites and strong references).  3.13t keeps the map's critical section
 * around load+incref; on GIL builds the GIL makes them atomic.
 *
 * Key __hash__/__eq__ run Python code during walks; a walk that may run it
 * holds a strong reference to the Trie, and nothing reachable from a Trie
 * that anyone holds is mutated, so such code (even code that writes to the
 * map) cannot invalidate the walk.  A write made by that code from inside one
 * of this map's plain writes (a finalizer, a key's __eq__) is applied at once;
 * the outer write notices that the version changed under it and builds again
 * on top (pm_write_begin).
 *
 * GC: nodes, tries, iterators and maps are GC-tracked (values may refer back
 * to the map).  tp_clear may empty slots of a node in an unreachable cycle, so
 * every walk treats a NULL slot as "absent".
 */
#include "../native/sm_compat.h"
#include "../native/sm_lock.h"
#include "../protocol/_frozen_api.h"
#include <string.h>

#define HAMT_BITS 5
#define HAMT_MASK 31u
#define HAMT_MAX_SHIFT 60
#define HAMT_MAX_DEPTH 16 /* 13 bitmap levels + a collision node, rounded up */

/* Lock-free reads on free-threaded builds (3.14+: PyUnstable_TryIncRef and an
 * exported _PyObject_XDecRefDelayed); 3.13t keeps the map's critical section.
 * See "Reading without a lock" at PersistentMapBase. */
#if SM_FREE_THREADED && PY_VERSION_HEX >= 0x030E0000
#  define HAMT_LOCKFREE 1
/* Exported by libpython (PyAPI_FUNC) but declared only in an internal header:
 * decrefs obj once every thread has passed a quiescent state (QSBR). */
PyAPI_FUNC(void) _PyObject_XDecRefDelayed(PyObject *obj);
#  define HAMT_LOAD_ACQ(p) _Py_atomic_load_ptr_acquire((void *)(p))
/* A reader's load of the current version: sequentially consistent, so that it
 * is ordered with the reader's seq_cst increment of `enter` before it and the
 * writer's seq_cst fence after publishing (pm_release); a plain load on x86. */
#  define HAMT_LOAD_ROOT(p) _Py_atomic_load_ptr((void *)(p))
#  define HAMT_LOAD_RLX(p) _Py_atomic_load_ptr_relaxed((void *)(p))
#  define HAMT_STORE_REL(p, v) _Py_atomic_store_ptr_release((void *)(p), (void *)(v))
#else
#  define HAMT_LOCKFREE 0
#  define HAMT_LOAD_ACQ(p) (*(p))
#  define HAMT_LOAD_ROOT(p) (*(p))
#  define HAMT_LOAD_RLX(p) (*(p))
#  define HAMT_STORE_REL(p, v) (*(p) = (v))
#endif

/* Protocol objects, imported once (the module supports one interpreter). */
static PyObject *RecursiveUpdateError; /* safemap.RecursiveUpdateError */
static PyObject *MISSING, *DELETE;     /* safemap.MISSING, safemap.DELETE */
static PyObject *MSG_IN_OPERATION;     /* the maps' re-entry messages (maps._guards) */
static PyObject *MSG_IN_TRANSACTION;

/* ====================================================================== Node */

/* The CHAMP layout (Steindorfer and Vinju, "Optimizing Hash-Array Mapped
 * Tries for Fast and Lean Immutable JVM Collections"): a bitmap node has two
 * bitmaps over the 32 positions of its level, `datamap` (positions holding
 * an entry) and `nodemap` (positions holding a sub-trie); entries take two
 * slots each, (key, value), from slot 0 up in position order, and children
 * one slot each, from the last slot down in position order.  A child costs 8
 * bytes instead of the 16 of a (NULL, child) pair, so the upper levels of a
 * trie (nearly all children) take half the cache lines, and a node whose 32
 * positions are all children is indexed without a popcount (node_child_index).
 *
 * A collision node has both bitmaps 0 and at least two entries (a bitmap node
 * with no position has no slots: only the empty root is one).
 *
 * A *delta* node (mutid HAMT_DELTA) stands for a bitmap node with some entry
 * values replaced, without copying it: slots[0] is the base (a bitmap node,
 * shared with the versions that had it), `hash` holds the bitmap of the
 * positions whose value it replaces, and slots[1..] their new values in
 * position order.  A write that replaces one value of a large node while an
 * older version shares that node makes a delta of 2 slots instead of a copy
 * of all of them (the node a version kept after a change shares); a delta
 * grows by one slot per replaced position and is compacted into a full node
 * (delta_materialize) past HAMT_DELTA_MAX positions, when its base is no
 * longer shared, and by any change that is not a value replacement.  Both
 * its bitmaps are 0, so lookups reach it only off their hot path. */
typedef struct {
    PyObject_VAR_HEAD      /* ob_size: number of slots */
    Py_hash_t hash;        /* collision node: the common hash; delta: the replaced positions */
    uint64_t mutid;        /* 0, or the batch that owns it (node_owned); HAMT_DELTA: a delta */
    uint32_t datamap;      /* bitmap node: positions holding an entry */
    uint32_t nodemap;      /* bitmap node: positions holding a child */
    PyObject *slots[1];
} Node;

static PyTypeObject Node_Type;

/* A delta node's mutid: no batch ever has it (ids count up from 1), so no
 * batch edits a delta in place. */
#define HAMT_DELTA UINT64_MAX
#define NODE_IS_DELTA(n) ((n)->mutid == HAMT_DELTA)
#define NODE_IS_COLLISION(n)                                                                     \
    ((((n)->datamap | (n)->nodemap) == 0) && Py_SIZE(n) != 0 && !NODE_IS_DELTA(n))
/* A delta replaces at most this many values; one more compacts it. */
#define HAMT_DELTA_MAX 8
/* A value replacement in a node of at least this many slots makes a delta
 * (2 slots) rather than a copy. */
#define HAMT_DELTA_MIN_SLOTS 8

/* A hint to start loading the cache line at p (no fault, no effect on
 * correctness). */
#if defined(__GNUC__) || defined(__clang__)
#  define HAMT_PREFETCH(p) __builtin_prefetch(p)
#else
#  define HAMT_PREFETCH(p) ((void)(p))
#endif

/* Bits set in x.  Without -mpopcnt, __builtin_popcount is a libgcc call; the
 * branch-free SWAR count below is a few inlined instructions. */
static inline int
popcount32(uint32_t x)
{
#if defined(__POPCNT__)
    return __builtin_popcount(x);
#else
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0Fu;
    return (int)((x * 0x01010101u) >> 24);
#endif
}

/* The position (0..31) of hash h at a level.  Collision nodes may sit one
 * level below shift 60; `& 63` keeps the shift defined there (their bitmaps
 * are 0, so whatever position it gives matches nothing). */
static inline unsigned
hash_pos(uint64_t h, int shift)
{
    return (unsigned)(h >> (shift & 63)) & HAMT_MASK;
}

static inline uint32_t
bitpos(uint64_t h, int shift)
{
    return 1u << hash_pos(h, shift);
}

/* Slots taken by the entries of node (its children follow them). */
static inline Py_ssize_t
node_data_slots(Node *node)
{
    return NODE_IS_COLLISION(node) ? Py_SIZE(node) : 2 * (Py_ssize_t)popcount32(node->datamap);
}

/* Slot index of the entry at `bit` (datamap & bit set): its key; value next. */
static inline Py_ssize_t
node_entry_index(Node *node, uint32_t bit)
{
    return 2 * (Py_ssize_t)popcount32(node->datamap & (bit - 1));
}

/* Slot index of the child at position `pos` (nodemap has its bit).  A node
 * whose every position is a child (the upper levels of a large trie) has 32
 * slots and needs no popcount. */
static inline Py_ssize_t
node_child_index(Node *node, unsigned pos)
{
    if (node->nodemap == 0xFFFFFFFFu) {
        return 31 - (Py_ssize_t)pos;
    }
    return Py_SIZE(node) - 1 - (Py_ssize_t)popcount32(node->nodemap & ((1u << pos) - 1));
}

/* A node with n zeroed slots, not yet tracked by the GC (the caller fills it
 * and then calls node_ready). */
static Node *
node_alloc(Py_ssize_t n, uint64_t mutid)
{
    Node *node = PyObject_GC_NewVar(Node, &Node_Type, n);
    if (node == NULL) {
        return NULL;
    }
    node->datamap = 0;
    node->nodemap = 0;
    node->hash = 0;
    node->mutid = mutid;
    for (Py_ssize_t i = 0; i < n; i++) {
        node->slots[i] = NULL;
    }
    return node;
}

static inline Node *
node_ready(Node *node)
{
    PyObject_GC_Track(node);
    return node;
}

/* A copy of node with n slots (n >= its own: a collision node grows by
 * appending), slots with new references, untracked. */
static Node *
node_copy(Node *node, Py_ssize_t n, uint64_t mutid)
{
    Node *c = node_alloc(n, mutid);
    if (c == NULL) {
        return NULL;
    }
    c->datamap = node->datamap;
    c->nodemap = node->nodemap;
    c->hash = node->hash;
    Py_ssize_t m = Py_SIZE(node) < n ? Py_SIZE(node) : n;
    for (Py_ssize_t i = 0; i < m; i++) {
        c->slots[i] = Py_XNewRef(node->slots[i]);
    }
    return c;
}

/* Mutation ids (batch building, as in immutables).  A node made by a batch
 * (a TrieMutation) carries the batch's id; every other node carries 0.  A
 * batch's nodes are reachable only from the batch's own private root until
 * finish() publishes it and closes the batch, so while the batch is open it
 * may change them in place instead of copying them: a batch of n changes
 * copies each node at most once, not once per change.  Ids are never reused
 * (a 64-bit counter), and mutid 0 (every persistent operation) never matches,
 * so a published node is never changed by a batch. */
static inline int
node_owned(Node *node, uint64_t mutid)
{
    return mutid != 0 && node->mutid == mutid;
}

/* The slots of bitmap node `node` with position `bit` changed (see
 * node_with_pos), laid out in dst[0..n) for the bitmaps dm, nm: the other
 * positions' references are taken (take: new references) or moved; k and v
 * are new references. */
static void
node_layout_with_pos(Node *node, PyObject **dst, Py_ssize_t n, uint32_t dm, uint32_t nm,
                     uint32_t bit, PyObject *k, PyObject *v, int take)
{
#define HAMT_MOVE(x) (take ? Py_XNewRef(x) : (x))
    uint32_t odm = node->datamap, onm = node->nodemap;
    Py_ssize_t on = Py_SIZE(node), odata = 2 * (Py_ssize_t)popcount32(odm);
    Py_ssize_t ochildren = (Py_ssize_t)popcount32(onm);
    /* Entries in position order from slot 0. */
    Py_ssize_t before = 2 * (Py_ssize_t)popcount32(odm & (bit - 1)), j = 0;
    for (Py_ssize_t i = 0; i < before; i++) {
        dst[j++] = HAMT_MOVE(node->slots[i]);
    }
    if (dm & bit) {
        dst[j++] = Py_NewRef(k);
        dst[j++] = Py_NewRef(v);
    }
    for (Py_ssize_t i = before + ((odm & bit) ? 2 : 0); i < odata; i++) {
        dst[j++] = HAMT_MOVE(node->slots[i]);
    }
    /* Children in position order from the last slot down. */
    before = (Py_ssize_t)popcount32(onm & (bit - 1));
    j = 0;
    for (Py_ssize_t i = 0; i < before; i++) {
        dst[n - 1 - j++] = HAMT_MOVE(node->slots[on - 1 - i]);
    }
    if (nm & bit) {
        dst[n - 1 - j++] = Py_NewRef(v);
    }
    for (Py_ssize_t i = before + ((onm & bit) ? 1 : 0); i < ochildren; i++) {
        dst[n - 1 - j++] = HAMT_MOVE(node->slots[on - 1 - i]);
    }
#undef HAMT_MOVE
}

/* Bitmap node `node` with the position `bit` changed: to the entry (k, v) when
 * k and v are given, to the child v when only v is, removed when neither is
 * (new references taken).  Every other position is shared.  A new, tracked
 * node, or NULL on error; or, when the batch `mutid` owns node and the change
 * does not make it larger (an entry becomes a child: what a batch building a
 * trie does at every upper node, 32 times each; a position goes), node itself
 * (a new reference) with its slots rearranged in place: its block keeps the
 * size it was allocated with, Py_SIZE shrinks.  Moving the slots instead of
 * copying the node saves an allocation, a reference count up and down per
 * slot, and a large young node for the collector to traverse.  The replaced
 * position's old references are released last, once the node is whole, so a
 * caller that still needs one (a removed value) takes its own first. */
static Node *
node_with_pos(Node *node, uint32_t bit, PyObject *k, PyObject *v, uint64_t mutid)
{
    uint32_t odm = node->datamap, onm = node->nodemap;
    uint32_t dm = odm & ~bit, nm = onm & ~bit;
    if (v != NULL) {
        if (k != NULL) {
            dm |= bit;
        }
        else {
            nm |= bit;
        }
    }
    Py_ssize_t on = Py_SIZE(node);
    Py_ssize_t n = 2 * (Py_ssize_t)popcount32(dm) + (Py_ssize_t)popcount32(nm);
    if (node_owned(node, mutid) && n <= on) {
        PyObject *moved[2 * (HAMT_MASK + 1)]; /* n <= on <= 64: 32 positions */
        PyObject *gone[2] = {NULL, NULL};
        if (odm & bit) {
            Py_ssize_t idx = node_entry_index(node, bit);
            gone[0] = node->slots[idx];
            gone[1] = node->slots[idx + 1];
        }
        else if (onm & bit) {
            gone[0] = node->slots[on - 1 - (Py_ssize_t)popcount32(onm & (bit - 1))];
        }
        node_layout_with_pos(node, moved, n, dm, nm, bit, k, v, 0);
        memcpy(node->slots, moved, (size_t)n * sizeof(PyObject *));
        for (Py_ssize_t i = n; i < on; i++) {
            node->slots[i] = NULL;
        }
        Py_SET_SIZE(node, n);
        node->datamap = dm;
        node->nodemap = nm;
        Py_XDECREF(gone[0]);
        Py_XDECREF(gone[1]);
        return (Node *)Py_NewRef(node);
    }
    Node *c = node_alloc(n, mutid);
    if (c == NULL) {
        return NULL;
    }
    c->datamap = dm;
    c->nodemap = nm;
    node_layout_with_pos(node, c->slots, n, dm, nm, bit, k, v, 1);
    return node_ready(c);
}

/* ---------------------------------------------------------------- deltas */

static inline uint32_t
delta_map(Node *d)
{
    return (uint32_t)(uint64_t)d->hash;
}

/* The slot of the value delta d gives the position `bit`, or NULL when it
 * keeps its base's. */
static inline PyObject **
delta_slot(Node *d, uint32_t bit)
{
    uint32_t map = delta_map(d);
    if (!(map & bit)) {
        return NULL;
    }
    return &d->slots[1 + popcount32(map & (bit - 1))];
}

/* A new delta over bitmap node `base` whose entry at `bit` gets `value`,
 * keeping the replacements of `prev` (a delta over the same base, or NULL). */
static Node *
delta_set(Node *base, Node *prev, uint32_t bit, PyObject *value)
{
    uint32_t old = prev != NULL ? delta_map(prev) : 0, map = old | bit;
    Node *d = node_alloc(1 + (Py_ssize_t)popcount32(map), HAMT_DELTA);
    if (d == NULL) {
        return NULL;
    }
    d->hash = (Py_hash_t)map;
    d->slots[0] = Py_NewRef(base);
    Py_ssize_t j = 1;
    for (uint32_t m = map; m != 0; m &= m - 1) {
        uint32_t b = m & (~m + 1);
        d->slots[j++] = b == bit ? Py_NewRef(value)
                                 : Py_XNewRef(prev->slots[1 + popcount32(old & (b - 1))]);
    }
    return node_ready(d);
}

/* The bitmap node delta d stands for: a new node (made for batch mutid). */
static Node *
delta_materialize(Node *d, uint64_t mutid)
{
    Node *base = (Node *)d->slots[0];
    if (base == NULL) { /* cleared by the GC */
        Node *empty = node_alloc(0, mutid);
        return empty == NULL ? NULL : node_ready(empty);
    }
    Node *c = node_copy(base, Py_SIZE(base), mutid);
    if (c == NULL) {
        return NULL;
    }
    uint32_t map = delta_map(d);
    for (uint32_t m = map; m != 0; m &= m - 1) {
        uint32_t b = m & (~m + 1);
        if (base->datamap & b) {
            Py_ssize_t idx = node_entry_index(base, b);
            Py_XSETREF(c->slots[idx + 1], Py_XNewRef(d->slots[1 + popcount32(map & (b - 1))]));
        }
    }
    return node_ready(c);
}

static int
node_traverse(Node *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_VISIT(self->slots[i]);
    }
    return 0;
}

static int
node_clear(Node *self)
{
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_CLEAR(self->slots[i]);
    }
    return 0;
}

static void
node_dealloc(Node *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, node_dealloc)
    for (Py_ssize_t i = 0; i < Py_SIZE(self); i++) {
        Py_XDECREF(self->slots[i]);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

static PyTypeObject Node_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.persistent._hamt.Node",
    .tp_basicsize = offsetof(Node, slots),
    .tp_itemsize = sizeof(PyObject *),
    .tp_dealloc = (destructor)node_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)node_traverse,
    .tp_clear = (inquiry)node_clear,
    .tp_doc = "A node of a persistent hash trie (internal, immutable).",
};

/* Key equality as dict does it: identity first. */
static inline int
keys_equal(PyObject *a, PyObject *b)
{
    return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

static Node *empty_node; /* the shared empty root */

/* The child of node at h's position at `shift`, or NULL when that position is
 * not a child (a child cleared by the GC reads as the empty node: absent). */
SM_ALWAYS_INLINE Node *
node_child_at(Node *node, uint64_t h, int shift)
{
    unsigned pos = hash_pos(h, shift);
    if (!(node->nodemap & (1u << pos))) {
        return NULL;
    }
    Node *child = (Node *)node->slots[node_child_index(node, pos)];
    if (child != NULL) {
        /* The slot a walk reads in a node is found only from the node's
         * bitmaps, so the two are dependent cache misses.  Start loading the
         * child's slots now, beside its header: the line after the header
         * (where a small node's entries lie) and, for a full upper node, the
         * line of the slot the next level reads (31 - pos: no bitmap needed).
         * A prefetch never faults; one that misses the node costs a line. */
        HAMT_PREFETCH((const char *)child + 64);
        HAMT_PREFETCH(&child->slots[31 - hash_pos(h, shift + HAMT_BITS)]);
    }
    return child != NULL ? child : empty_node;
}

/* The first levels of every lookup walk, unrolled: the node below `node` where
 * the walk stops following children within the first four levels (every level
 * of a trie up to about 32 million entries but the last), *shift its level.
 * Unrolled so that each level has its own branches: a lookup follows children
 * at the upper levels and stops at the last, so a loop's one "is it a child?"
 * branch changes direction once per lookup, and cachegrind counted one
 * mispredicted branch per lookup there (100,000 keys; immutables' walk, a
 * recursion the compiler inlines level by level, had none). */
SM_ALWAYS_INLINE Node *
node_descend(Node *node, uint64_t h, int *shift)
{
#define HAMT_DESCEND_LEVEL(s)                                                                    \
    do {                                                                                         \
        Node *child_ = node_child_at(node, h, (s));                                              \
        if (child_ == NULL) {                                                                    \
            *shift = (s);                                                                        \
            return node;                                                                         \
        }                                                                                        \
        node = child_;                                                                           \
    } while (0)
    HAMT_DESCEND_LEVEL(0);
    HAMT_DESCEND_LEVEL(HAMT_BITS);
    HAMT_DESCEND_LEVEL(2 * HAMT_BITS);
    HAMT_DESCEND_LEVEL(3 * HAMT_BITS);
#undef HAMT_DESCEND_LEVEL
    *shift = 4 * HAMT_BITS;
    return node;
}

/* Look key up.  1: found, *out borrowed (kept alive by the caller's strong
 * reference to the trie); 0: absent; -1: error from __eq__. */
static int
node_find(Node *node, uint64_t h, PyObject *key, PyObject **out)
{
    int shift;
    node = node_descend(node, h, &shift);
    Node *delta = NULL; /* the delta `node` is the base of, if any */
    for (;;) {
        /* Children first: every level but the last is one. */
        unsigned pos = hash_pos(h, shift);
        uint32_t bit = 1u << pos;
        if (node->nodemap & bit) {
            node = (Node *)node->slots[node_child_index(node, pos)];
            if (node == NULL) {
                return 0; /* cleared by the GC */
            }
            delta = NULL;
            shift += HAMT_BITS;
            continue;
        }
        if (node->datamap & bit) {
            Py_ssize_t idx = node_entry_index(node, bit);
            PyObject *k = node->slots[idx];
            PyObject **vs = delta != NULL ? delta_slot(delta, bit) : NULL;
            PyObject *v = vs != NULL ? *vs : node->slots[idx + 1];
            if (k == NULL || v == NULL) {
                return 0;
            }
            int eq = keys_equal(k, key);
            if (eq > 0) {
                *out = v;
            }
            return eq;
        }
        if (NODE_IS_DELTA(node)) {
            delta = node;
            node = (Node *)node->slots[0];
            if (node == NULL) {
                return 0;
            }
            continue;
        }
        if (!NODE_IS_COLLISION(node) || (uint64_t)node->hash != h) {
            return 0;
        }
        for (Py_ssize_t i = 0; i + 1 < Py_SIZE(node); i += 2) {
            PyObject *k = node->slots[i];
            if (k == NULL || node->slots[i + 1] == NULL) {
                continue;
            }
            int eq = keys_equal(k, key);
            if (eq != 0) {
                if (eq > 0) {
                    *out = node->slots[i + 1];
                }
                return eq;
            }
        }
        return 0;
    }
}

/* A bitmap node at `shift` holding two entries whose hashes differ (they agree
 * on every bit below shift). */
static Node *
node_pair(int shift, PyObject *k1, PyObject *v1, uint64_t h1, PyObject *k2, PyObject *v2,
          uint64_t h2, uint64_t mutid)
{
    if (shift > HAMT_MAX_SHIFT) {
        PyErr_SetString(PyExc_RuntimeError, "a key's hash changed while it was in the map");
        return NULL;
    }
    uint32_t b1 = bitpos(h1, shift), b2 = bitpos(h2, shift);
    if (b1 == b2) {
        Node *child = node_pair(shift + HAMT_BITS, k1, v1, h1, k2, v2, h2, mutid);
        if (child == NULL) {
            return NULL;
        }
        Node *node = node_alloc(1, mutid);
        if (node == NULL) {
            Py_DECREF(child);
            return NULL;
        }
        node->nodemap = b1;
        node->slots[0] = (PyObject *)child;
        return node_ready(node);
    }
    Node *node = node_alloc(4, mutid);
    if (node == NULL) {
        return NULL;
    }
    node->datamap = b1 | b2;
    int first = b1 < b2 ? 0 : 2;
    node->slots[first] = Py_NewRef(k1);
    node->slots[first + 1] = Py_NewRef(v1);
    node->slots[2 - first] = Py_NewRef(k2);
    node->slots[3 - first] = Py_NewRef(v2);
    return node_ready(node);
}

/* node, to be changed in slots of the same shape: node itself (a new
 * reference) when the batch owns it, else a copy made for the batch. */
static inline Node *
node_for_edit(Node *node, uint64_t mutid)
{
    if (node_owned(node, mutid)) {
        return (Node *)Py_NewRef(node);
    }
    return node_copy(node, Py_SIZE(node), mutid);
}

/* node with slot i set to `item` (a new reference, stolen): node itself when
 * the batch owns it, else a copy.  NULL on error (item released). */
static Node *
node_with_slot(Node *node, Py_ssize_t i, PyObject *item, uint64_t mutid)
{
    Node *c = node_for_edit(node, mutid);
    if (c == NULL) {
        Py_DECREF(item);
        return NULL;
    }
    Py_XSETREF(c->slots[i], item);
    return c == node ? c : node_ready(c);
}

/* A collision node's assoc (h is its hash). */
static Node *
collision_assoc(Node *node, PyObject *key, PyObject *value, int *added, uint64_t mutid)
{
    Py_ssize_t n = Py_SIZE(node);
    for (Py_ssize_t i = 0; i + 1 < n; i += 2) {
        PyObject *k = node->slots[i];
        if (k == NULL) {
            continue;
        }
        int eq = keys_equal(k, key);
        if (eq < 0) {
            return NULL;
        }
        if (eq) {
            if (node->slots[i + 1] == value) {
                return (Node *)Py_NewRef(node);
            }
            return node_with_slot(node, i + 1, Py_NewRef(value), mutid);
        }
    }
    Node *c = node_copy(node, n + 2, mutid);
    if (c == NULL) {
        return NULL;
    }
    c->slots[n] = Py_NewRef(key);
    c->slots[n + 1] = Py_NewRef(value);
    *added = 1;
    return node_ready(c);
}

static uint64_t mutid_new(void);
static Node *node_assoc(Node *node, int shift, uint64_t h, PyObject *key, PyObject *value,
                        int *added, uint64_t mutid);
static int node_without(Node *node, int shift, uint64_t h, PyObject *key, Node **out,
                        PyObject **removed, uint64_t mutid);

/* The id a change to delta d edits its compacted copy with: the caller's
 * batch, or (a persistent change) a fresh id that nothing uses afterwards, so
 * the copy is changed in place once and the nodes made for it are closed. */
static inline uint64_t
delta_edit_id(uint64_t mutid)
{
    return mutid != 0 ? mutid : mutid_new();
}

/* node_assoc for a delta node d.  A persistent replacement of a value of its
 * base gives a new delta one slot larger, while the base is still shared and
 * the delta stays within HAMT_DELTA_MAX; any other change compacts it. */
static Node *
delta_assoc(Node *d, int shift, uint64_t h, PyObject *key, PyObject *value, int *added,
            uint64_t mutid)
{
    Node *base = (Node *)d->slots[0];
    uint32_t bit = bitpos(h, shift);
    if (mutid == 0 && base != NULL && (base->datamap & bit) && Py_REFCNT(base) > 1) {
        Py_ssize_t idx = node_entry_index(base, bit);
        PyObject *k = base->slots[idx];
        PyObject **vs = delta_slot(d, bit);
        PyObject *v = vs != NULL ? *vs : base->slots[idx + 1];
        if (k != NULL && v != NULL &&
            (vs != NULL || popcount32(delta_map(d)) < HAMT_DELTA_MAX)) {
            int eq = keys_equal(k, key);
            if (eq < 0) {
                return NULL;
            }
            if (eq) {
                return v == value ? (Node *)Py_NewRef(d) : delta_set(base, d, bit, value);
            }
        }
    }
    uint64_t id = delta_edit_id(mutid);
    Node *full = delta_materialize(d, id);
    if (full == NULL) {
        return NULL;
    }
    Node *res = node_assoc(full, shift, h, key, value, added, id);
    Py_DECREF(full);
    return res;
}

/* node_without for a delta node: on its compacted copy. */
static int
delta_without(Node *d, int shift, uint64_t h, PyObject *key, Node **out, PyObject **removed,
              uint64_t mutid)
{
    uint64_t id = delta_edit_id(mutid);
    Node *full = delta_materialize(d, id);
    if (full == NULL) {
        return -1;
    }
    int r = node_without(full, shift, h, key, out, removed, id);
    Py_DECREF(full);
    return r;
}

/* The node with key -> value added or replaced: a new reference (node itself
 * when nothing changes, or when the batch `mutid` owns it and changed it in
 * place).  *added is set to 1 when key was absent.  NULL on error; a node the
 * batch owns may then hold part of the change (the batch is private, and its
 * change is still all or nothing for the caller's key: see tm_set). */
static Node *
node_assoc(Node *node, int shift, uint64_t h, PyObject *key, PyObject *value, int *added,
           uint64_t mutid)
{
    if (NODE_IS_DELTA(node)) {
        return delta_assoc(node, shift, h, key, value, added, mutid);
    }
    if (NODE_IS_COLLISION(node)) {
        if ((uint64_t)node->hash == h) {
            return collision_assoc(node, key, value, added, mutid);
        }
        /* A key of another hash reaches this collision node: put the node
         * under a bitmap node at this level and insert there. */
        Node *wrap = node_alloc(1, mutid);
        if (wrap == NULL) {
            return NULL;
        }
        wrap->nodemap = bitpos((uint64_t)node->hash, shift);
        wrap->slots[0] = Py_NewRef(node);
        node_ready(wrap);
        Node *res = node_assoc(wrap, shift, h, key, value, added, mutid);
        Py_DECREF(wrap);
        return res;
    }
    uint32_t bit = bitpos(h, shift);
    if (node->nodemap & bit) {
        Py_ssize_t ci = node_child_index(node, hash_pos(h, shift));
        PyObject *child = node->slots[ci];
        if (child == NULL) { /* cleared by the GC: the entry goes here */
            *added = 1;
            return node_with_pos(node, bit, key, value, mutid);
        }
        Node *sub = node_assoc((Node *)child, shift + HAMT_BITS, h, key, value, added, mutid);
        if (sub == NULL) {
            return NULL;
        }
        if ((PyObject *)sub == child) {
            /* Unchanged, or changed in place by its batch: so is this node. */
            Py_DECREF(sub);
            return (Node *)Py_NewRef(node);
        }
        return node_with_slot(node, ci, (PyObject *)sub, mutid);
    }
    if (!(node->datamap & bit)) {
        *added = 1;
        return node_with_pos(node, bit, key, value, mutid);
    }
    Py_ssize_t idx = node_entry_index(node, bit);
    PyObject *k = node->slots[idx];
    PyObject *v = node->slots[idx + 1];
    if (k == NULL || v == NULL) { /* cleared by the GC */
        *added = 1;
        return node_with_pos(node, bit, key, value, mutid);
    }
    int eq = keys_equal(k, key);
    if (eq < 0) {
        return NULL;
    }
    if (eq) {
        if (v == value) {
            return (Node *)Py_NewRef(node);
        }
        if (mutid == 0 && Py_SIZE(node) >= HAMT_DELTA_MIN_SLOTS) {
            /* A persistent change of one value: the version it replaces may
             * be kept, so share this node instead of copying it. */
            return delta_set(node, NULL, bit, value);
        }
        return node_with_slot(node, idx + 1, Py_NewRef(value), mutid);
    }
    /* Another key at this position: both go into a sub-trie. */
    Py_hash_t kh = sm_hash(k);
    if (kh == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Node *child;
    if ((uint64_t)kh == h) {
        child = node_alloc(4, mutid);
        if (child == NULL) {
            return NULL;
        }
        child->hash = (Py_hash_t)h;
        child->slots[0] = Py_NewRef(k);
        child->slots[1] = Py_NewRef(v);
        child->slots[2] = Py_NewRef(key);
        child->slots[3] = Py_NewRef(value);
        node_ready(child);
    }
    else {
        child = node_pair(shift + HAMT_BITS, k, v, (uint64_t)kh, key, value, h, mutid);
        if (child == NULL) {
            return NULL;
        }
    }
    *added = 1;
    Node *res = node_with_pos(node, bit, NULL, (PyObject *)child, mutid);
    Py_DECREF(child);
    return res;
}

/* A sub-trie holding exactly one entry (its parent stores the entry itself). */
static inline int
node_is_single(Node *node)
{
    return node->nodemap == 0 && Py_SIZE(node) == 2 && node->datamap != 0 &&
           node->slots[0] != NULL && node->slots[1] != NULL;
}

/* A collision node's delete (see node_without). */
static int
collision_without(Node *node, PyObject *key, Node **out, PyObject **removed, uint64_t mutid)
{
    Py_ssize_t n = Py_SIZE(node);
    for (Py_ssize_t i = 0; i + 1 < n; i += 2) {
        PyObject *k = node->slots[i];
        if (k == NULL || node->slots[i + 1] == NULL) {
            continue;
        }
        int eq = keys_equal(k, key);
        if (eq < 0) {
            return -1;
        }
        if (!eq) {
            continue;
        }
        if (n == 4) {
            /* One entry left: hand it up as a one-entry bitmap node, which
             * the parent inlines (the position bit is the parent's). */
            Py_ssize_t other = i == 0 ? 2 : 0;
            if (node->slots[other] == NULL || node->slots[other + 1] == NULL) {
                *out = NULL;
            }
            else {
                Node *single = node_alloc(2, mutid);
                if (single == NULL) {
                    return -1;
                }
                single->datamap = 1;
                single->slots[0] = Py_NewRef(node->slots[other]);
                single->slots[1] = Py_NewRef(node->slots[other + 1]);
                *out = node_ready(single);
            }
        }
        else {
            Node *c = node_alloc(n - 2, mutid);
            if (c == NULL) {
                return -1;
            }
            c->hash = node->hash;
            for (Py_ssize_t s = 0, j = 0; s < n; s++) {
                if (s != i && s != i + 1) {
                    c->slots[j++] = Py_XNewRef(node->slots[s]);
                }
            }
            *out = node_ready(c);
        }
        *removed = Py_NewRef(node->slots[i + 1]);
        return 1;
    }
    return 0;
}

/* Remove key.  1: removed, *out is the new node (a new reference: node itself
 * when the batch `mutid` changed it in place; NULL when the node ends empty)
 * and *removed the removed value (a new reference); 0: absent; -1: error,
 * nothing changed. */
static int
node_without(Node *node, int shift, uint64_t h, PyObject *key, Node **out, PyObject **removed,
             uint64_t mutid)
{
    if (NODE_IS_DELTA(node)) {
        return delta_without(node, shift, h, key, out, removed, mutid);
    }
    if (NODE_IS_COLLISION(node)) {
        if ((uint64_t)node->hash != h) {
            return 0;
        }
        return collision_without(node, key, out, removed, mutid);
    }
    uint32_t bit = bitpos(h, shift);
    if (node->datamap & bit) {
        Py_ssize_t idx = node_entry_index(node, bit);
        PyObject *k = node->slots[idx];
        PyObject *v = node->slots[idx + 1];
        if (k == NULL || v == NULL) {
            return 0;
        }
        int eq = keys_equal(k, key);
        if (eq <= 0) {
            return eq;
        }
        /* Taken first: a node the batch owns drops its own reference in place. */
        *removed = Py_NewRef(v);
        if (Py_SIZE(node) == 2) {
            *out = NULL;
        }
        else if ((*out = node_with_pos(node, bit, NULL, NULL, mutid)) == NULL) {
            Py_CLEAR(*removed);
            return -1;
        }
        return 1;
    }
    if (!(node->nodemap & bit)) {
        return 0;
    }
    Py_ssize_t ci = node_child_index(node, hash_pos(h, shift));
    PyObject *child = node->slots[ci];
    if (child == NULL) {
        return 0;
    }
    Node *sub = NULL;
    PyObject *gone = NULL;
    int r = node_without((Node *)child, shift + HAMT_BITS, h, key, &sub, &gone, mutid);
    if (r <= 0) {
        return r;
    }
    if (sub == NULL) {
        if (Py_SIZE(node) == 1) {
            *out = NULL;
        }
        else if ((*out = node_with_pos(node, bit, NULL, NULL, mutid)) == NULL) {
            Py_DECREF(gone);
            return -1;
        }
    }
    else if (node_is_single(sub)) {
        /* The sub-trie holds one entry: store it here instead. */
        *out = node_with_pos(node, bit, sub->slots[0], sub->slots[1], mutid);
        Py_DECREF(sub);
        if (*out == NULL) {
            Py_DECREF(gone);
            return -1;
        }
    }
    else if ((PyObject *)sub == child) {
        /* The batch changed the child in place: so is this node. */
        Py_DECREF(sub);
        *out = (Node *)Py_NewRef(node);
    }
    else if ((*out = node_with_slot(node, ci, (PyObject *)sub, mutid)) == NULL) {
        Py_DECREF(gone);
        return -1;
    }
    *removed = gone;
    return 1;
}

/* ====================================================================== Trie */

typedef struct {
    PyObject_HEAD
    Node *root;        /* a bitmap node or a delta; never changes (see trie_traverse) */
    Py_ssize_t count;
} Trie;

static PyTypeObject Trie_Type;
static PyTypeObject TrieIter_Type;

static Trie *
trie_make(Node *root, Py_ssize_t count) /* steals root */
{
    Trie *t = PyObject_GC_New(Trie, &Trie_Type);
    if (t == NULL) {
        Py_DECREF(root);
        return NULL;
    }
    t->root = root;
    t->count = count;
    PyObject_GC_Track(t);
    return t;
}

static Trie *
trie_empty(void)
{
    return trie_make((Node *)Py_NewRef(empty_node), 0);
}

/* Key equality that runs no Python code: 1 equal, 0 not, -2 undecidable here
 * (a key type whose __eq__ could run Python code).  Exact str and int only. */
static inline int
keys_equal_nocode(PyObject *stored, PyObject *key)
{
    if (stored == key) {
        return 1;
    }
    PyTypeObject *ts = Py_TYPE(stored), *tk = Py_TYPE(key);
    int s_ok = ts == &PyUnicode_Type || ts == &PyLong_Type;
    int k_ok = tk == &PyUnicode_Type || tk == &PyLong_Type;
    if (!s_ok || !k_ok) {
        return -2;
    }
    if (ts != tk) {
        return 0; /* str vs int: never equal */
    }
    if (tk == &PyUnicode_Type) {
#if PY_VERSION_HEX < 0x030C0000
        if (!PyUnicode_IS_READY(key) || !PyUnicode_IS_READY(stored)) {
            return -2;
        }
#endif
        Py_ssize_t n = PyUnicode_GET_LENGTH(key);
        int kind = PyUnicode_KIND(key);
        return n == PyUnicode_GET_LENGTH(stored) && kind == (int)PyUnicode_KIND(stored) &&
               memcmp(PyUnicode_DATA(key), PyUnicode_DATA(stored), (size_t)n * (size_t)kind) == 0;
    }
    /* int == int, without a call for the ints that fit a machine word. */
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)stored) &&
        PyUnstable_Long_IsCompact((PyLongObject *)key)) {
        return PyUnstable_Long_CompactValue((PyLongObject *)stored) ==
               PyUnstable_Long_CompactValue((PyLongObject *)key);
    }
#else
    Py_ssize_t size = Py_SIZE(stored);
    if (size >= -1 && size <= 1) {
        return size == Py_SIZE(key) &&
               (size == 0 || ((PyLongObject *)stored)->ob_digit[0] ==
                                 ((PyLongObject *)key)->ob_digit[0]);
    }
#endif
    /* long_richcompare allocates nothing and runs no Python code. */
    return PyObject_RichCompareBool(stored, key, Py_EQ);
}

/* node_find for a walk that must run no Python code (rule 1).  1: found, *slot
 * is the address of the value's slot; 0: absent; -2: a comparison would need
 * Python code. */
SM_ALWAYS_INLINE int
node_find_nocode(Node *node, uint64_t h, PyObject *key, PyObject ***slot)
{
    int shift;
    node = node_descend(node, h, &shift);
    Node *delta = NULL; /* the delta `node` is the base of, if any */
    for (;;) {
        unsigned pos = hash_pos(h, shift);
        uint32_t bit = 1u << pos;
        if (node->nodemap & bit) {
            node = (Node *)node->slots[node_child_index(node, pos)];
            if (node == NULL) {
                return 0; /* cleared by the GC */
            }
            delta = NULL;
            shift += HAMT_BITS;
            continue;
        }
        if (node->datamap & bit) {
            Py_ssize_t idx = node_entry_index(node, bit);
            PyObject *k = node->slots[idx];
            PyObject **vs = delta != NULL ? delta_slot(delta, bit) : NULL;
            if (vs == NULL) {
                vs = &node->slots[idx + 1];
            }
            if (k == NULL || HAMT_LOAD_RLX(vs) == NULL) {
                return 0;
            }
            *slot = vs;
            return keys_equal_nocode(k, key);
        }
        if (NODE_IS_DELTA(node)) {
            delta = node;
            node = (Node *)node->slots[0];
            if (node == NULL) {
                return 0;
            }
            continue;
        }
        if (!NODE_IS_COLLISION(node) || (uint64_t)node->hash != h) {
            return 0;
        }
        for (Py_ssize_t i = 0; i + 1 < Py_SIZE(node); i += 2) {
            PyObject *k = node->slots[i];
            if (k == NULL || HAMT_LOAD_RLX(&node->slots[i + 1]) == NULL) {
                continue;
            }
            int eq = keys_equal_nocode(k, key);
            if (eq != 0) {
                *slot = &node->slots[i + 1];
                return eq;
            }
        }
        return 0;
    }
}

/* 1 found (*out borrowed), 0 absent, -1 error. */
static int
trie_find(Trie *t, PyObject *key, PyObject **out)
{
    Py_hash_t h = sm_hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (t->root == NULL) {
        return 0;
    }
    /* Exact str/int keys compare without a call (the walk of a point read);
     * other keys take the walk that may run their __eq__. */
    PyObject **slot = NULL;
    int r = node_find_nocode(t->root, (uint64_t)h, key, &slot);
    if (r == -2) {
        return node_find(t->root, (uint64_t)h, key, out);
    }
    if (r > 0) {
        *out = *slot;
    }
    return r;
}

/* A value about to enter a version.  Free-threaded 3.14+: lock-free readers
 * take their reference to a value with PyUnstable_TryIncRef (see pm_find),
 * which may fail spuriously unless the object was marked for it by a holder of
 * a strong reference -- the caller here. */
static inline void
value_share(PyObject *value)
{
#if HAMT_LOCKFREE
    PyUnstable_EnableTryIncRef(value);
#else
    (void)value;
#endif
}

/* A new Trie with key -> value (t itself, as a new reference, when unchanged);
 * h is hash(key); *added (if not NULL) is set to 1 when key was absent. */
static Trie *
trie_assoc_hashed(Trie *t, PyObject *key, Py_hash_t h, PyObject *value, int *added)
{
    int add = 0;
    value_share(value);
    Node *root =
        node_assoc(t->root ? t->root : empty_node, 0, (uint64_t)h, key, value, &add, 0);
    if (root == NULL) {
        return NULL;
    }
    if (added != NULL) {
        *added = add;
    }
    if (root == t->root) {
        Py_DECREF(root);
        return (Trie *)Py_NewRef(t);
    }
    return trie_make(root, t->count + add);
}

static Trie *
trie_assoc(Trie *t, PyObject *key, PyObject *value, int *added)
{
    Py_hash_t h = sm_hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return NULL;
    }
    return trie_assoc_hashed(t, key, h, value, added);
}

/* 1: removed, *out a new Trie, *removed the removed value (a new reference);
 * 0: absent; -1: error. */
static int
trie_without(Trie *t, PyObject *key, Trie **out, PyObject **removed)
{
    Py_hash_t h = sm_hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (t->root == NULL) {
        return 0;
    }
    Node *root = NULL;
    int r = node_without(t->root, 0, (uint64_t)h, key, &root, removed, 0);
    if (r <= 0) {
        return r;
    }
    if (root == NULL) {
        root = (Node *)Py_NewRef(empty_node);
    }
    *out = trie_make(root, t->count - 1);
    if (*out == NULL) {
        Py_CLEAR(*removed);
        return -1;
    }
    return 1;
}

/* A Trie has no tp_clear (as a tuple has none): its only reference is its
 * root node, and nodes clear their slots, so every cycle through a Trie is
 * broken by the collector at a node.  So a Trie's root never changes while the
 * Trie lives, which PMap.rootnode relies on. */
static int
trie_traverse(Trie *self, visitproc visit, void *arg)
{
    Py_VISIT(self->root);
    return 0;
}

static void
trie_dealloc(Trie *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, trie_dealloc)
    Py_CLEAR(self->root);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

static PyObject *
trie_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)type;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0) || PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "Trie() takes no arguments");
        return NULL;
    }
    return (PyObject *)trie_empty();
}

static Py_ssize_t
trie_length(Trie *self)
{
    return self->count;
}

static PyObject *
trie_subscript(Trie *self, PyObject *key)
{
    PyObject *v = NULL;
    int r = trie_find(self, key, &v);
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(v);
}

static int
trie_contains(Trie *self, PyObject *key)
{
    PyObject *v = NULL;
    return trie_find(self, key, &v);
}

static PyObject *
trie_get(Trie *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *v = NULL;
    int r = trie_find(self, args[0], &v);
    if (r < 0) {
        return NULL;
    }
    return Py_NewRef(r ? v : (nargs == 2 ? args[1] : Py_None));
}

static PyObject *
trie_set(Trie *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set() takes 2 arguments");
        return NULL;
    }
    return (PyObject *)trie_assoc(self, args[0], args[1], NULL);
}

static PyObject *
trie_delete(Trie *self, PyObject *key)
{
    Trie *out = NULL;
    PyObject *removed = NULL;
    int r = trie_without(self, key, &out, &removed);
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    Py_DECREF(removed);
    return (PyObject *)out;
}

/* --------------------------------------------------------------- iteration */

enum { ITER_KEYS, ITER_VALUES, ITER_ITEMS };

typedef struct {
    PyObject_HEAD
    Trie *trie; /* keeps every node alive */
    PyObject *owner;    /* the map iterated (PersistentMapBase.__iter__/_items), or NULL */
    Py_ssize_t *active; /* the owner's count of iterations in progress (a stripe's) */
    int kind;
    int depth;
    Node *stack[HAMT_MAX_DEPTH]; /* strong references */
    Py_ssize_t pos[HAMT_MAX_DEPTH];
    /* Slots of entries in each frame's node (a delta's: its base's), where its
     * children begin: counted once when the frame is pushed, not per entry. */
    Py_ssize_t dataend[HAMT_MAX_DEPTH];
} TrieIter;

/* Push node (a new reference, stolen) as the iterator's next frame. */
static inline void
trieiter_push(TrieIter *it, Node *node)
{
    Node *base = NODE_IS_DELTA(node) ? (Node *)node->slots[0] : node;
    it->stack[it->depth] = node;
    it->pos[it->depth] = 0;
    it->dataend[it->depth] = base == NULL ? 0 : node_data_slots(base);
    it->depth++;
}

static PyObject *
trie_iter_make(Trie *t, int kind)
{
    TrieIter *it = PyObject_GC_New(TrieIter, &TrieIter_Type);
    if (it == NULL) {
        return NULL;
    }
    it->trie = (Trie *)Py_NewRef(t);
    it->owner = NULL;
    it->active = NULL;
    it->kind = kind;
    it->depth = 0;
    if (t->root != NULL) {
        trieiter_push(it, (Node *)Py_NewRef(t->root));
    }
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *trieiter_next_locked(TrieIter *it);

/* The iteration is over (exhausted or released): no longer in progress. */
static void
trieiter_detach(TrieIter *it)
{
    if (it->owner != NULL) {
#if SM_FREE_THREADED
        _Py_atomic_add_ssize(it->active, -1);
#else
        --*it->active;
#endif
        it->active = NULL;
        Py_CLEAR(it->owner);
    }
}

/* One iterator shared by several threads: on free-threaded builds its cursor
 * is advanced inside the iterator's critical section, so concurrent next()
 * calls never tear the stack (each entry is still yielded once overall). */
static PyObject *
trieiter_next(TrieIter *it)
{
    PyObject *res;
#if SM_FREE_THREADED
    Py_BEGIN_CRITICAL_SECTION(it);
    res = trieiter_next_locked(it);
    if (res == NULL) {
        trieiter_detach(it);
    }
    Py_END_CRITICAL_SECTION();
#else
    res = trieiter_next_locked(it);
    if (res == NULL) {
        trieiter_detach(it);
    }
#endif
    return res;
}

static PyObject *
trieiter_next_locked(TrieIter *it)
{
    while (it->depth > 0) {
        /* A node's entries (slot pairs from 0), then its children (one slot
         * each): the order is fixed by the version's nodes. */
        Node *top = it->stack[it->depth - 1], *node = top, *delta = NULL;
        Py_ssize_t p = it->pos[it->depth - 1];
        if (NODE_IS_DELTA(top)) {
            delta = top; /* its base's entries, some values replaced */
            node = (Node *)top->slots[0];
        }
        if (node == NULL || p >= Py_SIZE(node)) {
            it->depth--;
            it->stack[it->depth] = NULL;
            Py_DECREF(top);
            continue;
        }
        if (p >= it->dataend[it->depth - 1]) {
            it->pos[it->depth - 1] = p + 1;
            PyObject *child = node->slots[p];
            if (child == NULL) {
                continue; /* cleared by the GC */
            }
            if (it->depth >= HAMT_MAX_DEPTH) {
                PyErr_SetString(PyExc_SystemError, "persistent trie deeper than expected");
                return NULL;
            }
            trieiter_push(it, (Node *)Py_NewRef(child));
            continue;
        }
        it->pos[it->depth - 1] = p + 2;
        PyObject *k = node->slots[p];
        PyObject *v = node->slots[p + 1];
        if (delta != NULL) {
            uint32_t m = node->datamap; /* the position of entry p / 2 */
            for (Py_ssize_t i = 0; i < p / 2; i++) {
                m &= m - 1;
            }
            PyObject **vs = delta_slot(delta, m & (~m + 1));
            if (vs != NULL) {
                v = *vs;
            }
        }
        if (k == NULL || v == NULL) {
            continue;
        }
        switch (it->kind) {
        case ITER_KEYS:
            return Py_NewRef(k);
        case ITER_VALUES:
            return Py_NewRef(v);
        default:
            return PyTuple_Pack(2, k, v);
        }
    }
    return NULL;
}

static int
trieiter_traverse(TrieIter *it, visitproc visit, void *arg)
{
    Py_VISIT(it->trie);
    Py_VISIT(it->owner);
    for (int i = 0; i < it->depth; i++) {
        Py_VISIT(it->stack[i]);
    }
    return 0;
}

static int
trieiter_clear(TrieIter *it)
{
    while (it->depth > 0) {
        it->depth--;
        Py_CLEAR(it->stack[it->depth]);
    }
    trieiter_detach(it);
    Py_CLEAR(it->trie);
    return 0;
}

static void
trieiter_dealloc(TrieIter *it)
{
    PyObject_GC_UnTrack(it);
    trieiter_clear(it);
    PyObject_GC_Del(it);
}

static PyObject *
trieiter_length_hint(TrieIter *it, PyObject *Py_UNUSED(ignored))
{
    (void)it;
    return PyLong_FromLong(0);
}

static PyMethodDef trieiter_methods[] = {
    {"__length_hint__", (PyCFunction)trieiter_length_hint, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TrieIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.persistent._hamt.TrieIterator",
    .tp_basicsize = sizeof(TrieIter),
    .tp_dealloc = (destructor)trieiter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)trieiter_traverse,
    .tp_clear = (inquiry)trieiter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)trieiter_next,
    .tp_methods = trieiter_methods,
    .tp_doc = "Iterator over one version of a persistent trie.",
};

static PyObject *
trie_iter(Trie *self)
{
    return trie_iter_make(self, ITER_KEYS);
}

static PyObject *
trie_keys(Trie *self, PyObject *Py_UNUSED(ignored))
{
    return trie_iter_make(self, ITER_KEYS);
}

static PyObject *
trie_values(Trie *self, PyObject *Py_UNUSED(ignored))
{
    return trie_iter_make(self, ITER_VALUES);
}

static PyObject *
trie_items(Trie *self, PyObject *Py_UNUSED(ignored))
{
    return trie_iter_make(self, ITER_ITEMS);
}

static int
node_fill_dict(Node *node, PyObject *d)
{
    Node *delta = NULL;
    if (NODE_IS_DELTA(node)) {
        delta = node;
        node = (Node *)delta->slots[0];
        if (node == NULL) {
            return 0;
        }
    }
    Py_ssize_t data = node_data_slots(node);
    uint32_t m = node->datamap; /* delta: the position of entry i / 2 */
    for (Py_ssize_t i = 0; i + 1 < data; i += 2, m &= m - 1) {
        PyObject *k = node->slots[i];
        PyObject *v = node->slots[i + 1];
        PyObject **vs = delta != NULL ? delta_slot(delta, m & (~m + 1)) : NULL;
        if (vs != NULL) {
            v = *vs;
        }
        if (k != NULL && v != NULL && PyDict_SetItem(d, k, v) < 0) {
            return -1;
        }
    }
    for (Py_ssize_t i = data; i < Py_SIZE(node); i++) {
        PyObject *child = node->slots[i];
        if (child != NULL && node_fill_dict((Node *)child, d) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
trie_to_dict(Trie *self, PyObject *Py_UNUSED(ignored))
{
    /* Sized for the entries up front: no resize while filling. */
    PyObject *d = _PyDict_NewPresized(self->count);
    if (d == NULL) {
        return NULL;
    }
    if (self->root != NULL && node_fill_dict(self->root, d) < 0) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------- batch building
 *
 * A batch (TrieMutation, from Trie.mutate()) holds a private root and a fresh
 * mutation id; its changes edit the nodes it made in place (node_owned) and
 * copy any other node once.  finish() turns the root into a Trie and closes
 * the batch for good, so the nodes it made are never changed again. */

static uint64_t next_mutid = 1;

static uint64_t
mutid_new(void)
{
#if SM_FREE_THREADED
    return _Py_atomic_add_uint64(&next_mutid, 1);
#else
    return next_mutid++;
#endif
}

/* The batch state: root (a strong reference), count, mutid. */
typedef struct {
    Node *root;
    Py_ssize_t count;
    uint64_t mutid;
} Batch;

/* key -> value in the batch.  1: added, 0: replaced, -1: error (the batch
 * still holds exactly its previous entries). */
static int
batch_set(Batch *b, PyObject *key, PyObject *value)
{
    Py_hash_t h = sm_hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    int added = 0;
    value_share(value);
    Node *root = node_assoc(b->root, 0, (uint64_t)h, key, value, &added, b->mutid);
    if (root == NULL) {
        return -1;
    }
    Py_SETREF(b->root, root);
    b->count += added;
    return added;
}

/* Remove key.  1: removed (*removed a new reference), 0: absent, -1: error. */
static int
batch_delete(Batch *b, PyObject *key, PyObject **removed)
{
    Py_hash_t h = sm_hash(key);
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    Node *root = NULL;
    int r = node_without(b->root, 0, (uint64_t)h, key, &root, removed, b->mutid);
    if (r <= 0) {
        return r;
    }
    Py_SETREF(b->root, root != NULL ? root : (Node *)Py_NewRef(empty_node));
    b->count--;
    return 1;
}

/* Store every pair of src in batch b, in order, counting inserts and updates:
 * src is a dict or a list of (key, value) tuples, private to the caller (no
 * one else can change it while keys run Python code).  A dict is read in
 * place, without a tuple per pair.  0, or -1 (the batch still holds what it
 * stored before the failing pair). */
static int
batch_set_all(Batch *b, PyObject *src, Py_ssize_t *inserts, Py_ssize_t *updates)
{
    int is_dict = PyDict_Check(src);
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    for (;;) {
        if (is_dict) {
            if (!PyDict_Next(src, &pos, &key, &value)) {
                return 0;
            }
        }
        else {
            if (i >= PyList_GET_SIZE(src)) {
                return 0;
            }
            PyObject *pair = PyList_GET_ITEM(src, i++);
            key = PyTuple_GET_ITEM(pair, 0);
            value = PyTuple_GET_ITEM(pair, 1);
        }
        int added = batch_set(b, key, value);
        if (added < 0) {
            return -1;
        }
        ++*(added ? inserts : updates);
    }
}

typedef struct {
    PyObject_HEAD
    Batch b;   /* b.root NULL once finished */
    int busy;  /* a call is running: re-entry (a key's __eq__ using the batch) is refused */
} TrieMutation;

static PyTypeObject TrieMutation_Type;

static TrieMutation *
mutation_new(Trie *base)
{
    TrieMutation *m = PyObject_GC_New(TrieMutation, &TrieMutation_Type);
    if (m == NULL) {
        return NULL;
    }
    m->b.root = (Node *)Py_NewRef(base->root != NULL ? base->root : empty_node);
    m->b.count = base->root != NULL ? base->count : 0;
    m->b.mutid = mutid_new();
    m->busy = 0;
    PyObject_GC_Track(m);
    return m;
}

/* Enter a call: 0, or -1 with RuntimeError (finished, or re-entered). */
static int
mutation_enter(TrieMutation *m)
{
    if (m->b.root == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FrozenMap mutation used after finish()");
        return -1;
    }
    if (m->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a FrozenMap mutation cannot be used from a key's __eq__/__hash__ "
                        "during one of its own calls");
        return -1;
    }
    m->busy = 1;
    return 0;
}

/* Every method runs in the mutation's critical section (free-threaded builds):
 * a batch is meant for one thread, and this keeps misuse from tearing it. */
#define MUTATION_BEGIN(m) Py_BEGIN_CRITICAL_SECTION(m); if (mutation_enter(m) == 0) {
#define MUTATION_END(m) m->busy = 0; } Py_END_CRITICAL_SECTION();

static PyObject *
mutation_set(TrieMutation *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set() takes 2 arguments (key, value)");
        return NULL;
    }
    PyObject *res = NULL;
    MUTATION_BEGIN(m)
    int r = batch_set(&m->b, args[0], args[1]);
    res = r < 0 ? NULL : Py_NewRef(r ? Py_True : Py_False);
    MUTATION_END(m)
    return res;
}

static PyObject *
mutation_pop(TrieMutation *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *res = NULL;
    MUTATION_BEGIN(m)
    int r = batch_delete(&m->b, args[0], &res);
    if (r == 0) {
        if (nargs == 2) {
            res = Py_NewRef(args[1]);
        }
        else {
            PyErr_SetObject(PyExc_KeyError, args[0]);
        }
    }
    MUTATION_END(m)
    return res;
}

/* 1 found (*out strong), 0 absent, -1 error. */
static int
mutation_find(TrieMutation *m, PyObject *key, PyObject **out)
{
    int r = -1;
    MUTATION_BEGIN(m)
    Py_hash_t h = sm_hash(key);
    PyObject *v = NULL;
    r = h == -1 && PyErr_Occurred() ? -1 : node_find(m->b.root, (uint64_t)h, key, &v);
    if (r > 0) {
        *out = Py_NewRef(v);
    }
    MUTATION_END(m)
    return r;
}

static PyObject *
mutation_get(TrieMutation *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *v = NULL;
    int r = mutation_find(m, args[0], &v);
    if (r < 0) {
        return NULL;
    }
    return r ? v : Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *
mutation_subscript(TrieMutation *m, PyObject *key)
{
    PyObject *v = NULL;
    int r = mutation_find(m, key, &v);
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return r > 0 ? v : NULL;
}

static int
mutation_contains(TrieMutation *m, PyObject *key)
{
    PyObject *v = NULL;
    int r = mutation_find(m, key, &v);
    Py_XDECREF(v);
    return r;
}

static Py_ssize_t
mutation_length(TrieMutation *m)
{
    Py_ssize_t n = -1;
    MUTATION_BEGIN(m)
    n = m->b.count;
    MUTATION_END(m)
    return n;
}

/* finish(): the batch's entries as a new Trie; the batch is closed. */
static PyObject *
mutation_finish(TrieMutation *m, PyObject *Py_UNUSED(ignored))
{
    PyObject *res = NULL;
    MUTATION_BEGIN(m)
    Node *root = m->b.root;
    m->b.root = NULL; /* closed: its nodes are never changed again */
    m->b.mutid = 0;
    res = (PyObject *)trie_make(root, m->b.count);
    MUTATION_END(m)
    return res;
}

static int
mutation_traverse(TrieMutation *m, visitproc visit, void *arg)
{
    Py_VISIT(m->b.root);
    return 0;
}

static int
mutation_clear(TrieMutation *m)
{
    Py_CLEAR(m->b.root);
    return 0;
}

static void
mutation_dealloc(TrieMutation *m)
{
    PyObject_GC_UnTrack(m);
    Py_CLEAR(m->b.root);
    PyObject_GC_Del(m);
}

static PyMethodDef mutation_methods[] = {
    {"set", (PyCFunction)(void (*)(void))mutation_set, METH_FASTCALL,
     "set(key, value): key -> value in the batch; True if key was new."},
    {"pop", (PyCFunction)(void (*)(void))mutation_pop, METH_FASTCALL,
     "pop(key[, default]): remove key and return its value; default (or KeyError) if absent."},
    {"get", (PyCFunction)(void (*)(void))mutation_get, METH_FASTCALL,
     "get(key, default=None): the value for key, else default."},
    {"finish", (PyCFunction)mutation_finish, METH_NOARGS,
     "finish(): the batch as a new Trie; the batch cannot be used afterwards."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods mutation_as_mapping = {
    .mp_length = (lenfunc)mutation_length,
    .mp_subscript = (binaryfunc)mutation_subscript,
};

static PySequenceMethods mutation_as_sequence = {
    .sq_contains = (objobjproc)mutation_contains,
};

static PyTypeObject TrieMutation_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.persistent._hamt.TrieMutation",
    .tp_basicsize = sizeof(TrieMutation),
    .tp_dealloc = (destructor)mutation_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)mutation_traverse,
    .tp_clear = (inquiry)mutation_clear,
    .tp_as_mapping = &mutation_as_mapping,
    .tp_as_sequence = &mutation_as_sequence,
    .tp_methods = mutation_methods,
    .tp_doc = "A private batch of changes to a Trie (Trie.mutate()), built in place.",
};

static PyObject *
trie_mutate(Trie *self, PyObject *Py_UNUSED(ignored))
{
    return (PyObject *)mutation_new(self);
}

/* Trie.from_dict(d): a new version holding d's entries (one batch). */
static PyObject *
trie_from_dict(PyObject *Py_UNUSED(cls), PyObject *d)
{
    if (!PyDict_Check(d)) {
        PyErr_SetString(PyExc_TypeError, "from_dict() needs a dict");
        return NULL;
    }
    PyObject *copy = PyDict_Copy(d); /* one consistent read of d, private */
    if (copy == NULL) {
        return NULL;
    }
    Batch b = {(Node *)Py_NewRef(empty_node), 0, mutid_new()};
    Py_ssize_t inserts = 0, updates = 0;
    int r = batch_set_all(&b, copy, &inserts, &updates);
    Py_DECREF(copy);
    if (r < 0) {
        Py_DECREF(b.root);
        return NULL;
    }
    return (PyObject *)trie_make(b.root, b.count);
}

static PyMethodDef trie_methods[] = {
    {"from_dict", (PyCFunction)trie_from_dict, METH_O | METH_STATIC,
     "from_dict(d): a new Trie holding the entries of dict d."},
    {"get", (PyCFunction)(void (*)(void))trie_get, METH_FASTCALL,
     "get(key, default=None): the value for key, else default."},
    {"set", (PyCFunction)(void (*)(void))trie_set, METH_FASTCALL,
     "set(key, value): a new Trie with key -> value (this one unchanged)."},
    {"delete", (PyCFunction)trie_delete, METH_O,
     "delete(key): a new Trie without key; KeyError if absent."},
    {"keys", (PyCFunction)trie_keys, METH_NOARGS, "An iterator over the keys."},
    {"values", (PyCFunction)trie_values, METH_NOARGS, "An iterator over the values."},
    {"items", (PyCFunction)trie_items, METH_NOARGS, "An iterator over (key, value) pairs."},
    {"to_dict", (PyCFunction)trie_to_dict, METH_NOARGS, "A new dict with the entries."},
    {"mutate", (PyCFunction)trie_mutate, METH_NOARGS,
     "mutate(): a private batch (TrieMutation) starting from this version, built in place."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods trie_as_mapping = {
    .mp_length = (lenfunc)trie_length,
    .mp_subscript = (binaryfunc)trie_subscript,
};

static PySequenceMethods trie_as_sequence = {
    .sq_contains = (objobjproc)trie_contains,
};

static PyTypeObject Trie_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.persistent._hamt.Trie",
    .tp_basicsize = sizeof(Trie),
    .tp_dealloc = (destructor)trie_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)trie_traverse,
    .tp_as_mapping = &trie_as_mapping,
    .tp_as_sequence = &trie_as_sequence,
    .tp_iter = (getiterfunc)trie_iter,
    .tp_methods = trie_methods,
    .tp_new = trie_new,
    .tp_doc = "Trie(): one immutable version of a persistent hash trie.\n\n"
              "set() and delete() return new Tries sharing all unchanged nodes.",
};

/* ========================================================= PersistentMapBase
 *
 * Reading without a lock (free-threaded 3.14+).  The only shared mutable
 * words are PMap.root (the current version) with PMap.rootnode (its root
 * node, published beside it so that a point read starts its walk from the
 * map, one dependent load fewer) and, for in-place overwrites, value slots of
 * nodes only the current version reaches.  Three rules make lock-free readers
 * safe:
 *
 *  1. Reclamation: a writer that replaces the current version releases its
 *     reference with _PyObject_XDecRefDelayed, CPython's QSBR: the decrement
 *     happens only after every thread has passed a quiescent state (the eval
 *     loop's periodic check, or detaching: blocking, releasing the GIL-state).
 *     A reader that loaded the root pointer and runs no Python code, does not
 *     block and does not detach until it is done with it (a point read of an
 *     exact str/int key: pm_find's walk) therefore walks a version whose nodes
 *     all stay alive, without touching any shared cache line.  The same holds
 *     for the root node it loads from PMap.rootnode: a version's root never
 *     changes while the version lives (Trie has no tp_clear), pm_swap stores
 *     root and rootnode before pm_release runs, so a read that loads a root
 *     node, old or new, holds one its version keeps alive until the release;
 *     pm_clear clears rootnode before the version.  A reader that
 *     may run Python code (a key with its own __eq__, iteration, snapshot())
 *     takes a strong reference first: Py_INCREF on a version that is either
 *     current or waiting for its delayed release, so alive (pm_load).
 *  2. Values overwritten in place (pm_replace_in_place: only when no one but
 *     the map holds the version) are released at once, so a point read takes
 *     its reference to the value it found with PyUnstable_TryIncRef and loads
 *     the slot again, as CPython's dict does: an object freed by another
 *     thread stays readable memory (its refcount fields included) until the
 *     reader is quiescent, and a block already reused is caught by the second
 *     load.  Writers mark each value with PyUnstable_EnableTryIncRef before it
 *     enters a version (value_share), so TryIncRef fails only on a dying value.
 *  3. A strong reference and an in-place overwrite must not cross: an
 *     overwrite is allowed only while the version's sole holder is the map,
 *     and a reader taking a reference between the writer's check and its
 *     store would hold a version that then changes.  inplace_seq is a
 *     sequence lock around check+store (odd while one runs): pm_load retries
 *     if it changed around its increment.  With seq_cst fences on both sides
 *     (the writer bumps the sequence, then reads the reference counts; the
 *     reader increments, then reads the sequence), either the writer sees the
 *     reader's reference and copies instead, or the reader sees the sequence
 *     move and takes its reference again, after the store.
 *
 * GIL builds: the GIL makes each of these steps atomic; nothing is delayed.
 * 3.13t (no TryIncRef API): every read takes the map's critical section for
 * the load and increment, and the writer swaps the root in it.
 */

/* Borrowed point reads (rule 1) need QSBR or the GIL. */
#define HAMT_BORROWED_READS (HAMT_LOCKFREE || !SM_FREE_THREADED)

/* Statistics.  Point reads and iterations count into a stripe: on
 * free-threaded builds each thread uses its own cache line (up to
 * PM_STRIPES threads; more share stripes, still exactly, with atomic adds),
 * so readers never write a line another reader writes.  Writes count under
 * the writer lock. */
#if SM_FREE_THREADED
#  define PM_STRIPES 16
#else
#  define PM_STRIPES 1
#endif
typedef struct {
    /* Borrowed accesses to a version (rule 1): each increments `enter` before
     * it loads the root and, when it is done, exactly one of `leave`, `bhits`
     * and `bmisses`: a borrowed point read's hit or miss count is its leave,
     * so the read pays one atomic addition for both.  While `enter` differs
     * from the sum of the three, a reader of this stripe may hold a version
     * without a reference. */
    Py_ssize_t enter, leave, bhits, bmisses;
    Py_ssize_t hits, misses; /* point reads that held a reference to the version */
    Py_ssize_t iterations;
    Py_ssize_t active; /* iterations started and not yet finished */
} PMStripe;             /* one cache line (64 bytes) on 64-bit builds */

typedef struct {
    PyObject_HEAD
    Trie *root;        /* the current version; replaced only under wlock (pm_swap) */
    /* root->root, borrowed: published with root (pm_swap), so that a borrowed
     * point read loads the root node from the map itself, one dependent load
     * fewer.  Valid while root holds it: a Trie's root never changes
     * (trie_traverse), and a replaced version, with its root node, stays alive
     * until no borrowed read can still be using it (rule 1).  NULL when root is. */
    Node *rootnode;
    SMLock wlock;      /* serializes writers; its owner field detects re-entry */
    int strict;        /* the wlock holder is in a compute or a transaction (owner only) */
    void *txn_owner;   /* thread running this map's transaction callback, or NULL */
    uint64_t inplace_seq; /* odd while an in-place overwrite runs (rule 3) */
    PMStripe *stripes;    /* PM_STRIPES stripes, cache-line aligned, in stripes_mem */
    void *stripes_mem;
    /* Written only under wlock (relaxed atomics: stats() reads them unlocked). */
    Py_ssize_t inserts, updates, deletes, writes_during_iteration;
    Py_ssize_t lock_acquisitions, lock_contentions;
    int64_t lock_wait_ns;
} PMap;

static PyTypeObject PMap_Type;

#if SM_FREE_THREADED
static int next_stripe;
/* Read on every read: initial-exec TLS (SM_TLS_FAST, native/sm_compat.h). */
static SM_THREAD_LOCAL SM_TLS_FAST int my_stripe = -1;
#  define PM_ADD(p) _Py_atomic_add_ssize((p), 1)
#  define PM_ADD_LOCKED(p, n) _Py_atomic_store_ssize_relaxed((p), *(p) + (n))
#else
#  define PM_ADD(p) (++*(p))
#  define PM_ADD_LOCKED(p, n) (*(p) += (n))
#endif

/* The calling thread's stripe. */
static inline PMStripe *
pm_stripe(PMap *self)
{
#if SM_FREE_THREADED
    int i = my_stripe;
    if (SM_UNLIKELY(i < 0)) {
        i = my_stripe = _Py_atomic_add_int(&next_stripe, 1) % PM_STRIPES;
    }
    return &self->stripes[i];
#else
    return self->stripes;
#endif
}

/* Iterations of this map in progress (a writer counts writes made meanwhile). */
static Py_ssize_t
pm_active_iterations(PMap *self)
{
    Py_ssize_t n = 0;
    for (int i = 0; i < PM_STRIPES; i++) {
        n += SM_LOAD_SSIZE_RELAXED(&self->stripes[i].active);
    }
    return n;
}

/* Count one change (under wlock): *field += n. */
static inline void
pm_count_write(PMap *self, Py_ssize_t *field, Py_ssize_t n)
{
    PM_ADD_LOCKED(field, n);
    if (pm_active_iterations(self) > 0) {
        PM_ADD_LOCKED(&self->writes_during_iteration, n);
    }
}

/* A borrowed access to the current version begins / ends (rule 1). */
#if HAMT_LOCKFREE
#  define PM_ENTER(st) _Py_atomic_add_ssize(&(st)->enter, 1)
#  define PM_LEAVE(st) _Py_atomic_add_ssize(&(st)->leave, 1)
#else
#  define PM_ENTER(st) ((void)(st))
#  define PM_LEAVE(st) ((void)(st))
#endif

/* Release a replaced version (rule 1), after pm_swap and outside wlock.  If no
 * borrowed access is in flight, none can still be using the old version (one
 * that begins after the check loads the new root: the seq_cst fence here and
 * the readers' seq_cst increments of `enter` before they load the root order
 * the two), so it is released at once and the values it alone held are freed
 * now; otherwise QSBR releases it once every thread has been quiescent. */
static void
pm_release(PMap *self, Trie *old)
{
    if (old == NULL) {
        return;
    }
#if HAMT_LOCKFREE
    _Py_atomic_fence_seq_cst();
    for (int i = 0; i < PM_STRIPES; i++) {
        /* The three ends first, then `enter`: each counter only grows and no
         * end is counted before its `enter`, so the ends' sum, read before
         * `enter`, equals it only if every access that had begun by the last
         * of these loads had ended by then. */
        PMStripe *st = &self->stripes[i];
        Py_ssize_t left = _Py_atomic_load_ssize(&st->leave);
        left += _Py_atomic_load_ssize(&st->bhits);
        left += _Py_atomic_load_ssize(&st->bmisses);
        if (_Py_atomic_load_ssize(&st->enter) != left) {
            _PyObject_XDecRefDelayed((PyObject *)old);
            return;
        }
    }
#else
    (void)self;
#endif
    Py_DECREF(old);
}

/* A strong reference to the current version (rules 1 and 3). */
static Trie *
pm_load(PMap *self)
{
    Trie *t;
#if HAMT_LOCKFREE
    PMStripe *st = pm_stripe(self);
    PM_ENTER(st);
    for (;;) {
        uint64_t seq = _Py_atomic_load_uint64_acquire(&self->inplace_seq);
        if (seq & 1) {
            continue; /* an overwrite's check+store: a few instructions */
        }
        t = HAMT_LOAD_ROOT(&self->root);
        Py_XINCREF(t);
        _Py_atomic_fence_seq_cst();
        if (_Py_atomic_load_uint64_relaxed(&self->inplace_seq) == seq) {
            break;
        }
        Py_XDECREF(t);
    }
    PM_LEAVE(st);
#elif SM_FREE_THREADED
    Py_BEGIN_CRITICAL_SECTION(self);
    t = self->root;
    Py_XINCREF(t);
    Py_END_CRITICAL_SECTION();
#else
    t = self->root;
    Py_XINCREF(t);
#endif
    if (t == NULL) { /* only after tp_clear */
        t = trie_empty();
    }
    return t;
}

/* Install t (a new reference, stolen) and return the replaced version.  Called
 * holding wlock; the caller releases the returned version (pm_release) after
 * releasing wlock, so values it frees run their __del__ outside the lock. */
static Trie *
pm_swap(PMap *self, Trie *t)
{
    Trie *old;
#if HAMT_LOCKFREE
    /* A borrowed read may load rootnode before or after root is replaced, so
     * it may pair the new version with the old root node: both stay alive
     * until pm_release, which comes after both stores. */
    old = self->root;
    HAMT_STORE_REL(&self->root, t);
    HAMT_STORE_REL(&self->rootnode, t != NULL ? t->root : NULL);
#elif SM_FREE_THREADED
    Py_BEGIN_CRITICAL_SECTION(self);
    old = self->root;
    self->root = t;
    self->rootnode = t != NULL ? t->root : NULL;
    Py_END_CRITICAL_SECTION();
#else
    old = self->root;
    self->root = t;
    self->rootnode = t != NULL ? t->root : NULL;
#endif
    return old;
}

/* Reads from inside this map's transaction callback are refused, as for the
 * other maps: the callback must use its view. */
static inline int
pm_check_txn(PMap *self)
{
    void *owner = SM_LOAD_PTR_RELAXED(&self->txn_owner);
    if (SM_UNLIKELY(owner != NULL && owner == sm_me())) {
        PyErr_SetObject(RecursiveUpdateError, MSG_IN_TRANSACTION);
        return -1;
    }
    return 0;
}

static Trie *
pm_read(PMap *self)
{
    if (pm_check_txn(self) < 0) {
        return NULL;
    }
    return pm_load(self);
}

/* A plain write rebuilds at most this many times on top of nested writes (see
 * pm_write_begin); past it, a key whose __eq__/__hash__ writes to the map on
 * every call is refused rather than looping forever. */
#define PM_MAX_REBUILDS 1000

static int
pm_rebuild_refused(void)
{
    PyErr_SetString(RecursiveUpdateError,
                    "the map changed under this write on every attempt: a key's "
                    "__eq__/__hash__ writes to it each time it is called");
    return -1;
}

static inline int64_t
pm_now_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t = 0;
    (void)PyTime_PerfCounterRaw(&t);
    return (int64_t)t;
#else
    return (int64_t)_PyTime_GetPerfCounter();
#endif
}

/* Take the writer lock (counted; only a contended wait is timed). */
static int
pm_lock(PMap *self, void *me)
{
    int contended;
    int64_t t0 = SM_LOAD_PTR_RELAXED(&self->wlock.owner) != NULL ? pm_now_ns() : 0;
    if (sm_lock_acquire(&self->wlock, me, &contended) < 0) {
        return -1;
    }
    PM_ADD_LOCKED(&self->lock_acquisitions, 1);
    if (contended) {
        PM_ADD_LOCKED(&self->lock_contentions, 1);
        if (t0 != 0) {
#if SM_FREE_THREADED
            _Py_atomic_store_int64_relaxed(&self->lock_wait_ns,
                                           self->lock_wait_ns + pm_now_ns() - t0);
#else
            self->lock_wait_ns += pm_now_ns() - t0;
#endif
        }
    }
    return 0;
}

/* Take the writer lock for a plain write (one that does not read first: store,
 * delete, clear).  A thread that already holds the lock is inside one of this
 * map's operations: a garbage-collector finalizer, a __del__ or a key's __eq__
 * writing to the map.  Inside a compute or a transaction that write is refused
 * (RecursiveUpdateError); inside a plain write it is applied at once, under the
 * hold the thread already has (*nested = 1), and the outer write, which sees
 * that the version changed under it, rebuilds on top of it (pm_store_impl). */
static int
pm_write_begin(PMap *self, int *nested)
{
    void *me = sm_me();
    *nested = 0;
    if (sm_lock_held_by(&self->wlock, me)) {
        if (self->strict) {
            PyErr_SetObject(RecursiveUpdateError, self->txn_owner == me ? MSG_IN_TRANSACTION
                                                                        : MSG_IN_OPERATION);
            return -1;
        }
        *nested = 1;
        return 0;
    }
    return pm_lock(self, me);
}

static inline void
pm_write_end(PMap *self, int nested)
{
    if (!nested) {
        sm_lock_release(&self->wlock);
    }
}

/* Take the writer lock for a compute or a transaction: refused for a thread
 * that already holds it (a read-modify-write cannot nest in another write). */
static int
pm_strict_begin(PMap *self)
{
    void *me = sm_me();
    if (sm_lock_held_by(&self->wlock, me)) {
        PyErr_SetObject(RecursiveUpdateError, self->txn_owner == me ? MSG_IN_TRANSACTION
                                                                    : MSG_IN_OPERATION);
        return -1;
    }
    if (pm_lock(self, me) < 0) {
        return -1;
    }
    self->strict = 1;
    return 0;
}

static inline void
pm_strict_end(PMap *self)
{
    self->strict = 0;
    sm_lock_release(&self->wlock);
}

static PyObject *
pm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    PMap *self = (PMap *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    memset(&self->wlock, 0, sizeof(self->wlock));
    self->strict = 0;
    self->txn_owner = NULL;
    self->inplace_seq = 0;
    self->inserts = self->updates = self->deletes = self->writes_during_iteration = 0;
    self->lock_acquisitions = self->lock_contentions = 0;
    self->lock_wait_ns = 0;
    self->stripes_mem = PyMem_RawCalloc(PM_STRIPES + 1, sizeof(PMStripe));
    if (self->stripes_mem == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    uintptr_t at = ((uintptr_t)self->stripes_mem + 63) & ~(uintptr_t)63;
    self->stripes = (PMStripe *)at;
    self->rootnode = NULL;
    self->root = trie_empty();
    if (self->root == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->rootnode = self->root->root;
    return (PyObject *)self;
}

static int
pm_traverse(PMap *self, visitproc visit, void *arg)
{
    Py_VISIT(self->root);
    return 0;
}

static int
pm_clear(PMap *self)
{
    HAMT_STORE_REL(&self->rootnode, NULL); /* before the version that holds it goes */
    Py_CLEAR(self->root);
    return 0;
}

static void
pm_dealloc(PMap *self)
{
    /* A heap subclass's dealloc (subtype_dealloc) untracks, uses the trashcan
     * and releases the type; this static base releases its own fields. */
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, pm_dealloc)
    self->rootnode = NULL;
    Py_CLEAR(self->root);
    sm_lock_fini(&self->wlock);
    PyMem_RawFree(self->stripes_mem);
    self->stripes_mem = NULL;
    self->stripes = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

static Py_ssize_t
pm_length(PMap *self)
{
    if (pm_check_txn(self) < 0) {
        return -1;
    }
#if HAMT_BORROWED_READS
    PMStripe *st = pm_stripe(self);
    PM_ENTER(st);
    Trie *t = HAMT_LOAD_ROOT(&self->root); /* borrowed (rule 1): count never changes */
    Py_ssize_t n = t == NULL ? 0 : t->count;
    PM_LEAVE(st);
    return n;
#else
    Trie *t = pm_load(self);
    Py_ssize_t n = t->count;
    Py_DECREF(t);
    return n;
#endif
}

/* A point read.  1 found (*out strong), 0 absent, -1 error.  Counted.
 * Inlined into each read (m[k], get, in, load), with the walk: the calls
 * showed as a tenth of a lookup's instructions. */
SM_ALWAYS_INLINE int
pm_find(PMap *self, PyObject *key, PyObject **out)
{
    if (pm_check_txn(self) < 0) {
        return -1;
    }
    Py_hash_t h = sm_hash(key); /* may run Python code: before any load */
    if (h == -1 && PyErr_Occurred()) {
        return -1;
    }
    int r = -2;
    PMStripe *st = pm_stripe(self);
#if HAMT_BORROWED_READS
    PM_ENTER(st);
    for (;;) {
        /* Borrowed: nothing below runs Python code, blocks or detaches (rule 1).
         * The root node straight from the map (PMap.rootnode). */
        Node *root = HAMT_LOAD_ROOT(&self->rootnode);
        PyObject **slot = NULL;
        r = root == NULL ? -2 : node_find_nocode(root, (uint64_t)h, key, &slot);
        if (r <= 0) {
            break;
        }
        PyObject *v = HAMT_LOAD_ACQ(slot);
#  if HAMT_LOCKFREE
        /* Rule 2: the slot may be overwritten in place and v freed meanwhile. */
        if (v != NULL && PyUnstable_TryIncRef(v)) {
            if (HAMT_LOAD_ACQ(slot) == v) {
                *out = v;
                break;
            }
            Py_DECREF(v);
            continue; /* overwritten meanwhile: read again */
        }
        if (v == NULL || HAMT_LOAD_ACQ(slot) != v) {
            continue;
        }
        r = -2; /* TryIncRef failed though v is still there: hold the version */
        break;
#  else
        *out = Py_NewRef(v);
        break;
#  endif
    }
    /* The hit or miss count ends the borrowed access (see PMStripe). */
    if (r == 1) {
        PM_ADD(&st->bhits);
    }
    else if (r == 0) {
        PM_ADD(&st->bmisses);
    }
    else {
        PM_LEAVE(st);
    }
    if (r != -2) {
        return r;
    }
#endif
    if (r == -2) {
        /* A key whose comparison may run Python code: hold the version. */
        Trie *t = pm_load(self);
        if (t == NULL) {
            return -1;
        }
        PyObject *v = NULL;
        r = t->root == NULL ? 0 : node_find(t->root, (uint64_t)h, key, &v);
        if (r > 0) {
            *out = Py_NewRef(v);
        }
        Py_DECREF(t);
    }
    if (r >= 0) {
        PM_ADD(r ? &st->hits : &st->misses);
    }
    return r;
}

static PyObject *
pm_subscript(PMap *self, PyObject *key)
{
    PyObject *v = NULL;
    int r = pm_find(self, key, &v);
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
    }
    return r > 0 ? v : NULL;
}

static int
pm_contains(PMap *self, PyObject *key)
{
    PyObject *v = NULL;
    int r = pm_find(self, key, &v);
    Py_XDECREF(v);
    return r;
}

static PyObject *
pm_get(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *v = NULL;
    int r = pm_find(self, args[0], &v);
    if (r < 0) {
        return NULL;
    }
    return r ? v : Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *
found_pair(int r, PyObject *v) /* steals v when r > 0 */
{
    if (r < 0) {
        return NULL;
    }
    if (r == 0) {
        return PyTuple_Pack(2, Py_None, Py_False);
    }
    PyObject *res = PyTuple_Pack(2, v, Py_True);
    Py_DECREF(v);
    return res;
}

static PyObject *
pm_load_method(PMap *self, PyObject *key)
{
    PyObject *v = NULL;
    int r = pm_find(self, key, &v);
    return found_pair(r, v);
}

/* An iteration of the current version, counted (iterations, and in progress
 * until the iterator ends or is released). */
static PyObject *
pm_iter_kind(PMap *self, int kind)
{
    Trie *t = pm_read(self);
    if (t == NULL) {
        return NULL;
    }
    TrieIter *it = (TrieIter *)trie_iter_make(t, kind);
    Py_DECREF(t);
    if (it == NULL) {
        return NULL;
    }
    PMStripe *st = pm_stripe(self);
    PM_ADD(&st->iterations);
    PM_ADD(&st->active);
    it->active = &st->active;
    it->owner = Py_NewRef(self);
    return (PyObject *)it;
}

static PyObject *
pm_iter(PMap *self)
{
    return pm_iter_kind(self, ITER_KEYS);
}

static PyObject *
pm_items(PMap *self, PyObject *Py_UNUSED(ignored))
{
    return pm_iter_kind(self, ITER_ITEMS);
}

static PyObject *
pm_current(PMap *self, PyObject *Py_UNUSED(ignored))
{
    return (PyObject *)pm_read(self);
}

/* _stats(): the counters, as a dict (read without a lock: each is exact, the
 * set is not one instant). */
static PyObject *
pm_stats(PMap *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t hits = 0, misses = 0, iterations = 0;
    for (int i = 0; i < PM_STRIPES; i++) {
        hits += SM_LOAD_SSIZE_RELAXED(&self->stripes[i].hits) +
                SM_LOAD_SSIZE_RELAXED(&self->stripes[i].bhits);
        misses += SM_LOAD_SSIZE_RELAXED(&self->stripes[i].misses) +
                  SM_LOAD_SSIZE_RELAXED(&self->stripes[i].bmisses);
        iterations += SM_LOAD_SSIZE_RELAXED(&self->stripes[i].iterations);
    }
#if SM_FREE_THREADED
    int64_t wait_ns = _Py_atomic_load_int64_relaxed(&self->lock_wait_ns);
#else
    int64_t wait_ns = self->lock_wait_ns;
#endif
    return Py_BuildValue(
        "{sn sn sn sn sn sn sn sn sn sL}", "hits", hits, "misses", misses, "iterations",
        iterations, "inserts", SM_LOAD_SSIZE_RELAXED(&self->inserts), "updates",
        SM_LOAD_SSIZE_RELAXED(&self->updates), "deletes", SM_LOAD_SSIZE_RELAXED(&self->deletes),
        "writes_during_iteration", SM_LOAD_SSIZE_RELAXED(&self->writes_during_iteration),
        "lock_acquisitions", SM_LOAD_SSIZE_RELAXED(&self->lock_acquisitions),
        "lock_contentions", SM_LOAD_SSIZE_RELAXED(&self->lock_contentions), "lock_wait_ns",
        (long long)wait_ns);
}

/* ------------------------------------------------------------------ writes
 *
 * Every write: take wlock, read the current version (no other writer can
 * replace it meanwhile), build the next version (may run key __hash__/__eq__
 * and, for compute, the callback: an exception publishes nothing), swap it in,
 * release wlock, then release the replaced version. */

/* Replace the value of an existing key in place, when nobody but the map can
 * see the current version.
 *
 * Why this is safe: a version is immutable once *observable*.  If the current
 * Trie's only reference is the map's (plus the one this call holds), no
 * iterator or snapshot holds it; if every node on the key's path has exactly
 * one reference (its parent), no older version and no iterator shares them.
 * Borrowed point readers hold no reference; they see the slot change in one
 * atomic store and take their reference to the value with TryIncRef (rule 2).
 * The check and the store happen with no Python code in between, inside the
 * sequence lock that pm_load respects (rule 3; the map's critical section on
 * 3.13t), so no strong reference can be taken meanwhile.  The walk that finds
 * the slot may run key __eq__ (Python code) and so comes before the check; the
 * path cannot change during it, because only the writer (this thread, holding
 * wlock) changes versions.
 *
 * 1: replaced, *old is the replaced value (strong; released by the caller
 * after wlock); 0: not applicable (key absent or version shared); -1: error. */
static int
pm_replace_in_place(PMap *self, PyObject *key, uint64_t h, PyObject *value, PyObject **old)
{
    Trie *cur = self->root;
    if (cur == NULL || cur->root == NULL || Py_REFCNT(cur) != 1) {
        return 0;
    }
    Py_INCREF(cur); /* keeps the path alive while __eq__ runs */
    Node *path[2 * HAMT_MAX_DEPTH];
    int depth = 0, shift = 0, r = 0;
    Py_ssize_t slot = -1;
    Node *node = cur->root;
    /* path: every node the walk passes, a delta's base included when the walk
     * goes on into one of its children (a child of a base that a kept version
     * shares is shared too), not when the value is the delta's own slot. */
    Node *delta = NULL; /* the delta `node` is the base of, if any */
    Node *owner = NULL; /* the node holding the value's slot */
    while (slot < 0 && depth < 2 * HAMT_MAX_DEPTH) {
        path[depth++] = node;
        uint32_t bit = bitpos(h, shift);
        if (node->nodemap & bit) {
            node = (Node *)node->slots[node_child_index(node, hash_pos(h, shift))];
            if (node == NULL) {
                break;
            }
            delta = NULL;
            shift += HAMT_BITS;
            continue;
        }
        if (node->datamap & bit) {
            Py_ssize_t idx = node_entry_index(node, bit);
            PyObject *k = node->slots[idx];
            PyObject **vs = delta != NULL ? delta_slot(delta, bit) : &node->slots[idx + 1];
            if (k == NULL || vs == NULL || *vs == NULL ||
                (delta != NULL && Py_REFCNT(node) == 1)) {
                /* A value of a delta's base (shared: the delta grows instead),
                 * or a delta whose base nobody else holds any more: the
                 * persistent write compacts it, releasing the values the base
                 * still held. */
                break;
            }
            r = keys_equal(k, key);
            if (r > 0) {
                owner = delta != NULL ? delta : node;
                slot = vs - owner->slots;
                if (delta != NULL) {
                    depth--; /* the value is the delta's: its base may stay shared */
                }
            }
            break;
        }
        if (NODE_IS_DELTA(node)) {
            delta = node;
            node = (Node *)node->slots[0];
            if (node == NULL) {
                break;
            }
            continue;
        }
        if (!NODE_IS_COLLISION(node) || (uint64_t)node->hash != h) {
            break;
        }
        for (Py_ssize_t i = 0; i + 1 < Py_SIZE(node); i += 2) {
            if (node->slots[i] == NULL || node->slots[i + 1] == NULL) {
                continue;
            }
            r = keys_equal(node->slots[i], key);
            if (r != 0) {
                slot = r > 0 ? i + 1 : -1;
                owner = node;
                break;
            }
        }
        break;
    }
    int done = 0;
    if (slot >= 0) {
        value_share(value);
#if HAMT_LOCKFREE
        uint64_t seq = self->inplace_seq; /* written only under wlock */
        _Py_atomic_store_uint64_relaxed(&self->inplace_seq, seq + 1);
        _Py_atomic_fence_seq_cst();
#elif SM_FREE_THREADED
        Py_BEGIN_CRITICAL_SECTION(self);
#endif
        int unique = self->root == cur && Py_REFCNT(cur) == 2;
        for (int i = 0; unique && i < depth; i++) {
            unique = Py_REFCNT(path[i]) == 1;
        }
        if (unique) {
            *old = owner->slots[slot];
            HAMT_STORE_REL(&owner->slots[slot], Py_NewRef(value));
            done = 1;
        }
#if HAMT_LOCKFREE
        _Py_atomic_store_uint64_release(&self->inplace_seq, seq + 2);
#elif SM_FREE_THREADED
        Py_END_CRITICAL_SECTION();
#endif
    }
    Py_DECREF(cur);
    return r < 0 ? -1 : done;
}

/* MISSING and DELETE are markers, never values: storing one raises TypeError
 * before anything changes (they would read back as "absent" or "remove"). */
static int
pm_refuse_sentinel(PyObject *value)
{
    if (SM_UNLIKELY(value == MISSING || value == DELETE)) {
        PyErr_Format(PyExc_TypeError, "safemap.%s is a sentinel and cannot be stored as a value",
                     value == MISSING ? "MISSING" : "DELETE");
        return -1;
    }
    return 0;
}

static int
pm_store_impl(PMap *self, PyObject *key, PyObject *value)
{
    int nested;
    if (pm_refuse_sentinel(value) < 0 || pm_write_begin(self, &nested) < 0) {
        return -1;
    }
    PyObject *replaced = NULL;
    Trie *old = NULL;
    Py_hash_t h = sm_hash(key);
    int r = h == -1 && PyErr_Occurred() ? -1 : 0;
    for (int attempt = 0; r == 0; attempt++) {
        if (attempt == PM_MAX_REBUILDS) {
            r = pm_rebuild_refused();
            break;
        }
        r = pm_replace_in_place(self, key, (uint64_t)h, value, &replaced);
        if (r != 0) {
            if (r > 0) {
                pm_count_write(self, &self->updates, 1);
            }
            break;
        }
        Trie *cur = pm_load(self);
        int added = 0;
        Trie *next = cur == NULL ? NULL : trie_assoc_hashed(cur, key, h, value, &added);
        if (next == NULL) {
            Py_XDECREF(cur);
            r = -1;
        }
        else if (self->root != cur) {
            /* A nested write (a finalizer run by an allocation above, or a
             * key's __eq__) published meanwhile: build again on top of it. */
            Py_DECREF(next);
            Py_DECREF(cur);
        }
        else {
            old = pm_swap(self, next);
            Py_DECREF(cur);
            pm_count_write(self, added ? &self->inserts : &self->updates, 1);
            r = 1;
        }
    }
    pm_write_end(self, nested);
    pm_release(self, old);
    Py_XDECREF(replaced);
    return r < 0 ? -1 : 0;
}

/* _store_items(items): update()'s last step.  Stores a list of (key, value)
 * pairs (no sentinel among them: update() checked) as one batch built on the
 * current version (Trie.mutate(): each node copied at most once, not a path per
 * key) and published as one version, so all the keys take effect at the same
 * instant and a later pair of the same key wins.  A plain write: a nested
 * write (a key's __eq__/__hash__, a finalizer) lands at once and the batch is
 * built again on top of it, as in pm_store_impl. */
static PyObject *
pm_store_items(PMap *self, PyObject *arg)
{
    /* items: a private copy of a dict (the constructor's), or the list of
     * pairs update() built for this call (its own: no one else changes it),
     * with our reference kept across the Python code keys run. */
    PyObject *items;
    Py_ssize_t n;
    if (PyDict_CheckExact(arg)) {
        if ((items = PyDict_Copy(arg)) == NULL) {
            return NULL;
        }
        n = PyDict_GET_SIZE(items);
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(items, &pos, &key, &value)) {
            if (pm_refuse_sentinel(value) < 0) {
                Py_DECREF(items);
                return NULL;
            }
        }
    }
    else if (PyList_Check(arg)) {
        n = PyList_GET_SIZE(arg);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *pair = PyList_GET_ITEM(arg, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError,
                                "_store_items() needs a list of (key, value) pairs or a dict");
                return NULL;
            }
            if (pm_refuse_sentinel(PyTuple_GET_ITEM(pair, 1)) < 0) {
                return NULL;
            }
        }
        items = Py_NewRef(arg);
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "_store_items() needs a list of (key, value) pairs or a dict");
        return NULL;
    }
    if (n == 0) {
        Py_DECREF(items);
        Py_RETURN_NONE; /* nothing to store: no write, no lock (as n stores) */
    }
    int nested;
    if (pm_write_begin(self, &nested) < 0) {
        Py_DECREF(items);
        return NULL;
    }
    Trie *old = NULL;
    int r = 0;
    for (int attempt = 0; r == 0; attempt++) {
        if (attempt == PM_MAX_REBUILDS) {
            r = pm_rebuild_refused();
            break;
        }
        Trie *cur = pm_load(self);
        if (cur == NULL) {
            r = -1;
            break;
        }
        Batch b = {(Node *)Py_NewRef(cur->root != NULL ? cur->root : empty_node),
                   cur->root != NULL ? cur->count : 0, mutid_new()};
        Py_ssize_t inserts = 0, updates = 0;
        r = batch_set_all(&b, items, &inserts, &updates);
        if (r < 0 || self->root != cur) {
            /* An error, or a nested write published meanwhile: drop the batch
             * (and, for the latter, build it again on top). */
            Py_DECREF(b.root);
            Py_DECREF(cur);
            continue;
        }
        Trie *next = trie_make(b.root, b.count);
        Py_DECREF(cur);
        if (next == NULL) {
            r = -1;
            break;
        }
        old = pm_swap(self, next);
        if (inserts > 0) {
            pm_count_write(self, &self->inserts, inserts);
        }
        if (updates > 0) {
            pm_count_write(self, &self->updates, updates);
        }
        r = 1;
    }
    pm_write_end(self, nested);
    pm_release(self, old);
    Py_DECREF(items);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* 1: removed, *out the value (strong); 0: absent; -1: error. */
static int
pm_pop_impl(PMap *self, PyObject *key, PyObject **out)
{
    int nested;
    if (pm_write_begin(self, &nested) < 0) {
        return -1;
    }
    Trie *old = NULL;
    int r;
    for (int attempt = 0;; attempt++) {
        if (attempt == PM_MAX_REBUILDS) {
            r = pm_rebuild_refused();
            break;
        }
        Trie *cur = pm_load(self);
        Trie *next = NULL;
        PyObject *removed = NULL;
        r = cur == NULL ? -1 : trie_without(cur, key, &next, &removed);
        if (r > 0 && self->root != cur) {
            /* A nested write published meanwhile (see pm_store_impl). */
            Py_DECREF(next);
            Py_DECREF(removed);
            Py_DECREF(cur);
            continue;
        }
        if (r > 0) {
            *out = removed;
            old = pm_swap(self, next);
            pm_count_write(self, &self->deletes, 1);
        }
        Py_XDECREF(cur);
        break;
    }
    pm_write_end(self, nested);
    pm_release(self, old);
    return r;
}

static int
pm_ass_subscript(PMap *self, PyObject *key, PyObject *value)
{
    if (value != NULL) {
        return pm_store_impl(self, key, value);
    }
    PyObject *v = NULL;
    int r = pm_pop_impl(self, key, &v);
    if (r == 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    Py_XDECREF(v);
    return r < 0 ? -1 : 0;
}

static PyObject *
pm_store(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "store() takes 2 arguments (key, value)");
        return NULL;
    }
    if (pm_store_impl(self, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
pm_load_and_delete(PMap *self, PyObject *key)
{
    PyObject *v = NULL;
    int r = pm_pop_impl(self, key, &v);
    return found_pair(r, v);
}

static PyObject *
pm_delete(PMap *self, PyObject *key)
{
    PyObject *v = NULL;
    int r = pm_pop_impl(self, key, &v);
    if (r < 0) {
        return NULL;
    }
    Py_XDECREF(v);
    Py_RETURN_NONE;
}

static PyObject *
pm_pop(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop() takes 1 or 2 arguments");
        return NULL;
    }
    PyObject *v = NULL;
    int r = pm_pop_impl(self, args[0], &v);
    if (r < 0) {
        return NULL;
    }
    if (r > 0) {
        return v;
    }
    if (nargs == 2) {
        return Py_NewRef(args[1]);
    }
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

/* load_or_store(key, value): a plain write that reads first, with no callback,
 * so it is not a compute (a finalizer's write nested in it lands, and it
 * rebuilds on top of such a write like pm_store_impl). */
static PyObject *
pm_load_or_store(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load_or_store() takes 2 arguments (key, value)");
        return NULL;
    }
    PyObject *key = args[0], *value = args[1];
    int nested;
    if (pm_refuse_sentinel(value) < 0 || pm_write_begin(self, &nested) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Trie *old = NULL;
    Py_hash_t h = sm_hash(key);
    for (int attempt = 0; !(h == -1 && PyErr_Occurred()); attempt++) {
        if (attempt == PM_MAX_REBUILDS) {
            pm_rebuild_refused();
            break;
        }
        Trie *cur = pm_load(self);
        PyObject *v = NULL;
        int r = cur == NULL ? -1 : trie_find(cur, key, &v);
        if (r != 0) {
            result = r > 0 ? PyTuple_Pack(2, v, Py_True) : NULL;
            Py_XDECREF(cur);
            break;
        }
        Trie *next = trie_assoc_hashed(cur, key, h, value, NULL);
        if (next != NULL && self->root != cur) {
            /* A nested write published meanwhile (see pm_store_impl). */
            Py_DECREF(next);
            Py_DECREF(cur);
            continue;
        }
        if (next != NULL) {
            old = pm_swap(self, next);
            pm_count_write(self, &self->inserts, 1);
            result = PyTuple_Pack(2, value, Py_False);
        }
        Py_DECREF(cur);
        break;
    }
    pm_write_end(self, nested);
    pm_release(self, old);
    return result;
}

static PyObject *
pm_compute(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "compute() takes 2 arguments (key, fn)");
        return NULL;
    }
    PyObject *key = args[0], *fn = args[1];
    if (pm_strict_begin(self) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    Trie *next = NULL, *old = NULL;
    Trie *cur = pm_load(self);
    PyObject *oldv = NULL, *removed = NULL, *replaced = NULL;
    int r = cur == NULL ? -1 : trie_find(cur, key, &oldv);
    if (r >= 0) {
        /* oldv is borrowed from cur, which this call keeps alive. */
        PyObject *newv = PyObject_CallFunctionObjArgs(fn, key, r ? oldv : MISSING, NULL);
        if (newv == DELETE) {
            Py_DECREF(newv);
            int w = r ? trie_without(cur, key, &next, &removed) : 0;
            if (w >= 0) {
                result = Py_NewRef(Py_None);
            }
            if (w > 0) {
                pm_count_write(self, &self->deletes, 1);
            }
        }
        else if (newv != NULL && pm_refuse_sentinel(newv) < 0) {
            Py_CLEAR(newv); /* fn returned MISSING: TypeError, nothing changes */
        }
        else if (newv != NULL) {
            Py_hash_t h = r ? sm_hash(key) : 0; /* cached for str/int keys */
            int done = h == -1 && PyErr_Occurred() ? -1 : 0;
            if (r && done == 0) {
                /* Our reference to cur would make the version look shared. */
                Py_CLEAR(cur);
                done = pm_replace_in_place(self, key, (uint64_t)h, newv, &replaced);
                if (done == 0) {
                    cur = pm_load(self);
                }
            }
            if (done == 0) {
                next = trie_assoc(cur, key, newv, NULL);
                done = next != NULL ? 1 : -1;
            }
            if (done > 0) {
                pm_count_write(self, r ? &self->updates : &self->inserts, 1);
            }
            result = done > 0 ? newv : NULL;
            if (result == NULL) {
                Py_DECREF(newv);
            }
        }
    }
    if (next != NULL) {
        old = pm_swap(self, next);
    }
    pm_strict_end(self);
    Py_XDECREF(cur);
    pm_release(self, old);
    Py_XDECREF(replaced);
    Py_XDECREF(removed);
    return result;
}

static PyObject *
pm_clear_method(PMap *self, PyObject *Py_UNUSED(ignored))
{
    Trie *empty = trie_empty();
    if (empty == NULL) {
        return NULL;
    }
    int nested;
    if (pm_write_begin(self, &nested) < 0) {
        Py_DECREF(empty);
        return NULL;
    }
    Trie *old = pm_swap(self, empty);
    if (old != NULL && old->count > 0) {
        pm_count_write(self, &self->deletes, old->count);
    }
    pm_write_end(self, nested);
    pm_release(self, old);
    Py_RETURN_NONE;
}

/* _publish(trie): install a version (under the writer lock). */
static PyObject *
pm_publish(PMap *self, PyObject *t)
{
    if (!Py_IS_TYPE(t, &Trie_Type)) {
        PyErr_SetString(PyExc_TypeError, "_publish() needs a Trie");
        return NULL;
    }
    int nested;
    if (pm_write_begin(self, &nested) < 0) {
        return NULL;
    }
    Trie *old = pm_swap(self, (Trie *)Py_NewRef(t));
    pm_write_end(self, nested);
    pm_release(self, old);
    Py_RETURN_NONE;
}

/* Take the writer lock for a transaction; returns the version the
 * transaction starts from.  The caller must call pm_txn_end. */
static PyObject *
pm_txn_begin(PMap *self, PyObject *Py_UNUSED(ignored))
{
    if (pm_strict_begin(self) < 0) {
        return NULL;
    }
    Trie *cur = pm_load(self);
    if (cur == NULL) {
        pm_strict_end(self);
        return NULL;
    }
    SM_STORE_PTR_RELAXED(&self->txn_owner, sm_me());
    return (PyObject *)cur;
}

/* pm_txn_end(trie_or_None[, inserts, updates, deletes]): publish the
 * transaction's version (None: nothing), count its changes, and release the
 * writer lock. */
static PyObject *
pm_txn_end(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t counts[3] = {0, 0, 0};
    if (nargs != 1 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_transact(): the transaction's end takes 1 or 4 arguments");
        return NULL;
    }
    PyObject *t = args[0];
    if (t != Py_None && !Py_IS_TYPE(t, &Trie_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "_transact(): the runner's version must be a Trie or None");
        return NULL;
    }
    for (Py_ssize_t i = 1; i < nargs; i++) {
        counts[i - 1] = PyLong_AsSsize_t(args[i]);
        if (counts[i - 1] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (!sm_lock_held_by(&self->wlock, sm_me())) {
        PyErr_SetString(PyExc_RuntimeError,
                        "_transact(): the writer lock is not held by this thread");
        return NULL;
    }
    Trie *old = NULL;
    if (t != Py_None) {
        old = pm_swap(self, (Trie *)Py_NewRef(t));
        Py_ssize_t *fields[3] = {&self->inserts, &self->updates, &self->deletes};
        for (int i = 0; i < 3; i++) {
            if (counts[i] > 0) {
                pm_count_write(self, fields[i], counts[i]);
            }
        }
    }
    SM_STORE_PTR_RELAXED(&self->txn_owner, NULL);
    pm_strict_end(self);
    pm_release(self, old);
    Py_RETURN_NONE;
}

/* _transact(runner, fn): the transaction in one C call.  Takes the writer
 * lock (pm_txn_begin); runner(base, fn) returns (result, trie_or_None,
 * inserts, updates, deletes) or raises; pm_txn_end then publishes that trie
 * (None, or anything raised: nothing) and releases the lock, whatever runner
 * did.  One call because Python code calling begin and end itself could not
 * make sure end runs: the interpreter runs signal handlers after each call,
 * so an exception a handler raises (Ctrl-C) as begin returns would leave the
 * lock held for good. */
static PyObject *
pm_transact(PMap *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_transact() takes 2 arguments (runner, fn)");
        return NULL;
    }
    PyObject *base = pm_txn_begin(self, NULL);
    if (base == NULL) {
        return NULL;
    }
    PyObject *stack[2] = {base, args[1]};
    PyObject *out = PyObject_Vectorcall(args[0], stack, 2, NULL);
    Py_DECREF(base);
    PyObject *end_args[4] = {Py_None, NULL, NULL, NULL};
    Py_ssize_t end_nargs = 1;
    if (out != NULL && (!PyTuple_CheckExact(out) || PyTuple_GET_SIZE(out) != 5)) {
        PyErr_SetString(PyExc_TypeError, "_transact(): the runner must return a 5-tuple");
        Py_CLEAR(out);
    }
    if (out != NULL) {
        for (Py_ssize_t i = 0; i < 4; i++) {
            end_args[i] = PyTuple_GET_ITEM(out, i + 1);
        }
        end_nargs = 4;
    }
    SMSavedError pending;
    sm_error_save(&pending);
    PyObject *done = pm_txn_end(self, end_args, end_nargs);
    if (done == NULL && sm_lock_held_by(&self->wlock, sm_me())) {
        /* The runner's version or counts were refused (checked before any
         * change): publish nothing, and still release the lock. */
        SMSavedError refused;
        sm_error_save(&refused);
        PyObject *none_args[1] = {Py_None};
        Py_XDECREF(pm_txn_end(self, none_args, 1));
        sm_error_restore(&refused);
    }
    Py_XDECREF(done);
    sm_error_restore(&pending);
    PyObject *result = NULL;
    if (done != NULL && out != NULL) {
        result = Py_NewRef(PyTuple_GET_ITEM(out, 0));
    }
    Py_XDECREF(out);
    return result;
}

/* In a fork child only the forking thread exists: a writer lock held by any
 * other thread is void.  If the forking thread holds it, it is inside one of
 * this map's operations and keeps it. */
static PyObject *
pm_after_fork(PMap *self, PyObject *Py_UNUSED(ignored))
{
    if (!sm_lock_after_fork(&self->wlock, sm_me())) {
        self->txn_owner = NULL;
        self->strict = 0;
    }
    Py_RETURN_NONE;
}

static PyMethodDef pm_methods[] = {
    {"get", (PyCFunction)(void (*)(void))pm_get, METH_FASTCALL,
     "get(key, default=None, /): the value for key if present, else default (no lock)."},
    {"load", (PyCFunction)pm_load_method, METH_O,
     "load(key): (value, True) if present, else (None, False) (no lock)."},
    {"store", (PyCFunction)(void (*)(void))pm_store, METH_FASTCALL,
     "store(key, value): set key to value."},
    {"load_and_delete", (PyCFunction)pm_load_and_delete, METH_O,
     "load_and_delete(key): remove key; (value, True), or (None, False) if absent."},
    {"delete", (PyCFunction)pm_delete, METH_O, "delete(key): remove key if present."},
    {"pop", (PyCFunction)(void (*)(void))pm_pop, METH_FASTCALL,
     "pop(key[, default]): remove key and return its value; default (or KeyError) if absent."},
    {"load_or_store", (PyCFunction)(void (*)(void))pm_load_or_store, METH_FASTCALL,
     "load_or_store(key, value): (existing, True) if present, else store value and "
     "return (value, False)."},
    {"compute", (PyCFunction)(void (*)(void))pm_compute, METH_FASTCALL,
     "compute(key, fn): atomically replace the entry with fn(key, old) (see ConcurrentMapping)."},
    {"clear", (PyCFunction)pm_clear_method, METH_NOARGS, "clear(): remove every entry, atomically."},
    {"_store_items", (PyCFunction)pm_store_items, METH_O,
     "_store_items(items): store a list of (key, value) pairs as one new version."},
    {"_items", (PyCFunction)pm_items, METH_NOARGS,
     "An iterator over the (key, value) pairs of the current version (counted)."},
    {"_stats", (PyCFunction)pm_stats, METH_NOARGS,
     "The map's counters as a dict (each exact; read without a lock)."},
    {"_current", (PyCFunction)pm_current, METH_NOARGS,
     "The current version (a Trie): one consistent state of the map."},
    {"_publish", (PyCFunction)pm_publish, METH_O, "Install a version (under the writer lock)."},
    {"_transact", (PyCFunction)(void (*)(void))pm_transact, METH_FASTCALL,
     "_transact(runner, fn): runner(base, fn) holding the writer lock for transaction(); "
     "publishes the version it returns."},
    {"_after_fork", (PyCFunction)pm_after_fork, METH_NOARGS,
     "In a fork child: forget a writer lock held by a thread that does not exist there."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods pm_as_mapping = {
    .mp_length = (lenfunc)pm_length,
    .mp_subscript = (binaryfunc)pm_subscript,
    .mp_ass_subscript = (objobjargproc)pm_ass_subscript,
};

static PySequenceMethods pm_as_sequence = {
    .sq_contains = (objobjproc)pm_contains,
};

static PyTypeObject PMap_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.persistent._hamt.PersistentMapBase",
    .tp_basicsize = sizeof(PMap),
    .tp_dealloc = (destructor)pm_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)pm_traverse,
    .tp_clear = (inquiry)pm_clear,
    .tp_as_mapping = &pm_as_mapping,
    .tp_as_sequence = &pm_as_sequence,
    .tp_iter = (getiterfunc)pm_iter,
    .tp_methods = pm_methods,
    .tp_new = pm_new,
    .tp_doc = "Native core of safemap.PersistentMap: the current version and the writer lock.",
};

/* ==================================================================== module */

/* FrozenMap's C base reads trie-backed FrozenMaps through these
 * (src/safemap/protocol/_frozen_api.h): a version a FrozenMap holds is shared,
 * so nothing ever writes it in place and a plain walk is safe. */
static int
frozen_trie_find(PyObject *trie, PyObject *key, PyObject **out)
{
    return trie_find((Trie *)trie, key, out);
}

static Py_ssize_t
frozen_trie_length(PyObject *trie)
{
    return ((Trie *)trie)->count;
}

static const FrozenTrieAPI frozen_trie_api = {&Trie_Type, frozen_trie_find, frozen_trie_length};

static int
register_frozen_api(void)
{
    PyObject *frozen = PyImport_ImportModule("safemap.protocol._frozen");
    if (frozen == NULL) {
        return -1;
    }
    PyObject *capsule = PyCapsule_New((void *)&frozen_trie_api, FROZEN_TRIE_API_CAPSULE, NULL);
    PyObject *r = capsule == NULL ? NULL
                                  : PyObject_CallMethod(frozen, "_register_trie_api", "O", capsule);
    Py_XDECREF(capsule);
    Py_DECREF(frozen);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int
hamt_exec(PyObject *module)
{
    PyTypeObject *types[] = {&Node_Type, &Trie_Type, &TrieIter_Type, &TrieMutation_Type,
                             &PMap_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return -1;
        }
    }
    if (RecursiveUpdateError == NULL) {
        PyObject *proto = PyImport_ImportModule("safemap.protocol");
        PyObject *guards = proto ? PyImport_ImportModule("safemap.maps._guards") : NULL;
        if (guards != NULL) {
            RecursiveUpdateError = PyObject_GetAttrString(proto, "RecursiveUpdateError");
            MISSING = PyObject_GetAttrString(proto, "MISSING");
            DELETE = PyObject_GetAttrString(proto, "DELETE");
            MSG_IN_OPERATION = PyObject_GetAttrString(guards, "IN_OPERATION");
            MSG_IN_TRANSACTION = PyObject_GetAttrString(guards, "IN_TRANSACTION");
        }
        Py_XDECREF(proto);
        Py_XDECREF(guards);
        if (!RecursiveUpdateError || !MISSING || !DELETE || !MSG_IN_OPERATION ||
            !MSG_IN_TRANSACTION) {
            Py_CLEAR(RecursiveUpdateError);
            return -1;
        }
    }
    if (empty_node == NULL) {
        empty_node = node_alloc(0, 0);
        if (empty_node == NULL) {
            return -1;
        }
        node_ready(empty_node);
    }
    if (register_frozen_api() < 0) {
        return -1;
    }
    /* The one list every type is readied from, exposed for the readiness tests. */
    PyObject *all = PyTuple_Pack(5, (PyObject *)&Node_Type, (PyObject *)&Trie_Type,
                                 (PyObject *)&TrieIter_Type, (PyObject *)&TrieMutation_Type,
                                 (PyObject *)&PMap_Type);
    int added = all == NULL ? -1 : PyModule_AddObjectRef(module, "_types", all);
    Py_XDECREF(all);
    if (added < 0) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Trie", (PyObject *)&Trie_Type) < 0 ||
        PyModule_AddObjectRef(module, "PersistentMapBase", (PyObject *)&PMap_Type) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot hamt_slots[] = {
    {Py_mod_exec, (void *)hamt_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef hamt_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safemap.persistent._hamt",
    .m_doc = "Persistent hash array mapped trie (the core of safemap.PersistentMap).",
    .m_size = 0,
    .m_slots = hamt_slots,
};

PyMODINIT_FUNC
PyInit__hamt(void)
{
    return PyModuleDef_Init(&hamt_module);
}
