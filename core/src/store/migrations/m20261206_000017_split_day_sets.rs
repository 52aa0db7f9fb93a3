use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Daily rollups keep their large exact visitor sets apart: a new
/// `sets` column of `rollup_days` holds the hashes of the sets of more
/// than 2048 visitors, and the cell keeps their HyperLogLog sketch, so
/// that a query whose answer is a sketch anyway (a union beyond 100,000
/// visitors) reads 16 KiB per cell instead of the hashes. Every day with
/// a daily rollup is marked, so the job makes it again in this form
/// (queries read those days from their hours meanwhile).
#[derive(DeriveIden)]
enum RollupDays {
    Table,
    Sets,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(RollupDays::Table)
                    .add_column(ColumnDef::new(RollupDays::Sets).blob().null())
                    .to_owned(),
            )
            .await?;
        mark_days(manager, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Migration 16's code cannot read a split cell: the days that
        // have one are dropped and marked, to be made again.
        mark_days(manager, " AND sets IS NOT NULL").await?;
        manager
            .get_connection()
            .execute_unprepared("DELETE FROM rollup_days WHERE sets IS NOT NULL")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(RollupDays::Table)
                    .drop_column(RollupDays::Sets)
                    .to_owned(),
            )
            .await
    }
}

/// Marks the days with a daily rollup row (`and` narrows the rows): their
/// daily rollups are to be made again.
async fn mark_days(manager: &SchemaManager<'_>, and: &str) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "INSERT INTO rollup_days_due (project_id, day, version) \
             SELECT DISTINCT project_id, day, 1 FROM rollup_days WHERE true{and} \
             ON CONFLICT (project_id, day) DO UPDATE SET version = rollup_days_due.version + 1"
        ))
        .await?;
    Ok(())
}
