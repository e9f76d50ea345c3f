"""TransformationChain: named transformation steps whose outputs are all kept.

A chain runs its steps in order on one item and returns a :class:`ChainResult` holding every
step's output by name, as the product description's NLP chain does::

    chain = TransformationChain()
    chain.add_transformation("tokenization", TokenizationTransform())
    chain.add_transformation("embedding", EmbeddingTransform())
    result = await chain.transform("some text")
    result.tokens, result.embedding

Where a step reads from
    By default a step reads the previous step's output (the first step reads the chain's
    input), so plain functions pipe: ``str.strip`` then ``str.lower``. ``input=`` picks
    another source: ``"input"`` (the chain's input), ``"state"`` (a :class:`ChainResult` of
    everything computed so far, for steps that combine outputs) or the name of an earlier
    step. A transform object may set a ``chain_input`` attribute to choose its own default
    (the AI transforms read the chain's input, an enrichment step reads the state).

What a step is
    A callable (sync or async) or an object with a ``transform`` method (sync or async). An
    object that also has ``transform_batch(values) -> list`` is given whole batches when the
    chain runs as a pipeline node or through :meth:`TransformationChain.transform_batch`, so
    model inference is batched. An ``output_name`` attribute on a transform object is an extra
    name for its output on the result (``TokenizationTransform`` answers ``result.tokens``).

Where a chain is used
    ``await chain.transform(item)`` directly; ``await chain(item)`` (a chain is an async
    callable, so ``stream.map(chain.transform)`` works as a reactive operator and
    ``TransformNode(transform_fn=chain)`` as a node); or as a pipeline node itself
    (``pipeline.add_node(chain)``): it is a :class:`~haive.dataflow.runtime.nodes.Node` that opens and
    closes its steps with the pipeline (``open``/``aclose``), runs each step over the whole
    ready batch and emits one :class:`ChainResult` per item (or only the
    last step's output with ``emit="output"``). A failing step fails only its item, which the
    pipeline's error policy then handles.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import attrs

from ..errors import ConfigError, HaiveError
from ..runtime.nodes import NODE_ON_ERROR, NODE_RETRY, Node, NodeContext, is_async_callable
from ..runtime.retry import RetryPolicy
from ..runtime.validation import NON_EMPTY_STR, one_of

#: ``input=`` value: the previous step's output (the chain's input for the first step).
PREVIOUS = "previous"
#: ``input=`` value: the chain's input.
INPUT = "input"
#: ``input=`` value: a :class:`ChainResult` of the input and every output computed so far.
STATE = "state"

_RESERVED = frozenset({PREVIOUS, INPUT, STATE})
EmitMode = Literal["result", "output"]


class ChainStepError(HaiveError):
    """A step of a :class:`TransformationChain` raised.

    ``step`` names the step, ``error`` is what it raised (also ``__cause__``) and ``partial``
    is the :class:`ChainResult` of the steps that had succeeded, so nothing computed is lost.
    """

    def __init__(self, chain: str, step: str, error: BaseException, partial: ChainResult) -> None:
        super().__init__(
            f"transformation chain {chain!r}: step {step!r} failed: {type(error).__name__}: {error}"
        )
        self.chain = chain
        self.step = step
        self.error = error
        self.partial = partial


@attrs.frozen(slots=True)
class ChainResult:
    """The outputs of one run of a :class:`TransformationChain`, by step name.

    ``result["name"]`` and ``result.name`` give a step's output; ``output`` is the last step's
    output (the input itself for an empty chain) and ``outputs`` maps every step, in order.

    Example::

        >>> result = ChainResult("Hi", {"lower": "hi", "length": 2})
        >>> result.lower, result["length"], result.output, result.steps
        ('hi', 2, 2, ('lower', 'length'))
    """

    input: Any
    outputs: Mapping[str, Any] = attrs.field(factory=dict)
    aliases: Mapping[str, str] = attrs.field(factory=dict, repr=False)

    @property
    def output(self) -> Any:
        """The last step's output (the input when no step ran)."""
        if not self.outputs:
            return self.input
        return list(self.outputs.values())[-1]

    @property
    def steps(self) -> tuple[str, ...]:
        """The names of the steps that produced an output, in order."""
        return tuple(self.outputs)

    def __getitem__(self, name: str) -> Any:
        if name in self.outputs:
            return self.outputs[name]
        step = self.aliases.get(name)
        if step is not None and step in self.outputs:
            return self.outputs[step]
        raise KeyError(
            f"no step {name!r} in this chain result; steps: {', '.join(self.outputs) or '(none)'}"
        )

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self.outputs or self.aliases.get(name) in self.outputs

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def get(self, name: str, default: Any = None) -> Any:
        """A step's output, or ``default`` when the step did not run."""
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        """``{"input": ..., <step>: <output>, ...}``: a plain mapping of the whole result."""
        return {"input": self.input, **self.outputs}


@attrs.frozen
class ChainStep:
    """One named step: the transform, where it reads from, and how to call it.

    Example::

        >>> step = ChainStep.build("upper", str.upper, None)
        >>> step.name, step.input, step.is_async
        ('upper', 'previous', False)
    """

    name: str
    transform: Any
    input: str
    call: Callable[[Any], Any]
    is_async: bool
    batch_call: Callable[[list[Any]], Any] | None = None
    batch_is_async: bool = False
    alias: str | None = None

    @classmethod
    def build(cls, name: str, transform: Any, input: str | None) -> ChainStep:
        method = getattr(transform, "transform", None)
        call: Callable[[Any], Any]
        if callable(method):
            call = method
        elif callable(transform):
            call = transform
        else:
            raise ConfigError(
                f"transformation {name!r} must be a callable or have a transform() method, "
                f"got {transform!r}"
            )
        batch = getattr(transform, "transform_batch", None)
        batch_call = batch if callable(batch) else None
        if input is None:
            declared = getattr(transform, "chain_input", None)
            input = declared if isinstance(declared, str) and declared else PREVIOUS
        alias = getattr(transform, "output_name", None)
        return cls(
            name=name,
            transform=transform,
            input=input,
            call=call,
            is_async=is_async_callable(call),
            batch_call=batch_call,
            batch_is_async=batch_call is not None and is_async_callable(batch_call),
            alias=alias if isinstance(alias, str) and alias else None,
        )

    async def run(self, value: Any) -> Any:
        """Apply the step to one value."""
        out = self.call(value)
        if self.is_async:
            out = await out
        return out

    async def run_batch(self, values: list[Any]) -> list[Any]:
        """Apply the step to many values, in one call when the transform has ``transform_batch``."""
        if self.batch_call is None:
            return [await self.run(value) for value in values]
        out = self.batch_call(values)
        if self.batch_is_async:
            out = await out
        out = list(out)
        if len(out) != len(values):
            raise ValueError(
                f"{type(self.transform).__name__}.transform_batch returned {len(out)} outputs "
                f"for {len(values)} inputs"
            )
        return out


class TransformationChain(Node):
    """Named transformation steps run in order; every step's output is kept.

    See the module documentation for where steps read from and how a chain is used in
    pipelines and reactive streams.

    Example::

        >>> import trio
        >>> chain = TransformationChain("clean")
        >>> chain.add_transformation("strip", str.strip).add_transformation("lower", str.lower)
        TransformationChain('clean', steps=['strip', 'lower'])
        >>> chain.add_transformation("words", str.split)
        TransformationChain('clean', steps=['strip', 'lower', 'words'])
        >>> chain.add_transformation("original_length", len, input="input")
        TransformationChain('clean', steps=['strip', 'lower', 'words', 'original_length'])
        >>> result = trio.run(chain.transform, "  Hello World ")
        >>> result.lower, result.words, result.original_length
        ('hello world', ['hello', 'world'], 14)
    """

    PLUGIN_NAME: ClassVar[str] = "chain"

    def __init__(
        self,
        name: str = "transformation_chain",
        *,
        emit: EmitMode = "result",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = NON_EMPTY_STR.check("TransformationChain", "name", name)
        self.emit = one_of("result", "output").check("TransformationChain", "emit", emit)
        self.on_error = NODE_ON_ERROR.check("TransformationChain", "on_error", on_error)
        self.retry = NODE_RETRY.check("TransformationChain", "retry", retry)
        self._steps: list[ChainStep] = []
        self._aliases: dict[str, str] = {}

    # -- building ------------------------------------------------------------------------
    def add_transformation(
        self, name: str, transform: Any, *, input: str | None = None
    ) -> TransformationChain:
        """Append step ``name``; returns the chain so calls can be chained.

        ``input`` is ``"previous"`` (default, unless the transform declares ``chain_input``),
        ``"input"``, ``"state"`` or the name of an earlier step.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{self._where()}: a step name must be a non-empty string, got {name!r}"
            )
        if name in _RESERVED or name.startswith("_"):
            raise ConfigError(
                f"{self._where()}: {name!r} cannot name a step (reserved: "
                f"{', '.join(sorted(_RESERVED))}, and names starting with '_')"
            )
        if any(step.name == name for step in self._steps):
            raise ConfigError(f"{self._where()}: duplicate step name {name!r}")
        step = ChainStep.build(name, transform, input)
        if step.input not in _RESERVED and not any(s.name == step.input for s in self._steps):
            raise ConfigError(
                f"{self._where()}: step {name!r} reads from {step.input!r}, which is neither "
                f"'previous', 'input', 'state' nor an earlier step "
                f"({', '.join(s.name for s in self._steps) or 'none yet'})"
            )
        self._steps.append(step)
        if step.alias is not None and step.alias not in self._aliases:
            self._aliases[step.alias] = name
        return self

    @property
    def steps(self) -> tuple[ChainStep, ...]:
        """The steps, in order."""
        return tuple(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    def __iter__(self) -> Iterator[ChainStep]:
        return iter(self._steps)

    def __repr__(self) -> str:
        return f"TransformationChain({self.name!r}, steps={[s.name for s in self._steps]!r})"

    def _where(self) -> str:
        return f"TransformationChain {self.name!r}"

    # -- running -------------------------------------------------------------------------
    def _value_for(self, step: ChainStep, item: Any, previous: Any, outputs: dict[str, Any]) -> Any:
        if step.input == PREVIOUS:
            return previous
        if step.input == INPUT:
            return item
        if step.input == STATE:
            return ChainResult(item, dict(outputs), self._aliases)
        return outputs[step.input]

    async def transform(self, item: Any) -> ChainResult:
        """Run every step on ``item``; raises :class:`ChainStepError` naming a failing step."""
        outputs: dict[str, Any] = {}
        previous = item
        for step in self._steps:
            value = self._value_for(step, item, previous, outputs)
            try:
                previous = await step.run(value)
            except Exception as exc:
                partial = ChainResult(item, outputs, self._aliases)
                raise ChainStepError(self.name, step.name, exc, partial) from exc
            outputs[step.name] = previous
        return ChainResult(item, outputs, self._aliases)

    async def __call__(self, item: Any) -> ChainResult:
        return await self.transform(item)

    async def transform_batch(
        self, items: Sequence[Any], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Run the chain on many items, step by step over the batch (batched inference).

        Returns one :class:`ChainResult` per item, in order. A failing item raises its
        :class:`ChainStepError` once the whole batch is done, or, with
        ``return_exceptions=True``, stands in the list in place of its result while the other
        items go on.

        Example::

            >>> import trio
            >>> chain = TransformationChain().add_transformation("inverse", lambda x: 1 / x)
            >>> out = trio.run(lambda: chain.transform_batch([2, 0], return_exceptions=True))
            >>> out[0].output, type(out[1]).__name__, out[1].step
            (0.5, 'ChainStepError', 'inverse')
        """
        n = len(items)
        outputs: list[dict[str, Any]] = [{} for _ in range(n)]
        previous: list[Any] = list(items)
        failed: dict[int, ChainStepError] = {}
        for step in self._steps:
            live = [i for i in range(n) if i not in failed]
            if not live:
                break
            values = [self._value_for(step, items[i], previous[i], outputs[i]) for i in live]
            try:
                results = await step.run_batch(values)
            except Exception:
                # Find the failing items one by one; the others keep their results.
                results = []
                for i, value in zip(live, values, strict=True):
                    try:
                        results.append(await step.run(value))
                    except Exception as exc:
                        partial = ChainResult(items[i], dict(outputs[i]), self._aliases)
                        error = ChainStepError(self.name, step.name, exc, partial)
                        error.__cause__ = exc
                        failed[i] = error
                        results.append(None)
            for i, out in zip(live, results, strict=True):
                if i in failed:
                    continue
                outputs[i][step.name] = out
                previous[i] = out
        done: list[Any] = []
        for i in range(n):
            if i in failed:
                if not return_exceptions:
                    raise failed[i]
                done.append(failed[i])
            else:
                done.append(ChainResult(items[i], outputs[i], self._aliases))
        return done

    # -- as a pipeline node --------------------------------------------------------------
    async def open(self) -> None:
        """Open every step that has an async ``open`` (load models before the first item)."""
        for step in self._steps:
            opener = getattr(step.transform, "open", None)
            if opener is not None and inspect.iscoroutinefunction(opener):
                await opener()

    async def aclose(self) -> None:
        """Close every step that has an async ``aclose``, last step first."""
        for step in reversed(self._steps):
            closer = getattr(step.transform, "aclose", None)
            if closer is not None and inspect.iscoroutinefunction(closer):
                await closer()

    async def process_batch(self, batch: list[Any], ctx: NodeContext) -> list[Any]:
        results = await self.transform_batch(batch, return_exceptions=True)
        out: list[Any] = []
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, ChainStepError):
                ok, value = await ctx.recover(self.transform, item, result, is_async=True)
                if not ok:
                    continue
                result = value
            out.append(result.output if self.emit == "output" else result)
        return out
