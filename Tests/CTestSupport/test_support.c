#define _GNU_SOURCE
#include "test_support.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Only async-signal-safe calls between fork and exec: the test process has many threads.
pid_t sallyport_test_spawn(const char *path, char *const argv[], char *const envp[],
                           int stdin_fd, int stdout_fd, int stderr_fd, pid_t parent) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        int code = 0;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != parent) {
            code = ESRCH;
        } else {
            sigset_t all;
            sigemptyset(&all);
            sigprocmask(SIG_SETMASK, &all, NULL);
            for (int s = 1; s < NSIG; s++) {
                if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
            }
            // Move the three descriptors above the report pipe first, so that dup2 onto 0, 1, 2
            // never overwrites one that is still to be copied.
            int fds[3] = {stdin_fd, stdout_fd, stderr_fd};
            for (int i = 0; i < 3; i++) {
                fds[i] = fcntl(fds[i], F_DUPFD, 10);
                if (fds[i] < 0) code = errno;
            }
            for (int i = 0; i < 3 && code == 0; i++) {
                if (dup2(fds[i], i) < 0) code = errno;
            }
            if (code == 0) {
                // Everything else goes, but the report pipe (close-on-exec).
                for (int fd = 3; fd < 1024; fd++) {
                    if (fd != report[1]) close(fd);
                }
                syscall(SYS_close_range, 1024, ~0U, 0);
                execve(path, argv, envp);
                code = errno;
            }
        }
        ssize_t ignored = write(report[1], &code, sizeof code);
        (void)ignored;
        _exit(127);
    }
    close(report[1]);
    int code = 0;
    ssize_t got;
    do {
        got = read(report[0], &code, sizeof code);
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof code) {
        // exec failed: the child has exited (or is about to); reap it.
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        errno = code;
        return -1;
    }
    return pid;
}

int sallyport_test_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0);
}

int sallyport_test_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int sallyport_test_pipe(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}
