#ifndef SALLYPORT_CPAM_SHIM_H
#define SALLYPORT_CPAM_SHIM_H
#include <security/pam_appl.h>
#endif
