"""TLS for https targets: verify by default; trust extra CAs or (explicitly) nothing.

Verification (chain and host name, the system's CA store) is on unless the user says otherwise:
``benchbox sweep --insecure`` turns it off for every target of that run, a target's ``tls: {verify:
false}`` for that target (the sweep prints a warning either way: an unverified endpoint can read the
API key). ``tls.ca_file`` (per target) and ``--ca-file`` (every target) add CA certificates to the
system's, e.g. an internal CA or a test's self-signed certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Optional

from bench.scenario import ScenarioError


def client_context(verify: bool = True, ca_files: tuple[Path, ...] = ()) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    for f in ca_files:
        try:
            ctx.load_verify_locations(cafile=str(f))
        except (ssl.SSLError, OSError) as e:
            raise ScenarioError(f"{f}: not a readable PEM file of CA certificates ({e.strerror or e})") from None
    return ctx


def target_contexts(loaded: Any, insecure: bool = False, ca_file: Optional[Path] = None) -> dict[str, ssl.SSLContext]:
    """target name -> client context, for every target reached over https."""
    out: dict[str, ssl.SSLContext] = {}
    for t in loaded.scenario.targets:
        if not (t.url or "").startswith("https://"):
            continue
        files = tuple(f for f in (loaded.resolve(t.tls.ca_file) if t.tls.ca_file else None, ca_file) if f)
        out[t.name] = client_context(verify=t.tls.verify and not insecure, ca_files=files)
    return out


def unverified(loaded: Any, insecure: bool = False) -> list[str]:
    """Names of the https targets whose certificates will not be checked."""
    return [t.name for t in loaded.scenario.targets
            if (t.url or "").startswith("https://") and (insecure or not t.tls.verify)]
