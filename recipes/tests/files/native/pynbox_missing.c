/* An extension module that needs a function nothing provides: importing
 * it must raise ImportError naming the symbol. */
#include <Python.h>

void pynbox_no_such_function(void);

PyMODINIT_FUNC PyInit_pynbox_missing(void) {
    pynbox_no_such_function();
    return NULL;
}
