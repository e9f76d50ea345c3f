"""The console API's OpenAPI 3.1 document, written out (served at ``/openapi.json``).

Hand-written rather than generated from docstrings so every parameter has its type and
bounds, which is what lets schemathesis fuzz the API from this document.
"""

from __future__ import annotations

from typing import Any

from . import __version__


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NUMBER = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_NULLABLE_STR = {"type": ["string", "null"]}
_ERROR = _json(_ref("Error"), "error")

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR}),
    "PipelineSummary": _obj(
        {
            "name": _STR,
            "running": _BOOL,
            "paused": _BOOL,
            "read": _INT,
            "processed": _INT,
            "failed": _INT,
            "dead_letters": _INT,
            "dead_letters_in": {"type": "string", "description": "memory, or redis:<stream>"},
            "source": _NULLABLE_STR,
        }
    ),
    "Worker": {
        **_obj(
            {
                "id": _STR,
                "host": _STR,
                "pid": _INT,
                "pipelines": {"type": "array", "items": _STR},
                "started": _NUMBER,
                "local": _BOOL,
            }
        ),
        "description": "this process (local) or a worker publishing to the fleet's Redis, "
        "which adds running, paused, read, processed, failed, membership and updated",
    },
    "Buffer": _obj(
        {
            "name": _STR,
            "depth": _INT,
            "capacity": _INT,
            "fill": _NUMBER,
            "strategy": _STR,
            "dropped": _INT,
            "blocked_count": _INT,
            "blocked_seconds": _NUMBER,
        }
    ),
    "Partition": _obj(
        {
            "stream": _NULLABLE_STR,
            "partition": _INT,
            "owner": _NULLABLE_STR,
            "worker": _NULLABLE_STR,
            "lag": {"type": ["integer", "null"]},
            "pending": {"type": ["integer", "null"]},
            "epoch": {"type": ["integer", "null"]},
        }
    ),
    "Edge": _obj({"source": _STR, "target": _STR, "buffer": _STR}),
    "Topology": _obj(
        {
            "nodes": {
                "type": "array",
                "items": _obj({"name": _STR, "kind": {"enum": ["source", "processor", "sink"]}}),
            },
            "edges": {"type": "array", "items": _ref("Edge")},
            "buffers": {"type": "array", "items": _ref("Buffer")},
        }
    ),
    "NodeFigures": _obj(
        {
            "name": _STR,
            "kind": {"enum": ["source", "processor", "sink"]},
            "items_in": _INT,
            "items_out": _INT,
            "errors": _INT,
            "rate_in": _NUMBER,
            "rate_out": _NUMBER,
            "error_rate": _NUMBER,
            "fill": _NUMBER,
            "backpressure": _BOOL,
            "buffer": {"oneOf": [_ref("Buffer"), {"type": "null"}]},
            "latency_ms": {
                "type": ["object", "null"],
                "additionalProperties": _NUMBER,
                "description": "p50, p95, p99, mean (ms) and count of the node's estimate",
            },
            "state": {"enum": ["ok", "backpressure", "errors"]},
        }
    ),
    "Metrics": _obj(
        {
            "nodes": {"type": "array", "items": _ref("NodeFigures")},
            "edges": {"type": "array", "items": _ref("Edge")},
            "buffers": {"type": "array", "items": _ref("Buffer")},
            "latency_ms": {"type": "object", "additionalProperties": _NUMBER},
            "throughput": {"type": "object", "additionalProperties": _NUMBER},
        }
    ),
    "ChartPoint": _obj(
        {
            "time": _NUMBER,
            "rate_in": _NUMBER,
            "rate_out": _NUMBER,
            "error_rate": _NUMBER,
            "fill": _NUMBER,
        }
    ),
    "Alert": {
        "type": "object",
        "properties": {
            "pipeline": _STR,
            "rule": _STR,
            "severity": _STR,
            "message": _STR,
            "acknowledged": _BOOL,
        },
        "required": ["pipeline", "rule", "severity", "message", "acknowledged"],
    },
    "DeadLetter": _obj(
        {
            "id": {"type": "string", "description": "a number in memory, an entry id in Redis"},
            "payload": {},
            "node": _NULLABLE_STR,
            "error_type": _STR,
            "reason": _STR,
            "attempts": _INT,
            "time": _NUMBER,
        }
    ),
    "ReplayRequest": {
        "type": "object",
        "properties": {
            "ids": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 48},
                "maxItems": 1000,
            }
        },
        "required": ["ids"],
        "additionalProperties": False,
    },
    "ReplayResult": _obj(
        {
            "pipeline": _STR,
            "replayed": {"type": "array", "items": _STR},
            "missing": {"type": "array", "items": _STR},
        }
    ),
    "Acknowledged": _obj({"pipeline": _STR, "rule": _STR, "acknowledged": _BOOL}),
}

_PIPELINE = {"name": "pipeline", "in": "path", "required": True, "schema": _STR}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, "401": _ERROR}
    for code in errors:
        responses[str(code)] = _ERROR
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _list(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}


PATHS: dict[str, Any] = {
    "/api/pipelines": {
        "get": _op("List the pipelines", _json(_list("PipelineSummary"), "pipelines"))
    },
    "/api/workers": {"get": _op("List the workers", _json(_list("Worker"), "workers"))},
    "/api/partitions": {
        "get": _op(
            "Owned partitions of keyed-partition sources: owner, lag, pending",
            _json(_list("Partition"), "partitions"),
        )
    },
    "/api/pipelines/{pipeline}": {
        "get": _op(
            "A pipeline: summary, topology and node figures",
            _json({"type": "object"}, "the pipeline"),
            params=[_PIPELINE],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/topology": {
        "get": _op(
            "Nodes, edges, buffers",
            _json(_ref("Topology"), "topology"),
            params=[_PIPELINE],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/metrics": {
        "get": _op(
            "Per-node throughput, latency percentiles, error rate, buffer fill, backpressure",
            _json(_ref("Metrics"), "figures"),
            params=[_PIPELINE],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/nodes/{node}/history": {
        "get": _op(
            "A node's chart: one point per sample",
            _json(_list("ChartPoint"), "points"),
            params=[_PIPELINE, {"name": "node", "in": "path", "required": True, "schema": _STR}],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/pause": {
        "post": _op(
            "Stop reading the source",
            _json(_ref("PipelineSummary"), "paused"),
            params=[_PIPELINE],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/resume": {
        "post": _op(
            "Read the source again",
            _json(_ref("PipelineSummary"), "resumed"),
            params=[_PIPELINE],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/dead-letters": {
        "get": _op(
            "Dead letters, oldest first, filtered by node and error",
            _json(_list("DeadLetter"), "dead letters"),
            params=[
                _PIPELINE,
                {"name": "node", "in": "query", "required": False, "schema": _STR},
                {
                    "name": "error",
                    "in": "query",
                    "required": False,
                    "schema": _STR,
                    "description": "part of the error type or reason (case-insensitive)",
                },
                {
                    "name": "offset",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": 1000000},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            errors=(400, 404),
        )
    },
    "/api/pipelines/{pipeline}/dead-letters/{id}": {
        "get": _op(
            "One dead letter: payload and reason",
            _json(_ref("DeadLetter"), "the dead letter"),
            params=[_PIPELINE, {"name": "id", "in": "path", "required": True, "schema": _STR}],
            errors=(404,),
        )
    },
    "/api/pipelines/{pipeline}/dead-letters/replay": {
        "post": _op(
            "Feed the chosen dead letters into the running pipeline's input",
            _json(_ref("ReplayResult"), "replayed"),
            params=[_PIPELINE],
            errors=(400, 404, 409),
            body=_ref("ReplayRequest"),
        )
    },
    "/api/alerts": {"get": _op("Active alerts of every pipeline", _json(_list("Alert"), "alerts"))},
    "/api/pipelines/{pipeline}/alerts/{rule}/acknowledge": {
        "post": _op(
            "Acknowledge an active alert",
            _json(_ref("Acknowledged"), "acknowledged"),
            params=[_PIPELINE, {"name": "rule", "in": "path", "required": True, "schema": _STR}],
            errors=(404,),
        )
    },
}


def openapi_document() -> dict[str, Any]:
    """The whole document.

    Example::

        >>> doc = openapi_document()
        >>> doc["openapi"], "/api/pipelines" in doc["paths"]
        ('3.1.0', True)
    """
    return {
        "openapi": "3.1.0",
        "info": {"title": "haive console", "version": __version__},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}, {}],
    }
