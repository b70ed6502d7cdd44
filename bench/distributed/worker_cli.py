"""``benchbox locust-worker --master HOST:PORT``: a Locust worker for ``sweep --engine locust``.

Kept apart from ``bench.distributed.worker`` so that ``--help`` does not import locust (which
monkeypatches the standard library with gevent on import).
"""

from __future__ import annotations

import sys
from typing import Optional

import click


@click.command("locust-worker")
@click.option("--master", required=True, metavar="HOST:PORT",
              help="the Locust master of a `benchbox sweep --engine locust` run")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="exit when this process is gone (set by the sweep for its local workers)")
@click.option("--loglevel", default="INFO", show_default=True, help="Locust's log level")
def locust_worker_command(master: str, parent_pid: Optional[int], loglevel: str) -> None:
    """Send a sweep's requests for a Locust master (on this or another host)."""
    from bench.distributed.protocol import parse_master

    try:
        parse_master(master)
    except ValueError as e:
        click.echo(f"benchbox: error: --master: {e}", err=True)
        sys.exit(2)
    from bench.distributed.worker import run_worker  # imports locust: gevent from here on

    sys.exit(run_worker(master, parent_pid, loglevel))
