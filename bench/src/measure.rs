//! Measuring the servers under load (Linux `/proc`) and the load generator itself.

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server process");
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (the unit of [`cpu_ticks`]).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`); 0 if the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// This process's user + system CPU, in microseconds.
pub fn own_cpu_us() -> u64 {
    // SAFETY: rusage is plain data (all-zero is valid) and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Split a `len|msg` body (TrackMessageSize; lengths in UTF-16 units, and the benches send
/// ASCII) into messages; a partial message at the end is left out.
pub fn unframe(mut body: &str, mut each: impl FnMut(&str)) {
    while let Some(bar) = body.find('|') {
        let Ok(len) = body[..bar].parse::<usize>() else {
            return;
        };
        let rest = &body[bar + 1..];
        if rest.len() < len {
            return;
        }
        each(&rest[..len]);
        body = &rest[len..];
    }
}

#[cfg(test)]
mod tests {
    use super::unframe;

    #[test]
    fn unframe_splits_whole_messages_and_leaves_a_partial_one() {
        let mut got = Vec::new();
        unframe("3|abc5|hello9|partial", |m| got.push(m.to_string()));
        assert_eq!(got, ["abc", "hello"]);
    }
}
