//! The grading service's records, with the Go field names the seed protocol uses
//! (`{"ID":1,"FirstName":"Nick","LastName":"Carter","Grades":[{"Title":..,"Type":..,"Score":85}]}`).
//!
//! Scores that are whole numbers are written as integers (`85`, as Go writes them); decoding
//! accepts `85` and `85.0` alike.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A student and their grades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Student {
    /// The student's number.
    #[serde(rename = "ID", alias = "id")]
    pub id: i64,
    /// Given name.
    #[serde(rename = "FirstName", alias = "firstName", alias = "firstname")]
    pub first_name: String,
    /// Family name.
    #[serde(rename = "LastName", alias = "lastName", alias = "lastname")]
    pub last_name: String,
    /// Every grade, oldest first (`null` reads as none).
    #[serde(rename = "Grades", alias = "grades", default, deserialize_with = "null_as_empty")]
    pub grades: Vec<Grade>,
}

impl Student {
    /// The mean score, or `None` without grades (never NaN).
    pub fn average(&self) -> Option<f64> {
        if self.grades.is_empty() {
            return None;
        }
        let total: f64 = self.grades.iter().map(|g| g.score).sum();
        #[allow(clippy::cast_precision_loss)]
        Some(total / self.grades.len() as f64)
    }
}

/// One grade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grade {
    /// What was graded, e.g. `Quiz 3`.
    #[serde(rename = "Title", alias = "title")]
    pub title: String,
    /// `Quiz`, `Test`, `Exam` or `Homework`.
    #[serde(rename = "Type", alias = "type")]
    pub kind: String,
    /// From 0 to 100.
    #[serde(rename = "Score", alias = "score", serialize_with = "whole_as_integer")]
    pub score: f64,
}

/// The grade types the grading service accepts.
pub const GRADE_TYPES: [&str; 4] = ["Quiz", "Test", "Exam", "Homework"];

/// The body of `POST /students`: a new student's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewStudent {
    /// Given name.
    #[serde(rename = "FirstName", alias = "firstName", alias = "firstname")]
    pub first_name: String,
    /// Family name.
    #[serde(rename = "LastName", alias = "lastName", alias = "lastname")]
    pub last_name: String,
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Grade>, D::Error> {
    Ok(Option::<Vec<Grade>>::deserialize(deserializer)?.unwrap_or_default())
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    clippy::cast_possible_truncation,
    clippy::float_cmp
)]
fn whole_as_integer<S: Serializer>(score: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if score.fract() == 0.0 && score.abs() < 9_007_199_254_740_992.0 {
        serializer.serialize_i64(*score as i64)
    } else {
        serializer.serialize_f64(*score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn students_encode_as_go_does() {
        let student = Student {
            id: 1,
            first_name: "Nick".into(),
            last_name: "Carter".into(),
            grades: vec![Grade {
                title: "Quiz 1".into(),
                kind: "Quiz".into(),
                score: 85.0,
            }],
        };
        assert_eq!(
            serde_json::to_string(&student).expect("encodes"),
            r#"{"ID":1,"FirstName":"Nick","LastName":"Carter","Grades":[{"Title":"Quiz 1","Type":"Quiz","Score":85}]}"#
        );
        let half = Grade {
            score: 85.5,
            ..student.grades[0].clone()
        };
        assert!(
            serde_json::to_string(&half)
                .expect("encodes")
                .contains(r#""Score":85.5"#)
        );
    }

    #[test]
    fn no_grades_is_no_average_not_nan() {
        let student: Student =
            serde_json::from_str(r#"{"ID":2,"FirstName":"A","LastName":"B","Grades":null}"#).expect("decodes");
        assert_eq!(student.average(), None);
    }
}
