/// Errors are kept for people to read; a broker or handler can return very long ones.
pub(crate) fn truncate(error: &str) -> String {
    const MAX: usize = 2000;
    if error.len() <= MAX {
        return error.to_owned();
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}
