//! Tables for people: columns padded to their widest cell, numbers right-aligned.

/// Renders `rows` under `headers`, one line each, columns two spaces apart.
pub(crate) fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.chars().count()).collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(column) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let numeric: Vec<bool> = (0..headers.len())
        .map(|column| {
            !rows.is_empty()
                && rows.iter().all(|row| {
                    row.get(column)
                        .is_some_and(|cell| !cell.is_empty() && cell.chars().all(|letter| letter.is_ascii_digit()))
                })
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                let width = widths[column];
                if numeric[column] {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// One row on its own (a row printed after its table), cells two spaces apart.
pub(crate) fn render_row(row: &[String]) -> String {
    row.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let rows = vec![
            vec!["order".to_string(), "1.0.0".to_string(), "7".to_string()],
            vec!["order".to_string(), "10.2.0".to_string(), "1234".to_string()],
        ];
        let text = render(&["WORKFLOW", "VERSION", "LIVE"], &rows);
        assert_eq!(
            text,
            "WORKFLOW  VERSION  LIVE\norder     1.0.0       7\norder     10.2.0   1234"
        );
    }
}
