"""Which connections a config needs: one per role, public subscriptions spread over as many
connections as the exchange's topic limit per connection requires.

Roles: ``public`` (the first public connection), ``public-2``, ``public-3``... and
``private``. A role names a connection, its state files and its data files
(``<config>-<role>``). The public roles of a config share collector processes, up to
``[connection] connections_per_process`` (10) each, one thread per role; the private role is
always a process of its own (its credentials, and a revoked key stops only it).
"""

from __future__ import annotations

from typing import Any

from recorder.exchanges.base import Subscription, split_subscriptions


def _public_groups(config: Any) -> list[list[Subscription]]:
    subs = [Subscription(s.channel, s.symbols, s.depth, s.interval)
            for s in config.public_subscriptions]
    limit = config.spec.max_topics_per_connection
    mine = getattr(config, "topics_per_connection", None)
    if mine:
        limit = min(limit, mine) if limit else mine
    return split_subscriptions(subs, limit)


def roles(config: Any) -> list[str]:
    """The roles (one collector process each) that record ``config``."""
    out = [("public" if i == 0 else f"public-{i + 1}")
           for i in range(len(_public_groups(config)))]
    if config.private_subscriptions:
        out.append("private")
    return out


def is_public(role: str) -> bool:
    return role == "public" or role.startswith("public-")


def subscriptions(config: Any, role: str) -> list[Subscription]:
    """The subscriptions of one role."""
    if role == "private":
        return [Subscription(s.channel, s.symbols, s.depth, s.interval)
                for s in config.private_subscriptions]
    index = 0 if role == "public" else int(role.split("-", 1)[1]) - 1
    groups = _public_groups(config)
    if not 0 <= index < len(groups):
        raise ValueError(f"role {role!r}: the config needs {len(groups)} public connection(s)")
    return groups[index]


def jobs(configs: list[Any]) -> list[tuple[Any, str]]:
    return [(cfg, role) for cfg in configs for role in roles(cfg)]


def processes(jobs: list[tuple[Any, str]]) -> list[tuple[Any, list[str]]]:
    """The collector processes that record ``jobs``: consecutive public roles of one config
    grouped up to its ``connections_per_process``; every other role alone."""
    out: list[tuple[Any, list[str]]] = []
    for cfg, role in jobs:
        per = int(getattr(cfg, "connections_per_process", 1) or 1)
        if (out and is_public(role) and out[-1][0] is cfg and is_public(out[-1][1][-1])
                and len(out[-1][1]) < per):
            out[-1][1].append(role)
        else:
            out.append((cfg, [role]))
    return out
