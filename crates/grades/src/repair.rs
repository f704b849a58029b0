//! `rollcall repair grades`: what to do when the grade book is damaged (the service refuses to
//! start, or answers 500 on reads, saying the database is malformed).
//!
//! A book that passes SQLite's `quick_check` is left as it is. Otherwise every student and grade
//! that can still be read is copied into a new book, with their ids; the damaged file (and its
//! write-ahead log) is moved aside, never deleted, and the new one takes its place. A table is
//! read row after row by id, so that damage in one page costs the rows on it and the reading
//! goes on after them.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// There is no grade book in the directory.
    Missing,
    /// The book passes SQLite's check: nothing was changed.
    Sound,
    /// The book was damaged: what could be read was copied into a new one.
    Rebuilt {
        /// What SQLite said was wrong.
        reason: String,
        /// Where the damaged file now is.
        moved_to: PathBuf,
        /// Students copied.
        students: usize,
        /// Grades copied.
        grades: usize,
    },
}

/// Why the repair could not be made (the damaged book is then left where it was).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RepairError(String);

fn failed(context: &str, error: impl std::fmt::Display) -> RepairError {
    RepairError(format!("{context}: {error}"))
}

/// Repairs the grade book in `data_dir` (see the module docs). The grading service must be
/// stopped.
pub fn repair(data_dir: &Path) -> Result<Repair, RepairError> {
    let path = data_dir.join("grades.db");
    if !path.exists() {
        return Ok(Repair::Missing);
    }
    let reason = match check(&path) {
        Ok(None) => return Ok(Repair::Sound),
        Ok(Some(reason)) | Err(reason) => reason,
    };
    let rebuilt = path.with_extension("db.rebuilt");
    let _ = std::fs::remove_file(&rebuilt);
    let (students, grades) = copy_readable(&path, &rebuilt)?;
    let moved_to = PathBuf::from(format!(
        "{}.damaged-{}",
        path.display(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    ));
    std::fs::rename(&path, &moved_to).map_err(|e| failed("cannot move the damaged book aside", e))?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            let _ = std::fs::rename(&side, format!("{}{suffix}", moved_to.display()));
        }
    }
    std::fs::rename(&rebuilt, &path).map_err(|e| failed("cannot put the new book in place", e))?;
    Ok(Repair::Rebuilt {
        reason,
        moved_to,
        students,
        grades,
    })
}

/// `None` when the book passes `quick_check`, else what is wrong; `Err` when it cannot even be
/// checked.
fn check(path: &Path) -> Result<Option<String>, String> {
    let connection = Connection::open(path).map_err(|e| e.to_string())?;
    let verdict: String = connection
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    Ok((verdict != "ok").then_some(verdict))
}

/// Copies every readable student and grade of `damaged` into a new book at `rebuilt`.
fn copy_readable(damaged: &Path, rebuilt: &Path) -> Result<(usize, usize), RepairError> {
    let from = Connection::open(damaged).map_err(|e| failed("cannot open the damaged book", e))?;
    let mut to = Connection::open(rebuilt).map_err(|e| failed("cannot create the new book", e))?;
    to.execute_batch(crate::db::SCHEMA)
        .map_err(|e| failed("cannot create the new book", e))?;
    let transaction = to.transaction().map_err(|e| failed("cannot write the new book", e))?;
    let students = copy_rows(
        &from,
        "SELECT id, first_name, last_name FROM students WHERE id > ?1 ORDER BY id LIMIT 1",
        |row| {
            let (id, first, last): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            Ok((id, move |t: &rusqlite::Transaction<'_>| {
                t.execute(
                    "INSERT INTO students (id, first_name, last_name) VALUES (?1, ?2, ?3)",
                    params![id, first, last],
                )
            }))
        },
        &transaction,
    );
    let grades = copy_rows(
        &from,
        "SELECT id, student_id, title, kind, score FROM grades WHERE id > ?1 ORDER BY id LIMIT 1",
        |row| {
            let (id, student, title, kind, score): (i64, i64, String, String, f64) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?);
            Ok((id, move |t: &rusqlite::Transaction<'_>| {
                t.execute(
                "INSERT INTO grades (id, student_id, title, kind, score) SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM students WHERE id = ?2)",
                params![id, student, title, kind, score],
            )
            }))
        },
        &transaction,
    );
    // The demo students are not seeded again into a book that had them.
    transaction
        .execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('seeded', 'repaired')",
            [],
        )
        .map_err(|e| failed("cannot write the new book", e))?;
    transaction
        .commit()
        .map_err(|e| failed("cannot write the new book", e))?;
    Ok((students, grades))
}

/// Reads the rows of `query` (which takes the last id read and answers the next row) one by
/// one, inserting each with what `read` makes of it; a row that cannot be read is stepped over
/// (the next id after it is tried, up to a gap of [`MAX_GAP`]). Returns how many were copied.
fn copy_rows<F>(
    from: &Connection,
    query: &str,
    read: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<(i64, F)>,
    to: &rusqlite::Transaction<'_>,
) -> usize
where
    F: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
{
    let mut after = 0_i64;
    let mut copied = 0;
    let mut misses = 0;
    while misses < MAX_GAP {
        match from.query_row(query, [after], |row| read(row)).optional() {
            Ok(Some((id, insert))) => {
                after = id;
                misses = 0;
                if insert(to).is_ok_and(|n| n > 0) {
                    copied += 1;
                }
            }
            Ok(None) => break,
            Err(_) => {
                // Damage: try past it.
                after += 1;
                misses += 1;
            }
        }
    }
    copied
}

/// Unreadable ids in a row after which a table's reading stops.
const MAX_GAP: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sound_book_is_left_alone_and_a_missing_one_said() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(repair(dir.path()).expect("repair"), Repair::Missing);
        drop(crate::db::Db::open(dir.path()).expect("open"));
        assert_eq!(repair(dir.path()).expect("repair"), Repair::Sound);
    }

    #[test]
    fn a_damaged_book_is_moved_aside_and_its_readable_rows_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("grades.db");
        {
            let connection = Connection::open(&path).expect("open");
            connection.execute_batch(crate::db::SCHEMA).expect("schema");
            for n in 0..2_000 {
                connection
                    .execute(
                        "INSERT INTO students (first_name, last_name) VALUES (?1, ?2)",
                        params![format!("First{n}"), "x".repeat(200)],
                    )
                    .expect("insert");
                connection
                    .execute(
                        "INSERT INTO grades (student_id, title, kind, score) VALUES (?1, 'Quiz', 'Quiz', 90)",
                        params![n + 1],
                    )
                    .expect("insert");
            }
        }
        // Bytes in the middle of the file overwritten, as a bad sector would.
        let mut bytes = std::fs::read(&path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle..middle + 8192].fill(0xa5);
        std::fs::write(&path, &bytes).expect("damage");
        assert!(
            check(&path).map_or(true, |verdict| verdict.is_some()),
            "SQLite sees the damage"
        );

        let Repair::Rebuilt {
            moved_to,
            students,
            grades,
            ..
        } = repair(dir.path()).expect("repair")
        else {
            panic!("a damaged book is rebuilt");
        };
        assert!(moved_to.exists(), "the damaged book is kept");
        assert!(
            students > 1_000 && students < 2_000,
            "most students survive, the damaged ones not: {students}"
        );
        assert!(grades > 0, "{grades}");
        assert_eq!(check(&path), Ok(None), "the new book is sound");
        let db = crate::db::Db::open(dir.path()).expect("the service opens the new book");
        drop(db);
        let connection = Connection::open(&path).expect("open");
        let count: i64 = connection
            .query_row("SELECT count(*) FROM students", [], |row| row.get(0))
            .expect("count");
        assert_eq!(
            count,
            i64::try_from(students).expect("count"),
            "no demo students added to a repaired book"
        );
    }
}
