#ifndef SALLYPORT_TEST_SUPPORT_H
#define SALLYPORT_TEST_SUPPORT_H

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` (both NULL-terminated) and standard input, output and error
/// on the three descriptors given; every other descriptor is closed in the child, signal
/// dispositions and the mask are reset, and the child gets SIGKILL when the thread that called this
/// ends (PR_SET_PDEATHSIG: call it from a thread that lives as long as the process). `parent` is
/// the caller's PID, so that a child whose parent died before the signal was armed exits at once.
/// Returns the child's PID, or -1 with errno set (also when exec failed: the child reports its
/// errno through a close-on-exec pipe before it exits).
pid_t sallyport_test_spawn(const char *path, char *const argv[], char *const envp[],
                           int stdin_fd, int stdout_fd, int stderr_fd, pid_t parent);

/// Arms PR_SET_PDEATHSIG with `signal` for the calling process. Returns 0 or -1 with errno.
int sallyport_test_set_parent_death_signal(int signal);

/// A descriptor that becomes readable when process `pid` ends (pidfd_open), or -1 with errno.
int sallyport_test_pidfd_open(pid_t pid);

/// pipe2(fds, O_CLOEXEC): both ends close on exec. Returns 0 or -1 with errno.
int sallyport_test_pipe(int fds[2]);

#endif
