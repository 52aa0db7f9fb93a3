//! Schema migrations, run at start and by `orrery migrate`.

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_projects;
mod m20261123_000002_create_api_keys;
mod m20261123_000003_create_events;
mod m20261123_000004_create_dead_letters;
mod m20261123_000005_create_pipelines;
mod m20261123_000006_create_sessions;
mod m20261123_000007_create_insights;
mod m20261123_000008_create_session_marks;
mod m20261203_000009_create_plugins;
mod m20261203_000010_add_query_stages;
mod m20261203_000011_create_rollups;
mod m20261203_000012_create_accounts;
mod m20261203_000013_create_person_index;
mod m20261204_000014_create_rollup_days;
mod m20261204_000015_pack_rollup_days;
mod m20261205_000016_pack_rollup_hours;
mod m20261206_000017_split_day_sets;
mod m20261206_000018_people_before_events;
mod m20261207_000019_create_person_days;
mod m20261208_000020_create_person_values;

/// Every migration, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_projects::Migration),
            Box::new(m20261123_000002_create_api_keys::Migration),
            Box::new(m20261123_000003_create_events::Migration),
            Box::new(m20261123_000004_create_dead_letters::Migration),
            Box::new(m20261123_000005_create_pipelines::Migration),
            Box::new(m20261123_000006_create_sessions::Migration),
            Box::new(m20261123_000007_create_insights::Migration),
            Box::new(m20261123_000008_create_session_marks::Migration),
            Box::new(m20261203_000009_create_plugins::Migration),
            Box::new(m20261203_000010_add_query_stages::Migration),
            Box::new(m20261203_000011_create_rollups::Migration),
            Box::new(m20261203_000012_create_accounts::Migration),
            Box::new(m20261203_000013_create_person_index::Migration),
            Box::new(m20261204_000014_create_rollup_days::Migration),
            Box::new(m20261204_000015_pack_rollup_days::Migration),
            Box::new(m20261205_000016_pack_rollup_hours::Migration),
            Box::new(m20261206_000017_split_day_sets::Migration),
            Box::new(m20261206_000018_people_before_events::Migration),
            Box::new(m20261207_000019_create_person_days::Migration),
            Box::new(m20261208_000020_create_person_values::Migration),
        ]
    }
}
