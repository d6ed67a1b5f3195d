"""Impact reports: which clients downloaded the versions a query covers, read from the
download ledger page by page (`limit`, `cursor`), each page bounded in size and cost whatever
the ledger holds, and shaped as the API shows it.

Who pulled (`identities`, per read token and CI system): on the first page of an exact
package, every matching row of it (one package: bounded by its retained rows, and by the
matching versions' rows when the filter names few); on a later page of it, and on any page of
a glob, the rows the page shows (`identities_cover` says which). A glob page reads up to
MAX_PACKAGES_PER_PAGE packages: totalling each whole would cost up to that many packages'
retained rows per page; and a walk over every page (`mirror impact --format csv`) would pay
the whole package's total on each page, so it is paid once, on the first."""

from __future__ import annotations

import bisect
import urllib.parse
from collections.abc import Sequence
from typing import Any, Final, Literal

from mirror import policy, versions
from mirror.admin.parse import PREFIX, ImpactCursor, ImpactQuery, encode_cursor
from mirror.errors import BadRequest
from mirror.model import DownloadEvent, IdentityTotal
from mirror.policy import iso_seconds as iso
from mirror.services import Services
from mirror.state.base import InvalidPosition, sort_identities

DEFAULT_IMPACT_LIMIT: Final = 100
MAX_IMPACT_LIMIT: Final = 1000  # download events in one impact page
MAX_IMPACT_PACKAGES: Final = 1000  # package names an impact page lists
# Packages one impact page reads from the ledger, at most: a glob over many packages with
# few matches answers a short page and a cursor rather than reading the whole ledger.
MAX_PACKAGES_PER_PAGE: Final = 100


def impact_link(query: ImpactQuery, cursor: str | None, limit: int) -> str | None:
    """The API path of the page a cursor points to (None: there is none)."""
    if cursor is None:
        return None
    params = {
        "ecosystem": query.ecosystem,
        "package": query.package,
        "versions": query.spec,
        "limit": str(limit),
        "cursor": cursor,
    }
    if query.since_text:
        params["since"] = query.since_text
    return f"{PREFIX}/impact?{urllib.parse.urlencode(params)}"


# What a page's `identities` total: every matching row of its (exact) package (its first
# page), or the rows the page shows (later pages, and a glob's).
IdentitiesCover = Literal["package", "page"]


def shown_identities(events: Sequence[DownloadEvent]) -> list[IdentityTotal]:
    """Who pulled the rows `events`, as `download_identities` totals a package's rows: per
    (token, ci) the rows, downloads, distinct client addresses, first and last seen."""
    groups: dict[tuple[str, str], list[DownloadEvent]] = {}
    for event in events:
        groups.setdefault((event.token, event.ci), []).append(event)
    return sort_identities(
        IdentityTotal(
            token=token,
            ci=ci,
            clients=len({event.client for event in rows}),
            rows=len(rows),
            downloads=sum(event.count for event in rows),
            first_seen=min(event.at for event in rows),
            last_seen=max(event.last_seen for event in rows),
        )
        for (token, ci), rows in groups.items()
    )


def describe_impact(
    query: ImpactQuery,
    events: Sequence[DownloadEvent],
    packages: Sequence[str],
    *,
    limit: int,
    next_cursor: str | None,
    identities: Sequence[IdentityTotal],
    identities_cover: IdentitiesCover,
) -> dict[str, Any]:
    """One impact page as the API shows it: its downloads (one row per client address, read
    token and file with first seen, last seen, count and what the client said about itself
    in its latest download; package by package in name order, first seen oldest first within
    one), the clients on this page, who pulled (`identities`: what they total,
    `identities_cover`, is the exact package's every matching row or a glob page's rows),
    the package names the query covers (at most MAX_IMPACT_PACKAGES listed, all counted) and
    where the rest is."""
    return {
        "ecosystem": query.ecosystem,
        "package": query.package,
        "versions": query.spec,
        "since": iso(query.since),
        "limit": limit,
        "packages": list(packages[:MAX_IMPACT_PACKAGES]),
        "packages_total": len(packages),
        "clients": sorted({event.client for event in events}),
        # One row per client, token and file: when it first and last pulled it, how often,
        # and what it said about itself the last time.
        "downloads": [
            {
                "client": event.client,
                "token": event.token,
                "package": event.package,
                "version": event.version,
                "filename": event.filename,
                "first_seen": iso(event.at),
                "last_seen": iso(event.last_seen),
                "count": event.count,
                "user_agent": event.user_agent,
                "ci": event.ci,
                "command": event.command,
                "session": event.session,
            }
            for event in events
        ],
        "identities": [
            {
                "token": total.token,
                "ci": total.ci,
                "clients": total.clients,
                "downloads": total.downloads,
                "first_seen": iso(total.first_seen),
                "last_seen": iso(total.last_seen),
            }
            for total in identities
        ],
        "identities_cover": identities_cover,
        "next_cursor": next_cursor,
        "next": impact_link(query, next_cursor, limit),
    }


async def impact_page(
    services: Services, query: ImpactQuery, *, limit: int, cursor: ImpactCursor | None
) -> dict[str, Any]:
    """One page of the downloads `query` covers: at most `limit` events, reading at most
    MAX_PACKAGES_PER_PAGE packages, so its size and cost are bounded whatever the ledger
    holds. Its `identities` total every matching row of an exact package on its first page,
    else the rows this page shows (see the module's docstring)."""
    pattern = policy.PackagePattern(query.ecosystem, query.package)
    if pattern.exact:
        names = [pattern.pattern]
    else:
        # A glob (`@evilscope/*`): every package the ledger knows that it covers.
        known = await services.state.downloaded_packages(query.ecosystem)
        names = sorted(name for name in known if pattern.matches(name))
    spec = versions.parse_spec(query.ecosystem, query.spec)
    start, after = 0, None
    if cursor is not None:
        start = bisect.bisect_left(names, cursor.package)
        if start < len(names) and names[start] == cursor.package:
            after = cursor.after
    events: list[DownloadEvent] = []
    following: ImpactCursor | None = None
    for index in range(start, len(names)):
        name = names[index]
        if index - start == MAX_PACKAGES_PER_PAGE:
            following = ImpactCursor(package=name, after=None)
            break
        try:
            page = await services.state.downloads_page(
                query.ecosystem,
                name,
                limit=limit - len(events),
                since=query.since,
                versions=spec.contains,
                after=after,
            )
        except InvalidPosition:
            raise BadRequest("cursor: not a cursor of this mirror", field="cursor") from None
        after = None
        events.extend(page.events)
        if page.next_after is not None:
            following = ImpactCursor(package=name, after=page.next_after)
            break
        if len(events) >= limit:
            if index + 1 < len(names):
                following = ImpactCursor(package=names[index + 1], after=None)
            break
    next_cursor = None if following is None else encode_cursor(query, following)
    whole_package = pattern.exact and cursor is None
    if whole_package:
        identities = await services.state.download_identities(
            query.ecosystem, pattern.pattern, since=query.since, versions=spec.contains
        )
    else:
        identities = shown_identities(events)
    return describe_impact(
        query,
        events,
        names,
        limit=limit,
        next_cursor=next_cursor,
        identities=identities,
        identities_cover="package" if whole_package else "page",
    )
