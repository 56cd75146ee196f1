#!/usr/bin/env python3
"""informer.py - a list-and-watch client for crwatch's watch API, after
client-go's reflector and informer (docs/watch.md), in the Python 3 standard
library only.

It lists the objects into a local store keyed "namespace/name" and keeps the
list's resourceVersion; it watches from there (watch=1, allowWatchBookmarks,
timeoutSeconds) and applies each ADDED, MODIFIED and DELETED line of the
stream to the store, a BOOKMARK moving the resourceVersion only. A watch that
ends (its timeoutSeconds, or the server stopping) is started again from the
last resourceVersion; a 410 Gone, as the answer to the watch or as an ERROR
event carrying a Status with code 410 (or any other ERROR event), makes it
list again: the reflector's rule. Other failures (a refused connection, a
503 while crwatch starts, a 400) are retried after a second, from the last
resourceVersion, each told on stderr.

  examples/informer.py http://127.0.0.1:9480 --group media.example.com \\
      --version v1 --plural videotranscodingjobs --namespace default

Output, one JSON line each: every event handled ({"type", "key",
"resourceVersion", "phase": status.phase or null, "via": "watch"}), every
list ({"list": why, "resourceVersion", "items", "relists"}) followed by what
it changed in the store (events with "via": "list", as an informer's
handlers see them), every watch started ({"watch": n, "resourceVersion"}),
and at exit (after --max-seconds, or on SIGTERM or Ctrl-C) the store
({"store": {key: resourceVersion}, "relists", "watches"}). With --print
store, only that last line.
"""
import argparse
import http.client
import json
import signal
import socket
import sys
import time
import urllib.parse


class Relist(Exception):
    """A 410 Gone (the resourceVersion is older than the server's history), or another ERROR event."""


class Stop(Exception):
    """--max-seconds passed, or SIGTERM."""


class Informer:
    def __init__(self, args):
        self.args = args
        url = urllib.parse.urlsplit(args.url_base)
        self.host, self.prefix = url.netloc, url.path.rstrip("/")
        ns = f"/namespaces/{args.namespace}" if args.namespace else ""
        self.path = f"{self.prefix}/apis/{args.group}/{args.version}{ns}/{args.plural}"
        self.deadline = time.monotonic() + args.max_seconds if args.max_seconds > 0 else None
        self.store = {}  # "namespace/name" -> the object
        self.rv = args.resource_version
        self.relists = self.watches = 0

    def out(self, line, final=False):
        if final or self.args.print == "events":
            print(json.dumps(line), flush=True)

    def remaining(self):
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Stop()
        return left

    def request(self, params, timeout):
        """GET the collection with params and the selectors: the response; Relist on a 410."""
        q = dict(params)
        if self.args.label_selector:
            q["labelSelector"] = self.args.label_selector
        if self.args.field_selector:
            q["fieldSelector"] = self.args.field_selector
        conn = http.client.HTTPConnection(self.host, timeout=timeout)
        conn.request("GET", self.path + "?" + urllib.parse.urlencode(q), headers={"Accept": "application/json"})
        resp = conn.getresponse()
        if resp.status == 410:
            resp.read()
            conn.close()
            raise Relist("410 Gone")
        if resp.status != 200:
            body = resp.read()[:300].decode(errors="replace")
            conn.close()
            raise OSError(f"HTTP {resp.status}: {body}")
        return conn, resp

    def handle(self, type_, obj, via):
        md = obj.get("metadata") or {}
        key = f"{md.get('namespace', '')}/{md.get('name', '')}"
        if type_ == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = obj
        status = obj.get("status")
        phase = status.get("phase") if isinstance(status, dict) else None
        self.out({"type": type_, "key": key, "resourceVersion": md.get("resourceVersion"), "phase": phase, "via": via})

    def list(self, why):
        """Replaces the store with a list; what changed goes to the handlers, as an informer's Replace does."""
        conn, resp = self.request({}, timeout=min(30, self.remaining() or 30))
        body = json.loads(resp.read())
        conn.close()
        if why != "start":
            self.relists += 1
        self.rv = body["metadata"]["resourceVersion"]
        items = {}
        for obj in body.get("items") or []:
            md = obj["metadata"]
            items[f"{md.get('namespace', '')}/{md['name']}"] = obj
        self.out({"list": why, "resourceVersion": self.rv, "items": len(items), "relists": self.relists})
        for key in sorted(set(self.store) - set(items)):
            self.handle("DELETED", self.store[key], "list")
        for key, obj in sorted(items.items()):
            old = self.store.get(key)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self.handle("MODIFIED" if old is not None else "ADDED", obj, "list")

    def watch(self):
        """One watch from self.rv until it ends; Relist on a 410 or an ERROR event."""
        params = {"watch": "1", "resourceVersion": self.rv, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(self.args.timeout_seconds)}
        # Bookmarks come every 5 s of quiet: a longer silence is a dead connection.
        limit = self.args.timeout_seconds + 15
        left = self.remaining()
        conn, resp = self.request(params, timeout=min(limit, left) if left else limit)
        self.watches += 1
        self.out({"watch": self.watches, "resourceVersion": self.rv})
        started, lines = time.monotonic(), 0
        try:
            while True:
                try:
                    line = resp.readline()
                except socket.timeout:
                    self.remaining()  # Stop when that was the deadline
                    return  # else: watch again
                if not line:  # the watch ended; at once and empty, as the reflector has it, it is an error
                    if not lines and time.monotonic() - started < 1:
                        raise OSError("very short watch")
                    return
                lines += 1
                if not line.strip():
                    continue
                ev = json.loads(line)
                type_, obj = ev.get("type"), ev.get("object") or {}
                if type_ == "ERROR":
                    self.out({"type": "ERROR", "code": obj.get("code"), "reason": obj.get("reason"), "via": "watch"})
                    raise Relist(f"ERROR event {obj.get('code')} {obj.get('reason')}")
                if type_ == "BOOKMARK":
                    self.out({"type": "BOOKMARK", "key": None,
                              "resourceVersion": obj["metadata"]["resourceVersion"], "phase": None, "via": "watch"})
                elif type_ in ("ADDED", "MODIFIED", "DELETED"):
                    self.handle(type_, obj, "watch")
                else:
                    continue
                self.rv = obj["metadata"]["resourceVersion"]
        finally:
            conn.close()

    def run(self):
        need_list = not self.rv
        why = "start"
        while True:
            try:
                if need_list:
                    self.list(why)
                    need_list = False
                self.watch()
            except Relist as e:
                need_list, why = True, str(e)
            except (OSError, http.client.HTTPException, ValueError) as e:
                print(json.dumps({"retry": str(e)}), file=sys.stderr, flush=True)
                time.sleep(1)
                self.remaining()

    def final(self):
        self.out({"store": {k: o["metadata"].get("resourceVersion") for k, o in sorted(self.store.items())},
                  "relists": self.relists, "watches": self.watches}, final=True)


def stop(signum, frame):
    raise Stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url_base", help="http://host:port of watch.listen")
    p.add_argument("--group", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--plural", required=True)
    p.add_argument("--namespace", help="one namespace (default: every namespace)")
    p.add_argument("--label-selector")
    p.add_argument("--field-selector")
    p.add_argument("--timeout-seconds", type=int, default=300, help="of each watch (default 300)")
    p.add_argument("--max-seconds", type=float, default=0, help="stop after that long (default: never)")
    p.add_argument("--resource-version", help="watch from it first instead of listing (a client that kept its "
                                              "store; the store starts empty, a 410 makes it list)")
    p.add_argument("--print", choices=("events", "store"), default="events")
    inf = Informer(p.parse_args())
    signal.signal(signal.SIGTERM, stop)
    try:
        inf.run()
    except (Stop, KeyboardInterrupt):
        pass
    inf.final()


if __name__ == "__main__":
    main()
