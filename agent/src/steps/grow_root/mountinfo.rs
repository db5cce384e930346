//! The mount table as the kernel gives it in `/proc/self/mountinfo`.

/// The fields of one mountinfo line that say what is mounted where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    /// The device number's major part; 0 for file systems without a block device of their own
    /// (overlay, tmpfs, btrfs subvolumes).
    pub(super) major: u32,
    pub(super) minor: u32,
    pub(super) mount_point: String,
    pub(super) fs_type: String,
    /// What was mounted, as `mount` was told: `/dev/nvme0n1p1`, `/dev/root`, `overlay`.
    pub(super) source: String,
}

/// A line that does not have mountinfo's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub(super) struct ParseError {
    line: usize,
    problem: &'static str,
}

/// Every mount of a mountinfo text, in the kernel's order.
///
/// A line is `ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE
/// SUPER-OPTIONS`; the optional fields vary in number, so the fields after ` - ` are found by
/// the separator, not by position.
pub(super) fn parse(text: &str) -> Result<Vec<Mount>, ParseError> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let error = |problem| ParseError {
            line: index + 1,
            problem,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let separator = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| error("no ` - ` separator"))?;
        if separator < 6 || fields.len() < separator + 3 {
            return Err(error("too few fields"));
        }
        let (major, minor) = fields[2]
            .split_once(':')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
            .ok_or_else(|| error("the device number is not MAJOR:MINOR"))?;
        mounts.push(Mount {
            major,
            minor,
            mount_point: unescape(fields[4]),
            fs_type: unescape(fields[separator + 1]),
            source: unescape(fields[separator + 2]),
        });
    }
    Ok(mounts)
}

/// The file system visible at `mount_point`: the last mount there, as later mounts cover
/// earlier ones.
pub(super) fn mounted_at<'a>(mounts: &'a [Mount], mount_point: &str) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mount_point == mount_point)
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|value| u8::try_from(value).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_do_not_move_the_type_and_source() {
        let text = "22 1 259:1 / / rw,noatime shared:1 master:4 - xfs /dev/nvme0n1p1 rw,attr2\n\
                    23 22 0:21 / /sys rw,nosuid - sysfs sysfs rw\n";
        let mounts = parse(text).expect("parses");
        assert_eq!(
            mounts[0],
            Mount {
                major: 259,
                minor: 1,
                mount_point: "/".into(),
                fs_type: "xfs".into(),
                source: "/dev/nvme0n1p1".into(),
            }
        );
        assert_eq!(mounts[1].mount_point, "/sys");
        assert_eq!(mounts[1].major, 0);
    }

    #[test]
    fn the_last_mount_on_a_point_is_the_visible_one() {
        let text =
            "1 0 8:1 / /data rw - ext4 /dev/sda1 rw\n2 1 8:2 / /data rw - xfs /dev/sda2 rw\n";
        let mounts = parse(text).expect("parses");
        assert_eq!(
            mounted_at(&mounts, "/data").map(|m| m.source.as_str()),
            Some("/dev/sda2")
        );
        assert_eq!(mounted_at(&mounts, "/"), None);
    }

    #[test]
    fn escaped_characters_are_restored() {
        let text = "5 1 7:0 / /mnt/my\\040disk\\134x rw - ext4 /dev/loop0 rw\n";
        let mounts = parse(text).expect("parses");
        assert_eq!(mounts[0].mount_point, "/mnt/my disk\\x");
        assert_eq!(unescape("a\\04"), "a\\04", "a short escape stays as it is");
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let err = parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /x rw ext4 /dev/sda2\n")
            .expect_err("no separator");
        assert_eq!(err.to_string(), "line 2: no ` - ` separator");
        let err = parse("1 0 eight / / rw - ext4 /dev/sda1 rw\n").expect_err("bad number");
        assert_eq!(
            err.to_string(),
            "line 1: the device number is not MAJOR:MINOR"
        );
    }
}
