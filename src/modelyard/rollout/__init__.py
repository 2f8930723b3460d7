"""Rollout: route requests (primary, sticky canary, shadow), promote and roll back, watch canaries.

The server's part, in three calls and no HTTP:

    policy = RoutingPolicy(name, registry.aliases(name))        # on every alias reload
    route = policy.choose(routing_key(request_id, header=...))  # per request: who answers, who shadows
    CanaryRuleSet(registry, rules)  # the watcher's rule set, run by monitor.scheduler.Scheduler (a lease)
    RetrainRuleSet(registry, gates)  # scheduled and alert-requested retrains, on the same scheduler
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
from modelyard.rollout.retrain import (
    RetrainConfig,
    RetrainResult,
    RetrainRuleSet,
    RetrainRun,
    Trigger,
    request_retrain,
    retrain,
    retrain_config,
    set_retrain_config,
)
from modelyard.rollout.watcher import (
    CanaryHealth,
    CanaryRuleSet,
    WatchRules,
    WatchRun,
    canary_rules,
    latency_verdict,
    set_watch_rules,
    watch_rules,
)

__all__ = [
    "CANARY",
    "MIRROR",
    "PRODUCTION",
    "ROUTING_HEADER",
    "SHADOW",
    "CanaryHealth",
    "CanaryRuleSet",
    "GateOutcome",
    "PromoteResult",
    "RetrainConfig",
    "RetrainResult",
    "RetrainRuleSet",
    "RetrainRun",
    "RollbackResult",
    "Route",
    "RoutingPolicy",
    "Trigger",
    "WatchRules",
    "WatchRun",
    "bucket",
    "canary_rules",
    "choose",
    "latency_verdict",
    "production_history",
    "promote",
    "request_retrain",
    "retrain",
    "retrain_config",
    "rollback",
    "routing_key",
    "set_retrain_config",
    "set_watch_rules",
    "set_weight",
    "stop_canary",
    "watch_rules",
]
