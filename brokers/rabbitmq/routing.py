"""Where a message would go, and where a dead letter came from: pure, broker-free.

`routes` previews the queues a publish would reach, from collected bindings,
following RabbitMQ's router; `replay_target` reads a dead letter's history
(`deaths.history`) for the exchange and routing key (or queue) it first died from.
"""

from __future__ import annotations

from typing import Any

from brokers.base import Message
from brokers.rabbitmq.deadletters import history


def routes(
    bindings: list[dict[str, Any]],
    queues: set[str],
    vhost: str,
    exchange: str,
    exchange_types: dict[str, str],
    routing_key: str,
    headers: dict[str, Any],
    exchange_args: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """The queues a message published to `exchange` would reach, from collected bindings.

    Follows RabbitMQ's router: the default exchange delivers to the queue named
    by the routing key; direct, fanout, topic and headers exchanges match their
    bindings; exchange-to-exchange bindings are followed once each; an
    exchange's `alternate-exchange` is used when none of its bindings matched.
    CC and BCC headers add routing keys. Unknown exchange types route nowhere.
    `exchange_args` holds each exchange's arguments (and policy, if merged).
    """
    exchange_args = exchange_args or {}
    keys = [routing_key]
    for name in ("CC", "BCC"):
        extra = headers.get(name)
        if isinstance(extra, list):
            keys += [k for k in extra if isinstance(k, str)]
    if exchange in ("", "amq.default"):
        return sorted({k for k in keys if k in queues})
    by_source: dict[str, list[dict[str, Any]]] = {}
    for b in bindings:
        if b.get("vhost", vhost) == vhost:
            by_source.setdefault(b.get("source", ""), []).append(b)
    found: set[str] = set()
    seen = {exchange}
    work = [exchange]
    while work:
        x = work.pop()
        kind = exchange_types.get(x)
        args = exchange_args.get(x) or {}
        if kind == "x-delayed-message":
            kind = args.get("x-delayed-type", "direct")
        if kind not in ("direct", "fanout", "topic", "headers"):
            continue  # no such exchange, or a plugin type whose routing we cannot know
        dests = [
            (b.get("destination_type", "queue"), b.get("destination", ""))
            for b in by_source.get(x, [])
            if _binding_matches(kind, b, keys, headers)
        ]
        if not dests and args.get("alternate-exchange"):
            dests = [("exchange", args["alternate-exchange"])]
        for dest_type, name in dests:
            if dest_type == "exchange":
                if name not in seen:
                    seen.add(name)
                    work.append(name)
            else:
                found.add(name)
    return sorted(found)


def _binding_matches(kind: str, binding: dict[str, Any], keys: list[str], headers: dict) -> bool:
    pattern = binding.get("routing_key", "")
    if kind == "fanout":
        return True
    if kind == "direct":
        return pattern in keys
    if kind == "topic":
        return any(topic_matches(pattern, k) for k in keys)
    return headers_match(binding.get("arguments") or {}, headers)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: dot-separated words, `*` exactly one, `#` zero or more."""
    # As RabbitMQ splits them: "" is no words at all, "a." is "a" and "".
    p = pattern.split(".") if pattern else []
    w = routing_key.split(".") if routing_key else []
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(p):
            result = j == len(w)
        elif p[i] == "#":
            result = match(i + 1, j) or (j < len(w) and match(i, j + 1))
        else:
            result = j < len(w) and p[i] in ("*", w[j]) and match(i + 1, j + 1)
        memo[(i, j)] = result
        return result

    return match(0, 0)


def headers_match(arguments: dict[str, Any], headers: dict[str, Any]) -> bool:
    """RabbitMQ's headers exchange: x-match all (default), any, all-with-x, any-with-x.

    Binding arguments starting with "x-" take no part unless x-match ends in
    "-with-x"; an argument without a value (None, or "undefined" as the
    management API shows a void) asks only that the header be present.
    """
    mode = arguments.get("x-match")
    mode = mode if mode in ("all", "any", "all-with-x", "any-with-x") else "all"
    with_x = mode.endswith("-with-x")
    results = [
        k in headers and (v is None or v == "undefined" or _same(v, headers[k]))
        for k, v in arguments.items()
        if k != "x-match" and (with_x or not k.startswith("x-"))
    ]
    return all(results) if mode.startswith("all") else any(results)


def _same(a: Any, b: Any) -> bool:
    # Erlang's == : 1 == 1.0, but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


# -- dead letters -------------------------------------------------------------


def replay_target(message: Message, mode: str = "auto") -> tuple[str, str] | None:
    """(exchange, routing key) a dead letter first died from; None without x-death,
    or when the part of its history that says so cannot be read.

    mode "exchange": the exchange and first routing key it was published with
    before its first death; "queue": the queue it first died in, through the
    default exchange; "auto": "exchange" unless that was the default exchange.
    """
    if mode not in ("auto", "exchange", "queue"):
        raise ValueError(f"unknown replay mode {mode!r}")
    h = history(message.headers)
    if h.first is None:
        return None
    queue = h.queue if isinstance(h.queue, str) else ""
    exchange = "" if h.exchange is None else h.exchange
    key = queue if h.routing_key is None else h.routing_key
    if mode == "exchange" or (mode == "auto" and exchange):
        # A mangled exchange or key would send the message somewhere it never was.
        if isinstance(exchange, str) and isinstance(key, str):
            return exchange, key
        return None
    return ("", queue) if queue else None
