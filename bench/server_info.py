"""What a target's server says about itself, for the manifest (control plane: urllib / tritonclient,
never the load generator's connections). Failures are recorded as ``{"error": ...}``, never raised:
the manifest must not fail a run.

- OpenAI-compatible: ``reported_models`` (``GET /v1/models``).
- TGI native: ``reported_tgi`` (``GET /info``: model id, sha, dtype, max tokens, version).
- Triton (HTTP generate or gRPC): ``reported_triton`` with the server's metadata (version,
  extensions), whether the model is ready (``/v2/models/<m>/ready``, ``ModelReady``), its config
  (``/v2/models/<m>/config``, ``ModelConfig``: backend, decoupled policy, inputs, parameters) and
  metadata (``/v2/models/<m>``, ``ModelMetadata``: input and output tensors).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Optional
from urllib.parse import urlsplit

import orjson

from bench.adapters.triton_http import model_path
from bench.manifest import fetch_models
from bench.scenario import Target

_MAX_BODY = 4_000_000


def _get(url: str, headers: dict[str, str], timeout_s: float, ctx: Any = None) -> tuple[Optional[int], Any]:
    """(status, JSON body or None); (None, error text) when the server could not be reached.
    ``ctx``: the target's TLS context (--insecure, --ca-file, tls.ca_file), as the load uses."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:  # noqa: S310 (http(s) only, validated)
            data = resp.read(_MAX_BODY)
            status = resp.status
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, f"GET {urlsplit(url).path} failed: {getattr(e, 'reason', None) or e}"
    try:
        return status, orjson.loads(data) if data.strip() else None
    except orjson.JSONDecodeError:
        return status, None


def _json_or_error(url: str, headers: dict[str, str], timeout_s: float, ctx: Any = None) -> Any:
    status, body = _get(url, headers, timeout_s, ctx)
    if status is None:
        return {"error": body}
    if status != 200:
        return {"error": f"GET {urlsplit(url).path} answered HTTP {status}"}
    return body


def triton_http_info(base_url: str, model: str, version: str, headers: dict[str, str],
                     timeout_s: float = 10.0, ctx: Any = None) -> dict[str, Any]:
    base = base_url.rstrip("/")
    mpath = model_path(model, version)
    ready_status, ready_err = _get(f"{base}{mpath}/ready", headers, timeout_s, ctx)
    return {
        "transport": "http",
        "server": _json_or_error(f"{base}/v2", headers, timeout_s, ctx),
        "model": model,
        "model_version": version or None,
        "model_ready": ready_status == 200 if ready_status is not None else None,
        **({"model_ready_error": ready_err} if ready_status is None else {}),
        "model_config": _json_or_error(f"{base}{mpath}/config", headers, timeout_s, ctx),
        "model_metadata": _json_or_error(f"{base}{mpath}", headers, timeout_s, ctx),
    }


def triton_grpc_info(url: str, model: str, version: str, headers: dict[str, str],
                     timeout_s: float = 10.0) -> dict[str, Any]:
    """The same facts through tritonclient's (synchronous) gRPC client."""
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        return {"transport": "grpc", "error": "tritonclient is not installed (pip install 'benchbox[triton]')"}
    parts = urlsplit(url)
    client = grpcclient.InferenceServerClient(f"{parts.hostname}:{parts.port}", ssl=parts.scheme == "grpcs")
    meta = {k.lower(): v for k, v in headers.items()}
    out: dict[str, Any] = {"transport": "grpc", "model": model, "model_version": version or None}

    def ask(key: str, call: Any) -> None:
        try:
            out[key] = call()
        except InferenceServerException as e:
            out[key] = {"error": f"{e.status() or ''} {e.message()}".strip()[:300]}

    try:
        ask("server", lambda: client.get_server_metadata(headers=meta, as_json=True, client_timeout=timeout_s))
        ask("model_ready", lambda: client.is_model_ready(model, version, headers=meta, client_timeout=timeout_s))
        ask("model_config", lambda: client.get_model_config(model, version, headers=meta, as_json=True,
                                                            client_timeout=timeout_s))
        ask("model_metadata", lambda: client.get_model_metadata(model, version, headers=meta, as_json=True,
                                                                client_timeout=timeout_s))
    finally:
        client.close()
    return out


def describe_server(target: Target, base_url: str, headers: dict[str, str],
                    timeout_s: float = 10.0, ctx: Any = None) -> dict[str, Any]:
    """Manifest keys for this target (see the module docstring); ``ctx``: its TLS context."""
    protocol = target.protocol
    if protocol.startswith("triton"):
        version = target.triton.model_version if target.triton else ""
        if protocol == "triton-grpc":
            return {"reported_triton": triton_grpc_info(base_url, target.model or "", version, headers, timeout_s)}
        return {"reported_triton": triton_http_info(base_url, target.model or "", version, headers, timeout_s, ctx)}
    if protocol == "tgi-generate":
        return {"reported_tgi": _json_or_error(base_url.rstrip("/") + "/info", headers, timeout_s, ctx)}
    return {"reported_models": fetch_models(base_url, headers, timeout_s, ctx)}
