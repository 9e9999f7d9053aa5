/* A shared library that an extension module needs (named in its dylink.0
 * section), like libxml2 for lxml: a function and a data symbol that the
 * extension reaches through the dynamic linker. */
int pynbox_helper_calls = 0;

int pynbox_helper_add(int a, int b) {
    pynbox_helper_calls++;
    return a + b;
}
