#include "system_shims.h"
#include <sys/prctl.h>

int sallyport_set_nondumpable(void) {
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
