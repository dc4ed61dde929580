#!/usr/bin/env python3
"""Drives `rwkv-lite chat` through a pseudo-terminal, as a person would: greedy replies, then /save, /reset,
/load and /regen. Checks that the reply after /reset + /load of the saved state equals the reply given right
after /save, that /regen repeats the last (greedy) reply, and that /reset forgets the conversation.

usage: chat_pty.py RWKV_LITE MODEL WORKDIR [extra chat flags...]"""
import os
import pty
import re
import select
import sys
import time

cli, model, work = sys.argv[1:4]
extra = sys.argv[4:]
state = os.path.join(work, "chat.state")

pid, fd = pty.fork()
if pid == 0:
    os.execv(cli, [cli, "chat", "-m", model, "--temp", "0", "-n", "40", "-t", "2"] + extra)

buf = b""


def read_until(marker, timeout=120.0):
    """Reads the terminal until `marker` (bytes) appears after what was read so far; returns the text before it."""
    global buf
    end = time.time() + timeout
    while marker not in buf:
        left = end - time.time()
        if left <= 0:
            sys.exit(f"FAIL timed out waiting for {marker!r}; the terminal showed:\n{buf.decode(errors='replace')}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                sys.exit(f"FAIL chat exited; the terminal showed:\n{buf.decode(errors='replace')}")
            buf += chunk
    before, _, buf = buf.partition(marker)
    return before.decode("utf-8", errors="strict")  # raises on a split or invalid character


def send(line):
    os.write(fd, line.encode() + b"\n")


def ask(question):
    send(question)
    # The terminal echoes the line; the reply follows "Assistant: " and ends before the next "User: " prompt.
    read_until(b"Assistant: ")
    reply = read_until(b"User: ")
    return reply.replace("\r\n", "\n").strip()


read_until(b"User: ")
first = ask("Hello! Who are you?")
send("/save " + state)
read_until(b"[state saved")
read_until(b"User: ")
after_save = ask("What is the capital of France?")
regen_before = after_save
send("/regen")
read_until(b"Assistant: ")
regen = read_until(b"User: ").replace("\r\n", "\n").strip()
send("/reset")
read_until(b"[conversation reset]")
read_until(b"User: ")
fresh = ask("What is the capital of France?")
send("/load " + state)
read_until(b"[state loaded")
read_until(b"User: ")
after_load = ask("What is the capital of France?")
send("/quit")
_, status = os.waitpid(pid, 0)

fails = 0
for name, got, want in (("reply after /load equals the reply after /save", after_load, after_save),
                        ("/regen repeats the greedy reply", regen, regen_before)):
    if got == want:
        print(f"ok   {name}: {got[:60]!r}")
    else:
        print(f"FAIL {name}:\n     got  {got!r}\n     want {want!r}")
        fails += 1
if fresh == after_save:
    print(f"FAIL /reset should forget the conversation (the same reply with and without it: {fresh!r})")
    fails += 1
else:
    print(f"ok   /reset forgets the conversation ({fresh[:40]!r} vs {after_save[:40]!r})")
if not first:
    print("FAIL the first reply is empty")
    fails += 1
if os.waitstatus_to_exitcode(status) != 0:
    print(f"FAIL chat exited with {os.waitstatus_to_exitcode(status)}")
    fails += 1
sys.exit(1 if fails else 0)
