/* gilfree core: umbrella header.  Pure C11; never includes the interpreter's C API headers. */
#ifndef GILFREE_GILFREE_H
#define GILFREE_GILFREE_H

#define GF_VERSION_MAJOR 0
#define GF_VERSION_MINOR 1
#define GF_VERSION_PATCH 0

#include "gilfree/errors.h"
#include "gilfree/alloc.h"
#include "gilfree/clock.h"
#include "gilfree/eventcount.h"
#include "gilfree/queue.h"
#include "gilfree/shm.h"
#include "gilfree/ring.h"
#include "gilfree/proc.h"
#include "gilfree/msg.h"
#include "gilfree/chunker.h"
#include "gilfree/threadpool.h"

#endif /* GILFREE_GILFREE_H */
