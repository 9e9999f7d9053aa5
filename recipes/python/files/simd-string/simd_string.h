/* Stands in for musl's internal headers when the SIMD string functions
 * (README.md) are compiled outside wasi-libc's tree: passed with -include. */
#include <stddef.h>

#define weak_alias(old, new) \
    extern __typeof(old) new __attribute__((__weak__, __alias__(#old)))

char *__strchrnul(const char *, int);
void *__memrchr(const void *, int, size_t);
