//! `general_settings.allowed_egress`: the hosts and networks the data plane may connect to
//! (providers today). Set, it is a moat: every other destination is refused before a
//! connection is made. Entries:
//! - `api.openai.com`: that host name (any case);
//! - `*.amazonaws.com`: any name under it (not the name itself);
//! - `10.0.0.0/8`, `fd00::/8`: any address in the network, whatever name resolved to it;
//! - `192.0.2.7`, `::1`: that address.

use std::net::IpAddr;

use crate::Deployment;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Host(String),
    /// `.suffix`: names ending with it.
    Under(String),
    Net {
        addr: IpAddr,
        prefix: u8,
    },
}

/// The parsed allow-list. An empty list allows nothing; no list at all (`None` where it is
/// held) allows everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedEgress {
    entries: Vec<String>,
    rules: Vec<Rule>,
}

impl AllowedEgress {
    /// Parses the entries; the error names the first bad one.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|e| {
                rule(e).ok_or_else(|| {
                    format!("`{e}` is not a host name, `*.domain`, IP address or CIDR")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            entries: entries.to_vec(),
            rules,
        })
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// What the host name alone decides: an IP literal or a listed name is decided here;
    /// another name goes to its address when the list has networks (`ByAddress`), and is
    /// refused outright when it has none, so a refused name is not even looked up.
    pub fn by_name(&self, host: &str) -> Verdict {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return if self.allows_addr(ip) {
                Verdict::Allowed
            } else {
                Verdict::Refused
            };
        }
        let named = self.rules.iter().any(|r| match r {
            Rule::Host(h) => *h == host,
            Rule::Under(suffix) => host.ends_with(suffix.as_str()),
            Rule::Net { .. } => false,
        });
        if named {
            Verdict::Allowed
        } else if self.rules.iter().any(|r| matches!(r, Rule::Net { .. })) {
            Verdict::ByAddress
        } else {
            Verdict::Refused
        }
    }

    /// Whether `ip` is in one of the listed networks or addresses.
    pub fn allows_addr(&self, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| match r {
            Rule::Net { addr, prefix } => in_net(ip, *addr, *prefix),
            _ => false,
        })
    }

    /// One warning per deployment whose `api_base` host this list refuses by its name
    /// alone: every request to it would be refused, which is a mistake in the config.
    pub fn unreachable(&self, deployments: &[Deployment]) -> Vec<String> {
        deployments
            .iter()
            .filter_map(|d| {
                let uri = d.api_base.parse::<http::Uri>().ok()?;
                let host = uri.host()?;
                (self.by_name(host) == Verdict::Refused).then(|| {
                    format!(
                        "deployment {} of `{}` is at {host}, which general_settings.allowed_egress refuses: every request to it will be refused",
                        d.id.0, d.model_name
                    )
                })
            })
            .collect()
    }

    /// Whether `host` (as written in the URL), which resolved to `ip`, may be reached.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        match self.by_name(host) {
            Verdict::Allowed => true,
            Verdict::Refused => false,
            Verdict::ByAddress => self.allows_addr(ip),
        }
    }
}

/// What [`AllowedEgress::by_name`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused,
    /// Up to the address the name resolves to.
    ByAddress,
}

fn rule(entry: &str) -> Option<Rule> {
    let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    if e.is_empty() {
        return None;
    }
    if let Some((addr, prefix)) = e.split_once('/') {
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(Rule::Net { addr, prefix });
    }
    if let Ok(addr) = e
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Some(Rule::Net { addr, prefix });
    }
    let (under, name) = match e.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, e.as_str()),
    };
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return None;
    }
    Some(if under {
        Rule::Under(format!(".{name}"))
    } else {
        Rule::Host(name.to_owned())
    })
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    // An IPv4-mapped IPv6 address is the IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> AllowedEgress {
        AllowedEgress::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_wildcards_networks_and_addresses() {
        let a = allow(&[
            "API.openai.com",
            "*.amazonaws.com",
            "10.0.0.0/8",
            "192.0.2.7",
            "fd00::/8",
        ]);
        let elsewhere: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(a.allows("api.openai.com", elsewhere));
        assert!(a.allows("Api.OpenAI.com.", elsewhere));
        assert!(!a.allows("openai.com", elsewhere));
        assert!(!a.allows("api.openai.com.evil.example", elsewhere));
        assert!(a.allows("bedrock-runtime.us-east-1.amazonaws.com", elsewhere));
        assert!(!a.allows("amazonaws.com", elsewhere));
        assert!(!a.allows("notamazonaws.com", elsewhere));
        // Networks match the resolved address, whatever the name.
        assert!(a.allows("vllm.internal", "10.1.2.3".parse().unwrap()));
        assert!(a.allows("vllm.internal", "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!a.allows("vllm.internal", "11.1.2.3".parse().unwrap()));
        assert!(a.allows("192.0.2.7", "192.0.2.7".parse().unwrap()));
        assert!(!a.allows("192.0.2.8", "192.0.2.8".parse().unwrap()));
        assert!(a.allows("gpu", "fd12::1".parse().unwrap()));
        assert!(!a.allows("gpu", "fe80::1".parse().unwrap()));
        assert!(allow(&["0.0.0.0/0"]).allows("anything", elsewhere));
        // Without networks a name outside the list is refused before any lookup.
        let names = allow(&["*.internal.example"]);
        assert_eq!(names.by_name("api.openai.com"), Verdict::Refused);
        assert_eq!(names.by_name("llm.internal.example"), Verdict::Allowed);
        assert_eq!(names.by_name("127.0.0.1"), Verdict::Refused);
        assert_eq!(a.by_name("vllm.internal"), Verdict::ByAddress);
        assert_eq!(a.by_name("[fd00::5]"), Verdict::Allowed);
        assert!(
            !allow(&[]).allows("api.openai.com", elsewhere),
            "an empty list allows nothing"
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "bad host",
            "*.",
            "a..b",
            "http://x.com",
            "x.com:443",
        ] {
            let e = AllowedEgress::parse(&[bad.to_string()]).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }
}
