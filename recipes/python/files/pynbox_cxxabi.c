/*
 * The two C++ ABI functions that `throw` compiles to, for C++ side modules
 * (numpy's pocketfft and unique). Debian's libc++abi for wasm32, which the
 * interpreter links and exports for them (recipes/toolchain-cxx.sh), is
 * built without exception support and so defines neither; wasm32-wasip1
 * without the exception-handling proposal cannot unwind anyway, and C++
 * compiled for it drops its catch blocks. A throw therefore ends the guest,
 * as std::terminate would, with a line saying why; the sandbox reports a
 * guest crash and the host is untouched. Code that throws only on
 * exhaustion (std::bad_alloc) behaves like a C program that aborts there.
 */
#include <stdio.h>
#include <stdlib.h>

void *__cxa_allocate_exception(size_t size) {
    void *p = malloc(size);
    if (p == NULL) {
        abort();
    }
    return p;
}

void __cxa_free_exception(void *p) { free(p); }

_Noreturn void __cxa_throw(void *exception, void *type_info, void (*destructor)(void *)) {
    (void)exception;
    (void)type_info;
    (void)destructor;
    fputs("terminate called: C++ code threw an exception, which C++ in this sandbox cannot catch\n", stderr);
    abort();
}
