//! The documented example config must load and equal the defaults it claims to show.

use switchboard::config::{Config, Sources};

#[test]
fn example_config_is_valid_and_shows_the_defaults() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../switchboard.example.toml"
    );
    let text = std::fs::read_to_string(path).expect("example config exists");
    let config = Config::load(&Sources {
        file: Some((path.into(), text)),
        ..Sources::default()
    })
    .expect("loads");
    assert_eq!(config, Config::default());
}
