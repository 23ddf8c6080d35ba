"""Many tunneled nodes in one process: `python -m tests.support.agents --count 50 ...`.

Each is a full node role (join with the token, heartbeats, access feed, SSH service,
reverse tunnel agent), as `limen start --roles node --token ... --proxy ...` runs it;
only the process is shared (--rate N starts N a second, as a fleet joins over time
rather than in one instant). The token must allow that many joins (`limen tokens add
--uses COUNT`): join tokens are single-use by default. Prints READY once every node has
started, runs until SIGTERM, then stops them all.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
from pathlib import Path

from limen.clock import RealClock
from limen.config import JoinOptions, NodeConfig
from limen.errors import LimenError
from limen.node.cluster.role import NodeRole
from limen.runtime import eventloop

log = logging.getLogger("agents")


async def start_with_retries(role: NodeRole, attempts: int) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await role.start()
            return
        except (LimenError, OSError) as exc:
            if attempt == attempts:
                raise
            log.warning("%s: start failed (%s); trying again", role.config.name, exc)
            await role.stop()
            await asyncio.sleep(random.uniform(1, 2 ** min(attempt, 5)))


async def main(args: argparse.Namespace) -> None:
    labels = dict(pair.split("=", 1) for pair in args.labels.split(",") if pair)
    roles = [
        NodeRole(
            NodeConfig(name=f"{args.prefix}{i:02d}", labels={**labels, "n": str(i)},
                       proxy_addr=args.proxy, join_token=args.token),
            Path(args.base) / f"{args.prefix}{i:02d}", RealClock(), None,
            JoinOptions(insecure=True),
        )
        for i in range(args.count)
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        started = []
        for i, role in enumerate(roles):
            started.append(asyncio.ensure_future(start_with_retries(role, args.attempts)))
            if args.rate and (i + 1) % args.rate == 0:  # pace the joins: --rate a second
                await asyncio.sleep(1)
        await asyncio.gather(*started)
        print("READY", flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(role.stop() for role in roles), return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--base", required=True)
    parser.add_argument("--prefix", default="agent")
    parser.add_argument("--labels", default="")
    parser.add_argument("--rate", type=int, default=0,
                        help="nodes started per second (0: all at once)")
    parser.add_argument("--attempts", type=int, default=1,
                        help="starts tried per node before giving up (default 1)")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncssh").setLevel(logging.ERROR)
    # The loop `limen start` runs a node on (uvloop unless LIMEN_EVENT_LOOP says otherwise).
    eventloop.run(main(parser.parse_args()))
