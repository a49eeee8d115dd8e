#ifndef SALLYPORT_SYSTEM_SHIMS_H
#define SALLYPORT_SYSTEM_SHIMS_H

/// Makes the process non-dumpable (no core dumps, no ptrace by other users, /proc files owned by
/// root): prctl(PR_SET_DUMPABLE, 0). Returns 0, or -1 with errno set. prctl is variadic, which
/// Swift cannot call.
int sallyport_set_nondumpable(void);




#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, for a fuzz executable that has a main of its own (SwiftPM's executables
/// do). Defined only when linked with -sanitize=fuzzer.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
#endif
