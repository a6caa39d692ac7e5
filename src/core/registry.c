/* gilfree core: the intrusive registries that fork handlers walk.
 *
 * A module that must fix up its objects in a fork child (threadpool.c: the
 * pools; proc.c: the supervisors) keeps one static gf__registry_t, embeds a
 * gf__reg_node_t in each object, adds it on creation and removes it before
 * freeing.  Its own pthread_atfork handlers take reg->lock in prepare, walk
 * reg->head (GF__CONTAINER_OF recovers each object) and release the lock in
 * parent and child; what they do to each object is theirs.
 */
#include <pthread.h>
#include <stddef.h>

#include "internal.h"

void
gf__registry_add(gf__registry_t *reg, gf__reg_node_t *node)
{
    pthread_mutex_lock(&reg->lock);
    node->prev = NULL;
    node->next = reg->head;
    if (reg->head != NULL) {
        reg->head->prev = node;
    }
    reg->head = node;
    pthread_mutex_unlock(&reg->lock);
}

void
gf__registry_remove(gf__registry_t *reg, gf__reg_node_t *node)
{
    pthread_mutex_lock(&reg->lock);
    if (node->prev != NULL) {
        node->prev->next = node->next;
    }
    else {
        reg->head = node->next;
    }
    if (node->next != NULL) {
        node->next->prev = node->prev;
    }
    node->prev = node->next = NULL;
    pthread_mutex_unlock(&reg->lock);
}
