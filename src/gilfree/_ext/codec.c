/* Codecs of the process backend: Python objects <-> channel messages.
 *
 * A message (include/gilfree/msg.h) is a header, the lengths of its
 * out-of-band buffers and a payload.  Encoding picks the cheapest codec that
 * represents the items exactly:
 *
 *   a list of exact ints that fit in int64   -> GF_CODEC_I64 (8 bytes each)
 *   a list of exact floats                   -> GF_CODEC_F64
 *   a list of Nones                          -> GF_CODEC_NONE (no payload)
 *   a range (the caller says so)             -> GF_CODEC_RANGE (16 bytes)
 *   anything else                            -> pickle protocol 5
 *
 * Pickle: every PickleBuffer the pickler meets (numpy arrays, our wrappers
 * for large bytes) of GFX_OOB_MIN bytes or more leaves the stream: its
 * bytes are copied once into a fresh memfd, whose descriptor travels on the
 * channel's socket.  The receiver maps it copy-on-write and hands the
 * mapping (a ShmBuffer) to pickle.loads(buffers=...), so numpy rebuilds the
 * array over the mapping itself: zero copies on the receiving side, freed
 * when the last reference goes.  A payload too big for a ring frame goes the
 * same way, as the message's last buffer (GF_MSG_FLAG_EXT).
 *
 * Functions and items that the standard pickler refuses (lambdas, closures,
 * functions of __main__) are pickled again with cloudpickle. */
#include "gfext.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Buffers of this size and more travel out of band. */
#define GFX_OOB_MIN (64 * 1024)

/* The list that the running encode collects out-of-band buffers into.
 * Thread-local: the pickler calls our buffer callback on the thread that
 * encodes, and several threads may encode at once. */
static _Thread_local PyObject *gfx__oob_list;

static PyObject *
oob_callback(PyObject *Py_UNUSED(module), PyObject *buf)
{
    Py_buffer view;
    if (gfx__oob_list == NULL ||
        PyObject_GetBuffer(buf, &view, PyBUF_ANY_CONTIGUOUS) < 0) {
        PyErr_Clear();
        Py_RETURN_TRUE;  /* in band */
    }
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    if (len < GFX_OOB_MIN) {
        Py_RETURN_TRUE;
    }
    if (PyList_Append(gfx__oob_list, buf) < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;  /* out of band */
}

PyMethodDef gfx_oob_callback_def = {
    "_oob_callback", oob_callback, METH_O,
    "Pickle buffer callback of the process backend (internal)."};

/* ---- segments and their cache -------------------------------------------- */

typedef struct {
    uint64_t magic;
    /* Receivers that have been sent this segment and not yet let go of it
     * (sender increments before sending, receiver decrements, release,
     * when its mapping goes).  A receiver that dies leaves it raised: the
     * segment is then never reused, only evicted. */
    _Atomic uint32_t inflight;
} gfx_seghdr;

#define GFX_SEG_MAGIC 0x67667365676d3031ull

struct gfx_seg {
    gfx_seg *next;               /* cache list (cache lock) */
    gf_shm_t shm;                /* the sender's mapping (header + data) */
    size_t cap;                  /* data bytes */
    _Atomic int held;            /* the cache (1) + messages using it */
};

struct gfx_segcache {
    pthread_mutex_t lock;
    gfx_seg *head;               /* most recently used first */
    size_t bytes;
    uint32_t n;
};

#define SEGCACHE_MAX_BYTES ((size_t)256 << 20)
#define SEGCACHE_MAX_SEGS 64u

static _Thread_local gfx_segcache *gfx__segcache;

gfx_segcache *
gfx_segcache_use(gfx_segcache *c)
{
    gfx_segcache *prev = gfx__segcache;
    gfx__segcache = c;
    return prev;
}

gfx_segcache *
gfx_segcache_new(void)
{
    gfx_segcache *c = PyMem_RawCalloc(1, sizeof *c);
    if (c != NULL) {
        pthread_mutex_init(&c->lock, NULL);
    }
    return c;
}

static gfx_seghdr *
seg_hdr(gfx_seg *g)
{
    return (gfx_seghdr *)g->shm.addr;
}

static void
seg_release(gfx_seg *g)
{
    if (g != NULL && atomic_fetch_sub(&g->held, 1) == 1) {
        gf_shm_close(&g->shm);
        PyMem_RawFree(g);
    }
}

void
gfx_segcache_free(gfx_segcache *c)
{
    if (c == NULL) {
        return;
    }
    gfx_seg *g = c->head;
    while (g != NULL) {
        gfx_seg *next = g->next;
        seg_release(g);
        g = next;
    }
    pthread_mutex_destroy(&c->lock);
    PyMem_RawFree(c);
}

/* A segment with room for len bytes, held once for the caller: a warm idle
 * one from the cache, or a new one.  No GIL needed.  NULL: errno-style
 * code in *err. */
static gfx_seg *
seg_acquire(gfx_segcache *c, size_t len, int *err)
{
    size_t cap = (len + 4095) & ~(size_t)4095;
    gfx_seg *found = NULL, *drop = NULL;
    if (c != NULL) {
        pthread_mutex_lock(&c->lock);
        gfx_seg **pp = &c->head;
        for (; *pp != NULL; pp = &(*pp)->next) {
            gfx_seg *g = *pp;
            if (g->cap >= cap && g->cap <= 2 * cap &&
                atomic_load(&g->held) == 1 &&
                atomic_load_explicit(&seg_hdr(g)->inflight,
                                     memory_order_acquire) == 0) {
                *pp = g->next;          /* move to the front */
                g->next = c->head;
                c->head = g;
                atomic_fetch_add(&g->held, 1);
                found = g;
                break;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (found != NULL) {
            return found;
        }
    }
    gfx_seg *g = PyMem_RawCalloc(1, sizeof *g);
    if (g == NULL) {
        *err = GF_ENOMEM;
        return NULL;
    }
    int rc = gf_shm_create_ex(GFX_SEG_DATA + cap, "gilfree-buf",
                              GF_SHM_POPULATE, &g->shm);
    if (rc < 0) {
        PyMem_RawFree(g);
        *err = rc;
        return NULL;
    }
    g->cap = cap;
    seg_hdr(g)->magic = GFX_SEG_MAGIC;
    atomic_init(&g->held, 1);
    if (c == NULL) {
        return g;  /* the caller's hold is the only one */
    }
    atomic_fetch_add(&g->held, 1);  /* the cache's */
    pthread_mutex_lock(&c->lock);
    g->next = c->head;
    c->head = g;
    c->bytes += cap;
    c->n++;
    /* Evict from the cold end: idle or not, the cache just lets go (a
     * message or receiver still using it keeps it alive). */
    while (c->n > SEGCACHE_MAX_SEGS || c->bytes > SEGCACHE_MAX_BYTES) {
        gfx_seg **pp = &c->head;
        while ((*pp)->next != NULL) {
            pp = &(*pp)->next;
        }
        gfx_seg *last = *pp;
        if (last == g) {
            break;
        }
        *pp = NULL;
        c->bytes -= last->cap;
        c->n--;
        last->next = drop;
        drop = last;
    }
    pthread_mutex_unlock(&c->lock);
    while (drop != NULL) {
        gfx_seg *next = drop->next;
        seg_release(drop);
        drop = next;
    }
    return g;
}

void
gfx_msg_deliver(const gfx_msg *m)
{
    for (uint32_t i = 0; i < m->nfds; i++) {
        if (m->segs != NULL && m->segs[i] != NULL) {
            atomic_fetch_add_explicit(&seg_hdr(m->segs[i])->inflight, 1,
                                      memory_order_relaxed);
        }
    }
}

/* ---- message buffers ------------------------------------------------------ */

void
gfx_msg_clear(gfx_msg *m)
{
    PyMem_RawFree(m->data);
    m->data = NULL;
    m->len = 0;
    for (uint32_t i = 0; i < m->nfds; i++) {
        if (m->fds[i] >= 0) {
            close(m->fds[i]);
        }
        if (m->segs != NULL) {
            seg_release(m->segs[i]);
        }
    }
    PyMem_RawFree(m->fds);
    PyMem_RawFree(m->segs);
    m->fds = NULL;
    m->segs = NULL;
    m->nfds = 0;
}

/* Take over fd (and a hold on seg) into the message. */
static int
msg_add_fd(gfx_msg *m, int fd, gfx_seg *seg)
{
    int *fds = PyMem_RawRealloc(m->fds, sizeof(int) * (m->nfds + 1));
    if (fds != NULL) {
        m->fds = fds;
    }
    gfx_seg **segs = fds ? PyMem_RawRealloc(m->segs,
                                            sizeof(gfx_seg *) * (m->nfds + 1))
                         : NULL;
    if (fds == NULL || segs == NULL) {
        close(fd);
        seg_release(seg);
        PyErr_NoMemory();
        return -1;
    }
    m->segs = segs;
    m->fds[m->nfds] = fd;
    m->segs[m->nfds] = seg;
    m->nfds++;
    return 0;
}

/* Copy `len` bytes into a segment (a warm cached one when this thread has
 * a cache) and add it to the message. */
static int
msg_add_segment(gfx_msg *m, const void *src, size_t len)
{
    gfx_segcache *c = gfx__segcache;
    gfx_seg *g;
    int err = 0, fd = -1;
    Py_BEGIN_ALLOW_THREADS
    g = seg_acquire(c, len, &err);
    if (g != NULL) {
        memcpy((char *)g->shm.addr + GFX_SEG_DATA, src, len);
        fd = dup(g->shm.fd);
        if (fd < 0) {
            err = -errno;
        }
        else {
            int fl = fcntl(fd, F_GETFD);
            (void)fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        }
    }
    Py_END_ALLOW_THREADS
    if (g == NULL || fd < 0) {
        seg_release(g);
        gfx_raise(err, "sending a buffer to another process");
        return -1;
    }
    /* Without a cache the segment lives as long as the message. */
    return msg_add_fd(m, fd, g);
}

/* Lay out prefix + payload.  Payloads that do not fit in `max_inline`
 * bytes of frame go to a segment (GF_MSG_FLAG_EXT). */
static int
msg_assemble(gfx_msg *m, uint32_t kind, gf_msg_head_t *head,
             const uint64_t *buflens, const void *payload, size_t plen,
             size_t max_inline)
{
    uint32_t nb = head->nbufs;
    uint64_t lens[GF_MSG_MAX_BUFS + 1];
    if (nb > GF_MSG_MAX_BUFS - 1) {
        PyErr_SetString(PyExc_ValueError,
                        "too many large buffers in one message (at most 1023)");
        return -1;
    }
    memcpy(lens, buflens, sizeof(uint64_t) * nb);
    if (gf_msg_prefix_size(nb) + plen > max_inline) {
        if (msg_add_segment(m, payload, plen) < 0) {
            return -1;
        }
        lens[nb++] = plen;
        head->nbufs = nb;
        head->flags |= GF_MSG_FLAG_EXT;
        plen = 0;
    }
    size_t total = gf_msg_prefix_size(nb) + plen;
    m->data = PyMem_RawMalloc(total ? total : 1);
    if (m->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t off = gf_msg_write_prefix(m->data, head, lens);
    if (plen) {
        memcpy(m->data + off, payload, plen);
    }
    m->len = total;
    m->kind = kind;
    return 0;
}

/* ---- encoding --------------------------------------------------------------- */

/* Try the fixed-width codecs on a list.  1: done (m filled); 0: not
 * applicable; -1: error. */
static int
encode_fixed(gfx_msg *m, uint32_t kind, gf_msg_head_t *head, PyObject *list,
             size_t max_inline)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n == 0) {
        head->codec = GF_CODEC_NONE;
        head->count = 0;
        return msg_assemble(m, kind, head, NULL, NULL, 0, max_inline) < 0 ? -1 : 1;
    }
    PyObject *first = PyList_GET_ITEM(list, 0);
    if (first == Py_None) {
        for (Py_ssize_t i = 1; i < n; i++) {
            if (PyList_GET_ITEM(list, i) != Py_None) {
                return 0;
            }
        }
        head->codec = GF_CODEC_NONE;
        head->count = (uint32_t)n;
        return msg_assemble(m, kind, head, NULL, NULL, 0, max_inline) < 0 ? -1 : 1;
    }
    int is_int = PyLong_CheckExact(first), is_float = PyFloat_CheckExact(first);
    if (!is_int && !is_float) {
        return 0;
    }
    /* A scratch array; the list can change under us only if we run Python
     * code, which we do not. */
    int64_t *vals = PyMem_RawMalloc(sizeof(int64_t) * (size_t)n);
    if (vals == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(list, i);
        if (is_int) {
            int overflow = 0;
            long long v;
            if (!PyLong_CheckExact(o) ||
                ((v = PyLong_AsLongLongAndOverflow(o, &overflow)), overflow)) {
                PyMem_RawFree(vals);
                return 0;
            }
            vals[i] = v;
        }
        else {
            if (!PyFloat_CheckExact(o)) {
                PyMem_RawFree(vals);
                return 0;
            }
            double d = PyFloat_AS_DOUBLE(o);
            memcpy(&vals[i], &d, sizeof d);
        }
    }
    head->codec = is_int ? GF_CODEC_I64 : GF_CODEC_F64;
    head->count = (uint32_t)n;
    int rc = msg_assemble(m, kind, head, NULL, vals, sizeof(int64_t) * (size_t)n,
                          max_inline);
    PyMem_RawFree(vals);
    return rc < 0 ? -1 : 1;
}

static PyObject *
call_dumps(gfx_state *st, PyObject *dumps, PyObject *obj)
{
    PyObject *args[3] = {obj, st->int_protocol, st->oob_callback};
    return PyObject_Vectorcall(dumps, args, 2, st->kw_buffer_callback);
}

/* pickle.dumps, then cloudpickle.dumps if the standard pickler refuses
 * (lambdas, closures, local classes).  prefer_cloud: cloudpickle at once
 * (functions of __main__, which a worker cannot import by name). */
static PyObject *
dumps_any(gfx_state *st, PyObject *obj, int prefer_cloud)
{
    PyObject *res, *saved = NULL;
    if (!prefer_cloud) {
        res = call_dumps(st, st->pickle_dumps, obj);
        if (res != NULL || !(PyErr_ExceptionMatches(st->PicklingError) ||
                             PyErr_ExceptionMatches(PyExc_AttributeError) ||
                             PyErr_ExceptionMatches(PyExc_TypeError))) {
            return res;
        }
        saved = gfx_fetch_exception();
        /* Start the second attempt with no buffers collected. */
        if (PyList_SetSlice(gfx__oob_list, 0, PY_SSIZE_T_MAX, NULL) < 0) {
            Py_DECREF(saved);
            return NULL;
        }
    }
    PyObject *cloud = gfx_cloudpickle_dumps(st);
    res = cloud ? call_dumps(st, cloud, obj) : NULL;
    if (res == NULL && saved != NULL) {
        /* The standard pickler's error is the clearer one to report. */
        PyErr_Clear();
        gfx_restore_exception(saved);
        Py_DECREF(saved);
        return NULL;
    }
    Py_XDECREF(saved);
    return res;
}

/* bytes, bytearray and memoryview own (or show) their memory inline, so
 * pickle copies them into the stream; from 64 KiB on, wrap them so that
 * they go out of band like numpy arrays.  Done down to three levels of
 * lists, tuples and dict values: a task's or result's list of items, the
 * tuples among them (starmap), apply's (args, kwargs) pair and their
 * elements -- where arguments and results live.  Returns a new reference:
 * obj itself when nothing is large. */
static int
is_large_buffer(PyObject *o)
{
    if (PyBytes_CheckExact(o)) {
        return PyBytes_GET_SIZE(o) >= GFX_OOB_MIN;
    }
    if (PyByteArray_CheckExact(o)) {
        return PyByteArray_GET_SIZE(o) >= GFX_OOB_MIN;
    }
    if (PyMemoryView_Check(o)) {
        /* Any size: pickle cannot send a memoryview at all (cloudpickle
         * would turn it into bytes); wrapped, a small one travels in band
         * and still arrives as a memoryview. */
        return 1;
    }
    return 0;
}

static PyObject *
wrap_large(gfx_state *st, PyObject *o, int depth)
{
    if (is_large_buffer(o)) {
        if (st->LargeBuffer == NULL) {
            PyObject *mod = PyImport_ImportModule("gilfree._process");
            PyObject *cls = mod ? PyObject_GetAttrString(mod, "_LargeBuffer")
                                : NULL;
            Py_XDECREF(mod);
            if (cls == NULL) {
                return NULL;
            }
            if (st->LargeBuffer == NULL) {
                st->LargeBuffer = cls;
            }
            else {
                Py_DECREF(cls);
            }
        }
        return PyObject_CallOneArg(st->LargeBuffer, o);
    }
    if (depth >= 3 || !(PyList_CheckExact(o) || PyTuple_CheckExact(o) ||
                        PyDict_CheckExact(o))) {
        return Py_NewRef(o);
    }
    if (PyDict_CheckExact(o)) {
        PyObject *key, *val, *copy = NULL;
        Py_ssize_t pos = 0;
        while (PyDict_Next(o, &pos, &key, &val)) {
            if (!is_large_buffer(val)) {
                continue;
            }
            if (copy == NULL && (copy = PyDict_Copy(o)) == NULL) {
                return NULL;
            }
            PyObject *w = wrap_large(st, val, depth + 1);
            if (w == NULL || PyDict_SetItem(copy, key, w) < 0) {
                Py_XDECREF(w);
                Py_DECREF(copy);
                return NULL;
            }
            Py_DECREF(w);
        }
        return copy ? copy : Py_NewRef(o);
    }
    int is_list = PyList_CheckExact(o);
    Py_ssize_t n = is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
    PyObject *copy = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
        PyObject *w = wrap_large(st, item, depth + 1);
        if (w == NULL) {
            Py_XDECREF(copy);
            return NULL;
        }
        if (w == item && copy == NULL) {
            Py_DECREF(w);
            continue;
        }
        if (copy == NULL) {
            copy = is_list ? PyList_GetSlice(o, 0, n) : PyTuple_GetSlice(o, 0, n);
            if (copy == NULL) {
                Py_DECREF(w);
                return NULL;
            }
        }
        if (is_list) {
            PyList_SetItem(copy, i, w);  /* steals w */
        }
        else {
            /* A fresh slice of a tuple may be shared when it equals the
             * original: build a new tuple instead. */
            if (Py_REFCNT(copy) != 1 || copy == o) {
                PyObject *t = PyTuple_New(n);
                if (t == NULL) {
                    Py_DECREF(w);
                    Py_DECREF(copy);
                    return NULL;
                }
                for (Py_ssize_t k = 0; k < n; k++) {
                    PyTuple_SET_ITEM(t, k, Py_NewRef(PyTuple_GET_ITEM(copy, k)));
                }
                Py_SETREF(copy, t);
            }
            Py_SETREF(PyTuple_GET_ITEM(copy, i), w);
        }
    }
    return copy ? copy : Py_NewRef(o);
}

int
gfx_encode(gfx_state *st, uint32_t kind, gf_msg_head_t *head, PyObject *obj,
           int flags, size_t max_inline, gfx_msg *m)
{
    memset(m, 0, sizeof *m);
    head->nbufs = 0;
    head->reserved = 0;
    if ((flags & GFX_ENC_FIXED) && PyList_CheckExact(obj)) {
        int rc = encode_fixed(m, kind, head, obj, max_inline);
        if (rc != 0) {
            return rc < 0 ? -1 : 0;
        }
    }
    head->codec = GF_CODEC_PICKLE;
    if (PyList_CheckExact(obj) && kind == GF_MSG_TASK) {
        head->count = (uint32_t)PyList_GET_SIZE(obj);
    }
    PyObject *oob = PyList_New(0);
    if (oob == NULL) {
        return -1;
    }
    PyObject *wrapped = kind == GF_MSG_FUNC ? Py_NewRef(obj)
                                            : wrap_large(st, obj, 0);
    if (wrapped == NULL) {
        Py_DECREF(oob);
        return -1;
    }
    PyObject *saved = gfx__oob_list;
    gfx__oob_list = oob;
    PyObject *data = dumps_any(st, wrapped, (flags & GFX_ENC_CLOUD) != 0);
    gfx__oob_list = saved;
    Py_DECREF(wrapped);
    if (data == NULL) {
        Py_DECREF(oob);
        return -1;
    }
    Py_ssize_t nb = PyList_GET_SIZE(oob);
    uint64_t lens[GF_MSG_MAX_BUFS];
    int rc = 0;
    if (nb > (Py_ssize_t)GF_MSG_MAX_BUFS - 1) {
        PyErr_SetString(PyExc_ValueError,
                        "too many large buffers in one message (at most 1023)");
        rc = -1;
    }
    for (Py_ssize_t i = 0; rc == 0 && i < nb; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(oob, i), &view,
                               PyBUF_ANY_CONTIGUOUS) < 0) {
            rc = -1;
            break;
        }
        lens[i] = (uint64_t)view.len;
        rc = msg_add_segment(m, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    Py_DECREF(oob);
    if (rc == 0) {
        head->nbufs = (uint32_t)nb;
        rc = msg_assemble(m, kind, head, lens, PyBytes_AS_STRING(data),
                          (size_t)PyBytes_GET_SIZE(data), max_inline);
    }
    Py_DECREF(data);
    if (rc < 0) {
        gfx_msg_clear(m);
    }
    return rc;
}

int
gfx_encode_raw(uint32_t kind, gf_msg_head_t *head, const void *payload,
               size_t len, gfx_msg *m)
{
    memset(m, 0, sizeof *m);
    head->nbufs = 0;
    head->reserved = 0;
    return msg_assemble(m, kind, head, NULL, payload, len, (size_t)-1);
}

/* ---- ShmBuffer: a mapping handed to Python --------------------------------- */

typedef struct {
    PyObject_HEAD
    gf_shm_t shm;        /* the data, copy-on-write */
    gf_shm_t hdr;        /* the segment's header page, shared */
} ShmBufferObject;

static int
ShmBuffer_getbuffer(PyObject *op, Py_buffer *view, int flags)
{
    ShmBufferObject *self = (ShmBufferObject *)op;
    return PyBuffer_FillInfo(view, op, self->shm.addr,
                             (Py_ssize_t)self->shm.size, 0, flags);
}

static void
ShmBuffer_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    ShmBufferObject *self = (ShmBufferObject *)op;
    gf_shm_close(&self->shm);
    if (self->hdr.addr != NULL) {
        /* Let the sender reuse the segment (after our unmap above). */
        gfx_seghdr *h = self->hdr.addr;
        atomic_fetch_sub_explicit(&h->inflight, 1, memory_order_release);
    }
    gf_shm_close(&self->hdr);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
ShmBuffer_repr(PyObject *op)
{
    return PyUnicode_FromFormat("<gilfree shared-memory buffer of %zu bytes>",
                                ((ShmBufferObject *)op)->shm.size);
}

static PyType_Slot ShmBuffer_slots[] = {
    {Py_tp_doc, (void *)"Shared memory received from another process, "
                        "mapped copy-on-write; unmapped when the last "
                        "reference goes."},
    {Py_tp_dealloc, ShmBuffer_dealloc},
    {Py_tp_repr, ShmBuffer_repr},
    {Py_bf_getbuffer, ShmBuffer_getbuffer},
    {0, NULL},
};

PyType_Spec gfx_shmbuffer_spec = {
    .name = "gilfree._core.ShmBuffer",
    .basicsize = sizeof(ShmBufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ShmBuffer_slots,
};

/* Fault received buffers in at once?  Workers do (a task nearly always
 * reads its whole argument; one system call beats a fault per page); the
 * pool does not (a caller may keep a big result and read a few items of
 * it: no need to pay for every page up front). */
int gfx_populate_received = 0;

/* Map a received segment (fd consumed: closed in every case).  A header
 * that is not ours makes no mapping of it: then nothing is uncounted. */
static PyObject *
shmbuffer_new(gfx_state *st, int fd, uint64_t len)
{
    ShmBufferObject *self = PyObject_New(ShmBufferObject, st->ShmBuffer_Type);
    if (self == NULL) {
        close(fd);
        return NULL;
    }
    self->shm = (gf_shm_t)GF_SHM_INIT;
    self->hdr = (gf_shm_t)GF_SHM_INIT;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = gf_shm_map_at(fd, 0, GFX_SEG_DATA, 0, &self->hdr);
    if (rc == 0 && ((gfx_seghdr *)self->hdr.addr)->magic != GFX_SEG_MAGIC) {
        gf_shm_close(&self->hdr);
        rc = GF_EPROTO;
    }
    if (rc == 0) {
        rc = gf_shm_map_at(fd, GFX_SEG_DATA, (size_t)len,
                           GF_SHM_PRIVATE |
                               (gfx_populate_received ? GF_SHM_POPULATE : 0),
                           &self->shm);
    }
    close(fd);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(self);
        return gfx_raise(rc, "mapping a buffer from another process");
    }
    return (PyObject *)self;
}

/* ---- decoding ---------------------------------------------------------------- */

static PyObject *
decode_fixed(const gf_msg_t *msg, const unsigned char *p, size_t plen)
{
    uint32_t n = msg->head.count;
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    int64_t a = 0, step = 0;
    if (msg->head.codec == GF_CODEC_RANGE) {
        if (plen < 16) {
            Py_DECREF(list);
            PyErr_SetString(PyExc_RuntimeError, "gilfree: short range message");
            return NULL;
        }
        memcpy(&a, p, 8);
        memcpy(&step, p + 8, 8);
    }
    for (uint32_t i = 0; i < n; i++) {
        PyObject *o;
        switch (msg->head.codec) {
        case GF_CODEC_I64: {
            int64_t v;
            memcpy(&v, p + 8 * (size_t)i, 8);
            o = PyLong_FromLongLong(v);
            break;
        }
        case GF_CODEC_F64: {
            double d;
            memcpy(&d, p + 8 * (size_t)i, 8);
            o = PyFloat_FromDouble(d);
            break;
        }
        case GF_CODEC_RANGE:
            /* Wraps like C, never traps: the producer checked the range
             * fits; a hostile one only gets wrong numbers. */
            o = PyLong_FromLongLong(
                (long long)((uint64_t)a + (uint64_t)step * (uint64_t)i));
            break;
        default:
            o = Py_NewRef(Py_None);
            break;
        }
        if (o == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, o);
    }
    return list;
}

PyObject *
gfx_decode(gfx_state *st, const gf_msg_t *msg, int *fds, uint32_t nfds)
{
    const unsigned char *payload = msg->payload;
    size_t plen = msg->payload_len;
    uint32_t nb = msg->head.nbufs;
    int ext = (msg->head.flags & GF_MSG_FLAG_EXT) != 0;
    PyObject *res = NULL, *buffers = NULL, *stream = NULL;

    if (nfds != nb) {
        PyErr_Format(PyExc_RuntimeError,
                     "gilfree: message announced %u buffers, %u arrived", nb,
                     nfds);
        goto done;
    }
    if (nb > 0) {
        buffers = PyList_New(0);
        if (buffers == NULL) {
            goto done;
        }
        for (uint32_t i = 0; i < nb; i++) {
            PyObject *b = shmbuffer_new(st, fds[i], msg->buflens[i]);
            fds[i] = -1;  /* consumed */
            if (b == NULL || PyList_Append(buffers, b) < 0) {
                Py_XDECREF(b);
                goto done;
            }
            Py_DECREF(b);
        }
        if (ext) {
            /* The payload is the last buffer. */
            stream = PyList_GET_ITEM(buffers, nb - 1);
            Py_INCREF(stream);
            if (PyList_SetSlice(buffers, nb - 1, nb, NULL) < 0) {
                goto done;
            }
            ShmBufferObject *sb = (ShmBufferObject *)stream;
            payload = sb->shm.addr;
            plen = sb->shm.size;
        }
    }
    if (msg->head.codec != GF_CODEC_PICKLE) {
        res = decode_fixed(msg, payload, plen);
        goto done;
    }
    PyObject *view = PyMemoryView_FromMemory((char *)payload,
                                             (Py_ssize_t)plen, PyBUF_READ);
    if (view == NULL) {
        goto done;
    }
    if (buffers != NULL && PyList_GET_SIZE(buffers) > 0) {
        PyObject *args[2] = {view, buffers};
        res = PyObject_Vectorcall(st->pickle_loads, args, 1, st->kw_buffers);
    }
    else {
        res = PyObject_CallOneArg(st->pickle_loads, view);
    }
    /* pickle copies what it keeps from the stream: the view may go.  Keep
     * a loading error across the call (a call with an error set would
     * replace it). */
    PyObject *err = res == NULL ? gfx_fetch_exception() : NULL;
    PyObject *r = PyObject_CallMethod(view, "release", NULL);
    Py_XDECREF(r);
    if (r == NULL) {
        PyErr_Clear();
    }
    Py_DECREF(view);
    if (err != NULL) {
        gfx_restore_exception(err);
        Py_DECREF(err);
    }
done:
    for (uint32_t i = 0; i < nfds; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
    Py_XDECREF(stream);
    Py_XDECREF(buffers);
    return res;
}

/* Receive the descriptors of a message from the socket (blocking briefly:
 * they were sent before the frame was committed).  Touches no Python
 * state: callers holding the GIL release it around the call. */
int
gfx_recv_fds(int sock, const gf_msg_t *msg, int *fds)
{
    uint32_t want = msg->head.nbufs, got = 0;
    while (got < want) {
        uint32_t n = 0;
        int rc;
        uint32_t max = want - got;
        if (max > GF_FD_MAX_PER_MSG) {
            max = GF_FD_MAX_PER_MSG;
        }
        do {
            rc = gf_fd_recv(sock, fds + got, max, &n, 5 * 1000000000LL);
        } while (rc == GF_EINTR);
        if (rc < 0) {
            for (uint32_t i = 0; i < got; i++) {
                close(fds[i]);
            }
            return rc;
        }
        got += n;
    }
    return 0;
}

/* Send a message's descriptors (in batches the kernel accepts). */
int
gfx_send_fds(int sock, const int *fds, uint32_t n)
{
    uint32_t done = 0;
    while (done < n) {
        uint32_t k = n - done;
        if (k > GF_FD_MAX_PER_MSG) {
            k = GF_FD_MAX_PER_MSG;
        }
        int rc;
        do {
            rc = gf_fd_send(sock, fds + done, k, 5 * 1000000000LL);
        } while (rc == GF_EINTR);
        if (rc < 0) {
            return rc;
        }
        done += k;
    }
    return 0;
}
