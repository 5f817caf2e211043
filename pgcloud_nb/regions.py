"""Where Managed Postgres runs: the regions of each provider, one list for the whole package.

The API publishes no region list and ``region`` is a free string in the spec;
the real server refuses a region it does not serve with a 400
(docs/api-behaviour.md, "Regions"). This list is what the package knows:

- **AWS**: the regions seen in the Managed Postgres docs and public samples
  (:data:`SEEN`, confirmed), then other ClickHouse Cloud AWS regions (assumed);
- **GCP**: ClickHouse Cloud's GCP regions, as ``clickhousectl`` 0.5.0 lists them
  for ClickHouse services (assumed for Postgres).

The create form suggests them (:mod:`pgcloud_nb.widgets.create`), and the
sandbox accepts them and no others unless its ``regions`` setting adds more
(docs/api-behaviour.md, "Regions the sandbox accepts").
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ANY", "REGIONS", "SEEN", "accepts", "known"]

# Seen in the docs and public samples of Managed Postgres itself.
SEEN = ("us-east-1", "us-west-2", "eu-west-1", "eu-west-2", "ap-northeast-2")

REGIONS: dict[str, tuple[str, ...]] = {
    "aws": (*SEEN, "us-east-2", "eu-central-1", "ap-southeast-1", "ap-south-1"),
    "gcp": ("us-central1", "europe-west4", "asia-southeast1", "asia-northeast1", "europe-west2"),
}

# An extra region list holding this accepts every region (a sandbox knob).
ANY = "*"


def known(provider: str) -> tuple[str, ...]:
    """The regions listed for ``provider`` (none for a provider the list lacks)."""
    return REGIONS.get(provider, ())


def accepts(provider: str, region: str, extra: Iterable[str] = ()) -> bool:
    """Whether ``region`` is served for ``provider``: listed, or among ``extra``
    (regions added for every provider; :data:`ANY` adds them all)."""
    more = set(extra)
    return ANY in more or region in more or region in known(provider)
