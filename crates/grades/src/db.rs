//! The grade book in SQLite: students and their grades, created and seeded with the demo
//! students on first start.
//!
//! The database runs in WAL mode with `synchronous = FULL`, so a committed grade is on disk
//! before the service answers 201: it survives `kill -9` and power loss. One connection behind a
//! mutex serves every request; calls run on the blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rollcall_wire::{Grade, Student};
use rusqlite::{Connection, OptionalExtension, params};

/// A demo grade: title, type, score.
type DemoGrade = (&'static str, &'static str, f64);

/// The students the original seeds (first name, last name), with their grades.
const DEMO: &[(&str, &str, &[DemoGrade])] = &[
    (
        "Nick",
        "Carter",
        &[
            ("Quiz 1", "Quiz", 85.0),
            ("Final Exam", "Exam", 94.0),
            ("Quiz 2", "Quiz", 82.0),
        ],
    ),
    (
        "Roberto",
        "Baggio",
        &[
            ("Quiz 1", "Quiz", 100.0),
            ("Final Exam", "Exam", 100.0),
            ("Quiz 2", "Quiz", 81.0),
        ],
    ),
    (
        "Emma",
        "Stone",
        &[
            ("Quiz 1", "Quiz", 67.0),
            ("Final Exam", "Exam", 0.0),
            ("Quiz 2", "Quiz", 75.0),
        ],
    ),
    (
        "Rachel",
        "McAdams",
        &[
            ("Quiz 1", "Quiz", 98.0),
            ("Final Exam", "Exam", 99.0),
            ("Quiz 2", "Quiz", 94.0),
        ],
    ),
    (
        "Kelly",
        "Clarkson",
        &[
            ("Quiz 1", "Quiz", 95.0),
            ("Final Exam", "Exam", 100.0),
            ("Quiz 2", "Quiz", 97.0),
        ],
    ),
];

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS students (
    id INTEGER PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    student_id INTEGER NOT NULL REFERENCES students(id),
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS grades_by_student ON grades(student_id, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// The grade book.
#[derive(Clone)]
pub(crate) struct Db {
    connection: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (or creates and seeds) `grades.db` in `dir`.
    pub(crate) fn open(dir: &Path) -> rusqlite::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let mut connection = Connection::open(dir.join("grades.db"))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.execute_batch(SCHEMA)?;
        let seeded: Option<String> = connection
            .query_row("SELECT value FROM meta WHERE key = 'seeded'", [], |row| row.get(0))
            .optional()?;
        if seeded.is_none() {
            let transaction = connection.transaction()?;
            for (first, last, grades) in DEMO {
                transaction.execute(
                    "INSERT INTO students (first_name, last_name) VALUES (?1, ?2)",
                    params![first, last],
                )?;
                let id = transaction.last_insert_rowid();
                for (title, kind, score) in *grades {
                    transaction.execute(
                        "INSERT INTO grades (student_id, title, kind, score) VALUES (?1, ?2, ?3, ?4)",
                        params![id, title, kind, score],
                    )?;
                }
            }
            transaction.execute("INSERT INTO meta (key, value) VALUES ('seeded', 'demo students')", [])?;
            transaction.commit()?;
        }
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every student with their grades, by id.
    pub(crate) fn students(&self) -> rusqlite::Result<Vec<Student>> {
        let connection = self.connection();
        let mut students: Vec<Student> = connection
            .prepare_cached("SELECT id, first_name, last_name FROM students ORDER BY id")?
            .query_map([], |row| {
                Ok(Student {
                    id: row.get(0)?,
                    first_name: row.get(1)?,
                    last_name: row.get(2)?,
                    grades: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut grades =
            connection.prepare_cached("SELECT student_id, title, kind, score FROM grades ORDER BY student_id, id")?;
        let rows = grades.query_map([], |row| Ok((row.get::<_, i64>(0)?, grade(row)?)))?;
        let mut index = 0;
        for row in rows {
            let (student_id, grade) = row?;
            while students.get(index).is_some_and(|s| s.id < student_id) {
                index += 1;
            }
            if let Some(student) = students.get_mut(index).filter(|s| s.id == student_id) {
                student.grades.push(grade);
            }
        }
        Ok(students)
    }

    /// One student with their grades.
    pub(crate) fn student(&self, id: i64) -> rusqlite::Result<Option<Student>> {
        let connection = self.connection();
        let Some(mut student) = connection
            .prepare_cached("SELECT id, first_name, last_name FROM students WHERE id = ?1")?
            .query_row([id], |row| {
                Ok(Student {
                    id: row.get(0)?,
                    first_name: row.get(1)?,
                    last_name: row.get(2)?,
                    grades: Vec::new(),
                })
            })
            .optional()?
        else {
            return Ok(None);
        };
        student.grades = connection
            .prepare_cached("SELECT student_id, title, kind, score FROM grades WHERE student_id = ?1 ORDER BY id")?
            .query_map([id], grade)?
            .collect::<Result<_, _>>()?;
        Ok(Some(student))
    }

    /// Adds a grade; `false` when the student does not exist.
    pub(crate) fn add_grade(&self, student: i64, grade: &Grade) -> rusqlite::Result<bool> {
        let connection = self.connection();
        let exists: Option<i64> = connection
            .prepare_cached("SELECT id FROM students WHERE id = ?1")?
            .query_row([student], |row| row.get(0))
            .optional()?;
        if exists.is_none() {
            return Ok(false);
        }
        connection.execute(
            "INSERT INTO grades (student_id, title, kind, score) VALUES (?1, ?2, ?3, ?4)",
            params![student, grade.title, grade.kind, grade.score],
        )?;
        Ok(true)
    }

    /// Adds a student and returns them.
    pub(crate) fn add_student(&self, first_name: &str, last_name: &str) -> rusqlite::Result<Student> {
        let connection = self.connection();
        connection.execute(
            "INSERT INTO students (first_name, last_name) VALUES (?1, ?2)",
            params![first_name, last_name],
        )?;
        Ok(Student {
            id: connection.last_insert_rowid(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            grades: Vec::new(),
        })
    }
}

fn grade(row: &rusqlite::Row<'_>) -> rusqlite::Result<Grade> {
    Ok(Grade {
        title: row.get(1)?,
        kind: row.get(2)?,
        score: row.get(3)?,
    })
}
