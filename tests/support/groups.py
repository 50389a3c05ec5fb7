"""Consumer-group test helpers: topics, producing, member processes and reading what they did.

Members run as `tests.support.group_worker` subprocesses so a test can
crash, freeze or stop each one the way a real deployment loses consumers.
The analysis helpers turn the members' event logs into facts a test asserts
on: who consumed which offset when, what each committed, and what each
member currently owns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

TP = tuple[str, int]
PARTITIONS = 6


def create_topic(bootstrap: str, partitions: int, name: str | None = None) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = name or f"grp-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=30).values():
        future.result(timeout=30)
    return name


def produce(bootstrap: str, topic: str, partitions: int, per_partition: int, start: int = 0) -> None:
    """``per_partition`` records into each partition, valued ``<partition>:<seq>``, acknowledged."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    failures: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            failures.append(str(err))

    for seq in range(start, start + per_partition):
        for p in range(partitions):
            producer.produce(topic, value=f"{p}:{seq}".encode(), partition=p, on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0 and not failures, f"produce failed: remaining={remaining} errors={failures[:3]}"


class Worker:
    """One group member process (see `tests.support.group_worker`)."""

    def __init__(self, client: str, bootstrap: str, group: str, topic: str, out_dir: Path, *,
                 instance_id: str | None = None, assignor: str = "roundrobin", session_timeout_ms: int = 6000,
                 max_poll_interval_ms: int = 30000, commit_interval_ms: int = 0, name: str | None = None) -> None:
        self.client = client
        self.name = name or f"{client}-{uuid.uuid4().hex[:6]}"
        self.out = out_dir / f"{self.name}.jsonl"
        self.args = [sys.executable, "-m", "tests.support.group_worker", "--client", client, "--bootstrap", bootstrap,
                     "--group", group, "--topic", topic, "--out", str(self.out), "--client-id", self.name,
                     "--assignor", assignor, "--session-timeout-ms", str(session_timeout_ms),
                     "--max-poll-interval-ms", str(max_poll_interval_ms),
                     "--commit-interval-ms", str(commit_interval_ms)]
        if instance_id:
            self.args += ["--instance-id", instance_id]
        self.proc: subprocess.Popen | None = None
        self._stderr = out_dir / f"{self.name}.stderr"

    def start(self) -> "Worker":
        with open(self._stderr, "ab") as err:
            self.proc = subprocess.Popen(self.args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def close(self, timeout: float = 30) -> int:
        """Graceful stop: SIGTERM makes the worker commit, close its consumer and exit."""
        if not self.alive:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def stall(self) -> None:
        self.signal(signal.SIGUSR1)

    def events(self) -> list[dict]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # a line cut short by SIGKILL ends the log
        return out

    def stderr(self) -> str:
        return self._stderr.read_text(errors="replace") if self._stderr.exists() else ""

    def owned(self) -> set[TP]:
        return owned(self.events())

    def records(self) -> list[tuple[str, int, int, float]]:
        return [(e["t"], e["p"], e["o"], e["ts"]) for e in self.events() if e["e"] == "rec"]

    def describe(self) -> str:
        evs = [e for e in self.events() if e["e"] not in ("rec", "commit")]
        return f"{self.name} alive={self.alive} events={evs[-12:]} stderr={self.stderr()[-1500:]}"


def owned(events: Iterable[dict]) -> set[TP]:
    """Partitions a member owns after replaying its assign/revoke/lost events."""
    mine: set[TP] = set()
    for e in events:
        tps = {(t, p) for t, p in e.get("tps", [])}
        if e["e"] == "assign":
            mine |= tps
        elif e["e"] in ("revoke", "lost"):
            mine -= tps
    return mine


def last_commits(events: Iterable[dict]) -> dict[TP, int]:
    """The last acknowledged commit per partition (the next offset to read)."""
    out: dict[TP, int] = {}
    for e in events:
        if e["e"] == "commit":
            for t, p, o in e["offs"]:
                out[(t, p)] = o
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] = str,
               interval: float = 0.1) -> float:
    """Polls until ``predicate`` holds; returns the seconds it took, fails with ``detail()`` on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail()}")
        time.sleep(interval)
    return time.monotonic() - start


@dataclass
class Consumption:
    """Every record read by a set of members, by partition."""

    reads: dict[TP, list[tuple[int, str, float]]]  # (offset, member, ts) in read order per member

    @classmethod
    def of(cls, workers: Iterable[Worker]) -> "Consumption":
        reads: dict[TP, list[tuple[int, str, float]]] = defaultdict(list)
        for w in workers:
            for t, p, o, ts in w.records():
                reads[(t, p)].append((o, w.name, ts))
        return cls(dict(reads))

    def offsets(self, tp: TP) -> list[int]:
        return [o for o, _, _ in self.reads.get(tp, [])]

    def covers(self, topic: str, partitions: int, per_partition: int) -> bool:
        return all(set(range(per_partition)) <= set(self.offsets((topic, p))) for p in range(partitions))

    def duplicates(self) -> dict[TP, list[int]]:
        out = {}
        for tp, rows in self.reads.items():
            seen: set[int] = set()
            dups = []
            for o, _, _ in rows:
                if o in seen:
                    dups.append(o)
                seen.add(o)
            if dups:
                out[tp] = sorted(dups)
        return out

    def rereads_below_commit(self, workers: Iterable[Worker]) -> list[str]:
        """Re-reads of a record some member's acknowledged commit had already moved past.

        A consumer starts a partition at the committed offset, so a record read
        a second time must lie at or after every commit acknowledged before
        that read.  (A commit is logged after its acknowledgement, so the
        logged time only errs late, which makes this check weaker, never wrong.)

        Zombie reads are left out: what a member read after its last good
        commit of a partition it then *lost* (it had been dropped from the
        group without knowing, e.g. across a coordinator restart, and kept
        fetching from its own position).  Kafka fences such a member's commits,
        not its fetches; the group's consumption is what its live owners read.
        """
        workers = list(workers)
        commits: dict[TP, list[tuple[float, int]]] = defaultdict(list)
        for w in workers:
            for e in w.events():
                if e["e"] == "commit":
                    for t, p, o in e["offs"]:
                        commits[(t, p)].append((e["ts"], o))
        zombie = {(w.name, tp, ts) for w in workers for tp, ts in zombie_reads(w.events())}
        problems = []
        for tp, rows in self.reads.items():
            seen: set[int] = set()
            for offset, member, ts in sorted(rows, key=lambda r: r[2]):
                if (member, tp, ts) in zombie:
                    continue
                if offset in seen:
                    before = max((o for c_ts, o in commits[tp] if c_ts < ts), default=0)
                    if offset < before:
                        problems.append(f"{tp} offset {offset} re-read by {member} after a commit of {before}")
                seen.add(offset)
        return problems

    def total(self) -> int:
        return sum(len(rows) for rows in self.reads.values())


def zombie_reads(events: Iterable[dict]) -> set[tuple[TP, float]]:
    """(partition, read time) of reads after the member's last good commit of a partition it then lost."""
    out: set[tuple[TP, float]] = set()
    since_commit: dict[TP, list[float]] = defaultdict(list)  # reads not yet covered by a good commit
    for e in events:
        if e["e"] == "rec":
            since_commit[(e["t"], e["p"])].append(e["ts"])
        elif e["e"] == "commit":
            for t, p, _ in e["offs"]:
                since_commit[(t, p)].clear()
        elif e["e"] == "lost":
            for t, p in e["tps"]:
                out |= {((t, p), ts) for ts in since_commit.pop((t, p), [])}
        elif e["e"] in ("revoke", "assign"):
            for t, p in e["tps"]:
                since_commit.pop((t, p), None)
    return out


def describe_all(workers: Iterable[Worker]) -> Callable[[], str]:
    return lambda: "\n".join(w.describe() for w in workers)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Members a test starts (see `start`); every one is stopped, or killed, at teardown."""
    started: list[Worker] = []
    yield started
    stop_all(started)
    for w in started:
        w.kill()


def stop_all(workers: Iterable[Worker]) -> None:
    for w in workers:
        if w.alive:
            try:
                w.close(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()


class Feeder:
    """Produces to every partition in a background thread until stopped; remembers acknowledged offsets."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, per_second: int = 200) -> None:
        import threading

        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.interval = partitions / per_second
        self.acked: dict[int, set[int]] = defaultdict(set)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def __enter__(self) -> "Feeder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(60)
        assert not self.failures, f"produce failed: {self.failures[:3]}"

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def _run(self) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5})

        def delivered(err, msg) -> None:
            if err is not None:
                self.failures.append(str(err))
            else:
                self.acked[msg.partition()].add(msg.offset())

        seq = 0
        while not self._stop.is_set():
            for p in range(self.partitions):
                producer.produce(self.topic, value=f"{p}:{seq}".encode(), partition=p, on_delivery=delivered)
            seq += 1
            producer.poll(self.interval)
        producer.flush(30)

    def missing(self, consumption: "Consumption") -> dict[int, list[int]]:
        """Acknowledged offsets nobody consumed, per partition."""
        out = {}
        for p, offsets in self.acked.items():
            gone = sorted(offsets - set(consumption.offsets((self.topic, p))))
            if gone:
                out[p] = gone[:10]
        return out


# --- scenarios shared by the embedded and the S3 + DynamoDB runs ----------------------------------------------------
def start(workers: list[Worker], *args, **kwargs) -> Worker:
    """Start a member and register it with the test's list, which stops them all at teardown."""
    w = Worker(*args, **kwargs).start()
    workers.append(w)
    return w


def split_evenly(members: list[Worker], topic: str, partitions: int = PARTITIONS) -> bool:
    """Every member owns something and together they own each partition exactly once."""
    owned = [w.owned() for w in members]
    every = [tp for o in owned for tp in o]
    return all(owned) and sorted(every) == [(topic, p) for p in range(partitions)]


def committed(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps}


def assignor_in_use(bootstrap: str, group: str) -> str:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group], request_timeout=20)[group].result(timeout=20)
    return desc.partition_assignor


def three_clients_read_every_record_once(bootstrap: str, out_dir: Path, workers: list[Worker]) -> None:
    """confluent-kafka, kafka-python and aiokafka in one group read a 6-partition topic, each record once.

    Each client keeps its own default assignor list; the coordinator must pick
    the one protocol all three share (aiokafka offers only roundrobin).
    Records are produced before and after the three have settled.
    """
    topic = create_topic(bootstrap, PARTITIONS)
    group = f"g-{topic}"
    produce(bootstrap, topic, PARTITIONS, 50)
    members = [start(workers, client, bootstrap, group, topic, out_dir, assignor="default")
               for client in ("confluent", "kafka-python", "aiokafka")]
    wait_until(lambda: split_evenly(members, topic), 60, "three members sharing six partitions",
               describe_all(members))
    assert assignor_in_use(bootstrap, group) == "roundrobin"
    produce(bootstrap, topic, PARTITIONS, 50, start=50)
    wait_until(lambda: Consumption.of(members).covers(topic, PARTITIONS, 100), 60, "every record consumed",
               describe_all(members))
    for w in members:
        assert w.close() == 0, w.describe()
    seen = Consumption.of(members)
    assert seen.duplicates() == {}
    assert seen.total() == PARTITIONS * 100
    assert committed(bootstrap, group, topic) == {p: 100 for p in range(PARTITIONS)}
