//! Tables for drift reports: a CSV or Parquet file read into columns of raw cells, typed later by
//! [`crate::drift`]. An empty cell is a missing value and nothing else is (no `NA` or `null` tokens); a Parquet null
//! is an empty cell. Parquet values become the text that parses back to the same value: integers in decimal, floats
//! in shortest round-trip form of the double (a FLOAT is widened exactly first), booleans as 1/0 (so a boolean column
//! is binary), strings as they are. Cells are kept in one string arena per column (an offset per cell), so 200,000
//! rows × 20 columns cost two allocations per column, not four million.
//!
//! Errors name the file, the row (1-based; in a CSV the header is row 1) and the column.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a table may hold before reading stops with an error: checked as cells arrive, so a file that decodes to far
/// more than its size (Parquet's run-length-encoded nulls make billions of rows from kilobytes) costs at most this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// Data rows.
    pub rows: usize,
    /// Columns.
    pub columns: usize,
    /// Rows x columns.
    pub cells: usize,
    /// Bytes of cell text, all columns together.
    pub text_bytes: usize,
    /// Bytes of a CSV's header line, checked before it is split into names.
    pub header_bytes: usize,
    /// Bytes of a CSV read at all (a record is buffered whole before its cells can be counted).
    pub input_bytes: u64,
}

impl TableLimits {
    /// No bound beyond memory: for files the operator names (`vane drift`).
    pub const UNBOUNDED: Self = Self {
        rows: usize::MAX,
        columns: usize::MAX,
        cells: usize::MAX,
        text_bytes: usize::MAX,
        header_bytes: usize::MAX,
        input_bytes: u64::MAX,
    };

    /// Reference data from a deploy repository (untrusted): 2 million rows, 1,024 columns, 50 million cells and
    /// 512 MiB of text, about 0.75 GiB of memory at most while it is read (4 bytes of offset per cell besides the
    /// text), a few times the largest reference a monitor needs (its quantiles are stable long before); a CSV header
    /// of at most 64 KiB and at most 768 MiB of CSV read.
    pub const REFERENCE: Self = Self {
        rows: 2_000_000,
        columns: 1_024,
        cells: 50_000_000,
        text_bytes: 512 << 20,
        header_bytes: 64 << 10,
        input_bytes: 768 << 20,
    };
}

/// Rows read before a CSV's columns reserve their room for the rest of the file.
const RESERVE_AFTER_ROWS: usize = 1000;

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
    /// Rows before the data in the file: 1 for a CSV's header, 0 for Parquet.
    header_rows: usize,
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
    /// The table is larger than its limits allow.
    #[error("{path}: {what} exceeds the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What is too large.
        what: &'static str,
        /// The limit.
        limit: usize,
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
        Self::from_csv_path_within(path, TableLimits::UNBOUNDED)
    }

    fn from_csv_path_within(path: &Path, limits: TableLimits) -> Result<Self, TableError> {
        use std::io::{BufRead, Read};
        let read = |message: String| TableError::Read { path: path.to_owned(), message };
        let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
        let size = file.metadata().map_err(|e| read(e.to_string()))?.len();
        if size > limits.input_bytes {
            let limit = usize::try_from(limits.input_bytes).unwrap_or(usize::MAX);
            return Err(TableError::TooLarge { path: path.to_owned(), what: "the file size", limit });
        }
        let mut input = std::io::BufReader::with_capacity(1 << 20, file.take(limits.input_bytes));
        if limits.header_bytes == usize::MAX {
            return Self::read_csv(input, path, limits, Some(size));
        }
        // The header line is read under its own bound before csv splits it (a line of commas would otherwise become
        // millions of names before the column count could refuse it).
        let mut header = Vec::new();
        (&mut input)
            .take(limits.header_bytes as u64 + 1)
            .read_until(b'\n', &mut header)
            .map_err(|e| read(e.to_string()))?;
        if header.len() > limits.header_bytes {
            return Err(TableError::TooLarge {
                path: path.to_owned(),
                what: "the header line",
                limit: limits.header_bytes,
            });
        }
        Self::read_csv(std::io::Cursor::new(header).chain(input), path, limits, Some(size))
    }

    /// Reads CSV from `reader`; `path` names it in errors.
    pub fn from_csv_reader(reader: impl std::io::Read, path: &Path) -> Result<Self, TableError> {
        Self::from_csv_reader_within(reader, path, TableLimits::UNBOUNDED)
    }

    /// Reads CSV from `reader` within `limits`.
    pub fn from_csv_reader_within(
        reader: impl std::io::Read,
        path: &Path,
        limits: TableLimits,
    ) -> Result<Self, TableError> {
        Self::read_csv(reader, path, limits, None)
    }

    /// Reads CSV from `reader` within `limits`; `size_hint` is the input's size in bytes, when known.
    fn read_csv(
        reader: impl std::io::Read,
        path: &Path,
        limits: TableLimits,
        size_hint: Option<u64>,
    ) -> Result<Self, TableError> {
        let read_error = |e: csv::Error| {
            let message = match e.position() {
                Some(position) => format!("row {}: {e}", position.line()),
                None => e.to_string(),
            };
            TableError::Read { path: path.to_owned(), message }
        };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let names: Vec<String> = reader.headers().map_err(read_error)?.iter().map(str::to_owned).collect();
        check_names(&names, path, limits)?;
        let mut budget = Budget::new(path, limits, names.len());
        let mut columns = vec![CellColumn::default(); names.len()];
        let mut record = csv::ByteRecord::new();
        let mut rows = 0usize;
        let mut read = 0u64;
        while reader.read_byte_record(&mut record).map_err(read_error)? {
            budget.row(record.as_slice().len())?;
            let row = record.position().map_or(rows as u64 + 2, csv::Position::line);
            if record.len() != names.len() {
                return Err(TableError::Ragged {
                    path: path.to_owned(),
                    row,
                    found: record.len(),
                    expected: names.len(),
                });
            }
            // One UTF-8 check per record: its cells are ranges of the checked text.
            let text = std::str::from_utf8(record.as_slice()).map_err(|_| TableError::Read {
                path: path.to_owned(),
                message: format!("row {row}: a cell is not UTF-8"),
            })?;
            for (i, column) in columns.iter_mut().enumerate() {
                let cell = record.range(i).and_then(|range| text.get(range)).ok_or_else(|| TableError::Read {
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
            // After a thousand rows, each column reserves what the rest of the input will need at their rate (when
            // the input's size is known), instead of doubling and copying its way there.
            read += record.as_slice().len() as u64 + record.len() as u64;
            if rows == RESERVE_AFTER_ROWS {
                let scale = size_hint.filter(|&size| size > read).map_or(0.0, |size| size as f64 / read as f64 * 1.02);
                let text: usize = columns.iter().map(|column| column.text.len()).sum();
                let (expected_rows, expected_text) = (rows as f64 * scale, text as f64 * scale);
                // Never more than the limits allow: an untrusted file's first rows must not make the reader reserve
                // what the limits would refuse (a file of empty cells has four bytes of offsets per byte of input).
                let within = expected_rows <= limits.rows as f64
                    && expected_rows * columns.len() as f64 <= limits.cells as f64
                    && expected_text <= limits.text_bytes as f64;
                if scale > 1.0 && within {
                    for column in &mut columns {
                        let column_text = (column.text.len() as f64 * scale) as usize;
                        column.text.reserve(column_text.saturating_sub(column.text.len()));
                        column.ends.reserve((expected_rows as usize).saturating_sub(column.ends.len()));
                    }
                }
            }
        }
        Ok(Self { path: path.to_owned(), names, rows, columns, header_rows: 1 })
    }

    /// Reads a Parquet file's top-level columns. Blocking. Nested columns (structs, lists, maps) and binary ones
    /// are refused naming the column.
    pub fn from_parquet_path(path: &Path) -> Result<Self, TableError> {
        Self::from_parquet_path_within(path, TableLimits::UNBOUNDED)
    }

    fn from_parquet_path_within(path: &Path, limits: TableLimits) -> Result<Self, TableError> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let read = |message: String| TableError::Read { path: path.to_owned(), message };
        let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
        let reader = SerializedFileReader::new(file).map_err(|e| read(format!("not a readable Parquet file: {e}")))?;
        let names: Vec<String> =
            reader.metadata().file_metadata().schema().get_fields().iter().map(|f| f.name().to_owned()).collect();
        check_names(&names, path, limits)?;
        // The footer's count, refused before a row is decoded (and the rows are counted as they come: it may lie).
        let declared = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(usize::MAX);
        if declared > limits.rows {
            return Err(TableError::TooLarge { path: path.to_owned(), what: "the row count", limit: limits.rows });
        }
        let mut budget = Budget::new(path, limits, names.len());
        let mut columns = vec![CellColumn::default(); names.len()];
        let mut rows = 0usize;
        let rows_iter = reader.get_row_iter(None).map_err(|e| read(format!("not a readable Parquet file: {e}")))?;
        for row in rows_iter {
            let row = row.map_err(|e| read(format!("row {}: {e}", rows + 1)))?;
            budget.row(0)?;
            for (column, (name, field)) in columns.iter_mut().zip(row.get_column_iter()) {
                let before = column.text.len();
                push_field(&mut column.text, field).map_err(|what| {
                    read(format!(
                        "row {}, column {name:?}: {what} values are not supported; use numbers, strings or \
                                  booleans",
                        rows + 1
                    ))
                })?;
                budget.text(column.text.len() - before)?;
                let end = u32::try_from(column.text.len())
                    .map_err(|_| read("a column holds more than 4 GiB of text".to_owned()))?;
                column.ends.push(end);
            }
            rows += 1;
        }
        Ok(Self { path: path.to_owned(), names, rows, columns, header_rows: 0 })
    }

    /// Reads a table by its contents: Parquet when the file starts with Parquet's magic bytes (`PAR1`), else CSV.
    /// (Cached artifacts are named by digest, so only the bytes can tell.)
    pub fn from_path(path: &Path) -> Result<Self, TableError> {
        Self::from_path_within(path, TableLimits::UNBOUNDED)
    }

    /// [`Table::from_path`] within `limits`.
    pub fn from_path_within(path: &Path, limits: TableLimits) -> Result<Self, TableError> {
        let mut magic = [0u8; 4];
        let is_parquet = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| &magic == b"PAR1");
        if is_parquet {
            Self::from_parquet_path_within(path, limits)
        } else {
            Self::from_csv_path_within(path, limits)
        }
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

    /// The 1-based file row of data row `index` (in a CSV the header is row 1), for error messages.
    pub fn file_row(&self, index: usize) -> usize {
        index + 1 + self.header_rows
    }
}

/// Refuses too many columns and a repeated name, in linear time.
pub(crate) fn check_names(names: &[String], path: &Path, limits: TableLimits) -> Result<(), TableError> {
    if names.len() > limits.columns {
        return Err(TableError::TooLarge { path: path.to_owned(), what: "the column count", limit: limits.columns });
    }
    let mut seen = HashSet::with_capacity(names.len());
    match names.iter().find(|name| !seen.insert(name.as_str())) {
        Some(name) => Err(TableError::DuplicateColumn { path: path.to_owned(), name: name.clone() }),
        None => Ok(()),
    }
}

/// Counts what a table holds as it is read, against its limits.
struct Budget<'a> {
    path: &'a Path,
    limits: TableLimits,
    columns: usize,
    rows: usize,
    text: usize,
}

impl<'a> Budget<'a> {
    fn new(path: &'a Path, limits: TableLimits, columns: usize) -> Self {
        Self { path, limits, columns, rows: 0, text: 0 }
    }

    fn too_large(&self, what: &'static str, limit: usize) -> TableError {
        TableError::TooLarge { path: self.path.to_owned(), what, limit }
    }

    /// One more row, with `text` bytes of cells (or 0, counted cell by cell with [`Budget::text`]).
    fn row(&mut self, text: usize) -> Result<(), TableError> {
        self.rows += 1;
        if self.rows > self.limits.rows {
            return Err(self.too_large("the row count", self.limits.rows));
        }
        if self.rows.saturating_mul(self.columns) > self.limits.cells {
            return Err(self.too_large("the cell count", self.limits.cells));
        }
        self.text(text)
    }

    fn text(&mut self, bytes: usize) -> Result<(), TableError> {
        self.text = self.text.saturating_add(bytes);
        if self.text > self.limits.text_bytes {
            return Err(self.too_large("the text size", self.limits.text_bytes));
        }
        Ok(())
    }
}

/// Appends a Parquet value as the text a CSV would hold for it; `Err` names a kind of value that has no such text.
fn push_field(out: &mut String, field: &parquet::record::Field) -> Result<(), &'static str> {
    use parquet::record::Field;
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = match field {
        Field::Null => Ok(()),
        Field::Bool(b) => write!(out, "{}", u8::from(*b)),
        Field::Byte(v) => write!(out, "{v}"),
        Field::Short(v) => write!(out, "{v}"),
        Field::Int(v) => write!(out, "{v}"),
        Field::Long(v) => write!(out, "{v}"),
        Field::UByte(v) => write!(out, "{v}"),
        Field::UShort(v) => write!(out, "{v}"),
        Field::UInt(v) => write!(out, "{v}"),
        Field::ULong(v) => write!(out, "{v}"),
        Field::Float16(v) => finite(out, f64::from(f32::from(*v))),
        Field::Float(v) => finite(out, f64::from(*v)),
        Field::Double(v) => finite(out, *v),
        Field::Str(s) => {
            out.push_str(s);
            Ok(())
        }
        Field::Date(_) => return Err("date"),
        Field::TimeMillis(_) | Field::TimeMicros(_) => return Err("time"),
        Field::TimestampMillis(_) | Field::TimestampMicros(_) => return Err("timestamp"),
        Field::Decimal(_) => return Err("decimal"),
        Field::Bytes(_) => return Err("binary"),
        Field::Group(_) => return Err("struct"),
        Field::ListInternal(_) => return Err("list"),
        Field::MapInternal(_) => return Err("map"),
    };
    Ok(())
}

/// A float as its shortest round-trip text; NaN (pandas' missing value) as an empty cell.
fn finite(out: &mut String, value: f64) -> std::fmt::Result {
    use std::fmt::Write;
    if value.is_nan() {
        return Ok(());
    }
    write!(out, "{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_stop_a_table_as_it_is_read() {
        let limits = TableLimits { rows: 2, columns: 3, cells: 100, text_bytes: 100, ..TableLimits::UNBOUNDED };
        let within = |text: &str| Table::from_csv_reader_within(text.as_bytes(), Path::new("r.csv"), limits);
        assert_eq!(within("a,b\n1,2\n3,4\n").unwrap().rows, 2);
        let error = within("a,b\n1,2\n3,4\n5,6\n").unwrap_err().to_string();
        assert_eq!(error, "r.csv: the row count exceeds the limit of 2");
        let error = within("a,b,c,d\n").unwrap_err().to_string();
        assert_eq!(error, "r.csv: the column count exceeds the limit of 3");
        let long = format!("a\n{}\n", "x".repeat(101));
        assert_eq!(within(&long).unwrap_err().to_string(), "r.csv: the text size exceeds the limit of 100");
        // A header line past its bound is refused before it is split.
        let dir = tempfile::tempdir().unwrap();
        let wide = dir.path().join("wide.csv");
        std::fs::write(&wide, format!("{}\n1\n", ",".repeat(100_000))).unwrap();
        let error = Table::from_path_within(&wide, TableLimits::REFERENCE).unwrap_err().to_string();
        assert!(error.ends_with("the header line exceeds the limit of 65536"), "{error}");
        // The duplicate check is linear: 100,000 distinct names are checked at once.
        let names: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
        assert!(check_names(&names, Path::new("r.csv"), TableLimits::UNBOUNDED).is_ok());
    }

    /// Run-length-encoded nulls: 3 million rows in a file of a few kilobytes, refused from its footer before a row
    /// is decoded.
    #[test]
    fn a_parquet_file_of_millions_of_null_rows_is_refused_before_it_is_decoded() {
        use parquet::data_type::Int32Type;
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        let schema = std::sync::Arc::new(parse_message_type("message m { optional int32 x; }").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nulls.parquet");
        let file = std::fs::File::create(&path).unwrap();
        let mut writer =
            SerializedFileWriter::new(file, schema, std::sync::Arc::new(WriterProperties::builder().build())).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        let nulls = vec![0i16; 3_000_000];
        column.typed::<Int32Type>().write_batch(&[], Some(&nulls), None).unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 64 * 1024, "run-length encoded");
        let error = Table::from_path_within(&path, TableLimits::REFERENCE).unwrap_err().to_string();
        assert!(error.ends_with("the row count exceeds the limit of 2000000"), "{error}");
    }

    /// A file's first rows reserve room for the rest only within the limits: an input claiming to be far larger
    /// than the rows allow reserves nothing.
    #[test]
    fn the_reservation_after_the_first_rows_stays_within_the_limits() {
        let text = format!("a,b\n{}", "1,2\n".repeat(1500));
        let limits = TableLimits { rows: 2000, ..TableLimits::UNBOUNDED };
        let path = Path::new("r.csv");
        // The true size: room for every row at once.
        let table = Table::read_csv(text.as_bytes(), path, limits, Some(text.len() as u64)).unwrap();
        assert!(table.columns[0].ends.capacity() >= 1500);
        // A size that would mean a million rows: more than the limit, so no reservation (the vector only grew).
        let table = Table::read_csv(text.as_bytes(), path, limits, Some(4_000_000)).unwrap();
        assert!(table.columns[0].ends.capacity() < 4096, "{}", table.columns[0].ends.capacity());
        let unbounded = Table::read_csv(text.as_bytes(), path, TableLimits::UNBOUNDED, Some(4_000_000)).unwrap();
        assert!(unbounded.columns[0].ends.capacity() >= 900_000, "without limits the estimate is taken");
    }

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
