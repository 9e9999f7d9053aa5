/* pynbox's checks from inside the sandbox, as native code compiled to
 * wasm32-wasip1: the same blocks as test_pynbox.py, without Python in the
 * way. Run by DEST/bin/test_pynbox with the install's root at / (read-only)
 * and a fresh directory at /scratch (read-write). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

static void check(const char *name, int ok, const char *detail) {
    if (ok) {
        printf("native %s ... ok\n", name);
        passed++;
    } else {
        printf("native %s ... FAIL (%s; errno %d %s)\n", name, detail, errno, strerror(errno));
        failed++;
    }
    fflush(stdout);
}

static int has_entry(const char *dir, const char *name) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    if (!d) return -1;
    while ((e = readdir(d)))
        if (!strcmp(e->d_name, name)) found = 1;
    closedir(d);
    return found;
}

static int cannot_open(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return 1;
}

int main(void) {
    /* The root holds the installed packages and the mounts, nothing else. */
    check("root has python", has_entry("/", "python") == 1, "no /python");
    check("root has scratch", has_entry("/", "scratch") == 1, "no /scratch");
    check("root has no etc", has_entry("/", "etc") == 0, "/etc is visible");
    check("root has no home", has_entry("/", "home") == 0, "/home is visible");

    /* Host files are out of reach, whichever way. */
    check("no /etc/passwd", cannot_open("/etc/passwd", O_RDONLY), "opened");
    check("no ../ escape", cannot_open("/../../etc/passwd", O_RDONLY), "opened");
    check("no escape from scratch", cannot_open("/scratch/../../etc/passwd", O_RDONLY), "opened");
    check("no /proc", cannot_open("/proc/self/environ", O_RDONLY), "opened");

    /* The root is read-only. */
    errno = 0;
    check("root is read-only", cannot_open("/python/new.txt", O_WRONLY | O_CREAT) && errno == EROFS, "created");
    errno = 0;
    check("stdlib cannot be changed", cannot_open("/python/lib/python3.13/os.py", O_WRONLY) && errno == EROFS, "opened for writing");
    check("mkdir in root refused", mkdir("/python/d", 0755) < 0 && errno == EROFS, "made");
    check("unlink in root refused", unlink("/python/lib/python3.13/os.py") < 0 && errno == EROFS, "unlinked");

    /* The stdlib can be read. */
    {
        int fd = open("/python/lib/python3.13/os.py", O_RDONLY);
        char buf[64] = {0};
        check("stdlib readable", fd >= 0 && read(fd, buf, sizeof buf - 1) > 0, "unreadable");
        if (fd >= 0) close(fd);
    }

    /* The scratch mount is writable. */
    {
        int fd = open("/scratch/native.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int ok = fd >= 0 && write(fd, "abc", 3) == 3;
        if (fd >= 0) close(fd);
        check("scratch writable", ok, "write failed");
        check("scratch rename", rename("/scratch/native.txt", "/scratch/moved.txt") == 0, "rename failed");
        struct stat st;
        check("scratch stat", stat("/scratch/moved.txt", &st) == 0 && st.st_size == 3, "stat failed");
        check("scratch unlink", unlink("/scratch/moved.txt") == 0, "unlink failed");
        check("symlink refused", symlink("/etc/passwd", "/scratch/l") < 0 && errno == EPERM, "symlink made");
    }

    /* Only stdio and the root preopen exist as descriptors. */
    {
        int open_fds = 0, stray = -1;
        for (int fd = 3; fd < 1000; fd++) {
            struct stat st;
            if (fstat(fd, &st) == 0) {
                open_fds++;
                if (fd != 3) stray = fd;
            }
        }
        check("no stray descriptors", open_fds == 1 && stray == -1, "extra descriptors");
    }

    /* No network, processes or signals. */
    check("accept refused", accept(0, NULL, NULL) < 0, "accepted");
    check("shutdown refused", shutdown(1, SHUT_RDWR) < 0, "shut down");

    /* Clocks and randomness. */
    {
        time_t now = time(NULL);
        check("clock plausible", now > 1700000000 && now < 4100000000LL, "implausible time");
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        struct timespec d = {0, 5 * 1000 * 1000};
        nanosleep(&d, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        long ns = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
        check("monotonic clock advances with sleep", ns >= 4000000, "did not advance");
        unsigned char r1[16], r2[16];
        arc4random_buf(r1, sizeof r1);
        arc4random_buf(r2, sizeof r2);
        check("randomness", memcmp(r1, r2, sizeof r1) != 0, "repeated bytes");
    }

    /* Memory beyond the limit is refused, not fatal. The pointers go
     * through a volatile so that the compiler keeps the allocations. */
    {
        static void *volatile keep;
        keep = malloc((size_t)3 << 30);
        check("huge allocation refused", keep == NULL, "3 GiB allocated");
        free(keep);
        keep = malloc(16 << 20);
        check("ordinary allocation", keep != NULL, "16 MiB refused");
        if (keep) memset(keep, 1, 16 << 20);
        free(keep);
    }

    printf("native: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
