"""`mctl exec REPLICA [-i] [-t] -- CMD...`: run a command in a running replica.

The call goes to the scheduler, which relays it to the replica's node, so it
works from wherever the CLI runs. `-i` sends our stdin; `-t` asks for a
terminal: ours is put in raw mode (keys, ^C and ^D reach the command) and
its size follows our window. The exit status is the command's.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator

import grpc

from mctl.v1 import control_pb2


def terminal_size() -> control_pb2.TerminalSize:
    size = shutil.get_terminal_size()
    return control_pb2.TerminalSize(rows=size.lines, cols=size.columns)


def cmd_exec(args: argparse.Namespace) -> int:
    from .client import UsageError, check_name, rpc_error, stub
    check_name("replica name", args.replica)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("say what to run: mctl exec REPLICA -- COMMAND [ARGS...]")
    use_tty = args.tty and sys.stdin.isatty()
    if args.tty and not use_tty:
        print("mctl: stdin is not a terminal; running without one", file=sys.stderr)
    start = control_pb2.ExecStart(namespace=args.namespace, replica=args.replica,
                                  command=command, tty=use_tty, stdin=args.stdin)
    if use_tty:
        start.size.CopyFrom(terminal_size())
    inputs: queue.Queue[control_pb2.ExecInput | None] = queue.Queue()

    def requests() -> Iterator[control_pb2.ExecInput]:
        yield control_pb2.ExecInput(start=start)
        while (item := inputs.get()) is not None:
            yield item

    def pump_stdin() -> None:
        while True:
            try:
                data = os.read(0, 32 * 1024)
            except OSError:
                data = b""
            if not data:
                inputs.put(control_pb2.ExecInput(stdin_closed=True))
                return
            inputs.put(control_pb2.ExecInput(stdin=data))

    saved = None
    if use_tty:
        saved = termios.tcgetattr(0)
        signal.signal(signal.SIGWINCH,
                      lambda *_: inputs.put(control_pb2.ExecInput(resize=terminal_size())))
    code = 1
    s = stub(args)
    try:
        if use_tty:
            tty.setraw(0)
        if args.stdin:
            threading.Thread(target=pump_stdin, name="stdin", daemon=True).start()
        out, err = sys.stdout.buffer, sys.stderr.buffer
        for chunk in s.Exec(requests(), timeout=None):
            if chunk.stdout:
                out.write(chunk.stdout)
                out.flush()
            if chunk.stderr:
                err.write(chunk.stderr)
                err.flush()
            if chunk.exited:
                code = chunk.exit_code
    except grpc.RpcError as e:
        raise rpc_error(args, e) from None
    finally:
        inputs.put(None)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return code


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("exec", help="run a command inside a running replica")
    e.add_argument("replica")
    e.add_argument("-i", "--stdin", action="store_true", help="send stdin to the command")
    e.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    e.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    e.set_defaults(fn=cmd_exec)
