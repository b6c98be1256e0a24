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
