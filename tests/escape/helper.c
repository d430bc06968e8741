/* Tiny static helper for the adversarial suites: the things Python cannot do
 * portably (legacy syscall entry points, raw clone, pthread bombs, setuid
 * checks). Built by tests/conftest.py at test time with gcc -static.
 * Every mode prints one JSON object on stdout. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* i386 getpid (20) through int 0x80: the seccomp filter must kill us (SIGSYS). */
static int mode_int80(void) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    printf("{\"ret\":%ld,\"errno\":%ld}\n", ret < 0 && ret > -4096 ? -1 : ret,
           ret < 0 && ret > -4096 ? -ret : 0L);
    return 0;
}

/* x32 getpid (39 | __X32_SYSCALL_BIT) through the syscall instruction. */
static int mode_x32(void) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(39L | 0x40000000L) : "rcx", "r11", "memory");
    printf("{\"ret\":%ld,\"errno\":%ld}\n", ret < 0 && ret > -4096 ? -1 : ret,
           ret < 0 && ret > -4096 ? -ret : 0L);
    return 0;
}

static int mode_euid(void) {
    printf("{\"uid\":%d,\"euid\":%d,\"gid\":%d,\"egid\":%d}\n", getuid(), geteuid(), getgid(),
           getegid());
    return 0;
}

/* raw clone(2) with namespace flags: must be EPERM inside. */
static int mode_clone(const char *flagstr) {
    unsigned long flags = strtoul(flagstr, NULL, 0);
    long r = syscall(SYS_clone, flags | SIGCHLD, 0L, 0L, 0L, 0L);
    if (r == 0) _exit(0);
    int e = errno;
    if (r > 0) waitpid((pid_t)r, NULL, 0);
    printf("{\"ret\":%ld,\"errno\":%d}\n", r > 0 ? 0L : r, r < 0 ? e : 0);
    return 0;
}

static void *sleeper(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

/* Create threads until pthread_create fails; report how many and why. */
static int mode_threadbomb(const char *maxstr) {
    long max = strtol(maxstr, NULL, 0), n = 0;
    int err = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (; n < max; n++) {
        pthread_t t;
        err = pthread_create(&t, &attr, sleeper, NULL);
        if (err) break;
    }
    printf("{\"created\":%ld,\"errno\":%d}\n", n, err);
    fflush(stdout);
    _exit(0);
}

/* Burn CPU in N processes for S seconds of wall time. */
static int mode_spin(const char *nstr, const char *secstr) {
    int n = atoi(nstr);
    double secs = atof(secstr);
    for (int i = 0; i < n; i++) {
        if (fork() == 0) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            volatile unsigned long x = 0;
            do {
                for (int k = 0; k < 100000; k++) x++;
                clock_gettime(CLOCK_MONOTONIC, &b);
            } while ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9 < secs);
            _exit(0);
        }
    }
    while (wait(NULL) > 0) {
    }
    printf("{\"spun\":%d}\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: helper int80|x32|euid|clone FLAGS|threadbomb MAX|spin N SECS\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(argv[1], "int80")) return mode_int80();
    if (!strcmp(argv[1], "x32")) return mode_x32();
    if (!strcmp(argv[1], "euid")) return mode_euid();
    if (!strcmp(argv[1], "clone") && argc > 2) return mode_clone(argv[2]);
    if (!strcmp(argv[1], "threadbomb") && argc > 2) return mode_threadbomb(argv[2]);
    if (!strcmp(argv[1], "spin") && argc > 3) return mode_spin(argv[2], argv[3]);
    fprintf(stderr, "helper: unknown mode %s\n", argv[1]);
    return 2;
}
