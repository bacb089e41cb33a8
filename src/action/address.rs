//! Where HTTP actions may connect: a list of CIDR rules, the most specific
//! matching prefix deciding (deny on a tie), applied to the address really
//! connected to, through the client's DNS resolver hook and to literal IPs
//! on every redirect hop. A scheduler that calls URLs on a timer is a
//! pivot point into the network it runs in; this keeps cloud metadata
//! endpoints and other never-meant targets out of reach.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What a run that met a refused address reports: nothing about which
/// address, or what the name resolved to.
pub const NOT_ALLOWED: &str = "destination not allowed";

/// Denied unless a rule as specific or more allows them: link-local
/// (cloud metadata endpoints 169.254.169.254 and fd00:ec2::254 live
/// there or next to it), unspecified, "this network", multicast,
/// broadcast and the reserved 240/4. Loopback and private ranges are
/// allowed: calling internal services is what a scheduler is for.
const ALWAYS_DENIED: &[&str] = &[
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "0.0.0.0/8",
    "::/128",
    "224.0.0.0/4",
    "ff00::/8",
    "240.0.0.0/4",
    "255.255.255.255/32",
];

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
}

/// Why a rule was refused.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {value:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8")]
pub struct RuleError {
    /// The flag.
    pub setting: &'static str,
    /// The value given.
    pub value: String,
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    rules: Arc<[(IpNet, Verdict)]>,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy::new(&[], &[]).unwrap_or_else(|_| AddressPolicy {
            rules: Arc::from([]),
        })
    }
}

impl AddressPolicy {
    /// The built-in denials plus `allow` and `deny` (CIDRs; a bare address
    /// is its own /32 or /128).
    pub fn new(allow: &[String], deny: &[String]) -> Result<AddressPolicy, RuleError> {
        let mut rules = Vec::new();
        for cidr in ALWAYS_DENIED {
            rules.push((parse("built-in", cidr)?, Verdict::Deny));
        }
        for cidr in allow {
            rules.push((parse("--http-allow", cidr)?, Verdict::Allow));
        }
        for cidr in deny {
            rules.push((parse("--http-deny", cidr)?, Verdict::Deny));
        }
        Ok(AddressPolicy {
            rules: rules.into(),
        })
    }

    /// Whether `ip` may be connected to. An IPv4-mapped IPv6 address
    /// (`::ffff:127.0.0.1`) is judged as the IPv4 address it is.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        // An IPv4 address carried inside IPv6 (NAT64, IPv4-compatible,
        // 6to4) reaches that IPv4 host: both must be allowed.
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
            && !self.allows_one(IpAddr::V4(v4))
        {
            return false;
        }
        self.allows_one(ip)
    }

    fn allows_one(&self, ip: IpAddr) -> bool {
        let mut best: Option<(u8, Verdict)> = None;
        for (net, verdict) in self.rules.iter() {
            if !net.contains(&ip) {
                continue;
            }
            let len = net.prefix_len();
            best = match best {
                Some((l, _)) if l > len => best,
                Some((l, Verdict::Deny)) if l == len => best,
                _ => Some((len, *verdict)),
            };
        }
        best.is_none_or(|(_, v)| v == Verdict::Allow)
    }

    /// The resolver hook for the shared HTTP client: resolves with the
    /// system resolver, keeps the allowed addresses, and fails the lookup
    /// when none is left.
    pub fn resolver(&self) -> Arc<dyn Resolve> {
        Arc::new(GuardedResolver {
            policy: self.clone(),
        })
    }
}

/// The IPv4 address inside a NAT64 (`64:ff9b::/96`), IPv4-compatible
/// (`::a.b.c.d`, not `::` or `::1`) or 6to4 (`2002::/16`) address.
fn embedded_v4(ip: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = ip.segments();
    let last = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(last(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => {
            Some(last(hi, lo))
        }
        [0x2002, hi, lo, ..] => Some(last(hi, lo)),
        _ => None,
    }
}

fn parse(setting: &'static str, cidr: &str) -> Result<IpNet, RuleError> {
    let cidr = cidr.trim();
    cidr.parse::<IpNet>()
        .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| RuleError {
            setting,
            value: cidr.to_string(),
        })
}

/// A refused lookup; its text is all a run's error shows.
#[derive(Debug, thiserror::Error)]
#[error("{NOT_ALLOWED}")]
pub struct NotAllowed;

struct GuardedResolver {
    policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The port is replaced by the connector with the URL's own.
            let host = name.as_str();
            let found = match tokio::net::lookup_host((host, 0)).await {
                Ok(found) => found,
                // `localhost.` is `localhost` written absolute; the system
                // resolver does not always know that form.
                Err(_) if host.len() > 1 && host.ends_with('.') => {
                    tokio::net::lookup_host((&host[..host.len() - 1], 0)).await?
                }
                Err(e) => return Err(e.into()),
            };
            let allowed: Vec<SocketAddr> = found.filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                tracing::debug!(host = %name.as_str(), "every address of the host is refused");
                return Err(Box::new(NotAllowed) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn policy(allow: &[&str], deny: &[&str]) -> AddressPolicy {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AddressPolicy::new(&owned(allow), &owned(deny)).expect("rules")
    }

    #[test]
    fn by_default_internal_is_allowed_and_link_local_and_metadata_are_not() {
        let p = AddressPolicy::default();
        for ok in ["127.0.0.1", "10.1.2.3", "192.168.0.1", "::1", "8.8.8.8", "fc00::1"] {
            assert!(p.allows(ip(ok)), "{ok}");
        }
        for denied in [
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "240.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!p.allows(ip(denied)), "{denied}");
        }
    }

    #[test]
    fn the_most_specific_rule_wins_and_a_tie_denies() {
        let p = policy(&["169.254.169.254/32"], &["10.0.0.0/8"]);
        assert!(p.allows(ip("169.254.169.254")), "explicitly allowed");
        assert!(!p.allows(ip("169.254.1.1")));
        assert!(!p.allows(ip("10.0.0.1")));
        let p = policy(&["10.1.0.0/16"], &["10.0.0.0/8"]);
        assert!(p.allows(ip("10.1.2.3")));
        assert!(!p.allows(ip("10.2.0.1")));
        let p = policy(&["10.0.0.0/8"], &["10.0.0.0/8"]);
        assert!(!p.allows(ip("10.0.0.1")), "deny on a tie");
        let p = policy(&[], &["127.0.0.0/8", "::1"]);
        assert!(!p.allows(ip("127.0.0.1")));
        assert!(!p.allows(ip("::ffff:127.0.0.1")), "IPv4-mapped is judged as IPv4");
        assert!(!p.allows(ip("::1")));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_flag() {
        let error = AddressPolicy::new(&["10.0.0.0/33".into()], &[]).expect_err("bad");
        assert!(error.to_string().starts_with("--http-allow: \"10.0.0.0/33\""));
        let error = AddressPolicy::new(&[], &["internal".into()]).expect_err("bad");
        assert!(error.to_string().starts_with("--http-deny:"));
    }
}
