//! Reference data: a CSV of features with a header row, read into typed columns.
//!
//! A column is numeric when every non-empty cell parses as a number, and categorical otherwise. Empty cells (and
//! `NA`, `NaN`, `null`) are missing values, kept as `None` so the missing share can be measured later.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The reference data of one model version, column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceData {
    /// The columns, in file order.
    pub columns: Vec<Column>,
    /// The number of rows.
    pub rows: usize,
}

/// One named column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The header name.
    pub name: String,
    /// The values.
    pub values: ColumnValues,
}

/// A column's values, typed by what its cells hold.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    /// Every present cell is a number.
    Numeric(Vec<Option<f64>>),
    /// At least one present cell is not a number.
    Categorical(Vec<Option<String>>),
}

// === impl ReferenceData ===

impl ReferenceData {
    /// Reads a CSV file. Blocking.
    pub fn from_csv_path(path: &Path) -> Result<Self> {
        let reader =
            csv::Reader::from_path(path).map_err(|source| Error::ReadReference { path: path.into(), source })?;
        Self::from_csv(reader, path)
    }

    /// Reads CSV from any reader (for example embedded bytes); `origin` names it in errors.
    pub fn from_csv_reader(reader: impl Read, origin: &Path) -> Result<Self> {
        Self::from_csv(csv::Reader::from_reader(reader), origin)
    }

    fn from_csv<R: Read>(mut reader: csv::Reader<R>, origin: &Path) -> Result<Self> {
        let wrap = |source| Error::ReadReference { path: PathBuf::from(origin), source };
        let names: Vec<String> = reader.headers().map_err(wrap)?.iter().map(str::to_owned).collect();
        let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
        for record in reader.records() {
            let record = record.map_err(wrap)?;
            for (column, cell) in cells.iter_mut().zip(record.iter()) {
                column.push(Some(cell.trim()).filter(|c| !is_missing(c)).map(str::to_owned));
            }
        }
        let rows = cells.first().map_or(0, Vec::len);
        if rows == 0 {
            return Err(Error::EmptyReference { path: origin.into() });
        }
        let columns = names.into_iter().zip(cells).map(|(name, cells)| Column { name, values: typed(cells) }).collect();
        Ok(Self { columns, rows })
    }

    /// The numeric values of row `index`, or `None` if the row does not exist or a cell is missing or not numeric.
    pub fn numeric_row(&self, index: usize) -> Option<Vec<f64>> {
        self.columns
            .iter()
            .map(|column| match &column.values {
                ColumnValues::Numeric(values) => values.get(index).copied().flatten(),
                ColumnValues::Categorical(_) => None,
            })
            .collect()
    }
}

fn is_missing(cell: &str) -> bool {
    matches!(cell, "" | "NA" | "NaN" | "nan" | "null")
}

fn typed(cells: Vec<Option<String>>) -> ColumnValues {
    let numbers: Option<Vec<Option<f64>>> =
        cells.iter().map(|cell| cell.as_deref().map_or(Some(None), |c| c.parse::<f64>().ok().map(Some))).collect();
    match numbers {
        Some(numbers) => ColumnValues::Numeric(numbers),
        None => ColumnValues::Categorical(cells),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<ReferenceData> {
        ReferenceData::from_csv_reader(text.as_bytes(), Path::new("<test>"))
    }

    #[test]
    fn infers_numeric_and_categorical_columns_with_missing_values() {
        let data = read("x,colour,y\n1.5,red,3\n,blue,NA\n-2e3,,4\n").unwrap();
        assert_eq!(data.rows, 3);
        assert_eq!(data.columns[0].values, ColumnValues::Numeric(vec![Some(1.5), None, Some(-2000.0)]));
        assert_eq!(
            data.columns[1].values,
            ColumnValues::Categorical(vec![Some("red".into()), Some("blue".into()), None])
        );
        assert_eq!(data.columns[2].values, ColumnValues::Numeric(vec![Some(3.0), None, Some(4.0)]));
        assert_eq!(data.numeric_row(0), None, "row 0 has a categorical cell");
    }

    #[test]
    fn numeric_rows_come_back_in_column_order() {
        let data = read("a,b\n1,2\n3,4\n").unwrap();
        assert_eq!(data.numeric_row(1), Some(vec![3.0, 4.0]));
        assert_eq!(data.numeric_row(2), None);
    }

    #[test]
    fn ragged_or_empty_files_are_errors() {
        assert!(matches!(read("a,b\n1,2\n3\n"), Err(Error::ReadReference { .. })));
        assert!(matches!(read("a,b\n"), Err(Error::EmptyReference { .. })));
    }

    #[test]
    fn reads_the_committed_breast_cancer_reference() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/breast_cancer/reference.csv");
        let data = ReferenceData::from_csv_path(&path).unwrap();
        assert_eq!((data.columns.len(), data.rows), (30, 569));
        assert_eq!(data.columns[0].name, "mean_radius");
        assert_eq!(data.numeric_row(0).unwrap()[0], 17.99);
    }
}
