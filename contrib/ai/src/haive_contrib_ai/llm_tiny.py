"""A tiny random chat model made on the spot, and ``transformers serve`` run on it.

For tests, examples and benches that need a real model and a real OpenAI-compatible server
offline: :func:`make_tiny_chat_model` trains a byte-level BPE tokenizer on a few sentences
(the ``tokenizers`` library) and saves it with a GPT-2 of about ten thousand random weights
and a chat template. Its text is gibberish; what it exercises is the machinery (streaming,
cancellation, usage, retries). :class:`TransformersServer` runs ``transformers serve`` on
that folder (needs ``pip install 'transformers[serving]'``) in a child process on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

SENTENCES = (
    "the market opens higher today as analysts expect growth",
    "the agent streams its answer to the user token by token",
    "sensor readings arrive every second from the factory floor",
    "prices fell after the report and volume was heavy",
)
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def make_tiny_chat_model(folder: str | Path, *, context: int = 2048, seed: int = 0) -> Path:
    """Save a tiny GPT-2 chat model (random weights, trained tokenizer) to ``folder``.

    ``context`` is the longest prompt plus answer in tokens. Blocking (about a second).

    Example::

        >>> import tempfile
        >>> folder = make_tiny_chat_model(tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir() if p.suffix == ".json")[:2]
        ['config.json', 'generation_config.json']
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES, trainer)
    end = "<|endoftext|>"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=end, bos_token=end, unk_token=end, pad_token=end
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    end_id = tokenizer.token_to_id(end)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=context,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=end_id,
        eos_token_id=end_id,
        pad_token_id=end_id,
    )
    model = GPT2LMHeadModel(config)
    # Never pick the end token (every generation then runs to max_tokens, which tests need)
    # nor a token that is not printable ASCII (a lone byte of a UTF-8 sequence would hold
    # the server's detokenizer back, so one delta per token is streamed).
    suppressed = [
        token_id
        for token, token_id in tokenizer.get_vocab().items()
        if token_id == end_id
        or not all(32 <= ord(ch) < 127 for ch in tokenizer.decoder.decode([token]))
    ]
    model.generation_config.suppress_tokens = suppressed
    model.save_pretrained(folder)
    return folder


def free_port() -> int:
    """A TCP port nobody listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TransformersServer:
    """``transformers serve`` on a local model folder, in a child process on ``port``.

    ``start()`` returns once the server answers ``/health``; ``stop()`` terminates it (and
    waits). Use it as a context manager to never leave the process behind. Blocking calls:
    from trio, call them through ``trio.to_thread.run_sync``.

    Example (not run here: it needs ``transformers[serving]`` and takes seconds)::

        with TransformersServer(make_tiny_chat_model(folder)) as server:
            print(server.url)   # http://127.0.0.1:<port>/v1
    """

    def __init__(self, model: str | Path, *, port: int | None = None, threads: int = 1) -> None:
        self.model = str(model)
        self.port = port or free_port()
        self.threads = threads
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(self.model) / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> None:
        import httpx

        if self.process is not None:
            return
        command = [
            str(Path(sys.executable).parent / "transformers"),
            "serve",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # Two shared cores: torch's spinning thread pool would only slow everyone down.
            "OMP_NUM_THREADS": str(self.threads),
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited with {self.process.returncode}: "
                    f"{self.log.read_text()[-2000:]}"
                )
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer within {timeout}s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> TransformersServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
