//! An error body as the one line a report quotes: a server's HTML error
//! page reduced to its text (`501 Not Implemented: <!DOCTYPE HTML>` said
//! nothing), anything else to its first line.

/// Longest reason quoted, in characters.
const MAX_CHARS: usize = 200;

/// The text of `body` for a report line.
pub fn reason(body: &str) -> String {
    let body = body.trim();
    let text = if looks_like_html(body) { html_text(body) } else { first_line(body) };
    cut(&text)
}

fn looks_like_html(body: &str) -> bool {
    let head: String = body.chars().take(64).collect::<String>().to_ascii_lowercase();
    head.starts_with("<!doctype")
        || head.starts_with("<html")
        || head.starts_with("<?xml")
        || (head.starts_with('<') && body.to_ascii_lowercase().contains("</"))
}

fn first_line(body: &str) -> String {
    body.lines().next().unwrap_or_default().trim().to_string()
}

/// The words of a page: its `<body>`'s text (scripts and styles left out),
/// or its `<title>` when the body has none.
fn html_text(page: &str) -> String {
    let lower = page.to_ascii_lowercase();
    let title = between(page, &lower, "<title", "</title>").map(|t| collapse(&strip_tags(t)));
    let body = match (lower.find("</head>"), lower.find("<body")) {
        (_, Some(b)) => &page[b..],
        (Some(h), None) => &page[h + "</head>".len()..],
        (None, None) => page,
    };
    let text = collapse(&strip_tags(body));
    match title {
        Some(t) if text.is_empty() => t,
        _ => text,
    }
}

/// The inside of the first `<open …>…close` in `page` (`lower` is it in
/// lower case, same byte offsets: ASCII case changes keep lengths).
fn between<'a>(page: &'a str, lower: &str, open: &str, close: &str) -> Option<&'a str> {
    let start = lower.find(open)?;
    let inner = start + lower[start..].find('>')? + 1;
    let end = inner + lower[inner..].find(close)?;
    page.get(inner..end)
}

/// Text without tags, comments, scripts and styles; entities decoded.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        out.push(' ');
        let tag = &rest[lt..];
        let lower: String = tag.chars().take(8).collect::<String>().to_ascii_lowercase();
        let skip_to = if tag.starts_with("<!--") {
            tag.find("-->").map(|e| e + 3)
        } else if lower.starts_with("<script") || lower.starts_with("<style") {
            let close = if lower.starts_with("<script") { "</script" } else { "</style" };
            tag.to_ascii_lowercase().find(close).and_then(|e| tag[e..].find('>').map(|g| e + g + 1))
        } else {
            tag.find('>').map(|g| g + 1)
        };
        match skip_to {
            Some(n) => rest = &tag[n..],
            None => return decode(&out),
        }
    }
    out.push_str(rest);
    decode(&out)
}

fn decode(text: &str) -> String {
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_CHARS {
        return text.to_string();
    }
    let mut s: String = text.chars().take(MAX_CHARS).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_error_page() {
        let page = "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n\
                    <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n\
                    <p>Error code: 501</p>\n        <p>Message: Unsupported method (&#x27;POST&#x27;).</p>\n\
                    <p>Error code explanation: 501 - Server does not support this operation.</p>\n\
                    </body>\n</html>\n";
        assert_eq!(
            reason(page),
            "Error response Error code: 501 Message: Unsupported method ('POST'). Error code \
             explanation: 501 - Server does not support this operation."
        );
    }

    #[test]
    fn nginx_page_title_only_and_plain_text() {
        let nginx = "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n\
                     <center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n\
                     </body>\r\n</html>\r\n";
        assert_eq!(reason(nginx), "405 Not Allowed nginx");
        assert_eq!(
            reason("<html><head><title>Busy &amp; sorry</title><style>p{}</style></head></html>"),
            "Busy & sorry"
        );
        let script =
            "<html><body><script>alert('<b>x</b>')</script><!-- c --><p>ok</p></body></html>";
        assert_eq!(reason(script), "ok");
        assert_eq!(reason("server busy: held bytes\nsecond line"), "server busy: held bytes");
        assert_eq!(reason(""), "");
        assert_eq!(reason(&"x".repeat(300)).chars().count(), MAX_CHARS + 1);
        // A broken page still says something.
        assert_eq!(reason("<html><body><p>cut here <b"), "cut here");
    }
}
