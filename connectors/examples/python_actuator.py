#!/usr/bin/python3
"""A salve actuator in Python, with kafka-python (Debian: apt-get install python3-kafka).

It keeps the contract in docs/actuators.md:
  - consume the command topic in the actuator's own consumer group, committing by hand;
  - dedup by command id, with a record that survives a restart: a compacted topic keyed by
    the id, holding the final ack, read to its end at start (the same format the Rust SDK uses);
  - ack `rejected` a command whose expires_at has passed, and do not act on it;
  - ack `rejected` a command that lacks a field it needs, and carry on;
  - ack `received`, act, then ack `succeeded` / `failed` / `rejected`;
  - commit offsets only after the acks are on the broker (producer.flush(), then commit).

It handles one command at a time, so commands run in the order they arrive.
Replace act() with the real action.

    /usr/bin/python3 python_actuator.py 127.0.0.1:9092 --commands salve.commands --acks salve.acks
"""
import argparse
import json
import signal
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic


def now_ms():
    return int(time.time() * 1000)


def act(command):
    """Carries out the command. Returns (status, detail). Replace this with the real action."""
    if command["action"] != "restart":
        return "rejected", "this actuator does not know action %r" % command["action"]
    print("acting: restart %s (%s)" % (command["entity"], command["id"]), flush=True)
    return "succeeded", "restarted " + command["entity"]


# The fields a command must carry to be acted on, and their JSON types.
REQUIRED = {"id": str, "entity": str, "action": str, "expires_at": int}


def unreadable(command):
    """Why a command cannot be acted on, or None. Like the Rust runner, the caller rejects it."""
    for field, kind in REQUIRED.items():
        value = command.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return "field %r is missing or not a %s" % (field, kind.__name__)
    return None


def ensure_compacted(bootstrap, topic):
    """Creates the dedup topic, compacted, unless it exists."""
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    exists = topic in probe.topics()
    probe.close()
    if not exists:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                      topic_configs={"cleanup.policy": "compact"})])
        admin.close()


def restore(bootstrap, topic):
    """Reads the dedup topic to its end: {command id: the final ack sent for it}."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    deadline = time.time() + 30
    partitions = None
    while not partitions:
        partitions = consumer.partitions_for_topic(topic)
        if time.time() > deadline:
            sys.exit("dedup topic %s has no partitions" % topic)
        if not partitions:
            time.sleep(0.2)
    assigned = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    end = consumer.end_offsets(assigned)
    done = {}
    while any(consumer.position(tp) < end[tp] for tp in assigned):
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                command_id = record.key.decode()
                if record.value is None:  # a tombstone: forgotten
                    done.pop(command_id, None)
                else:
                    done[command_id] = json.loads(record.value)["ack"]
    consumer.close()
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("--commands", default="salve.commands")
    parser.add_argument("--acks", default="salve.acks")
    parser.add_argument("--name", default="python")
    parser.add_argument("--dedup-topic", default=None)
    args = parser.parse_args()
    dedup_topic = args.dedup_topic or "salve.actuator.%s.done" % args.name

    ensure_compacted(args.bootstrap, dedup_topic)
    done = restore(args.bootstrap, dedup_topic)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    consumer = KafkaConsumer(args.commands, bootstrap_servers=args.bootstrap,
                             group_id="salve.actuator." + args.name,
                             enable_auto_commit=False, auto_offset_reset="earliest")

    def send_ack(key, ack):
        producer.send(args.acks, key=key.encode(), value=json.dumps(ack).encode())

    def new_ack(command_id, status, detail=None):
        ack = {"v": 1, "command_id": command_id, "status": status, "ts": now_ms(),
               "actuator": args.name}
        if detail:
            ack["detail"] = detail
        return ack

    def handle(command):
        command_id = command.get("id") if isinstance(command, dict) else None
        if not command_id or not isinstance(command_id, str):
            print("skipping a message without an id to reject", file=sys.stderr, flush=True)
            return
        entity = command.get("entity")
        key = entity if isinstance(entity, str) and entity else command_id
        if command_id in done:  # finished before: answer as then, do not act again
            send_ack(key, done[command_id])
            return
        if command.get("v") != 1:
            send_ack(key, new_ack(command_id, "rejected", "unsupported version %r" % command.get("v")))
            return
        reason = unreadable(command)
        if reason:  # a malformed command: reject it and move on, or it stops us on every restart
            send_ack(key, new_ack(command_id, "rejected", "invalid command: " + reason))
            return
        if command["expires_at"] < now_ms():
            send_ack(key, new_ack(command_id, "rejected", "expired at %d" % command["expires_at"]))
            return
        send_ack(key, new_ack(command_id, "received"))
        try:
            status, detail = act(command)
        except Exception as error:  # the action broke: report it, keep serving
            status, detail = "failed", "%s: %s" % (type(error).__name__, error)
        final = new_ack(command_id, status, detail)
        record = {"v": 1, "expires_at": command["expires_at"], "ack": final}
        producer.send(dedup_topic, key=command_id.encode(), value=json.dumps(record).encode())
        send_ack(key, final)
        done[command_id] = final

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    print("ready: %s -> %s (dedup %s, %d remembered)"
          % (args.commands, args.acks, dedup_topic, len(done)), flush=True)
    while not stopping:
        batch = consumer.poll(timeout_ms=500)
        for records in batch.values():
            for record in records:
                try:
                    command = json.loads(record.value)
                except (TypeError, ValueError) as error:  # not JSON, or no payload
                    print("skipping a message that is not JSON: %s" % error, file=sys.stderr,
                          flush=True)
                    continue
                handle(command)
        if batch:
            producer.flush()  # the acks and dedup records are on the broker...
            consumer.commit()  # ...before the offsets that caused them are committed
    producer.flush()
    consumer.close(autocommit=False)


if __name__ == "__main__":
    main()
