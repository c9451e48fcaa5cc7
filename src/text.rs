//! What text a person-facing field (a name, a description) may hold: nothing that renders as
//! something other than what it is.
//!
//! Control characters break logs and terminals; format characters (Unicode category `Cf`: zero-width
//! spaces and joiners, bidirectional overrides and isolates, the byte-order mark, tags) make two
//! names that look alike differ, or make one read backwards; line and paragraph separators split a
//! line where nobody sees it.

/// Whether `c` is a control, format, line-separator or paragraph-separator character.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// Whether `text` is 1 to `max_chars` characters, none hidden, and not only white space.
pub fn is_visible(text: &str, max_chars: usize) -> bool {
    let chars = text.chars().count();
    (1..=max_chars).contains(&chars) && !text.chars().any(is_hidden) && !text.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_format_characters_and_separators_are_hidden() {
        for c in [
            '\0',
            '\n',
            '\r',
            '\t',
            '\u{1B}',
            '\u{7F}',
            '\u{85}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{FEFF}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0041}',
            '\u{00AD}',
            '\u{061C}',
        ] {
            assert!(is_hidden(c), "{:?}", c);
            assert!(!is_visible(&format!("a{c}b"), 128), "{:?}", c);
        }
        for c in ['a', 'é', 'ß', '中', ' ', '-', '\u{00A0}', '😀', 'ا'] {
            assert!(!is_hidden(c), "{:?}", c);
        }
    }

    #[test]
    fn length_counts_characters_and_blank_is_refused() {
        assert!(is_visible("é", 1));
        assert!(!is_visible("éé", 1));
        assert!(!is_visible("", 8));
        assert!(!is_visible("   ", 8));
        assert!(is_visible(&"x".repeat(128), 128));
        assert!(!is_visible(&"x".repeat(129), 128));
    }
}
