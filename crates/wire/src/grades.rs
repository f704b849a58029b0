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

/// The grade types the grading service accepts when its configuration names none.
pub const GRADE_TYPES: [&str; 4] = ["Quiz", "Test", "Exam", "Homework"];

/// What grades the grading service accepts: the configuration document `grading` of the
/// `_shared` service (the portal reads it too), as JSON:
/// `{"gradeTypes": ["Quiz", "Test", "Exam", "Homework"], "minScore": 0, "maxScore": 100}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GradingRules {
    /// The grade types accepted, in the order the portal offers them.
    pub grade_types: Vec<String>,
    /// The lowest score accepted.
    pub min_score: f64,
    /// The highest score accepted.
    pub max_score: f64,
}

impl GradingRules {
    /// The name of the configuration document that holds them.
    pub const DOCUMENT: &'static str = "grading";

    /// Rules the grading service can run with: 1 to 50 distinct grade types of 1 to 40
    /// characters, and finite bounds with the lowest below the highest.
    pub fn check(&self) -> Result<(), String> {
        if self.grade_types.is_empty() || self.grade_types.len() > 50 {
            return Err(format!(
                "gradeTypes must name 1 to 50 types, not {}",
                self.grade_types.len()
            ));
        }
        for (n, kind) in self.grade_types.iter().enumerate() {
            let length = kind.trim().chars().count();
            if length == 0 || length > 40 || kind.trim() != kind {
                return Err(format!(
                    "gradeTypes[{n}] {kind:?} must be 1 to 40 characters, without spaces around"
                ));
            }
            if self.grade_types[..n].contains(kind) {
                return Err(format!("gradeTypes names {kind:?} twice"));
            }
        }
        if !self.min_score.is_finite() || !self.max_score.is_finite() || self.min_score >= self.max_score {
            return Err(format!(
                "minScore ({}) must be below maxScore ({}), both finite",
                self.min_score, self.max_score
            ));
        }
        Ok(())
    }

    /// What is wrong with `grade` under these rules, if anything (its title aside).
    pub fn refuse(&self, grade: &Grade) -> Option<String> {
        if !self.grade_types.contains(&grade.kind) {
            return Some(format!(
                "Type must be one of {}, not {:?}",
                self.grade_types.join(", "),
                grade.kind
            ));
        }
        if !grade.score.is_finite() || grade.score < self.min_score || grade.score > self.max_score {
            return Some(format!(
                "Score must be a number from {} to {}, not {}",
                self.min_score, self.max_score, grade.score
            ));
        }
        None
    }
}

impl Default for GradingRules {
    fn default() -> Self {
        Self {
            grade_types: GRADE_TYPES.iter().map(|&t| t.to_owned()).collect(),
            min_score: 0.0,
            max_score: 100.0,
        }
    }
}

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
    use super::{Grade, GradingRules};

    #[test]
    fn the_default_rules_are_the_seed_s_and_rules_refuse_what_they_do_not_name() {
        let rules = GradingRules::default();
        assert_eq!(rules.check(), Ok(()));
        let grade = |kind: &str, score: f64| Grade {
            title: "Quiz 1".to_owned(),
            kind: kind.to_owned(),
            score,
        };
        assert_eq!(rules.refuse(&grade("Quiz", 100.0)), None);
        assert!(
            rules
                .refuse(&grade("Project", 90.0))
                .is_some_and(|r| r.contains("Quiz, Test, Exam, Homework"))
        );
        assert!(
            rules
                .refuse(&grade("Quiz", 100.5))
                .is_some_and(|r| r.contains("from 0 to 100"))
        );
        let project: GradingRules =
            serde_json::from_str(r#"{"gradeTypes": ["Quiz", "Project"], "minScore": 0, "maxScore": 120}"#)
                .expect("rules");
        assert_eq!(project.refuse(&grade("Project", 110.0)), None);
    }

    #[test]
    fn rules_that_cannot_run_are_refused_with_why() {
        let rules = |types: &[&str], min: f64, max: f64| GradingRules {
            grade_types: types.iter().map(|&t| t.to_owned()).collect(),
            min_score: min,
            max_score: max,
        };
        assert!(rules(&[], 0.0, 100.0).check().is_err());
        assert!(
            rules(&["Quiz", "Quiz"], 0.0, 100.0)
                .check()
                .is_err_and(|e| e.contains("twice"))
        );
        assert!(rules(&[" Quiz"], 0.0, 100.0).check().is_err());
        assert!(rules(&["Quiz"], 100.0, 0.0).check().is_err_and(|e| e.contains("below")));
        assert!(
            serde_json::from_str::<GradingRules>(r#"{"gradeTypes": [], "minScore": 0, "maxScore": 1, "extra": 1}"#)
                .is_err()
        );
    }

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
