//! The one reader of `/proc/PID/stat`, for the daemon and the tests: its layout (a command
//! name in parentheses that may itself hold spaces and parentheses, then fields counted
//! from the state) is easy to get subtly wrong in each place that needs a field.

/// The fields of `/proc/PID/stat` that sandboxd uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (`comm`), without its parentheses.
    pub comm: String,
    /// The state letter: `R`, `S`, `Z` (exited, not yet reaped) …
    pub state: char,
    pub ppid: u32,
    /// Start time in clock ticks after boot: with the pid, it names one process.
    pub start_time: u64,
}

impl Stat {
    /// Reads `pid`'s stat; `None` when there is no such process (or it cannot be read).
    pub fn of(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (head, rest) = text.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Self {
            comm,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            // Field 22 of the whole line; the 20th after the state's field 3.
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Exited (a zombie) rather than alive.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line =
            "4242 (a (b) c) Z 1 4242 4242 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.comm, "a (b) c");
        assert!(stat.is_zombie());
        assert_eq!((stat.ppid, stat.start_time), (1, 987654));
        assert_eq!(Stat::parse("4242 (x) S"), None);
        let me = Stat::of(std::process::id()).unwrap();
        assert!(!me.is_zombie());
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
    }
}
