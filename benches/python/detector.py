#!/usr/bin/python3
"""What a team writes without salve: a Kafka consumer with two hand-coded rules.

- crash loop: 3 `process_exit` events of one entity within 60 s -> a `restart` command,
  then quiet for that entity for 30 s (salve keeps the incident open until the ack deadline);
- latency: the p99 of an entity's `latency_ms` over the last 10 s above 250, held for 30 s
  -> a `scale_out` command, once per breach.

It reads salve's telemetry format and writes commands keyed by entity to the commands topic,
so the `latency` benchmark measures it exactly as it measures salve. It assigns itself every
partition of the telemetry topics from the beginning (no consumer group), prints `ready`, and
runs until its standard input closes.

Uses kafka-python (Debian's python3-kafka). Settings are the latency-sensitive ones:
`fetch_max_wait_ms=1` (librdkafka's mock cluster holds an empty fetch for the whole wait) and
`linger_ms=0`.
"""

import argparse
import collections
import json
import math
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

CRASH_EXITS = 3
CRASH_WINDOW_MS = 60_000
CRASH_QUIET_MS = 30_000
P99_WINDOW_MS = 10_000
P99_THRESHOLD = 250.0
P99_HOLD_MS = 30_000


def p99(values):
    """Nearest-rank 99th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class Rules:
    """Per-entity state and the two rules."""

    def __init__(self):
        self.exits = collections.defaultdict(collections.deque)
        self.quiet_until = {}
        self.latencies = collections.defaultdict(collections.deque)
        self.breach_since = {}
        self.breach_fired = set()

    def on_event(self, event):
        """Returns the commands that the event causes, as (entity, action, reason)."""
        name = event.get("name")
        entity = event["entity"]
        ts = event.get("ts") or int(time.time() * 1000)
        if name == "process_exit":
            exits = self.exits[entity]
            exits.append(ts)
            while exits and exits[0] <= ts - CRASH_WINDOW_MS:
                exits.popleft()
            if len(exits) >= CRASH_EXITS and self.quiet_until.get(entity, 0) <= ts:
                self.quiet_until[entity] = ts + CRASH_QUIET_MS
                return [(entity, "restart", f"{len(exits)} exits within 60s")]
        elif name == "latency_ms" and "value" in event:
            window = self.latencies[entity]
            window.append((ts, float(event["value"])))
            while window and window[0][0] <= ts - P99_WINDOW_MS:
                window.popleft()
            value = p99([v for _, v in window])
            if value > P99_THRESHOLD:
                since = self.breach_since.setdefault(entity, ts)
                if ts - since >= P99_HOLD_MS and entity not in self.breach_fired:
                    self.breach_fired.add(entity)
                    return [(entity, "scale_out", f"p99 latency_ms {value} > 250 for 30s")]
            else:
                self.breach_since.pop(entity, None)
                self.breach_fired.discard(entity)
        return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--telemetry", required=True, help="comma-separated topics")
    parser.add_argument("--commands", required=True)
    args = parser.parse_args()

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=1,
        max_poll_records=5000,
    )
    partitions = []
    for topic in args.telemetry.split(","):
        for _ in range(100):
            found = consumer.partitions_for_topic(topic)
            if found:
                break
            time.sleep(0.1)
        else:
            sys.exit(f"topic {topic} not found")
        partitions += [TopicPartition(topic, p) for p in sorted(found)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=0)

    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("ready", flush=True)

    rules = Rules()
    events = commands = errors = 0
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=10)
        for records in batches.values():
            for record in records:
                events += 1
                try:
                    event = json.loads(record.value)
                    fired = rules.on_event(event)
                except (ValueError, KeyError, TypeError):
                    errors += 1
                    continue
                for entity, action, reason in fired:
                    command = {
                        "v": 1,
                        "entity": entity,
                        "action": action,
                        "reason": reason,
                        "issued_at": int(time.time() * 1000),
                    }
                    producer.send(
                        args.commands,
                        key=entity.encode(),
                        value=json.dumps(command).encode(),
                    )
                    commands += 1
    producer.flush(timeout=10)
    print(f"{events} events, {commands} commands, {errors} unreadable", flush=True)


if __name__ == "__main__":
    main()
