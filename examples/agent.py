#!/usr/bin/env python3
"""A minimal metro agent, Python standard library only: a starting point for
agents that are not written in Rust.

It subscribes as its identity with explicit acks, answers every chat message
(Telegram, Discord) that reaches it, and acknowledges a message only once its
answer has been sent, so a message is never lost: what was not acknowledged
is delivered again. Each answer carries an idempotency key derived from the
message it answers, so a message delivered again is not answered twice:
metrod answers a repeated key with the first reply (`duplicate: true`) and
sends nothing, and this process also remembers the last 1024 messages it
answered. When metrod goes away it says so once and reconnects with backoff;
the subscription resumes from its durable cursor. Ctrl-C (or SIGTERM) stops
it cleanly. It runs until stopped.

Usage:
    python3 examples/agent.py --as metro://claude/user/me [--socket PATH]

The socket is --socket, else $METRO_SOCKET, else <state dir>/metro.sock
(the state dir: $METRO_STATE_DIR, else $XDG_STATE_HOME/metro, else
~/.local/state/metro). Replace `respond` with your agent's brain.
"""
import argparse
import collections
import json
import os
import signal
import socket
import sys
import time

CHAT_STATIONS = ("telegram", "discord")
REMEMBERED = 1024  # answered message ids kept in memory
BACKOFF_START, BACKOFF_MAX = 0.1, 5.0


def respond(event):
    """The answer to one chat message, or None to stay silent."""
    return "got it: %s" % event.get("text", "")


def log(*what):
    print("agent.py:", *what, file=sys.stderr, flush=True)


def default_socket():
    if os.environ.get("METRO_SOCKET"):
        return os.environ["METRO_SOCKET"]
    state = os.environ.get("METRO_STATE_DIR")
    if not state and os.environ.get("XDG_STATE_HOME"):
        state = os.path.join(os.environ["XDG_STATE_HOME"], "metro")
    if not state:
        state = os.path.expanduser("~/.local/state/metro")
    return os.path.join(state, "metro.sock")


class Refused(Exception):
    """metrod answered a request with an error (`error.code`, `message`)."""

    def __init__(self, error):
        super().__init__("%s: %s" % (error.get("code"), error.get("message")))
        self.code = error.get("code")


class Connection:
    """One connection to metrod: JSON lines, a `req` per request; frames
    that arrive while an answer is awaited are kept for `frame`."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.next_req = 1
        self.waiting = collections.deque()

    def close(self):
        self.sock.close()

    def read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("metrod closed the connection")
        return json.loads(line)

    def call(self, request):
        req = self.next_req
        self.next_req += 1
        self.sock.sendall(json.dumps(dict(request, req=req)).encode() + b"\n")
        while True:
            frame = self.read()
            if "ok" in frame and frame.get("req") in (req, None):
                if not frame["ok"]:
                    raise Refused(frame["error"])
                return frame
            self.waiting.append(frame)

    def frame(self):
        return self.waiting.popleft() if self.waiting else self.read()


class Agent:
    def __init__(self, identity, path):
        self.me = identity
        self.path = path
        self.answered = collections.OrderedDict()
        self.away = False  # an outage was reported and has not ended
        self.wait = BACKOFF_START  # before the next try to reconnect

    def run(self):
        """Serves until stopped, reconnecting whenever metrod goes away:
        one line on stderr per outage, backoff between tries."""
        while True:
            try:
                conn = Connection(self.path)
                try:
                    self.serve(conn)
                finally:
                    conn.close()
            except (OSError, EOFError) as e:
                if not self.away:
                    log("metrod is gone (%s: %s); reconnecting until it is back" % (self.path, e))
                    self.away = True
                time.sleep(self.wait)
                self.wait = min(self.wait * 2, BACKOFF_MAX)

    def serve(self, conn):
        hello = conn.call({"op": "hello", "client": "examples/agent.py"})
        if hello["protocol"] != 1:
            raise SystemExit("agent.py speaks protocol 1, metrod speaks %r" % hello["protocol"])
        sub = conn.call({"op": "subscribe", "as": self.me, "ack": "explicit",
                         "follow": True})
        log("subscribed as %s from offset %d" % (self.me, sub["offset"]))
        self.away, self.wait = False, BACKOFF_START
        while True:
            frame = conn.frame()
            if frame.get("sub") != sub["sub"] or "event" not in frame:
                continue  # a gap notice, or another subscription's frame
            event = frame["event"]
            if self.wants(event):
                self.answer(conn, event)
            conn.call({"op": "ack", "sub": sub["sub"], "offset": frame["offset"]})

    def wants(self, event):
        return (event.get("kind") == "inbound"
                and event.get("station") in CHAT_STATIONS
                and event.get("from") != self.me
                and event["id"] not in self.answered)

    def answer(self, conn, event):
        text = respond(event)
        if text is None:
            return
        try:
            sent = conn.call({
                "op": "send", "line": event["line"], "text": text,
                "replyTo": event["id"], "from": self.me,
                # The same message gets the same key, however often it comes.
                "idempotencyKey": "agent.py:" + event["id"],
            })
        except Refused as e:
            # Permanent for this message (a bad line, a deleted chat):
            # say so and move on, or it would come back forever.
            log("could not answer %s: %s" % (event["id"], e))
            return
        self.answered[event["id"]] = sent.get("id")
        if len(self.answered) > REMEMBERED:
            self.answered.popitem(last=False)
        log("answered %s on %s%s" % (event["id"], event["line"],
                                      " (duplicate)" if sent.get("duplicate") else ""))


def stop(signum, frame):
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description="A minimal metro agent.")
    parser.add_argument("--as", dest="identity", default=os.environ.get("METRO_AS"),
                        help="identity to act as, e.g. metro://claude/user/me "
                             "[default: $METRO_AS]")
    parser.add_argument("--socket", default=default_socket(), help="metrod's socket")
    args = parser.parse_args()
    if not args.identity:
        parser.error("--as (or $METRO_AS) is required")
    signal.signal(signal.SIGTERM, stop)
    # Started from a script's background job, SIGINT arrives ignored (and
    # Python then keeps ignoring it): Ctrl-C / kill -INT must stop us too.
    signal.signal(signal.SIGINT, stop)
    try:
        Agent(args.identity, args.socket).run()
    except KeyboardInterrupt:
        log("stopped")
    except Refused as e:
        log("metrod refused: %s" % e)
        sys.exit(1)


if __name__ == "__main__":
    main()
