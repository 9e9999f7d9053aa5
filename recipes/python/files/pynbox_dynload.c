/* dlopen, dlsym, dlerror and dlclose for pynbox: extension modules and the
 * shared libraries they need are wasm side modules (the dylink.0
 * convention, as clang -fPIC -shared makes them), loaded by the host into
 * this instance: same memory, same function table.
 *
 * These replace wasi-libc's stubs (libdl.a, which only fail). CPython's
 * dynload_shlib.c calls them as on any POSIX system, so importlib's
 * ExtensionFileLoader, EXTENSION_SUFFIXES and the ImportError messages
 * are the ordinary ones.
 *
 * The file is opened here, through the C library, so that the path goes
 * through the same mounts and checks as any other open; the host is given
 * the descriptor and decides whether the module may be loaded (by default
 * only modules that `pynbox install` placed and compiled). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PYNBOX_IMPORT(name) \
    __attribute__((import_module("pynbox"), import_name(name)))

/* Loads the side module open as `fd` (and what it needs); returns a
 * handle > 0, or 0 with a message kept for dl_error. */
PYNBOX_IMPORT("dl_open") int32_t pynbox_dl_open(int32_t fd, int32_t flags);
/* The address of a data symbol or the table index of a function exported
 * by the module `handle`; 0 with a message kept when there is none. */
PYNBOX_IMPORT("dl_sym") uintptr_t pynbox_dl_sym(int32_t handle, const char *name, size_t len);
/* Copies the last message (at most `cap` bytes); returns its length. */
PYNBOX_IMPORT("dl_error") size_t pynbox_dl_error(char *buf, size_t cap);

static char message[1024];
static int have_message;

/* The host's message, after `path: ` when a path is given (CPython puts
 * dlerror's text in the ImportError, which should name the file). */
static void take_host_message(const char *path) {
    char host[768];
    size_t n = pynbox_dl_error(host, sizeof host - 1);
    host[n < sizeof host ? n : sizeof host - 1] = '\0';
    if (path)
        snprintf(message, sizeof message, "%s: %s", path, host);
    else
        snprintf(message, sizeof message, "%s", host);
    have_message = 1;
}

void *dlopen(const char *path, int flags) {
    if (path == NULL) {
        snprintf(message, sizeof message, "dlopen(NULL) is not supported in pynbox");
        have_message = 1;
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(message, sizeof message, "%s: cannot open shared object file: %s", path,
                 strerror(errno));
        have_message = 1;
        return NULL;
    }
    int32_t handle = pynbox_dl_open(fd, flags);
    close(fd);
    if (handle <= 0) {
        take_host_message(path);
        return NULL;
    }
    return (void *)(uintptr_t)handle;
}

void *dlsym(void *restrict handle, const char *restrict name) {
    uintptr_t p = pynbox_dl_sym((int32_t)(uintptr_t)handle, name, strlen(name));
    if (p == 0) {
        take_host_message(NULL);
        return NULL;
    }
    return (void *)p;
}

char *dlerror(void) {
    if (!have_message)
        return NULL;
    have_message = 0;
    return message;
}

int dlclose(void *handle) {
    /* Modules stay loaded, as CPython never unloads extension modules. */
    (void)handle;
    return 0;
}

/* Memory for a side module's data and bss, called by the host while it
 * loads one: zeroed, aligned, never freed. */
__attribute__((export_name("pynbox_dl_alloc"))) void *pynbox_dl_alloc(size_t size, size_t align) {
    if (align < sizeof(void *))
        align = sizeof(void *);
    void *p = NULL;
    if (posix_memalign(&p, align, size ? size : 1) != 0)
        return NULL;
    memset(p, 0, size);
    return p;
}
