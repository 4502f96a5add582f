//! Aligned columns for the human output: a header, rows, two spaces between columns; numbers
//! right-aligned so their digits line up.

use std::fmt;

pub struct TextTable {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    numeric: Vec<bool>,
}

impl TextTable {
    /// Columns whose name is in `numeric` are right-aligned.
    pub fn new(header: &[&str], numeric: &[&str]) -> Self {
        Self {
            numeric: header.iter().map(|h| numeric.contains(h)).collect(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for TextTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                if self.numeric[i] {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(f, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

/// One line of `text`, at most `max` characters (`…` marks a cut), for a table cell.
pub fn cell(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    let cut = line.chars().count() > max || line.len() < text.len();
    if !cut {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut table = TextTable::new(&["status", "rows"], &["rows"]);
        table.row(vec!["pending".into(), "2".into()]);
        table.row(vec!["dead".into(), "130".into()]);
        assert_eq!(
            table.to_string(),
            "status   rows\npending     2\ndead      130\n"
        );
    }

    #[test]
    fn long_cells_are_cut_to_one_line() {
        assert_eq!(cell("short", 10), "short");
        assert_eq!(cell("a very long reason", 6), "a ver…");
        assert_eq!(cell("first\nsecond", 20), "first…");
    }
}
