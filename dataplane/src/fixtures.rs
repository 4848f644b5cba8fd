//! Small builders for programs and packets, shared by the classifier tests.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::program::{
    Action, FlowKey, Hit, HitAction, Match, Policy, PolicyId, Program, Rule, Tier, TierDefault,
    TierId, proto,
};

pub(crate) fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

pub(crate) fn key(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> FlowKey {
    let (s, d): (IpAddr, IpAddr) = (src.parse().expect("ip"), dst.parse().expect("ip"));
    FlowKey::new(s, d, proto, sport, dport).expect("same family")
}

pub(crate) fn tcp(src: &str, dst: &str, dport: u16) -> FlowKey {
    key(src, dst, proto::TCP, 40000, dport)
}

pub(crate) fn rule(index: u32, action: Action, matches: Match) -> Rule {
    Rule {
        index,
        action,
        matches,
    }
}

pub(crate) fn any(index: u32, action: Action) -> Rule {
    rule(index, action, Match::default())
}

pub(crate) fn policy(id: u32, staged: bool, rules: Vec<Rule>) -> Policy {
    Policy {
        id: PolicyId(id),
        staged,
        rules,
    }
}

pub(crate) fn tier(id: u32, default_action: TierDefault, policies: Vec<Policy>) -> Tier {
    Tier {
        id: TierId(id),
        default_action,
        policies,
    }
}

pub(crate) fn program(tiers: Vec<Tier>, profiles: Vec<Policy>) -> Program {
    Program { tiers, profiles }
}

pub(crate) fn hit(policy: u32, action: HitAction, rule_index: i32) -> Hit {
    Hit {
        policy: PolicyId(policy),
        action,
        rule_index,
    }
}

/// The "no profile matched" hit: rule index 0 in the enforced view, -1 in pending.
pub(crate) fn npm(rule_index: i32) -> Hit {
    Hit {
        policy: PolicyId::NO_PROFILE_MATCH,
        action: HitAction::Deny,
        rule_index,
    }
}

/// A profile that allows everything (like Calico's `kns.<ns>`).
pub(crate) fn allow_profile(id: u32) -> Policy {
    policy(id, false, vec![any(0, Action::Allow)])
}
