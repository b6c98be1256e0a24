//! The catalog file (`{"events": [{"id", "name", "categories": [...]}]}`) and the demo.

use std::path::Path;

use serde::Deserialize;
use tickets::{Category, Event};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("catalog {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    events: Vec<Event>,
}

/// Loads and checks a catalog file.
pub fn load_catalog(path: &Path) -> Result<Vec<Event>, CatalogError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: shown.clone(),
        source,
    })?;
    let file: File = serde_json::from_str(&text).map_err(|e| CatalogError::Invalid {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    for e in &file.events {
        for c in &e.categories {
            if c.available_seats > c.total_seats {
                return Err(CatalogError::Invalid {
                    path: shown,
                    message: format!(
                        "event {} category {}: availableSeats exceeds totalSeats",
                        e.id, c.id
                    ),
                });
            }
        }
    }
    Ok(file.events)
}

/// The catalog served when none is given: two events, three categories each.
pub fn demo_catalog() -> Vec<Event> {
    let cat = |id, name: &str, price, seats| Category {
        id,
        name: name.into(),
        price,
        total_seats: seats,
        available_seats: seats,
    };
    vec![
        Event {
            id: 1,
            name: "Rust Conf Live".into(),
            categories: vec![
                cat(1, "VIP", 250.0, 20),
                cat(2, "Standard", 90.0, 200),
                cat(3, "Balcony", 45.0, 100),
            ],
        },
        Event {
            id: 2,
            name: "Symphony at the Pier".into(),
            categories: vec![
                cat(4, "Front rows", 120.0, 30),
                cat(5, "Stalls", 60.0, 300),
                cat(6, "Standing", 25.0, 500),
            ],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "switchboard-catalog-{name}-{}.json",
            std::process::id()
        ));
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn loads_a_catalog_file() {
        let p = write(
            "ok",
            r#"{"events":[{"id":5,"name":"Gala","categories":[{"id":1,"name":"Floor","price":10.5,"totalSeats":40,"availableSeats":35}]}]}"#,
        );
        let events = load_catalog(&p).expect("loads");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].id, events[0].categories[0].available_seats),
            (5, 35)
        );
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn refuses_bad_catalogs_with_the_path_in_the_message() {
        for (name, text) in [
            ("syntax", "{"),
            ("shape", r#"{"events": 3}"#),
            ("unknown", r#"{"events": [], "extra": 1}"#),
            (
                "seats",
                r#"{"events":[{"id":1,"name":"x","categories":[{"id":1,"name":"a","price":1,"totalSeats":1,"availableSeats":2}]}]}"#,
            ),
            (
                "negative",
                r#"{"events":[{"id":1,"name":"x","categories":[{"id":1,"name":"a","price":1,"totalSeats":-1,"availableSeats":0}]}]}"#,
            ),
        ] {
            let p = write(name, text);
            let e = load_catalog(&p).expect_err(name);
            assert!(
                e.to_string().contains(&p.display().to_string()),
                "{name}: {e}"
            );
            let _ = std::fs::remove_file(p);
        }
        assert!(load_catalog(std::path::Path::new("/nonexistent/catalog.json")).is_err());
    }

    #[test]
    fn demo_catalog_is_consistent() {
        for e in demo_catalog() {
            assert!(
                e.categories
                    .iter()
                    .all(|c| c.available_seats == c.total_seats && c.total_seats > 0)
            );
        }
    }
}
