/* Runs a command and writes its wall time (ns) and peak resident memory
 * (KiB) to REPORT, then ends as the command ended (its exit status, or
 * the same signal). A process's peak RSS on Linux includes what its parent
 * had when it forked (the high-water mark survives exec), so a launcher
 * as small as this one is needed to measure a small process from a large
 * one such as bench/run.py or a test process (tests/common/measure.rs).
 *   launch REPORT CMD [ARGS...] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: launch REPORT CMD [ARGS...]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) {
        perror("launch");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *f = fopen(argv[1], "w");
    if (f == NULL) {
        perror(argv[1]);
        return 2;
    }
    long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    fprintf(f, "%lld %ld\n", ns, ru.ru_maxrss);
    fclose(f);
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        raise(WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
