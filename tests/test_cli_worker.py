"""``haive worker`` in the core: any GroupMemberSource, found through wrappers; clear errors.

The broker-backed runs (Redis Streams, Kafka, NATS JetStream, several processes, kill -9)
are in each plugin's tests; these use a file-backed member so they need no server.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from haive.dataflow.builtins.sources import IterableSource
from haive.dataflow.cli.worker import WorkerCommand, group_member, load_pipeline
from haive.dataflow.errors import ConfigError
from haive.dataflow.io.groups import RewindableGroup, layers
from haive.dataflow.io.sources import DataSource

# A pipeline file whose source is a group member that records what haive worker told it:
# its items are the group and consumer names, its rewind writes the position to a file.
MEMBER_PIPELINE = '''
import os
from pathlib import Path
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sources import DataSource
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

class Member(DataSource):
    group, consumer = "unset", "unset"
    def join(self, group=None, consumer=None):
        self.group = group or self.group
        self.consumer = consumer or self.consumer
    def membership(self):
        return {"group": self.group, "consumer": self.consumer, "input": "names"}
    async def rewind(self, position):
        Path(os.environ["REWOUND"]).write_text(f"{self.group} {position}")
    async def batches(self, chunk_size):
        yield [self.group, self.consumer]

class Wrapper(DataSource):
    def __init__(self, inner):
        self.inner = inner
    async def batches(self, chunk_size):
        async for batch in self.inner.batches(chunk_size):
            yield batch

pipeline = StreamingPipeline("names")
pipeline.set_source(Wrapper(Member()))
pipeline.set_sink(MemorySink())
'''


def haive_worker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", *args],
        capture_output=True, text=True, timeout=120, env=env,
    )


def summaries(stderr: str) -> list[dict[str, object]]:
    return [
        json.loads(line.removeprefix("haive worker: "))
        for line in stderr.splitlines()
        if line.startswith("haive worker: {")
    ]


def test_a_worker_joins_the_group_through_a_wrapper_and_prints_its_summary(tmp_path):
    file = tmp_path / "job.py"
    file.write_text(MEMBER_PIPELINE)
    done = haive_worker(str(file), "--group", "billing", "--consumer", "w1")
    assert done.returncode == 0, done.stderr
    [summary] = summaries(done.stderr)
    assert summary["group"] == "billing" and summary["consumer"] == "w1"
    assert summary["processed"] == 2 and summary["stopped_by_signal"] is False


def test_processes_start_n_members_with_numbered_names(tmp_path):
    file = tmp_path / "job.py"
    file.write_text(MEMBER_PIPELINE)
    done = haive_worker(str(file), "--group", "g", "-n", "2", "--consumer", "pair")
    assert done.returncode == 0, done.stderr
    assert sorted(str(s["consumer"]) for s in summaries(done.stderr)) == ["pair-1", "pair-2"]


def test_replay_from_rewinds_the_group_once_before_the_workers(tmp_path):
    file = tmp_path / "job.py"
    file.write_text(MEMBER_PIPELINE)
    rewound = tmp_path / "rewound"
    import os

    done = haive_worker(
        str(file), "--group", "g", "--replay-from", "0", env={**os.environ, "REWOUND": str(rewound)}
    )
    assert done.returncode == 0, done.stderr
    assert rewound.read_text() == "g 0"


def test_a_source_that_joins_no_group_is_refused_by_name(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline\n"
        "from haive.dataflow.builtins.sources import IterableSource\n"
        "pipeline = StreamingPipeline('p')\npipeline.set_source(IterableSource([1]))\n"
    )
    with pytest.raises(ConfigError, match="IterableSource, which does not join a consumer group"):
        group_member(load_pipeline(str(bad), None))
    done = haive_worker(str(bad), "--group", "g")
    assert done.returncode == 2
    assert "does not join a consumer group" in done.stderr


def test_replay_from_on_a_member_that_cannot_rewind_is_refused(tmp_path):
    file = tmp_path / "job.py"
    file.write_text(MEMBER_PIPELINE.replace("async def rewind", "async def _not_rewind"))
    done = haive_worker(str(file), "--group", "g", "--replay-from", "0")
    assert done.returncode == 2
    assert "cannot move its group back" in done.stderr


def test_processes_must_be_positive(tmp_path):
    done = haive_worker(str(tmp_path / "job.py"), "--group", "g", "-n", "0")
    assert done.returncode == 2 and "--processes must be >= 1, got 0" in done.stderr


def test_layers_look_through_wrappers_and_stops_on_a_cycle():
    class Wrapper(DataSource):
        def __init__(self, inner: DataSource) -> None:
            self.inner = inner

        async def batches(self, chunk_size):  # type: ignore[override]
            yield []

    plain = IterableSource([1])
    assert list(layers(Wrapper(Wrapper(plain))))[-1] is plain
    looped = Wrapper(plain)
    looped.inner = looped
    assert list(layers(looped)) == [looped]
    assert not isinstance(plain, RewindableGroup)
    assert WorkerCommand.PLUGIN_NAME == "worker"


# A member that reads until asked to stop (a StoppableSource); STUBBORN=1 ignores the request.
STOPPABLE_PIPELINE = '''
import os
from pathlib import Path
import trio
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.io.sources import DataSource
from haive.dataflow.pipelines.streaming_pipeline import StreamingPipeline

class Member(DataSource):
    group, consumer, stopping, handed_over = "unset", "unset", False, False
    def join(self, group=None, consumer=None):
        self.group = group or self.group
        self.consumer = consumer or self.consumer
    def membership(self):
        return {"group": self.group, "consumer": self.consumer, "handed_over": self.handed_over}
    def stop_reading(self):
        self.stopping = not os.environ.get("STUBBORN")
    async def batches(self, chunk_size):
        n = 0
        while not self.stopping:
            yield [n]
            n += 1
            if n == 3:
                Path(os.environ["READY"]).touch()
            await trio.sleep(0.01)
        self.handed_over = True

pipeline = StreamingPipeline("stoppable")
pipeline.set_source(Member())
pipeline.set_sink(MemorySink())
'''


@pytest.mark.parametrize("stubborn", [False, True])
def test_sigterm_lets_a_stoppable_source_hand_over_within_the_grace(tmp_path, stubborn):
    import os
    import signal
    import time

    file = tmp_path / "job.py"
    file.write_text(STOPPABLE_PIPELINE)
    ready = tmp_path / "ready"
    env = {**os.environ, "READY": str(ready), **({"STUBBORN": "1"} if stubborn else {})}
    worker = subprocess.Popen(
        [sys.executable, "-m", "haive.dataflow.cli", "worker", str(file), "--group", "g",
         "--grace", "0.5"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    [summary] = summaries(err)
    assert summary["stopped_by_signal"] is True
    if stubborn:  # cancelled after --grace: no report
        assert summary["handed_over"] is False and "processed" not in summary
    else:  # the run ended normally after the source's hand-over
        assert summary["handed_over"] is True and int(summary["processed"]) >= 3  # type: ignore[call-overload]
