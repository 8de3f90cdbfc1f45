"""``metajudge view``: the run explorer, as a read-only local server or a static bundle.

    metajudge view runs/tiny                          # http://127.0.0.1:8765/
    metajudge view runs/tiny --port 0 --open          # any free port, opened in a browser
    metajudge view runs/tiny --bundle share/tiny      # a static bundle; serve it on this machine:
    python -m http.server --bind 127.0.0.1 -d share/tiny
    metajudge view runs/tiny --host 0.0.0.0 --allow-host my-box.lan   # reachable as my-box.lan:8765
    metajudge view runs/tiny --harness results/harness
    metajudge view --harness results/harness          # the harness folders alone
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import webbrowser
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    view = sub.add_parser(
        "view", help="explore a run in the browser (local server or static bundle)",
        description="Follow each prompt through the loop: responses, judgments, meta-judge "
        "battles, pairs and DPO rows, per iteration, with the run's overview and the harness "
        "results. Builds an index once (RUN/.explorer.sqlite) and extends it as the run grows; "
        "writes nothing else into the run.")
    view.add_argument("run_dir", nargs="?", help="the run directory")
    view.add_argument("--harness", help="folder of `metajudge eval` outputs "
                      "({alpaca_eval,arena_hard,mt_bench}/<model>/)")
    view.add_argument("--host", default="127.0.0.1",
                      help="address to bind (default 127.0.0.1: this machine only; ::1 for "
                      "IPv6; 0.0.0.0 for every interface)")
    view.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                      help="also answer requests that name the server NAME (repeatable); IP "
                      "addresses and localhost, on any port, are always answered, other names "
                      "are refused against DNS rebinding")
    view.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    view.add_argument("--open", action="store_true", help="open the page in a browser")
    view.add_argument("--bundle", metavar="DIR", help="write a static bundle into DIR instead "
                      "of serving")
    view.add_argument("--limit", type=int, help="with --bundle: the first N prompts of each "
                      "iteration only")
    view.add_argument("--index", help="index file (default RUN/.explorer.sqlite; use another "
                      "place for a read-only run)")
    view.add_argument("--refresh", type=float, default=10.0,
                      help="seconds between index extensions while serving (0: never)")


def run(args: argparse.Namespace) -> None:
    from metajudge.viewer.bundle import write_bundle
    from metajudge.viewer.server import Explorer, ExplorerServer, is_loopback

    if args.run_dir is None and args.harness is None:
        raise ValueError("name a run directory, --harness DIR, or both")
    harness = Path(args.harness) if args.harness else None
    if harness is not None and not harness.is_dir():
        raise FileNotFoundError(f"{harness}: no such harness folder")
    explorer = Explorer(Path(args.run_dir) if args.run_dir else None, harness,
                        Path(args.index) if args.index else None)
    explorer.update()
    if args.bundle:
        try:
            count = write_bundle(explorer, Path(args.bundle), limit=args.limit)
        finally:
            explorer.close()
        print(f"{count} files written to {args.bundle}; serve them on this machine with: "
              f"python -m http.server --bind 127.0.0.1 -d {args.bundle}")
        return
    server = ExplorerServer(explorer, args.host, args.port, args.refresh, args.allow_host)
    address = str(server.httpd.server_address[0])
    if not is_loopback(address):
        log.warning("serving on %s port %d: anyone who can reach this machine on that port "
                    "can read the run (requests must name it by an IP address, localhost%s)",
                    address, server.httpd.server_address[1],
                    "".join(f" or {n}" for n in args.allow_host))
    print(f"explorer: {server.url}", flush=True)
    if args.open:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("explorer stopped", file=sys.stderr)
