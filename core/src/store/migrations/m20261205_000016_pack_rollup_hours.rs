use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Hourly rollups packed too: one `rollup_hours` row per (project,
/// dimension, hour) whose `cells` blob holds every value's cell of that
/// hour (the format of `rollup_days`), so that the partial days at the
/// edges of a range cost one row per hour instead of one per value. The
/// per-value `rollups` rows stay, without their visitor sets, for the SQL
/// endpoint's `rollups` view. The person index's `events` blob changes
/// form too (runs per person, then fixed-width times and names). Every
/// rolled-up hour is marked, so the job packs it and writes its index row
/// again (queries read marked hours from raw events meanwhile).
#[derive(DeriveIden)]
enum RollupHours {
    Table,
    ProjectId,
    Dim,
    Hour,
    Cells,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RollupHours::Table)
                    .col(ColumnDef::new(RollupHours::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RollupHours::Dim).small_integer().not_null())
                    .col(ColumnDef::new(RollupHours::Hour).big_integer().not_null())
                    .col(ColumnDef::new(RollupHours::Cells).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(RollupHours::ProjectId)
                            .col(RollupHours::Dim)
                            .col(RollupHours::Hour),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        mark_every_hour(db).await?;
        db.execute_unprepared("ALTER TABLE rollups DROP COLUMN visitors")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Back to migration 15: visitor sets in `rollups` (empty until the
        // job redoes the hours, every one marked).
        let db = manager.get_connection();
        let empty = match manager.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "BYTEA NOT NULL DEFAULT ''::bytea",
            _ => "BLOB NOT NULL DEFAULT x''",
        };
        db.execute_unprepared(&format!("ALTER TABLE rollups ADD COLUMN visitors {empty}"))
            .await?;
        mark_every_hour(db).await?;
        manager
            .drop_table(Table::drop().table(RollupHours::Table).to_owned())
            .await
    }
}

/// Marks every rolled-up hour: its rollup is to be made again.
async fn mark_every_hour(db: &SchemaManagerConnection<'_>) -> Result<(), DbErr> {
    db.execute_unprepared(
        "INSERT INTO rollup_dirty (project_id, hour, version) \
         SELECT DISTINCT project_id, hour, 1 FROM rollups WHERE true \
         ON CONFLICT (project_id, hour) DO UPDATE SET version = rollup_dirty.version + 1",
    )
    .await?;
    Ok(())
}
