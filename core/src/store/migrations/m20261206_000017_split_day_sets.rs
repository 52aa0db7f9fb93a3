use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Daily rollups keep their large exact visitor sets apart: a new table
/// `rollup_day_sets` holds, per (project, dimension, day, value), the
/// hashes of a set of more than 4,096 visitors, and the cell keeps its
/// HyperLogLog sketch, so that a query whose answer is a sketch anyway (a
/// union beyond 100,000 visitors) reads 16 KiB per cell instead of the
/// hashes, and one that needs the hashes reads only those of its values.
/// Every day with a daily rollup is marked, so the job makes it again in
/// this form (queries read those days from their hours meanwhile).
#[derive(DeriveIden)]
enum RollupDaySets {
    Table,
    ProjectId,
    Dim,
    Day,
    Value,
    Hashes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RollupDaySets::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(RollupDaySets::ProjectId).uuid().not_null())
                    .col(
                        ColumnDef::new(RollupDaySets::Dim)
                            .small_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RollupDaySets::Day).big_integer().not_null())
                    .col(ColumnDef::new(RollupDaySets::Value).text().not_null())
                    .col(ColumnDef::new(RollupDaySets::Hashes).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(RollupDaySets::ProjectId)
                            .col(RollupDaySets::Dim)
                            .col(RollupDaySets::Day)
                            .col(RollupDaySets::Value),
                    )
                    .to_owned(),
            )
            .await?;
        mark_days(manager, "rollup_days").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Migration 16's code cannot read a split cell: the days that
        // have one are dropped and marked, to be made again.
        mark_days(manager, "rollup_day_sets").await?;
        manager
            .get_connection()
            .execute_unprepared(
                "DELETE FROM rollup_days WHERE EXISTS (SELECT 1 FROM rollup_day_sets s \
                 WHERE s.project_id = rollup_days.project_id AND s.day = rollup_days.day)",
            )
            .await?;
        manager
            .drop_table(Table::drop().table(RollupDaySets::Table).to_owned())
            .await
    }
}

/// Marks the days with a row in `table`: their daily rollups are to be
/// made again.
async fn mark_days(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "INSERT INTO rollup_days_due (project_id, day, version) \
             SELECT DISTINCT project_id, day, 1 FROM {table} WHERE true \
             ON CONFLICT (project_id, day) DO UPDATE SET version = rollup_days_due.version + 1"
        ))
        .await?;
    Ok(())
}
