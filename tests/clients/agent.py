#!/usr/bin/env python3
"""An agent that speaks metro's socket protocol directly, with nothing but
Python's standard library. Used by tests/python_client.rs; also a starting
point for agents that are not written in Rust.

Usage: METRO_SOCKET=/path/to/metro.sock python3 agent.py
"""
import json
import os
import socket
import sys

ME = "metro://claude/user/py-agent"
OTHER = "metro://codex/user/other"


class Metro:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(15)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.next_req = 1
        self.frames = []  # frames that arrived while waiting for an answer

    def send(self, request):
        req = self.next_req
        self.next_req += 1
        request = dict(request, req=req)
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        return req

    def read(self):
        line = self.file.readline()
        if not line:
            raise EOFError("metrod closed the connection")
        return json.loads(line)

    def call(self, request):
        req = self.send(request)
        while True:
            frame = self.read()
            if frame.get("req") == req and "ok" in frame:
                if not frame["ok"]:
                    raise RuntimeError(frame["error"])
                return frame
            self.frames.append(frame)

    def event(self):
        if self.frames:
            return self.frames.pop(0)
        return self.read()


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def main():
    path = os.environ["METRO_SOCKET"]
    agent = Metro(path)
    hello = agent.call({"op": "hello", "client": "agent.py"})
    check(hello["protocol"] == 1, "protocol 1")

    sub = agent.call({"op": "subscribe", "as": ME, "ack": "explicit",
                      "follow": True, "since": "tail"})["sub"]

    other = Metro(path)
    other.call({"op": "claim", "line": "metro://telegram/77", "as": OTHER})
    other.call({"op": "publish", "event": {"line": "telegram/42", "text": "for anyone"}})
    other.call({"op": "publish", "event": {"line": "telegram/77", "text": "not for me"}})
    other.call({"op": "send", "line": ME, "text": "direct", "from": OTHER})

    got = []
    while len(got) < 2:
        frame = agent.event()
        check(frame["sub"] == sub, "frame of my subscription")
        got.append(frame)
        agent.call({"op": "ack", "sub": sub, "offset": frame["offset"]})
    texts = [f["event"]["text"] for f in got]
    check(texts == ["for anyone", "direct"], "mine-or-unclaimed plus direct: %r" % texts)
    check(got[1]["event"]["kind"] == "notify", "send to an agent line is a notify")

    # Take the conversation; a second taker with ifFree is refused.
    answer = agent.call({"op": "claim", "line": "telegram/42", "as": ME, "ifFree": True})
    check(answer["owner"] == ME and answer["previous"] is None, "claimed: %r" % answer)
    try:
        other.call({"op": "claim", "line": "telegram/42", "as": OTHER, "ifFree": True})
        check(False, "conflict expected")
    except RuntimeError as e:
        check(e.args[0]["code"] == "conflict" and e.args[0]["owner"] == ME, "conflict: %r" % e)
    claims = agent.call({"op": "claims"})["claims"]
    check(claims.get("metro://telegram/42") == ME, "claimed: %r" % claims)
    cursor = agent.call({"op": "cursor", "as": ME})
    check(cursor["offset"] == got[1]["offset"], "cursor at the last ack")
    bad = agent.send({"op": "subscribe", "mode": "mine-only"})
    while True:
        frame = agent.read()
        if frame.get("req") == bad:
            check(frame["ok"] is False and frame["error"]["code"] == "bad_request", "bad_request")
            break
    print("ok")


if __name__ == "__main__":
    main()
