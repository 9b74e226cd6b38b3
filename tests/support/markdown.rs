//! Just enough Markdown for the docs tests: fenced blocks with the
//! annotation before them and the heading above them, headings as GitHub
//! anchors, and local links.
#![allow(dead_code)]

/// A fenced code block.
#[derive(Debug, Clone)]
pub struct Block {
    /// The file, relative to the repository root (`docs/serve.md`).
    pub file: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The heading the block is under ("" before the first), and its
    /// number in the file: the blocks of one section are one recipe.
    pub heading: String,
    pub section: usize,
    /// The fence's info string up to the first space or comma (`sh`).
    pub lang: String,
    /// The lines between the fences, the fence's indentation removed.
    pub body: String,
    /// What a `<!-- run: … -->` comment right before the fence says.
    pub note: Option<String>,
}

/// An opening or closing fence: its indentation, its marker and the info
/// string after it.
fn fence(line: &str) -> Option<(usize, &str, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    for marker in ["```", "~~~"] {
        if let Some(info) = rest.strip_prefix(marker) {
            let info = info.trim_start_matches(&marker[..1]);
            return Some((indent, marker, info.trim()));
        }
    }
    None
}

/// Each fenced block of `text`, with its section.
pub fn blocks(file: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut out, mut heading, mut section) = (Vec::new(), String::new(), 0);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(h) = heading_text(line) {
            heading = h.to_owned();
            section += 1;
            i += 1;
            continue;
        }
        let Some((indent, marker, info)) = fence(line) else {
            i += 1;
            continue;
        };
        let lang = info.split([' ', ',']).next().unwrap_or("").to_owned();
        let note = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- run:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|n| n.trim().to_owned());
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len()
            && !fence(lines[i]).is_some_and(|(_, m, info)| m == marker && info.is_empty())
        {
            let l = lines[i];
            let cut = l.len() - l.trim_start_matches(' ').len();
            body.push(&l[cut.min(indent)..]);
            i += 1;
        }
        i += 1;
        let mut body = body.join("\n");
        body.push('\n');
        out.push(Block {
            file: file.to_owned(),
            line: start + 1,
            heading: heading.clone(),
            section,
            lang,
            body,
            note,
        });
    }
    out
}

/// The text of a heading line (`## Install` → `Install`).
fn heading_text(line: &str) -> Option<&str> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    (1..=6).contains(&hashes).then(|| line[hashes..].strip_prefix(' ')).flatten().map(str::trim)
}

/// The lines of `text` outside fenced blocks, with their 1-based numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut open: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        match (fence(line), open) {
            (Some((_, m, _)), None) => open = Some(m),
            (Some((_, m, info)), Some(o)) if m == o && info.is_empty() => open = None,
            (_, None) => out.push((n + 1, line)),
            _ => {}
        }
    }
    out
}

/// The anchors GitHub gives the headings of `text`: lower case, spaces to
/// `-`, punctuation other than `-` and `_` dropped, repeats numbered.
pub fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, line) in prose(text) {
        let Some(h) = heading_text(line) else { continue };
        let slug: String = h
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = out.iter().filter(|a| **a == slug || a.starts_with(&format!("{slug}-"))).count();
        let taken = |s: &String| out.contains(s);
        let mut unique = slug.clone();
        if taken(&unique) {
            unique = (1..=n).map(|i| format!("{slug}-{i}")).find(|s| !taken(s)).unwrap_or(unique);
        }
        out.push(unique);
    }
    out
}

/// The targets of the inline and reference links of `text` outside code,
/// with their line numbers: `[text](target)` and `[ref]: target`.
pub fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(text) {
        // Code spans hold no links.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                plain.push_str(part);
            }
        }
        if let Some(rest) = plain.trim_start().strip_prefix('[')
            && let Some((_, target)) = rest.split_once("]:")
        {
            out.push((n, target.split_whitespace().next().unwrap_or("").to_owned()));
            continue;
        }
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((n, target.to_owned()));
            rest = &after[end..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_know_their_section_language_and_note() {
        let md = "# A\n\ntext\n\n<!-- run: skip: why -->\n```sh\necho a\n```\n\n## B `x`\n\n* item:\n\n  ```console\n  $ echo b\n  b\n  ```\n";
        let b = blocks("f.md", md);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].line, b[0].lang.as_str(), b[0].section), (6, "sh", 1));
        assert_eq!(b[0].note.as_deref(), Some("skip: why"));
        assert_eq!(b[0].body, "echo a\n");
        assert_eq!((b[1].heading.as_str(), b[1].section), ("B `x`", 2));
        assert_eq!(b[1].body, "$ echo b\nb\n");
        assert_eq!(b[1].note, None);
    }

    #[test]
    fn anchors_are_githubs() {
        let md = "# `ssechan serve`\n## HTTPS and HTTP/2\n## 8. Several instances\n## Limits\n### Limits\n```\n# not a heading\n```\n";
        assert_eq!(
            anchors(md),
            ["ssechan-serve", "https-and-http2", "8-several-instances", "limits", "limits-1"]
        );
    }

    #[test]
    fn links_outside_code() {
        let md = "See [a](docs/a.md#x) and [b](<https://x>) `[c](no.md)`.\n```\n[d](no.md)\n```\n[e]: ref.md\n";
        let l: Vec<String> = links(md).into_iter().map(|(_, t)| t).collect();
        assert_eq!(l, ["docs/a.md#x", "<https://x>", "ref.md"]);
    }
}
