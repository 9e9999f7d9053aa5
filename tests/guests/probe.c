/* A small WASI command that performs one operation per pair of arguments
 * and reports each outcome, so that tests can try any system call, escape
 * or limit from inside the sandbox:
 *
 *   probe.wasm OP ARG [OP ARG ...]
 *
 * Each operation prints one line: "OP ARG: ok[ DETAIL]" or
 * "OP ARG: error ERRNO_NAME". The exit status is the number of failed
 * operations (capped at 100), unless an operation exits itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>

static const char *errname(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case EROFS: return "EROFS";
    case ENOTCAPABLE: return "ENOTCAPABLE";
    case ENOTEMPTY: return "ENOTEMPTY";
    case EBUSY: return "EBUSY";
    case ENOSYS: return "ENOSYS";
    case ENOTSUP: return "ENOTSUP";
    case ELOOP: return "ELOOP";
    case ESPIPE: return "ESPIPE";
    case ENOMEM: return "ENOMEM";
    case EFAULT: return "EFAULT";
    case ENOSPC: return "ENOSPC";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENXIO: return "ENXIO";
    default: return "EOTHER";
    }
}

static int failures;

static void report(const char *op, const char *arg, int rc, const char *detail) {
    if (rc < 0) {
        printf("%s %s: error %s\n", op, arg, errname(errno));
        failures++;
    } else if (detail && *detail) {
        printf("%s %s: ok %s\n", op, arg, detail);
    } else {
        printf("%s %s: ok\n", op, arg);
    }
    fflush(stdout);
}

/* "A=B" -> a, b */
static int split(char *arg, char **a, char **b) {
    char *eq = strchr(arg, '=');
    if (!eq) return -1;
    *eq = 0;
    *a = arg;
    *b = eq + 1;
    return 0;
}

static volatile int sink;
static int recurse(int n) {
    volatile char pad[256];
    pad[0] = (char)n;
    return n == 0 ? 0 : recurse(n - 1) + pad[0];
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *op = argv[i];
        char *arg = argv[i + 1];
        char detail[4096] = "";
        int rc = 0;
        char *a, *b;
        if (!strcmp(op, "read")) {
            /* read PATH: prints the content (up to 4000 bytes) */
            int fd = open(arg, O_RDONLY);
            rc = fd;
            if (fd >= 0) {
                ssize_t n = read(fd, detail, 4000);
                rc = n < 0 ? -1 : 0;
                detail[n > 0 ? n : 0] = 0;
                close(fd);
            }
        } else if (!strcmp(op, "write")) {
            /* write PATH=TEXT: create or truncate */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                int fd = open(a, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                rc = fd;
                if (fd >= 0) {
                    rc = write(fd, b, strlen(b)) < 0 ? -1 : 0;
                    close(fd);
                }
                b[-1] = '=';
            }
        } else if (!strcmp(op, "append")) {
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                int fd = open(a, O_WRONLY | O_APPEND);
                rc = fd;
                if (fd >= 0) {
                    rc = write(fd, b, strlen(b)) < 0 ? -1 : 0;
                    close(fd);
                }
                b[-1] = '=';
            }
        } else if (!strcmp(op, "openrw")) {
            int fd = open(arg, O_RDWR);
            rc = fd;
            if (fd >= 0) close(fd);
        } else if (!strcmp(op, "ls")) {
            DIR *d = opendir(arg);
            if (!d) rc = -1;
            else {
                struct dirent *e;
                char *names[512];
                int n = 0;
                while ((e = readdir(d)) && n < 512) {
                    if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                        names[n++] = strdup(e->d_name);
                }
                closedir(d);
                /* sorted, so that tests can compare */
                for (int x = 0; x < n; x++)
                    for (int y = x + 1; y < n; y++)
                        if (strcmp(names[x], names[y]) > 0) { char *t = names[x]; names[x] = names[y]; names[y] = t; }
                for (int x = 0; x < n; x++) {
                    if (x) strncat(detail, ",", sizeof detail - strlen(detail) - 1);
                    strncat(detail, names[x], sizeof detail - strlen(detail) - 1);
                    free(names[x]);
                }
            }
        } else if (!strcmp(op, "stat")) {
            struct stat st;
            rc = stat(arg, &st);
            if (rc == 0)
                snprintf(detail, sizeof detail, "%s size=%lld",
                         S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file" : S_ISLNK(st.st_mode) ? "link" : "other",
                         (long long)st.st_size);
        } else if (!strcmp(op, "lstat")) {
            struct stat st;
            rc = lstat(arg, &st);
            if (rc == 0)
                snprintf(detail, sizeof detail, "%s", S_ISLNK(st.st_mode) ? "link" : S_ISDIR(st.st_mode) ? "dir" : "file");
        } else if (!strcmp(op, "readlink")) {
            ssize_t n = readlink(arg, detail, sizeof detail - 1);
            rc = n < 0 ? -1 : 0;
            detail[n > 0 ? n : 0] = 0;
        } else if (!strcmp(op, "mkdir")) {
            rc = mkdir(arg, 0755);
        } else if (!strcmp(op, "rmdir")) {
            rc = rmdir(arg);
        } else if (!strcmp(op, "unlink")) {
            rc = unlink(arg);
        } else if (!strcmp(op, "rename")) {
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = rename(a, b); b[-1] = '='; }
        } else if (!strcmp(op, "link")) {
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = link(a, b); b[-1] = '='; }
        } else if (!strcmp(op, "symlink")) {
            /* symlink TARGET=LINKPATH */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = symlink(a, b); b[-1] = '='; }
        } else if (!strcmp(op, "utime")) {
            struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
            rc = utimensat(AT_FDCWD, arg, ts, 0);
        } else if (!strcmp(op, "truncate")) {
            rc = truncate(arg, 0);
        } else if (!strcmp(op, "chdir")) {
            rc = chdir(arg);
            if (rc == 0) getcwd(detail, sizeof detail);
        } else if (!strcmp(op, "fdread")) {
            /* fdread N: read what descriptor N has (up to 4000 bytes) */
            ssize_t n = read(atoi(arg), detail, 4000);
            rc = n < 0 ? -1 : 0;
            detail[n > 0 ? n : 0] = 0;
        } else if (!strcmp(op, "fdwrite")) {
            /* fdwrite N=TEXT */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = write(atoi(a), b, strlen(b)) < 0 ? -1 : 0; b[-1] = '='; }
        } else if (!strcmp(op, "fdguess")) {
            /* fdguess N: which descriptors 0..N-1 answer fstat */
            int open_count = 0;
            for (int fd = 0; fd < atoi(arg); fd++) {
                struct stat st;
                if (fstat(fd, &st) == 0) {
                    char num[16];
                    snprintf(num, sizeof num, "%s%d", open_count++ ? "," : "", fd);
                    strncat(detail, num, sizeof detail - strlen(detail) - 1);
                }
            }
        } else if (!strcmp(op, "openmany")) {
            /* openmany PATH: open PATH until refused; report the count */
            int n = 0;
            while (n < 100000 && open(arg, O_RDONLY) >= 0) n++;
            snprintf(detail, sizeof detail, "%d %s", n, errname(errno));
        } else if (!strcmp(op, "alloc")) {
            /* alloc MB: allocate and touch that many MiB */
            size_t mb = (size_t)atoll(arg);
            char *p = malloc(mb << 20);
            if (!p) { rc = -1; errno = ENOMEM; }
            else { memset(p, 1, mb << 20); sink = p[mb]; }
        } else if (!strcmp(op, "allocmax")) {
            /* allocmax MB: allocate and touch MB-MiB blocks until refused;
             * report how many MiB were had */
            size_t step = (size_t)atoll(arg) << 20, got = 0;
            char *p;
            while ((p = malloc(step)) != NULL) {
                memset(p, 1, step);
                sink = p[step - 1];
                got += step;
            }
            snprintf(detail, sizeof detail, "%zu", got >> 20);
        } else if (!strcmp(op, "recurse")) {
            sink = recurse(atoi(arg));
        } else if (!strcmp(op, "spin")) {
            /* spin 0: loop forever without calls */
            for (;;) sink++;
        } else if (!strcmp(op, "flood")) {
            /* flood N: write N KiB to stdout */
            static char kb[1024];
            memset(kb, 'x', sizeof kb);
            for (long k = 0; k < atol(arg); k++) fwrite(kb, 1, sizeof kb, stdout);
            fflush(stdout);
        } else if (!strcmp(op, "cat")) {
            /* cat FD: copy descriptor FD to stdout, byte for byte, to its end */
            static char buf[8192];
            ssize_t n;
            int fd = atoi(arg);
            while ((n = read(fd, buf, sizeof buf)) > 0) {
                for (ssize_t off = 0; off < n;) {
                    ssize_t w = write(1, buf + off, (size_t)(n - off));
                    if (w < 0) { rc = -1; break; }
                    off += w;
                }
                if (rc < 0) break;
            }
            if (n < 0) rc = -1;
            if (rc == 0) continue; /* no report line: stdout is the data */
        } else if (!strcmp(op, "errflood")) {
            /* errflood N: write N KiB to stderr */
            static char kb[1024];
            memset(kb, 'e', sizeof kb);
            for (long k = 0; k < atol(arg); k++) fwrite(kb, 1, sizeof kb, stderr);
            fflush(stderr);
        } else if (!strcmp(op, "sleep")) {
            struct timespec ts = {atoi(arg), 0};
            rc = nanosleep(&ts, NULL);
        } else if (!strcmp(op, "env")) {
            const char *v = getenv(arg);
            snprintf(detail, sizeof detail, "%s", v ? v : "(unset)");
        } else if (!strcmp(op, "args")) {
            for (int k = 0; k < argc; k++) {
                if (k) strncat(detail, "|", sizeof detail - strlen(detail) - 1);
                strncat(detail, argv[k], sizeof detail - strlen(detail) - 1);
            }
        } else if (!strcmp(op, "hugeread")) {
            /* hugeread PATH: read into a buffer far larger than memory */
            int fd = open(arg, O_RDONLY);
            rc = fd;
            if (fd >= 0) {
                rc = read(fd, (void *)0x10, 0xfffffff0u) < 0 ? -1 : 0;
                close(fd);
            }
        } else if (!strcmp(op, "hugewrite")) {
            /* hugewrite FD: write from a range far larger than memory */
            rc = write(atoi(arg), (void *)0x10, 0xfffffff0u) < 0 ? -1 : 0;
        } else if (!strcmp(op, "mkfiles")) {
            /* mkfiles DIR=N: create N empty files in DIR */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                long n = atol(b), made = 0;
                char path[4096];
                for (long k = 0; k < n; k++) {
                    snprintf(path, sizeof path, "%s/f%ld", a, k);
                    int fd = open(path, O_WRONLY | O_CREAT, 0644);
                    if (fd < 0) { rc = -1; break; }
                    close(fd);
                    made++;
                }
                snprintf(detail, sizeof detail, "%ld", made);
                b[-1] = '=';
            }
        } else if (!strcmp(op, "openat")) {
            /* openat DIR=REL: open DIR, then REL relative to it (no libc
             * path rewriting in between) */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                int dfd = open(a, O_RDONLY | O_DIRECTORY);
                rc = dfd;
                if (dfd >= 0) {
                    int fd = openat(dfd, b, O_RDONLY);
                    rc = fd;
                    if (fd >= 0) {
                        ssize_t n = read(fd, detail, 4000);
                        detail[n > 0 ? n : 0] = 0;
                        close(fd);
                    }
                    close(dfd);
                }
                b[-1] = '=';
            }
        } else if (!strcmp(op, "mklong")) {
            /* mklong DIR=N: create N files with 200-character names */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                long n = atol(b), made = 0;
                char path[4096], name[201];
                memset(name, 'n', 200);
                name[200] = 0;
                for (long k = 0; k < n; k++) {
                    snprintf(path, sizeof path, "%s/%ld%s", a, k, name + 10);
                    int fd = open(path, O_WRONLY | O_CREAT, 0644);
                    if (fd < 0) { rc = -1; break; }
                    close(fd);
                    made++;
                }
                snprintf(detail, sizeof detail, "%ld", made);
                b[-1] = '=';
            }
        } else if (!strcmp(op, "readdirmany")) {
            /* readdirmany DIR=N: open DIR N times and read the first page
             * of each (fd_readdir at cookie 0), keeping every one open */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                long n = atol(b), done = 0;
                static uint8_t buf[4096];
                for (long k = 0; k < n; k++) {
                    int fd = open(a, O_RDONLY | O_DIRECTORY);
                    if (fd < 0) { rc = -1; break; }
                    __wasi_size_t used;
                    __wasi_errno_t e = __wasi_fd_readdir(fd, buf, sizeof buf, 0, &used);
                    if (e) { rc = -1; errno = e; break; }
                    done++;
                }
                snprintf(detail, sizeof detail, "%ld", done);
                b[-1] = '=';
            }
        } else if (!strcmp(op, "seek")) {
            /* seek FD=OFFSET: lseek from the start */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = lseek(atoi(a), atoll(b), SEEK_SET) < 0 ? -1 : 0; b[-1] = '='; }
        } else if (!strcmp(op, "ftruncate")) {
            /* ftruncate FD=SIZE */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = ftruncate(atoi(a), atoll(b)); b[-1] = '='; }
        } else if (!strcmp(op, "pwrite")) {
            /* pwrite FD=OFFSET: write one byte at OFFSET */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = pwrite(atoi(a), "x", 1, atoll(b)) < 0 ? -1 : 0; b[-1] = '='; }
        } else if (!strcmp(op, "pread")) {
            /* pread FD=OFFSET: read one byte at OFFSET */
            char c;
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else { rc = pread(atoi(a), &c, 1, atoll(b)) < 0 ? -1 : 0; b[-1] = '='; }
        } else if (!strcmp(op, "fstatid")) {
            /* fstatid FD: the device and inode numbers the guest sees */
            struct stat st;
            rc = fstat(atoi(arg), &st);
            snprintf(detail, sizeof detail, "%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
        } else if (!strcmp(op, "statid")) {
            /* statid PATH: the device and inode numbers the guest sees */
            struct stat st;
            rc = stat(arg, &st);
            snprintf(detail, sizeof detail, "%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
        } else if (!strcmp(op, "lsino")) {
            /* lsino DIR: NAME:INO of each entry but . and .. */
            DIR *d = opendir(arg);
            if (!d) rc = -1;
            else {
                struct dirent *e;
                while ((e = readdir(d))) {
                    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                    char item[512];
                    snprintf(item, sizeof item, "%s%s:%llu", *detail ? "," : "", e->d_name,
                             (unsigned long long)e->d_ino);
                    strncat(detail, item, sizeof detail - strlen(detail) - 1);
                }
                closedir(d);
            }
        } else if (!strcmp(op, "exit")) {
            exit(atoi(arg));
        } else if (!strcmp(op, "trap")) {
            __builtin_trap();
        } else if (!strcmp(op, "echo")) {
            /* echo IN=OUT: copy lines from descriptor IN to OUT until EOF */
            if (split(arg, &a, &b) < 0) { rc = -1; errno = EINVAL; }
            else {
                FILE *in = fdopen(atoi(a), "r");
                FILE *out = fdopen(atoi(b), "w");
                char line[4096];
                long count = 0;
                while (in && out && fgets(line, sizeof line, in)) {
                    fprintf(out, "echo:%s", line);
                    fflush(out);
                    count++;
                }
                snprintf(detail, sizeof detail, "%ld lines", count);
                b[-1] = '=';
            }
        } else {
            printf("unknown operation %s\n", op);
            return 100;
        }
        report(op, arg, rc, detail);
    }
    return failures > 100 ? 100 : failures;
}
