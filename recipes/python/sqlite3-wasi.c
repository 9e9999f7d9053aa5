/*
 * SQLite for pynbox's wasm32-wasip1 CPython: the amalgamation plus a locking
 * setup that is correct for any number of connections inside one sandboxed
 * process.
 *
 * Why not SQLite's WASI defaults: with __wasi__ SQLite picks the
 * "unix-dotfile" VFS, whose lock is a single exclusive <db>.lock directory.
 * It has no shared (reader) lock, so a second connection that merely reads
 * while another one reads gets SQLITE_BUSY ("database is locked"); CPython's
 * test_sqlite3 fails 7 tests that way.
 *
 * Why not "unix-none": it never reports a RESERVED lock, so a connection that
 * finds the journal of another connection's open write transaction takes it
 * for a hot journal and rolls it back under the writer: corruption as soon as
 * two connections of one process share a file, which Python code does.
 *
 * What we do: keep the POSIX-lock VFS "unix" (SQLITE_DEFAULT_UNIX_VFS="unix",
 * SQLITE_ENABLE_LOCKING_STYLE=0). It tracks every lock of the process per
 * inode in its own tables (unixInodeInfo: shared-lock counts, RESERVED,
 * PENDING, EXCLUSIVE) and only calls fcntl(F_SETLK) to tell *other processes*,
 * because POSIX record locks never conflict inside one process anyway. So
 * connection-vs-connection exclusion in one process is exactly what native
 * SQLite does. WASI has no record locks (wasi-libc's fcntl rejects F_SETLK),
 * so the fcntl system call is replaced, through SQLite's own xSetSystemCall
 * hook, by one that grants every process-level lock: correct while the
 * process is the only user of the file, which is the sandbox's model.
 *
 * Not covered: two sandboxes (or the host) writing one database file at the
 * same time through a shared writable directory. Nothing coordinates them,
 * exactly as with "unix-none"; give each sandbox its own writable directory.
 * WAL is unavailable on WASI (SQLite omits it: no shared memory), so
 * journal_mode=WAL quietly stays in rollback-journal mode.
 *
 * Randomness: the "unix" VFS seeds SQLite's generator from /dev/urandom,
 * which no sandbox has, and falls back to the time and the pid, so every run
 * started in the same second would draw the same randomblob() and random()
 * values. Every unix VFS draws from WASI's random_get instead (getentropy),
 * the host's CSPRNG.
 *
 * Built as one translation unit with -DSQLITE_EXTRA_INIT=pynbox_sqlite_wasi_init
 * so that the hook is installed by sqlite3_initialize() before any file is
 * opened; "unix-dotfile" and "unix-none" stay available by name (?vfs=...).
 */
#include "sqlite3.c"

#include <stdarg.h>
#include <unistd.h> /* getentropy */

/* F_SETLK, F_SETLKW, F_GETLK and F_UNLCK are the values sqlite3.c defines for
 * WASI (wasi-libc declares struct flock but no lock commands). */
static int pynboxWasiFcntl(int fd, int op, ...) {
    va_list ap;
    void *arg;
    va_start(ap, op);
    arg = va_arg(ap, void *);   /* SQLite always passes a third argument */
    va_end(ap);
    switch (op) {
    case F_SETLK:
    case F_SETLKW:
        return 0;                                 /* no other process */
    case F_GETLK:
        ((struct flock *)arg)->l_type = F_UNLCK;  /* nobody else holds one */
        return 0;
    default:
        return fcntl(fd, op, (int)(intptr_t)arg);
    }
}

/* Fills zBuf from the host's CSPRNG; SQLite asks for a few dozen bytes
 * once, to seed its own generator. getentropy gives at most 256 at a time. */
static int pynboxRandomness(sqlite3_vfs *vfs, int nBuf, char *zBuf) {
    int done = 0;
    (void)vfs;
    while (done < nBuf) {
        int n = nBuf - done > 256 ? 256 : nBuf - done;
        if (getentropy(zBuf + done, (size_t)n) != 0) break;
        done += n;
    }
    return done;
}

int pynbox_sqlite_wasi_init(const char *unused) {
    static const char *const names[] = {"unix", "unix-dotfile", "unix-none", "unix-excl"};
    sqlite3_vfs *vfs = sqlite3_vfs_find("unix");
    (void)unused;
    if (vfs == 0 || vfs->xSetSystemCall == 0) return SQLITE_ERROR;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        sqlite3_vfs *v = sqlite3_vfs_find(names[i]);
        if (v != 0) v->xRandomness = pynboxRandomness;
    }
    return vfs->xSetSystemCall(vfs, "fcntl", (sqlite3_syscall_ptr)pynboxWasiFcntl);
}
