"""A consumer-group member in its own process, driven by signals, that logs what it sees.

The consumer-group end-to-end tests need members they can crash (SIGKILL),
freeze (SIGSTOP) and stop gracefully (SIGTERM), with three different client
libraries, and an exact record of what each member consumed and committed
that survives a crash.  Each worker appends one JSON object per event to its
``--out`` file and flushes it at once, so a killed worker's log still ends at
its last complete event.

Run ``python -m tests.support.group_worker --client confluent|kafka-python|aiokafka
--bootstrap HOST:PORT --group G --topic T --out events.jsonl``.

Events (every one has ``e`` and ``ts``, wall-clock seconds):
``start``; ``assign``/``revoke``/``lost`` with ``tps`` ([topic, partition]
pairs, incremental for cooperative protocols); ``rec`` with ``t``, ``p``,
``o``; ``commit`` with ``offs`` ([topic, partition, next offset] triples),
logged only after the broker acknowledged the commit; ``commit_failed`` with
``err``; ``error`` with ``err`` and ``fatal``; ``member`` with ``id`` (when
the client exposes it); ``closed``.

Signals: SIGTERM closes the consumer (committing what was processed, then
leaving the group as the client does on close); SIGUSR1 makes it stop polling
(its heartbeats go on, so only ``max.poll.interval.ms`` can catch it);
SIGUSR2 makes it poll again.

Commit policy: after every batch (or, with ``--commit-interval-ms``, after
the first batch once that long has passed since the last commit), commit
exactly the records processed since (synchronously); if that fails because a rebalance got in the way, keep them
pending for the next commit.  On a revoke, commit what is pending for the
revoked partitions and forget it; on a loss, just forget it.  With that
policy a run without failures consumes every record exactly once, and after
a crash only records after the last commit are read again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any, Callable


class Recorder:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def __call__(self, event: str, **fields: Any) -> None:
        self._file.write(json.dumps({"e": event, "ts": time.time(), **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class Control:
    """What the signals asked for; read by the poll loop."""

    def __init__(self) -> None:
        self.stop = False
        self.stalled = False

    def install(self, register: Callable[[int, Callable[[], None]], None]) -> None:
        register(signal.SIGTERM, self._stop)
        register(signal.SIGUSR1, self._stall)
        register(signal.SIGUSR2, self._resume)

    def _stop(self) -> None:
        self.stop = True

    def _stall(self) -> None:
        self.stalled = True

    def _resume(self) -> None:
        self.stalled = False


class Pending:
    """Offsets processed but not yet committed, per (topic, partition)."""

    def __init__(self, interval_ms: int = 0) -> None:
        self.next: dict[tuple[str, int], int] = {}
        self.owned: set[tuple[str, int]] = set()
        self.interval_s = interval_ms / 1000
        self.last_commit = time.monotonic()

    def due(self) -> dict[tuple[str, int], int]:
        """Everything pending, if the commit interval has passed (else nothing)."""
        if time.monotonic() - self.last_commit < self.interval_s:
            return {}
        self.last_commit = time.monotonic()
        return self.take()

    def add(self, topic: str, partition: int, offset: int) -> None:
        """A record was processed; it is ours to commit only if its partition still is ours."""
        if (topic, partition) in self.owned:
            self.next[(topic, partition)] = offset + 1

    def take(self, only: set[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
        keys = [k for k in self.next if only is None or k in only]
        return {k: self.next.pop(k) for k in keys}

    def assigned(self, tps: set[tuple[str, int]]) -> None:
        self.owned |= tps

    def release(self, tps: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Partitions revoked or lost: no longer ours; returns what was pending for them."""
        self.owned -= tps
        return self.take(tps)

    def put_back(self, taken: dict[tuple[str, int], int]) -> None:
        """A commit failed (a rebalance got in the way): retry with the next one, or on revoke.

        Only for partitions still owned: a revoke may have run while the commit
        was in flight (aiokafka runs it concurrently), and work on a partition
        that has gone is the new owner's to redo.
        """
        for k, o in taken.items():
            if k in self.owned:
                self.next[k] = max(o, self.next.get(k, o))


def _offs(taken: dict[tuple[str, int], int]) -> list[list]:
    return [[t, p, o] for (t, p), o in sorted(taken.items())]


# --- confluent-kafka (librdkafka) ---------------------------------------------------------------------------
def run_confluent(args: argparse.Namespace, rec: Recorder, control: Control) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    conf = {"bootstrap.servers": args.bootstrap, "group.id": args.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": max(100, args.session_timeout_ms // 6),
            "max.poll.interval.ms": args.max_poll_interval_ms, "client.id": args.client_id,
            "topic.metadata.refresh.interval.ms": 1000}
    if args.assignor != "default":
        conf["partition.assignment.strategy"] = args.assignor
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    fatal: list[str] = []

    def on_error(err: KafkaError) -> None:
        # librdkafka reports a fatal error as code _FATAL, with the cause only in the text.
        is_fatal = err.fatal() or err.code() == KafkaError._FATAL
        rec("error", err=err.name(), fatal=is_fatal, text=err.str())
        if is_fatal:
            fatal.append(err.name())

    conf["error_cb"] = on_error
    consumer = Consumer(conf)
    pending = Pending(args.commit_interval_ms)

    def commit(taken: dict[tuple[str, int], int]) -> None:
        if not taken:
            return
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in taken.items()], asynchronous=False)
        except KafkaException as exc:
            rec("commit_failed", err=exc.args[0].name(), offs=_offs(taken))
            pending.put_back(taken)
            return
        rec("commit", offs=_offs(taken))

    def on_assign(c, partitions) -> None:
        pending.assigned({(tp.topic, tp.partition) for tp in partitions})
        rec("assign", tps=[[tp.topic, tp.partition] for tp in partitions], member=c.memberid())

    def on_revoke(c, partitions) -> None:
        commit(pending.release({(tp.topic, tp.partition) for tp in partitions}))
        rec("revoke", tps=[[tp.topic, tp.partition] for tp in partitions])

    def on_lost(c, partitions) -> None:
        pending.release({(tp.topic, tp.partition) for tp in partitions})
        rec("lost", tps=[[tp.topic, tp.partition] for tp in partitions])

    consumer.subscribe(args.topic, on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    rec("start", pid=os.getpid(), client="confluent")
    while not control.stop and not fatal:
        if control.stalled:
            time.sleep(0.05)
            continue
        for msg in consumer.consume(num_messages=500, timeout=0.1):
            if msg.error():
                on_error(msg.error())
                continue
            rec("rec", t=msg.topic(), p=msg.partition(), o=msg.offset())
            pending.add(msg.topic(), msg.partition(), msg.offset())
        commit(pending.due())
    if not fatal:
        commit(pending.take())
    consumer.close()
    rec("closed")


# --- kafka-python ----------------------------------------------------------------------------------------------
def run_kafka_python(args: argparse.Namespace, rec: Recorder, control: Control) -> None:
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    assignors = {"range": [RangePartitionAssignor], "roundrobin": [RoundRobinPartitionAssignor]}
    extra: dict[str, Any] = {}
    if args.assignor != "default":
        extra["partition_assignment_strategy"] = assignors[args.assignor]
    if args.instance_id:
        extra["group_instance_id"] = args.instance_id
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=args.session_timeout_ms,
                             heartbeat_interval_ms=max(100, args.session_timeout_ms // 6),
                             max_poll_interval_ms=args.max_poll_interval_ms, client_id=args.client_id,
                             metadata_max_age_ms=1000, **extra)
    pending = Pending(args.commit_interval_ms)

    def commit(taken: dict[tuple[str, int], int]) -> None:
        from kafka.structs import TopicPartition

        if not taken:
            return
        try:
            consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in taken.items()})
        except KafkaError as exc:
            rec("commit_failed", err=type(exc).__name__, offs=_offs(taken))
            pending.put_back(taken)
            return
        rec("commit", offs=_offs(taken))

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            commit(pending.release({(tp.topic, tp.partition) for tp in revoked}))
            rec("revoke", tps=sorted([tp.topic, tp.partition] for tp in revoked))

        def on_partitions_assigned(self, assigned):
            pending.assigned({(tp.topic, tp.partition) for tp in assigned})
            rec("assign", tps=sorted([tp.topic, tp.partition] for tp in assigned))

        def on_partitions_lost(self, lost):
            pending.release({(tp.topic, tp.partition) for tp in lost})
            rec("lost", tps=sorted([tp.topic, tp.partition] for tp in lost))

    consumer.subscribe(args.topic, listener=Listener())
    rec("start", pid=os.getpid(), client="kafka-python")
    while not control.stop:
        if control.stalled:
            time.sleep(0.05)
            continue
        try:
            batches = consumer.poll(timeout_ms=100, max_records=500)
        except KafkaError as exc:
            rec("error", err=type(exc).__name__, fatal=False, text=str(exc))
            continue
        for tp, records in batches.items():
            for r in records:
                rec("rec", t=tp.topic, p=tp.partition, o=r.offset)
                pending.add(tp.topic, tp.partition, r.offset)
        commit(pending.due())
    commit(pending.take())
    consumer.close()
    rec("closed")


# --- aiokafka ------------------------------------------------------------------------------------------------------
async def run_aiokafka(args: argparse.Namespace, rec: Recorder, control: Control) -> None:
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.errors import KafkaError

    loop = asyncio.get_running_loop()
    control.install(lambda sig, fn: loop.add_signal_handler(sig, fn))
    assignors = {"range": (RangePartitionAssignor,), "roundrobin": (RoundRobinPartitionAssignor,)}
    extra: dict[str, Any] = {}
    if args.assignor != "default":
        extra["partition_assignment_strategy"] = assignors[args.assignor]
    if args.instance_id:
        extra["group_instance_id"] = args.instance_id
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=args.session_timeout_ms,
                                heartbeat_interval_ms=max(100, args.session_timeout_ms // 6),
                                max_poll_interval_ms=args.max_poll_interval_ms, client_id=args.client_id,
                                metadata_max_age_ms=1000, **extra)
    pending = Pending(args.commit_interval_ms)

    async def commit(taken: dict[tuple[str, int], int]) -> None:
        if not taken:
            return
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in taken.items()})
        except KafkaError as exc:
            rec("commit_failed", err=type(exc).__name__, offs=_offs(taken))
            pending.put_back(taken)
            return
        rec("commit", offs=_offs(taken))

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            await commit(pending.release({(tp.topic, tp.partition) for tp in revoked}))
            rec("revoke", tps=sorted([tp.topic, tp.partition] for tp in revoked))

        async def on_partitions_assigned(self, assigned):
            pending.assigned({(tp.topic, tp.partition) for tp in assigned})
            rec("assign", tps=sorted([tp.topic, tp.partition] for tp in assigned))

    consumer.subscribe(args.topic, listener=Listener())
    await consumer.start()
    rec("start", pid=os.getpid(), client="aiokafka")
    try:
        while not control.stop:
            if control.stalled:
                await asyncio.sleep(0.05)
                continue
            try:
                batches = await consumer.getmany(timeout_ms=100, max_records=500)
            except KafkaError as exc:
                rec("error", err=type(exc).__name__, fatal=False, text=str(exc))
                await asyncio.sleep(0.1)
                continue
            for tp, records in batches.items():
                for r in records:
                    rec("rec", t=tp.topic, p=tp.partition, o=r.offset)
                    pending.add(tp.topic, tp.partition, r.offset)
            await commit(pending.due())
        await commit(pending.take())
    finally:
        await consumer.stop()
    rec("closed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["confluent", "kafka-python", "aiokafka"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--client-id", default="group-worker")
    parser.add_argument("--instance-id")
    parser.add_argument("--assignor", default="roundrobin",
                        help="range, roundrobin, cooperative-sticky (confluent only) or default (the client's own)")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--max-poll-interval-ms", type=int, default=30000)
    parser.add_argument("--commit-interval-ms", type=int, default=0,
                        help="commit at most this often (0: after every batch), leaving work to redo after a crash")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rec = Recorder(args.out)
    control = Control()
    try:
        if args.client == "aiokafka":
            asyncio.run(run_aiokafka(args, rec, control))
        else:
            control.install(lambda sig, fn: signal.signal(sig, lambda *_: fn()))
            (run_confluent if args.client == "confluent" else run_kafka_python)(args, rec, control)
    except Exception as exc:  # noqa: BLE001 - the test reads the reason from the event log
        rec("error", err=type(exc).__name__, fatal=True, text=str(exc))
        return 1
    finally:
        rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
