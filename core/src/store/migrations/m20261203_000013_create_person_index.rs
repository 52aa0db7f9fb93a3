use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Dense per-project numbers for the people the statistics count (the
/// 64-bit hash of `distinct_id`, else `visitor_id`, else IP hash), so that
/// funnels and retention can keep per-person state in plain arrays.
#[derive(DeriveIden)]
enum Persons {
    Table,
    ProjectId,
    Hash,
    Id,
}

/// One row per project and rolled-up hour: its events as (person, time,
/// name), sorted by person and time, and which people were active in it,
/// in all and per event name. Written with the hour's rollup.
#[derive(DeriveIden)]
enum PersonHours {
    Table,
    ProjectId,
    Hour,
    Events,
    People,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Persons::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Persons::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(Persons::Hash).big_integer().not_null())
                    .col(ColumnDef::new(Persons::Id).integer().not_null())
                    .primary_key(Index::create().col(Persons::ProjectId).col(Persons::Hash))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_persons_project_id")
                    .table(Persons::Table)
                    .col(Persons::ProjectId)
                    .col(Persons::Id)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PersonHours::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(PersonHours::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(PersonHours::Hour).big_integer().not_null())
                    .col(ColumnDef::new(PersonHours::Events).blob().not_null())
                    .col(ColumnDef::new(PersonHours::People).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(PersonHours::ProjectId)
                            .col(PersonHours::Hour),
                    )
                    .to_owned(),
            )
            .await?;
        // Hours rolled up before this migration have no person index yet:
        // redo them (they are read from raw events until then).
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO rollup_dirty (project_id, hour, version) \
                 SELECT DISTINCT project_id, hour, 1 FROM rollups WHERE true \
                 ON CONFLICT (project_id, hour) DO NOTHING",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PersonHours::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Persons::Table).to_owned())
            .await
    }
}
