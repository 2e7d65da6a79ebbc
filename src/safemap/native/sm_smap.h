/*
 * sm_smap.h -- SyncMapBase: Go sync.Map's design (see sm_smap.c).
 */
#ifndef SAFEMAP_SM_SMAP_H
#define SAFEMAP_SM_SMAP_H

#include "sm_common.h"

extern PyTypeObject SMEntry_Type;
extern PyTypeObject SMSMap_Type;

#endif /* SAFEMAP_SM_SMAP_H */
