"""Wait until local Kafka brokers answer a metadata request.

Used by infra/local/up and infra/local/broker; runs from the stack's venv
(confluent-kafka). Each --broker names a bootstrap address and the pid of the
process expected to serve it (0: not ours, do not watch). Exits 0 when every
broker has answered with at least one live broker in its metadata, 1 on
timeout, 2 as soon as a watched process has exited. Addresses that did not
answer are printed on stdout, one per line, so the caller can show the
matching log.
"""

import argparse
import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def process_alive(pid: int) -> bool:
    """True when pid is 0 (unwatched) or names a running, non-zombie process."""
    if pid == 0:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The state follows the parenthesised command name.
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--broker",
        nargs=2,
        action="append",
        required=True,
        metavar=("BOOTSTRAP", "PID"),
        help="bootstrap address and the pid serving it (0: do not watch)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds in all")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    pending = {}
    for bootstrap, pid in args.broker:
        client = AdminClient(
            {
                "bootstrap.servers": bootstrap,
                # A broker that is still starting refuses connections; that is
                # expected here, not worth librdkafka's log lines.
                "log_level": 0,
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 500,
            }
        )
        pending[bootstrap] = (client, int(pid))
    last_error = {}

    while pending:
        for bootstrap, (client, pid) in list(pending.items()):
            if not process_alive(pid):
                print(f"wait_kafka: process {pid} for {bootstrap} exited", file=sys.stderr)
                print("\n".join(pending))
                return 2
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                for name in pending:
                    print(
                        f"wait_kafka: {name} not answering after {args.timeout:.0f}s"
                        f" ({last_error.get(name, 'no answer')})",
                        file=sys.stderr,
                    )
                print("\n".join(pending))
                return 1
            try:
                metadata = client.list_topics(timeout=min(remaining, 2.0))
            except KafkaException as error:
                last_error[bootstrap] = str(error)
                continue
            if metadata.brokers:
                del pending[bootstrap]
            else:
                last_error[bootstrap] = "metadata lists no brokers yet"
        if pending:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
