//! A deterministic static library (`.a`) holding one object, in the GNU ar
//! format with a symbol index so linkers need no `ranlib`.

fn header(name: &str, size: usize) -> Vec<u8> {
    // name(16) mtime(12) uid(6) gid(6) mode(8) size(10) magic(2)
    let h = format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644);
    debug_assert_eq!(h.len(), 60);
    h.into_bytes()
}

/// Builds an archive with member `member_name` (at most 15 bytes, no `/`)
/// holding `object`, indexing `symbols` (the object's defined globals).
pub fn build_archive(member_name: &str, object: &[u8], symbols: &[String]) -> Vec<u8> {
    let mut names = Vec::new();
    for s in symbols {
        names.extend_from_slice(s.as_bytes());
        names.push(0);
    }
    let mut table_len = 4 + 4 * symbols.len() + names.len();
    let table_pad = table_len % 2;
    table_len += table_pad;
    let member_offset = 8 + 60 + table_len;
    let mut out = b"!<arch>\n".to_vec();
    out.extend(header("/", table_len));
    out.extend((symbols.len() as u32).to_be_bytes());
    for _ in symbols {
        out.extend((member_offset as u32).to_be_bytes());
    }
    out.extend(&names);
    out.resize(out.len() + table_pad, b'\n');
    let name = format!("{}/", &member_name[..member_name.len().min(15)]);
    out.extend(header(&name, object.len()));
    out.extend(object);
    if object.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}
