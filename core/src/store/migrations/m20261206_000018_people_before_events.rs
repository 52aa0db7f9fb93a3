use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The person index's `people` blob (about 6 KB an hour at 100,000
/// events a day) before its `events` blob (about 25 KB): SQLite stores a
/// row's columns in order, spilling a long row into a chain of overflow
/// pages, so reading a later column walks the pages of the earlier ones.
/// Retention reads `people` alone and used to walk `events` for it; a
/// funnel reads `events` and now walks the smaller `people`. The table is
/// made again with the columns in that order and its rows copied.
#[derive(DeriveIden)]
enum PersonHours {
    ProjectId,
    Hour,
    Events,
    People,
}

#[derive(DeriveIden)]
enum Staging {
    PersonHoursCopy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        remake(manager, [PersonHours::People, PersonHours::Events]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        remake(manager, [PersonHours::Events, PersonHours::People]).await
    }
}

/// Makes `person_hours` again with its two blobs in the order `blobs`,
/// keeping its rows: one batch of statements on one connection (on
/// SQLite, a second pooled connection could still see the old table when
/// it checks the new name), in one transaction (PostgreSQL migrations run
/// in one already; SQLite's run statement by statement), so a crash
/// halfway leaves the table as it was.
async fn remake(manager: &SchemaManager<'_>, blobs: [PersonHours; 2]) -> Result<(), DbErr> {
    let [a, b] = blobs;
    let (a_name, b_name) = (a.to_string(), b.to_string());
    let backend = manager.get_database_backend();
    let (begin, commit) = if backend == sea_orm::DatabaseBackend::Sqlite {
        ("BEGIN IMMEDIATE;\n", ";\nCOMMIT")
    } else {
        ("", "")
    };
    let create = backend.build(
        Table::create()
            .table(Staging::PersonHoursCopy)
            .col(ColumnDef::new(PersonHours::ProjectId).uuid().not_null())
            .col(ColumnDef::new(PersonHours::Hour).big_integer().not_null())
            .col(ColumnDef::new(a).blob().not_null())
            .col(ColumnDef::new(b).blob().not_null())
            .primary_key(
                Index::create()
                    .col(PersonHours::ProjectId)
                    .col(PersonHours::Hour),
            ),
    );
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "{begin}{};\n\
             INSERT INTO person_hours_copy (project_id, hour, {a_name}, {b_name}) \
             SELECT project_id, hour, {a_name}, {b_name} FROM person_hours;\n\
             DROP TABLE person_hours;\n\
             ALTER TABLE person_hours_copy RENAME TO person_hours{commit}",
            create.sql
        ))
        .await?;
    Ok(())
}
