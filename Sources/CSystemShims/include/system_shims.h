#ifndef SALLYPORT_SYSTEM_SHIMS_H
#define SALLYPORT_SYSTEM_SHIMS_H

/// Makes the process non-dumpable (no core dumps, no ptrace by other users, /proc files owned by
/// root): prctl(PR_SET_DUMPABLE, 0). Returns 0, or -1 with errno set. prctl is variadic, which
/// Swift cannot call.
int sallyport_set_nondumpable(void);

/// 1 when the process is dumpable, 0 when not, -1 on error.
int sallyport_is_dumpable(void);

#endif
