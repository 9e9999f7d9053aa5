/* A C extension module built as a wasm side module, loaded at import by
 * pynbox's dynamic linker: the checks in test_pynbox.py call into it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The interpreter's C library scans strings with wasm SIMD, 16 aligned
 * bytes at a time (recipes/python/files/simd-string): compare each scanner
 * with a plain loop at every alignment and length up to 200, with the byte
 * sought inside, at the end, past the end and absent, and bytes >= 0x80.
 * Called through volatile pointers so that the compiler neither inlines
 * nor folds them: these are the interpreter's exported functions. */
static void *(*volatile memchr_p)(const void *, int, size_t) = memchr;
static void *(*volatile memrchr_p)(const void *, int, size_t) = memrchr;
static int (*volatile memcmp_p)(const void *, const void *, size_t) = memcmp;
static size_t (*volatile strlen_p)(const char *) = strlen;
static char *(*volatile strchr_p)(const char *, int) = strchr;
static char *(*volatile strchrnul_p)(const char *, int) = strchrnul;
static size_t (*volatile strspn_p)(const char *, const char *) = strspn;
static size_t (*volatile strcspn_p)(const char *, const char *) = strcspn;

static unsigned lcg(unsigned *s) { return (*s = *s * 1103515245u + 12345u) >> 16; }
static int sign(int x) { return (x > 0) - (x < 0); }
static int in_set(const char *set, char ch) {
    for (; *set; set++)
        if (*set == ch) return 1;
    return 0;
}
static const char alphabet[] = "abcxyz\x80\xff";

static PyObject *string_functions_agree(PyObject *self, PyObject *args) {
    static char a[512], b[512];
    unsigned seed = 1;
    for (int round = 0; round < 20000; round++) {
        size_t off = lcg(&seed) % 48, off2 = lcg(&seed) % 48, len = lcg(&seed) % 201;
        for (size_t i = 0; i < sizeof a; i++)
            a[i] = alphabet[lcg(&seed) % 8];
        a[off + len] = 0;
        memcpy(b + off2, a + off, len + 1);
        if (len && lcg(&seed) % 2)
            b[off2 + lcg(&seed) % len] ^= 1;
        int c = (unsigned char)"abz\x80\xffq"[lcg(&seed) % 6];
        char set[5] = {0};
        for (int k = 0, n = lcg(&seed) % 5; k < n; k++)
            set[k] = alphabet[lcg(&seed) % 8];
        const char *s = a + off;
        const char *first = NULL, *last = NULL;
        for (size_t i = 0; i < len; i++) {
            if ((unsigned char)s[i] == c) {
                if (!first) first = s + i;
                last = s + i;
            }
        }
        int cmp = 0;
        for (size_t i = 0; i < len && !cmp; i++)
            cmp = sign((unsigned char)s[i] - (unsigned char)b[off2 + i]);
        size_t spn = 0, cspn = 0;
        while (spn < len && in_set(set, s[spn])) spn++;
        while (cspn < len && !in_set(set, s[cspn])) cspn++;
        const char *what = NULL;
        if (strlen_p(s) != len) what = "strlen";
        else if (memchr_p(s, c, len) != first) what = "memchr";
        else if (memrchr_p(s, c, len) != last) what = "memrchr";
        else if (sign(memcmp_p(s, b + off2, len)) != cmp) what = "memcmp";
        else if (strchr_p(s, c) != first) what = "strchr";
        else if (strchrnul_p(s, c) != (first ? first : s + len)) what = "strchrnul";
        else if (strchrnul_p(s, 0) != s + len) what = "strchrnul of NUL";
        else if (strspn_p(s, set) != spn) what = "strspn";
        else if (strcspn_p(s, set) != cspn) what = "strcspn";
        if (what) {
            PyErr_Format(PyExc_AssertionError, "%s disagrees with a plain loop (offset %zu, length %zu, byte %d, set \"%s\")",
                         what, off, len, c, set);
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"greet", greet, METH_NOARGS, "A string built with snprintf."},
    {"sort_ints", sort_ints, METH_O, "Sorts a list of ints with qsort."},
    {"helper_add", helper_add, METH_VARARGS, "Adds with the needed library."},
    {"helper_calls", helper_calls, METH_NOARGS, "The needed library's call count."},
    {"was_constructed", was_constructed, METH_NOARGS, "42 if constructors ran."},
    {"fail", fail, METH_NOARGS, "Raises ValueError."},
    {"same_function_addresses", same_function_addresses, METH_NOARGS, ""},
    {"string_functions_agree", string_functions_agree, METH_NOARGS, "Raises AssertionError at the first disagreement."},
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
