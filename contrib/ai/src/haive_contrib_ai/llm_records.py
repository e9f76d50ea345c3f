"""What LLM providers and the LLM node exchange: requests, token deltas, completions.

All are frozen attrs classes (messages between tasks are immutable) and encode as plain
fields in the core's JSON encoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from haive.dataflow.errors import ConfigError, HaiveError

ROLES = ("system", "user", "assistant", "tool")


class LLMError(HaiveError):
    """A generation failed: the server refused or broke off, or the answer was malformed.

    ``status`` is the HTTP status when there was one; ``retryable`` says whether trying
    again may help (429, 5xx, connection failures).

    Example::

        >>> str(LLMError("server answered 503", status=503, retryable=True))
        'server answered 503'
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


@attrs.frozen
class ChatMessage:
    """One message of a chat prompt.

    Example::

        >>> ChatMessage("user", "hi").as_dict()
        {'role': 'user', 'content': 'hi'}
        >>> ChatMessage("robot", "hi")
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.ConfigError: ChatMessage(role='robot'): role must be one of 'system', 'user', 'assistant', 'tool', got 'robot'
    """

    role: str
    content: str

    def __attrs_post_init__(self) -> None:
        if self.role not in ROLES:
            allowed = ", ".join(repr(r) for r in ROLES)
            raise ConfigError(
                f"ChatMessage(role={self.role!r}): role must be one of {allowed}, got {self.role!r}"
            )
        if not isinstance(self.content, str):
            raise ConfigError(
                f"ChatMessage(content={self.content!r}): content must be a string, "
                f"got {type(self.content).__name__}"
            )

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def as_messages(prompt: str | ChatMessage | Sequence[Any]) -> tuple[ChatMessage, ...]:
    """A prompt as chat messages: a string is one user message; mappings become messages.

    Example::

        >>> as_messages("hello")
        (ChatMessage(role='user', content='hello'),)
        >>> as_messages([{"role": "system", "content": "be brief"}, "hello"])[0].role
        'system'
    """
    if isinstance(prompt, str):
        return (ChatMessage("user", prompt),)
    if isinstance(prompt, ChatMessage):
        return (prompt,)
    if not isinstance(prompt, Sequence) or not prompt:
        raise ConfigError(
            f"prompt must be a string, a ChatMessage or a non-empty list of messages, got {prompt!r}"
        )
    messages: list[ChatMessage] = []
    for entry in prompt:
        if isinstance(entry, ChatMessage):
            messages.append(entry)
        elif isinstance(entry, str):
            messages.append(ChatMessage("user", entry))
        elif isinstance(entry, Mapping) and "role" in entry and "content" in entry:
            messages.append(ChatMessage(str(entry["role"]), entry["content"]))
        else:
            raise ConfigError(
                f"a prompt message must be a string, a ChatMessage or a mapping with role and "
                f"content, got {entry!r}"
            )
    return tuple(messages)


@attrs.frozen
class Usage:
    """Tokens a generation used. ``estimated`` is true when the server did not report them
    (then ``completion_tokens`` counts the streamed deltas and ``prompt_tokens`` is 0).

    Example::

        >>> Usage(12, 30).total_tokens
        42
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@attrs.frozen
class TokenDelta:
    """A piece of generated text as a provider streams it (one or a few tokens).

    Example::

        >>> TokenDelta("Hel").text
        'Hel'
    """

    text: str
    #: Set on the last delta of a generation when the server said why it stopped.
    finish_reason: str | None = None


@attrs.frozen
class Generation:
    """The outcome of one whole generation, as a provider reports it at the end.

    Example::

        >>> Generation("Hello", Usage(3, 2), finish_reason="stop").text
        'Hello'
    """

    text: str
    usage: Usage
    finish_reason: str | None = None
    model: str | None = None
