from haive.dataflow import StreamingPipeline
from haive.dataflow.builtins.sinks import MemorySink
from haive.dataflow.builtins.sources import IterableSource


async def test_linear_pipeline_runs():
    pipeline = StreamingPipeline("smoke")
    pipeline.set_source(IterableSource(range(10)))
    pipeline.add_processor(lambda x: x + 1)
    sink = MemorySink()
    pipeline.set_sink(sink)
    report = await pipeline.execute()
    assert sink.items == list(range(1, 11))
    assert report.processed == 10
