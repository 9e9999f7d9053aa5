// A C++ extension module: the C++ library that the interpreter exports
// (std::string, containers, operator new) works from a side module, and a
// C++ exception, which nothing in this sandbox can catch, ends the guest
// with a line saying so (recipes/python/files/pynbox_cxxabi.c).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

// Distinct words, sorted and joined by spaces.
static PyObject *distinct_words(PyObject *, PyObject *arg) {
    const char *text = PyUnicode_AsUTF8(arg);
    if (text == nullptr) {
        return nullptr;
    }
    std::unordered_set<std::string> seen;
    std::string word;
    for (const char *p = text;; ++p) {
        if (*p == ' ' || *p == '\0') {
            if (!word.empty()) {
                seen.insert(word);
                word.clear();
            }
            if (*p == '\0') {
                break;
            }
        } else {
            word += *p;
        }
    }
    std::vector<std::string> words(seen.begin(), seen.end());
    std::sort(words.begin(), words.end());
    std::string out;
    for (const auto &w : words) {
        out += (out.empty() ? "" : " ") + w;
    }
    return PyUnicode_FromStringAndSize(out.data(), static_cast<Py_ssize_t>(out.size()));
}

static PyObject *throw_now(PyObject *, PyObject *) {
    throw std::runtime_error("thrown from C++");
}

static PyMethodDef methods[] = {
    {"distinct_words", distinct_words, METH_O, nullptr},
    {"throw_now", throw_now, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pynbox_cxx", "pynbox's C++ test extension module", -1, methods};

PyMODINIT_FUNC PyInit_pynbox_cxx(void) { return PyModule_Create(&module); }
