"""The `sideeye` command line: snapshot, report, diff, export, doctor, prune-images.

    sideeye snapshot --pid PID [--pid PID ...] [--container NAME_OR_ID ...]
                     [--json FILE] [--text] [--html FILE] [--sqlite FILE]
                     [--capture 'pkg.Func:a,b.c' ...] [--capture 'type:pkg.T: a, b' ...]
                     [--capture 'context:pkg.KeyType' ...] [--link 'F:a == G:b' ...]
                     [--together]
    sideeye report SNAPSHOT.json [-o FILE]
    sideeye diff BEFORE.json AFTER.json [--html FILE] [--json FILE]
    sideeye export SNAPSHOT.json --sqlite FILE
    sideeye doctor
    sideeye agent [--socket PATH] [--group NAME] [--log FILE]
                  [--listen tcp://ADDR:PORT --tls-cert F --tls-key F --token-file F]

Every problem the user can act on is one line on stderr and exit code 2 (1 for a doctor
that found a failing requirement), never a traceback; so is a bug (an unexpected
exception, here or in the agent), with exit code 70 and its traceback in a file it names.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pytest_sideeye import bugs
from pytest_sideeye.errors import InternalError, SideeyeError

# Stages are imported by the commands that use them: `sideeye snapshot` through a warm
# agent is timed end to end (benchmarks/agent_bench.py), and jinja2, Docker and the
# engine's imports are most of a cold start.


def _snapshot_parser(sub) -> None:
    p = sub.add_parser("snapshot", help="snapshot every goroutine of Go processes")
    p.add_argument("--pid", type=int, action="append", default=[], help="target process")
    p.add_argument("--container", action="append", default=[],
                   help="every Go process in this Docker container")
    p.add_argument("--json", metavar="FILE", help="write the snapshot as JSON")
    p.add_argument("--text", action="store_true",
                   help="print goroutines like /debug/pprof/goroutine?debug=2")
    p.add_argument("--html", metavar="FILE", help="write the HTML report")
    p.add_argument("--sqlite", metavar="FILE", help="write the snapshot as SQLite tables")
    p.add_argument("--capture", action="append", default=[], metavar="FUNC:EXPR,...",
                   help="capture variables of a function's frames, e.g. 'main.settle:o,o.ID'; "
                        "or every value of a type: 'type:main.Order: ID, Customer' "
                        "('type:main.Order' for the whole value); or what every live "
                        "context holds under a key type, with its deadline and error: "
                        "'context:main.userKey'")
    p.add_argument("--link", action="append", default=[], metavar="'F:EXPR == G:EXPR'",
                   help="link the frames of F and G whose expressions hold equal values "
                        "(HTTP and TCP links need nothing), e.g. "
                        "'gateway.handle:req.ID == main.place:o.ID'")
    p.add_argument("--together", action="store_true",
                   help="stop every process before collecting any (one instant across them; "
                        "each pause then includes the collection of those before it): "
                        "SIDEEYE_TOGETHER=1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sideeye", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _snapshot_parser(sub)
    r = sub.add_parser("report", help="render a snapshot JSON file as an HTML report")
    r.add_argument("snapshot")
    r.add_argument("-o", "--output", help="the .html file (default: the snapshot's name with .html)")
    d = sub.add_parser("diff", help="what changed between two snapshots (JSON files or "
                                    "reports): goroutines that appeared, vanished or changed")
    d.add_argument("before")
    d.add_argument("after")
    d.add_argument("--html", metavar="FILE", help="also write the diff as an HTML page")
    d.add_argument("--json", metavar="FILE", help="also write the diff as JSON")
    e = sub.add_parser("export", help="a snapshot (JSON file or report) as SQLite tables")
    e.add_argument("snapshot")
    e.add_argument("--sqlite", metavar="FILE", required=True)
    a = sub.add_parser("agent", help="serve snapshot requests on a Unix socket (run as root, "
                                     "one per machine)")
    a.add_argument("--socket", metavar="PATH",
                   help="where to listen (default $SIDEEYE_AGENT_SOCKET or /run/sideeye/agent.sock)")
    a.add_argument("--group", default="sideeye",
                   help="the socket's group: its members may ask (default sideeye)")
    a.add_argument("--log", metavar="FILE", help="append the log here (default stderr)")
    a.add_argument("--listen", metavar="tcp://ADDR:PORT",
                   help="also serve remote callers over TLS (with --tls-cert, --tls-key, "
                        "--token-file)")
    a.add_argument("--tls-cert", metavar="FILE")
    a.add_argument("--tls-key", metavar="FILE")
    a.add_argument("--token-file", metavar="FILE",
                   help="the token remote callers must present (Authorization: Bearer)")
    a.add_argument("--tls-client-ca", metavar="FILE",
                   help="remote callers may instead present a client certificate this CA "
                        "signed")
    sub.add_parser("doctor", help="check every requirement of this machine "
                                  "(sideeye doctor [--json] [CHECK ...])")
    pr = sub.add_parser("prune-images", help="remove old images built for go_service "
                                             "(all but the newest of each sideeye/<name>)")
    pr.add_argument("--keep", type=int, default=1, metavar="N",
                    help="newest tags kept per service (default 1)")
    pr.add_argument("--dry-run", action="store_true", help="only say what would go")
    return parser


def cmd_snapshot(args) -> int:
    from pytest_sideeye import agent

    if not args.pid and not args.container:
        raise SideeyeError("nothing to snapshot: give --pid PID or --container NAME")
    if args.together:   # read by the engine, carried to the agent, as every setting
        os.environ["SIDEEYE_TOGETHER"] = "1"
    # Outputs are checked before any target is paused: a pause for nothing is a cost.
    for path in filter(None, (args.json, args.html, args.sqlite)):
        _check_writable(path)
    targets: list = list(args.pid)
    via_agent = args.container and agent.route().kind == "agent"
    for name in args.container:   # the agent finds a container's processes itself
        if via_agent:
            targets.append(agent.ContainerTarget(name))
        else:
            from pytest_sideeye.services import container_targets
            targets += container_targets(name)
    if args.json and not (args.text or args.html or args.sqlite) and \
            agent.route().kind == "agent":
        return _agent_json_only(targets, args)
    snap = agent.take_snapshot(targets, capture=args.capture or None,  # the agent, else here
                               links=args.link or None)
    if args.json:
        _write(args.json, snap.dumps())
    if args.html:
        from pytest_sideeye.report import write_report
        write_report(snap, args.html)
    if args.sqlite:
        from pytest_sideeye.report import write_sqlite
        write_sqlite(snap, args.sqlite)
    if args.text or not (args.json or args.html or args.sqlite):
        from pytest_sideeye.snapshot import render_text
        sys.stdout.write(render_text(snap))
    for p in snap.processes:
        if p.error:
            print(f"sideeye: pid {p.pid}: {p.error}", file=sys.stderr)
    return 0 if any(p.error is None for p in snap.processes) else 2


def _agent_json_only(targets: list, args) -> int:
    """`--json` alone through the agent: its document is written as it came, unparsed
    (the answer's summary header names each process's error); checking it into the model
    and writing it out again would double the command's time."""
    from pytest_sideeye import agent
    body, processes = agent.snapshot_bytes(targets, args.capture or None,
                                           links=args.link or None)
    _write_bytes(args.json, body)
    for p in processes:
        if p.get("error"):
            print(f"sideeye: pid {p.get('pid')}: {p['error']}", file=sys.stderr)
    return 0 if any(p.get("error") is None for p in processes) else 2


def _write_bytes(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise SideeyeError(f"cannot write {path}: {e.strerror}") from None


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK) or \
            (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise SideeyeError(f"cannot write {path}: "
                           f"{'no such folder' if not os.path.isdir(folder) else 'not writable'}")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise SideeyeError(f"cannot write {path}: {e.strerror}") from None


def cmd_report(args) -> int:
    """Write the HTML report of a snapshot (default: the snapshot's name with .html).
    Errors print one line, as `sideeye report: error: ...`, and return 2."""
    from pytest_sideeye.report import load_snapshot, write_report
    out = args.output or str(Path(args.snapshot).with_suffix(".html"))
    try:
        if Path(out).resolve() == Path(args.snapshot).resolve():
            raise SideeyeError(f"refusing to overwrite the input {args.snapshot}")
        written = write_report(load_snapshot(args.snapshot), out)
    except SideeyeError as e:
        print(f"sideeye report: error: {e}", file=sys.stderr)
        return e.exit_code
    print(written)
    return 0


def cmd_diff(args) -> int:
    """`sideeye diff A B`: the text diff on stdout (counts first), optionally HTML/JSON."""
    from pytest_sideeye.report import load_snapshot, write_diff_html
    from pytest_sideeye.snapshot import render_diff_text
    for path in filter(None, (args.html, args.json)):
        _check_writable(path)
    before, after = load_snapshot(args.before), load_snapshot(args.after)
    d = after.diff(before)
    sys.stdout.write(render_diff_text(d))
    if args.html:
        write_diff_html(d, args.before, args.after, args.html)
    if args.json:
        _write(args.json, json.dumps(d.to_json(), indent=1))
    return 0


def cmd_export(args) -> int:
    import sqlite3

    from pytest_sideeye.report import load_snapshot, write_sqlite
    _check_writable(args.sqlite)
    try:
        print(write_sqlite(load_snapshot(args.snapshot), args.sqlite))
    except sqlite3.Error as e:
        raise SideeyeError(f"cannot write {args.sqlite}: {e}") from None
    return 0


def cmd_agent(args) -> int:
    from pytest_sideeye import agent, settings
    path = Path(args.socket) if args.socket else settings.agent_socket()
    remote = {"listen": args.listen, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
              "token_file": args.token_file, "tls_client_ca": args.tls_client_ca}
    if not args.log:
        agent.serve(path, args.group, **remote)
        return 0
    try:
        log = open(args.log, "a", encoding="utf-8")
    except OSError as e:
        raise SideeyeError(f"cannot write {args.log}: {e.strerror}") from None
    with log:
        agent.serve(path, args.group, log, **remote)
    return 0


def cmd_doctor(args) -> int:
    from pytest_sideeye.cli.doctor import main_doctor
    return main_doctor(args.extra)


def cmd_prune_images(args) -> int:
    from pytest_sideeye.services import prune_images
    done = prune_images(args.keep, args.dry_run)
    gone = [(t, s) for t, what, s in done if what in ("removed", "would remove")]
    for tag, what, _size in done:
        print(f"{what:<28} {tag}")
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(gone)} of {len(done)} sideeye images {'to remove' if args.dry_run else 'removed'}"
          f" ({verb} up to {sum(s for _t, s in gone) / 1e6:.1f} MB: layers may be shared)")
    return 0


COMMANDS = {"snapshot": cmd_snapshot, "report": cmd_report, "diff": cmd_diff,
            "export": cmd_export, "doctor": cmd_doctor, "agent": cmd_agent,
            "prune-images": cmd_prune_images}


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "doctor":   # doctor's own options are parsed by doctor.py
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return COMMANDS[args.command](args)
    except SideeyeError as e:
        print(f"sideeye: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("sideeye: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except Exception as e:  # noqa: BLE001 - a bug: one line and where its traceback is
        print(f"sideeye: {bugs.report_line(e)}", file=sys.stderr)
        return InternalError.exit_code


def _reader_gone() -> int:
    """stdout's reader left (`sideeye snapshot --text | head`): stop quietly, as a command
    that SIGPIPE ends would (exit status 128 + 13), with no traceback; what is left to
    flush goes nowhere, so that the interpreter's exit does not complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    sys.exit(main())
