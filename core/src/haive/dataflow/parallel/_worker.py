"""The worker process of :class:`haive.dataflow.parallel.ProcessPool` (run by file path).

It is started as ``python .../_worker.py`` so that it imports nothing of haive (nor trio)
before it has to: start-up costs one interpreter, plus whatever the user's function needs.

Protocol, over the inherited stdin/stdout pipes, each frame an 8-byte little-endian length
followed by a pickle:

1. parent -> worker: ``(preparation_data, pickled_function)``. The worker replays the
   parent's ``sys.path``, working directory and ``__main__`` module the way
   :mod:`multiprocessing`'s spawn start method does, then unpickles the function.
   worker -> parent: ``("ready", None)`` or ``("init-error", traceback_text)``.
2. parent -> worker: a pickled list of items (one micro-batch).
   worker -> parent: ``("ok", (values, errors, seconds))`` where ``errors`` lists
   ``(index, exception)`` for the items whose call raised (``values[index]`` is ``None``),
   or ``("batch-error", traceback_text)`` when the batch itself cannot be unpickled here.
3. end of stdin: the worker exits with status 0.

File descriptors 0 and 1 are moved aside first, so a ``print`` in user code goes to stderr
and cannot corrupt the protocol.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time
import traceback
from typing import Any

_HEADER = struct.Struct("<Q")
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _read_exactly(stream: Any, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        data = stream.read(n - len(chunks))
        if not data:
            return None
        chunks += data
    return bytes(chunks)


def _read_frame(stream: Any) -> bytes | None:
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    return _read_exactly(stream, size)


def _write_frame(stream: Any, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RemoteError describing it."""
    try:
        pickle.loads(pickle.dumps(exc, _PROTOCOL))
    except Exception:
        # Imported only now: the worker does not load haive unless it has to.
        from haive.dataflow.parallel.errors import RemoteError

        text = "".join(traceback.format_exception(exc))
        return RemoteError(type(exc).__name__, str(exc), text)
    return exc


def _encode_results(
    values: list[Any], errors: list[tuple[int, BaseException]], seconds: float
) -> bytes:
    try:
        return pickle.dumps(("ok", (values, errors, seconds)), _PROTOCOL)
    except Exception:
        pass
    # Some value cannot be pickled: find which, and report those items as failed.
    failed = dict(errors)
    for index, value in enumerate(values):
        if index in failed:
            continue
        try:
            pickle.dumps(value, _PROTOCOL)
        except Exception as exc:
            values[index] = None
            failed[index] = TypeError(
                f"the result ({type(value).__name__}) cannot be sent back from the worker "
                f"process: {exc}"
            )
    return pickle.dumps(("ok", (values, sorted(failed.items()), seconds)), _PROTOCOL)


def _load_by_path(modules: dict[str, str]) -> None:
    """Make modules the parent loaded from files under synthetic names importable here.

    pytest's importlib mode, ``haive run FILE.py`` and plugin loaders import modules from a
    path under a name that is not importable through ``sys.path``; a function defined there
    pickles by that name. Such a module is loaded from its file (parents as empty modules).
    """
    import importlib
    import importlib.util
    import types

    for name, path in modules.items():
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules:
                try:
                    importlib.import_module(parent)
                except ImportError:
                    sys.modules[parent] = types.ModuleType(parent)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def main() -> int:
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    init = _read_frame(proto_in)
    if init is None:
        return 0
    try:
        preparation, function_bytes = pickle.loads(init)
        from multiprocessing import spawn

        spawn.prepare(preparation)
        _load_by_path(preparation.get("modules_by_path", {}))
        fn = pickle.loads(function_bytes)
    except BaseException:
        _write_frame(proto_out, pickle.dumps(("init-error", traceback.format_exc()), _PROTOCOL))
        return 1
    _write_frame(proto_out, pickle.dumps(("ready", None), _PROTOCOL))

    clock = time.perf_counter
    while True:
        frame = _read_frame(proto_in)
        if frame is None:
            return 0
        try:
            items = pickle.loads(frame)
        except Exception:
            _write_frame(
                proto_out, pickle.dumps(("batch-error", traceback.format_exc()), _PROTOCOL)
            )
            continue
        started = clock()
        values: list[Any] = []
        append = values.append
        errors: list[tuple[int, BaseException]] = []
        for index, item in enumerate(items):
            try:
                append(fn(item))
            except Exception as exc:
                append(None)
                errors.append((index, _portable(exc)))
        _write_frame(proto_out, _encode_results(values, errors, clock() - started))


if __name__ == "__main__":
    sys.exit(main())
