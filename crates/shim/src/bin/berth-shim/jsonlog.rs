//! Docker json-file log writer and RFC 3339 timestamps without a date library.

use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub struct JsonLog {
    file: File,
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

impl JsonLog {
    pub fn new(file: File) -> Self {
        JsonLog { file }
    }

    /// Appends one chunk of output: one entry per line; a trailing partial line is written
    /// as its own entry without a newline. One write(2) per chunk, no buffering.
    pub fn write(&mut self, stream: &str, data: &[u8]) {
        let time = rfc3339_nano(SystemTime::now());
        let mut out = Vec::with_capacity(data.len() + 96);
        for seg in data.split_inclusive(|&b| b == b'\n') {
            let log = String::from_utf8_lossy(seg);
            let e = Entry {
                log: &log,
                stream,
                time: &time,
            };
            if serde_json::to_writer(&mut out, &e).is_ok() {
                out.push(b'\n');
            }
        }
        if let Err(e) = self.file.write_all(&out) {
            eprintln!("berth-shim: writing log: {e}");
        }
    }
}

/// Formats a time as RFC 3339 with 9 fractional digits in UTC (Docker's RFC3339NanoFixed).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let nanos = d.subsec_nanos();
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_time() {
        let t = UNIX_EPOCH + Duration::new(1_795_870_800, 123_456_789);
        assert_eq!(rfc3339_nano(t), "2026-11-28T13:00:00.123456789Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 5); // 2000-02-29
        assert_eq!(rfc3339_nano(t), "2000-02-29T00:00:00.000000005Z");
    }
}
