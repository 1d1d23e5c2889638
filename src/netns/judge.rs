//! The address part of a sandbox's policy as nf_tables verdicts: rules the daemon compiles
//! and the helper installs in the `judge` chain, so that a TCP connection to an address the
//! policy refuses whatever the name is reset at its SYN (the program sees ECONNREFUSED at
//! `connect`) instead of being accepted by the proxy and then cut.
//!
//! The first rule that matches decides: `pass` hands the flow on to the proxy (which still
//! judges everything), `refuse` logs it to the nflog group with the rule's code and
//! resets it. On the control socket a rule set is text, one rule per line:
//!
//! ```text
//! pass 100.89.0.0/16
//! refuse d 203.0.113.2/32 8000-8000
//! refuse n any
//! ```

use std::fmt;
use std::net::IpAddr;

use crate::profile::Cidr;

/// One verdict rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The destination prefix; `None` matches every address.
    pub net: Option<Cidr>,
    /// An inclusive destination port range; `None` matches every port.
    pub ports: Option<(u16, u16)>,
    /// `None` passes the flow to the proxy; `Some(code)` refuses it, logged with `code`.
    pub refuse: Option<String>,
}

/// Most rules one set may hold (a profile with more entries leaves the rest to the
/// proxy: see [`Rule::truncate`]); keeps the set within one control message.
pub const MAX_RULES: usize = 400;

/// A refusal's code: short, lower-case letters and digits (it becomes a log prefix).
pub fn valid_code(code: &str) -> bool {
    (1..=8).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Rule {
    pub fn pass(net: Option<Cidr>, ports: Option<(u16, u16)>) -> Self {
        Self {
            net,
            ports,
            refuse: None,
        }
    }

    pub fn refuse(code: &str, net: Option<Cidr>, ports: Option<(u16, u16)>) -> Self {
        Self {
            net,
            ports,
            refuse: Some(code.into()),
        }
    }

    /// Whether `ip:port` matches this rule.
    pub fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.is_none_or(|c| c.contains(ip))
            && self.ports.is_none_or(|(a, b)| (a..=b).contains(&port))
    }

    /// Cuts `rules` to at most [`MAX_RULES`], ending in a rule that passes everything to
    /// the proxy: a refusal is only ever dropped, never widened, so what the rules refuse
    /// stays exactly what the proxy would refuse.
    pub fn truncate(rules: &mut Vec<Rule>) {
        if rules.len() > MAX_RULES {
            rules.truncate(MAX_RULES - 1);
            rules.push(Rule::pass(None, None));
        }
    }

    /// The set as control-socket text.
    pub fn encode(rules: &[Rule]) -> String {
        rules.iter().map(|r| format!("{r}\n")).collect()
    }

    /// Parses a set strictly; `None` for anything that is not exactly a rule.
    pub fn decode(text: &str) -> Option<Vec<Rule>> {
        let rules: Option<Vec<Rule>> = text.lines().map(|l| l.parse().ok()).collect();
        rules.filter(|r| r.len() <= MAX_RULES)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.refuse {
            None => f.write_str("pass")?,
            Some(code) => write!(f, "refuse {code}")?,
        }
        match self.net {
            None => f.write_str(" any")?,
            Some(c) => write!(f, " {}/{}", c.addr, c.len)?,
        }
        if let Some((a, b)) = self.ports {
            write!(f, " {a}-{b}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Rule {
    type Err = ();

    fn from_str(line: &str) -> Result<Self, ()> {
        let mut words = line.split(' ');
        let refuse = match words.next() {
            Some("pass") => None,
            Some("refuse") => Some(words.next().filter(|c| valid_code(c)).ok_or(())?.into()),
            _ => return Err(()),
        };
        let net = match words.next().ok_or(())? {
            "any" => None,
            cidr => {
                let (ip, len) = cidr.split_once('/').ok_or(())?;
                let ip: IpAddr = ip.parse().map_err(|_| ())?;
                let len: u8 = len.parse().map_err(|_| ())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if len > max {
                    return Err(());
                }
                Some(Cidr { addr: ip, len })
            }
        };
        let ports = match words.next() {
            None => None,
            Some(p) => {
                let (a, b) = p.split_once('-').ok_or(())?;
                let (a, b): (u16, u16) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
                if a > b {
                    return Err(());
                }
                Some((a, b))
            }
        };
        if words.next().is_some() {
            return Err(());
        }
        Ok(Self { net, ports, refuse })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sets_survive_the_control_socket_and_nothing_else_parses() {
        let rules = vec![
            Rule::pass(Some(Cidr::v4([100, 89, 0, 0], 16)), None),
            Rule::refuse(
                "d",
                Some(Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32)),
                Some((80, 443)),
            ),
            Rule::refuse("s12", None, None),
        ];
        let text = Rule::encode(&rules);
        assert_eq!(Rule::decode(&text), Some(rules));
        for bad in [
            "allow any",
            "pass",
            "refuse any",
            "refuse D any",
            "refuse toolongcode any",
            "pass 10.0.0.0/33",
            "pass ::/129",
            "pass 10.0.0.0",
            "pass any 80",
            "pass any 90-80",
            "pass any 1-2 x",
            "pass  any",
        ] {
            assert_eq!(Rule::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_truncated_set_ends_by_passing_everything_on() {
        let mut rules = vec![Rule::refuse("n", None, None); MAX_RULES + 5];
        Rule::truncate(&mut rules);
        assert_eq!(rules.len(), MAX_RULES);
        assert_eq!(rules.last(), Some(&Rule::pass(None, None)));
        assert!(Rule::decode(&Rule::encode(&rules)).is_some());
    }
}
