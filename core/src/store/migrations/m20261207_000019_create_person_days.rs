use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The person index by day: one row per project and UTC day, written by
/// the rollup job with the day's daily rollup, in the same form as a
/// `person_hours` row (times in ms into the day), merged from the day's
/// hours. A funnel or retention over a month then reads 30 rows instead of
/// 720, and follows each range of people through 30 blobs instead of 720.
/// Every day with indexed hours is marked, so the job makes its row (those
/// days are read from their hours meanwhile).
#[derive(DeriveIden)]
enum PersonDays {
    Table,
    ProjectId,
    Day,
    People,
    Events,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // `people` before `events`, as in `person_hours` (migration 18):
        // SQLite walks a row's earlier columns to read a later one.
        manager
            .create_table(
                Table::create()
                    .table(PersonDays::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(PersonDays::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(PersonDays::Day).big_integer().not_null())
                    .col(ColumnDef::new(PersonDays::People).blob().not_null())
                    .col(ColumnDef::new(PersonDays::Events).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(PersonDays::ProjectId)
                            .col(PersonDays::Day),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "INSERT INTO rollup_days_due (project_id, day, version) \
                 SELECT DISTINCT project_id, hour / 24, 1 FROM person_hours WHERE hour >= 0 \
                 ON CONFLICT (project_id, day) DO UPDATE SET version = rollup_days_due.version + 1",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PersonDays::Table).to_owned())
            .await
    }
}
