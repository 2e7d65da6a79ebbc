/* The trie reads of FrozenMap's C base (safemap.protocol._frozen).
 *
 * The protocol layer does not import the maps: the trie's own extension
 * (safemap.persistent._hamt) registers these functions when it is imported,
 * by calling safemap.protocol._frozen._register_trie_api(capsule).  No trie
 * can exist before that, so a trie-backed FrozenMap always finds them. */
#ifndef SAFEMAP_FROZEN_API_H
#define SAFEMAP_FROZEN_API_H

#include <Python.h>

#define FROZEN_TRIE_API_CAPSULE "safemap.protocol._frozen.TrieAPI"

typedef struct {
    /* The trie version type: only its instances may back a FrozenMap. */
    PyTypeObject *trie_type;
    /* A point read of an immutable version.  1: found (*out borrowed, alive
     * as long as the version), 0: absent, -1: error. */
    int (*find)(PyObject *trie, PyObject *key, PyObject **out);
    /* The entry count of a version. */
    Py_ssize_t (*length)(PyObject *trie);
} FrozenTrieAPI;

#endif
