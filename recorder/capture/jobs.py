"""Which connections a config needs: one per role, public subscriptions spread over as many
connections as the exchange's topic limit per connection requires.

Roles: ``public`` (the first public connection), ``public-2``, ``public-3``... and
``private``. A role names a collector process and its files (``<config>-<role>``).
"""

from __future__ import annotations

from typing import Any

from recorder.exchanges.base import Subscription, split_subscriptions


def _public_groups(config: Any) -> list[list[Subscription]]:
    subs = [Subscription(s.channel, s.symbols, s.depth, s.interval)
            for s in config.public_subscriptions]
    return split_subscriptions(subs, config.spec.max_topics_per_connection)


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
