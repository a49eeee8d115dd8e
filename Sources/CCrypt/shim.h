#ifndef SALLYPORT_CCRYPT_SHIM_H
#define SALLYPORT_CCRYPT_SHIM_H
#include <crypt.h>
#endif
