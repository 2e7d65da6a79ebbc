/*
 * sm_cached.h -- CachedFunction: the call path of @safemap.cached (see sm_cached.c).
 */
#ifndef SAFEMAP_SM_CACHED_H
#define SAFEMAP_SM_CACHED_H

#include "sm_common.h"

/* Ready CachedFunction and add it to the module.  0 or -1. */
int sm_cached_exec(PyObject *module);

#endif /* SAFEMAP_SM_CACHED_H */
