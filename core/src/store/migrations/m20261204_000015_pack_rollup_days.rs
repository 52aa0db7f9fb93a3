use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Daily rollups packed: one row per (project, dimension, day) whose
/// `cells` blob holds every value's cell of that day, so that a month of
/// a breakdown is read in 30 rows instead of 30 per value (reading a row
/// costs far more than decoding a cell). The rows of migration 14 are
/// dropped and every rolled-up day marked, so the job packs them again
/// (queries read those days from their hours meanwhile).
#[derive(DeriveIden)]
enum RollupDays {
    Table,
    ProjectId,
    Dim,
    Day,
    Cells,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RollupDays::Table).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RollupDays::Table)
                    .col(ColumnDef::new(RollupDays::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RollupDays::Dim).small_integer().not_null())
                    .col(ColumnDef::new(RollupDays::Day).big_integer().not_null())
                    .col(ColumnDef::new(RollupDays::Cells).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(RollupDays::ProjectId)
                            .col(RollupDays::Dim)
                            .col(RollupDays::Day),
                    )
                    .to_owned(),
            )
            .await?;
        mark_every_day(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Back to migration 14's table, empty, with every day marked.
        #[derive(DeriveIden)]
        enum Old {
            Value,
            Events,
            Pageviews,
            Visitors,
            Sessions,
            Bounces,
            DurationMs,
            SessionPageviews,
        }
        manager
            .drop_table(Table::drop().table(RollupDays::Table).to_owned())
            .await?;
        let big = |c: Old| ColumnDef::new(c).big_integer().not_null().to_owned();
        manager
            .create_table(
                Table::create()
                    .table(RollupDays::Table)
                    .col(ColumnDef::new(RollupDays::ProjectId).uuid().not_null())
                    .col(ColumnDef::new(RollupDays::Dim).small_integer().not_null())
                    .col(ColumnDef::new(RollupDays::Day).big_integer().not_null())
                    .col(ColumnDef::new(Old::Value).text().not_null())
                    .col(big(Old::Events))
                    .col(big(Old::Pageviews))
                    .col(ColumnDef::new(Old::Visitors).blob().not_null())
                    .col(big(Old::Sessions))
                    .col(big(Old::Bounces))
                    .col(big(Old::DurationMs))
                    .col(big(Old::SessionPageviews))
                    .primary_key(
                        Index::create()
                            .col(RollupDays::ProjectId)
                            .col(RollupDays::Dim)
                            .col(RollupDays::Day)
                            .col(Old::Value),
                    )
                    .to_owned(),
            )
            .await?;
        mark_every_day(manager).await
    }
}

/// Marks every rolled-up day: its daily rollup is to be made again.
async fn mark_every_day(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .get_connection()
        .execute_unprepared(
            "INSERT INTO rollup_days_due (project_id, day, version) \
             SELECT DISTINCT project_id, hour / 24, 1 FROM rollups WHERE true \
             ON CONFLICT (project_id, day) DO UPDATE SET version = rollup_days_due.version + 1",
        )
        .await?;
    Ok(())
}
