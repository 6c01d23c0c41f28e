"""Delivery policy, whatever the transport: `[delivery]` and `[platform]` in site.toml.

How batches are cut and paced, how long an ack may take, whether raw readings are streamed.
The transport's own section (`[mqtt]`, `[https]`) says how to reach the platform and who it
is (TLS, credentials, the key the platform signs its acks with). Site files written before
`[delivery]` existed carry the policy keys under `[mqtt]`: the site's `[mqtt]` takes them
(`LegacyPolicy`) and the site moves them here (gateway/config.py); delivery itself is always
given a DeliveryConfig.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from gateway.models import ConfigBool, ConfigFloat, Frozen, in_range

# one definition per setting: DeliveryConfig holds them; LegacyPolicy takes them from old files
BatchSize = Annotated[int, in_range(1, 10000)]
AckTimeout = Annotated[ConfigFloat, Field(ge=0.01, le=3600)]
MaxInFlight = Annotated[int, in_range(1, 10000)]
BacklogRate = Annotated[ConfigFloat, Field(ge=0, le=10000)]
Compression = Literal["none", "gzip"]
ReadingsBatchSize = Annotated[int, in_range(1, 100000)]


class DeliveryConfig(Frozen):
    """`[delivery]`: the policy of getting batches to the platform and their acks back."""

    batch_size: BatchSize = Field(default=50, description="activity records per batch")
    ack_timeout_s: AckTimeout = Field(
        default=30.0, description="a batch without the platform's ack is sent again after this"
    )
    max_in_flight: MaxInFlight = Field(default=20, description="batches awaiting acks at once")
    backlog_rate: BacklogRate = Field(
        default=20.0, description="backlog batches per second after an outage; 0: no limit"
    )
    compression: Compression = "gzip"
    readings: ConfigBool = Field(default=False, description="stream the raw readings too")
    readings_batch_size: ReadingsBatchSize = 2000


LEGACY_POLICY_KEYS = tuple(DeliveryConfig.model_fields)
"""Policy keys a site file may still give under `[mqtt]` (before `[delivery]` existed)."""


class LegacyPolicy(Frozen):
    """The delivery policy as site files older than `[delivery]` give it under `[mqtt]`,
    each key None when not given there: mixed into the site's `[mqtt]` only, which moves
    them to `[delivery]` (gateway/config.py). The link's own config never carries policy."""

    batch_size: BatchSize | None = None
    ack_timeout_s: AckTimeout | None = None
    max_in_flight: MaxInFlight | None = None
    backlog_rate: BacklogRate | None = None
    compression: Compression | None = None
    readings: ConfigBool | None = None
    readings_batch_size: ReadingsBatchSize | None = None

    def given_policy(self) -> dict[str, Any]:
        """The policy keys this section gives, with their values."""
        given = {k: getattr(self, k) for k in LEGACY_POLICY_KEYS}
        return {k: v for k, v in given.items() if v is not None}


class PlatformConfig(Frozen):
    """`[platform]`: which transport carries the contract's messages. Each transport has its
    own section (`[mqtt]`, ...) and module in cloud_sync (docs/architecture.md, "Where to
    add a sink")."""

    transport: Literal["mqtt", "https"] = Field(
        default="mqtt", description="the section that says how to reach the platform"
    )


def legacy_policy(section: dict[str, Any]) -> dict[str, Any]:
    """The policy keys in a raw transport section (`[mqtt]` of an older site file)."""
    return {k: v for k, v in section.items() if k in LEGACY_POLICY_KEYS}
