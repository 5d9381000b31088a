//! How `ipvsadm -R` splits standard input into command lines (its `config_stream_read`).
//!
//! Words are separated by spaces, tabs and carriage returns; a newline ends a command. Every
//! word that is exactly `ipvsadm` is dropped, wherever it stands, so saved scripts with a
//! leading `ipvsadm` restore. There are no comments: ipvsadm's comment check looks at the
//! separator rather than the word, so a `#` line is a command that fails (ipvsadm-restore,
//! the shell wrapper, strips `^#` lines before calling `ipvsadm -R`).

fn is_separator(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// One call of ipvsadm's `config_stream_read`: the next line's words, or None at the end
/// of input (also when the input ends in whitespace after the last word, which makes
/// ipvsadm drop that line).
fn read_line(bytes: &[u8], pos: &mut usize) -> Option<Vec<String>> {
    let mut words = Vec::new();
    loop {
        if *pos == bytes.len() {
            return (!words.is_empty()).then_some(words);
        }
        if is_separator(bytes[*pos]) {
            loop {
                let c = *bytes.get(*pos)?;
                *pos += 1;
                match c {
                    b'\n' => return Some(words),
                    b' ' | b'\t' | b'\r' => {}
                    _ => {
                        *pos -= 1;
                        break;
                    }
                }
            }
            continue;
        }
        let start = *pos;
        while *pos < bytes.len() && !is_separator(bytes[*pos]) {
            *pos += 1;
        }
        let word = String::from_utf8_lossy(&bytes[start..*pos]).into_owned();
        if word != "ipvsadm" {
            words.push(word);
        }
        // the single separator read together with the word ends the line if it is a newline
        match bytes.get(*pos) {
            Some(b'\n') => {
                *pos += 1;
                return Some(words);
            }
            Some(_) => *pos += 1,
            None => return (!words.is_empty()).then_some(words),
        }
    }
}

/// The command lines of `input` (each a list of words, program name excluded), as ipvsadm
/// reads them. Blank lines are kept as empty lists (ipvsadm skips them).
pub fn restore_lines(input: &str) -> Vec<Vec<String>> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(|| read_line(bytes, &mut pos)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &[&str]) -> Vec<String> {
        line.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn splits_lines_and_drops_ipvsadm_words() {
        let input = "-A -t 10.0.0.1:80 -s rr\n\nipvsadm -a -t 10.0.0.1:80 -r 10.0.0.3 -m\n   \t-A -u 10.0.0.1:53 ipvsadm -s wrr\n";
        assert_eq!(
            restore_lines(input),
            vec![
                words(&["-A", "-t", "10.0.0.1:80", "-s", "rr"]),
                vec![],
                words(&["-a", "-t", "10.0.0.1:80", "-r", "10.0.0.3", "-m"]),
                words(&["-A", "-u", "10.0.0.1:53", "-s", "wrr"]),
            ]
        );
    }

    #[test]
    fn last_line_without_newline_counts_and_comments_are_words() {
        assert_eq!(restore_lines("-C"), vec![words(&["-C"])]);
        assert_eq!(restore_lines("-C "), vec![words(&["-C"])]);
        assert_eq!(restore_lines("# saved\n"), vec![words(&["#", "saved"])]);
        assert_eq!(restore_lines("-C\r\n"), vec![words(&["-C"])]);
    }

    #[test]
    fn trailing_whitespace_at_end_of_input_loses_the_line() {
        // ipvsadm's fscanf loop hits end of input while skipping blanks and drops the line
        assert_eq!(restore_lines("-Z\n-C \t"), vec![words(&["-Z"])]);
        assert_eq!(restore_lines("-Z\n  "), vec![words(&["-Z"])]);
    }
}
