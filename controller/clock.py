"""Timestamps as ML Server wrote them: ISO 8601 in UTC, seven fractional digits, no offset
(``2017-10-05T22:49:33.7832679``, API.md §1.5)."""

from __future__ import annotations

import datetime


def dotnet_timestamp(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"
