"""Rollout: route requests (primary, sticky canary, shadow), promote and roll back, watch canaries.

The server's part, in three calls and no HTTP:

    policy = RoutingPolicy(name, registry.aliases(name))        # on every alias reload
    route = policy.choose(routing_key(request_id, header=...))  # per request: who answers, who shadows
    Watcher(registry).run_once()                                # on a timer; one replica acts (lease)
"""

from modelyard.rollout.policy import (
    CANARY,
    MIRROR,
    PRODUCTION,
    ROUTING_HEADER,
    SHADOW,
    Route,
    RoutingPolicy,
    bucket,
    choose,
    routing_key,
)
from modelyard.rollout.promote import (
    GateOutcome,
    PromoteResult,
    RollbackResult,
    production_history,
    promote,
    rollback,
    set_weight,
    stop_canary,
)
from modelyard.rollout.watcher import CanaryHealth, Watcher, WatchRules, WatchRun

__all__ = [
    "CANARY",
    "MIRROR",
    "PRODUCTION",
    "ROUTING_HEADER",
    "SHADOW",
    "CanaryHealth",
    "GateOutcome",
    "PromoteResult",
    "RollbackResult",
    "Route",
    "RoutingPolicy",
    "WatchRules",
    "WatchRun",
    "Watcher",
    "bucket",
    "choose",
    "production_history",
    "promote",
    "rollback",
    "routing_key",
    "set_weight",
    "stop_canary",
]
