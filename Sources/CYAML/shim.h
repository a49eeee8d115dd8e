#ifndef SALLYPORT_CYAML_SHIM_H
#define SALLYPORT_CYAML_SHIM_H
#include <yaml.h>
#endif
