#include "sm_smap.h"
PyTypeObject SMEntry_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.Entry",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
};
PyTypeObject SMSMap_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safemap.native._core.SyncMapBase",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
};
