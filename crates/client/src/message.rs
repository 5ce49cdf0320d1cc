//! Report messages: read from a file or a stream, keeping the end of long logs, where the
//! error is.

use std::io::Read;
use std::path::Path;

use buildstate_domain::limits::MAX_MESSAGE_CHARS;

/// The last `max_chars` characters of `text`.
pub fn keep_tail(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_owned();
    }
    text.chars().skip(count - max_chars).collect()
}

/// Reads a report message from `reader`, keeping its last [`MAX_MESSAGE_CHARS`] characters;
/// bytes that are not UTF-8 are replaced.
pub fn read_message(reader: &mut dyn Read) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(keep_tail(
        &String::from_utf8_lossy(&bytes),
        MAX_MESSAGE_CHARS,
    ))
}

/// Reads a report message from the file `path`, or from `stdin` when `path` is `-`.
///
/// Fails with a sentence naming the file.
pub fn read_message_file(path: &Path, stdin: &mut dyn Read) -> Result<String, String> {
    let read = if path.as_os_str() == "-" {
        read_message(stdin)
    } else {
        std::fs::File::open(path).and_then(|mut file| read_message(&mut file))
    };
    read.map_err(|error| format!("cannot read the message file `{}`: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_keeps_its_end() {
        assert_eq!(keep_tail("abcdef", 3), "def");
        assert_eq!(keep_tail("abc", 3), "abc");
        assert_eq!(keep_tail("ééé", 2), "éé");
    }

    #[test]
    fn a_message_file_is_read_from_the_injected_stdin_for_a_dash() {
        let mut stdin: &[u8] = b"from stdin";
        assert_eq!(
            read_message_file(Path::new("-"), &mut stdin).as_deref(),
            Ok("from stdin")
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10) + "END";
        let kept = read_message(&mut long.as_bytes()).expect("read");
        assert_eq!(kept.chars().count(), MAX_MESSAGE_CHARS);
        assert!(kept.ends_with("END"));
    }

    #[test]
    fn a_missing_message_file_is_named() {
        let error = read_message_file(Path::new("/nonexistent/log.txt"), &mut std::io::empty())
            .expect_err("missing");
        assert!(error.starts_with("cannot read the message file `/nonexistent/log.txt`"));
    }
}
