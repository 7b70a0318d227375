//! Tables for drift reports: a CSV file read into columns of raw cells, typed later by [`crate::drift`]. An empty
//! cell is a missing value and nothing else is (no `NA` or `null` tokens). Cells are kept in one string arena per
//! column (an offset per cell), so 200,000 rows × 20 columns cost two allocations per column, not four million.
//!
//! Errors name the file, the row (1-based, the header is row 1) and the column.

use std::path::{Path, PathBuf};

/// A CSV table, column by column.
#[derive(Debug, Clone)]
pub struct Table {
    /// Where it was read from.
    pub path: PathBuf,
    /// The header names, in file order.
    pub names: Vec<String>,
    /// The data rows (without the header).
    pub rows: usize,
    columns: Vec<CellColumn>,
}

#[derive(Debug, Clone, Default)]
struct CellColumn {
    text: String,
    ends: Vec<u32>,
}

/// A table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be opened or read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A row has more or fewer cells than the header.
    #[error("{path}: row {row} has {found} cells, the header has {expected}")]
    Ragged {
        /// The file.
        path: PathBuf,
        /// 1-based line of the row (the header is row 1).
        row: u64,
        /// Cells in that row.
        found: usize,
        /// Cells in the header.
        expected: usize,
    },
    /// The header repeats a name.
    #[error("{path}: column {name:?} appears twice in the header")]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
    },
}

impl Table {
    /// Reads a CSV file with a header row. Blocking.
    pub fn from_csv_path(path: &Path) -> Result<Self, TableError> {
        let file = std::fs::File::open(path)
            .map_err(|e| TableError::Read { path: path.to_owned(), message: e.to_string() })?;
        Self::from_csv_reader(std::io::BufReader::with_capacity(1 << 20, file), path)
    }

    /// Reads CSV from `reader`; `path` names it in errors.
    pub fn from_csv_reader(reader: impl std::io::Read, path: &Path) -> Result<Self, TableError> {
        let read_error = |e: csv::Error| {
            let message = match e.position() {
                Some(position) => format!("row {}: {e}", position.line()),
                None => e.to_string(),
            };
            TableError::Read { path: path.to_owned(), message }
        };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let names: Vec<String> = reader.headers().map_err(read_error)?.iter().map(str::to_owned).collect();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(TableError::DuplicateColumn { path: path.to_owned(), name: name.clone() });
            }
        }
        let mut columns = vec![CellColumn::default(); names.len()];
        let mut record = csv::ByteRecord::new();
        let mut rows = 0usize;
        while reader.read_byte_record(&mut record).map_err(read_error)? {
            let row = record.position().map_or(rows as u64 + 2, csv::Position::line);
            if record.len() != names.len() {
                return Err(TableError::Ragged {
                    path: path.to_owned(),
                    row,
                    found: record.len(),
                    expected: names.len(),
                });
            }
            for (column, cell) in columns.iter_mut().zip(record.iter()) {
                let cell = std::str::from_utf8(cell).map_err(|_| TableError::Read {
                    path: path.to_owned(),
                    message: format!("row {row}: a cell is not UTF-8"),
                })?;
                column.text.push_str(cell);
                let end = u32::try_from(column.text.len()).map_err(|_| TableError::Read {
                    path: path.to_owned(),
                    message: "a column holds more than 4 GiB of text".to_owned(),
                })?;
                column.ends.push(end);
            }
            rows += 1;
        }
        Ok(Self { path: path.to_owned(), names, rows, columns })
    }

    /// The index of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The cells of column `index`, `None` for an empty (missing) cell.
    pub fn cells(&self, index: usize) -> impl Iterator<Item = Option<&str>> + '_ {
        let column = &self.columns[index];
        let mut start = 0usize;
        column.ends.iter().map(move |&end| {
            let cell = &column.text[start..end as usize];
            start = end as usize;
            (!cell.is_empty()).then_some(cell)
        })
    }

    /// The 1-based file row of data row `index` (the header is row 1), for error messages.
    pub fn file_row(index: usize) -> usize {
        index + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Table, TableError> {
        Table::from_csv_reader(text.as_bytes(), Path::new("cur.csv"))
    }

    #[test]
    fn cells_keep_their_text_and_only_empty_is_missing() {
        let table = read("a,b\n1,NA\n,x y\n").unwrap();
        assert_eq!((table.rows, table.names.as_slice()), (2, ["a".to_owned(), "b".to_owned()].as_slice()));
        assert_eq!(table.cells(0).collect::<Vec<_>>(), [Some("1"), None]);
        assert_eq!(table.cells(1).collect::<Vec<_>>(), [Some("NA"), Some("x y")]);
    }

    #[test]
    fn ragged_rows_and_duplicate_names_are_named() {
        let error = read("a,b\n1,2\n3\n").unwrap_err().to_string();
        assert_eq!(error, "cur.csv: row 3 has 1 cells, the header has 2");
        let error = read("a,a\n1,2\n").unwrap_err().to_string();
        assert_eq!(error, "cur.csv: column \"a\" appears twice in the header");
    }
}
