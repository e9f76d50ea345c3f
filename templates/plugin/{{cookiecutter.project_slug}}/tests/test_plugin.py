from haive.dataflow import StreamingPipeline, get_registry
from haive.dataflow.builtins.sinks import MemorySink

from {{ cookiecutter.package_name }} import CountingSource


def test_registered() -> None:
    assert get_registry().source("{{ cookiecutter.capability_name }}") is CountingSource


def test_metadata_declares_what_the_hooks_register() -> None:
    assert get_registry().manifest_problems("{{ cookiecutter.project_slug }}") == []


async def test_runs_in_a_pipeline() -> None:
    pipeline = StreamingPipeline("test")
    pipeline.set_source(CountingSource(5))
    pipeline.add_processor(lambda n: n * 10)
    sink = MemorySink()
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert sink.items == [0, 10, 20, 30, 40]
    assert report.failed == 0
