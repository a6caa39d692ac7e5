/* Small portability layer over the CPython C API versions we support
 * (3.10 .. 3.14, GIL and free-threaded builds).  Our own code: each shim maps
 * a newer API onto what older versions offer, and says why it is safe there.
 */
#ifndef GILFREE_EXT_COMPAT_H
#define GILFREE_EXT_COMPAT_H

#include <Python.h>

/* Critical sections exist from 3.13.  Before that there is no free-threaded
 * build, and the GIL already serialises the code inside. */
#ifndef Py_BEGIN_CRITICAL_SECTION
#  define Py_BEGIN_CRITICAL_SECTION(op) {
#  define Py_END_CRITICAL_SECTION() }
#endif

/* Member-type names gained a Py_ prefix in 3.12. */
#ifndef Py_T_PYSSIZET
#  include <structmember.h>
#  define Py_T_PYSSIZET T_PYSSIZET
#  define Py_READONLY READONLY
#endif

#if PY_VERSION_HEX >= 0x030D0000
#  define GFX_IS_FINALIZING() Py_IsFinalizing()
#else
#  define GFX_IS_FINALIZING() _Py_IsFinalizing()
#endif

/* Strong reference to list[i], or NULL (no exception set) when i is out of
 * range, e.g. because the list shrank while we worked.  3.13+ has
 * PyList_GetItemRef, which is safe on free-threaded builds; before 3.13 the
 * caller holds the GIL, so reading the size and the slot is atomic. */
static inline PyObject *
gfx_list_get_ref(PyObject *list, Py_ssize_t i)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *item = PyList_GetItemRef(list, i);
    if (item == NULL) {
        PyErr_Clear();
    }
    return item;
#else
    if (i < 0 || i >= PyList_GET_SIZE(list)) {
        return NULL;
    }
    return Py_NewRef(PyList_GET_ITEM(list, i));
#endif
}

/* Strong-reference dict lookup: 1 found (*out set), 0 missing, -1 error.
 * 3.13+ has PyDict_GetItemRef; before that the borrowed lookup is made
 * strong at once, with the GIL held so nothing can free the value between
 * the two steps.  (This backport is the one place allowed to name the
 * borrowed call; tests/python/test_cpylint.py knows.) */
static inline int
gfx_dict_get_ref(PyObject *dict, PyObject *key, PyObject **out)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyDict_GetItemRef(dict, key, out);
#else
    PyObject *v = PyDict_GetItemWithError(dict, key);  /* cpylint: backport */
    if (v == NULL) {
        *out = NULL;
        return PyErr_Occurred() ? -1 : 0;
    }
    *out = Py_NewRef(v);
    return 1;
#endif
}

/* dict.setdefault(key, value) returning a strong reference, or NULL. */
static inline PyObject *
gfx_dict_setdefault_ref(PyObject *dict, PyObject *key, PyObject *value)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *result;
    if (PyDict_SetDefaultRef(dict, key, value, &result) < 0) {
        return NULL;
    }
    return result;
#else
    return Py_XNewRef(PyDict_SetDefault(dict, key, value));
#endif
}

/* The exception being raised, normalised, with its traceback attached; the
 * error indicator is cleared.  3.12+ stores exceptions normalised already. */
static inline PyObject *
gfx_fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise `exc` (borrowed) keeping its existing __traceback__, so the frames
 * recorded on the worker thread stay below the caller's frames. */
static inline void
gfx_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(Py_NewRef(exc));
#else
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc), tb);
#endif
}

#endif /* GILFREE_EXT_COMPAT_H */
