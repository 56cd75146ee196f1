/*
 * watchapi.h — the watch API (watch.listen; docs/watch.md): crd-shaped kinds
 * served the way the Kubernetes API serves custom resources, from crwatch's
 * own store of the current objects and a bounded history of events:
 *
 *   GET /apis/{group}/{version}[/namespaces/{ns}]/{plural}          a list
 *   GET /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}       one object
 *   ...?watch=1&resourceVersion=N                                     NDJSON events after N
 *   Accept: text/event-stream                                         the same as Server-Sent Events
 *
 * A resourceVersion is the commit position (LSN) of the transaction that
 * made the change, so every change of one transaction shares it (as etcd's
 * revision).  The driver feeds it: events of the open transaction, then its
 * commit; they are shown only once the pipeline confirmed them (the ack
 * rule: a watcher never sees what a restart could take back).
 *
 * Thread-safety: the feeding functions are called from the driver's thread;
 * requests are served from libmicrohttpd's threads, under one mutex.
 */
#ifndef CRW_WATCHAPI_H
#define CRW_WATCHAPI_H

#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/event.h"

typedef struct crw_wapi crw_wapi_t;

/* Starts serving watch.listen.  @returns the API, or NULL with errstr (CRW_ERR_CONFIG in *err). */
crw_wapi_t *crw_wapi_start(const crw_config_t *conf, int *err, char *errstr, size_t errstr_size);
void crw_wapi_stop(crw_wapi_t *w);

/* Where the stream starts: the history is complete after position (older resourceVersions get 410 Gone). */
void crw_wapi_base(crw_wapi_t *w, uint64_t position);
/* One object as it is at position (the start's listing): into the store, not the history. */
void crw_wapi_seed(crw_wapi_t *w, const crw_event_t *ev, uint64_t position);
/* An event of the open transaction (copied). */
void crw_wapi_event(crw_wapi_t *w, const crw_event_t *ev);
/* The open transaction committed at end / was dropped (it comes again). */
void crw_wapi_commit(crw_wapi_t *w, uint64_t end);
void crw_wapi_abandon(crw_wapi_t *w);
/* Everything up to position is in every sink: the transactions up to it are shown. */
void crw_wapi_confirmed(crw_wapi_t *w, uint64_t position);

/*
 * The selectors of a request (labelSelector, fieldSelector; NULL: none)
 * against one object: its namespace, name and nlabels labels (labels holds
 * key, value, key, value, ...), as a list or watch filters each object.
 * @returns 1 it matches, 0 it does not, -1 a selector does not parse (400 Bad Request).
 */
int crw_wapi_selector_match(const char *label_selector, const char *field_selector, const char *ns, const char *name,
                            const char *const *labels, int nlabels);

#endif
