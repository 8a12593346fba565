"""Azure AD bearer tokens: what verifying one costs, first time and later (cached).

A micro-bench of the verifier in this process (``controller.auth.oidc``), against the test
identity provider on 127.0.0.1 (``tests/oidc_provider.py``): unlike the other benches it
imports the controller, so it measures the verifier alone, not a request. Figures, in µs:

- ``cold``: a fresh verifier's first token (discovery and JWKS fetched on loopback);
- ``first``: a token never seen, its key held (signature and claims checked);
- ``later``: the same token again (the cache: a hash and a look-up).

    PYTHONPATH=. .venv/bin/python -m bench.oidc_verify [--tokens 1000] [--results FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from controller.auth.oidc import OidcVerifier
from tests.oidc_provider import OidcProvider


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p90_us": round(ordered[int(len(ordered) * 0.9)] * 1e6, 1),
        "n": len(ordered),
    }


async def _measure(idp: OidcProvider, tokens: int, colds: int) -> dict[str, Any]:
    cold = []
    for _ in range(colds):
        verifier = OidcVerifier(idp.aad_config())
        token = idp.token()
        began = time.perf_counter()
        await verifier.start()
        await verifier.verify(token)
        cold.append(time.perf_counter() - began)
        await verifier.close()
    figures: dict[str, Any] = {"cold": _summary(cold)}
    verifier = OidcVerifier(idp.aad_config())
    await verifier.start()
    try:
        await verifier.verify(idp.token())
        for alg in ("RS256", "ES256"):
            minted = [
                idp.token(f"user{i}@contoso.example", alg=alg, groups=[f"g{i % 7}"])
                for i in range(tokens)
            ]
            first, later = [], []
            for token in minted:
                began = time.perf_counter()
                await verifier.verify(token)
                first.append(time.perf_counter() - began)
            for token in minted:
                began = time.perf_counter()
                await verifier.verify(token)
                later.append(time.perf_counter() - began)
            figures[alg] = {"first": _summary(first), "later": _summary(later)}
    finally:
        await verifier.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=1000, help="distinct tokens per alg")
    parser.add_argument("--colds", type=int, default=20, help="fresh verifiers timed")
    parser.add_argument("--results", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args()
    with OidcProvider() as idp:
        figures = asyncio.run(_measure(idp, args.tokens, args.colds))
    print(
        f"oidc verify, µs (p50 / p90): cold {figures['cold']['p50_us']} / "
        f"{figures['cold']['p90_us']}"
    )
    for alg in ("RS256", "ES256"):
        first, later = figures[alg]["first"], figures[alg]["later"]
        print(
            f"  {alg}: first {first['p50_us']} / {first['p90_us']}, "
            f"later {later['p50_us']} / {later['p90_us']}"
        )
    if args.results:
        args.results.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
