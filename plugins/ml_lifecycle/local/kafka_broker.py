"""Serve a Kafka broker on loopback with librdkafka's built-in mock cluster.

Run as ``python -m ml_lifecycle.local.kafka_broker --ready-file F [--topic pos_transactions ...]``.
The ready file contains ``pid``, ``port``, ``bootstrap_servers`` and the
partition count of each topic. Clients in other processes reach the broker
with ``bootstrap.servers`` set to that address and produce, consume in
groups, commit offsets, and read watermarks and committed offsets.

Facts about the mock cluster of librdkafka 2.16.0 (confluent-kafka 2.16.1),
measured on it or read in ``rd_kafka_mock_partition_init``:

- It lives as long as the client object that created it, so this process
  holds that client until SIGTERM. Data is kept in memory only.
- ``AdminClient.create_topics`` times out because the mock cluster has no
  controller. A produce request or a metadata request for a topic creates
  it with 4 partitions, which is how ``--topic`` is made to exist.
- Retention is by size: each partition keeps at most 5 MiB of message
  sets (and at most 100,000 of them), and older sets are deleted, which
  moves the log start offset up. A producer that sends all 541,909 events
  of the sales data in large zstd batches stays under that limit; with lz4
  it does not.
- ``AdminClient.list_offsets`` and ``list_consumer_group_offsets`` with
  explicit partitions work; ``describe_consumer_groups`` does not.
  ``alter_consumer_group_offsets`` reports success but changes nothing, and
  a commit from a consumer that is not a group member fails with
  UNKNOWN_MEMBER_ID, so offsets are reset by a member of the group.
- A group member that closed or died keeps the group from rebalancing until
  its session times out: with the default ``session.timeout.ms`` of 45 s
  the next consumer waited more than 40 s, with 3000 ms about 2 s. With
  1000 ms a consumer never joined. The first join of a group takes 3 s.
  Static membership (``group.instance.id``) never joined.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml_lifecycle.local.process import install_sigterm_handler, write_ready_file

log = logging.getLogger("ml_lifecycle.kafka_broker")

METADATA_TIMEOUT_S = 10.0
# How often the idle loop lets librdkafka serve callbacks of the holding client.
POLL_INTERVAL_S = 1.0


class BrokerStartError(RuntimeError):
    """The mock cluster did not report a broker or a topic in time."""


def start_mock_cluster() -> tuple[Any, str]:
    """Start a one-broker mock cluster and return the client that owns it and the broker address."""
    from confluent_kafka import Producer

    holder = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": ""})
    brokers = holder.list_topics(timeout=METADATA_TIMEOUT_S).brokers
    if not brokers:
        raise BrokerStartError(f"the mock cluster reported no broker within {METADATA_TIMEOUT_S:.0f} s")
    broker = next(iter(brokers.values()))
    return holder, f"{broker.host}:{broker.port}"


def ensure_topics(bootstrap_servers: str, topics: Sequence[str]) -> dict[str, int]:
    """Create each topic by requesting its metadata, and return its partition count."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    partitions: dict[str, int] = {}
    for topic in topics:
        metadata = admin.list_topics(topic=topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            error = metadata.error if metadata is not None else "no metadata"
            raise BrokerStartError(f"topic {topic!r} was not created on {bootstrap_servers}: {error}")
        partitions[topic] = len(metadata.partitions)
        log.info("Topic %s has %d partitions", topic, partitions[topic])
    return partitions


def serve(ready_file: Path, topics: Sequence[str]) -> None:
    """Run the mock cluster until SIGTERM."""
    holder, bootstrap_servers = start_mock_cluster()
    partitions = ensure_topics(bootstrap_servers, topics)
    port = int(bootstrap_servers.rsplit(":", 1)[1])
    write_ready_file(
        ready_file, {"port": port, "bootstrap_servers": bootstrap_servers, "partitions": partitions}
    )
    log.info("Kafka mock broker listening on %s, topics %s", bootstrap_servers, partitions)
    try:
        while True:
            holder.poll(0)
            time.sleep(POLL_INTERVAL_S)
    finally:
        log.info("Kafka mock broker on %s stopping; its data is discarded", bootstrap_servers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a Kafka mock broker on 127.0.0.1 until SIGTERM.")
    parser.add_argument(
        "--ready-file", type=Path, required=True, help="JSON file written once the broker serves"
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        help="topic to create at start; repeat for several topics",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_sigterm_handler()
    try:
        serve(args.ready_file, args.topic)
    except KeyboardInterrupt:
        log.info("Kafka mock broker stopped")


if __name__ == "__main__":
    main()
