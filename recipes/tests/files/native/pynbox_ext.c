/* A C extension module built as a wasm side module, loaded at import by
 * pynbox's dynamic linker: the checks in test_pynbox.py call into it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>

extern int pynbox_helper_calls;
int pynbox_helper_add(int a, int b);

static int constructed = 0;
__attribute__((constructor)) static void construct(void) { constructed = 42; }

/* Data with a pointer in it: needs a relocation at load time. */
static const char *greeting_parts[] = {"hello", "from", "a", "side", "module"};

static PyObject *greet(PyObject *self, PyObject *args) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s %s %s %s %s", greeting_parts[0], greeting_parts[1],
             greeting_parts[2], greeting_parts[3], greeting_parts[4]);
    return PyUnicode_FromString(buf);
}

static int compare_ints(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The C library calls back into the module through a function pointer. */
static PyObject *sort_ints(PyObject *self, PyObject *list) {
    Py_ssize_t n = PyList_Size(list);
    if (n < 0)
        return NULL;
    int *v = malloc(sizeof(int) * (n ? n : 1));
    if (!v)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        v[i] = (int)PyLong_AsLong(PyList_GET_ITEM(list, i));
        if (v[i] == -1 && PyErr_Occurred()) {
            free(v);
            return NULL;
        }
    }
    qsort(v, n, sizeof(int), compare_ints);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out && i < n; i++)
        PyList_SET_ITEM(out, i, PyLong_FromLong(v[i]));
    free(v);
    return out;
}

static PyObject *helper_add(PyObject *self, PyObject *args) {
    int a, b;
    if (!PyArg_ParseTuple(args, "ii", &a, &b))
        return NULL;
    return PyLong_FromLong(pynbox_helper_add(a, b));
}

static PyObject *helper_calls(PyObject *self, PyObject *args) {
    return PyLong_FromLong(pynbox_helper_calls);
}

static PyObject *was_constructed(PyObject *self, PyObject *args) {
    return PyLong_FromLong(constructed);
}

static PyObject *fail(PyObject *self, PyObject *args) {
    PyErr_SetString(PyExc_ValueError, "raised in C");
    return NULL;
}

typedef struct {
    PyObject_HEAD
    long value;
} CounterObject;

static PyObject *counter_bump(CounterObject *self, PyObject *args) {
    return PyLong_FromLong(++self->value);
}

static PyMethodDef counter_methods[] = {
    {"bump", (PyCFunction)counter_bump, METH_NOARGS, "Adds one and returns the count."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pynbox_ext.Counter",
    .tp_basicsize = sizeof(CounterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_methods = counter_methods,
};

/* A function has one address whoever takes it: the interpreter filled
 * tp_alloc (inherited from object) and tp_new came from this module. */
static PyObject *same_function_addresses(PyObject *self, PyObject *args) {
    return PyBool_FromLong(CounterType.tp_alloc == PyType_GenericAlloc &&
                           CounterType.tp_new == PyType_GenericNew &&
                           PyBaseObject_Type.tp_alloc == PyType_GenericAlloc);
}

static PyMethodDef methods[] = {
    {"greet", greet, METH_NOARGS, "A string built with snprintf."},
    {"sort_ints", sort_ints, METH_O, "Sorts a list of ints with qsort."},
    {"helper_add", helper_add, METH_VARARGS, "Adds with the needed library."},
    {"helper_calls", helper_calls, METH_NOARGS, "The needed library's call count."},
    {"was_constructed", was_constructed, METH_NOARGS, "42 if constructors ran."},
    {"fail", fail, METH_NOARGS, "Raises ValueError."},
    {"same_function_addresses", same_function_addresses, METH_NOARGS, ""},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pynbox_ext", "pynbox's test extension module", -1, methods,
};

PyMODINIT_FUNC PyInit_pynbox_ext(void) {
    if (PyType_Ready(&CounterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
