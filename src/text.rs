//! Text from peers made safe to show: the one escaping of control, format
//! and bidi characters for terminals and logs, and the test that client ids
//! share with it. Free of I/O.
//!
//! A peer's text that reaches a terminal raw can set its title, clear it,
//! or write the clipboard (OSC 52); in a log line it can forge lines or,
//! with bidi overrides (U+202E), show text other than what is stored.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a log as is: C0 and C1
/// controls (tab and line feed included: callers that keep lines use
/// [`escape_controls`]), DEL, Unicode format characters (category Cf:
/// bidi embeddings, overrides and isolates, zero-width characters, the
/// BOM, tags) and the line and paragraph separators.
pub fn is_hidden_or_control(c: char) -> bool {
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Unicode general category Cf (Unicode 15.1).
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

/// `text` with every character of [`is_hidden_or_control`] but tab and
/// line feed made visible: C0 controls in caret notation (`^[`, `^M`),
/// DEL as `^?`, the others as `\u{202e}`. Borrowed when nothing changes.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let bad = |c: char| is_hidden_or_control(c) && c != '\n' && c != '\t';
    if !text.chars().any(bad) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 && bad(c) => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if bad(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_is_defused() {
        assert_eq!(escape_controls("plain\ttext\nok"), "plain\ttext\nok");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("\x1b[2Jboom\r\x07\x7f"), "^[[2Jboom^M^G^?");
        assert_eq!(escape_controls("\x1b]0;PWNED\x07"), "^[]0;PWNED^G");
        assert_eq!(escape_controls("\u{9b}x"), "\\u{9b}x");
        assert_eq!(escape_controls("user\u{202e}gpj.exe"), "user\\u{202e}gpj.exe");
        assert_eq!(
            escape_controls("a\u{2066}b\u{200b}c\u{feff}"),
            "a\\u{2066}b\\u{200b}c\\u{feff}"
        );
        assert_eq!(escape_controls("x\u{2028}y"), "x\\u{2028}y");
        assert_eq!(escape_controls("café ✓ 日本"), "café ✓ 日本");
    }

    #[test]
    fn hidden_characters() {
        for c in
            ['\0', '\n', '\t', '\u{1b}', '\u{7f}', '\u{85}', '\u{200e}', '\u{202a}', '\u{2069}']
        {
            assert!(is_hidden_or_control(c), "{c:?}");
        }
        for c in ['a', ' ', 'é', '\u{a0}', '日', '✓', '\u{1f600}'] {
            assert!(!is_hidden_or_control(c), "{c:?}");
        }
    }
}
