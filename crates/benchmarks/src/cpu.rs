//! CPU time of a process, for the "CPU per reading" and "CPU per publish" figures of every
//! benchmark bin.

use std::time::Duration;

/// CPU time (user + system, all its threads) a process has used so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).ok_or_else(|| anyhow::anyhow!("short /proc stat"))?.parse()?) };
    // utime and stime are fields 14 and 15 of proc_pid_stat(5); the first after the name is 3.
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_secs_f64((ticks(11)? + ticks(12)?) as f64 / per_second as f64))
}
